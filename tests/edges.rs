//! Edge semantics: empty batches and query rows give empty outputs, no keys means every key is
//! masked (O = 0, LSE = −∞), allocations beyond the device's limits and a lost device are errors.

mod common;
use common::skip::Cap;
use common::*;
use std::time::Duration;
use wgpu_attention::{
    attention, attention_encode, wgpu, Alignment, Attention, AttentionOptions, Context, DType, Error, KernelChoice,
    Tensor,
};

const KERNELS: [KernelChoice; 2] = [KernelChoice::Fused, KernelChoice::Staged];

fn zeros(ctx: &Context, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::zeros(ctx, shape, dtype).unwrap()
}

/// Every option that takes a tensor, given with the (possibly 0-length) shapes the problem implies.
fn full_options(ctx: &Context, p: wgpu_attention::Problem, kernel: KernelChoice, lse: bool) -> AttentionOptions {
    AttentionOptions {
        bias: Some(zeros(ctx, &[p.b, 1, p.lq, p.lk], DType::F32)),
        mask: Some(zeros(ctx, &[p.lq, p.lk], DType::Bool)),
        key_lengths: Some(Tensor::from_slice(ctx, &vec![p.lk as u32; p.b], &[p.b]).unwrap()),
        causal: Some(Alignment::BottomRight),
        return_lse: lse,
        return_weights: kernel == KernelChoice::Staged,
        kernel,
        ..Default::default()
    }
}

#[test]
fn empty_batch_or_query_rows_give_empty_outputs() {
    let ctx = ctx();
    for (b, lq, lk) in [(0, 5, 7), (2, 0, 7), (0, 0, 0), (2, 0, 0)] {
        let p = problem(b, 4, 2, lq, lk, 8, 12);
        let [qs, ks, vs] = p.qkv_shapes();
        let (q, k, v) = (
            zeros(ctx, &qs, DType::F32),
            zeros(ctx, &ks, DType::F32),
            zeros(ctx, &vs, DType::F32),
        );
        for kernel in KERNELS {
            for lse in [false, true] {
                let opts = full_options(ctx, p, kernel, lse);
                let call = Attention::new(ctx, &q, &k, &v, &opts).unwrap_or_else(|e| panic!("{p} {kernel:?}: {e}"));
                assert_eq!(call.dispatch_count(), 0, "{p}: nothing to dispatch");
                call.submit().unwrap();
                let res = call.into_output();
                assert_eq!(res.kernel, kernel);
                assert_eq!(res.out.shape(), &[b, 4, lq, 12]);
                assert!(res.out.to_vec::<f32>(ctx).unwrap().is_empty());
                match (lse, res.lse) {
                    (true, Some(l)) => {
                        assert_eq!(l.shape(), &[b, 4, lq]);
                        assert!(l.to_vec::<f32>(ctx).unwrap().is_empty());
                    }
                    (false, None) => {}
                    (want, got) => panic!("lse requested {want}, got {got:?}"),
                }
                if kernel == KernelChoice::Staged {
                    let w = res.weights.expect("weights requested");
                    assert_eq!(w.shape(), &[b, 4, lq, lk]);
                    assert!(w.to_vec::<f32>(ctx).unwrap().is_empty());
                }
            }
        }
        // The reference agrees (empty everything), through the shared harness.
        for kernel in KERNELS {
            Case::new(p).kernel(kernel).check().unwrap();
        }
    }
}

#[test]
fn no_keys_mask_every_row() {
    let ctx = ctx();
    let f16 = common::skip::has_for(Cap::F16, "f16 rows");
    let p = problem(2, 4, 2, 3, 0, 8, 5); // GQA 2:1
    let [qs, ks, vs] = p.qkv_shapes();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let qd = random(&mut rng, qs.iter().product(), 1.0);
    for dtype in [DType::F32, DType::F16].into_iter().filter(|&d| d == DType::F32 || f16) {
        let q = upload(ctx, &qd, &qs, dtype);
        let (k, v) = (zeros(ctx, &ks, dtype), zeros(ctx, &vs, dtype));
        for kernel in KERNELS {
            for lse in [false, true] {
                let mut opts = full_options(ctx, p, kernel, lse);
                opts.bias = Some(zeros(ctx, &[p.b, p.hq, p.lq, 0], dtype));
                let res = attention(ctx, &q, &k, &v, &opts).unwrap_or_else(|e| panic!("{dtype} {kernel:?}: {e}"));
                let o = res.out.to_f32_vec(ctx).unwrap();
                assert_eq!(o.len(), p.b * p.hq * p.lq * p.dv);
                assert!(o.iter().all(|&x| x == 0.0), "{dtype} {kernel:?}: O = {o:?}");
                if lse {
                    let l = res.lse.unwrap().to_vec::<f32>(ctx).unwrap();
                    assert_eq!(l.len(), p.b * p.hq * p.lq);
                    assert!(l.iter().all(|&x| x == f32::NEG_INFINITY), "{kernel:?}: LSE = {l:?}");
                }
                if kernel == KernelChoice::Staged {
                    let w = res.weights.unwrap();
                    assert_eq!(w.shape(), &[p.b, p.hq, p.lq, 0]);
                    assert!(w.to_vec::<f32>(ctx).unwrap().is_empty());
                }
            }
        }
    }
    // Against the reference (O = 0, LSE = −∞, P empty), with and without GQA and masks.
    check_all(KERNELS.into_iter().flat_map(|kernel| {
        [
            Case::new(p).kernel(kernel),
            Case::new(problem(1, 2, 2, 4, 0, 16, 16)).kernel(kernel).opts(|o| {
                o.return_weights = kernel == KernelChoice::Staged;
                o.causal = Some(Alignment::TopLeft);
            }),
            Case::new(problem(2, 2, 1, 1, 0, 4, 4))
                .kernel(kernel)
                .mask(MaskKind::Random { shape: [2, 1, 1, 0] })
                .bias([1, 2, 1, 0])
                .key_lengths(vec![0, 0]),
        ]
    }));
}

#[test]
fn no_keys_overwrite_a_callers_strided_output_and_encode_into_a_callers_encoder() {
    let ctx = ctx();
    let (b, h, lq, d) = (2, 3, 4, 8);
    // The caller's [B, L, H, D] buffer, prefilled with ones; O is written through the view.
    let ones = vec![1.0f32; b * lq * h * d];
    let blhd = Tensor::from_slice(ctx, &ones, &[b, lq, h, d]).unwrap();
    let out = Tensor::from_blhd(blhd.buffer(), 0, [b, lq, h, d], DType::F32).unwrap();
    let q = zeros(ctx, &[b, h, lq, d], DType::F32);
    let kv = zeros(ctx, &[b, h, 0, d], DType::F32);
    for kernel in KERNELS {
        let ones_again = Tensor::from_slice(ctx, &ones, &[b, lq, h, d]).unwrap();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(ones_again.buffer(), 0, blhd.buffer(), 0, (ones.len() * 4) as u64);
        let opts = AttentionOptions {
            out: Some(out.clone()),
            return_lse: true,
            kernel,
            ..Default::default()
        };
        let res = attention_encode(ctx, &mut enc, &q, &kv, &kv, &opts).unwrap();
        ctx.queue().submit([enc.finish()]);
        assert!(blhd.to_vec::<f32>(ctx).unwrap().iter().all(|&x| x == 0.0), "{kernel:?}");
        let lse = res.lse.unwrap().to_vec::<f32>(ctx).unwrap();
        assert!(lse.iter().all(|&x| x == f32::NEG_INFINITY));
    }
}

#[test]
fn zero_heads_and_head_dims_are_still_errors() {
    let ctx = ctx();
    let ok = zeros(ctx, &[1, 2, 4, 8], DType::F32);
    let e = attention(
        ctx,
        &zeros(ctx, &[1, 0, 4, 8], DType::F32),
        &ok,
        &ok,
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ZeroDim { name: "q", axis: 1, .. }), "{e}");
    let e = attention(
        ctx,
        &ok,
        &ok,
        &zeros(ctx, &[1, 2, 4, 0], DType::F32),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::ZeroDim { name: "v", axis: 3, .. }), "{e}");
    // Hard attention samples one key per query: no keys is an error there.
    let no_keys = zeros(ctx, &[1, 2, 0, 8], DType::F32);
    let e = wgpu_attention::family::hard::hard(ctx, &ok, &no_keys, &no_keys, 1, &Default::default()).unwrap_err();
    assert!(matches!(e, Error::ZeroDim { name: "k", axis: 2, .. }), "{e}");
}

/// A device created by the test with the given limits (adapter features the crate uses).
fn is_buffer_limit(e: &Error) -> bool {
    matches!(
        e,
        Error::Limit {
            limit: "max_buffer_size",
            ..
        }
    )
}

#[test]
fn outputs_beyond_max_buffer_size_are_errors() {
    // A device whose buffers hold at most 1 MiB: O [1, 1, 1024, 512] f32 is 2 MiB.
    let (device, queue) = common::borrowed_device(|l| wgpu::Limits {
        max_buffer_size: 1 << 20,
        max_storage_buffer_binding_size: 1 << 20,
        ..l
    });
    let ctx = Context::from_device(&device, &queue);
    let q = zeros(&ctx, &[1, 1, 1024, 4], DType::F32);
    let k = zeros(&ctx, &[1, 1, 1, 4], DType::F32);
    let v = zeros(&ctx, &[1, 1, 1, 512], DType::F32);
    for kernel in KERNELS {
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        let e = attention(&ctx, &q, &k, &v, &opts).unwrap_err();
        assert!(is_buffer_limit(&e), "{kernel:?}: {e}");
    }
    // Staged weights P [1, 1, 1024, 300] (1.2 MiB) beyond the limit while O fits.
    let k = zeros(&ctx, &[1, 1, 300, 4], DType::F32);
    let v = zeros(&ctx, &[1, 1, 300, 4], DType::F32);
    let opts = AttentionOptions {
        return_weights: true,
        ..Default::default()
    };
    let e = attention(&ctx, &q, &k, &v, &opts).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
    // The same device still works afterwards.
    let ok = attention(&ctx, &q, &q, &q, &Default::default()).unwrap();
    assert!(ok.out.to_vec::<f32>(&ctx).unwrap().iter().all(|&x| x == 0.0));

    // The test context's real limit: an output just past it, from small inputs (a long
    // one-dimensional Q and one wide value row, about √(max / 4) elements each, so the inputs
    // stay small on any device: 2 MiB each for a 1 TiB limit).
    let ctx = common::ctx();
    let max = ctx.limits().max_buffer_size;
    let dv = ((max / 4) as f64).sqrt().ceil() as usize;
    let lq = (max / (4 * dv as u64) + 1) as usize;
    assert!(lq as u64 * dv as u64 * 4 > max);
    let q = zeros(ctx, &[1, 1, lq, 1], DType::F32);
    let k = zeros(ctx, &[1, 1, 1, 1], DType::F32);
    let v = zeros(ctx, &[1, 1, 1, dv], DType::F32);
    for kernel in KERNELS {
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        let e = attention(ctx, &q, &k, &v, &opts).unwrap_err();
        assert!(is_buffer_limit(&e), "{kernel:?}: {e}");
    }
}

/// Runs `f` on another thread, failing if it panics or takes longer than `limit` (a hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            worker.join().unwrap();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("no result means a panic"))
        }
        Err(_) => panic!("no answer within {limit:?}: the call hangs"),
    }
}

/// Destroys the context's device, then checks that every entry point returns an error.
fn calls_after_destroy_are_errors(ctx: Context) {
    let q = Tensor::from_slice(&ctx, &[0.5f32; 32], &[1, 1, 4, 8]).unwrap();
    let prepared = Attention::new(&ctx, &q, &q, &q, &Default::default()).unwrap();
    let earlier = attention(&ctx, &q, &q, &q, &Default::default()).unwrap();
    ctx.wait().unwrap();
    ctx.device().destroy();

    let lost = |what: &str, r: Result<(), Error>| match r {
        Err(Error::DeviceLost { .. }) => {}
        other => panic!("{what}: expected DeviceLost, got {other:?}"),
    };
    for kernel in KERNELS {
        let opts = AttentionOptions {
            kernel,
            return_lse: true,
            ..Default::default()
        };
        lost("attention", attention(&ctx, &q, &q, &q, &opts).map(|_| ()));
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        lost(
            "attention_encode",
            attention_encode(&ctx, &mut enc, &q, &q, &q, &opts).map(|_| ()),
        );
        lost("Attention::new", Attention::new(&ctx, &q, &q, &q, &opts).map(|_| ()));
    }
    lost("submit", prepared.submit());
    lost(
        "into_prepared().run()",
        prepared.into_prepared("attention").run().map(|_| ()),
    );
    lost("download", earlier.out.to_vec::<f32>(&ctx).map(|_| ()));
    lost("upload", Tensor::from_slice(&ctx, &[1.0f32; 4], &[4]).map(|_| ()));
    lost("allocation", Tensor::zeros(&ctx, &[4], DType::F32).map(|_| ()));
    lost("check_alive", ctx.check_alive("test"));
    // Waiting on a destroyed device does not hang, and says the device is lost.
    lost("wait", ctx.wait());
}

#[test]
fn a_destroyed_owned_device_gives_errors_not_panics_or_hangs() {
    within(Duration::from_secs(120), || {
        calls_after_destroy_are_errors(Context::new().unwrap())
    });
}

#[test]
fn a_destroyed_borrowed_device_gives_errors_not_panics_or_hangs() {
    // The caller's device, with wgpu's default handler (which panics on an uncaptured error): the
    // crate must report the loss through its own results only.
    within(Duration::from_secs(120), || {
        let (device, queue) = common::borrowed_device(|l| l);
        calls_after_destroy_are_errors(Context::from_device(&device, &queue))
    });
}
