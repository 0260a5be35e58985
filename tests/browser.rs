//! The library in a browser: WebGPU (in CI, headless Chromium's SwiftShader) against the CPU
//! reference compiled to wasm too. Run with `scripts/test-browser.sh`.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};
use wgpu_attention::family::{local, mha, pooling, score};
use wgpu_attention::pipeline::Kernel;
use wgpu_attention::reference::family as rf;
use wgpu_attention::reference::{self, Broadcast, HostInputs, HostScore, Tolerance, VarlenHostInputs};
use wgpu_attention::wgpu;
use wgpu_attention::{
    attention, attention_varlen, Alignment, AppendOptions, Attention, AttentionBackward, AttentionOptions,
    BackwardConfig, BackwardOptions, Context, DType, Dropout, Error, FlashConfig, KernelChoice, KvCache, PagedLayout,
    Problem, Tensor, Tuning, Varlen, Window,
};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "common/variants.rs"]
mod variants;

#[path = "common/numeric_policy.rs"]
mod numeric_policy;

/// One device for the whole suite (the browser runs the tests one after another on one thread).
async fn ctx() -> Context {
    thread_local! {
        static CTX: std::cell::RefCell<Option<Context>> = const { std::cell::RefCell::new(None) };
    }
    if let Some(ctx) = CTX.with_borrow(Clone::clone) {
        return ctx;
    }
    let ctx = Context::new_async()
        .await
        .expect("no WebGPU adapter: Chromium needs --enable-unsafe-webgpu (see webdriver.json)");
    console_log!("adapter: {}, features {:?}", ctx.info().summary(), ctx.features());
    CTX.set(Some(ctx.clone()));
    ctx
}

/// The browser's named skip (the twin of tests/common/skip.rs): logs `SKIPPED <what>: <reason>
/// [<capability>]`, which scripts/test-browser.sh counts, and fails instead where the lane
/// requires the capability (`WGPU_ATTENTION_REQUIRE` when the suite was built).
fn skip(what: &str, cap: &str, reason: &str) {
    let required = option_env!("WGPU_ATTENTION_REQUIRE")
        .is_some_and(|list| list.split(',').map(str::trim).any(|n| n == cap || n == "all"));
    assert!(!required, "{what} needs {cap}, which this lane requires, but {reason}");
    console_log!("SKIPPED {what}: {reason} [{cap}]");
}

/// Deterministic values in [-magnitude, magnitude) (no RNG crate in the wasm build).
fn values(seed: u64, n: usize, magnitude: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * magnitude
        })
        .collect()
}

fn problem(b: usize, hq: usize, hkv: usize, lq: usize, lk: usize, dk: usize, dv: usize) -> Problem {
    Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk,
        dv,
    }
}

/// What a case adds to Q, K, V.
#[derive(Debug, Clone, Default)]
struct Extras {
    bias: Option<[usize; 4]>,
    mask: Option<[usize; 4]>,
    key_lengths: Option<Vec<u32>>,
}

/// A bool mask of `shape`: about one key in three masked, and row 0 of every (b, h) fully masked.
fn mask_pattern(shape: [usize; 4]) -> Vec<bool> {
    let (lq, lk) = (shape[2], shape[3]);
    (0..shape.iter().product::<usize>())
        .map(|e| (e / lk) % lq != 0 && (e * 7 + e / lk) % 3 != 0)
        .collect()
}

/// Runs one call on the GPU and on the reference and compares O, LSE and (staged) P.
async fn check(p: Problem, kernel: KernelChoice, mut opts: AttentionOptions, extras: &Extras) {
    let ctx = ctx().await;
    console_log!("case {p} {kernel:?} causal {:?} {extras:?}", opts.causal);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = values(1, qs.iter().product(), 1.0);
    let k = values(2, ks.iter().product(), 1.0);
    let v = values(3, vs.iter().product(), 1.0);
    let bias = extras.bias.map(|s| values(4, s.iter().product(), 2.0));
    let mask: Option<Vec<bool>> = extras.mask.map(mask_pattern);
    opts.kernel = kernel;
    opts.return_lse = true;
    opts.return_weights = kernel == KernelChoice::Staged;
    let upload = |data: &[f32], shape: &[usize]| Tensor::from_slice(&ctx, data, shape).unwrap();
    opts.bias = bias.as_ref().zip(extras.bias).map(|(b, s)| upload(b, &s));
    opts.mask = mask
        .as_ref()
        .zip(extras.mask)
        .map(|(m, s)| Tensor::from_slice(&ctx, m, &s).unwrap());
    opts.key_lengths = extras
        .key_lengths
        .as_ref()
        .map(|l| Tensor::from_slice(&ctx, l, &[p.b]).unwrap());
    let gpu = attention(&ctx, &upload(&q, &qs), &upload(&k, &ks), &upload(&v, &vs), &opts)
        .unwrap_or_else(|e| panic!("{p} {kernel:?}: {e}"));
    assert_eq!(gpu.kernel, kernel, "{p}: ran another path");
    if let Some(d) = opts.design {
        console_log!(
            "{p}: asked for the {d} design, ran {:?} ({:?})",
            gpu.design,
            gpu.design_note
        );
        assert!(
            gpu.design == Some(d) || gpu.design_note.is_some(),
            "{p}: asked for the {d} design, ran {:?} without a note",
            gpu.design
        );
    }

    let expected = reference::sdpa(
        &HostInputs {
            problem: p,
            q: &q,
            k: &k,
            v: &v,
            bias: bias
                .as_ref()
                .zip(extras.bias)
                .map(|(data, shape)| Broadcast { data, shape }),
            mask: mask
                .as_ref()
                .zip(extras.mask)
                .map(|(data, shape)| Broadcast { data, shape }),
            key_lengths: extras.key_lengths.as_deref(),
            score: Default::default(),
            local: None,
        },
        &opts,
    );
    let out = gpu.out.to_f32_vec_async(&ctx).await.unwrap();
    let c = reference::compare(&out, &expected.out, Tolerance::F32);
    assert!(c.ok(), "{p} {kernel:?} {extras:?}: O {c}");
    let lse = gpu.lse.unwrap().to_vec_async::<f32>(&ctx).await.unwrap();
    let c = reference::compare(&lse, &expected.lse, Tolerance::F32);
    assert!(c.ok(), "{p} {kernel:?} {extras:?}: LSE {c}");
    if let Some(w) = gpu.weights {
        let w = w.to_vec_async::<f32>(&ctx).await.unwrap();
        let c = reference::compare(&w, &expected.weights, Tolerance::F32);
        assert!(c.ok(), "{p} {kernel:?} {extras:?}: P {c}");
    }
}

async fn both_paths(p: Problem, opts: AttentionOptions, extras: Extras) {
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        check(p, kernel, opts.clone(), &extras).await;
    }
}

#[wasm_bindgen_test]
async fn plain() {
    both_paths(
        problem(1, 2, 2, 16, 16, 16, 16),
        AttentionOptions::default(),
        Extras::default(),
    )
    .await;
    both_paths(
        problem(2, 3, 3, 33, 70, 64, 32),
        AttentionOptions::default(),
        Extras::default(),
    )
    .await;
}

#[wasm_bindgen_test]
async fn causal_alignments_and_gqa() {
    for (align, lq, lk) in [(Alignment::TopLeft, 24, 40), (Alignment::BottomRight, 9, 37)] {
        let opts = AttentionOptions {
            causal: Some(align),
            ..Default::default()
        };
        both_paths(problem(2, 4, 2, lq, lk, 32, 16), opts, Extras::default()).await;
    }
    // MQA: every query head reads the one KV head.
    both_paths(
        problem(1, 4, 1, 5, 21, 8, 8),
        AttentionOptions::default(),
        Extras::default(),
    )
    .await;
}

/// Every fused design the device runs (the tiled one is what GPUs get by default).
#[wasm_bindgen_test]
async fn fused_designs() {
    let ctx = ctx().await;
    let designs = wgpu_attention::available_designs(&ctx, DType::F32);
    console_log!("fused designs on this device: {designs:?}");
    for design in designs {
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            design: Some(design),
            ..Default::default()
        };
        let extras = Extras {
            mask: Some([2, 1, 21, 70]),
            ..Default::default()
        };
        check(problem(2, 4, 2, 21, 70, 32, 24), KernelChoice::Fused, opts, &extras).await;
    }
}

/// The decode path (few query rows per KV head), which splits the keys and merges the parts.
#[wasm_bindgen_test]
async fn decode() {
    let extras = Extras {
        key_lengths: Some(vec![40, 3]),
        ..Default::default()
    };
    for lq in [1, 3] {
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            align_to_key_lengths: true,
            ..Default::default()
        };
        check(problem(2, 4, 2, lq, 40, 32, 16), KernelChoice::Decode, opts, &extras).await;
    }
}

#[wasm_bindgen_test]
async fn masks_bias_and_key_lengths() {
    let p = problem(2, 2, 1, 12, 29, 16, 24);
    let extras = Extras {
        bias: Some([1, 2, 12, 29]),
        mask: Some([2, 1, 12, 29]),
        key_lengths: Some(vec![29, 11]),
    };
    both_paths(p, AttentionOptions::default(), extras.clone()).await;
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        align_to_key_lengths: true,
        ..Default::default()
    };
    both_paths(p, opts, extras).await;
}

#[wasm_bindgen_test]
async fn invalid_call_is_an_error() {
    let ctx = ctx().await;
    let q = Tensor::zeros(&ctx, &[1, 2, 4, 8], DType::F32).unwrap();
    let k = Tensor::zeros(&ctx, &[1, 2, 4, 16], DType::F32).unwrap();
    let err = attention(&ctx, &q, &k, &k, &AttentionOptions::default()).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    // The device still works after the refusal (no GPU work was done).
    ctx.wait_async().await.unwrap();
}

/// f16 storage against the reference where the adapter has `SHADER_F16`; where it has not
/// (SwiftShader), the call is refused with `MissingFeature` and the f16 check is a named skip.
#[wasm_bindgen_test]
async fn f16_matches_the_reference_or_is_refused() {
    let ctx = ctx().await;
    let p = problem(1, 2, 2, 8, 8, 16, 16);
    let [qs, ..] = p.qkv_shapes();
    let data: Vec<half::f16> = values(5, qs.iter().product(), 1.0)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let q = Tensor::from_slice(&ctx, &data, &qs).unwrap();
    let opts = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    let res = match attention(&ctx, &q, &q, &q, &opts) {
        Err(err) if !ctx.features().contains(wgpu_attention::wgpu::Features::SHADER_F16) => {
            assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
            return skip(
                "f16_matches_the_reference",
                "f16",
                &format!("the adapter lacks SHADER_F16 ({err})"),
            );
        }
        res => res.unwrap(),
    };
    let host: Vec<f32> = data.iter().map(|x| x.to_f32()).collect();
    let expected = reference::sdpa(&HostInputs::new(p, &host, &host, &host), &opts);
    let out = reference::compare(
        &res.out.to_f32_vec_async(&ctx).await.unwrap(),
        &expected.out,
        Tolerance::F16,
    );
    assert!(out.ok(), "f16 O: {out}");
    let lse = res.lse.unwrap().to_f32_vec_async(&ctx).await.unwrap();
    let lse = reference::compare(&lse, &expected.lse, Tolerance::F16);
    assert!(lse.ok(), "f16 LSE: {lse}");
}

/// A compiler error in a piece is placed at the piece's file and line in the browser too: the
/// browser's own compiler (Tint) reports a line of the composed source, and the composed source's
/// markers map it back (`pipeline::place_messages`).
#[wasm_bindgen_test]
async fn a_broken_piece_is_named_by_file_and_line() {
    use wgpu_attention::pipeline::{compose::compose_with, place_messages};
    let ctx = ctx().await;
    let test_shader = |path: &str| match path {
        "broken_entry.wgsl" => Some(include_str!("shaders/broken_entry.wgsl")),
        "broken_piece.wgsl" => Some(include_str!("shaders/broken_piece.wgsl")),
        _ => None,
    };
    let src = compose_with(&test_shader, "tests/shaders", "broken_entry.wgsl", DType::F32, &[]).unwrap();
    let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
    let module = ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("broken_entry.wgsl"),
        source: wgpu::ShaderSource::Wgsl(src.as_str().into()),
    });
    let messages = place_messages(&src, &module.get_compilation_info().await);
    assert!(scope.pop().await.is_some(), "the broken piece compiled");
    console_log!("placed: {messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("tests/shaders/broken_piece.wgsl:4:")),
        "{messages:?}"
    );
}

/// The browser's WGSL compiler (Tint in Chromium) is stricter than naga in places (it evaluates
/// const-expressions, and refuses a non-finite one): every kernel source the device can use must
/// compile there. Sources needing a feature the device lacks are counted and logged, not run.
#[wasm_bindgen_test]
async fn every_kernel_compiles() {
    let ctx = ctx().await;
    let (f16, subgroups) = (
        ctx.features().contains(wgpu::Features::SHADER_F16),
        ctx.features().contains(wgpu::Features::SUBGROUP),
    );
    let (mut compiled, mut failures) = (0, Vec::new());
    let (mut without_f16, mut without_subgroups) = (0, 0);
    for source in variants::all() {
        let needs_subgroups = source.kernel == Kernel::FlashDecodeLanes || source.switches.subgroup > 0;
        if source.dtype == DType::F16 && !f16 {
            without_f16 += 1;
            continue;
        }
        if needs_subgroups && !subgroups {
            without_subgroups += 1;
            continue;
        }
        let scope = ctx.device().push_error_scope(wgpu::ErrorFilter::Validation);
        let _module = ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(source.wgsl.as_str().into()),
        });
        match scope.pop().await {
            Some(e) => failures.push(format!("{source}: {e}")),
            None => compiled += 1,
        }
    }
    // One named skip per missing capability, with the number of sources it left unchecked.
    if without_f16 > 0 {
        skip(
            &format!("every_kernel_compiles ({without_f16} f16 sources)"),
            "f16",
            "the adapter lacks SHADER_F16",
        );
    }
    if without_subgroups > 0 {
        skip(
            &format!("every_kernel_compiles ({without_subgroups} subgroup sources)"),
            "subgroups",
            "wgpu's WebGPU backend offers no SUBGROUP",
        );
    }
    let skipped = without_f16 + without_subgroups;
    console_log!(
        "kernels: {compiled} sources compiled, {skipped} NOT CHECKED (need f16 or subgroups, which the device lacks)"
    );
    assert!(
        failures.is_empty(),
        "{} source(s) refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------- family, cache, backward, varlen

/// Members that chain GEMMs into attention round every stage to f32 (the reference keeps f64),
/// as in tests/family.rs.
const CHAINED: Tolerance = Tolerance { abs: 1e-4, rel: 1e-3 };

fn upload(ctx: &Context, data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(ctx, data, shape).unwrap()
}

async fn read(ctx: &Context, t: &Tensor) -> Vec<f32> {
    t.to_f32_vec_async(ctx).await.unwrap()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], expected: &[f64], tol: Tolerance) {
    let c = reference::compare(got, expected, tol);
    assert!(c.ok(), "{what}: {c}");
}

/// Additive (Bahdanau) scores, reduced inside the fused tile and on the staged path: GQA,
/// Da = 13 (not a multiple of 4), Lq ≠ Lk, causal, and a batch whose key length is 0.
#[wasm_bindgen_test]
async fn family_additive() {
    let ctx = ctx().await;
    let p = problem(2, 4, 2, 11, 23, 6, 5);
    let (dq, da) = (7, 13);
    let q = values(20, p.b * p.hq * p.lq * dq, 1.0);
    let k = values(21, p.b * p.hkv * p.lk * p.dk, 1.0);
    let v = values(22, p.b * p.hkv * p.lk * p.dv, 1.0);
    let (w_q, w_k, b, v_a) = (
        values(23, da * dq, 0.6),
        values(24, da * p.dk, 0.6),
        values(25, da, 0.5),
        values(26, da, 1.0),
    );
    let weights = score::AdditiveWeights {
        w_q: upload(&ctx, &w_q, &[da, dq]),
        w_k: upload(&ctx, &w_k, &[da, p.dk]),
        bias: Some(upload(&ctx, &b, &[da])),
        v: upload(&ctx, &v_a, &[da]),
    };
    let lens = [23u32, 0];
    let (qt, kt, vt) = (
        upload(&ctx, &q, &[p.b, p.hq, p.lq, dq]),
        upload(&ctx, &k, &[p.b, p.hkv, p.lk, p.dk]),
        upload(&ctx, &v, &[p.b, p.hkv, p.lk, p.dv]),
    );
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            key_lengths: Some(Tensor::from_slice(&ctx, &lens, &[2]).unwrap()),
            causal: Some(Alignment::TopLeft),
            return_lse: true,
            return_weights: kernel == KernelChoice::Staged,
            kernel,
            ..Default::default()
        };
        let out = score::additive(&ctx, &qt, &kt, &vt, &weights, &opts)
            .and_then(|c| c.run())
            .unwrap_or_else(|e| panic!("additive {kernel:?}: {e}"));
        let inputs = HostInputs {
            key_lengths: Some(&lens),
            score: HostScore::Additive {
                w_q: &w_q,
                w_k: &w_k,
                b: &b,
                v: &v_a,
                dq,
                dk: p.dk,
            },
            ..HostInputs::new(p, &q, &k, &v)
        };
        let expected = reference::sdpa(&inputs, &opts);
        let what = format!("additive {kernel:?}");
        assert_close(&what, &read(&ctx, &out.out).await, &expected.out, CHAINED);
        let lse = read(&ctx, out.lse.as_ref().unwrap()).await;
        assert_close(&format!("{what} LSE"), &lse, &expected.lse, CHAINED);
        if let Some(w) = &out.weights {
            assert_close(&format!("{what} P"), &read(&ctx, w).await, &expected.weights, CHAINED);
        }
    }
}

/// General (bilinear) scores qᵀWk: a GEMM then attention, with GQA, Dq ≠ Dk, per-batch key
/// lengths and per-sequence bottom-right causal alignment.
#[wasm_bindgen_test]
async fn family_general() {
    let ctx = ctx().await;
    let p = problem(2, 4, 2, 13, 29, 12, 7);
    let dq = 9;
    let q = values(27, p.b * p.hq * p.lq * dq, 1.0);
    let k = values(28, p.b * p.hkv * p.lk * p.dk, 1.0);
    let v = values(29, p.b * p.hkv * p.lk * p.dv, 1.0);
    let w = values(30, dq * p.dk, 0.5);
    let lens = [29u32, 5];
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            align_to_key_lengths: true,
            key_lengths: Some(Tensor::from_slice(&ctx, &lens, &[2]).unwrap()),
            return_lse: true,
            kernel,
            ..Default::default()
        };
        let out = score::general(
            &ctx,
            &upload(&ctx, &q, &[p.b, p.hq, p.lq, dq]),
            &upload(&ctx, &k, &[p.b, p.hkv, p.lk, p.dk]),
            &upload(&ctx, &v, &[p.b, p.hkv, p.lk, p.dv]),
            &upload(&ctx, &w, &[dq, p.dk]),
            &opts,
        )
        .and_then(|c| c.run())
        .unwrap_or_else(|e| panic!("general {kernel:?}: {e}"));
        let inputs = HostInputs {
            key_lengths: Some(&lens),
            score: HostScore::General { w: &w },
            ..HostInputs::new(p, &q, &k, &v)
        };
        // The bilinear score is unscaled.
        let expected = reference::sdpa(
            &inputs,
            &AttentionOptions {
                scale: Some(1.0),
                ..opts.clone()
            },
        );
        let what = format!("general {kernel:?}");
        assert_close(&what, &read(&ctx, &out.out).await, &expected.out, CHAINED);
        let lse = read(&ctx, out.lse.as_ref().unwrap()).await;
        assert_close(&format!("{what} LSE"), &lse, &expected.lse, CHAINED);
    }
}

/// Local-p: predicted positions pᵢ = Lk·σ(v_pᵀ tanh(W_p qᵢ)), then a Gaussian-weighted window
/// around each; windows narrower and wider than the keys, fused and staged.
#[wasm_bindgen_test]
async fn family_local_p() {
    let ctx = ctx().await;
    let p = problem(2, 2, 2, 13, 41, 8, 6);
    let dp = 5;
    let q = values(31, p.b * p.hq * p.lq * p.dk, 1.0);
    let k = values(32, p.b * p.hkv * p.lk * p.dk, 1.0);
    let v = values(33, p.b * p.hkv * p.lk * p.dv, 1.0);
    let (w_p, v_p) = (values(34, dp * p.dk, 1.0), values(35, dp, 2.0));
    let [qs, ks, vs] = p.qkv_shapes();
    let (qt, kt, vt) = (upload(&ctx, &q, &qs), upload(&ctx, &k, &ks), upload(&ctx, &v, &vs));
    let weights = local::LocalPWeights {
        w_p: upload(&ctx, &w_p, &[dp, p.dk]),
        v_p: upload(&ctx, &v_p, &[dp]),
    };
    let expected_positions = rf::local_p_positions(&q, p.dk, &w_p, &v_p, p.lk);
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        for half_width in [4u32, 50] {
            let opts = AttentionOptions {
                kernel,
                return_weights: kernel == KernelChoice::Staged,
                return_lse: true,
                ..Default::default()
            };
            let out = local::local_p(&ctx, &qt, &kt, &vt, &weights, half_width, &opts)
                .and_then(|c| c.run())
                .unwrap_or_else(|e| panic!("local-p {kernel:?}: {e}"));
            let what = format!("local-p W={half_width} {kernel:?}");
            let positions = read(&ctx, &out.positions).await;
            assert_close(
                &format!("{what} positions"),
                &positions,
                &expected_positions,
                Tolerance::F32,
            );
            // The window edge is a comparison: the attention is checked at the GPU's own positions.
            let inputs = HostInputs {
                local: Some((&positions, half_width as f64, true)),
                ..HostInputs::new(p, &q, &k, &v)
            };
            let expected = reference::sdpa(&inputs, &opts);
            assert_close(
                &what,
                &read(&ctx, &out.attention.out).await,
                &expected.out,
                Tolerance::F32,
            );
            let lse = read(&ctx, out.attention.lse.as_ref().unwrap()).await;
            assert_close(&format!("{what} LSE"), &lse, &expected.lse, Tolerance::F32);
            if let Some(w) = &out.attention.weights {
                assert_close(
                    &format!("{what} P"),
                    &read(&ctx, w).await,
                    &expected.weights,
                    Tolerance::F32,
                );
            }
        }
    }
}

/// Hierarchical attention pooling, softmax(tanh(XW + b)·u) over masked time steps, one batch
/// with every step masked.
#[wasm_bindgen_test]
async fn family_han_pooling() {
    let ctx = ctx().await;
    let (b, l, d, da) = (3, 29, 10, 7);
    let x = values(36, b * l * d, 1.0);
    let (w, bias, u) = (values(37, d * da, 0.5), values(38, da, 0.5), values(39, da, 1.0));
    let mask: Vec<bool> = (0..b * l).map(|e| e / l != 2 && e % 3 != 1).collect();
    let weights = pooling::HanWeights {
        w: upload(&ctx, &w, &[d, da]),
        b: upload(&ctx, &bias, &[da]),
        u: upload(&ctx, &u, &[da]),
    };
    let m = Tensor::from_slice(&ctx, &mask, &[b, l]).unwrap();
    let out = pooling::han(&ctx, &upload(&ctx, &x, &[b, l, d]), &weights, Some(&m))
        .and_then(|c| c.run())
        .unwrap_or_else(|e| panic!("han: {e}"));
    let expected = rf::han(&x, (b, l, d), &w, &bias, &u, Some(&mask));
    assert_close("han", &read(&ctx, &out.out).await, &expected.out, CHAINED);
    assert_close(
        "han weights",
        &read(&ctx, &out.weights).await,
        &expected.weights,
        CHAINED,
    );
}

/// Multi-head attention (projections, attention, output projection): GQA self-attention with a
/// causal mask, and cross-attention with key padding and head-averaged weights.
#[wasm_bindgen_test]
async fn family_multi_head() {
    let ctx = ctx().await;
    // (B, Lq, Lk, E, E_kv, Hq, Hkv, Dh, E_out, self-attention)
    let cases = [
        (2, 9, 9, 12, 12, 4, 2, 3, 12, true),
        (1, 5, 13, 8, 6, 2, 1, 4, 7, false),
    ];
    for (n, (b, lq, lk, e, e_kv, hq, hkv, dh, e_out, self_attention)) in cases.into_iter().enumerate() {
        let seed = 40 + 10 * n as u64;
        let scale = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        let w = [
            values(seed, hq * dh * e, scale(e)),
            values(seed + 1, hkv * dh * e_kv, scale(e_kv)),
            values(seed + 2, hkv * dh * e_kv, scale(e_kv)),
            values(seed + 3, e_out * hq * dh, scale(hq * dh)),
        ];
        let bias = [
            values(seed + 4, hq * dh, 0.1),
            values(seed + 5, hkv * dh, 0.1),
            values(seed + 6, hkv * dh, 0.1),
            values(seed + 7, e_out, 0.1),
        ];
        let shapes = [[hq * dh, e], [hkv * dh, e_kv], [hkv * dh, e_kv], [e_out, hq * dh]];
        let linear = |i: usize| mha::Linear {
            weight: upload(&ctx, &w[i], &shapes[i]),
            bias: Some(upload(&ctx, &bias[i], &[shapes[i][0]])),
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
        let x_q = values(seed + 8, b * lq * e, 1.0);
        let x_kv = if self_attention {
            x_q.clone()
        } else {
            values(seed + 9, b * lk * e_kv, 1.0)
        };
        let keep: Vec<bool> = (0..b * lk).map(|x| x % lk < lk - 2).collect();
        let opts = mha::MhaOptions {
            attention: AttentionOptions {
                causal: self_attention.then_some(Alignment::TopLeft),
                ..Default::default()
            },
            key_padding_mask: (!self_attention).then(|| Tensor::from_slice(&ctx, &keep, &[b, lk]).unwrap()),
            average_weights: !self_attention,
        };
        let out = layer
            .forward(
                &ctx,
                &upload(&ctx, &x_q, &[b, lq, e]),
                &upload(&ctx, &x_kv, &[b, lk, e_kv]),
                &opts,
            )
            .and_then(|c| c.run())
            .unwrap_or_else(|err| panic!("mha case {n}: {err}"));
        let hl = |i: usize| rf::HostLinear {
            w: &w[i],
            b: Some(&bias[i]),
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
        assert_close(
            &format!("mha case {n}"),
            &read(&ctx, &out.out).await,
            &expected.out,
            CHAINED,
        );
        assert_eq!(out.weights.is_some(), !self_attention, "mha case {n}: averaged weights");
        if let Some(wts) = &out.weights {
            assert_close(
                &format!("mha case {n} averaged weights"),
                &read(&ctx, wts).await,
                &expected.weights,
                CHAINED,
            );
        }
    }
}

/// The KV cache, contiguous and paged (pages in reversed order behind the block table): uneven
/// appends, then attention over it against the reference on each sequence's full K and V, as
/// appended (bottom-right causal per sequence, one query row and three).
#[wasm_bindgen_test]
async fn kv_cache_append_then_attend() {
    let ctx = ctx().await;
    let (b, hkv, hq, d) = (2, 2, 4, 16);
    let layout = PagedLayout {
        pages: 12,
        page_size: 4,
        pages_per_seq: 5,
    };
    let capacity = layout.page_size * layout.pages_per_seq;
    // (rows per call, rows each sequence takes): sequence 1 takes nothing in the first call.
    let appends: [(usize, Option<[u32; 2]>); 3] = [(5, Some([5, 0])), (4, Some([2, 4])), (3, None)];
    for paged in [false, true] {
        let mut cache = if paged {
            let mut c = KvCache::new_paged(&ctx, b, hkv, layout, d, d, DType::F32).unwrap();
            let table: Vec<u32> = (0..layout.pages as u32).rev().take(b * layout.pages_per_seq).collect();
            c.set_block_table(&ctx, &table).unwrap();
            c
        } else {
            KvCache::new(&ctx, b, hkv, capacity, d, d, DType::F32).unwrap()
        };
        // Every row appended so far, per sequence and head.
        let mut full_k = vec![vec![Vec::new(); hkv]; b];
        let mut full_v = vec![vec![Vec::new(); hkv]; b];
        for (n, (rows, counts)) in appends.iter().enumerate() {
            let k = values(60 + n as u64, b * hkv * rows * d, 1.0);
            let v = values(70 + n as u64, b * hkv * rows * d, 1.0);
            let opts = AppendOptions {
                lengths: counts.map(|c| c.to_vec()),
                ..Default::default()
            };
            let shape = [b, hkv, *rows, d];
            cache
                .append_with(&ctx, &upload(&ctx, &k, &shape), &upload(&ctx, &v, &shape), &opts)
                .unwrap_or_else(|e| panic!("append {n} (paged {paged}): {e}"));
            for s in 0..b {
                let take = counts.map_or(*rows, |c| c[s] as usize);
                for h in 0..hkv {
                    let at = (s * hkv + h) * rows * d;
                    full_k[s][h].extend_from_slice(&k[at..at + take * d]);
                    full_v[s][h].extend_from_slice(&v[at..at + take * d]);
                }
            }
        }
        assert_eq!(cache.lengths(), &[10, 7], "paged {paged}");
        assert_eq!(cache.seqlens().to_vec_async::<u32>(&ctx).await.unwrap(), vec![10, 7]);
        // Paged K/V are read by the decode kernel only (Auto picks it).
        let runs: &[(KernelChoice, usize)] = match paged {
            true => &[(KernelChoice::Auto, 1), (KernelChoice::Auto, 3)],
            false => &[
                (KernelChoice::Auto, 1),
                (KernelChoice::Fused, 3),
                (KernelChoice::Staged, 3),
            ],
        };
        for &(kernel, lq) in runs {
            let q = values(80 + lq as u64, b * hq * lq * d, 1.0);
            let opts = AttentionOptions {
                causal: Some(Alignment::BottomRight),
                return_lse: true,
                kernel,
                ..Default::default()
            };
            let what = format!("kv cache (paged {paged}) {kernel:?} Lq={lq}");
            let got = cache
                .attend(&ctx, &upload(&ctx, &q, &[b, hq, lq, d]), &opts)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            console_log!("{what}: ran {:?}", got.kernel);
            if kernel != KernelChoice::Auto {
                assert_eq!(got.kernel, kernel, "{what}: ran another path");
            }
            let (mut out, mut lse) = (Vec::new(), Vec::new());
            for s in 0..b {
                let len = full_k[s][0].len() / d;
                let (k, v) = (full_k[s].concat(), full_v[s].concat());
                let qs = &q[s * hq * lq * d..(s + 1) * hq * lq * d];
                let r = reference::sdpa(&HostInputs::new(problem(1, hq, hkv, lq, len, d, d), qs, &k, &v), &opts);
                out.extend(r.out);
                lse.extend(r.lse);
            }
            assert_close(&what, &read(&ctx, &got.out).await, &out, Tolerance::F32);
            let got_lse = read(&ctx, got.lse.as_ref().unwrap()).await;
            assert_close(&format!("{what} LSE"), &got_lse, &lse, Tolerance::F32);
        }
    }
}

/// One backward case: the GPU forward for O and LSE, the GPU backward, the reference gradients.
struct GradCase {
    p: Problem,
    opts: AttentionOptions,
    bias: Option<[usize; 4]>,
    mask: Option<[usize; 4]>,
    key_lengths: Option<Vec<u32>>,
    /// `None`: the library's tile for this device.
    config: Option<BackwardConfig>,
}

/// dQ, dK, dV and dBias against the reference, held to the forward's tolerance (as the native
/// backward tests are).
async fn check_backward(c: &GradCase) {
    let ctx = ctx().await;
    let p = c.p;
    let what = format!("backward {p} {:?} config {:?}", c.opts.kernel, c.config);
    console_log!("case {what}");
    let [qs, ks, vs] = p.qkv_shapes();
    let q = values(90, qs.iter().product(), 1.0);
    let k = values(91, ks.iter().product(), 1.0);
    let v = values(92, vs.iter().product(), 1.0);
    let d_out = values(93, p.b * p.hq * p.lq * p.dv, 1.0);
    let bias = c.bias.map(|s| values(94, s.iter().product(), 1.0));
    let mask = c.mask.map(mask_pattern);
    let mut opts = c.opts.clone();
    opts.return_lse = true;
    opts.bias = bias.as_ref().zip(c.bias).map(|(b, s)| upload(&ctx, b, &s));
    opts.mask = mask
        .as_ref()
        .zip(c.mask)
        .map(|(m, s)| Tensor::from_slice(&ctx, m, &s).unwrap());
    opts.key_lengths = c
        .key_lengths
        .as_ref()
        .map(|l| Tensor::from_slice(&ctx, l, &[p.b]).unwrap());
    let (qt, kt, vt) = (upload(&ctx, &q, &qs), upload(&ctx, &k, &ks), upload(&ctx, &v, &vs));
    let forward = AttentionOptions {
        kernel: KernelChoice::Fused,
        ..opts.clone()
    };
    let fwd = attention(&ctx, &qt, &kt, &vt, &forward).unwrap_or_else(|e| panic!("{what}: forward: {e}"));
    let dot = upload(&ctx, &d_out, &[p.b, p.hq, p.lq, p.dv]);
    let bopts = BackwardOptions {
        config: c.config,
        ..Default::default()
    };
    let saved = [&fwd.out, &dot, fwd.lse.as_ref().unwrap()];
    let grads = AttentionBackward::with_options(&ctx, [&qt, &kt, &vt], saved, &opts, &bopts)
        .and_then(|b| b.run())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let inputs = HostInputs {
        bias: bias
            .as_deref()
            .zip(c.bias)
            .map(|(data, shape)| Broadcast { data, shape }),
        mask: mask
            .as_deref()
            .zip(c.mask)
            .map(|(data, shape)| Broadcast { data, shape }),
        key_lengths: c.key_lengths.as_deref(),
        ..HostInputs::new(p, &q, &k, &v)
    };
    let expected = reference::sdpa_backward(&inputs, &c.opts, &d_out).unwrap();
    for (name, got, want) in [
        ("dQ", &grads.dq, &expected.dq),
        ("dK", &grads.dk, &expected.dk),
        ("dV", &grads.dv, &expected.dv),
    ] {
        assert_close(&format!("{what}: {name}"), &read(&ctx, got).await, want, Tolerance::F32);
    }
    match (&grads.dbias, &expected.dbias) {
        (Some(got), Some(want)) => {
            assert_close(&format!("{what}: dBias"), &read(&ctx, got).await, want, Tolerance::F32)
        }
        (None, None) => {}
        (got, want) => panic!("{what}: dBias returned {}, expected {}", got.is_some(), want.is_some()),
    }
}

/// The backward pass: the fused kernels (a small tile and the device's default) and the staged
/// GEMMs, with GQA, both causal alignments, bias (dBias), masks with fully masked rows, key
/// lengths, soft cap and dropout.
#[wasm_bindgen_test]
async fn backward() {
    let cases = [
        GradCase {
            p: problem(1, 4, 2, 19, 23, 16, 16),
            opts: AttentionOptions {
                causal: Some(Alignment::BottomRight),
                ..Default::default()
            },
            bias: Some([1, 4, 19, 23]),
            mask: None,
            key_lengths: None,
            config: Some(BackwardConfig::new(8, 2)),
        },
        GradCase {
            p: problem(2, 2, 1, 9, 14, 8, 8),
            opts: AttentionOptions {
                causal: Some(Alignment::TopLeft),
                ..Default::default()
            },
            bias: None,
            mask: Some([2, 1, 9, 14]),
            key_lengths: Some(vec![14, 5]),
            config: None,
        },
        GradCase {
            p: problem(2, 2, 2, 9, 14, 8, 8),
            opts: AttentionOptions {
                kernel: KernelChoice::Staged,
                softcap: Some(1.5),
                dropout: Some(Dropout { p: 0.2, seed: 4 }),
                ..Default::default()
            },
            bias: Some([1, 2, 9, 14]),
            mask: None,
            key_lengths: Some(vec![3, 14]),
            config: None,
        },
    ];
    for c in &cases {
        check_backward(c).await;
    }
}

/// Offsets [0, l0, l0 + l1, …] of the lengths.
fn offsets(lens: &[u32]) -> Vec<u32> {
    let mut cu = vec![0];
    for &l in lens {
        cu.push(cu.last().unwrap() + l);
    }
    cu
}

/// Packed variable-length sequences (lengths 0, 1, primes; Lq > Lk and Lq < Lk) on every fused
/// design, against the reference run sequence by sequence.
#[wasm_bindgen_test]
async fn varlen_packed_sequences() {
    let ctx = ctx().await;
    let (lens_q, lens_k) = ([0u32, 1, 7, 13, 40, 2], [5u32, 1, 0, 9, 45, 3]);
    let (hq, hkv, dk, dv) = (4, 2, 16, 8);
    let (cu_q, cu_k) = (offsets(&lens_q), offsets(&lens_k));
    let (tq, tk) = (*cu_q.last().unwrap() as usize, *cu_k.last().unwrap() as usize);
    let q = values(100, tq * hq * dk, 1.0);
    let k = values(101, tk * hkv * dk, 1.0);
    let v = values(102, tk * hkv * dv, 1.0);
    let (qt, kt, vt) = (
        upload(&ctx, &q, &[tq, hq, dk]),
        upload(&ctx, &k, &[tk, hkv, dk]),
        upload(&ctx, &v, &[tk, hkv, dv]),
    );
    let seqs = Varlen::from_offsets(&ctx, &cu_q, &cu_k).unwrap();
    let variants = [
        AttentionOptions::default(),
        AttentionOptions {
            causal: Some(Alignment::BottomRight),
            ..Default::default()
        },
        AttentionOptions {
            causal: Some(Alignment::TopLeft),
            window: Some(Window::causal_local(3, Alignment::TopLeft)),
            softcap: Some(0.5),
            ..Default::default()
        },
    ];
    for design in wgpu_attention::available_designs(&ctx, DType::F32) {
        for base in &variants {
            let opts = AttentionOptions {
                design: Some(design),
                return_lse: true,
                ..base.clone()
            };
            let what = format!(
                "varlen {design} causal {:?} window {:?} softcap {:?}",
                opts.causal, opts.window, opts.softcap
            );
            let res = attention_varlen(&ctx, &qt, &kt, &vt, &seqs, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                res.design == Some(design) || res.design_note.is_some(),
                "{what}: ran {:?} without a note",
                res.design
            );
            assert_eq!(res.out.shape(), [tq, hq, dv]);
            let expected = reference::sdpa_varlen(
                &VarlenHostInputs {
                    hq,
                    hkv,
                    dk,
                    dv,
                    q: &q,
                    k: &k,
                    v: &v,
                    cu_seqlens_q: &cu_q,
                    cu_seqlens_k: &cu_k,
                },
                &opts,
            );
            assert_close(&what, &read(&ctx, &res.out).await, &expected.out, Tolerance::F32);
            let lse = read(&ctx, res.lse.as_ref().unwrap()).await;
            assert_close(&format!("{what} LSE"), &lse, &expected.lse, Tolerance::F32);
        }
    }
}

/// Invalid calls across the API each return their `Error` variant before any GPU work, and the
/// device serves a valid call afterwards.
#[wasm_bindgen_test]
async fn invalid_calls_return_their_errors() {
    let ctx = ctx().await;
    let z = |shape: &[usize]| Tensor::zeros(&ctx, shape, DType::F32).unwrap();
    let run = |q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions| {
        attention(&ctx, q, k, v, opts)
            .map(|_| ())
            .expect_err("expected an error")
    };
    let ok = z(&[2, 2, 4, 8]);
    let with = |f: fn(&mut AttentionOptions)| {
        let mut o = AttentionOptions::default();
        f(&mut o);
        o
    };

    let e = run(&z(&[2, 4, 8]), &ok, &ok, &Default::default());
    assert!(matches!(e, Error::Rank { name: "q", .. }), "{e}");
    let e = run(&z(&[2, 0, 4, 8]), &ok, &ok, &Default::default());
    assert!(matches!(e, Error::ZeroDim { name: "q", axis: 1, .. }), "{e}");
    let e = run(&ok, &z(&[2, 2, 4, 16]), &ok, &Default::default());
    assert!(matches!(e, Error::ShapeMismatch { name: "k", .. }), "{e}");
    let e = run(&ok, &ok, &z(&[2, 2, 5, 8]), &Default::default());
    assert!(matches!(e, Error::ShapeMismatch { name: "v", .. }), "{e}");
    let e = run(
        &z(&[1, 3, 4, 8]),
        &z(&[1, 2, 4, 8]),
        &z(&[1, 2, 4, 8]),
        &Default::default(),
    );
    assert!(matches!(e, Error::HeadRatio { hq: 3, hkv: 2 }), "{e}");
    // Masks and biases that do not broadcast to [B, Hq, Lq, Lk], or of the wrong type.
    for bad in [vec![4, 5], vec![3, 2, 4, 4], vec![1, 2, 4, 4, 1]] {
        let opts = AttentionOptions {
            mask: Some(Tensor::zeros(&ctx, &bad, DType::Bool).unwrap()),
            ..Default::default()
        };
        let e = run(&ok, &ok, &ok, &opts);
        assert!(matches!(e, Error::Broadcast { name: "mask", .. }), "{bad:?}: {e}");
        let opts = AttentionOptions {
            bias: Some(z(&bad)),
            ..Default::default()
        };
        let e = run(&ok, &ok, &ok, &opts);
        assert!(matches!(e, Error::Broadcast { name: "bias", .. }), "{bad:?}: {e}");
    }
    let opts = AttentionOptions {
        mask: Some(z(&[4, 4])),
        ..Default::default()
    };
    let e = run(&ok, &ok, &ok, &opts);
    assert!(matches!(e, Error::DType { name: "mask", .. }), "{e}");
    let opts = AttentionOptions {
        key_lengths: Some(Tensor::zeros(&ctx, &[3], DType::U32).unwrap()),
        ..Default::default()
    };
    let e = run(&ok, &ok, &ok, &opts);
    assert!(
        matches!(
            e,
            Error::ShapeMismatch {
                name: "key_lengths",
                ..
            }
        ),
        "{e}"
    );
    // Scalars out of range.
    for opts in [
        with(|o| o.scale = Some(f32::NAN)),
        with(|o| o.softcap = Some(-1.0)),
        with(|o| o.dropout = Some(Dropout { p: 1.0, seed: 0 })),
        with(|o| o.align_to_key_lengths = true),
    ] {
        let e = run(&ok, &ok, &ok, &opts);
        assert!(matches!(e, Error::InvalidOption { .. }), "{opts:?}: {e}");
    }
    // A head dim beyond the fused kernel's registers; weights on the fused path.
    let big = z(&[1, 1, 2, 4096]);
    let e = run(&big, &big, &big, &with(|o| o.kernel = KernelChoice::Fused));
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let e = run(
        &ok,
        &ok,
        &ok,
        &with(|o| {
            o.kernel = KernelChoice::Fused;
            o.return_weights = true;
        }),
    );
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // A fused tile that is not a multiple of 4, and one beyond the device's workgroup limits.
    for (cfg, limit) in [(FlashConfig::new(64, 9), false), (FlashConfig::new(4096, 1), true)] {
        let tuning = Tuning {
            flash: Some(cfg),
            ..Default::default()
        };
        let q = z(&[1, 1, 8, 64]);
        let e = Attention::with_tuning(&ctx, &q, &q, &q, &with(|o| o.kernel = KernelChoice::Fused), &tuning)
            .map(|_| ())
            .expect_err("bad tile");
        match limit {
            true => assert!(matches!(e, Error::Limit { .. }), "{cfg:?}: {e}"),
            false => assert!(matches!(e, Error::InvalidOption { .. }), "{cfg:?}: {e}"),
        }
    }
    // The output overlapping an input.
    let opts = AttentionOptions {
        out: Some(ok.clone()),
        ..Default::default()
    };
    let e = run(&ok, &z(&[2, 2, 4, 8]), &z(&[2, 2, 4, 8]), &opts);
    assert!(matches!(e, Error::Aliasing { input: "q", .. }), "{e}");

    // Varlen: decreasing offsets, totals past the packed rows, a GQA ratio that does not divide,
    // a kernel that does not read packed rows.
    let e = Varlen::from_offsets(&ctx, &[0, 5, 3], &[0, 1, 2]).unwrap_err();
    assert!(matches!(e, Error::SeqOffsets { .. }), "{e}");
    let (pq, pk) = (z(&[8, 2, 16]), z(&[6, 1, 16]));
    let long = Varlen::from_offsets(&ctx, &[0, 3, 9], &[0, 2, 6]).unwrap();
    let e = attention_varlen(&ctx, &pq, &pk, &pk, &long, &Default::default()).unwrap_err();
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
    let good = Varlen::from_offsets(&ctx, &[0, 3, 8], &[0, 2, 6]).unwrap();
    let kv2 = z(&[6, 2, 16]);
    let e = attention_varlen(&ctx, &z(&[8, 3, 16]), &kv2, &kv2, &good, &Default::default()).unwrap_err();
    assert!(matches!(e, Error::HeadRatio { hq: 3, hkv: 2 }), "{e}");
    let staged = with(|o| o.kernel = KernelChoice::Staged);
    let e = attention_varlen(&ctx, &pq, &pk, &pk, &good, &staged).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");

    // Backward: dO of the wrong shape; the decode kernel has no backward.
    let (q, kv) = (z(&[1, 2, 5, 8]), z(&[1, 1, 6, 8]));
    let (out, lse) = (z(&[1, 2, 5, 8]), z(&[1, 2, 5]));
    let e = AttentionBackward::new(&ctx, &q, &kv, &kv, &out, &z(&[1, 2, 5, 4]), &lse, &Default::default())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "d_out", .. }), "{e}");
    let decode = with(|o| o.kernel = KernelChoice::Decode);
    let e = AttentionBackward::new(&ctx, &q, &kv, &kv, &out, &out, &lse, &decode)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");

    // KV cache: new rows of the wrong heads, an append past the capacity (nothing written), a
    // paged cache on a kernel that does not read pages.
    let mut cache = KvCache::new(&ctx, 2, 2, 4, 8, 8, DType::F32).unwrap();
    let rows = |l: usize| z(&[2, 2, l, 8]);
    let e = cache.append(&ctx, &z(&[2, 1, 3, 8]), &rows(3)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "k_new", .. }), "{e}");
    cache.append(&ctx, &rows(3), &rows(3)).unwrap();
    let e = cache.append(&ctx, &rows(2), &rows(2)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CacheFull {
                capacity: 4,
                length: 3,
                appended: 2,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(cache.seqlens().to_vec_async::<u32>(&ctx).await.unwrap(), vec![3, 3]);
    let layout = PagedLayout {
        pages: 4,
        page_size: 2,
        pages_per_seq: 2,
    };
    let mut paged = KvCache::new_paged(&ctx, 2, 2, layout, 8, 8, DType::F32).unwrap();
    paged.append(&ctx, &rows(1), &rows(1)).unwrap();
    let e = paged
        .attend(&ctx, &z(&[2, 2, 1, 8]), &with(|o| o.kernel = KernelChoice::Fused))
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");

    // Family: additive scores take no scale; MHA heads must divide.
    let x = z(&[1, 2, 3, 4]);
    let additive = score::AdditiveWeights {
        w_q: z(&[5, 4]),
        w_k: z(&[5, 4]),
        bias: None,
        v: z(&[5]),
    };
    let e = score::additive(&ctx, &x, &x, &x, &additive, &with(|o| o.scale = Some(0.5)))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOption { name: "scale", .. }), "{e}");
    let lin = |shape: &[usize]| mha::Linear {
        weight: z(shape),
        bias: None,
    };
    let weights = mha::MhaWeights {
        q: lin(&[8, 4]),
        k: lin(&[8, 4]),
        v: lin(&[8, 4]),
        out: lin(&[4, 8]),
    };
    let e = mha::MultiHeadAttention::new(weights, 3, 2).map(|_| ()).unwrap_err();
    assert!(matches!(e, Error::HeadRatio { .. }), "{e}");

    // Nothing above reached the device: it reports no error and still computes.
    ctx.wait_async().await.unwrap();
    let q = values(110, 2 * 2 * 4 * 8, 1.0);
    let qt = upload(&ctx, &q, &[2, 2, 4, 8]);
    let res = attention(&ctx, &qt, &qt, &qt, &Default::default()).unwrap();
    let expected = reference::sdpa(
        &HostInputs::new(problem(2, 2, 2, 4, 4, 8, 8), &q, &q, &q),
        &Default::default(),
    );
    assert_close(
        "after the refusals",
        &read(&ctx, &res.out).await,
        &expected.out,
        Tolerance::F32,
    );
}

/// The numeric policy (docs/ATTENTION.md, "Numbers at the edges"): ±∞ and NaN in every input,
/// fully masked rows, overflowing scores, extreme biases and soft caps, huge key lengths. The
/// cases and the oracle are the native test's (tests/common/numeric_policy.rs); here they run on
/// every fused design and the staged path.
#[wasm_bindgen_test]
async fn numeric_policy() {
    let ctx = ctx().await;
    let mut kernels: Vec<(String, KernelChoice, Option<wgpu_attention::Design>)> =
        wgpu_attention::available_designs(&ctx, DType::F32)
            .into_iter()
            .map(|d| (format!("fused/{d}"), KernelChoice::Fused, Some(d)))
            .collect();
    kernels.push(("staged".into(), KernelChoice::Staged, None));
    let mut dtypes = vec![DType::F32];
    if ctx.features().contains(wgpu::Features::SHADER_F16) {
        dtypes.push(DType::F16);
    } else {
        skip("numeric_policy (f16)", "f16", "the adapter lacks SHADER_F16");
    }
    let upload_as = |x: &[f32], shape: &[usize], dtype: DType| match dtype {
        DType::F16 => {
            let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            Tensor::from_slice(&ctx, &h, shape).unwrap()
        }
        _ => Tensor::from_slice(&ctx, x, shape).unwrap(),
    };
    let [qs, ks, vs] = numeric_policy::P.qkv_shapes();
    let shape = numeric_policy::BIAS_SHAPE;
    let mut failures = Vec::new();
    let mut runs = 0;
    for &dtype in &dtypes {
        for case in numeric_policy::cases() {
            if dtype == DType::F16 && !case.f16 {
                continue;
            }
            let numeric_policy::Prepared {
                x,
                mut opts,
                expected,
                failures: oracle,
            } = numeric_policy::prepare(&case, dtype);
            failures.extend(oracle);
            opts.bias = x.bias.as_ref().map(|b| upload_as(b, &shape, dtype));
            opts.mask = x.mask.as_ref().map(|m| Tensor::from_slice(&ctx, m, &shape).unwrap());
            opts.key_lengths = x
                .key_lengths
                .as_ref()
                .map(|l| Tensor::from_slice(&ctx, l, &[1]).unwrap());
            let (q, k, v) = (
                upload_as(&x.q, &qs, dtype),
                upload_as(&x.k, &ks, dtype),
                upload_as(&x.v, &vs, dtype),
            );
            for (name, kernel, design) in &kernels {
                let opts = AttentionOptions {
                    kernel: *kernel,
                    design: *design,
                    ..opts.clone()
                };
                let label = format!("{} [{name}, {}]", case.name, dtype.name());
                let gpu = match attention(&ctx, &q, &k, &v, &opts) {
                    Ok(gpu) => gpu,
                    Err(e) => {
                        failures.push(format!("{label}: {e}"));
                        continue;
                    }
                };
                let out = read(&ctx, &gpu.out).await;
                let lse = gpu.lse.unwrap().to_vec_async::<f32>(&ctx).await.unwrap();
                failures.extend(numeric_policy::compare_kernel(&label, &out, &lse, &expected, dtype));
                runs += 1;
            }
        }
    }
    console_log!("numeric policy: {runs} runs, {} failure(s)", failures.len());
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
