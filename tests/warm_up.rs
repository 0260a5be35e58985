//! `Attention::warm_up` compiles exactly the pipelines a call will use: after it, the real call
//! finds every pipeline in the context's cache.

use wgpu_attention::{Alignment, Attention, AttentionOptions, Context, DType, KernelChoice, Problem, Tensor};

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
