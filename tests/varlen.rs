//! Variable-length (packed) attention against the CPU reference, against the padded dense call,
//! and its validation.

mod common;
use common::skip::Cap;
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::reference::{self, Tolerance, VarlenHostInputs};
use wgpu_attention::{
    attention, attention_varlen, attention_varlen_encode, Alignment, Attention, AttentionOptions, DType, Dropout,
    Error, KernelChoice, Tensor, Varlen, Window,
};

/// Offsets [0, l0, l0 + l1, …] of the lengths.
fn offsets(lens: &[u32]) -> Vec<u32> {
    let mut cu = vec![0];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

/// One packed problem: per-sequence query and key lengths, heads and head dims.
#[derive(Debug, Clone)]
struct VCase {
    lens_q: Vec<u32>,
    lens_k: Vec<u32>,
    hq: usize,
    hkv: usize,
    dk: usize,
    dv: usize,
    dtype: DType,
    opts: AttentionOptions,
    seed: u64,
}

/// Packed host data of a case (rounded through f16 for f16 cases).
struct Packed {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    cu_q: Vec<u32>,
    cu_k: Vec<u32>,
}

impl VCase {
    fn new(lens_q: &[u32], lens_k: &[u32], hq: usize, hkv: usize, d: usize) -> Self {
        Self {
            lens_q: lens_q.to_vec(),
            lens_k: lens_k.to_vec(),
            hq,
            hkv,
            dk: d,
            dv: d,
            dtype: DType::F32,
            opts: AttentionOptions::default(),
            seed: 11,
        }
    }
    fn opts(mut self, f: impl FnOnce(&mut AttentionOptions)) -> Self {
        f(&mut self.opts);
        self
    }
    fn dims(mut self, dk: usize, dv: usize) -> Self {
        (self.dk, self.dv) = (dk, dv);
        self
    }
    fn dtype(mut self, d: DType) -> Self {
        self.dtype = d;
        self
    }

    fn data(&self) -> Packed {
        let (cu_q, cu_k) = (offsets(&self.lens_q), offsets(&self.lens_k));
        let (tq, tk) = (*cu_q.last().unwrap() as usize, *cu_k.last().unwrap() as usize);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut q = random(&mut rng, tq * self.hq * self.dk, 1.0);
        let mut k = random(&mut rng, tk * self.hkv * self.dk, 1.0);
        let mut v = random(&mut rng, tk * self.hkv * self.dv, 1.0);
        if self.dtype == DType::F16 {
            (q, k, v) = (round_f16(&q), round_f16(&k), round_f16(&v));
        }
        Packed { q, k, v, cu_q, cu_k }
    }

    fn tensors(&self, x: &Packed) -> [Tensor; 3] {
        let ctx = ctx();
        let (tq, tk) = (x.q.len() / (self.hq * self.dk), x.k.len() / (self.hkv * self.dk));
        [
            upload(ctx, &x.q, &[tq, self.hq, self.dk], self.dtype),
            upload(ctx, &x.k, &[tk, self.hkv, self.dk], self.dtype),
            upload(ctx, &x.v, &[tk, self.hkv, self.dv], self.dtype),
        ]
    }

    fn tolerance(&self) -> Tolerance {
        match self.dtype {
            DType::F16 => Tolerance::F16,
            _ => Tolerance::F32,
        }
    }

    /// GPU O and LSE against the reference.
    fn check(&self) -> Result<(), String> {
        let ctx = ctx();
        let x = self.data();
        let [q, k, v] = self.tensors(&x);
        let seqs = Varlen::from_offsets(ctx, &x.cu_q, &x.cu_k).map_err(|e| format!("{self:?}: {e}"))?;
        let opts = AttentionOptions {
            return_lse: true,
            ..self.opts.clone()
        };
        let res = attention_varlen(ctx, &q, &k, &v, &seqs, &opts).map_err(|e| format!("{self:?}: {e}"))?;
        if let (Some(want), Some(ran)) = (self.opts.design, res.design) {
            if want != ran && res.design_note.is_none() {
                return Err(format!(
                    "{self:?}: asked for the {want} design, ran {ran} without a note"
                ));
            }
        }
        let expected = reference::sdpa_varlen(
            &VarlenHostInputs {
                hq: self.hq,
                hkv: self.hkv,
                dk: self.dk,
                dv: self.dv,
                q: &x.q,
                k: &x.k,
                v: &x.v,
                cu_seqlens_q: &x.cu_q,
                cu_seqlens_k: &x.cu_k,
            },
            &self.opts,
        );
        assert_eq!(res.out.shape(), [q.shape()[0], self.hq, self.dv]);
        assert_eq!(res.lse.as_ref().unwrap().shape(), [self.hq, q.shape()[0]]);
        let o = res.out.to_f32_vec(ctx).unwrap();
        let c = reference::compare(&o, &expected.out, self.tolerance());
        if !c.ok() {
            return Err(format!("O mismatch ({c}) for {self:?}"));
        }
        let lse = res.lse.unwrap().to_vec::<f32>(ctx).unwrap();
        let c = reference::compare(&lse, &expected.lse, self.tolerance());
        if !c.ok() {
            return Err(format!("LSE mismatch ({c}) for {self:?}"));
        }
        Ok(())
    }
}

/// Every case on every fused design the adapter has (a design that cannot serve a case falls
/// back, as the library does).
fn check_cases(cases: impl IntoIterator<Item = VCase>) {
    let failures: Vec<String> = cases
        .into_iter()
        .filter(|c| c.dtype != DType::F16 || common::skip::has_for(Cap::F16, &format!("f16 lengths {:?}", c.lens_q)))
        .flat_map(|c| {
            // The designs for the case's storage type (coopmat serves f16 only).
            let designs = wgpu_attention::available_designs(ctx(), c.dtype);
            designs.into_iter().map(move |d| c.clone().opts(|o| o.design = Some(d)))
        })
        .filter_map(|c| c.check().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Lengths 0, 1, primes and more than one 128-row query block; equal and unequal Lq, Lk.
const RAGGED: [u32; 7] = [0, 1, 7, 13, 131, 2, 29];
const RAGGED_K: [u32; 7] = [5, 1, 0, 31, 140, 2, 3];

#[test]
fn ragged_lengths() {
    check_cases([
        VCase::new(&RAGGED, &RAGGED, 2, 2, 16),
        VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16),
        VCase::new(&[1], &[1], 1, 1, 16),
        VCase::new(&[3, 0, 5], &[0, 4, 6], 1, 1, 16), // no keys, no queries
    ]);
}

#[test]
fn causal_both_alignments() {
    let mut cases = Vec::new();
    for a in [Alignment::BottomRight, Alignment::TopLeft] {
        cases.push(VCase::new(&RAGGED, &RAGGED, 2, 2, 16).opts(|o| o.causal = Some(a)));
        // Lq > Lk and Lq < Lk: bottom-right leaves the first rows of long query sequences with no
        // key at all (O = 0, LSE = −∞).
        cases.push(VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| o.causal = Some(a)));
    }
    check_cases(cases);
}

#[test]
fn windows_both_alignments() {
    let mut cases = Vec::new();
    for a in [Alignment::BottomRight, Alignment::TopLeft] {
        cases.push(VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| {
            o.window = Some(Window {
                left: Some(5),
                right: Some(2),
                alignment: a,
            })
        }));
        cases.push(VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| {
            o.causal = Some(a);
            o.window = Some(Window::causal_local(3, a));
        }));
    }
    // Mixed: causal top-left, window bottom-right.
    cases.push(VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| {
        o.causal = Some(Alignment::TopLeft);
        o.window = Some(Window {
            left: Some(4),
            right: None,
            alignment: Alignment::BottomRight,
        });
    }));
    check_cases(cases);
}

#[test]
fn gqa_mqa_and_unequal_head_dims() {
    check_cases([
        VCase::new(&RAGGED, &RAGGED_K, 4, 2, 16).opts(|o| o.causal = Some(Alignment::BottomRight)),
        VCase::new(&RAGGED, &RAGGED_K, 4, 1, 16),
        VCase::new(&RAGGED, &RAGGED_K, 4, 2, 16)
            .dims(16, 8)
            .opts(|o| o.causal = Some(Alignment::BottomRight)),
    ]);
}

#[test]
fn softcap_scale_dropout_and_zero_score() {
    check_cases([
        VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| {
            o.softcap = Some(0.5);
            o.scale = Some(2.0);
        }),
        VCase::new(&RAGGED, &RAGGED_K, 2, 1, 16).opts(|o| {
            o.dropout = Some(Dropout { p: 0.3, seed: 99 });
            o.causal = Some(Alignment::BottomRight);
        }),
        VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| o.zero_score_mask = true),
        // ALiBi distances from each sequence's own bottom-right position.
        VCase::new(&RAGGED, &RAGGED_K, 4, 2, 16).opts(|o| {
            o.alibi_slopes = Some(vec![0.9, 0.5, 0.25, 0.0].into());
            o.causal = Some(Alignment::BottomRight);
        }),
        VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16).opts(|o| o.alibi_slopes = Some(vec![0.7, 0.3].into())),
        // [B, Hq] slopes: one pair per sequence.
        VCase::new(&RAGGED, &RAGGED_K, 2, 1, 16).opts(|o| {
            let per_seq: Vec<f32> = (0..2 * RAGGED.len()).map(|i| 0.1 + 0.13 * i as f32).collect();
            o.alibi_slopes = Some(wgpu_attention::AlibiSlopes::per_batch(RAGGED.len(), per_seq));
            o.causal = Some(Alignment::BottomRight);
        }),
    ]);
}

#[test]
fn f16_storage() {
    check_cases([
        VCase::new(&RAGGED, &RAGGED_K, 2, 1, 16).dtype(DType::F16),
        VCase::new(&RAGGED, &RAGGED_K, 2, 2, 16)
            .dtype(DType::F16)
            .opts(|o| o.causal = Some(Alignment::BottomRight)),
    ]);
}

/// The padded dense call with key lengths computes the same rows: queries padded at the end of
/// each sequence (rows past len_q(b) are not compared), keys masked by their lengths. With equal
/// query lengths, bottom-right causal per sequence (`align_to_key_lengths`) and dropout (keyed by
/// the same (b, h, i, j)) agree too.
#[test]
fn matches_the_padded_dense_call() {
    let ctx = ctx();
    let (hq, hkv, d) = (4, 2, 16);
    let cases: [(&[u32], &[u32], AttentionOptions); 2] = [
        (&[5, 1, 17, 9], &[12, 0, 3, 30], AttentionOptions::default()),
        (
            &[6, 6, 6, 6],
            &[6, 20, 9, 33],
            AttentionOptions {
                causal: Some(Alignment::BottomRight),
                dropout: Some(Dropout { p: 0.25, seed: 5 }),
                softcap: Some(3.0),
                ..Default::default()
            },
        ),
    ];
    for (lens_q, lens_k, opts) in cases {
        let case = VCase::new(lens_q, lens_k, hq, hkv, d);
        let x = case.data();
        let [q, k, v] = case.tensors(&x);
        let seqs = Varlen::from_offsets(ctx, &x.cu_q, &x.cu_k).unwrap();
        let lse_opts = AttentionOptions {
            return_lse: true,
            ..opts.clone()
        };
        let packed = attention_varlen(ctx, &q, &k, &v, &seqs, &lse_opts).unwrap();
        let (b, lq, lk) = (lens_q.len(), seqs.max_seqlen_q(), seqs.max_seqlen_k());
        // Dense [B, H, L, D] with zero padding.
        let pad = |data: &[f32], cu: &[u32], heads: usize, l: usize, dim: usize| {
            let mut out = vec![0.0; b * heads * l * dim];
            for s in 0..b {
                for r in 0..(cu[s + 1] - cu[s]) as usize {
                    for h in 0..heads {
                        let src = ((cu[s] as usize + r) * heads + h) * dim;
                        let dst = ((s * heads + h) * l + r) * dim;
                        out[dst..dst + dim].copy_from_slice(&data[src..src + dim]);
                    }
                }
            }
            out
        };
        let dq = Tensor::from_slice(ctx, &pad(&x.q, &x.cu_q, hq, lq, d), &[b, hq, lq, d]).unwrap();
        let dk = Tensor::from_slice(ctx, &pad(&x.k, &x.cu_k, hkv, lk, d), &[b, hkv, lk, d]).unwrap();
        let dv = Tensor::from_slice(ctx, &pad(&x.v, &x.cu_k, hkv, lk, d), &[b, hkv, lk, d]).unwrap();
        let dense_opts = AttentionOptions {
            key_lengths: Some(Tensor::from_slice(ctx, lens_k, &[b]).unwrap()),
            align_to_key_lengths: true,
            kernel: KernelChoice::Fused,
            ..lse_opts
        };
        let dense = attention(ctx, &dq, &dk, &dv, &dense_opts).unwrap();
        let (po, plse) = (
            packed.out.to_vec::<f32>(ctx).unwrap(),
            packed.lse.unwrap().to_vec::<f32>(ctx).unwrap(),
        );
        let (o, lse) = (
            dense.out.to_vec::<f32>(ctx).unwrap(),
            dense.lse.unwrap().to_vec::<f32>(ctx).unwrap(),
        );
        let total_q = *x.cu_q.last().unwrap() as usize;
        let (mut got, mut want, mut got_lse, mut want_lse) = (vec![], vec![], vec![], vec![]);
        for s in 0..b {
            for r in 0..lens_q[s] as usize {
                for h in 0..hq {
                    let row = x.cu_q[s] as usize + r;
                    got.extend_from_slice(&po[(row * hq + h) * d..][..d]);
                    want.extend(o[((s * hq + h) * lq + r) * d..][..d].iter().map(|&x| x as f64));
                    got_lse.push(plse[h * total_q + row]);
                    want_lse.push(lse[(s * hq + h) * lq + r] as f64);
                }
            }
        }
        let c = reference::compare(&got, &want, Tolerance::F32);
        assert!(c.ok(), "O against dense ({c}) for {lens_q:?} {lens_k:?} {opts:?}");
        let c = reference::compare(&got_lse, &want_lse, Tolerance::F32);
        assert!(c.ok(), "LSE against dense ({c}) for {lens_q:?} {lens_k:?} {opts:?}");
    }
}

/// Empty batches and tensors: B = 0, no query rows, no key rows.
#[test]
fn empty_axes() {
    let ctx = ctx();
    let (hq, d) = (2, 16);
    let zeros = |rows: usize| Tensor::zeros(ctx, &[rows, hq, d], DType::F32).unwrap();
    let lse = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    // B = 0.
    let seqs = Varlen::from_offsets(ctx, &[0], &[0]).unwrap();
    let res = attention_varlen(ctx, &zeros(0), &zeros(0), &zeros(0), &seqs, &lse).unwrap();
    assert_eq!(
        (res.out.shape(), res.lse.as_ref().unwrap().shape()),
        (&[0, hq, d][..], &[hq, 0][..])
    );
    // Sequences without queries.
    let seqs = Varlen::from_offsets(ctx, &[0, 0, 0], &[0, 3, 5]).unwrap();
    let res = attention_varlen(ctx, &zeros(0), &zeros(5), &zeros(5), &seqs, &lse).unwrap();
    assert_eq!(res.out.shape(), [0, hq, d]);
    // No keys at all: every row is O = 0, LSE = −∞.
    let q = Tensor::from_slice(ctx, &vec![0.5f32; 4 * hq * d], &[4, hq, d]).unwrap();
    let seqs = Varlen::from_offsets(ctx, &[0, 1, 4], &[0, 0, 0]).unwrap();
    let call = Attention::varlen(ctx, &q, &zeros(0), &zeros(0), &seqs, &lse).unwrap();
    assert_eq!(call.dispatch_count(), 1);
    call.submit().unwrap();
    let res = call.into_output();
    assert!(res.out.to_vec::<f32>(ctx).unwrap().iter().all(|&x| x == 0.0));
    let l = res.lse.unwrap().to_vec::<f32>(ctx).unwrap();
    assert!(l.len() == 4 * hq && l.iter().all(|&x| x == f32::NEG_INFINITY), "{l:?}");
}

/// GPU-resident offsets that decrease or run past the tensors are clamped in the kernel, as the
/// reference reads them; a sequence longer than `max_seqlen_q` has its rows past it unwritten.
#[test]
fn inconsistent_gpu_offsets_stay_inside_the_tensors() {
    let ctx = ctx();
    let case = VCase::new(&[6, 4], &[5, 3], 2, 1, 16);
    let x = case.data();
    let [q, k, v] = case.tensors(&x);
    let (tq, tk) = (q.shape()[0], k.shape()[0]);
    for (cu_q, cu_k) in [
        (vec![0u32, 50, 3], vec![0u32, 4, 100]),
        (vec![7, 2, 10], vec![u32::MAX, 0, 8]),
        (vec![0, 10, 10], vec![3, 1, 2]),
    ] {
        let seqs = Varlen::new(
            Tensor::from_slice(ctx, &cu_q, &[3]).unwrap(),
            Tensor::from_slice(ctx, &cu_k, &[3]).unwrap(),
            tq,
            tk,
        );
        let opts = AttentionOptions {
            return_lse: true,
            causal: Some(Alignment::BottomRight),
            ..Default::default()
        };
        let res = attention_varlen(ctx, &q, &k, &v, &seqs, &opts).unwrap();
        let expected = reference::sdpa_varlen(
            &VarlenHostInputs {
                hq: 2,
                hkv: 1,
                dk: 16,
                dv: 16,
                q: &x.q,
                k: &x.k,
                v: &x.v,
                cu_seqlens_q: &cu_q,
                cu_seqlens_k: &cu_k,
            },
            &opts,
        );
        let c = reference::compare(&res.out.to_vec::<f32>(ctx).unwrap(), &expected.out, Tolerance::F32);
        assert!(c.ok(), "O ({c}) for {cu_q:?} {cu_k:?}");
        let c = reference::compare(
            &res.lse.unwrap().to_vec::<f32>(ctx).unwrap(),
            &expected.lse,
            Tolerance::F32,
        );
        assert!(c.ok(), "LSE ({c}) for {cu_q:?} {cu_k:?}");
    }
    // max_seqlen_q = 2 for a first sequence of 6 rows: rows 2..6 are not written.
    let seqs = Varlen::new(
        Tensor::from_slice(ctx, &x.cu_q, &[3]).unwrap(),
        Tensor::from_slice(ctx, &x.cu_k, &[3]).unwrap(),
        2,
        5,
    );
    let o = attention_varlen(ctx, &q, &k, &v, &seqs, &AttentionOptions::default())
        .unwrap()
        .out
        .to_vec::<f32>(ctx)
        .unwrap();
    let row = |r: usize| &o[r * 2 * 16..(r + 1) * 2 * 16];
    assert!(row(1).iter().any(|&x| x != 0.0) && row(6).iter().any(|&x| x != 0.0));
    assert!((2..6).all(|r| row(r).iter().all(|&x| x == 0.0)));
}

/// The prepared call records any number of times, into the caller's encoder too, and writes into
/// a caller's `out`.
#[test]
fn prepared_encode_and_caller_out() {
    let ctx = ctx();
    let case = VCase::new(&[9, 3, 20], &[4, 12, 20], 2, 2, 16).opts(|o| o.causal = Some(Alignment::BottomRight));
    let x = case.data();
    let [q, k, v] = case.tensors(&x);
    let seqs = Varlen::from_offsets(ctx, &x.cu_q, &x.cu_k).unwrap();
    let expected = reference::sdpa_varlen(
        &VarlenHostInputs {
            hq: 2,
            hkv: 2,
            dk: 16,
            dv: 16,
            q: &x.q,
            k: &x.k,
            v: &x.v,
            cu_seqlens_q: &x.cu_q,
            cu_seqlens_k: &x.cu_k,
        },
        &case.opts,
    );
    let out = Tensor::zeros(ctx, &[32, 2, 16], DType::F32).unwrap();
    let opts = AttentionOptions {
        out: Some(out.clone()),
        ..case.opts.clone()
    };
    let call = Attention::varlen(ctx, &q, &k, &v, &seqs, &opts).unwrap();
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    call.encode(&mut enc);
    call.encode(&mut enc);
    ctx.queue().submit([enc.finish()]);
    let c = reference::compare(&out.to_vec::<f32>(ctx).unwrap(), &expected.out, Tolerance::F32);
    assert!(c.ok(), "prepared: {c}");

    let mut enc = ctx.device().create_command_encoder(&Default::default());
    let res = attention_varlen_encode(ctx, &mut enc, &q, &k, &v, &seqs, &case.opts).unwrap();
    ctx.queue().submit([enc.finish()]);
    let c = reference::compare(&res.out.to_vec::<f32>(ctx).unwrap(), &expected.out, Tolerance::F32);
    assert!(c.ok(), "encode: {c}");
}

#[test]
fn invalid_calls_are_errors() {
    let ctx = ctx();
    let t = |rows: usize, h: usize, d: usize| Tensor::zeros(ctx, &[rows, h, d], DType::F32).unwrap();
    let (q, k, v) = (t(8, 2, 16), t(6, 1, 16), t(6, 1, 16));
    let good = Varlen::from_offsets(ctx, &[0, 3, 8], &[0, 2, 6]).unwrap();
    let opts = AttentionOptions::default();
    let run = |q: &Tensor, k: &Tensor, v: &Tensor, s: &Varlen, o: &AttentionOptions| {
        attention_varlen(ctx, q, k, v, s, o).map(|_| ())
    };
    run(&q, &k, &v, &good, &opts).unwrap();

    // Host offsets: empty, not starting at 0, decreasing, unequal counts.
    for (cu_q, cu_k) in [
        (&[][..], &[][..]),
        (&[1, 3][..], &[0, 2][..]),
        (&[0, 5, 3][..], &[0, 1, 2][..]),
        (&[0, 1, 2][..], &[0, 4, 2][..]),
    ] {
        let e = Varlen::from_offsets(ctx, cu_q, cu_k).unwrap_err();
        assert!(matches!(e, Error::SeqOffsets { .. }), "{cu_q:?} {cu_k:?}: {e}");
    }
    let e = Varlen::from_offsets(ctx, &[0, 1], &[0, 1, 2]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                name: "cu_seqlens_k",
                ..
            }
        ),
        "{e}"
    );

    // Totals past the tensors' rows.
    let long = Varlen::from_offsets(ctx, &[0, 3, 9], &[0, 2, 6]).unwrap();
    let e = run(&q, &k, &v, &long, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SeqOffsets {
                name: "cu_seqlens_q",
                ..
            }
        ),
        "{e}"
    );
    let long = Varlen::from_offsets(ctx, &[0, 3, 8], &[0, 2, 7]).unwrap();
    let e = run(&q, &k, &v, &long, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SeqOffsets {
                name: "cu_seqlens_k",
                ..
            }
        ),
        "{e}"
    );

    // GPU offsets: dtype, shape, B + 1 mismatch, max lengths beyond the tensors.
    let u = |x: &[u32]| Tensor::from_slice(ctx, x, &[x.len()]).unwrap();
    let f = Tensor::from_slice(ctx, &[0.0f32, 3.0, 8.0], &[3]).unwrap();
    let e = run(&q, &k, &v, &Varlen::new(f, u(&[0, 2, 6]), 5, 4), &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::DType {
                name: "cu_seqlens_q",
                ..
            }
        ),
        "{e}"
    );
    let e = run(&q, &k, &v, &Varlen::new(u(&[0, 3, 8]), u(&[0, 6]), 5, 6), &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                name: "cu_seqlens_k",
                ..
            }
        ),
        "{e}"
    );
    let two_d = Tensor::from_slice(ctx, &[0u32, 3, 8, 8], &[2, 2]).unwrap();
    let e = run(&q, &k, &v, &Varlen::new(two_d, u(&[0, 2, 6]), 5, 4), &opts).unwrap_err();
    assert!(matches!(e, Error::SeqOffsets { .. }), "{e}");
    let e = run(&q, &k, &v, &Varlen::new(u(&[]), u(&[]), 0, 0), &opts).unwrap_err();
    assert!(matches!(e, Error::SeqOffsets { .. }), "{e}");
    let e = run(&q, &k, &v, &Varlen::new(u(&[0, 3, 8]), u(&[0, 2, 6]), 9, 4), &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SeqOffsets {
                name: "max_seqlen_q",
                ..
            }
        ),
        "{e}"
    );
    let e = run(&q, &k, &v, &Varlen::new(u(&[0, 3, 8]), u(&[0, 2, 6]), 5, 7), &opts).unwrap_err();
    assert!(
        matches!(
            e,
            Error::SeqOffsets {
                name: "max_seqlen_k",
                ..
            }
        ),
        "{e}"
    );

    // Packed shapes.
    let e = run(
        &Tensor::zeros(ctx, &[1, 8, 2, 16], DType::F32).unwrap(),
        &k,
        &v,
        &good,
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Rank { name: "q", .. }), "{e}");
    let e = run(&q, &t(6, 1, 8), &v, &good, &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "k", .. }), "{e}");
    let e = run(&q, &k, &t(5, 1, 16), &good, &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "v", .. }), "{e}");
    run(&t(8, 3, 16), &k, &v, &good, &opts).expect("Hq = 3 over Hkv = 1 is MQA");
    let e = run(&t(8, 3, 16), &t(6, 2, 16), &t(6, 2, 16), &good, &opts).unwrap_err();
    assert!(matches!(e, Error::HeadRatio { hq: 3, hkv: 2 }), "{e}");
    let half = Tensor::zeros(ctx, &[6, 1, 16], DType::F16).unwrap();
    let e = run(&q, &half, &v, &good, &opts).unwrap_err();
    assert!(matches!(e, Error::DType { name: "k", .. }), "{e}");

    // Options without a packed meaning, and other kernels.
    let refused = [
        AttentionOptions {
            mask: Some(Tensor::from_slice(ctx, &[true; 8 * 6], &[8, 6]).unwrap()),
            ..Default::default()
        },
        AttentionOptions {
            bias: Some(Tensor::zeros(ctx, &[8, 6], DType::F32).unwrap()),
            ..Default::default()
        },
        AttentionOptions {
            key_lengths: Some(u(&[2, 4])),
            ..Default::default()
        },
        AttentionOptions {
            return_weights: true,
            ..Default::default()
        },
        AttentionOptions {
            kernel: KernelChoice::Staged,
            ..Default::default()
        },
        AttentionOptions {
            kernel: KernelChoice::Decode,
            ..Default::default()
        },
    ];
    for o in refused {
        let e = run(&q, &k, &v, &good, &o).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{o:?}: {e}");
    }
    let e = run(
        &q,
        &k,
        &v,
        &good,
        &AttentionOptions {
            softcap: Some(-1.0),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidOption { name: "softcap", .. }), "{e}");
    let e = run(
        &q,
        &k,
        &v,
        &good,
        &AttentionOptions {
            out: Some(t(8, 2, 8)),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "out", .. }), "{e}");
    let e = run(
        &q,
        &k,
        &v,
        &good,
        &AttentionOptions {
            out: Some(q.clone()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Aliasing { input: "q", .. }), "{e}");
}
