//! Every validation path returns a structured error before any GPU work, never a panic.

mod common;
use common::skip::Cap;
use common::*;
use wgpu_attention::{
    attention, Alignment, Attention, AttentionOptions, Context, DType, Error, FlashConfig, KernelChoice, Tensor, Tuning,
};

fn t(shape: &[usize]) -> Tensor {
    Tensor::zeros(ctx(), shape, DType::F32).unwrap()
}

fn run(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Error {
    attention(ctx(), q, k, v, opts).expect_err("expected an error")
}

#[test]
fn rank_and_zero_dims() {
    let ok = t(&[1, 2, 4, 8]);
    assert!(matches!(
        run(&t(&[2, 4, 8]), &ok, &ok, &Default::default()),
        Error::Rank { name: "q", .. }
    ));
    assert!(matches!(
        run(&ok, &ok, &t(&[1, 2, 4, 8, 1]), &Default::default()),
        Error::Rank { name: "v", .. }
    ));
    let e = run(&t(&[1, 0, 4, 8]), &ok, &ok, &Default::default());
    assert!(matches!(e, Error::ZeroDim { name: "q", axis: 1, .. }), "{e}");
    // Lk = 0 is a valid (fully masked) problem, so K and V must agree on it.
    assert!(matches!(
        run(&ok, &t(&[1, 2, 0, 8]), &ok, &Default::default()),
        Error::ShapeMismatch { name: "v", .. }
    ));
    assert!(matches!(
        run(&ok, &t(&[1, 2, 4, 0]), &ok, &Default::default()),
        Error::ZeroDim { name: "k", axis: 3, .. }
    ));
}

#[test]
fn shape_mismatches_name_both_shapes() {
    let q = t(&[1, 2, 4, 8]);
    let e = run(&q, &t(&[1, 2, 4, 16]), &t(&[1, 2, 4, 8]), &Default::default());
    assert!(matches!(&e, Error::ShapeMismatch { name: "k", .. }), "{e}");
    assert!(e.to_string().contains("[1, 2, 4, 16]"), "{e}");
    let e = run(&q, &t(&[1, 2, 4, 8]), &t(&[1, 2, 5, 8]), &Default::default());
    assert!(matches!(e, Error::ShapeMismatch { name: "v", .. }), "{e}");
    let e = run(&q, &t(&[2, 2, 4, 8]), &t(&[2, 2, 4, 8]), &Default::default());
    assert!(matches!(e, Error::ShapeMismatch { name: "k", .. }), "{e}");
}

#[test]
fn head_ratio() {
    let e = run(
        &t(&[1, 3, 4, 8]),
        &t(&[1, 2, 4, 8]),
        &t(&[1, 2, 4, 8]),
        &Default::default(),
    );
    assert!(matches!(e, Error::HeadRatio { hq: 3, hkv: 2 }), "{e}");
}

#[test]
fn dtypes() {
    let ctx = ctx();
    let ok = t(&[1, 1, 4, 8]);
    let u = Tensor::zeros(ctx, &[1, 1, 4, 8], DType::U32).unwrap();
    assert!(matches!(
        run(&u, &ok, &ok, &Default::default()),
        Error::DType { name: "q", .. }
    ));
    if common::skip::has_for(Cap::F16, "an f16 K beside f32 Q") {
        let h = Tensor::zeros(ctx, &[1, 1, 4, 8], DType::F16).unwrap();
        assert!(matches!(
            run(&ok, &h, &ok, &Default::default()),
            Error::DType { name: "k", .. }
        ));
    }
    let opts = AttentionOptions {
        mask: Some(t(&[4, 4])),
        ..Default::default()
    };
    assert!(matches!(run(&ok, &ok, &ok, &opts), Error::DType { name: "mask", .. }));
    let opts = AttentionOptions {
        key_lengths: Some(t(&[1])),
        ..Default::default()
    };
    assert!(matches!(
        run(&ok, &ok, &ok, &opts),
        Error::DType {
            name: "key_lengths",
            ..
        }
    ));
    let opts = AttentionOptions {
        bias: Some(Tensor::zeros(ctx, &[4, 4], DType::Bool).unwrap()),
        ..Default::default()
    };
    assert!(matches!(run(&ok, &ok, &ok, &opts), Error::DType { name: "bias", .. }));
}

#[test]
fn broadcast_shapes() {
    let ok = t(&[2, 2, 4, 8]);
    for bad in [
        vec![4, 5],
        vec![3, 2, 4, 4],
        vec![2, 3, 4, 4],
        vec![4],
        vec![1, 2, 4, 4, 1],
    ] {
        let opts = AttentionOptions {
            bias: Some(t(&bad)),
            ..Default::default()
        };
        let e = run(&ok, &ok, &ok, &opts);
        assert!(matches!(e, Error::Broadcast { name: "bias", .. }), "{bad:?}: {e}");
        let opts = AttentionOptions {
            mask: Some(Tensor::zeros(ctx(), &bad, DType::Bool).unwrap()),
            ..Default::default()
        };
        assert!(
            matches!(run(&ok, &ok, &ok, &opts), Error::Broadcast { name: "mask", .. }),
            "{bad:?}"
        );
    }
    let opts = AttentionOptions {
        key_lengths: Some(Tensor::zeros(ctx(), &[3], DType::U32).unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        run(&ok, &ok, &ok, &opts),
        Error::ShapeMismatch {
            name: "key_lengths",
            ..
        }
    ));
}

#[test]
fn scalar_ranges() {
    let ok = t(&[1, 1, 4, 8]);
    for (scale, softcap) in [
        (Some(f32::NAN), None),
        (Some(f32::INFINITY), None),
        (None, Some(0.0)),
        (None, Some(-1.0)),
        (None, Some(f32::NAN)),
    ] {
        let opts = AttentionOptions {
            scale,
            softcap,
            ..Default::default()
        };
        assert!(
            matches!(run(&ok, &ok, &ok, &opts), Error::InvalidOption { .. }),
            "{scale:?} {softcap:?}"
        );
    }
}

#[test]
fn weights_need_the_staged_path() {
    let ok = t(&[1, 1, 4, 8]);
    let opts = AttentionOptions {
        return_weights: true,
        kernel: KernelChoice::Fused,
        ..Default::default()
    };
    assert!(matches!(run(&ok, &ok, &ok, &opts), Error::Unsupported(_)));
}

#[test]
fn strides_and_buffers() {
    let ctx = ctx();
    let base = t(&[1, 1, 4, 8]);
    // Last dim not contiguous.
    let strided = base.clone().with_strides(&[32, 32, 1, 4]).unwrap();
    let e = run(&strided, &base, &base, &Default::default());
    assert!(matches!(e, Error::Strides { name: "q", .. }), "{e}");
    // Strides reaching past the buffer.
    assert!(matches!(
        base.clone().with_strides(&[64, 64, 16, 1]),
        Err(Error::BufferTooSmall { .. })
    ));
    // A caller's buffer too small, misaligned offset, and missing STORAGE usage.
    let small = ctx.device().create_buffer(&wgpu_attention::wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu_attention::wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    assert!(matches!(
        Tensor::from_buffer(&small, 0, &[1, 1, 4, 8], DType::F32),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        Tensor::from_buffer(&small, 2, &[1, 1, 2, 2], DType::F32),
        Err(Error::Misaligned { .. })
    ));
    let no_storage = ctx.device().create_buffer(&wgpu_attention::wgpu::BufferDescriptor {
        label: None,
        size: 128,
        usage: wgpu_attention::wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let q = Tensor::from_buffer(&no_storage, 0, &[1, 1, 4, 8], DType::F32).unwrap();
    assert!(matches!(
        run(&q, &base, &base, &Default::default()),
        Error::BufferUsage { name: "q", .. }
    ));
    // Reading back a buffer without COPY_SRC.
    assert!(matches!(q.to_vec::<f32>(ctx), Err(Error::BufferUsage { .. })));
    assert!(matches!(base.to_vec::<u32>(ctx), Err(Error::DType { .. })));
    // Host data of the wrong length.
    assert!(matches!(
        Tensor::from_slice(ctx, &[1.0f32; 5], &[2, 3]),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn device_limits() {
    let ctx = ctx();
    // A head dim beyond the fused kernel's register tile.
    let d = 4096;
    let big = t(&[1, 1, 2, d]);
    let opts = AttentionOptions {
        kernel: KernelChoice::Fused,
        ..Default::default()
    };
    let e = run(&big, &big, &big, &opts);
    assert!(matches!(&e, Error::Unsupported(_)), "{e}");
    // The staged path takes any head dim.
    let staged = AttentionOptions {
        kernel: KernelChoice::Staged,
        ..Default::default()
    };
    assert!(attention(ctx, &big, &big, &big, &staged).is_ok());
    // A tile configuration too big for the device, and one that is not a multiple of 4.
    let q = t(&[1, 1, 8, 64]);
    for (cfg, want_limit) in [
        (FlashConfig::new(4096, 1), true),
        (FlashConfig::new(64, 9), false),
        (FlashConfig::new(64, 0), false),
    ] {
        let tuning = Tuning {
            flash: Some(cfg),
            ..Default::default()
        };
        let e = Attention::with_tuning(ctx, &q, &q, &q, &opts, &tuning).expect_err("bad tile");
        if want_limit {
            assert!(matches!(e, Error::Limit { .. }), "{cfg:?}: {e}");
        } else {
            assert!(matches!(e, Error::InvalidOption { .. }), "{cfg:?}: {e}");
        }
    }
    // The staged score matrix of one head larger than a storage binding.
    let max = ctx.limits().max_storage_buffer_binding_size;
    let l = ((max / 4) as f64).sqrt() as usize + 64;
    let q = t(&[1, 1, l, 8]);
    let staged = AttentionOptions {
        kernel: KernelChoice::Staged,
        ..Default::default()
    };
    let e = run(&q, &q, &q, &staged);
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
    assert!(e.to_string().contains("fused"), "{e}");
}

/// Scores of all heads together exceed a storage binding; each chunk of heads fits. On a device
/// whose bindings are lowered to 3 heads' scores, so the chunking runs on every adapter.
#[test]
fn staged_chunks_heads_when_scores_exceed_one_binding() {
    let l = 96usize;
    let scores_per_head = (l * l * 4) as u64;
    let (device, queue) = common::borrowed_device(|limits| wgpu_attention::wgpu::Limits {
        max_storage_buffer_binding_size: 3 * scores_per_head,
        ..limits
    });
    let ctx = Context::from_device(&device, &queue);
    let p = problem(1, 7, 1, l, l, 8, 8);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let opts = AttentionOptions {
        kernel: KernelChoice::Staged,
        causal: Some(Alignment::TopLeft),
        return_lse: true,
        ..Default::default()
    };
    assert!(p.b as u64 * p.hq as u64 * scores_per_head > ctx.limits().max_storage_buffer_binding_size);
    let up = |x: &[f32], shape: [usize; 4]| Tensor::from_slice(&ctx, x, &shape).unwrap();
    let res = attention(&ctx, &up(&q, qs), &up(&k, ks), &up(&v, vs), &opts).unwrap();
    let expected = wgpu_attention::reference::sdpa(&wgpu_attention::reference::HostInputs::new(p, &q, &k, &v), &opts);
    let tol = wgpu_attention::reference::Tolerance::F32;
    let out = wgpu_attention::reference::compare(&res.out.to_vec::<f32>(&ctx).unwrap(), &expected.out, tol);
    assert!(out.ok(), "O: {out}");
    let lse = res.lse.unwrap().to_vec::<f32>(&ctx).unwrap();
    let lse = wgpu_attention::reference::compare(&lse, &expected.lse, tol);
    assert!(lse.ok(), "LSE: {lse}");
}

#[test]
fn borrowed_device_reports_errors_without_a_global_handler() {
    // A device created here, lent to the crate: our errors come back as values.
    let instance = common::instance();
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&Default::default())).unwrap();
    let ctx = Context::from_device(&device, &queue);
    // The adapter is read from the device: same defaults and tuning cache as `Context::new`.
    assert_eq!(
        ctx.info().adapter.as_ref().map(|a| a.name.clone()),
        Some(adapter.get_info().name)
    );
    let q = Tensor::zeros(&ctx, &[1, 1, 4, 8], DType::F32).unwrap();
    let bad = Tensor::zeros(&ctx, &[1, 1, 4, 9], DType::F32).unwrap();
    assert!(attention(&ctx, &q, &bad, &bad, &Default::default()).is_err());
    let ok = attention(&ctx, &q, &q, &q, &Default::default()).unwrap();
    assert_eq!(ok.out.to_vec::<f32>(&ctx).unwrap(), vec![0.0; 32]);
}

#[test]
fn an_output_overlapping_an_input_is_refused() {
    let ctx = ctx();
    let n = 2 * 8 * 4;
    // Q, K, V packed in one buffer, then views of it as the output.
    let qkv = Tensor::from_slice(ctx, &vec![0.5f32; 3 * n], &[3 * n]).unwrap();
    let view = |elements: usize| qkv.view(elements, &[1, 2, 8, 4], &[64, 32, 4, 1]).unwrap();
    let (q, k, v) = (view(0), view(n), view(2 * n));
    for (out, input) in [(view(0), "q"), (view(2 * n), "v"), (view(2 * n - 32), "k")] {
        let opts = AttentionOptions {
            out: Some(out),
            ..Default::default()
        };
        let e = run(&q, &k, &v, &opts);
        assert!(
            matches!(e, Error::Aliasing { output: "out", input: i } if i == input),
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
    // A mask in the same buffer as the output, but elsewhere, is fine; overlapping is not.
    let other = Tensor::zeros(ctx, &[2 * n], DType::F32).unwrap();
    let out = other.view(0, &[1, 2, 8, 4], &[64, 32, 4, 1]).unwrap();
    let opts = AttentionOptions {
        out: Some(out.clone()),
        ..Default::default()
    };
    attention(ctx, &q, &k, &v, &opts).unwrap();
    let bias = other.view(n - 8, &[1, 1, 8, 8], &[0, 0, 8, 1]).unwrap();
    let e = run(
        &q,
        &k,
        &v,
        &AttentionOptions {
            out: Some(out),
            bias: Some(bias),
            ..Default::default()
        },
    );
    assert!(matches!(e, Error::Aliasing { input: "bias", .. }), "{e}");
}
