//! The cooperative-matrix design against the CPU reference (f16 storage): every mask kind and
//! their combinations, both causal alignments, windows, soft cap, bias, ALiBi, key lengths, GQA,
//! Lq ≠ Lk, Dk ≠ Dv, dropout, LSE, fully masked rows, lengths that are not multiples of the tiles,
//! head dims from 8 to 256, explicit tiles, chunked (b, h) bindings on a borrowed device. These
//! run where the adapter has f16 → f32 cooperative matrices (the Mesa 26 lane of
//! `scripts/coopmat-lane.sh`) and skip elsewhere; the fallback test runs everywhere. (Every f16 fused case of the other test files also runs on this
//! design where it is available: `Case::check`.)

mod common;
use common::skip::Cap;
use common::*;
use wgpu_attention::{
    available_designs, Alignment, AttentionOptions, CoopmatConfig, DType, Design, Dropout, KernelChoice, Window,
};

/// A case that must run on the cooperative-matrix design.
fn coop(p: wgpu_attention::Problem) -> Case {
    Case::new(p)
        .kernel(KernelChoice::Fused)
        .dtype(DType::F16)
        .strict(Design::Coopmat)
}

/// Head dims 8 to 256 (multiples of the matrix size), GQA and MQA, Lq ≠ Lk, Dk ≠ Dv, lengths
/// below, at and across the tile sizes.
#[test]
fn coopmat_shapes_and_head_dims() {
    require!(Cap::Coopmat);
    check_all(
        [
            problem(1, 1, 1, 1, 1, 8, 8),
            problem(2, 3, 1, 17, 29, 16, 8),
            problem(1, 4, 2, 70, 13, 8, 64),
            problem(1, 2, 2, 5, 130, 32, 16),
            problem(1, 2, 1, 33, 100, 64, 64),
            problem(1, 2, 2, 64, 64, 64, 64),
            problem(1, 1, 1, 40, 40, 128, 128),
            problem(1, 1, 1, 19, 41, 256, 256),
            problem(1, 1, 1, 9, 17, 256, 8),
        ]
        .map(coop),
    );
}

/// Every option that changes the scores or the weights, alone and combined, on a shape whose
/// lengths are not multiples of any tile.
#[test]
fn coopmat_every_option() {
    require!(Cap::Coopmat);
    let p = problem(2, 2, 1, 45, 77, 32, 32);
    let base = || coop(p);
    let opts = |f: fn(&mut AttentionOptions)| base().opts(f);
    check_all([
        base(),
        opts(|o| o.causal = Some(Alignment::TopLeft)),
        opts(|o| o.causal = Some(Alignment::BottomRight)),
        opts(|o| o.window = Some(Window::symmetric(6))),
        opts(|o| {
            o.window = Some(Window {
                left: Some(20),
                right: Some(0),
                alignment: Alignment::BottomRight,
            })
        }),
        opts(|o| o.softcap = Some(2.0)).magnitude(4.0),
        opts(|o| o.scale = Some(0.3)),
        base().bias([2, 2, 45, 77]),
        base().bias([1, 1, 45, 77]),
        base().mask(MaskKind::Random { shape: [2, 2, 45, 77] }),
        base().mask(MaskKind::Random { shape: [1, 1, 45, 77] }),
        base().mask(MaskKind::WithEmptyRow { shape: [2, 2, 45, 77] }),
        base().key_lengths(vec![77, 9]),
        base().key_lengths(vec![0, 40]),
        opts(|o| {
            o.causal = Some(Alignment::BottomRight);
            o.align_to_key_lengths = true;
        })
        .key_lengths(vec![60, 13]),
        opts(|o| o.dropout = Some(Dropout { p: 0.3, seed: 5 })),
        opts(|o| o.dropout = Some(Dropout { p: 0.97, seed: 2 })),
        opts(|o| o.alibi_slopes = Some(vec![0.5, 0.0625].into())),
        opts(|o| o.zero_score_mask = true),
        base()
            .magnitude(3.0)
            .bias([2, 1, 45, 77])
            .mask(MaskKind::WithEmptyRow { shape: [1, 2, 45, 77] })
            .key_lengths(vec![77, 30])
            .opts(|o| {
                o.causal = Some(Alignment::BottomRight);
                o.softcap = Some(5.0);
                o.window = Some(Window::symmetric(17));
                o.dropout = Some(Dropout { p: 0.25, seed: 11 });
                o.alibi_slopes = Some(vec![0.25, 0.125].into());
            }),
    ]);
}

/// Rows that see no key at all: Lq > Lk with bottom-right causal alignment (the first Lq − Lk
/// rows), a window beyond the keys, key length 0.
#[test]
fn coopmat_fully_masked_rows() {
    require!(Cap::Coopmat);
    check_all([
        coop(problem(1, 2, 2, 50, 20, 16, 16)).opts(|o| o.causal = Some(Alignment::BottomRight)),
        coop(problem(1, 1, 1, 24, 24, 8, 8)).opts(|o| {
            o.window = Some(Window {
                left: Some(0),
                right: Some(0),
                alignment: Alignment::TopLeft,
            })
        }),
        coop(problem(2, 1, 1, 16, 16, 8, 8)).key_lengths(vec![0, 0]),
    ]);
}

/// Explicit tiles: one and several subgroups per workgroup, row blocks and key tiles from the
/// matrix size up, on ragged lengths.
#[test]
fn coopmat_explicit_tiles() {
    require!(Cap::Coopmat);
    let m = ctx().info().coopmat_f16_size().unwrap();
    let tiles = [
        (8, m, m),
        (8, 2 * m, m),
        (16, 4 * m, 2 * m),
        (32, 2 * m, 4 * m),
        (64, 4 * m, 4 * m),
    ];
    let mut cases = Vec::new();
    for (workgroup, block_q, block_k) in tiles {
        let cfg = CoopmatConfig {
            workgroup,
            block_q,
            block_k,
        };
        for p in [problem(1, 2, 1, 37, 53, 16, 32), problem(2, 1, 1, 3, 130, 64, 64)] {
            let c = coop(p).coopmat(cfg);
            cases.push(c.clone());
            cases.push(c.opts(|o| o.causal = Some(Alignment::BottomRight)));
        }
    }
    check_all(cases);

    // A tile that breaks the kernel's rules is refused, not run: part of a subgroup, blocks that
    // are not multiples of the matrix size.
    let subgroup = ctx().info().adapter.as_ref().unwrap().subgroup_max_size;
    let bad = [
        (subgroup / 2, 2 * m, 2 * m),
        (8.max(subgroup), m + 1, m),
        (8.max(subgroup), m, 0),
    ];
    for (workgroup, block_q, block_k) in bad.into_iter().filter(|t| t.0 > 0) {
        let cfg = CoopmatConfig {
            workgroup,
            block_q,
            block_k,
        };
        let p = problem(1, 1, 1, 16, 16, 16, 16);
        let [qs, ks, vs] = p.qkv_shapes();
        let x = |s: &[usize]| upload(ctx(), &vec![0.5; s.iter().product()], s, DType::F16);
        let tuning = wgpu_attention::Tuning {
            coopmat: Some(cfg),
            ..Default::default()
        };
        let opts = AttentionOptions {
            kernel: KernelChoice::Fused,
            design: Some(Design::Coopmat),
            ..Default::default()
        };
        let got = wgpu_attention::Attention::with_tuning(ctx(), &x(&qs), &x(&ks), &x(&vs), &opts, &tuning);
        assert!(got.is_err(), "{cfg:?} was accepted");
    }
}

/// Where the design cannot serve a call it falls back (to tiled, then register) and says why:
/// f32 storage everywhere; on adapters without cooperative matrices every call; on those with
/// them, head dims that are not multiples of the matrix size and the additive score's absence
/// of a product are covered by `unsupported`.
#[test]
fn coopmat_falls_back_and_says_why() {
    let p = problem(1, 2, 2, 20, 20, 16, 16);
    // f32 storage: never the cooperative-matrix design, always a note.
    let run = |dtype: DType, p: wgpu_attention::Problem| {
        let [qs, ks, vs] = p.qkv_shapes();
        let n = |s: &[usize]| s.iter().product::<usize>();
        let fill = |s: &[usize]| upload(ctx(), &vec![0.25; n(s)], s, dtype);
        let opts = AttentionOptions {
            kernel: KernelChoice::Fused,
            design: Some(Design::Coopmat),
            ..Default::default()
        };
        let call = wgpu_attention::Attention::new(ctx(), &fill(&qs), &fill(&ks), &fill(&vs), &opts).unwrap();
        call.submit().unwrap();
        let out = call.into_output();
        let o = out.out.to_f32_vec(ctx()).unwrap();
        assert!(
            o.iter().all(|&x| (x - 0.25).abs() < 1e-3),
            "wrong output after fallback"
        );
        (out.design, out.design_note)
    };
    let (design, note) = run(DType::F32, p);
    assert_ne!(design, Some(Design::Coopmat));
    let note = note.expect("a fallback note");
    assert!(
        note.contains("coopmat design unavailable") && note.contains("f16"),
        "{note}"
    );

    require!(Cap::F16);
    let (design, note) = run(DType::F16, p);
    if available_designs(ctx(), DType::F16).contains(&Design::Coopmat) {
        assert_eq!((design, note), (Some(Design::Coopmat), None));
        // A head dim that is not a multiple of the matrix size.
        let (design, note) = run(DType::F16, problem(1, 1, 1, 9, 9, 12, 12));
        assert_ne!(design, Some(Design::Coopmat));
        assert!(note.is_some_and(|n| n.contains("multiples of its matrix size")));
    } else {
        assert_ne!(design, Some(Design::Coopmat));
        let note = note.expect("a fallback note");
        assert!(note.contains("cooperative matrices"), "{note}");
    }
}

/// A borrowed device (`Context::from_device_and_adapter`, cooperative matrices requested by the
/// caller) whose storage bindings are tiny: the (b, h) pairs are split into chunks that each bind
/// a window of every tensor, with Q, K and V at odd offsets of one f16 buffer (scalar loads).
#[test]
fn coopmat_borrowed_device_and_chunked_bindings() {
    use wgpu_attention::{attention, context::COOPMAT_FEATURES, wgpu, Context, Tensor};
    require!(Cap::Coopmat);
    let instance = common::instance();
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits {
            max_storage_buffer_binding_size: 8 << 10,
            ..adapter.limits()
        },
        required_features: (adapter.features() & wgpu_attention::context::WANTED_FEATURES) | COOPMAT_FEATURES,
        // SAFETY: only this crate's validated kernels run on the device (see `Context::from_adapter`).
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        ..Default::default()
    }))
    .unwrap();
    let ctx = Context::from_device_and_adapter(&device, &queue, &adapter);
    assert!(ctx.info().coopmat_f16_size().is_some());
    // A borrowed device without the adapter cannot know the shapes: no coopmat there.
    let blind = Context::from_device(&device, &queue);
    assert!(!available_designs(&blind, DType::F16).contains(&Design::Coopmat));

    let p = problem(3, 4, 2, 37, 45, 16, 24);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(78);
    let [qs, ks, vs] = p.qkv_shapes();
    let data = |n: usize, rng: &mut _| round_f16(&random(rng, n, 1.0));
    let (qd, kd, vd) = (
        data(qs.iter().product(), &mut rng),
        data(ks.iter().product(), &mut rng),
        data(vs.iter().product(), &mut rng),
    );
    let mut packed = vec![0.0f32; 3];
    let mut at = Vec::new();
    for d in [&qd, &kd, &vd] {
        at.push(packed.len());
        packed.extend_from_slice(d);
        packed.push(0.0);
    }
    let buf = upload(&ctx, &packed, &[packed.len()], DType::F16);
    assert!(buf.buffer().size() > (8 << 10) as u64);
    let view = |i: usize, s: [usize; 4]| Tensor::from_buffer(buf.buffer(), 2 * at[i] as u64, &s, DType::F16).unwrap();
    let opts = AttentionOptions {
        kernel: KernelChoice::Fused,
        design: Some(Design::Coopmat),
        causal: Some(Alignment::BottomRight),
        return_lse: true,
        ..Default::default()
    };
    let res = attention(&ctx, &view(0, qs), &view(1, ks), &view(2, vs), &opts).unwrap();
    assert_eq!((res.design, res.design_note.as_deref()), (Some(Design::Coopmat), None));
    let expected =
        wgpu_attention::reference::sdpa(&wgpu_attention::reference::HostInputs::new(p, &qd, &kd, &vd), &opts);
    let tol = wgpu_attention::reference::Tolerance::F16;
    let c = wgpu_attention::reference::compare(&res.out.to_f32_vec(&ctx).unwrap(), &expected.out, tol);
    assert!(c.ok(), "O: {c}");
    let lse = res.lse.unwrap().to_vec::<f32>(&ctx).unwrap();
    let c = wgpu_attention::reference::compare(&lse, &expected.lse, tol);
    assert!(c.ok(), "LSE: {c}");
}
