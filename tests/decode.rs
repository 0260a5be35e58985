//! The split-KV decode kernel (GQA packing + flash-decoding merge) against the CPU reference.

mod common;
use common::skip::Cap;
use common::*;
use wgpu_attention::{Alignment, DType, DecodeConfig, Dropout, KernelChoice, Window};

fn decode(p: wgpu_attention::Problem) -> Case {
    Case::new(p).kernel(KernelChoice::Decode)
}

/// Every case on contiguous K/V and again on paged K/V (through a block table).
fn check_layouts(cases: impl IntoIterator<Item = Case>) {
    let cases: Vec<Case> = cases.into_iter().collect();
    let paged: Vec<Case> = cases.iter().cloned().map(Case::paged).collect();
    check_all(cases.into_iter().chain(paged));
}

/// A decode tile of the row design with an explicit split count (keys per split = ⌈Lk / splits⌉).
fn splits(n: u32) -> DecodeConfig {
    DecodeConfig {
        workgroup: 8,
        rows: 0,
        splits: n,
        lanes: false,
    }
}

/// The same split count in the lanes design (head dim over a subgroup), where the device has it.
fn lanes(n: u32) -> Option<DecodeConfig> {
    DecodeConfig::lanes_for(ctx(), &problem(1, 1, 1, 1, 1, 8, 8))
        .unwrap()
        .map(|c| DecodeConfig { splits: n, ..c })
}

/// Every design the device runs: rows, and lanes when it has a fixed subgroup size.
fn designs() -> Vec<fn(u32) -> DecodeConfig> {
    let mut d: Vec<fn(u32) -> DecodeConfig> = vec![splits];
    if common::skip::has_for(Cap::Subgroups, "the decode kernel's lanes design") {
        d.push(|n| lanes(n).expect("a fixed subgroup size gives the lanes design"));
    }
    d
}

#[test]
fn shapes_and_split_counts() {
    for splits in designs() {
        shapes_and_split_counts_with(splits);
    }
}

fn shapes_and_split_counts_with(splits: fn(u32) -> DecodeConfig) {
    check_layouts([
        decode(problem(1, 1, 1, 1, 1, 8, 8)),
        decode(problem(1, 4, 1, 1, 1, 8, 8)).decode(splits(7)), // Lk < splits
        decode(problem(1, 8, 2, 1, 37, 16, 16)).decode(splits(5)), // prime Lk, uneven splits
        decode(problem(2, 8, 8, 1, 67, 32, 32)).decode(splits(3)), // GQA ratio 1
        decode(problem(2, 4, 2, 2, 61, 24, 40)).decode(splits(4)), // ratio 2, Dk ≠ Dv, Lq = 2
        decode(problem(1, 8, 1, 5, 53, 20, 12)).decode(splits(6)), // MQA, ratio 8, Lq = 5
        decode(problem(1, 32, 8, 1, 300, 64, 64)),              // default splits
        decode(problem(1, 4, 1, 3, 129, 3, 5)).decode(splits(2)), // odd head dims (scalar loads)
    ]);
}

#[test]
fn masks_and_causal() {
    for splits in designs() {
        masks_and_causal_with(splits);
    }
}

fn masks_and_causal_with(splits: fn(u32) -> DecodeConfig) {
    let p = problem(2, 8, 2, 3, 45, 16, 16);
    check_layouts([
        decode(p)
            .decode(splits(4))
            .opts(|o| o.causal = Some(Alignment::TopLeft)),
        decode(p)
            .decode(splits(4))
            .opts(|o| o.causal = Some(Alignment::BottomRight)),
        decode(problem(1, 4, 2, 5, 3, 8, 8))
            .decode(splits(3))
            .opts(|o| o.causal = Some(Alignment::BottomRight)), // Lq > Lk: rows with no key
        decode(p)
            .decode(splits(5))
            .mask(MaskKind::Random { shape: [2, 8, 3, 45] }),
        decode(p)
            .decode(splits(5))
            .mask(MaskKind::Random { shape: [1, 1, 3, 45] }),
        decode(p)
            .decode(splits(5))
            .mask(MaskKind::WithEmptyRow { shape: [2, 1, 3, 45] }),
        decode(p).decode(splits(3)).bias([2, 8, 3, 45]),
        decode(p)
            .decode(splits(3))
            .bias([1, 8, 3, 45])
            .opts(|o| o.softcap = Some(2.0)),
        decode(p).decode(splits(3)).opts(|o| o.scale = Some(0.7)),
        decode(p).decode(splits(6)).key_lengths(vec![0, 17]), // an empty sequence
        decode(p).decode(splits(6)).key_lengths(vec![45, u32::MAX]),
        decode(p).decode(splits(4)).opts(|o| {
            o.window = Some(Window {
                left: Some(5),
                right: Some(2),
                alignment: Alignment::BottomRight,
            })
        }),
        decode(p).decode(splits(4)).opts(|o| {
            o.window = Some(Window::causal_local(3, Alignment::TopLeft));
            o.causal = Some(Alignment::TopLeft);
        }),
        decode(p).decode(splits(4)).opts(|o| o.zero_score_mask = true),
        decode(p)
            .decode(splits(4))
            .opts(|o| o.dropout = Some(Dropout { p: 0.3, seed: 99 })),
        decode(p)
            .decode(splits(4))
            .opts(|o| o.causal = Some(Alignment::BottomRight))
            .key_lengths(vec![30, 2])
            .mask(MaskKind::Random { shape: [2, 1, 3, 45] })
            .bias([1, 1, 3, 45]),
    ]);
}

#[test]
fn f16_and_large_heads() {
    for splits in designs() {
        f16_and_large_heads_with(splits);
    }
}

fn f16_and_large_heads_with(splits: fn(u32) -> DecodeConfig) {
    check_layouts([
        decode(problem(1, 8, 2, 1, 70, 64, 64))
            .dtype(DType::F16)
            .decode(splits(4)),
        decode(problem(2, 4, 1, 2, 33, 32, 32))
            .dtype(DType::F16)
            .decode(splits(3))
            .opts(|o| o.causal = Some(Alignment::BottomRight))
            .mask(MaskKind::Random { shape: [2, 1, 2, 33] }),
        decode(problem(1, 2, 1, 1, 20, 256, 256)).decode(splits(3)),
        decode(problem(1, 2, 2, 2, 9, 256, 128))
            .dtype(DType::F16)
            .decode(splits(2)),
        decode(problem(1, 4, 2, 1, 40, 128, 128)), // default tile
    ]);
}

/// Long key ranges in one invocation: CPU drivers stop a shader loop after a fixed iteration
/// budget (lavapipe), so a kernel whose inner loops are not unrolled would silently skip keys.
#[test]
fn long_key_ranges_per_split() {
    for splits in designs() {
        check_all([
            decode(problem(1, 4, 1, 1, 4099, 128, 128)).decode(splits(1)),
            decode(problem(1, 8, 2, 1, 20000, 16, 16)).decode(splits(1)),
        ]);
    }
    // Past an llvmpipe loop budget (Mesa before 25: 65535 loop iterations per invocation in
    // total, inner loops included) Auto takes a path that stays within it, and a forced fused
    // kernel either runs correctly (no budget) or is refused — never skips keys. Measured on
    // Mesa 22.3.6: the fused kernel went wrong at D = 256 after ~150 keys and at D = 8 after ~10k.
    let long = problem(1, 1, 1, 1, 70000, 8, 8);
    let wide = problem(1, 2, 1, 3, 600, 256, 256);
    check_all([
        Case::new(long),
        Case::new(problem(1, 2, 1, 40, 40000, 8, 8)),
        Case::new(problem(1, 1, 1, 2, 16384, 8, 8)),
        Case::new(wide),
        Case::new(problem(1, 2, 2, 300, 300, 256, 256)),
    ]);
    // Forced fused or staged paths: right, or refused under the budget (measured on Mesa
    // 22.3.6: the staged P·V reduction went wrong at 40000 keys).
    for p in [long, wide] {
        for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
            if let Err(err) = Case::new(p).kernel(kernel).check() {
                assert!(err.contains("65535") && err.contains("attention failed"), "{err}");
            }
        }
    }
}

/// Hard attention over many keys is sampled correctly, or refused under a loop budget.
#[test]
fn hard_attention_over_many_keys() {
    use wgpu_attention::reference::{self, HostInputs};
    use wgpu_attention::{family, AttentionOptions, Tensor};
    let p = problem(1, 1, 1, 4, 6000, 64, 64);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(12);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let t = |x: &[f32], s: [usize; 4]| Tensor::from_slice(ctx(), x, &s).unwrap();
    let opts = AttentionOptions::default();
    match family::hard::hard(ctx(), &t(&q, qs), &t(&k, ks), &t(&v, vs), 5, &opts) {
        Ok(call) => {
            let got = call.run().unwrap().indices.to_vec::<u32>(ctx()).unwrap();
            let expected = reference::family::hard(&HostInputs::new(p, &q, &k, &v), &opts, 5);
            for (i, (g, e)) in got.iter().zip(&expected.indices).enumerate() {
                assert!(
                    g == e || expected.margins[i] < 1e-3,
                    "row {i}: sampled {g}, reference {e}"
                );
            }
        }
        Err(e) => assert!(e.to_string().contains("65535"), "{e}"),
    }
}

/// The decode kernel writes O into a caller's strided tensor ([B, L, H·D] layout).
#[test]
fn caller_out_with_strides() {
    use wgpu_attention::reference::{self, HostInputs, Tolerance};
    use wgpu_attention::{attention, AttentionOptions, Tensor};
    let ctx = ctx();
    let p = problem(2, 4, 2, 3, 29, 8, 12);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let out = Tensor::zeros(ctx, &[p.b, p.lq, p.hq * p.dv], DType::F32).unwrap();
    let view = out
        .view(0, &[p.b, p.hq, p.lq, p.dv], &[p.lq * p.hq * p.dv, p.dv, p.hq * p.dv, 1])
        .unwrap();
    let opts = AttentionOptions {
        kernel: KernelChoice::Decode,
        causal: Some(Alignment::BottomRight),
        out: Some(view),
        return_lse: true,
        ..Default::default()
    };
    let res = attention(
        ctx,
        &Tensor::from_slice(ctx, &q, &qs).unwrap(),
        &Tensor::from_slice(ctx, &k, &ks).unwrap(),
        &Tensor::from_slice(ctx, &v, &vs).unwrap(),
        &opts,
    )
    .unwrap();
    assert_eq!(res.kernel, KernelChoice::Decode);
    let expected = reference::sdpa(&HostInputs::new(p, &q, &k, &v), &opts);
    let got: Vec<f32> = out.to_vec(ctx).unwrap();
    // [B, L, H, D] back to [B, H, L, D].
    let mut bhld = vec![0.0f32; got.len()];
    for b in 0..p.b {
        for i in 0..p.lq {
            for h in 0..p.hq {
                for d in 0..p.dv {
                    bhld[((b * p.hq + h) * p.lq + i) * p.dv + d] = got[((b * p.lq + i) * p.hq + h) * p.dv + d];
                }
            }
        }
    }
    let c = reference::compare(&bhld, &expected.out, Tolerance::F32);
    assert!(c.ok(), "{c}");
}

/// `Auto` picks the decode kernel for few packed rows, the fused kernel otherwise, and never the
/// decode kernel for what it does not support.
#[test]
fn auto_selection() {
    use wgpu_attention::{attention, AttentionOptions, Error, Tensor};
    let ctx = ctx();
    let run = |p: wgpu_attention::Problem, opts: &AttentionOptions| {
        let [qs, ks, vs] = p.qkv_shapes();
        let t = |s: [usize; 4]| Tensor::zeros(ctx, &s, DType::F32).unwrap();
        attention(ctx, &t(qs), &t(ks), &t(vs), opts)
    };
    let auto = AttentionOptions::default();
    assert_eq!(
        run(problem(1, 8, 2, 1, 64, 8, 8), &auto).unwrap().kernel,
        KernelChoice::Decode
    );
    assert_eq!(
        run(problem(1, 8, 2, 4, 64, 8, 8), &auto).unwrap().kernel,
        KernelChoice::Decode
    );
    assert_eq!(
        run(problem(1, 2, 2, 64, 64, 8, 8), &auto).unwrap().kernel,
        KernelChoice::Fused
    );
    let weights = AttentionOptions {
        return_weights: true,
        ..Default::default()
    };
    assert_eq!(
        run(problem(1, 8, 2, 1, 64, 8, 8), &weights).unwrap().kernel,
        KernelChoice::Staged
    );
    let forced = AttentionOptions {
        kernel: KernelChoice::Decode,
        return_weights: true,
        ..Default::default()
    };
    assert!(matches!(
        run(problem(1, 8, 2, 1, 64, 8, 8), &forced),
        Err(Error::Unsupported(_))
    ));
    let forced = AttentionOptions {
        kernel: KernelChoice::Decode,
        ..Default::default()
    };
    assert!(matches!(
        run(problem(1, 2, 2, 1, 8, 8, 300), &forced),
        Err(Error::Unsupported(_))
    ));
}

/// Empty axes on the decode path: Lk = 0 gives O = 0 and LSE = −∞.
#[test]
fn no_keys() {
    check_all([
        decode(problem(2, 4, 2, 1, 0, 8, 8)),
        decode(problem(1, 4, 1, 3, 0, 8, 16)).opts(|o| o.causal = Some(Alignment::BottomRight)),
    ]);
}

/// A device whose storage bindings are tiny: the decode path splits the batch into dispatches
/// that each bind a window of Q, K, V and O, and still matches the reference; what cannot fit
/// even one batch is refused (and `Auto` takes the fused kernel).
#[test]
fn batches_beyond_one_binding_are_split() {
    use wgpu_attention::reference::{self, HostInputs, Tolerance};
    use wgpu_attention::{attention, wgpu, AttentionOptions, Context, Error, Tensor};
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
    let p = problem(5, 4, 2, 2, 60, 16, 16); // K: 7.5 KiB per batch, 37.5 KiB in all
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(8);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let lens = [60u32, 0, 17, 59, 3];
    let opts = AttentionOptions {
        kernel: KernelChoice::Decode,
        causal: Some(Alignment::BottomRight),
        key_lengths: Some(Tensor::from_slice(&ctx, &lens, &[p.b]).unwrap()),
        dropout: Some(Dropout { p: 0.2, seed: 5 }),
        return_lse: true,
        ..Default::default()
    };
    let t = |d: &[f32], s: [usize; 4]| Tensor::from_slice(&ctx, d, &s).unwrap();
    let res = attention(&ctx, &t(&q, qs), &t(&k, ks), &t(&v, vs), &opts).unwrap();
    assert_eq!(res.kernel, KernelChoice::Decode);
    let expected = reference::sdpa(
        &HostInputs {
            key_lengths: Some(&lens),
            ..HostInputs::new(p, &q, &k, &v)
        },
        &opts,
    );
    let c = reference::compare(&res.out.to_vec::<f32>(&ctx).unwrap(), &expected.out, Tolerance::F32);
    assert!(c.ok(), "O: {c}");
    let c = reference::compare(
        &res.lse.unwrap().to_vec::<f32>(&ctx).unwrap(),
        &expected.lse,
        Tolerance::F32,
    );
    assert!(c.ok(), "LSE: {c}");

    // One batch of K alone beyond a binding: refused by Decode, fused under Auto.
    let big = problem(2, 2, 2, 1, 300, 16, 16); // 37.5 KiB of K per batch
    let [qs, ks, vs] = big.qkv_shapes();
    let z = |s: [usize; 4]| Tensor::zeros(&ctx, &s, DType::F32).unwrap();
    let e = attention(
        &ctx,
        &z(qs),
        &z(ks),
        &z(vs),
        &AttentionOptions {
            kernel: KernelChoice::Decode,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    // Auto takes the fused kernel, which chunks by heads; a head of 18.75 KiB is itself beyond
    // the binding, so that is refused too.
    let auto = attention(&ctx, &z(qs), &z(ks), &z(vs), &AttentionOptions::default());
    assert!(matches!(auto, Err(Error::Limit { .. })), "{auto:?}");

    // A batch of K beyond a binding whose heads fit (2 × 9.4 KiB): Auto runs the fused kernel
    // in head chunks, and it matches the reference.
    let fits = problem(2, 2, 2, 1, 150, 16, 16);
    let [qs, ks, vs] = fits.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let up = |x: &[f32], s: [usize; 4]| Tensor::from_slice(&ctx, x, &s).unwrap();
    let res = attention(
        &ctx,
        &up(&q, qs),
        &up(&k, ks),
        &up(&v, vs),
        &AttentionOptions::default(),
    )
    .unwrap();
    assert_eq!(res.kernel, KernelChoice::Fused);
    let expected = reference::sdpa(&HostInputs::new(fits, &q, &k, &v), &AttentionOptions::default());
    let c = reference::compare(&res.out.to_vec::<f32>(&ctx).unwrap(), &expected.out, Tolerance::F32);
    assert!(c.ok(), "fused in head chunks: {c}");
}
