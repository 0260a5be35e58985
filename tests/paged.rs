//! Paged KV caches (docs/ATTENTION.md §9): a paged cache equals a contiguous one and the CPU
//! twin fed the same appends (page sizes that do not divide the lengths, shuffled and shared
//! pages, empty sequences, GQA, f16, RoPE, ALiBi), `attention()` over pages through a block table
//! equals the reference on the gathered K/V, misuse is refused before anything is written, and a
//! decode step replayed from prepared calls equals the one-shot calls.

mod common;
use common::skip::Cap;
use common::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::reference::{self, HostAngles, HostKvCache, HostRope, Tolerance};
use wgpu_attention::{
    alibi_slopes, attention, Alignment, AppendOptions, AttentionOptions, DType, Error, KernelChoice, KvCache,
    PagedLayout, Rope, RopeStyle, Tensor, Window, UNMAPPED_PAGE,
};

/// A paged GPU cache, a contiguous GPU cache and the host twin, fed the same data.
struct Trio {
    paged: KvCache,
    dense: KvCache,
    host: HostKvCache,
    layout: PagedLayout,
    dtype: DType,
    rng: ChaCha8Rng,
}

impl Trio {
    /// `b` sequences over a shuffled pool of `layout.pages` pages.
    fn new(b: usize, hkv: usize, layout: PagedLayout, d: usize, dtype: DType, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let capacity = layout.pages_per_seq * layout.page_size;
        let mut paged = KvCache::new_paged(ctx(), b, hkv, layout, d, d, dtype).unwrap();
        let mut ids: Vec<u32> = (0..layout.pages as u32).collect();
        ids.shuffle(&mut rng);
        let mut table: Vec<u32> = ids.into_iter().take(b * layout.pages_per_seq).collect();
        table.resize(b * layout.pages_per_seq, UNMAPPED_PAGE);
        paged.set_block_table(ctx(), &table).unwrap();
        Self {
            paged,
            dense: KvCache::new(ctx(), b, hkv, capacity, d, d, dtype).unwrap(),
            host: HostKvCache::new(b, hkv, capacity, d, d),
            layout,
            dtype,
            rng,
        }
    }

    fn data(&mut self, n: usize) -> Vec<f32> {
        let x = random(&mut self.rng, n, 1.0);
        match self.dtype {
            DType::F16 => round_f16(&x),
            _ => x,
        }
    }

    fn tol(&self) -> Tolerance {
        match self.dtype {
            DType::F16 => Tolerance::F16,
            _ => Tolerance::F32,
        }
    }

    fn append(&mut self, lnew: usize, counts: Option<&[u32]>, rope: Option<(&Rope, &HostRope)>) {
        let (b, hkv, d) = (self.host.b, self.host.hkv, self.host.dk);
        let k = self.data(b * hkv * lnew * d);
        let v = self.data(b * hkv * lnew * d);
        let opts = AppendOptions {
            lengths: counts.map(|c| c.to_vec()),
            rope: rope.map(|r| r.0.clone()),
        };
        let shape = [b, hkv, lnew, d];
        let (kt, vt) = (
            upload(ctx(), &k, &shape, self.dtype),
            upload(ctx(), &v, &shape, self.dtype),
        );
        self.paged.append_with(ctx(), &kt, &vt, &opts).unwrap();
        self.dense.append_with(ctx(), &kt, &vt, &opts).unwrap();
        self.host.append(&k, &v, lnew, counts, rope.map(|r| r.1)).unwrap();
    }

    /// The paged K and V gathered through the block table equal the host twin's rows.
    fn check_contents(&self) {
        let (b, hkv, d, cap) = (self.host.b, self.host.hkv, self.host.dk, self.host.capacity);
        assert_eq!(self.paged.seqlens().to_vec::<u32>(ctx()).unwrap(), self.host.lengths);
        let table = self.paged.block_table().unwrap().to_vec::<u32>(ctx()).unwrap();
        assert_eq!(table, self.paged.block_table_host().unwrap());
        let shape = [self.layout.pages, self.layout.page_size, hkv, d];
        for (name, t, host) in [("K", self.paged.k(), &self.host.k), ("V", self.paged.v(), &self.host.v)] {
            let dense = reference::gather_pages(&t.to_f32_vec(ctx()).unwrap(), shape, &table, b);
            for s in 0..b {
                let len = self.host.lengths[s] as usize;
                for h in 0..hkv {
                    let row = (s * hkv + h) * cap;
                    let got = &dense[row * d..(row + len) * d];
                    let want: Vec<f64> = host[row * d..(row + len) * d].iter().map(|&x| x as f64).collect();
                    let c = reference::compare(got, &want, self.tol());
                    assert!(c.ok(), "{name} rows of sequence {s} head {h}: {c}");
                }
            }
        }
    }

    /// Attention of random Q over both caches vs the host twin.
    fn check_attend(&mut self, hq: usize, lq: usize, opts: &AttentionOptions) -> Result<(), String> {
        let (b, d) = (self.host.b, self.host.dk);
        let q = self.data(b * hq * lq * d);
        let qt = upload(ctx(), &q, &[b, hq, lq, d], self.dtype);
        let opts = AttentionOptions {
            return_lse: true,
            ..opts.clone()
        };
        let expected = self.host.attend(&q, hq, lq, &opts);
        let tol = self.tol();
        for (name, cache) in [("paged", &self.paged), ("contiguous", &self.dense)] {
            let got = cache.attend(ctx(), &qt, &opts).map_err(|e| format!("{name}: {e}"))?;
            let c = reference::compare(&got.out.to_f32_vec(ctx()).unwrap(), &expected.out, tol);
            if !c.ok() {
                return Err(format!(
                    "{name} O: {c} (lengths {:?}, lq {lq}, {opts:?})",
                    self.host.lengths
                ));
            }
            let c = reference::compare(&got.lse.unwrap().to_vec::<f32>(ctx()).unwrap(), &expected.lse, tol);
            if !c.ok() {
                return Err(format!("{name} LSE: {c} (lengths {:?}, lq {lq})", self.host.lengths));
            }
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

const LAYOUT: PagedLayout = PagedLayout {
    pages: 23,
    page_size: 5,
    pages_per_seq: 7,
};

#[test]
fn paged_equals_contiguous_and_the_reference() {
    // Page size 5 divides none of the final lengths; sequence 1 stays empty until the last step.
    let mut t = Trio::new(3, 2, LAYOUT, 16, DType::F32, 1);
    t.append(6, Some(&[6, 0, 3]), None);
    t.append(5, Some(&[4, 0, 5]), None);
    t.check_contents();
    let mut failures = Vec::new();
    // Sequence 1 is empty here: O = 0, LSE = −∞ on both caches.
    failures.extend(t.check_attend(4, 1, &causal()).err());
    t.append(3, Some(&[3, 2, 1]), None);
    t.check_contents();
    let alibi = AttentionOptions {
        alibi_slopes: Some(alibi_slopes(4).into()),
        ..causal()
    };
    let window = AttentionOptions {
        window: Some(Window::causal_local(4, Alignment::BottomRight)),
        ..Default::default()
    };
    for (lq, opts) in [
        (1, causal()),
        (1, AttentionOptions::default()),
        (3, causal()),
        (2, alibi),
        (1, window),
    ] {
        failures.extend(t.check_attend(4, lq, &opts).err());
        let softcap = AttentionOptions {
            softcap: Some(1.5),
            alibi_slopes: opts.alibi_slopes.as_ref().map(|_| alibi_slopes(8).into()),
            ..opts
        };
        failures.extend(t.check_attend(8, lq, &softcap).err());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn full_capacity_f16_and_rope() {
    let dtype = match common::skip::has_for(Cap::F16, "f16 pages (runs f32 instead)") {
        true => DType::F16,
        false => DType::F32,
    };
    let layout = PagedLayout {
        pages: 8,
        page_size: 4,
        pages_per_seq: 4,
    };
    let mut t = Trio::new(2, 1, layout, 8, dtype, 2);
    let rope = Rope::new(ctx(), RopeStyle::Interleaved, 8, 32).unwrap();
    let host_rope = HostRope {
        style: RopeStyle::Interleaved,
        rotary_dim: 8,
        angles: HostAngles::ThetaBase(10000.0),
    };
    t.append(9, Some(&[9, 7]), Some((&rope, &host_rope)));
    t.append(7, Some(&[7, 7]), Some((&rope, &host_rope)));
    t.append(2, Some(&[0, 2]), Some((&rope, &host_rope)));
    assert_eq!(t.paged.lengths(), &[16, 16]); // exactly the capacity
    t.check_contents();
    let failures: Vec<String> = [(1, causal()), (4, causal())]
        .iter()
        .filter_map(|(lq, o)| t.check_attend(2, *lq, o).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // One more row does not fit: refused, nothing written or advanced.
    let k = Tensor::zeros(ctx(), &[2, 1, 1, 8], dtype).unwrap();
    let err = t.paged.append(ctx(), &k, &k).unwrap_err();
    assert!(matches!(err, Error::CacheFull { capacity: 16, .. }), "{err}");
    t.check_contents();
}

/// `attention()` over pages through a block table, with pages shared between sequences (a common
/// prompt prefix) and a table narrower than it is wide, against `sdpa` on the gathered K/V.
#[test]
fn attention_over_a_block_table() {
    let (b, hq, hkv, lq, d, page) = (3, 6, 2, 2, 12, 4);
    let num_pages = 9;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let k = random(&mut rng, num_pages * page * hkv * d, 1.0);
    let v = random(&mut rng, num_pages * page * hkv * d, 1.0);
    let q = random(&mut rng, b * hq * lq * d, 1.0);
    // Sequences 0 and 2 share pages 4 and 7 as their first two pages.
    let wide = [4u32, 7, 1, 0, 8, 4, 7, 5, 2, 6, 4, 7, 3, 0, 0];
    let cols = 3; // a [3, 3] view of the [3, 5] table: Lk = 12
    let lens = [10u32, 3, 12];
    let table = Tensor::from_slice(ctx(), &wide, &[b, 5]).unwrap();
    let table = table.view(0, &[b, cols], &[5, 1]).unwrap();
    let lengths = Tensor::from_slice(ctx(), &lens, &[b]).unwrap();
    let pages_shape = [num_pages, page, hkv, d];
    let narrow: Vec<u32> = (0..b).flat_map(|s| wide[s * 5..s * 5 + cols].to_vec()).collect();
    let dense_k = reference::gather_pages(&k, pages_shape, &narrow, b);
    let dense_v = reference::gather_pages(&v, pages_shape, &narrow, b);
    let qt = Tensor::from_slice(ctx(), &q, &[b, hq, lq, d]).unwrap();
    let kt = Tensor::from_slice(ctx(), &k, &pages_shape).unwrap();
    let vt = Tensor::from_slice(ctx(), &v, &pages_shape).unwrap();
    let mut failures = Vec::new();
    for (name, opts) in [
        ("plain", AttentionOptions::default()),
        ("causal per sequence", causal()),
        (
            "alibi",
            AttentionOptions {
                alibi_slopes: Some(alibi_slopes(hq).into()),
                ..causal()
            },
        ),
    ] {
        let opts = AttentionOptions {
            block_table: Some(table.clone()),
            key_lengths: Some(lengths.clone()),
            align_to_key_lengths: true,
            return_lse: true,
            ..opts
        };
        let got = attention(ctx(), &qt, &kt, &vt, &opts).unwrap();
        assert_eq!(got.kernel, KernelChoice::Decode);
        let mut inputs = reference::HostInputs::new(problem(b, hq, hkv, lq, cols * page, d, d), &q, &dense_k, &dense_v);
        inputs.key_lengths = Some(&lens);
        let expected = reference::sdpa(&inputs, &opts);
        let c = reference::compare(&got.out.to_vec::<f32>(ctx()).unwrap(), &expected.out, Tolerance::F32);
        if !c.ok() {
            failures.push(format!("{name}: {c}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn misuse_is_refused_before_anything_is_written() {
    let layout = PagedLayout {
        pages: 4,
        page_size: 3,
        pages_per_seq: 3,
    };
    // 2 sequences × 3 pages need 6 pages: the pool of 4 starts unmapped.
    let mut cache = KvCache::new_paged(ctx(), 2, 1, layout, 4, 4, DType::F32).unwrap();
    assert!(cache.block_table_host().unwrap().iter().all(|&p| p == UNMAPPED_PAGE));
    let rows = |l: usize| Tensor::from_slice(ctx(), &vec![1.0f32; 2 * l * 4], &[2, 1, l, 4]).unwrap();
    let err = cache.append(ctx(), &rows(1), &rows(1)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::PageUnmapped {
                batch: 0,
                position: 0,
                ..
            }
        ),
        "{err}"
    );
    // Page ids past the pool are refused; unmapped entries are allowed.
    let err = cache
        .set_block_table(ctx(), &[0, 1, 9, 2, 3, UNMAPPED_PAGE])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidOption {
                name: "block table",
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        cache.set_block_table(ctx(), &[0, 1]),
        Err(Error::ShapeMismatch { .. })
    ));
    cache
        .set_block_table(ctx(), &[0, 1, UNMAPPED_PAGE, 2, 3, UNMAPPED_PAGE])
        .unwrap();
    cache.append(ctx(), &rows(6), &rows(6)).unwrap(); // exactly two pages each
                                                      // A seventh row would land on the unmapped third page: refused, lengths unchanged.
    let err = cache.append(ctx(), &rows(1), &rows(1)).unwrap_err();
    assert!(matches!(err, Error::PageUnmapped { position: 6, .. }), "{err}");
    assert_eq!(cache.lengths(), &[6, 6]);
    assert_eq!(cache.seqlens().to_vec::<u32>(ctx()).unwrap(), vec![6, 6]);
    // The fused and staged kernels do not read pages; a contiguous cache has no table.
    let q = Tensor::zeros(ctx(), &[2, 2, 1, 4], DType::F32).unwrap();
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        assert!(matches!(cache.attend(ctx(), &q, &opts), Err(Error::Unsupported(_))));
    }
    assert!(cache.views().is_err());
    let mut dense = KvCache::new(ctx(), 2, 1, 8, 4, 4, DType::F32).unwrap();
    assert!(matches!(dense.set_block_table(ctx(), &[0]), Err(Error::Unsupported(_))));
    // Block tables must be u32 [B, pages_per_seq].
    let k = Tensor::zeros(ctx(), &[4, 3, 1, 4], DType::F32).unwrap();
    for (table, shape) in [(vec![0u32; 3], vec![3usize]), (vec![0u32; 6], vec![3, 2])] {
        let opts = AttentionOptions {
            block_table: Some(Tensor::from_slice(ctx(), &table, &shape).unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            attention(ctx(), &q, &k, &k, &opts),
            Err(Error::ShapeMismatch { .. })
        ));
    }
    let opts = AttentionOptions {
        block_table: Some(Tensor::from_slice(ctx(), &[0.0f32; 4], &[2, 2]).unwrap()),
        ..Default::default()
    };
    assert!(matches!(attention(ctx(), &q, &k, &k, &opts), Err(Error::DType { .. })));
}

/// A decode loop replayed from prepared calls (rope of q, append with rope, attention over the
/// whole capacity) equals the one-shot calls step by step, on a paged and a contiguous cache.
#[test]
fn replayed_decode_steps_equal_one_shot_calls() {
    let (b, hq, hkv, d) = (2, 4, 2, 8);
    let layout = PagedLayout {
        pages: 12,
        page_size: 3,
        pages_per_seq: 6,
    };
    let rope = Rope::new(ctx(), RopeStyle::HalfSplit, 8, 64).unwrap();
    let host_rope = HostRope {
        style: RopeStyle::HalfSplit,
        rotary_dim: 8,
        angles: HostAngles::ThetaBase(10000.0),
    };
    for paged in [true, false] {
        let mut t = Trio::new(b, hkv, layout, d, DType::F32, 4);
        t.append(5, Some(&[5, 2]), Some((&rope, &host_rope)));
        let cache = if paged { &mut t.paged } else { &mut t.dense };
        // Fixed inputs, overwritten every step; everything else is prepared once.
        let q_in = Tensor::zeros(ctx(), &[b, hq, 1, d], DType::F32).unwrap();
        let k_in = Tensor::zeros(ctx(), &[b, hkv, 1, d], DType::F32).unwrap();
        let v_in = Tensor::zeros(ctx(), &[b, hkv, 1, d], DType::F32).unwrap();
        let opts = AttentionOptions {
            alibi_slopes: Some(alibi_slopes(hq).into()),
            ..causal()
        };
        let rope_q = cache.prepare_rope_q(ctx(), &q_in, &rope).unwrap();
        let append = cache
            .prepare_append(
                ctx(),
                &k_in,
                &v_in,
                &AppendOptions {
                    rope: Some(rope.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        let step = cache.prepare_replay(ctx(), rope_q.out(), &opts).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut host = t.host.clone();
        for s in 0..12 {
            let q = random(&mut rng, b * hq * d, 1.0);
            let k = random(&mut rng, b * hkv * d, 1.0);
            let v = random(&mut rng, b * hkv * d, 1.0);
            let queue = ctx().queue();
            queue.write_buffer(q_in.buffer(), 0, bytemuck::cast_slice(&q));
            queue.write_buffer(k_in.buffer(), 0, bytemuck::cast_slice(&k));
            queue.write_buffer(v_in.buffer(), 0, bytemuck::cast_slice(&v));
            let mut enc = ctx().device().create_command_encoder(&Default::default());
            cache.rope_q_prepared(&mut enc, &rope_q).unwrap();
            cache.append_prepared(&mut enc, &append).unwrap();
            step.encode(&mut enc);
            queue.submit([enc.finish()]);
            let got = step.output().out.to_vec::<f32>(ctx()).unwrap();

            let q_rot: Vec<f32> = reference::serving::rope(&q, [b, hq, 1, d], &host.lengths, &host_rope)
                .into_iter()
                .map(|x| x as f32)
                .collect();
            host.append(&k, &v, 1, None, Some(&host_rope)).unwrap();
            let expected = host.attend(&q_rot, hq, 1, &opts);
            let c = reference::compare(&got, &expected.out, Tolerance::F32);
            assert!(c.ok(), "paged={paged} step {s}: {c}");
        }
        assert_eq!(cache.lengths(), host.lengths.as_slice());
        // Past the capacity the replay is refused on the host, before recording.
        let room = layout.pages_per_seq * layout.page_size - cache.max_len();
        for _ in 0..room {
            let mut enc = ctx().device().create_command_encoder(&Default::default());
            cache.append_prepared(&mut enc, &append).unwrap();
            ctx().queue().submit([enc.finish()]);
        }
        let mut enc = ctx().device().create_command_encoder(&Default::default());
        assert!(matches!(
            cache.append_prepared(&mut enc, &append),
            Err(Error::CacheFull { .. })
        ));
        // A prepared call belongs to its cache.
        let other = KvCache::new(ctx(), b, hkv, 4, d, d, DType::F32).unwrap();
        let mut other = other;
        assert!(matches!(
            other.append_prepared(&mut enc, &append),
            Err(Error::Unsupported(_))
        ));
    }
}

/// Packed rows (the varlen layout) appended with `append_packed` land exactly where the same rows
/// padded to [B, Hkv, L, D] land with `append_with` and per-sequence lengths, with and without a
/// rotary embedding, on a paged and a contiguous cache; bad offsets are refused unchanged.
#[test]
fn packed_append_equals_padded_append() {
    let (b, hkv, d) = (3, 2, 8);
    let layout = PagedLayout {
        pages: 12,
        page_size: 4,
        pages_per_seq: 4,
    };
    let lens = [5u32, 0, 7];
    let offsets = [0u32, 5, 5, 12];
    let total = 12;
    let longest = 7;
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let k = random(&mut rng, total * hkv * d, 1.0);
    let v = random(&mut rng, total * hkv * d, 1.0);
    let pad = |x: &[f32]| {
        let mut out = vec![0.0f32; b * hkv * longest * d];
        for s in 0..b {
            for r in 0..lens[s] as usize {
                for h in 0..hkv {
                    let src = ((offsets[s] as usize + r) * hkv + h) * d;
                    let dst = ((s * hkv + h) * longest + r) * d;
                    out[dst..dst + d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
        out
    };
    let rope = Rope::new(ctx(), RopeStyle::Interleaved, d, 32).unwrap();
    let packed = |x: &[f32]| Tensor::from_slice(ctx(), x, &[total, hkv, d]).unwrap();
    let padded = |x: &[f32]| Tensor::from_slice(ctx(), &pad(x), &[b, hkv, longest, d]).unwrap();
    for paged in [true, false] {
        for rope in [None, Some(&rope)] {
            let new_cache = || match paged {
                true => KvCache::new_paged(ctx(), b, hkv, layout, d, d, DType::F32).unwrap(),
                false => KvCache::new(ctx(), b, hkv, 16, d, d, DType::F32).unwrap(),
            };
            let (mut a, mut c) = (new_cache(), new_cache());
            // A first append so that the rows land past non-zero lengths.
            let first = Tensor::from_slice(ctx(), &vec![0.5f32; b * hkv * 2 * d], &[b, hkv, 2, d]).unwrap();
            a.append(ctx(), &first, &first).unwrap();
            c.append(ctx(), &first, &first).unwrap();
            a.append_packed(ctx(), &packed(&k), &packed(&v), &offsets, rope)
                .unwrap();
            let opts = AppendOptions {
                lengths: Some(lens.to_vec()),
                rope: rope.cloned(),
            };
            c.append_with(ctx(), &padded(&k), &padded(&v), &opts).unwrap();
            assert_eq!(a.lengths(), &[7, 2, 9]);
            assert_eq!(a.seqlens().to_vec::<u32>(ctx()).unwrap(), vec![7, 2, 9]);
            for (x, y) in [(a.k(), c.k()), (a.v(), c.v())] {
                assert_eq!(x.to_vec::<f32>(ctx()).unwrap(), y.to_vec::<f32>(ctx()).unwrap());
            }
            // Refused before anything is recorded: offsets not from 0, decreasing, past the rows,
            // the wrong count; a sequence past its capacity.
            for bad in [&[1u32, 5, 5, 12][..], &[0, 6, 5, 12], &[0, 5, 5, 13], &[0, 5, 12]] {
                let err = a.append_packed(ctx(), &packed(&k), &packed(&v), bad, None).unwrap_err();
                assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
            }
            let many = Tensor::zeros(ctx(), &[20, hkv, d], DType::F32).unwrap();
            let err = a.append_packed(ctx(), &many, &many, &[0, 0, 0, 20], None).unwrap_err();
            assert!(matches!(err, Error::CacheFull { .. }), "{err}");
            assert_eq!(a.lengths(), &[7, 2, 9]);
        }
    }
}
