//! `Attention::warm_up` compiles exactly the pipelines a call will use: after it, the real call
//! finds every pipeline in the context's cache. On CPU adapters first calls run quick code until
//! warm-up compiles the fast code (`PipelineCache::set_quick_first_calls`); both agree.

mod common;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wgpu_attention::{
    attention, attention_backward, Alignment, Attention, AttentionBackward, AttentionOptions, BackwardOptions, Context,
    DType, KernelChoice, Problem, Tensor,
};

fn real_call(ctx: &Context, p: &Problem, dtype: DType, opts: &AttentionOptions) {
    let [qs, ks, vs] = p.qkv_shapes();
    let t = |shape: &[usize]| Tensor::zeros(ctx, shape, dtype).unwrap();
    let mut opts = opts.clone();
    if opts.mask.is_some() {
        opts.mask = Some(Tensor::from_slice(ctx, &vec![true; p.lq * p.lk], &[1, 1, p.lq, p.lk]).unwrap());
    }
    if opts.key_lengths.is_some() {
        opts.key_lengths = Some(Tensor::from_slice(ctx, &vec![p.lk as u32; p.b], &[p.b]).unwrap());
    }
    Attention::new(ctx, &t(&qs), &t(&ks), &t(&vs), &opts)
        .unwrap()
        .submit()
        .unwrap();
}

#[test]
fn warm_up_compiles_every_pipeline_of_the_call() {
    // Each case on a context of its own (a borrowed device starts with an empty pipeline
    // cache), so warm-up must compile every pipeline of the call itself.
    let owned = Context::new().unwrap();
    let (device, queue) = (owned.device(), owned.queue());
    let decode = Problem {
        b: 2,
        hq: 8,
        hkv: 2,
        lq: 1,
        lk: 300,
        dk: 64,
        dv: 64,
    };
    let prefill = Problem {
        b: 1,
        hq: 2,
        hkv: 2,
        lq: 77,
        lk: 77,
        dk: 32,
        dv: 16,
    };
    let marker = Tensor::zeros(&owned, &[1], DType::F32).unwrap();
    let lengths = Tensor::from_slice(&owned, &[1u32], &[1]).unwrap();
    let cases = [
        (decode, AttentionOptions::default()),
        (
            decode,
            AttentionOptions {
                causal: Some(Alignment::BottomRight),
                key_lengths: Some(lengths),
                ..Default::default()
            },
        ),
        (
            prefill,
            AttentionOptions {
                kernel: KernelChoice::Staged,
                mask: Some(marker.clone()),
                return_lse: true,
                ..Default::default()
            },
        ),
        (
            prefill,
            AttentionOptions {
                softcap: Some(30.0),
                causal: Some(Alignment::TopLeft),
                ..Default::default()
            },
        ),
    ];
    for (p, opts) in &cases {
        let ctx = Context::from_device(device, queue);
        assert_eq!(ctx.pipelines().len(), 0);
        Attention::warm_up(&ctx, p, DType::F32, opts).unwrap();
        let warmed = ctx.pipelines().len();
        assert!(warmed > 0, "{p}: warm-up compiled nothing");
        real_call(&ctx, p, DType::F32, opts);
        assert_eq!(
            ctx.pipelines().len(),
            warmed,
            "{p} {:?}: the call compiled a pipeline warm-up missed",
            opts.kernel
        );
    }
}

/// Largest |a − b| relative to the largest |b| (both finite).
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-30);
    let gap = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(gap.is_finite(), "a non-finite gradient or output");
    gap / scale
}

#[test]
fn first_calls_run_quick_code_until_warm_up_compiles_the_fast_code() {
    let owned = Context::new().unwrap();
    // No persisted pipeline cache: fast code another process compiled must not count as compiled.
    let info = owned
        .info()
        .adapter
        .clone()
        .expect("an owned context knows its adapter");
    let ctx = Context::from_device_with_adapter_info(owned.device(), owned.queue(), info);
    let cpu = ctx
        .info()
        .adapter
        .as_ref()
        .is_some_and(|a| a.device_type == wgpu_attention::wgpu::DeviceType::Cpu);
    assert!(ctx.pipelines().quick_first_calls(), "quick first calls are the default");
    let p = common::problem(1, 4, 2, 70, 90, 8, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let [qs, ks, vs] = p.qkv_shapes();
    let t = |shape: &[usize], rng: &mut ChaCha8Rng| {
        let n = shape.iter().product();
        Tensor::from_slice(&ctx, &common::random(rng, n, 1.0), shape).unwrap()
    };
    let (q, k, v) = (t(&qs, &mut rng), t(&ks, &mut rng), t(&vs, &mut rng));
    let d_out = t(&[p.b, p.hq, p.lq, p.dv], &mut rng);
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        return_lse: true,
        ..Default::default()
    };
    let call = |ctx: &Context| {
        let fwd = attention(ctx, &q, &k, &v, &opts).unwrap();
        let lse = fwd.lse.as_ref().unwrap();
        let grads = attention_backward(ctx, &q, &k, &v, &fwd.out, &d_out, lse, &opts).unwrap();
        let read = |t: &Tensor| t.to_vec::<f32>(ctx).unwrap();
        [read(&fwd.out), read(&grads.dq), read(&grads.dk), read(&grads.dv)]
    };
    let first = call(&ctx);
    let after_first = ctx.pipelines().len();
    Attention::warm_up(&ctx, &p, DType::F32, &opts).unwrap();
    AttentionBackward::warm_up(&ctx, &p, DType::F32, &opts, &BackwardOptions::default()).unwrap();
    let warmed = ctx.pipelines().len();
    if cpu {
        // The forward's and the backward's fast code: new pipelines.
        assert!(
            warmed >= after_first + 3,
            "warm-up compiled {} pipelines",
            warmed - after_first
        );
    } else {
        assert_eq!(
            warmed, after_first,
            "first calls ran the fast code on a GPU: warm-up has nothing left"
        );
    }
    let fast = call(&ctx);
    assert_eq!(ctx.pipelines().len(), warmed, "a call after warm-up compiled more code");
    for (name, (a, b)) in ["out", "dq", "dk", "dv"].iter().zip(first.iter().zip(&fast)) {
        let gap = relative_gap(a, b);
        assert!(gap <= 1e-5, "{name}: quick and fast code differ by {gap:e} (relative)");
    }
}

#[test]
fn explicit_policy_off_compiles_the_fast_code_at_once() {
    let owned = Context::new().unwrap();
    let ctx = Context::from_device(owned.device(), owned.queue());
    ctx.pipelines().set_quick_first_calls(false);
    let p = common::problem(1, 2, 2, 40, 40, 16, 16);
    let opts = AttentionOptions::default();
    let [qs, ks, vs] = p.qkv_shapes();
    let z = |shape: &[usize]| Tensor::zeros(&ctx, shape, DType::F32).unwrap();
    Attention::new(&ctx, &z(&qs), &z(&ks), &z(&vs), &opts)
        .unwrap()
        .submit()
        .unwrap();
    let first = ctx.pipelines().len();
    Attention::warm_up(&ctx, &p, DType::F32, &opts).unwrap();
    assert_eq!(
        ctx.pipelines().len(),
        first,
        "with the policy off the first call ran the fast code"
    );
}
