//! The library in a browser: WebGPU (in CI, headless Chromium's SwiftShader) against the CPU
//! reference compiled to wasm too. Run with `scripts/test-browser.sh`.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};
use wgpu_attention::pipeline::Kernel;
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::wgpu;
use wgpu_attention::{attention, Alignment, AttentionOptions, Context, DType, Error, KernelChoice, Problem, Tensor};

wasm_bindgen_test_configure!(run_in_browser);

#[path = "common/variants.rs"]
mod variants;

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

/// Runs one call on the GPU and on the reference and compares O, LSE and (staged) P.
async fn check(p: Problem, kernel: KernelChoice, mut opts: AttentionOptions, extras: &Extras) {
    let ctx = ctx().await;
    console_log!("case {p} {kernel:?} causal {:?} {extras:?}", opts.causal);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = values(1, qs.iter().product(), 1.0);
    let k = values(2, ks.iter().product(), 1.0);
    let v = values(3, vs.iter().product(), 1.0);
    let bias = extras.bias.map(|s| values(4, s.iter().product(), 2.0));
    // About one key in three masked, and row 0 of every (b, h) fully masked.
    let mask: Option<Vec<bool>> = extras.mask.map(|s| {
        let (lq, lk) = (s[2], s[3]);
        (0..s.iter().product::<usize>())
            .map(|e| (e / lk) % lq != 0 && (e * 7 + e / lk) % 3 != 0)
            .collect()
    });
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

/// f16 needs `SHADER_F16`, which SwiftShader lacks: then the call must say so, and the log says
/// that f16 was not checked on this adapter.
#[wasm_bindgen_test]
async fn f16_or_its_absence() {
    let ctx = ctx().await;
    let p = problem(1, 2, 2, 8, 8, 16, 16);
    let [qs, ..] = p.qkv_shapes();
    let data: Vec<half::f16> = values(5, qs.iter().product(), 1.0)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let q = Tensor::from_slice(&ctx, &data, &qs).unwrap();
    let res = attention(&ctx, &q, &q, &q, &AttentionOptions::default());
    if ctx.features().contains(wgpu_attention::wgpu::Features::SHADER_F16) {
        let out = res.unwrap().out.to_f32_vec_async(&ctx).await.unwrap();
        assert!(out.iter().all(|x| x.is_finite()));
        console_log!("f16: adapter has SHADER_F16, an f16 call ran");
    } else {
        let err = res.unwrap_err();
        assert!(matches!(err, Error::MissingFeature { .. }), "{err}");
        console_log!("f16: NOT CHECKED, the adapter lacks SHADER_F16 (the call was refused: {err})");
    }
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
    let (mut compiled, mut skipped, mut failures) = (0, 0, Vec::new());
    for source in variants::all() {
        let needs_subgroups =
            source.kernel == Kernel::FlashDecodeLanes || source.variant.is_some_and(|v| v.subgroup > 0);
        if (source.dtype == DType::F16 && !f16) || (needs_subgroups && !subgroups) {
            skipped += 1;
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
