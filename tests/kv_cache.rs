//! The KV cache (docs/ATTENTION.md §9) against its CPU twin: appends of uneven chunks, capacity
//! edges, empty sequences, f16, GQA, rotary embeddings in both conventions, and per-sequence
//! bottom-right causal attention over chunks of new queries (chunked prefill).

mod common;
use common::skip::Cap;
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::reference::{self, HostAngles, HostKvCache, HostRope, Tolerance};
use wgpu_attention::{
    Alignment, AppendOptions, AttentionOptions, DType, Error, KernelChoice, KvCache, Rope, RopeStyle, Tensor, Window,
};

/// A GPU cache and its host twin, fed the same data.
struct Pair {
    gpu: KvCache,
    host: HostKvCache,
    dtype: DType,
    rng: ChaCha8Rng,
}

impl Pair {
    fn new(b: usize, hkv: usize, capacity: usize, dk: usize, dv: usize, dtype: DType, seed: u64) -> Self {
        Self {
            gpu: KvCache::new(ctx(), b, hkv, capacity, dk, dv, dtype).unwrap(),
            host: HostKvCache::new(b, hkv, capacity, dk, dv),
            dtype,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Random data, rounded to the storage type.
    fn data(&mut self, n: usize) -> Vec<f32> {
        let x = random(&mut self.rng, n, 1.0);
        match self.dtype {
            DType::F16 => round_f16(&x),
            _ => x,
        }
    }

    /// Appends `lnew` random rows (sequence b taking `counts[b]` of them) on both sides.
    fn append(&mut self, lnew: usize, counts: Option<&[u32]>, rope: Option<(&Rope, &HostRope)>) -> Result<(), Error> {
        let (b, hkv, dk, dv) = (self.host.b, self.host.hkv, self.host.dk, self.host.dv);
        let k = self.data(b * hkv * lnew * dk);
        let v = self.data(b * hkv * lnew * dv);
        let opts = AppendOptions {
            lengths: counts.map(|c| c.to_vec()),
            rope: rope.map(|r| r.0.clone()),
        };
        self.gpu.append_with(
            ctx(),
            &upload(ctx(), &k, &[b, hkv, lnew, dk], self.dtype),
            &upload(ctx(), &v, &[b, hkv, lnew, dv], self.dtype),
            &opts,
        )?;
        self.host.append(&k, &v, lnew, counts, rope.map(|r| r.1)).unwrap();
        Ok(())
    }

    fn tol(&self) -> Tolerance {
        match self.dtype {
            DType::F16 => Tolerance::F16,
            _ => Tolerance::F32,
        }
    }

    /// The GPU lengths (read back), K and V rows up to each length, equal to the host twin's.
    fn check_contents(&self) {
        let lens = self.gpu.seqlens().to_vec::<u32>(ctx()).unwrap();
        assert_eq!(lens, self.host.lengths, "GPU lengths");
        assert_eq!(self.gpu.lengths(), self.host.lengths.as_slice(), "host mirror");
        let k = self.gpu.k().to_f32_vec(ctx()).unwrap();
        let v = self.gpu.v().to_f32_vec(ctx()).unwrap();
        let (cap, dk, dv) = (self.host.capacity, self.host.dk, self.host.dv);
        for b in 0..self.host.b {
            let len = self.host.lengths[b] as usize;
            for h in 0..self.host.hkv {
                let row = (b * self.host.hkv + h) * cap;
                let (gk, hk) = (&k[row * dk..(row + len) * dk], &self.host.k[row * dk..(row + len) * dk]);
                let c = reference::compare(gk, &hk.iter().map(|&x| x as f64).collect::<Vec<_>>(), self.tol());
                assert!(c.ok(), "K rows of sequence {b} head {h}: {c}");
                assert_eq!(
                    &v[row * dv..(row + len) * dv],
                    &self.host.v[row * dv..(row + len) * dv],
                    "V rows of sequence {b} head {h}"
                );
            }
        }
    }

    /// Attention of random Q [B, hq, lq, Dk] over the cache vs the reference on each prefix.
    fn check_attend(&mut self, hq: usize, lq: usize, opts: &AttentionOptions) -> Result<(), String> {
        let (b, dk) = (self.host.b, self.host.dk);
        let q = self.data(b * hq * lq * dk);
        let opts = AttentionOptions {
            return_lse: true,
            ..opts.clone()
        };
        let got = self
            .gpu
            .attend(ctx(), &upload(ctx(), &q, &[b, hq, lq, dk], self.dtype), &opts)
            .map_err(|e| e.to_string())?;
        let expected = self.host.attend(&q, hq, lq, &opts);
        let o = got.out.to_f32_vec(ctx()).unwrap();
        let c = reference::compare(&o, &expected.out, self.tol());
        if !c.ok() {
            return Err(format!("O: {c} (lengths {:?}, lq {lq}, {opts:?})", self.host.lengths));
        }
        let lse = got.lse.unwrap().to_vec::<f32>(ctx()).unwrap();
        let c = reference::compare(&lse, &expected.lse, self.tol());
        if !c.ok() {
            return Err(format!("LSE: {c} (lengths {:?}, lq {lq})", self.host.lengths));
        }
        Ok(())
    }
}

fn causal() -> AttentionOptions {
    AttentionOptions {
        causal: Some(Alignment::BottomRight),
        ..Default::default()
    }
}

#[test]
fn uneven_chunks_then_attend() {
    // GQA: 4 query heads over 2 KV heads; sequences grow unevenly over three appends.
    let mut c = Pair::new(3, 2, 40, 16, 8, DType::F32, 1);
    c.append(5, Some(&[5, 0, 3]), None).unwrap();
    c.append(4, Some(&[2, 4, 1]), None).unwrap();
    c.append(3, None, None).unwrap();
    assert_eq!(c.gpu.lengths(), &[10, 7, 7]);
    c.check_contents();
    let mut failures = Vec::new();
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        for (lq, opts) in [(1, causal()), (1, AttentionOptions::default()), (3, causal())] {
            let opts = AttentionOptions { kernel, ..opts };
            failures.extend(c.check_attend(4, lq, &opts).err());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Rows, K and V of one appended chunk.
type Chunk = (usize, Vec<f32>, Vec<f32>);

#[test]
fn attend_matches_sdpa_on_the_concatenated_inputs() {
    // The reference on each sequence's concatenated chunks, built here without the host cache.
    let (b, hkv, hq, d, cap) = (2, 1, 2, 8, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut cache = KvCache::new(ctx(), b, hkv, cap, d, d, DType::F32).unwrap();
    let chunks: Vec<Chunk> = [4usize, 1, 3]
        .iter()
        .map(|&l| {
            (
                l,
                random(&mut rng, b * hkv * l * d, 1.0),
                random(&mut rng, b * hkv * l * d, 1.0),
            )
        })
        .collect();
    for (l, k, v) in &chunks {
        let shape = [b, hkv, *l, d];
        let (k, v) = (
            Tensor::from_slice(ctx(), k, &shape).unwrap(),
            Tensor::from_slice(ctx(), v, &shape).unwrap(),
        );
        cache.append(ctx(), &k, &v).unwrap();
    }
    let lk: usize = chunks.iter().map(|c| c.0).sum();
    let concat = |pick: fn(&Chunk) -> &Vec<f32>| {
        let mut out = Vec::new();
        for bi in 0..b {
            for c in &chunks {
                let n = c.0 * d; // hkv = 1
                out.extend_from_slice(&pick(c)[bi * n..(bi + 1) * n]);
            }
        }
        out
    };
    let (k, v) = (concat(|c| &c.1), concat(|c| &c.2));
    let q = random(&mut rng, b * hq * 2 * d, 1.0);
    let opts = causal();
    let got = cache
        .attend(ctx(), &Tensor::from_slice(ctx(), &q, &[b, hq, 2, d]).unwrap(), &opts)
        .unwrap();
    let expected = reference::sdpa(
        &reference::HostInputs::new(problem(b, hq, hkv, 2, lk, d, d), &q, &k, &v),
        &opts,
    );
    let c = reference::compare(&got.out.to_vec::<f32>(ctx()).unwrap(), &expected.out, Tolerance::F32);
    assert!(c.ok(), "{c}");
}

#[test]
fn capacity_exactly_reached_then_refused_unchanged() {
    let mut c = Pair::new(2, 2, 8, 8, 8, DType::F32, 2);
    c.append(5, None, None).unwrap();
    c.append(3, None, None).unwrap();
    assert_eq!(c.gpu.lengths(), &[8, 8]);
    c.check_contents();
    c.check_attend(2, 1, &causal()).unwrap();
    let (k_before, v_before) = (
        c.gpu.k().to_vec::<f32>(ctx()).unwrap(),
        c.gpu.v().to_vec::<f32>(ctx()).unwrap(),
    );
    let err = c.append(1, None, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CacheFull {
                capacity: 8,
                length: 8,
                appended: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(c.gpu.seqlens().to_vec::<u32>(ctx()).unwrap(), vec![8, 8]);
    assert_eq!(c.gpu.lengths(), &[8, 8]);
    assert_eq!(c.gpu.k().to_vec::<f32>(ctx()).unwrap(), k_before);
    assert_eq!(c.gpu.v().to_vec::<f32>(ctx()).unwrap(), v_before);
}

#[test]
fn append_past_capacity_in_one_sequence_writes_nothing() {
    let mut c = Pair::new(3, 1, 6, 4, 4, DType::F32, 3);
    c.append(4, Some(&[4, 1, 2]), None).unwrap();
    let (k_before, v_before) = (
        c.gpu.k().to_vec::<f32>(ctx()).unwrap(),
        c.gpu.v().to_vec::<f32>(ctx()).unwrap(),
    );
    // Sequence 0 would reach 7 > 6; the others fit but must not be written either.
    let err = c.append(3, Some(&[3, 3, 3]), None).unwrap_err();
    assert!(matches!(err, Error::CacheFull { batch: 0, .. }), "{err}");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert_eq!(c.gpu.seqlens().to_vec::<u32>(ctx()).unwrap(), vec![4, 1, 2]);
    assert_eq!(c.gpu.k().to_vec::<f32>(ctx()).unwrap(), k_before);
    assert_eq!(c.gpu.v().to_vec::<f32>(ctx()).unwrap(), v_before);
    c.check_contents();
}

#[test]
fn empty_sequence_gives_zero_output_and_negative_infinite_lse() {
    let mut c = Pair::new(3, 2, 12, 8, 8, DType::F32, 4);
    c.append(5, Some(&[5, 0, 2]), None).unwrap();
    c.check_attend(2, 1, &causal()).unwrap();
    c.check_attend(4, 3, &AttentionOptions::default()).unwrap();
    let q = Tensor::from_slice(ctx(), &[0.5f32; 3 * 2 * 8], &[3, 2, 1, 8]).unwrap();
    let res = c
        .gpu
        .attend(
            ctx(),
            &q,
            &AttentionOptions {
                return_lse: true,
                ..causal()
            },
        )
        .unwrap();
    let o = res.out.to_vec::<f32>(ctx()).unwrap();
    let lse = res.lse.unwrap().to_vec::<f32>(ctx()).unwrap();
    assert!(o[16..32].iter().all(|&x| x == 0.0), "{:?}", &o[16..32]);
    assert!(lse[2..4].iter().all(|&x| x == f32::NEG_INFINITY), "{lse:?}");
    assert!(lse[0..2].iter().chain(&lse[4..]).all(|x| x.is_finite()), "{lse:?}");
    // Every sequence empty: Lk = 0.
    let empty = KvCache::new(ctx(), 2, 1, 4, 8, 8, DType::F32).unwrap();
    let q = Tensor::from_slice(ctx(), &[0.5f32; 2 * 8], &[2, 1, 1, 8]).unwrap();
    let res = empty
        .attend(
            ctx(),
            &q,
            &AttentionOptions {
                return_lse: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(res.out.to_vec::<f32>(ctx()).unwrap().iter().all(|&x| x == 0.0));
    assert!(res
        .lse
        .unwrap()
        .to_vec::<f32>(ctx())
        .unwrap()
        .iter()
        .all(|&x| x == f32::NEG_INFINITY));
}

#[test]
fn f16_cache() {
    require!(Cap::F16);
    let mut c = Pair::new(2, 2, 20, 16, 16, DType::F16, 6);
    c.append(6, Some(&[6, 2]), None).unwrap();
    c.append(2, None, None).unwrap();
    c.check_contents();
    let mut failures = Vec::new();
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        for lq in [1, 2] {
            failures.extend(c.check_attend(4, lq, &AttentionOptions { kernel, ..causal() }).err());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn chunked_prefill_is_causal_per_sequence() {
    // Sequences of uneven lengths each receive a chunk of Lq new tokens that attend to their own
    // prefix and to each other causally: query i of sequence b sees keys j ≤ i + len_b − Lq. The
    // chunks span several query blocks of the fused kernel, so skipped key ranges are exercised.
    let (hkv, hq, d) = (2, 4, 8);
    let mut c = Pair::new(3, hkv, 400, d, d, DType::F32, 7);
    c.append(150, Some(&[150, 20, 0]), None).unwrap();
    let mut failures = Vec::new();
    for lq in [3, 140] {
        c.append(lq, None, None).unwrap();
        for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
            for opts in [
                causal(),
                AttentionOptions {
                    window: Some(Window::causal_local(5, Alignment::BottomRight)),
                    ..Default::default()
                },
                AttentionOptions {
                    causal: Some(Alignment::TopLeft),
                    ..Default::default()
                },
            ] {
                failures.extend(c.check_attend(hq, lq, &AttentionOptions { kernel, ..opts }).err());
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn per_sequence_alignment_in_plain_attention() {
    // `align_to_key_lengths` on attention() itself, against the reference and against the
    // per-sequence loop: a sequence of length len sees j ≤ i + len − Lq.
    let p = problem(2, 2, 1, 4, 12, 8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let lens = [12u32, 6];
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        align_to_key_lengths: true,
        key_lengths: Some(Tensor::from_slice(ctx(), &lens, &[2]).unwrap()),
        return_lse: true,
        ..Default::default()
    };
    let mut host = HostKvCache::new(2, 1, 12, 8, 8);
    host.append(&k, &v, 12, Some(&lens), None).unwrap();
    let per_seq = host.attend(&q, 2, 4, &opts);
    let with_flag = reference::sdpa(
        &reference::HostInputs {
            key_lengths: Some(&lens),
            ..reference::HostInputs::new(p, &q, &k, &v)
        },
        &opts,
    );
    let c = reference::compare(
        &with_flag.out.iter().map(|&x| x as f32).collect::<Vec<_>>(),
        &per_seq.out,
        Tolerance::F32,
    );
    assert!(c.ok(), "reference with the flag vs per-sequence loop: {c}");
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let got = wgpu_attention::attention(
            ctx(),
            &Tensor::from_slice(ctx(), &q, &qs).unwrap(),
            &Tensor::from_slice(ctx(), &k, &ks).unwrap(),
            &Tensor::from_slice(ctx(), &v, &vs).unwrap(),
            &AttentionOptions { kernel, ..opts.clone() },
        )
        .unwrap();
        let c = reference::compare(&got.out.to_vec::<f32>(ctx()).unwrap(), &per_seq.out, Tolerance::F32);
        assert!(c.ok(), "{kernel:?}: {c}");
    }
    // Without the flag, bottom-right uses Lk − Lq for every sequence: sequence 1 then differs.
    let global = reference::sdpa(
        &reference::HostInputs {
            key_lengths: Some(&lens),
            ..reference::HostInputs::new(p, &q, &k, &v)
        },
        &AttentionOptions {
            align_to_key_lengths: false,
            ..opts.clone()
        },
    );
    assert_ne!(global.out, with_flag.out);
}

fn rope_tables(max_pos: usize, rotary_dim: usize) -> (Vec<f32>, Vec<f32>) {
    // Arbitrary angles (not the theta formula), as a caller's scaled or extended tables would be.
    let half = rotary_dim / 2;
    let angle = |p: usize, i: usize| p as f64 * 0.37 / (1.0 + i as f64) + 0.1 * i as f64;
    let cos = (0..max_pos * half)
        .map(|e| angle(e / half, e % half).cos() as f32)
        .collect();
    let sin = (0..max_pos * half)
        .map(|e| angle(e / half, e % half).sin() as f32)
        .collect();
    (cos, sin)
}

#[test]
fn rope_matches_reference_in_both_conventions() {
    let (b, h, l, d) = (2, 3, 5, 16);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let x = random(&mut rng, b * h * l * d, 1.0);
    let xt = Tensor::from_slice(ctx(), &x, &[b, h, l, d]).unwrap();
    let starts = [0u32, 37];
    let (cos, sin) = rope_tables(64, 12);
    let mut failures = Vec::new();
    for style in [RopeStyle::Interleaved, RopeStyle::HalfSplit] {
        for rotary_dim in [16, 12, 2] {
            let gpu_rope = Rope::with_theta_base(ctx(), style, rotary_dim, 64, 500.0).unwrap();
            let host_rope = HostRope {
                style,
                rotary_dim,
                angles: HostAngles::ThetaBase(500.0),
            };
            let got = wgpu_attention::rope(ctx(), &xt, &starts, &gpu_rope).unwrap();
            let expected = reference::serving::rope(&x, [b, h, l, d], &starts, &host_rope);
            let c = reference::compare(&got.to_vec::<f32>(ctx()).unwrap(), &expected, Tolerance::F32);
            if !c.ok() {
                failures.push(format!("{style:?} rotary_dim {rotary_dim}: {c}"));
            }
            // The columns past rotary_dim pass through.
            let got = got.to_vec::<f32>(ctx()).unwrap();
            assert!((0..b * h * l).all(|r| got[r * d + rotary_dim..(r + 1) * d] == x[r * d + rotary_dim..(r + 1) * d]));
        }
        // Caller-given tables.
        let gpu_rope = Rope::from_tables(
            style,
            Tensor::from_slice(ctx(), &cos, &[64, 6]).unwrap(),
            Tensor::from_slice(ctx(), &sin, &[64, 6]).unwrap(),
        )
        .unwrap();
        let host_rope = HostRope {
            style,
            rotary_dim: 12,
            angles: HostAngles::Tables { cos: &cos, sin: &sin },
        };
        let got = wgpu_attention::rope(ctx(), &xt, &starts, &gpu_rope).unwrap();
        let expected = reference::serving::rope(&x, [b, h, l, d], &starts, &host_rope);
        let c = reference::compare(&got.to_vec::<f32>(ctx()).unwrap(), &expected, Tolerance::F32);
        if !c.ok() {
            failures.push(format!("{style:?} tables: {c}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rope_fused_into_append_and_for_queries() {
    let (hkv, hq, d) = (2, 4, 16);
    let mut failures = Vec::new();
    for (style, rotary_dim, dtype) in [
        (RopeStyle::HalfSplit, 16, DType::F32),
        (RopeStyle::Interleaved, 8, DType::F32),
        (RopeStyle::HalfSplit, 10, DType::F16),
    ] {
        if dtype == DType::F16 && !common::skip::has_for(Cap::F16, &format!("f16 {style:?}")) {
            continue;
        }
        let gpu_rope = Rope::new(ctx(), style, rotary_dim, 64).unwrap();
        let host_rope = HostRope {
            style,
            rotary_dim,
            angles: HostAngles::ThetaBase(10000.0),
        };
        let mut c = Pair::new(2, hkv, 32, d, d, dtype, 10);
        c.append(7, Some(&[7, 3]), Some((&gpu_rope, &host_rope))).unwrap();
        // A decode step: rotate the new queries at positions len_b, append, attend.
        let q = c.data(2 * hq * d);
        let qt = upload(ctx(), &q, &[2, hq, 1, d], dtype);
        let q_rot = c.gpu.rope_q(ctx(), &qt, &gpu_rope).unwrap();
        let expected_q = reference::serving::rope(&q, [2, hq, 1, d], &c.host.lengths, &host_rope);
        let cmp = reference::compare(&q_rot.to_f32_vec(ctx()).unwrap(), &expected_q, c.tol());
        if !cmp.ok() {
            failures.push(format!("{style:?}/{rotary_dim}/{dtype} q: {cmp}"));
        }
        c.append(1, None, Some((&gpu_rope, &host_rope))).unwrap();
        c.check_contents();
        let q_host: Vec<f32> = match dtype {
            DType::F16 => round_f16(&expected_q.iter().map(|&x| x as f32).collect::<Vec<_>>()),
            _ => expected_q.iter().map(|&x| x as f32).collect(),
        };
        let got = c.gpu.attend(ctx(), &q_rot, &causal()).unwrap();
        let expected = c.host.attend(&q_host, hq, 1, &causal());
        let cmp = reference::compare(&got.out.to_f32_vec(ctx()).unwrap(), &expected.out, c.tol());
        if !cmp.ok() {
            failures.push(format!("{style:?}/{rotary_dim}/{dtype} attend: {cmp}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn misuse_is_refused_before_any_work() {
    let ctx = ctx();
    let mut cache = KvCache::new(ctx, 2, 2, 8, 8, 8, DType::F32).unwrap();
    let k = Tensor::zeros(ctx, &[2, 2, 3, 8], DType::F32).unwrap();
    let wrong = Tensor::zeros(ctx, &[2, 1, 3, 8], DType::F32).unwrap();
    assert!(matches!(
        cache.append(ctx, &wrong, &k),
        Err(Error::ShapeMismatch { name: "k_new", .. })
    ));
    let lens = AppendOptions {
        lengths: Some(vec![4, 1]),
        ..Default::default()
    };
    assert!(matches!(
        cache.append_with(ctx, &k, &k, &lens),
        Err(Error::InvalidOption { .. })
    ));
    // Appending a view of the cache itself into the cache.
    let inside = cache.k().view(0, &[2, 2, 3, 8], &[128, 64, 8, 1]).unwrap();
    assert!(matches!(cache.append(ctx, &inside, &k), Err(Error::Aliasing { .. })));
    // Rope positions beyond the tables; rotary dim beyond the head.
    let short = Rope::new(ctx, RopeStyle::HalfSplit, 8, 2).unwrap();
    let with_rope = AppendOptions {
        rope: Some(short.clone()),
        ..Default::default()
    };
    assert!(matches!(
        cache.append_with(ctx, &k, &k, &with_rope),
        Err(Error::PositionOutOfRange {
            position: 2,
            max_positions: 2
        })
    ));
    let wide = Rope::new(ctx, RopeStyle::HalfSplit, 10, 16).unwrap();
    assert!(matches!(
        wgpu_attention::rope(ctx, &k, &[0, 0], &wide),
        Err(Error::InvalidOption { name: "rotary_dim", .. })
    ));
    assert!(Rope::new(ctx, RopeStyle::Interleaved, 7, 16).is_err());
    assert_eq!(cache.lengths(), &[0, 0]);
    assert_eq!(cache.seqlens().to_vec::<u32>(ctx).unwrap(), vec![0, 0]);
    // Key lengths come from the cache; aligning to key lengths needs key lengths.
    let q = Tensor::zeros(ctx, &[2, 2, 1, 8], DType::F32).unwrap();
    let opts = AttentionOptions {
        key_lengths: Some(cache.seqlens().clone()),
        ..Default::default()
    };
    assert!(matches!(cache.attend(ctx, &q, &opts), Err(Error::Unsupported(_))));
    let opts = AttentionOptions {
        align_to_key_lengths: true,
        ..Default::default()
    };
    assert!(matches!(
        wgpu_attention::attention(ctx, &q, &k, &k, &opts),
        Err(Error::InvalidOption {
            name: "align_to_key_lengths",
            ..
        })
    ));
    // set_lengths: beyond the capacity refused; otherwise on the GPU and the host.
    assert!(matches!(cache.set_lengths(ctx, &[9, 0]), Err(Error::CacheFull { .. })));
    cache.set_lengths(ctx, &[3, 8]).unwrap();
    assert_eq!(cache.seqlens().to_vec::<u32>(ctx).unwrap(), vec![3, 8]);
    assert_eq!(cache.max_len(), 8);
    assert!(KvCache::new(ctx, 2, 0, 8, 8, 8, DType::F32).is_err());
}

#[test]
fn append_from_blhd_projections_and_empty_appends() {
    // New keys and values as the projections write them, [B, L, Hkv, D], viewed without a copy;
    // queries likewise for the rotary embedding.
    let (b, hkv, hq, l, d) = (2, 2, 4, 3, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let k_blhd = random(&mut rng, b * l * hkv * d, 1.0);
    let v_blhd = random(&mut rng, b * l * hkv * d, 1.0);
    let q_blhd = random(&mut rng, b * l * hq * d, 1.0);
    let to_bhld = |x: &[f32], h: usize| {
        let mut y = vec![0.0; x.len()];
        for (e, &v) in x.iter().enumerate() {
            let (bi, li, hi, di) = (e / (l * h * d), e / (h * d) % l, e / d % h, e % d);
            y[((bi * h + hi) * l + li) * d + di] = v;
        }
        y
    };
    let buffer = |x: &[f32]| Tensor::from_slice(ctx(), x, &[x.len()]).unwrap().buffer().clone();
    let (kb, vb, qb) = (buffer(&k_blhd), buffer(&v_blhd), buffer(&q_blhd));
    let k = Tensor::from_blhd(&kb, 0, [b, l, hkv, d], DType::F32).unwrap();
    let v = Tensor::from_blhd(&vb, 0, [b, l, hkv, d], DType::F32).unwrap();
    let q = Tensor::from_blhd(&qb, 0, [b, l, hq, d], DType::F32).unwrap();
    let rope = Rope::new(ctx(), RopeStyle::Interleaved, d, 16).unwrap();
    let host_rope = HostRope {
        style: RopeStyle::Interleaved,
        rotary_dim: d,
        angles: HostAngles::ThetaBase(10000.0),
    };
    let mut cache = KvCache::new(ctx(), b, hkv, 16, d, d, DType::F32).unwrap();
    let mut host = HostKvCache::new(b, hkv, 16, d, d);
    cache.set_lengths(ctx(), &[2, 5]).unwrap();
    host.lengths = vec![2, 5];
    let q_rot = cache.rope_q(ctx(), &q, &rope).unwrap();
    let expected_q = reference::serving::rope(&to_bhld(&q_blhd, hq), [b, hq, l, d], &host.lengths, &host_rope);
    let c = reference::compare(&q_rot.to_vec::<f32>(ctx()).unwrap(), &expected_q, Tolerance::F32);
    assert!(c.ok(), "q: {c}");
    let opts = AppendOptions {
        rope: Some(rope),
        ..Default::default()
    };
    cache.append_with(ctx(), &k, &v, &opts).unwrap();
    host.append(
        &to_bhld(&k_blhd, hkv),
        &to_bhld(&v_blhd, hkv),
        l,
        None,
        Some(&host_rope),
    )
    .unwrap();
    let q_host: Vec<f32> = expected_q.iter().map(|&x| x as f32).collect();
    let got = cache.attend(ctx(), &q_rot, &causal()).unwrap();
    let expected = host.attend(&q_host, hq, l, &causal());
    let c = reference::compare(&got.out.to_vec::<f32>(ctx()).unwrap(), &expected.out, Tolerance::F32);
    assert!(c.ok(), "attend: {c}");
    // Rows 0..2 of sequence 0 were never written (set_lengths exposes what the rows hold: zeros).
    let k_rows = cache.k().to_vec::<f32>(ctx()).unwrap();
    assert!(k_rows[..2 * d].iter().all(|&x| x == 0.0));
    // An append of zero rows, or of zero rows per sequence, changes nothing.
    let none = Tensor::zeros(ctx(), &[b, hkv, 0, d], DType::F32).unwrap();
    cache.append(ctx(), &none, &none).unwrap();
    let zero_counts = AppendOptions {
        lengths: Some(vec![0, 0]),
        ..Default::default()
    };
    cache.append_with(ctx(), &k, &v, &zero_counts).unwrap();
    assert_eq!(cache.lengths(), &[5, 8]);
    assert_eq!(cache.seqlens().to_vec::<u32>(ctx()).unwrap(), vec![5, 8]);
}
