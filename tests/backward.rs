//! The attention backward pass (dQ, dK, dV, dBias) against the f64 reference gradients.

mod common;
use common::skip::Cap;
use common::*;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::{
    Alignment, Attention, AttentionBackward, AttentionOptions, BackwardConfig, BackwardOptions, DType, Dropout, Error,
    Gradients, KernelChoice, Problem, Tensor, Window,
};

/// Gradients are held to the forward's tolerances.
const GRAD_F32: Tolerance = Tolerance::F32;
const GRAD_F16: Tolerance = Tolerance::F16;

/// One backward comparison: the GPU forward (for O and LSE), the GPU backward, the reference.
#[derive(Debug, Clone)]
struct Grad {
    problem: Problem,
    opts: AttentionOptions,
    dtype: DType,
    bias_shape: Option<[usize; 4]>,
    mask: Option<MaskKind>,
    key_lengths: Option<Vec<u32>>,
    config: Option<BackwardConfig>,
    seed: u64,
}

/// Host data of one case and the GPU gradients.
struct Run {
    grads: Gradients,
    expected: reference::ReferenceGradients,
}

impl Grad {
    fn new(problem: Problem) -> Self {
        Self {
            problem,
            opts: AttentionOptions::default(),
            dtype: DType::F32,
            bias_shape: None,
            mask: None,
            key_lengths: None,
            // A small tile compiles fast on CPU drivers; `default_config` cases run the library's.
            config: Some(BackwardConfig::new(8, 2)),
            seed: 3,
        }
    }
    fn opts(mut self, f: impl FnOnce(&mut AttentionOptions)) -> Self {
        f(&mut self.opts);
        self
    }
    fn dtype(mut self, d: DType) -> Self {
        self.dtype = d;
        self
    }
    fn bias(mut self, s: [usize; 4]) -> Self {
        self.bias_shape = Some(s);
        self
    }
    fn mask(mut self, m: MaskKind) -> Self {
        self.mask = Some(m);
        self
    }
    fn key_lengths(mut self, l: Vec<u32>) -> Self {
        self.key_lengths = Some(l);
        self
    }
    fn config(mut self, workgroup: u32, rows: u32) -> Self {
        self.config = Some(BackwardConfig::new(workgroup, rows));
        self
    }
    /// The staged backward (GEMMs over materialized P and dS) instead of the fused kernels.
    fn staged(self) -> Self {
        self.opts(|o| o.kernel = KernelChoice::Staged)
    }
    fn default_config(mut self) -> Self {
        self.config = None;
        self
    }

    fn run(&self) -> Result<Run, String> {
        let ctx = ctx();
        let p = self.problem;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let [qs, ks, vs] = p.qkv_shapes();
        let round = |x: Vec<f32>| if self.dtype == DType::F16 { round_f16(&x) } else { x };
        let q = round(random(&mut rng, qs.iter().product(), 1.0));
        let k = round(random(&mut rng, ks.iter().product(), 1.0));
        let v = round(random(&mut rng, vs.iter().product(), 1.0));
        let d_out = round(random(&mut rng, p.b * p.hq * p.lq * p.dv, 1.0));
        let bias = self
            .bias_shape
            .map(|s| round(random(&mut rng, s.iter().product(), 1.0)));
        let mask: Option<(Vec<bool>, [usize; 4])> = self.mask.map(|m| match m {
            MaskKind::Random { shape } => ((0..shape.iter().product()).map(|_| rng.gen_bool(0.7)).collect(), shape),
            MaskKind::WithEmptyRow { shape } => {
                let (lq, lk) = (shape[2], shape[3]);
                let n: usize = shape.iter().product();
                ((0..n).map(|e| (e / lk) % lq != 0 && rng.gen_bool(0.7)).collect(), shape)
            }
        });
        let mut opts = self.opts.clone();
        opts.return_lse = true;
        if let (Some(b), Some(s)) = (&bias, self.bias_shape) {
            opts.bias = Some(upload(ctx, b, &s, self.dtype));
        }
        if let Some((m, s)) = &mask {
            opts.mask = Some(Tensor::from_slice(ctx, m, s).unwrap());
        }
        if let Some(l) = &self.key_lengths {
            opts.key_lengths = Some(Tensor::from_slice(ctx, l, &[p.b]).unwrap());
        }
        let (qt, kt, vt) = (
            upload(ctx, &q, &qs, self.dtype),
            upload(ctx, &k, &ks, self.dtype),
            upload(ctx, &v, &vs, self.dtype),
        );
        let forward_opts = AttentionOptions {
            kernel: KernelChoice::Fused,
            ..opts.clone()
        };
        let fwd = Attention::new(ctx, &qt, &kt, &vt, &forward_opts).map_err(|e| format!("{self:?}: forward: {e}"))?;
        fwd.submit().map_err(|e| format!("{self:?}: forward submit: {e}"))?;
        let fwd = fwd.into_output();
        let dot = upload(ctx, &d_out, &[p.b, p.hq, p.lq, p.dv], self.dtype);
        let bopts = BackwardOptions {
            config: self.config,
            ..Default::default()
        };
        let lse = fwd.lse.as_ref().unwrap();
        let grads = AttentionBackward::with_options(ctx, [&qt, &kt, &vt], [&fwd.out, &dot, lse], &opts, &bopts)
            .and_then(|b| b.run())
            .map_err(|e| format!("{self:?}: backward: {e}"))?;
        let inputs = HostInputs {
            bias: bias
                .as_deref()
                .zip(self.bias_shape)
                .map(|(data, shape)| Broadcast { data, shape }),
            mask: mask.as_ref().map(|(m, s)| Broadcast { data: m, shape: *s }),
            key_lengths: self.key_lengths.as_deref(),
            ..HostInputs::new(p, &q, &k, &v)
        };
        let expected = reference::sdpa_backward(&inputs, &self.opts, &d_out).unwrap();
        Ok(Run { grads, expected })
    }

    fn check(&self) -> Result<(), String> {
        let ctx = ctx();
        let run = self.run()?;
        let tol = if self.dtype == DType::F16 { GRAD_F16 } else { GRAD_F32 };
        let g = &run.grads;
        let pairs = [
            ("dq", &g.dq, &run.expected.dq),
            ("dk", &g.dk, &run.expected.dk),
            ("dv", &g.dv, &run.expected.dv),
        ];
        for (name, got, want) in pairs {
            let got = got.to_f32_vec(ctx).unwrap();
            let c = reference::compare(&got, want, tol);
            if !c.ok() {
                return Err(format!("{name} mismatch ({c}) for {} case {self:?}", self.problem));
            }
        }
        match (&g.dbias, &run.expected.dbias) {
            (Some(got), Some(want)) => {
                let c = reference::compare(&got.to_f32_vec(ctx).unwrap(), want, tol);
                if !c.ok() {
                    return Err(format!("dbias mismatch ({c}) for {} case {self:?}", self.problem));
                }
            }
            (None, None) => {}
            _ => return Err(format!("dbias presence differs for case {self:?}")),
        }
        Ok(())
    }
}

fn check_all(cases: impl IntoIterator<Item = Grad>) {
    let failures: Vec<String> = cases.into_iter().filter_map(|c| c.check().err()).collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn grad(b: usize, hq: usize, hkv: usize, lq: usize, lk: usize, dk: usize, dv: usize) -> Grad {
    Grad::new(problem(b, hq, hkv, lq, lk, dk, dv))
}

#[test]
fn awkward_lengths_and_head_dims() {
    check_all([
        grad(1, 1, 1, 1, 1, 8, 8),
        grad(1, 2, 2, 17, 17, 16, 16),
        grad(2, 1, 1, 5, 67, 24, 40),
        grad(1, 1, 1, 70, 13, 8, 12),
        grad(1, 1, 1, 3, 7, 5, 3), // head dims not multiples of 4: scalar loads
        grad(1, 2, 2, 37, 29, 16, 16).config(8, 3),
        grad(2, 2, 1, 150, 141, 16, 16).default_config(), // several blocks of the default tile
        grad(1, 2, 1, 70, 90, 16, 16).config(64, 1),      // the GPU default: one row per invocation
    ]);
}

#[test]
fn grouped_and_multi_query_heads() {
    check_all([
        grad(1, 4, 2, 19, 23, 16, 16),
        grad(2, 6, 2, 11, 9, 8, 8),
        grad(1, 3, 1, 13, 31, 8, 16), // MQA
    ]);
}

#[test]
fn causal_both_alignments_and_windows() {
    let causal = |a| move |o: &mut AttentionOptions| o.causal = Some(a);
    check_all([
        grad(1, 2, 1, 37, 37, 16, 16).opts(causal(Alignment::TopLeft)),
        grad(1, 1, 1, 13, 70, 16, 16).opts(causal(Alignment::BottomRight)),
        grad(1, 1, 1, 70, 13, 16, 16).opts(causal(Alignment::BottomRight)), // leading rows see nothing
        grad(1, 1, 1, 70, 13, 16, 16).opts(causal(Alignment::TopLeft)),
        grad(1, 2, 2, 41, 41, 8, 8)
            .opts(|o| o.window = Some(Window::symmetric(3)))
            .config(4, 2),
        grad(1, 2, 1, 20, 45, 8, 8).opts(|o| {
            o.window = Some(Window {
                left: Some(5),
                right: Some(2),
                alignment: Alignment::BottomRight,
            })
        }),
        grad(1, 1, 1, 40, 40, 8, 8).opts(|o| {
            o.causal = Some(Alignment::TopLeft);
            o.window = Some(Window::causal_local(4, Alignment::TopLeft));
        }),
    ]);
}

#[test]
fn boolean_masks_and_key_lengths() {
    check_all([
        grad(2, 2, 2, 9, 11, 8, 8).mask(MaskKind::Random { shape: [2, 2, 9, 11] }),
        grad(2, 2, 1, 9, 11, 8, 8).mask(MaskKind::Random { shape: [1, 2, 9, 11] }),
        grad(2, 2, 2, 9, 11, 8, 8).mask(MaskKind::WithEmptyRow { shape: [2, 1, 9, 11] }),
        grad(3, 2, 2, 10, 23, 8, 8).key_lengths(vec![23, 4, 0]),
        grad(2, 2, 2, 12, 20, 8, 8).key_lengths(vec![7, 20]).opts(|o| {
            o.causal = Some(Alignment::BottomRight);
            o.align_to_key_lengths = true;
        }),
        grad(2, 2, 1, 6, 20, 8, 8).key_lengths(vec![9, 20]).opts(|o| {
            o.window = Some(Window::causal_local(3, Alignment::BottomRight));
            o.align_to_key_lengths = true;
        }),
    ]);
}

#[test]
fn scale_softcap_bias_and_dropout() {
    check_all([
        grad(1, 2, 2, 15, 19, 8, 8).opts(|o| o.scale = Some(0.7)),
        grad(1, 2, 1, 15, 19, 8, 8).opts(|o| o.softcap = Some(0.8)),
        grad(2, 2, 2, 9, 14, 8, 8).bias([2, 2, 9, 14]),
        grad(2, 3, 1, 9, 14, 8, 8).bias([1, 3, 9, 14]),
        grad(2, 2, 2, 9, 14, 8, 8)
            .bias([2, 1, 9, 14])
            .opts(|o| o.softcap = Some(2.0)),
        grad(2, 2, 2, 9, 14, 8, 8).bias([1, 1, 9, 14]),
        grad(1, 2, 2, 21, 17, 8, 8).opts(|o| o.dropout = Some(Dropout { p: 0.25, seed: 99 })),
        grad(1, 2, 1, 21, 17, 8, 8).opts(|o| {
            o.dropout = Some(Dropout { p: 0.5, seed: 5 });
            o.causal = Some(Alignment::TopLeft);
        }),
    ]);
}

#[test]
fn f16_storage() {
    require!(Cap::F16);
    check_all([
        grad(1, 2, 1, 19, 23, 16, 16).dtype(DType::F16),
        grad(1, 2, 2, 13, 9, 8, 8)
            .dtype(DType::F16)
            .opts(|o| o.causal = Some(Alignment::BottomRight))
            .bias([1, 2, 13, 9]),
        grad(1, 1, 1, 7, 5, 6, 10).dtype(DType::F16),
    ]);
}

#[test]
fn staged_backward_matches_the_reference() {
    check_all([
        grad(1, 1, 1, 1, 1, 8, 8).staged(),
        grad(2, 2, 2, 17, 23, 16, 8).staged(),
        grad(1, 4, 2, 13, 9, 8, 8).staged(),
        grad(2, 3, 1, 1, 7, 8, 4).staged(), // MQA, one query row
        grad(1, 2, 1, 20, 13, 8, 8)
            .staged()
            .opts(|o| o.causal = Some(Alignment::BottomRight))
            .mask(MaskKind::WithEmptyRow { shape: [1, 2, 20, 13] }),
        grad(2, 2, 2, 9, 14, 8, 8)
            .staged()
            .key_lengths(vec![3, 14])
            .opts(|o| o.window = Some(Window::symmetric(2))),
        grad(2, 2, 1, 9, 14, 8, 8).staged().bias([1, 2, 9, 14]).opts(|o| {
            o.softcap = Some(1.5);
            o.dropout = Some(Dropout { p: 0.2, seed: 4 });
        }),
    ]);
}

/// The two paths agree with each other as closely as each agrees with the reference.
#[test]
fn staged_and_fused_backward_agree() {
    let case = grad(1, 4, 2, 31, 27, 16, 16)
        .bias([1, 4, 31, 27])
        .opts(|o| o.causal = Some(Alignment::TopLeft));
    let fused = case.run().unwrap();
    let staged = case.clone().staged().run().unwrap();
    for (name, a, b) in [
        ("dq", &fused.grads.dq, &staged.grads.dq),
        ("dk", &fused.grads.dk, &staged.grads.dk),
        ("dv", &fused.grads.dv, &staged.grads.dv),
    ] {
        let a: Vec<f64> = a.to_vec::<f32>(ctx()).unwrap().iter().map(|&x| x as f64).collect();
        let c = reference::compare(&b.to_vec::<f32>(ctx()).unwrap(), &a, GRAD_F32);
        assert!(c.ok(), "{name}: {c}");
    }
}

#[test]
fn fully_masked_rows_give_zero_gradients() {
    let case = grad(1, 2, 1, 8, 6, 8, 8)
        .mask(MaskKind::WithEmptyRow { shape: [1, 2, 8, 6] })
        .opts(|o| o.causal = Some(Alignment::BottomRight)); // rows 0 and 1 see no key either
    case.check().unwrap();
    let run = case.run().unwrap();
    let dq = run.grads.dq.to_vec::<f32>(ctx()).unwrap();
    for h in 0..2 {
        for i in [0, 1] {
            let row = &dq[(h * 8 + i) * 8..(h * 8 + i + 1) * 8];
            assert!(row.iter().all(|&x| x == 0.0), "row {i} of head {h}: {row:?}");
        }
    }
    let all = [&run.grads.dq, &run.grads.dk, &run.grads.dv];
    assert!(all
        .iter()
        .all(|t| t.to_vec::<f32>(ctx()).unwrap().iter().all(|x| x.is_finite())));
}

#[test]
fn identical_calls_are_bitwise_identical() {
    let case = grad(1, 4, 2, 33, 29, 16, 16)
        .default_config()
        .bias([1, 4, 33, 29])
        .opts(|o| o.dropout = Some(Dropout { p: 0.1, seed: 1 }));
    let (a, b) = (case.run().unwrap(), case.run().unwrap());
    for (x, y) in [
        (&a.grads.dq, &b.grads.dq),
        (&a.grads.dk, &b.grads.dk),
        (&a.grads.dv, &b.grads.dv),
        (a.grads.dbias.as_ref().unwrap(), b.grads.dbias.as_ref().unwrap()),
    ] {
        let (x, y) = (x.to_vec::<f32>(ctx()).unwrap(), y.to_vec::<f32>(ctx()).unwrap());
        assert!(x.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn empty_axes_give_empty_or_zero_gradients() {
    let ctx = ctx();
    let opts = AttentionOptions::default();
    // Lk = 0: dQ is zero, dK and dV are empty.
    let (q, k, v) = (
        Tensor::from_slice(ctx, &[1.0f32; 8], &[1, 1, 2, 4]).unwrap(),
        Tensor::zeros(ctx, &[1, 1, 0, 4], DType::F32).unwrap(),
        Tensor::zeros(ctx, &[1, 1, 0, 4], DType::F32).unwrap(),
    );
    let out = Tensor::zeros(ctx, &[1, 1, 2, 4], DType::F32).unwrap();
    let d_out = Tensor::from_slice(ctx, &[1.0f32; 8], &[1, 1, 2, 4]).unwrap();
    let lse = Tensor::from_slice(ctx, &[f32::NEG_INFINITY; 2], &[1, 1, 2]).unwrap();
    let g = wgpu_attention::attention_backward(ctx, &q, &k, &v, &out, &d_out, &lse, &opts).unwrap();
    assert_eq!(g.dq.to_vec::<f32>(ctx).unwrap(), vec![0.0; 8]);
    assert_eq!((g.dk.shape(), g.dv.shape()), (&[1, 1, 0, 4][..], &[1, 1, 0, 4][..]));
    // Lq = 0: dQ is empty, dK and dV are zero.
    let q = Tensor::zeros(ctx, &[1, 2, 0, 4], DType::F32).unwrap();
    let kv = Tensor::from_slice(ctx, &[1.0f32; 12], &[1, 1, 3, 4]).unwrap();
    let o = Tensor::zeros(ctx, &[1, 2, 0, 4], DType::F32).unwrap();
    let lse = Tensor::zeros(ctx, &[1, 2, 0], DType::F32).unwrap();
    let g = wgpu_attention::attention_backward(ctx, &q, &kv, &kv, &o, &o, &lse, &opts).unwrap();
    assert_eq!(g.dq.shape(), &[1, 2, 0, 4]);
    assert_eq!(g.dk.to_vec::<f32>(ctx).unwrap(), vec![0.0; 12]);
    assert_eq!(g.dv.to_vec::<f32>(ctx).unwrap(), vec![0.0; 12]);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let ctx = ctx();
    let p = problem(1, 2, 1, 5, 6, 8, 4);
    let [qs, ks, vs] = p.qkv_shapes();
    let z = |s: &[usize], d| Tensor::zeros(ctx, s, d).unwrap();
    let (q, k, v) = (z(&qs, DType::F32), z(&ks, DType::F32), z(&vs, DType::F32));
    let out = z(&[1, 2, 5, 4], DType::F32);
    let lse = z(&[1, 2, 5], DType::F32);
    let opts = AttentionOptions::default();
    let call = |o: &Tensor, d: &Tensor, l: &Tensor, opts: &AttentionOptions| {
        AttentionBackward::new(ctx, &q, &k, &v, o, d, l, opts).map(|_| ())
    };
    call(&out, &out, &lse, &opts).unwrap();
    let e = call(&out, &z(&[1, 2, 5, 8], DType::F32), &lse, &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "d_out", .. }), "{e}");
    let e = call(&z(&[1, 2, 4, 4], DType::F32), &out, &lse, &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "out", .. }), "{e}");
    let e = call(&out, &out, &z(&[1, 2, 6], DType::F32), &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "lse", .. }), "{e}");
    let e = call(&out, &out, &z(&[1, 2, 5], DType::U32), &opts).unwrap_err();
    assert!(matches!(e, Error::DType { name: "lse", .. }), "{e}");
    let e = call(&out, &z(&[1, 2, 5, 4], DType::U32), &lse, &opts).unwrap_err();
    assert!(matches!(e, Error::DType { name: "d_out", .. }), "{e}");
    let staged = AttentionOptions {
        kernel: KernelChoice::Staged,
        ..Default::default()
    };
    call(&out, &out, &lse, &staged).unwrap();
    let decode = AttentionOptions {
        kernel: KernelChoice::Decode,
        ..Default::default()
    };
    let e = call(&out, &out, &lse, &decode).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // The staged path multiplies a group's rows as one matrix: a [B, L, H, D] view of Q is refused.
    let blhd = Tensor::zeros(ctx, &[1, 5, 2, 8], DType::F32).unwrap();
    let q_blhd = Tensor::from_blhd(blhd.buffer(), 0, [1, 5, 2, 8], DType::F32).unwrap();
    let e = AttentionBackward::new(ctx, &q_blhd, &k, &v, &out, &out, &lse, &staged).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    AttentionBackward::new(ctx, &q_blhd, &k, &v, &out, &out, &lse, &opts).unwrap();
    // The staged path is f32 only.
    if common::skip::has_for(Cap::F16, "the staged path refusing f16") {
        let h = |s: &[usize]| z(s, DType::F16);
        let (ho, hq) = (h(&[1, 2, 5, 4]), h(&qs));
        let e = AttentionBackward::new(ctx, &hq, &h(&ks), &h(&vs), &ho, &ho, &lse, &staged).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
    }
    // The forward's own checks apply: K with the wrong head dim.
    let e = AttentionBackward::new(ctx, &q, &z(&[1, 1, 6, 4], DType::F32), &v, &out, &out, &lse, &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "k", .. }), "{e}");
    // A bad tile is refused before anything is recorded.
    let bopts = BackwardOptions {
        config: Some(BackwardConfig::new(16, 0)),
        ..Default::default()
    };
    let e = AttentionBackward::with_options(ctx, [&q, &k, &v], [&out, &out, &lse], &opts, &bopts).unwrap_err();
    assert!(matches!(e, Error::InvalidOption { name: "rows", .. }), "{e}");
    // Head dims beyond the registers of the kernels.
    let big = problem(1, 1, 1, 2, 2, 264, 8);
    let [qs, ks, vs] = big.qkv_shapes();
    let e = AttentionBackward::new(
        ctx,
        &z(&qs, DType::F32),
        &z(&ks, DType::F32),
        &z(&vs, DType::F32),
        &z(&[1, 1, 2, 8], DType::F32),
        &z(&[1, 1, 2, 8], DType::F32),
        &z(&[1, 1, 2], DType::F32),
        &opts,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

/// The prepared call records into a caller's encoder on a borrowed device, as often as wanted.
#[test]
fn prepared_call_records_into_a_callers_encoder() {
    let case = grad(1, 2, 1, 9, 12, 8, 8);
    let expected = case.run().unwrap();
    let ctx = ctx();
    let p = case.problem;
    let mut rng = ChaCha8Rng::seed_from_u64(case.seed);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = random(&mut rng, qs.iter().product(), 1.0);
    let k = random(&mut rng, ks.iter().product(), 1.0);
    let v = random(&mut rng, vs.iter().product(), 1.0);
    let d_out = random(&mut rng, p.b * p.hq * p.lq * p.dv, 1.0);
    let borrowed = wgpu_attention::Context::from_device(ctx.device(), ctx.queue());
    let up = |x: &[f32], s: &[usize]| Tensor::from_slice(&borrowed, x, s).unwrap();
    let (qt, kt, vt) = (up(&q, &qs), up(&k, &ks), up(&v, &vs));
    let opts = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    let fwd = Attention::new(&borrowed, &qt, &kt, &vt, &opts).unwrap();
    let dot = up(&d_out, &[p.b, p.hq, p.lq, p.dv]);
    let out = fwd.output().out.clone();
    let lse = fwd.output().lse.clone().unwrap();
    let bwd = AttentionBackward::new(&borrowed, &qt, &kt, &vt, &out, &dot, &lse, &opts).unwrap();
    assert_eq!(bwd.dispatch_count(), 3);
    assert_eq!(bwd.flops(), 2.5 * p.flops(false));
    // With a bias, dBias is one more dispatch unless skipped.
    let bias = up(&vec![0.5; p.lq * p.lk], &[p.lq, p.lk]);
    let with_bias = AttentionOptions {
        bias: Some(bias),
        ..opts.clone()
    };
    let call = |skip_bias_grad| {
        let bopts = BackwardOptions {
            skip_bias_grad,
            ..Default::default()
        };
        AttentionBackward::with_options(&borrowed, [&qt, &kt, &vt], [&out, &dot, &lse], &with_bias, &bopts).unwrap()
    };
    let (all, skipped) = (call(false), call(true));
    assert_eq!((all.dispatch_count(), skipped.dispatch_count()), (4, 3));
    assert_eq!(all.gradients().dbias.as_ref().unwrap().shape(), &[p.lq, p.lk]);
    assert!(skipped.gradients().dbias.is_none());
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    fwd.encode(&mut enc);
    bwd.encode(&mut enc);
    bwd.encode(&mut enc); // recording twice rewrites the same gradients
    ctx.queue().submit([enc.finish()]);
    let tol = GRAD_F32;
    let g = bwd.gradients();
    for (name, got, want) in [
        ("dq", &g.dq, &expected.expected.dq),
        ("dk", &g.dk, &expected.expected.dk),
        ("dv", &g.dv, &expected.expected.dv),
    ] {
        let c = reference::compare(&got.to_vec::<f32>(ctx).unwrap(), want, tol);
        assert!(c.ok(), "{name}: {c}");
    }
}

/// NaN policy: a NaN in one row of dO reaches that row's dQ and the dK, dV rows of the keys the
/// row sees, and nothing else (dV: fused kernels); an infinite V row of a key no query sees never
/// reaches a gradient.
#[test]
fn nan_in_d_out_stays_in_its_row_and_masked_infinities_never_arrive() {
    let ctx = ctx();
    let p = problem(1, 1, 1, 4, 5, 4, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = random(&mut rng, qs.iter().product(), 1.0);
    let k = random(&mut rng, ks.iter().product(), 1.0);
    let mut v = random(&mut rng, vs.iter().product(), 1.0);
    v[4 * 4] = f32::INFINITY; // key 4: past every sequence's length below
    let mut d_out = random(&mut rng, 16, 1.0);
    d_out[0] = f32::NAN; // row 0
    let opts = AttentionOptions {
        causal: Some(Alignment::TopLeft), // row 0 sees key 0 only
        key_lengths: Some(Tensor::from_slice(ctx, &[4u32], &[1]).unwrap()),
        return_lse: true,
        ..Default::default()
    };
    let up = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let (qt, kt, vt) = (up(&q, &qs), up(&k, &ks), up(&v, &vs));
    let fwd = wgpu_attention::attention(ctx, &qt, &kt, &vt, &opts).unwrap();
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions { kernel, ..opts.clone() };
        let dot = up(&d_out, &[1, 1, 4, 4]);
        let g =
            wgpu_attention::attention_backward(ctx, &qt, &kt, &vt, &fwd.out, &dot, fwd.lse.as_ref().unwrap(), &opts)
                .unwrap();
        let (dq, dk, dv) = (
            g.dq.to_vec::<f32>(ctx).unwrap(),
            g.dk.to_vec::<f32>(ctx).unwrap(),
            g.dv.to_vec::<f32>(ctx).unwrap(),
        );
        assert!(dq[..4].iter().all(|x| x.is_nan()), "{kernel:?}: {dq:?}");
        assert!(dq[4..].iter().all(|x| x.is_finite()), "{kernel:?}: {dq:?}");
        // Key 0 is seen by row 0: NaN; keys 1–3 are not: finite; key 4 is masked: zero.
        assert!(dk[..4].iter().all(|x| x.is_nan()), "{kernel:?}: {dk:?}");
        assert!(dk[4..16].iter().all(|x| x.is_finite()), "{kernel:?}: {dk:?}");
        assert!(dk[16..].iter().all(|&x| x == 0.0), "{kernel:?}: {dk:?}");
        if kernel == KernelChoice::Fused {
            // The staged GEMM dV = (P ∘ Z)ᵀ dO multiplies row 0's NaN by the zero weights too.
            // dV of key 0 weighs dO row 0, whose column 0 only is NaN.
            assert!(dv[0].is_nan(), "{kernel:?}: {dv:?}");
            assert!(dv[1..16].iter().all(|x| x.is_finite()), "{kernel:?}: {dv:?}");
            assert!(dv[16..].iter().all(|&x| x == 0.0), "{kernel:?}: {dv:?}");
        }
    }
}

/// A device with WebGPU's default 8 storage bindings per stage runs the kernels that read dO from
/// its tensor (the key lengths travel in the row records), with the same results and memory as an
/// unrestricted device; a device with 7 runs the backward with dO copied into the records in f32
/// by the pre-pass (the forward's O and LSE come from the reference there: the forward needs 8).
#[test]
fn eight_storage_bindings_read_d_out_directly_and_seven_keep_it_in_the_records() {
    use wgpu_attention::{wgpu, Context};
    let limited = |storage: u32| {
        let instance = common::instance();
        let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
        let limits = wgpu::Limits {
            max_storage_buffers_per_shader_stage: storage,
            ..adapter.limits()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            required_limits: limits,
            required_features: adapter.features() & wgpu_attention::context::WANTED_FEATURES,
            ..Default::default()
        }))
        .unwrap();
        let ctx = Context::from_device_with_adapter_info(&device, &queue, adapter.get_info());
        assert_eq!(ctx.limits().max_storage_buffers_per_shader_stage, storage);
        ctx
    };
    let (eight, seven) = (limited(8), limited(7));
    let p = problem(2, 4, 2, 19, 23, 8, 12);
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = random(&mut rng, qs.iter().product(), 1.0);
    let k = random(&mut rng, ks.iter().product(), 1.0);
    let v = random(&mut rng, vs.iter().product(), 1.0);
    let d_out = random(&mut rng, p.b * p.hq * p.lq * p.dv, 1.0);
    let bias = random(&mut rng, p.lq * p.lk, 1.0);
    let lengths = [17u32, 23];
    let host_opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        ..Default::default()
    };
    let inputs = HostInputs {
        bias: Some(Broadcast {
            data: &bias,
            shape: [1, 1, p.lq, p.lk],
        }),
        key_lengths: Some(&lengths),
        ..HostInputs::new(p, &q, &k, &v)
    };
    let expected = reference::sdpa_backward(&inputs, &host_opts, &d_out).unwrap();
    let forward = reference::sdpa(&inputs, &host_opts);
    let mut allocated = Vec::new();
    for (ctx, name) in [(ctx(), "unrestricted"), (&eight, "8 storage"), (&seven, "7 storage")] {
        let up = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
        let (qt, kt, vt) = (up(&q, &qs), up(&k, &ks), up(&v, &vs));
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            bias: Some(up(&bias, &[p.lq, p.lk])),
            key_lengths: Some(Tensor::from_slice(ctx, &lengths, &[p.b]).unwrap()),
            return_lse: true,
            ..Default::default()
        };
        let (out, lse) = match ctx.limits().max_storage_buffers_per_shader_stage {
            7 => {
                let f32s = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
                (
                    up(&f32s(&forward.out), &[p.b, p.hq, p.lq, p.dv]),
                    up(&f32s(&forward.lse), &[p.b, p.hq, p.lq]),
                )
            }
            _ => {
                let fwd = wgpu_attention::attention(ctx, &qt, &kt, &vt, &opts).unwrap();
                (fwd.out, fwd.lse.unwrap())
            }
        };
        let d_out_t = up(&d_out, &[p.b, p.hq, p.lq, p.dv]);
        let call = AttentionBackward::new(ctx, &qt, &kt, &vt, &out, &d_out_t, &lse, &opts).unwrap();
        allocated.push(call.allocated_bytes());
        let g = call.run().unwrap();
        for (grad, got, want) in [
            ("dq", &g.dq, &expected.dq),
            ("dk", &g.dk, &expected.dk),
            ("dv", &g.dv, &expected.dv),
            ("dbias", g.dbias.as_ref().unwrap(), expected.dbias.as_ref().unwrap()),
        ] {
            let c = reference::compare(&got.to_vec::<f32>(ctx).unwrap(), want, GRAD_F32);
            assert!(c.ok(), "{grad} ({name}): {c}");
        }
    }
    // 8 bindings read dO where an unrestricted device does; with 7 every row record also holds dO
    // in f32 (Dv = 12: 48 bytes more per row).
    assert_eq!(allocated[0], allocated[1], "{allocated:?}");
    let rows = (p.b * p.hq * p.lq) as u64;
    assert_eq!(allocated[2] - allocated[1], rows * 48, "{allocated:?}");
}

/// A device whose storage bindings are tiny: a tensor larger than one binding is a typed error,
/// not a panic or a wrong result.
#[test]
fn tensors_larger_than_one_binding_are_refused() {
    use wgpu_attention::{wgpu, Context};
    let instance = common::instance();
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let limits = wgpu::Limits {
        max_storage_buffer_binding_size: 16 << 10,
        ..adapter.limits()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        required_features: adapter.features() & wgpu_attention::context::WANTED_FEATURES,
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device_with_adapter_info(&device, &queue, adapter.get_info());
    let z = |s: &[usize]| Tensor::zeros(&ctx, s, DType::F32).unwrap();
    let (q, o, lse) = (z(&[1, 2, 600, 8]), z(&[1, 2, 600, 8]), z(&[1, 2, 600])); // Q: 37.5 KiB
    let kv = z(&[1, 1, 8, 8]);
    let e = AttentionBackward::new(&ctx, &q, &kv, &kv, &o, &o, &lse, &AttentionOptions::default()).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Limit {
                limit: "max_storage_buffer_binding_size",
                ..
            }
        ),
        "{e}"
    );
}

/// dO, O and LSE in other layouts than row-major (a [B, L, H, D] view, an odd element offset,
/// a strided LSE) give the gradients of the row-major call.
#[test]
fn strided_and_offset_saved_tensors() {
    let ctx = ctx();
    let p = problem(2, 2, 1, 9, 11, 8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = random(&mut rng, qs.iter().product(), 1.0);
    let k = random(&mut rng, ks.iter().product(), 1.0);
    let v = random(&mut rng, vs.iter().product(), 1.0);
    let d_out = random(&mut rng, p.b * p.hq * p.lq * p.dv, 1.0);
    let opts = AttentionOptions {
        causal: Some(Alignment::TopLeft),
        return_lse: true,
        ..Default::default()
    };
    let expected = reference::sdpa_backward(&HostInputs::new(p, &q, &k, &v), &opts, &d_out).unwrap();
    let up = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let (qt, kt, vt) = (up(&q, &qs), up(&k, &ks), up(&v, &vs));
    let fwd = wgpu_attention::attention(ctx, &qt, &kt, &vt, &opts).unwrap();
    // dO as [B, L, H, D] (transposed on the host), then viewed as [B, H, L, D].
    let mut blhd = vec![0.0f32; d_out.len()];
    for b in 0..p.b {
        for h in 0..p.hq {
            for i in 0..p.lq {
                for c in 0..p.dv {
                    blhd[((b * p.lq + i) * p.hq + h) * p.dv + c] = d_out[((b * p.hq + h) * p.lq + i) * p.dv + c];
                }
            }
        }
    }
    let blhd_t = up(&blhd, &[blhd.len()]);
    let d_out_blhd = Tensor::from_blhd(blhd_t.buffer(), 0, [p.b, p.lq, p.hq, p.dv], DType::F32).unwrap();
    // dO at an odd element offset (no vec4 loads), LSE with a padded row stride.
    let mut shifted = vec![7.0f32];
    shifted.extend_from_slice(&d_out);
    let shifted_t = up(&shifted, &[shifted.len()]);
    let d_out_odd = shifted_t
        .view(1, &[p.b, p.hq, p.lq, p.dv], &[p.hq * p.lq * p.dv, p.lq * p.dv, p.dv, 1])
        .unwrap();
    let lse = fwd.lse.as_ref().unwrap().to_vec::<f32>(ctx).unwrap();
    let mut padded = vec![f32::NAN; lse.len() * 2];
    for (e, x) in lse.iter().enumerate() {
        padded[2 * e] = *x;
    }
    let padded_t = up(&padded, &[padded.len()]);
    let lse_strided = padded_t
        .view(0, &[p.b, p.hq, p.lq], &[2 * p.hq * p.lq, 2 * p.lq, 2])
        .unwrap();
    for (d_out_t, lse_t) in [(&d_out_blhd, fwd.lse.as_ref().unwrap()), (&d_out_odd, &lse_strided)] {
        let g = wgpu_attention::attention_backward(ctx, &qt, &kt, &vt, &fwd.out, d_out_t, lse_t, &opts).unwrap();
        for (name, got, want) in [
            ("dq", &g.dq, &expected.dq),
            ("dk", &g.dk, &expected.dk),
            ("dv", &g.dv, &expected.dv),
        ] {
            let c = reference::compare(&got.to_vec::<f32>(ctx).unwrap(), want, GRAD_F32);
            assert!(c.ok(), "{name} (dO strides {:?}): {c}", d_out_t.strides());
        }
    }
}

/// Zero-score masking: keys that are zero vectors (padding) score exactly 0 and take no part, so
/// they get zero gradients and no probability.
#[test]
fn zero_score_masking_has_zero_gradients_for_padding_keys() {
    let ctx = ctx();
    let p = problem(1, 2, 1, 7, 9, 8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = random(&mut rng, qs.iter().product(), 1.0);
    let mut k = random(&mut rng, ks.iter().product(), 1.0);
    k[6 * 8..8 * 8].fill(0.0); // keys 6 and 7 are padding
    let v = random(&mut rng, vs.iter().product(), 1.0);
    let d_out = random(&mut rng, p.b * p.hq * p.lq * p.dv, 1.0);
    let opts = AttentionOptions {
        zero_score_mask: true,
        return_lse: true,
        ..Default::default()
    };
    let expected = reference::sdpa_backward(&HostInputs::new(p, &q, &k, &v), &opts, &d_out).unwrap();
    assert!(expected.dv[6 * 8..8 * 8].iter().all(|&x| x == 0.0));
    let up = |x: &[f32], s: &[usize]| Tensor::from_slice(ctx, x, s).unwrap();
    let (qt, kt, vt) = (up(&q, &qs), up(&k, &ks), up(&v, &vs));
    let fwd = wgpu_attention::attention(ctx, &qt, &kt, &vt, &opts).unwrap();
    let dot = up(&d_out, &[p.b, p.hq, p.lq, p.dv]);
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions { kernel, ..opts.clone() };
        let g =
            wgpu_attention::attention_backward(ctx, &qt, &kt, &vt, &fwd.out, &dot, fwd.lse.as_ref().unwrap(), &opts)
                .unwrap();
        for (name, got, want) in [
            ("dq", &g.dq, &expected.dq),
            ("dk", &g.dk, &expected.dk),
            ("dv", &g.dv, &expected.dv),
        ] {
            let got = got.to_vec::<f32>(ctx).unwrap();
            let c = reference::compare(&got, want, GRAD_F32);
            assert!(c.ok(), "{kernel:?} {name}: {c}");
            if name != "dq" {
                assert!(
                    got[6 * 8..8 * 8].iter().all(|&x| x == 0.0),
                    "{kernel:?} {name}: {got:?}"
                );
            }
        }
    }
}

/// ALiBi (slopes per query head, distances from the bottom-right aligned position) on both paths.
#[test]
fn alibi_gradients() {
    let slopes = |h: usize| wgpu_attention::alibi_slopes(h);
    check_all([
        grad(1, 4, 2, 13, 17, 8, 8).opts(|o| o.alibi_slopes = Some(slopes(4).into())),
        grad(2, 2, 1, 9, 12, 8, 8).key_lengths(vec![12, 5]).opts(|o| {
            o.alibi_slopes = Some(slopes(2).into());
            o.causal = Some(Alignment::BottomRight);
            o.align_to_key_lengths = true;
        }),
        grad(1, 2, 2, 10, 10, 8, 8)
            .staged()
            .opts(|o| o.alibi_slopes = Some(vec![0.5, -0.25].into())),
        // [B, Hq] slopes, on both paths.
        grad(2, 2, 1, 7, 9, 8, 8).opts(|o| {
            o.alibi_slopes = Some(wgpu_attention::AlibiSlopes::per_batch(2, vec![0.5, 0.1, 0.9, 0.0]));
        }),
        grad(2, 2, 2, 6, 6, 8, 8).staged().opts(|o| {
            o.alibi_slopes = Some(wgpu_attention::AlibiSlopes::per_batch(2, vec![0.2, 0.7, -0.3, 0.4]));
        }),
    ]);
}

/// Paged K/V and, on CPU drivers, loops past the driver's budget are refused, not computed wrong.
#[test]
fn paged_inputs_and_cpu_loop_budget_are_refused() {
    let ctx = ctx();
    let z = |s: &[usize]| Tensor::zeros(ctx, s, DType::F32).unwrap();
    let (q, o, lse) = (z(&[1, 1, 4, 8]), z(&[1, 1, 4, 8]), z(&[1, 1, 4]));
    let paged = AttentionOptions {
        block_table: Some(Tensor::from_slice(ctx, &[0u32], &[1, 1]).unwrap()),
        ..Default::default()
    };
    // K and V as one page of 4 rows: [pages, page_size, Hkv, D].
    let pages = z(&[1, 4, 1, 8]);
    let e = AttentionBackward::new(ctx, &q, &pages, &pages, &o, &o, &lse, &paged).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("block table")),
        "{e}"
    );
    // 40000 query rows of one KV head: beyond an llvmpipe loop budget (before Mesa 25) for the
    // dK/dV kernel's loop and the staged path's reduction over the rows, refused there; elsewhere
    // both plan.
    {
        let (q, o, lse) = (z(&[1, 1, 40000, 4]), z(&[1, 1, 40000, 4]), z(&[1, 1, 40000]));
        let kv = z(&[1, 1, 3, 4]);
        let staged = AttentionOptions {
            kernel: KernelChoice::Staged,
            ..Default::default()
        };
        for opts in [AttentionOptions::default(), staged] {
            if let Err(e) = AttentionBackward::new(ctx, &q, &kv, &kv, &o, &o, &lse, &opts) {
                assert!(matches!(e, Error::Unsupported(ref m) if m.contains("65535")), "{e}");
            }
        }
    }
}
