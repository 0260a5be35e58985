//! The attention family (ATTENTION.md §2–§8) on the GPU against the CPU reference: every member
//! at awkward shapes (length 1, primes, dims that are not multiples of the tile or of 4, GQA),
//! with masks that remove everything, f32 and f16 where it applies; seeded reproducibility of
//! dropout and hard attention; structured errors for bad parameters.
//!
//! Tolerances: `Tolerance::F32` / `F16` for single kernels; members that chain GEMMs into
//! attention (additive, general, location, MHA) use `CHAINED` because each stage rounds its
//! output to f32 before the next (the reference keeps f64 throughout).

mod common;

use common::skip::Cap;
use common::{ctx, problem, random, round_f16, upload};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::family::{hard, local, location, mha, neurjudge, pooling, score};
use wgpu_attention::reference::family as rf;
use wgpu_attention::reference::{self, compare, Broadcast, HostInputs, HostScore, Tolerance};
use wgpu_attention::{
    gemm, gemm::GemmDesign, Activation, Alignment, AttentionOptions, DType, Dropout, Error, GemmOptions, KernelChoice,
    Tensor,
};

/// Chained GEMM + attention stages, each rounding to f32.
const CHAINED: Tolerance = Tolerance { abs: 1e-4, rel: 1e-3 };
/// The same chains with f16 storage between stages.
const CHAINED_F16: Tolerance = Tolerance { abs: 8e-3, rel: 1.6e-2 };

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn t(data: &[f32], shape: &[usize]) -> Tensor {
    upload(ctx(), data, shape, DType::F32)
}

fn read(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec(ctx()).unwrap()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], expected: &[f64], tol: Tolerance) {
    let c = compare(got, expected, tol);
    assert!(c.ok(), "{what}: {c}");
}

// ---------------------------------------------------------------- GEMM

/// Every GEMM design, forced (Auto picks one of these by adapter type).
const GEMM_DESIGNS: [GemmDesign; 2] = [GemmDesign::Tiled, GemmDesign::Register];

#[test]
fn gemm_auto_design_follows_the_adapter_type() {
    let ctx = ctx();
    let cpu = ctx
        .info()
        .adapter
        .as_ref()
        .is_some_and(|a| a.device_type == wgpu_attention::wgpu::DeviceType::Cpu);
    let expected = if cpu { GemmDesign::Register } else { GemmDesign::Tiled };
    assert_eq!(GemmDesign::Auto.resolve(ctx), expected);
    assert_eq!(GemmDesign::Tiled.resolve(ctx), GemmDesign::Tiled);
    // f16: cooperative matrices where they run, except on CPU adapters.
    let coopmat = GemmDesign::Coopmat.unsupported(ctx, DType::F16).is_none();
    let expected_f16 = match (cpu, coopmat) {
        (true, _) => GemmDesign::Register,
        (false, true) => GemmDesign::Coopmat,
        (false, false) => GemmDesign::Tiled,
    };
    assert_eq!(GemmDesign::Auto.resolve_for(ctx, DType::F16), expected_f16);
    assert_eq!(GemmDesign::Auto.resolve_for(ctx, DType::F32), expected);
}

/// A forced cooperative-matrix GEMM that cannot run is an error saying why (f32 storage always;
/// f16 where the device has no cooperative matrices), never a silent fallback.
#[test]
fn gemm_coopmat_forced_where_it_cannot_run_is_an_error() {
    let ctx = ctx();
    let opts = GemmOptions {
        design: GemmDesign::Coopmat,
        ..Default::default()
    };
    let x = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let e = gemm::gemm(ctx, &x, &x, &opts).unwrap_err();
    assert!(matches!(&e, Error::Unsupported(why) if why.contains("f16")), "{e}");
    require!(Cap::F16);
    let h = upload(ctx, &[1.0, 2.0, 3.0, 4.0], &[2, 2], DType::F16);
    match GemmDesign::Coopmat.unsupported(ctx, DType::F16) {
        Some(_) => {
            let e = gemm::gemm(ctx, &h, &h, &opts).unwrap_err();
            assert!(matches!(e, Error::Unsupported(_)), "{e}");
        }
        None => {
            let y = gemm::gemm(ctx, &h, &h, &opts).unwrap();
            assert_eq!(read(&y), vec![7.0, 10.0, 15.0, 22.0]);
        }
    }
}

/// Every case of [`gemm_cases`] on the cooperative-matrix design, f16 storage.
#[test]
fn gemm_coopmat_f16_matches_reference_across_shapes_transposes_and_epilogues() {
    require!(Cap::CoopmatGemm);
    gemm_cases_dtype(GemmDesign::Coopmat, DType::F16);
}

#[test]
fn gemm_matches_reference_across_shapes_transposes_and_epilogues() {
    for design in GEMM_DESIGNS {
        gemm_cases(design);
    }
}

fn gemm_cases(design: GemmDesign) {
    gemm_cases_dtype(design, DType::F32);
}

/// The GEMM cases with `dtype` storage (f16: inputs rounded to f16, the tolerance of f16 output).
fn gemm_cases_dtype(design: GemmDesign, dtype: DType) {
    let ctx = ctx();
    let f16 = dtype == DType::F16;
    let tolerance = if f16 {
        Tolerance { abs: 2e-2, rel: 4e-3 }
    } else {
        Tolerance::F32
    };
    let prepare = |x: Vec<f32>| if f16 { round_f16(&x) } else { x };
    let t = |data: &[f32], shape: &[usize]| upload(ctx, data, shape, dtype);
    let mut r = rng(1);
    // (batch_a, batch_b, m, k, n): primes, 1s, non-multiples of the 64×64 tile and of the
    // register design's 8-row × 64-column workgroup block (9, 31, 33, 65), broadcast B.
    let shapes = [
        (1, 1, 1, 1, 1),
        (1, 1, 3, 5, 7),
        (2, 1, 67, 13, 9),
        (3, 3, 17, 70, 31),
        (1, 1, 5, 64, 1),
        (1, 1, 1, 11, 65),
        (2, 2, 9, 31, 33),
        (1, 1, 31, 1, 3),
        (1, 1, 10, 8, 130),
        (1, 1, 70, 45, 75),
    ];
    for (ba, bb, m, k, n) in shapes {
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = prepare(random(&mut r, ba * m * k, 1.0));
            let b = prepare(random(&mut r, bb * k * n, 1.0));
            let bias = prepare(random(&mut r, n, 1.0));
            let c0 = prepare(random(&mut r, ba.max(bb) * m * n, 1.0));
            let stored = |batch: usize, rows: usize, cols: usize, trans: bool| match (batch, trans) {
                (1, false) => vec![rows, cols],
                (1, true) => vec![cols, rows],
                (_, false) => vec![batch, rows, cols],
                (_, true) => vec![batch, cols, rows],
            };
            let sa = stored(ba, m, k, trans_a);
            let sb = stored(bb, k, n, trans_b);
            let (ta, tb) = (t(&a, &sa), t(&b, &sb));
            let host = |data, batch, shape: &Vec<usize>, trans| rf::HostMatrix {
                data,
                batch,
                rows: shape[shape.len() - 2],
                cols: shape[shape.len() - 1],
                trans,
            };
            let out_shape = if ba.max(bb) == 1 {
                vec![m, n]
            } else {
                vec![ba.max(bb), m, n]
            };
            for act in [Activation::None, Activation::Tanh, Activation::Sigmoid] {
                let out = t(&c0, &out_shape);
                let opts = GemmOptions {
                    trans_a,
                    trans_b,
                    alpha: 0.75,
                    bias: Some(t(&bias, &[n])),
                    activation: act,
                    post_scale: 2.0,
                    out: Some(out.clone()),
                    accumulate: true,
                    design,
                    ..Default::default()
                };
                gemm::gemm(ctx, &ta, &tb, &opts).unwrap();
                let expected = rf::gemm(
                    host(&a, ba, &sa, trans_a),
                    host(&b, bb, &sb, trans_b),
                    0.75,
                    Some(&bias),
                    Some(&c0),
                    act,
                    2.0,
                );
                let what =
                    format!("gemm {design} {dtype} {ba}x{m}x{k} · {bb}x{k}x{n} trans=({trans_a},{trans_b}) {act:?}");
                assert_close(&what, &read(&out), &expected, tolerance);
            }
        }
    }
}

#[test]
fn gemm_f16_and_four_dim_batches() {
    require!(Cap::F16);
    let mut r = rng(2);
    let (b0, b1, m, k, n) = (2, 3, 11, 19, 5);
    let a = round_f16(&random(&mut r, b0 * b1 * m * k, 1.0));
    let w = round_f16(&random(&mut r, n * k, 1.0));
    gemm_f16_four_dim_batches_on(&a, &w, (b0, b1, m, k, n), &GEMM_DESIGNS);
}

/// The four-dim batch case of [`gemm_f16_and_four_dim_batches`] on the cooperative-matrix design.
#[test]
fn gemm_coopmat_f16_four_dim_batches_and_broadcast_weight() {
    require!(Cap::CoopmatGemm);
    let mut r = rng(2);
    let (b0, b1, m, k, n) = (2, 3, 11, 19, 5);
    let a = round_f16(&random(&mut r, b0 * b1 * m * k, 1.0));
    let w = round_f16(&random(&mut r, n * k, 1.0));
    gemm_f16_four_dim_batches_on(&a, &w, (b0, b1, m, k, n), &[GemmDesign::Coopmat]);
}

fn gemm_f16_four_dim_batches_on(
    a: &[f32],
    w: &[f32],
    (b0, b1, m, k, n): (usize, usize, usize, usize, usize),
    designs: &[GemmDesign],
) {
    let ctx = ctx();
    for &design in designs {
        let out = gemm::gemm(
            ctx,
            &upload(ctx, a, &[b0, b1, m, k], DType::F16),
            &upload(ctx, w, &[n, k], DType::F16),
            &GemmOptions {
                trans_b: true,
                design,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.shape(), &[b0, b1, m, n]);
        let expected = rf::gemm(
            rf::HostMatrix {
                data: a,
                batch: b0 * b1,
                rows: m,
                cols: k,
                trans: false,
            },
            rf::HostMatrix {
                data: w,
                batch: 1,
                rows: n,
                cols: k,
                trans: true,
            },
            1.0,
            None,
            None,
            Activation::None,
            1.0,
        );
        assert_close(
            &format!("gemm f16 {design}"),
            &read(&out),
            &expected,
            Tolerance { abs: 1e-2, rel: 4e-3 },
        );
    }
}

// ---------------------------------------------------------------- score functions

struct Qkv {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn qkv(seed: u64, p: &wgpu_attention::Problem, dq: usize) -> Qkv {
    let mut r = rng(seed);
    Qkv {
        q: random(&mut r, p.b * p.hq * p.lq * dq, 1.0),
        k: random(&mut r, p.b * p.hkv * p.lk * p.dk, 1.0),
        v: random(&mut r, p.b * p.hkv * p.lk * p.dv, 1.0),
    }
}

#[test]
fn general_score_matches_reference() {
    let ctx = ctx();
    let p = problem(2, 4, 2, 13, 29, 12, 7);
    let dq = 9;
    let x = qkv(3, &p, dq);
    let w = random(&mut rng(4), dq * p.dk, 0.5);
    let lens = [29u32, 5];
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            key_lengths: Some(Tensor::from_slice(ctx, &lens, &[2]).unwrap()),
            kernel,
            ..Default::default()
        };
        let out = score::general(
            ctx,
            &t(&x.q, &[p.b, p.hq, p.lq, dq]),
            &t(&x.k, &[p.b, p.hkv, p.lk, p.dk]),
            &t(&x.v, &[p.b, p.hkv, p.lk, p.dv]),
            &t(&w, &[dq, p.dk]),
            &opts,
        )
        .unwrap()
        .run()
        .unwrap();
        let inputs = HostInputs {
            key_lengths: Some(&lens),
            score: HostScore::General { w: &w },
            ..HostInputs::new(p, &x.q, &x.k, &x.v)
        };
        let expected = reference::sdpa(
            &inputs,
            &AttentionOptions {
                scale: Some(1.0),
                ..opts.clone()
            },
        );
        assert_close(&format!("general {kernel:?}"), &read(&out.out), &expected.out, CHAINED);
    }
}

struct Additive {
    w_q: Vec<f32>,
    w_k: Vec<f32>,
    b: Vec<f32>,
    v_a: Vec<f32>,
}

fn additive_weights(seed: u64, da: usize, dq: usize, dk: usize) -> Additive {
    let mut r = rng(seed);
    Additive {
        w_q: random(&mut r, da * dq, 0.6),
        w_k: random(&mut r, da * dk, 0.6),
        b: random(&mut r, da, 0.5),
        v_a: random(&mut r, da, 1.0),
    }
}

fn additive_case(
    p: wgpu_attention::Problem,
    dq: usize,
    da: usize,
    dtype: DType,
    opts: AttentionOptions,
    tol: Tolerance,
) {
    let ctx = ctx();
    let mut x = qkv(5, &p, dq);
    let mut w = additive_weights(6, da, dq, p.dk);
    if dtype == DType::F16 {
        for v in [
            &mut x.q, &mut x.k, &mut x.v, &mut w.w_q, &mut w.w_k, &mut w.b, &mut w.v_a,
        ] {
            *v = round_f16(v);
        }
    }
    let weights = score::AdditiveWeights {
        w_q: upload(ctx, &w.w_q, &[da, dq], dtype),
        w_k: upload(ctx, &w.w_k, &[da, p.dk], dtype),
        bias: Some(upload(ctx, &w.b, &[da], dtype)),
        v: upload(ctx, &w.v_a, &[da], dtype),
    };
    let out = score::additive(
        ctx,
        &upload(ctx, &x.q, &[p.b, p.hq, p.lq, dq], dtype),
        &upload(ctx, &x.k, &[p.b, p.hkv, p.lk, p.dk], dtype),
        &upload(ctx, &x.v, &[p.b, p.hkv, p.lk, p.dv], dtype),
        &weights,
        &opts,
    )
    .unwrap()
    .run()
    .unwrap();
    let lens: Option<Vec<u32>> = opts.key_lengths.as_ref().map(|l| l.to_vec(ctx).unwrap());
    let inputs = HostInputs {
        key_lengths: lens.as_deref(),
        score: HostScore::Additive {
            w_q: &w.w_q,
            w_k: &w.w_k,
            b: &w.b,
            v: &w.v_a,
            dq,
            dk: p.dk,
        },
        ..HostInputs::new(p, &x.q, &x.k, &x.v)
    };
    let expected = reference::sdpa(&inputs, &opts);
    let what = format!("additive {p} Da={da} {dtype} {:?}", opts.kernel);
    assert_close(&what, &read(&out.out), &expected.out, tol);
    if let Some(lse) = &out.lse {
        assert_close(&format!("{what} lse"), &read(lse), &expected.lse, tol);
    }
    if let Some(wts) = &out.weights {
        assert_close(&format!("{what} weights"), &read(wts), &expected.weights, tol);
    }
}

#[test]
fn additive_fused_and_naive_match_reference() {
    let ctx = ctx();
    // Da = 13: not a multiple of 4 (scalar path) nor of any tile; GQA 4:2; Lq ≠ Lk primes.
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let lens = Tensor::from_slice(ctx, &[23u32, 0], &[2]).unwrap(); // batch 1: every key masked
        let opts = AttentionOptions {
            key_lengths: Some(lens),
            causal: Some(Alignment::TopLeft),
            return_lse: true,
            return_weights: kernel == KernelChoice::Staged,
            kernel,
            ..Default::default()
        };
        additive_case(problem(2, 4, 2, 11, 23, 6, 5), 7, 13, DType::F32, opts, CHAINED);
        // Length 1 and Da a multiple of 4 (vec4 path).
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        additive_case(problem(1, 1, 1, 1, 1, 8, 8), 8, 16, DType::F32, opts.clone(), CHAINED);
        additive_case(problem(1, 2, 1, 37, 17, 16, 8), 12, 32, DType::F32, opts, CHAINED);
    }
}

#[test]
fn additive_fused_f16() {
    require!(Cap::F16);
    let opts = AttentionOptions {
        window: Some(wgpu_attention::Window::symmetric(4)),
        ..Default::default()
    };
    additive_case(problem(1, 2, 2, 19, 19, 8, 8), 8, 12, DType::F16, opts, CHAINED_F16);
}

// ---------------------------------------------------------------- dropout

fn dropout_run(
    kernel: KernelChoice,
    p_drop: f32,
    seed: u64,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pr: wgpu_attention::Problem,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let opts = AttentionOptions {
        dropout: Some(Dropout { p: p_drop, seed }),
        return_weights: kernel == KernelChoice::Staged,
        kernel,
        ..Default::default()
    };
    let out = wgpu_attention::attention(
        ctx(),
        &t(q, &[pr.b, pr.hq, pr.lq, pr.dk]),
        &t(k, &[pr.b, pr.hkv, pr.lk, pr.dk]),
        &t(v, &[pr.b, pr.hkv, pr.lk, pr.dv]),
        &opts,
    )
    .unwrap();
    (read(&out.out), out.weights.as_ref().map(read))
}

#[test]
fn dropout_matches_the_reference_mask_element_by_element() {
    let p = problem(2, 2, 1, 17, 31, 8, 12);
    let x = qkv(7, &p, p.dk);
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        for (p_drop, seed) in [(0.1f32, 1u64), (0.5, 0xdead_beef_cafe), (0.9, 42)] {
            let (out, weights) = dropout_run(kernel, p_drop, seed, &x.q, &x.k, &x.v, p);
            let opts = AttentionOptions {
                dropout: Some(Dropout { p: p_drop, seed }),
                ..Default::default()
            };
            let expected = reference::sdpa(&HostInputs::new(p, &x.q, &x.k, &x.v), &opts);
            let what = format!("dropout p={p_drop} seed={seed} {kernel:?}");
            assert_close(&what, &out, &expected.out, Tolerance::F32);
            if let Some(w) = weights {
                assert_close(&format!("{what} weights"), &w, &expected.weights, Tolerance::F32);
            }
        }
    }
}

#[test]
fn dropout_keep_rate_and_seeds() {
    // Q = 0: every score is equal, so each kept weight is exactly 1/Lk · 1/(1 − p).
    let p = problem(1, 2, 2, 64, 64, 4, 4);
    let q = vec![0.0f32; p.b * p.hq * p.lq * p.dk];
    let x = qkv(8, &p, p.dk);
    let p_drop = 0.3f32;
    let (_, w) = dropout_run(KernelChoice::Staged, p_drop, 9, &q, &x.k, &x.v, p);
    let w = w.unwrap();
    let kept = w.iter().filter(|&&x| x > 0.0).count() as f64 / w.len() as f64;
    // 8192 Bernoulli(0.7) draws: standard deviation 0.005; allow 5σ.
    let sd = (0.7f64 * 0.3 / w.len() as f64).sqrt();
    assert!(
        (kept - 0.7).abs() < 5.0 * sd,
        "keep rate {kept}, expected 0.7 ± {}",
        5.0 * sd
    );
    let scaled = 1.0 / 64.0 / (1.0 - p_drop as f64);
    assert!(w.iter().all(|&x| x == 0.0 || (x as f64 - scaled).abs() < 1e-6));
    // Same seed: identical; another seed: a different mask; p = 0: no dropout at all.
    let (_, again) = dropout_run(KernelChoice::Staged, p_drop, 9, &q, &x.k, &x.v, p);
    assert_eq!(Some(w.clone()), again);
    let (_, other) = dropout_run(KernelChoice::Staged, p_drop, 10, &q, &x.k, &x.v, p);
    assert_ne!(Some(w), other);
    let (_, none) = dropout_run(KernelChoice::Staged, 0.0, 9, &q, &x.k, &x.v, p);
    assert!(none.unwrap().iter().all(|&x| (x - 1.0 / 64.0).abs() < 1e-7));
}

// ---------------------------------------------------------------- local attention

#[test]
fn local_m_windows_at_both_ends() {
    let ctx = ctx();
    let p = problem(1, 2, 1, 23, 23, 8, 8);
    let x = qkv(10, &p, p.dk);
    for half_width in [0u32, 3, 30] {
        for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
            let opts = AttentionOptions {
                kernel,
                ..Default::default()
            };
            let out = local::local_m(
                ctx,
                &t(&x.q, &[1, 2, 23, 8]),
                &t(&x.k, &[1, 1, 23, 8]),
                &t(&x.v, &[1, 1, 23, 8]),
                half_width,
                &opts,
            )
            .unwrap()
            .run()
            .unwrap();
            let ref_opts = AttentionOptions {
                window: Some(wgpu_attention::Window::symmetric(half_width)),
                ..Default::default()
            };
            let expected = reference::sdpa(&HostInputs::new(p, &x.q, &x.k, &x.v), &ref_opts);
            assert_close(
                &format!("local-m W={half_width} {kernel:?}"),
                &read(&out.out),
                &expected.out,
                Tolerance::F32,
            );
        }
    }
}

#[test]
fn local_p_positions_and_windows_match_reference() {
    let ctx = ctx();
    let p = problem(2, 2, 2, 13, 41, 8, 6);
    let dp = 5;
    let x = qkv(11, &p, p.dk);
    let mut r = rng(12);
    let w_p = random(&mut r, dp * p.dk, 1.0);
    let v_p = random(&mut r, dp, 2.0);
    let (q, k, v) = (
        t(&x.q, &[p.b, p.hq, p.lq, p.dk]),
        t(&x.k, &[p.b, p.hkv, p.lk, p.dk]),
        t(&x.v, &[p.b, p.hkv, p.lk, p.dv]),
    );
    let weights = local::LocalPWeights {
        w_p: t(&w_p, &[dp, p.dk]),
        v_p: t(&v_p, &[dp]),
    };
    // With key lengths the centers share the side buffer with them (a gather dispatch).
    let lens = [29u32, 0]; // batch 1: every key masked
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        for (half_width, key_lengths) in [(1u32, None), (4, Some(&lens)), (50, Some(&lens))] {
            let opts = AttentionOptions {
                kernel,
                return_weights: kernel == KernelChoice::Staged,
                return_lse: true,
                key_lengths: key_lengths.map(|l| Tensor::from_slice(ctx, l, &[2]).unwrap()),
                ..Default::default()
            };
            let out = local::local_p(ctx, &q, &k, &v, &weights, half_width, &opts)
                .unwrap()
                .run()
                .unwrap();
            let positions = read(&out.positions);
            let expected_positions = rf::local_p_positions(&x.q, p.dk, &w_p, &v_p, p.lk);
            assert_close("local-p positions", &positions, &expected_positions, Tolerance::F32);
            // The window edge is a comparison: check the attention at the GPU's own positions.
            let inputs = HostInputs {
                local: Some((&positions, half_width as f64, true)),
                key_lengths: key_lengths.map(|l| &l[..]),
                ..HostInputs::new(p, &x.q, &x.k, &x.v)
            };
            let expected = reference::sdpa(&inputs, &opts);
            let what = format!("local-p W={half_width} lengths {key_lengths:?} {kernel:?}");
            assert_close(&what, &read(&out.attention.out), &expected.out, Tolerance::F32);
            assert_close(
                &format!("{what} lse"),
                &read(out.attention.lse.as_ref().unwrap()),
                &expected.lse,
                Tolerance::F32,
            );
            if let Some(w) = &out.attention.weights {
                assert_close(&format!("{what} weights"), &read(w), &expected.weights, Tolerance::F32);
            }
        }
    }
}

// ---------------------------------------------------------------- hard attention

#[test]
fn hard_attention_samples_the_reference_indices() {
    let ctx = ctx();
    let p = problem(2, 2, 1, 19, 37, 8, 5);
    let x = qkv(13, &p, p.dk);
    let mask: Vec<bool> = (0..p.lq * p.lk).map(|e| e / p.lk != 3 && (e * 7919) % 5 != 0).collect(); // row 3 empty
    let opts = AttentionOptions {
        mask: Some(Tensor::from_slice(ctx, &mask, &[p.lq, p.lk]).unwrap()),
        causal: Some(Alignment::BottomRight),
        ..Default::default()
    };
    let (q, k, v) = (
        t(&x.q, &[p.b, p.hq, p.lq, p.dk]),
        t(&x.k, &[p.b, p.hkv, p.lk, p.dk]),
        t(&x.v, &[p.b, p.hkv, p.lk, p.dv]),
    );
    let inputs = HostInputs {
        mask: Some(Broadcast {
            data: &mask,
            shape: [1, 1, p.lq, p.lk],
        }),
        ..HostInputs::new(p, &x.q, &x.k, &x.v)
    };
    for seed in [0u64, 77, u64::MAX] {
        let out = hard::hard(ctx, &q, &k, &v, seed, &opts).unwrap().run().unwrap();
        let indices: Vec<u32> = out.indices.to_vec(ctx).unwrap();
        let expected = rf::hard(&inputs, &opts, seed);
        for (row, (&got, &want)) in indices.iter().zip(&expected.indices).enumerate() {
            // Only a near-tie of perturbed scores (f32 vs f64 rounding) may pick another key.
            assert!(
                got == want || expected.margins[row] < 1e-4,
                "seed {seed} row {row}: sampled {got}, reference {want} (margin {})",
                expected.margins[row]
            );
        }
        assert!(indices
            .iter()
            .enumerate()
            .all(|(r, &i)| (r % p.lq == 3) == (i == hard::NO_KEY)));
        assert_close(
            &format!("hard seed {seed}"),
            &read(&out.out),
            &expected.out,
            Tolerance::F32,
        );
        let again: Vec<u32> = hard::hard(ctx, &q, &k, &v, seed, &opts)
            .unwrap()
            .run()
            .unwrap()
            .indices
            .to_vec(ctx)
            .unwrap();
        assert_eq!(indices, again, "same seed, same draw");
    }
}

#[test]
fn hard_attention_follows_the_weights() {
    // One query, three keys with P = (0.7, 0.2, 0.1): over many rows the draw frequencies match.
    let ctx = ctx();
    let rows = 3000;
    let logits = [0.7f32.ln(), 0.2f32.ln(), 0.1f32.ln()];
    let q = vec![1.0f32; rows];
    let k: Vec<f32> = logits.to_vec();
    let v = vec![0.0f32, 1.0, 2.0];
    let opts = AttentionOptions {
        scale: Some(1.0),
        ..Default::default()
    };
    let out = hard::hard(
        ctx,
        &t(&q, &[1, 1, rows, 1]),
        &t(&k, &[1, 1, 3, 1]),
        &t(&v, &[1, 1, 3, 1]),
        5,
        &opts,
    )
    .unwrap()
    .run()
    .unwrap();
    let idx: Vec<u32> = out.indices.to_vec(ctx).unwrap();
    for (j, want) in [0.7f64, 0.2, 0.1].into_iter().enumerate() {
        let f = idx.iter().filter(|&&i| i == j as u32).count() as f64 / rows as f64;
        let sd = (want * (1.0 - want) / rows as f64).sqrt();
        assert!((f - want).abs() < 5.0 * sd, "key {j}: frequency {f}, expected {want}");
    }
}

// ---------------------------------------------------------------- NeurJudge

/// C and G with zero-vector padding rows (NeurJudge's padding).
fn padded(seed: u64, b: usize, l: usize, h: usize, valid: &[usize]) -> Vec<f32> {
    let mut x = random(&mut rng(seed), b * l * h, 1.0);
    for (bi, &n) in valid.iter().enumerate() {
        for v in &mut x[(bi * l + n) * h..(bi + 1) * l * h] {
            *v = 0.0;
        }
    }
    x
}

#[test]
fn zero_masked_attention_matches_reference() {
    let ctx = ctx();
    let (b, lc, lg, h) = (3, 7, 11, 10);
    let c = padded(14, b, lc, h, &[7, 4, 0]); // batch 2: every context row is padding
    let g = padded(15, b, lg, h, &[11, 6, 3]);
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        let out = neurjudge::zero_masked(ctx, &t(&c, &[b, lc, h]), &t(&g, &[b, lg, h]), &opts)
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(out.out.shape(), &[b, lc, h]);
        let p = problem(b, 1, 1, lc, lg, h, h);
        let expected = reference::sdpa(
            &HostInputs::new(p, &c, &g, &g),
            &AttentionOptions {
                scale: Some(1.0),
                zero_score_mask: true,
                ..Default::default()
            },
        );
        let got = read(&out.out);
        assert_close(&format!("zero-masked {kernel:?}"), &got, &expected.out, Tolerance::F32);
        assert!(got[2 * lc * h..].iter().all(|&x| x == 0.0), "fully masked rows give 0");
    }
}

#[test]
fn codewise_attention_matches_reference() {
    let ctx = ctx();
    for (b, lc, lg, h) in [(2, 13, 5, 9), (1, 1, 1, 3)] {
        let c = random(&mut rng(16), b * lc * h, 1.0);
        let g = random(&mut rng(17), b * lg * h, 1.0);
        let out = neurjudge::codewise(ctx, &t(&c, &[b, lc, h]), &t(&g, &[b, lg, h]))
            .unwrap()
            .run()
            .unwrap();
        assert_eq!(out.out.shape(), &[b, 1, h]);
        let expected = rf::codewise(&c, &g, (b, lc, lg, h));
        assert_close("codewise", &read(&out.out), &expected.out, Tolerance::F32);
        assert_close(
            "codewise weights",
            &read(&out.weights),
            &expected.weights,
            Tolerance::F32,
        );
    }
}

// ---------------------------------------------------------------- pooling

#[test]
fn han_pooling_matches_reference_with_masks() {
    let ctx = ctx();
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !common::skip::has_for(Cap::F16, "f16 pooling") {
            continue;
        }
        let (b, l, d, da) = (3, 29, 10, 7);
        let mut r = rng(18);
        let f = |v: Vec<f32>| if dtype == DType::F16 { round_f16(&v) } else { v };
        let x = f(random(&mut r, b * l * d, 1.0));
        let w = f(random(&mut r, d * da, 0.5));
        let bias = f(random(&mut r, da, 0.5));
        let u = f(random(&mut r, da, 1.0));
        let mask: Vec<bool> = (0..b * l).map(|e| e / l != 2 && e % 3 != 1).collect(); // batch 2 empty
        let weights = pooling::HanWeights {
            w: upload(ctx, &w, &[d, da], dtype),
            b: upload(ctx, &bias, &[da], dtype),
            u: upload(ctx, &u, &[da], dtype),
        };
        let m = Tensor::from_slice(ctx, &mask, &[b, l]).unwrap();
        let out = pooling::han(ctx, &upload(ctx, &x, &[b, l, d], dtype), &weights, Some(&m))
            .unwrap()
            .run()
            .unwrap();
        let expected = rf::han(&x, (b, l, d), &w, &bias, &u, Some(&mask));
        let tol = if dtype == DType::F16 { CHAINED_F16 } else { CHAINED };
        assert_close(&format!("han {dtype}"), &read(&out.out), &expected.out, tol);
        assert_close(
            &format!("han weights {dtype}"),
            &read(&out.weights),
            &expected.weights,
            tol,
        );
    }
}

#[test]
fn feed_forward_pooling_matches_reference() {
    let ctx = ctx();
    let (b, l, d) = (3, 17, 6);
    let mut r = rng(19);
    let x = random(&mut r, b * l * d, 1.0);
    let w = random(&mut r, d, 1.0);
    let step_bias = random(&mut r, l, 0.5);
    let mask: Vec<bool> = (0..b * l).map(|e| e / l != 1 && e % 4 != 0).collect(); // batch 1 empty
    for (bias, masked, eps) in [(true, true, 1e-7f32), (false, false, 0.5)] {
        let weights = pooling::FeedForwardWeights {
            w: t(&w, &[d]),
            b: bias.then(|| t(&step_bias, &[l])),
        };
        let opts = pooling::FeedForwardOptions {
            mask: masked.then(|| Tensor::from_slice(ctx, &mask, &[b, l]).unwrap()),
            eps,
        };
        let out = pooling::feed_forward(ctx, &t(&x, &[b, l, d]), &weights, &opts)
            .unwrap()
            .run()
            .unwrap();
        let expected = rf::feed_forward(
            &x,
            (b, l, d),
            &w,
            bias.then_some(step_bias.as_slice()),
            masked.then_some(mask.as_slice()),
            eps as f64,
        );
        assert_close("feed-forward", &read(&out.out), &expected.out, CHAINED);
        assert_close("feed-forward weights", &read(&out.weights), &expected.weights, CHAINED);
    }
}

#[test]
fn self_attention_sum_matches_reference() {
    let ctx = ctx();
    for (b, l, d) in [(2, 31, 8), (1, 1, 5)] {
        let x = random(&mut rng(20), b * l * d, 1.0);
        let out = pooling::self_sum(ctx, &t(&x, &[b, l, d])).unwrap().run().unwrap();
        assert_close("self-sum", &read(&out.out), &rf::self_sum(&x, (b, l, d)), CHAINED);
    }
}

// ---------------------------------------------------------------- location-based

#[test]
fn location_attention_matches_reference() {
    let ctx = ctx();
    let (b, lq, dq, dh, lk, dv, d_out) = (2, 5, 6, 7, 11, 9, 4);
    let mut r = rng(21);
    let q = random(&mut r, b * lq * dq, 1.0);
    let h = random(&mut r, b * lq * dh, 1.0);
    let v = random(&mut r, b * lk * dv, 1.0);
    let w_a = random(&mut r, lk * (dq + dh), 0.5);
    let b_a = random(&mut r, lk, 0.5);
    let w_c = random(&mut r, d_out * (dq + dv), 0.5);
    let b_c = random(&mut r, d_out, 0.5);
    let lens = [11u32, 0]; // batch 1: every position masked
    let opts = AttentionOptions {
        key_lengths: Some(Tensor::from_slice(ctx, &lens, &[2]).unwrap()),
        ..Default::default()
    };
    let weights = location::LocationWeights {
        w_a: t(&w_a, &[lk, dq + dh]),
        b_a: t(&b_a, &[lk]),
        w_c: t(&w_c, &[d_out, dq + dv]),
        b_c: t(&b_c, &[d_out]),
    };
    let out = location::location(
        ctx,
        &t(&q, &[b, lq, dq]),
        &t(&h, &[b, lq, dh]),
        &t(&v, &[b, lk, dv]),
        &weights,
        &opts,
    )
    .unwrap()
    .run()
    .unwrap();
    let host = rf::HostLocationWeights {
        w_a: &w_a,
        b_a: &b_a,
        w_c: &w_c,
        b_c: &b_c,
    };
    let expected = rf::location(
        &q,
        &h,
        &v,
        (b, lq, dq, dh, lk, dv),
        host,
        Some(&lens),
        &Default::default(),
    );
    assert_close("location weights", &read(&out.weights), &expected.weights, CHAINED);
    assert_close("location context", &read(&out.context), &expected.context, CHAINED);
    assert_close("location out", &read(&out.out), &expected.out, CHAINED);
    assert!(
        read(&out.context)[lq * dv..].iter().all(|&x| x == 0.0),
        "masked batch: context 0"
    );
}

// ---------------------------------------------------------------- multi-head attention

struct MhaHost {
    w: [Vec<f32>; 4],
    b: [Vec<f32>; 4],
}

fn mha_weights(seed: u64, e: usize, e_kv: usize, hq: usize, hkv: usize, dh: usize, e_out: usize) -> MhaHost {
    let mut r = rng(seed);
    let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    MhaHost {
        w: [
            random(&mut r, hq * dh * e, scale(e)),
            random(&mut r, hkv * dh * e_kv, scale(e_kv)),
            random(&mut r, hkv * dh * e_kv, scale(e_kv)),
            random(&mut r, e_out * hq * dh, scale(hq * dh)),
        ],
        b: [
            random(&mut r, hq * dh, 0.1),
            random(&mut r, hkv * dh, 0.1),
            random(&mut r, hkv * dh, 0.1),
            random(&mut r, e_out, 0.1),
        ],
    }
}

#[test]
fn mha_self_and_cross_attention_match_reference() {
    let ctx = ctx();
    // (B, Lq, Lk, E, E_kv, Hq, Hkv, Dh, E_out): GQA self-attention with a causal decoder mask,
    // then cross-attention over a longer memory with key padding and head-averaged weights.
    let cases = [
        (2, 9, 9, 12, 12, 4, 2, 3, 12, true),
        (1, 5, 13, 8, 6, 2, 1, 4, 7, false),
    ];
    for (b, lq, lk, e, e_kv, hq, hkv, dh, e_out, self_attention) in cases {
        let host = mha_weights(22, e, e_kv, hq, hkv, dh, e_out);
        let shapes = [[hq * dh, e], [hkv * dh, e_kv], [hkv * dh, e_kv], [e_out, hq * dh]];
        let linear = |i: usize| mha::Linear {
            weight: t(&host.w[i], &shapes[i]),
            bias: Some(t(&host.b[i], &[shapes[i][0]])),
        };
        let layer = mha::MultiHeadAttention::new(
            mha::MhaWeights {
                q: linear(0),
                k: linear(1),
                v: linear(2),
                out: linear(3),
            },
            hq,
            hkv,
        )
        .unwrap();
        let x_q = random(&mut rng(23), b * lq * e, 1.0);
        let x_kv = if self_attention {
            x_q.clone()
        } else {
            random(&mut rng(24), b * lk * e_kv, 1.0)
        };
        let keep: Vec<bool> = (0..b * lk).map(|x| x % lk < lk - 2).collect();
        let opts = mha::MhaOptions {
            attention: AttentionOptions {
                causal: self_attention.then_some(Alignment::TopLeft),
                ..Default::default()
            },
            key_padding_mask: (!self_attention).then(|| Tensor::from_slice(ctx, &keep, &[b, lk]).unwrap()),
            average_weights: !self_attention,
        };
        let tq = t(&x_q, &[b, lq, e]);
        let tkv = if self_attention {
            tq.clone()
        } else {
            t(&x_kv, &[b, lk, e_kv])
        };
        let call = layer.forward(ctx, &tq, &tkv, &opts).unwrap();
        assert_eq!(call.phases(), {
            let mut p = vec!["projections", "attention"];
            if !self_attention {
                p.push("weights average");
            }
            p.push("output projection");
            p
        });
        let out = call.run().unwrap();
        let hl = |i: usize| rf::HostLinear {
            w: &host.w[i],
            b: Some(&host.b[i]),
        };
        let expected = rf::mha(
            &x_q,
            &x_kv,
            (b, lq, lk, e, e_kv),
            (hq, hkv, dh),
            [hl(0), hl(1), hl(2), hl(3)],
            (!self_attention).then_some(keep.as_slice()),
            &opts.attention,
        );
        assert_close("mha out", &read(&out.out), &expected.out, CHAINED);
        if let Some(w) = &out.weights {
            assert_close("mha averaged weights", &read(w), &expected.weights, CHAINED);
        }
    }
}

#[test]
fn mha_loads_safetensors_in_both_layouts() {
    let ctx = ctx();
    let (e, h, dh) = (8, 2, 4);
    let host = mha_weights(25, e, e, h, h, dh, e);
    let dir = tempfile::tempdir().unwrap();
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let write = |path: &std::path::Path, tensors: Vec<(&str, Vec<f32>, Vec<usize>)>| {
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .into_iter()
            .map(|(n, v, s)| (n.to_string(), bytes(&v), s))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, b, s)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    };
    let named = dir.path().join("named.safetensors");
    write(
        &named,
        vec![
            ("q_proj.weight", host.w[0].clone(), vec![h * dh, e]),
            ("q_proj.bias", host.b[0].clone(), vec![h * dh]),
            ("k_proj.weight", host.w[1].clone(), vec![h * dh, e]),
            ("k_proj.bias", host.b[1].clone(), vec![h * dh]),
            ("v_proj.weight", host.w[2].clone(), vec![h * dh, e]),
            ("v_proj.bias", host.b[2].clone(), vec![h * dh]),
            ("out_proj.weight", host.w[3].clone(), vec![e, h * dh]),
            ("out_proj.bias", host.b[3].clone(), vec![e]),
        ],
    );
    let packed = dir.path().join("packed.safetensors");
    write(
        &packed,
        vec![
            (
                "in_proj_weight",
                [host.w[0].clone(), host.w[1].clone(), host.w[2].clone()].concat(),
                vec![3 * e, e],
            ),
            (
                "in_proj_bias",
                [host.b[0].clone(), host.b[1].clone(), host.b[2].clone()].concat(),
                vec![3 * e],
            ),
            ("out_proj.weight", host.w[3].clone(), vec![e, h * dh]),
            ("out_proj.bias", host.b[3].clone(), vec![e]),
        ],
    );
    let (b, l) = (1, 6);
    let x = random(&mut rng(26), b * l * e, 1.0);
    let hl = |i: usize| rf::HostLinear {
        w: &host.w[i],
        b: Some(&host.b[i]),
    };
    let expected = rf::mha(
        &x,
        &x,
        (b, l, l, e, e),
        (h, h, dh),
        [hl(0), hl(1), hl(2), hl(3)],
        None,
        &Default::default(),
    );
    for path in [named, packed] {
        let layer = mha::MultiHeadAttention::from_safetensors(ctx, &path, h, h).unwrap();
        let tx = t(&x, &[b, l, e]);
        let out = layer
            .forward(ctx, &tx, &tx, &Default::default())
            .unwrap()
            .run()
            .unwrap();
        assert_close(
            &format!("mha from {}", path.display()),
            &read(&out.out),
            &expected.out,
            CHAINED,
        );
    }
    let missing = dir.path().join("missing.safetensors");
    write(&missing, vec![("out_proj.weight", host.w[3].clone(), vec![e, h * dh])]);
    assert!(mha::MultiHeadAttention::from_safetensors(ctx, &missing, h, h).is_err());
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_family_parameters_give_structured_errors() {
    let ctx = ctx();
    let x = t(&[0.5; 2 * 3 * 4], &[1, 2, 3, 4]);
    let x3 = t(&[0.5; 2 * 3 * 4], &[2, 3, 4]);
    let w = |shape: &[usize]| t(&vec![0.1; shape.iter().product()], shape);
    // Additive: W_q must be [Da, Dq].
    let weights = score::AdditiveWeights {
        w_q: w(&[5, 3]),
        w_k: w(&[5, 4]),
        bias: None,
        v: w(&[5]),
    };
    let e = score::additive(ctx, &x, &x, &x, &weights, &Default::default()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "w_q", .. }), "{e}");
    // Additive scores are unscaled.
    let weights = score::AdditiveWeights {
        w_q: w(&[5, 4]),
        ..weights
    };
    let scaled = AttentionOptions {
        scale: Some(0.5),
        ..Default::default()
    };
    let e = score::additive(ctx, &x, &x, &x, &weights, &scaled).unwrap_err();
    assert!(matches!(e, Error::InvalidOption { name: "scale", .. }), "{e}");
    // General: W must be [Dq, Dk].
    let e = score::general(ctx, &x, &x, &x, &w(&[3, 4]), &Default::default()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "w", .. }), "{e}");
    // Feed-forward: ε must be > 0.
    for eps in [0.0, -1.0, f32::NAN] {
        let ff = pooling::FeedForwardWeights { w: w(&[4]), b: None };
        let opts = pooling::FeedForwardOptions { mask: None, eps };
        let e = pooling::feed_forward(ctx, &x3, &ff, &opts).unwrap_err();
        assert!(matches!(e, Error::InvalidOption { name: "eps", .. }), "{e}");
    }
    // Local-p: a zero-width window has no Gaussian; local-m sets the window itself.
    let lp = local::LocalPWeights {
        w_p: w(&[2, 4]),
        v_p: w(&[2]),
    };
    let e = local::local_p(ctx, &x, &x, &x, &lp, 0, &Default::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidOption { name: "half_width", .. }), "{e}");
    let windowed = AttentionOptions {
        window: Some(wgpu_attention::Window::symmetric(1)),
        ..Default::default()
    };
    assert!(matches!(
        local::local_m(ctx, &x, &x, &x, 2, &windowed).unwrap_err(),
        Error::InvalidOption { name: "window", .. }
    ));
    // Dropout p outside [0, 1).
    for p in [1.0f32, -0.1, f32::NAN, 2.0] {
        let opts = AttentionOptions {
            dropout: Some(Dropout { p, seed: 0 }),
            ..Default::default()
        };
        let e = wgpu_attention::attention(ctx, &x, &x, &x, &opts).unwrap_err();
        assert!(matches!(e, Error::InvalidOption { name: "dropout.p", .. }), "{e}");
    }
    // Hard attention has no weights or dropout.
    let opts = AttentionOptions {
        return_weights: true,
        ..Default::default()
    };
    assert!(matches!(
        hard::hard(ctx, &x, &x, &x, 1, &opts).unwrap_err(),
        Error::Unsupported(_)
    ));
    // MHA: heads must divide, weights must agree.
    let lin = |shape: &[usize]| mha::Linear {
        weight: w(shape),
        bias: None,
    };
    let weights = mha::MhaWeights {
        q: lin(&[8, 4]),
        k: lin(&[8, 4]),
        v: lin(&[8, 4]),
        out: lin(&[4, 8]),
    };
    assert!(matches!(
        mha::MultiHeadAttention::new(weights.clone(), 3, 2).unwrap_err(),
        Error::HeadRatio { .. }
    ));
    let bad_v = mha::MhaWeights {
        v: lin(&[6, 4]),
        ..weights.clone()
    };
    assert!(matches!(
        mha::MultiHeadAttention::new(bad_v, 2, 2).unwrap_err(),
        Error::ShapeMismatch {
            name: "v_proj.weight",
            ..
        }
    ));
    // GEMM: reduction dims must agree; bias must be [N].
    let e = gemm::gemm(ctx, &w(&[3, 4]), &w(&[5, 6]), &Default::default()).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let opts = GemmOptions {
        bias: Some(w(&[5])),
        ..Default::default()
    };
    let e = gemm::gemm(ctx, &w(&[3, 4]), &w(&[4, 6]), &opts).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "bias", .. }), "{e}");
}
