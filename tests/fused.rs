//! The fused single-pass kernel against the CPU reference.

mod common;
use common::*;
use wgpu_attention::{Alignment, KernelChoice};

fn fused(p: wgpu_attention::Problem) -> Case {
    Case::new(p).kernel(KernelChoice::Fused)
}

#[test]
fn plain_shapes() {
    check_all([
        fused(problem(1, 1, 1, 1, 1, 8, 8)),
        fused(problem(1, 2, 2, 17, 17, 16, 16)),
        fused(problem(2, 3, 3, 5, 67, 24, 40)),
        fused(problem(1, 2, 1, 70, 13, 8, 64)),
        fused(problem(1, 8, 8, 64, 64, 64, 64)),
    ]);
}

#[test]
fn causal() {
    check_all([
        fused(problem(1, 2, 2, 37, 37, 16, 16)).opts(|o| o.causal = Some(Alignment::TopLeft)),
        fused(problem(1, 2, 2, 13, 70, 16, 16)).opts(|o| o.causal = Some(Alignment::BottomRight)),
        fused(problem(1, 2, 2, 70, 13, 16, 16)).opts(|o| o.causal = Some(Alignment::BottomRight)),
        fused(problem(1, 2, 2, 70, 13, 16, 16)).opts(|o| o.causal = Some(Alignment::TopLeft)),
    ]);
}

/// A device whose storage bindings are tiny: the fused kernel must split the (b, h) pairs into
/// chunks that each bind a window of every tensor, and still match the reference.
#[test]
fn tensors_larger_than_one_binding_are_chunked() {
    use wgpu_attention::{attention, wgpu, AttentionOptions, Context, DType, Error, Tensor};
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
    assert_eq!(ctx.limits().max_storage_buffer_binding_size, 16 << 10);

    let p = problem(3, 4, 2, 37, 45, 16, 24);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(77);
    let [qs, ks, vs] = p.qkv_shapes();
    let (qd, kd, vd) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let bias_shape = [p.b, p.hq, p.lq, p.lk]; // 6.5 KiB per head: 2 heads per chunk at most
    let bias = random(&mut rng, bias_shape.iter().product(), 1.0);
    let mask: Vec<bool> = (0..p.b * p.lq * p.lk).map(|i| i % 7 != 3).collect();
    // Q, K, V packed at odd offsets in one buffer far larger than a binding.
    let mut packed = vec![0.0f32; 5];
    let mut at = Vec::new();
    for d in [&qd, &kd, &vd] {
        at.push(packed.len());
        packed.extend_from_slice(d);
        packed.extend_from_slice(&[0.0; 3]);
    }
    let buf = Tensor::from_slice(&ctx, &packed, &[packed.len()]).unwrap();
    assert!(buf.buffer().size() > (16 << 10) as u64);
    let view = |i: usize, s: [usize; 4]| Tensor::from_buffer(buf.buffer(), 4 * at[i] as u64, &s, DType::F32).unwrap();
    let opts = AttentionOptions {
        kernel: KernelChoice::Fused,
        causal: Some(Alignment::BottomRight),
        bias: Some(Tensor::from_slice(&ctx, &bias, &bias_shape).unwrap()),
        mask: Some(Tensor::from_slice(&ctx, &mask, &[p.b, 1, p.lq, p.lk]).unwrap()),
        return_lse: true,
        ..Default::default()
    };
    // On every fused design the device has: each binds the same operand windows.
    for design in wgpu_attention::available_designs(&ctx, DType::F32) {
        let opts = AttentionOptions {
            design: Some(design),
            ..opts.clone()
        };
        let res = attention(&ctx, &view(0, qs), &view(1, ks), &view(2, vs), &opts).unwrap();
        assert_eq!(res.design, Some(design));
        let expected = wgpu_attention::reference::sdpa(
            &wgpu_attention::reference::HostInputs {
                problem: p,
                q: &qd,
                k: &kd,
                v: &vd,
                bias: Some(wgpu_attention::reference::Broadcast {
                    data: &bias,
                    shape: bias_shape,
                }),
                mask: Some(wgpu_attention::reference::Broadcast {
                    data: &mask,
                    shape: [p.b, 1, p.lq, p.lk],
                }),
                key_lengths: None,
                score: Default::default(),
                local: None,
            },
            &opts,
        );
        let tol = wgpu_attention::reference::Tolerance::F32;
        let c = wgpu_attention::reference::compare(&res.out.to_vec::<f32>(&ctx).unwrap(), &expected.out, tol);
        assert!(c.ok(), "{design}: O: {c}");
        let lse = res.lse.unwrap().to_vec::<f32>(&ctx).unwrap();
        let c = wgpu_attention::reference::compare(&lse, &expected.lse, tol);
        assert!(c.ok(), "{design}: LSE: {c}");
    }

    // One head alone larger than a binding: a clear error naming the limit.
    let big = Tensor::zeros(&ctx, &[1, 1, 1024, 8], DType::F32).unwrap(); // 32 KiB
    let e = attention(&ctx, &big, &big, &big, &AttentionOptions::default()).unwrap_err();
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
