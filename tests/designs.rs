//! The fused kernel's designs: explicit tiles of the tiled design on awkward shapes, the
//! selection and fallback rules, determinism, and limits. (Every fused case of the other test
//! files also runs on every design the adapter has: `Case::check`.)

mod common;
use common::skip::Cap;
use common::*;
use wgpu_attention::{
    attention, available_designs, AttentionOptions, DType, Design, Dropout, Error, KernelChoice, TiledConfig, Tuning,
    Window,
};

/// Tiles that do not divide the shapes: row blocks and key tiles with ragged ends, one lane per
/// row and many, Lq ≠ Lk, Dk ≠ Dv, head dims that are not multiples of 4 (scalar loads), GQA.
#[test]
fn tiled_tiles_on_awkward_shapes() {
    require!(Cap::Tiled);
    let tiles = [
        TiledConfig::new(8, 8, 1),
        TiledConfig::new(16, 8, 4),
        TiledConfig::new(4, 12, 3),
        TiledConfig::new(32, 16, 8),
    ];
    let shapes = [
        problem(1, 1, 1, 1, 1, 4, 4),
        problem(2, 3, 1, 17, 29, 20, 12),
        problem(1, 4, 2, 70, 13, 8, 64),
        problem(1, 2, 2, 5, 130, 6, 10),
        problem(1, 2, 1, 33, 33, 128, 96),
    ];
    let mut cases = Vec::new();
    for tile in tiles {
        for p in shapes {
            let c = Case::new(p).kernel(KernelChoice::Fused).tiled(tile);
            cases.push(c.clone());
            cases.push(c.opts(|o| o.causal = Some(wgpu_attention::Alignment::BottomRight)));
        }
    }
    check_all(cases);
}

/// Head dims up to 256 on a tile that fits 32 KiB of workgroup memory, with every option that
/// changes the score path at once.
#[test]
fn tiled_wide_heads_and_combined_options() {
    require!(Cap::Tiled);
    let tile = TiledConfig::new(16, 8, 4);
    let p = problem(2, 2, 1, 19, 41, 256, 256);
    check_all([
        Case::new(p).kernel(KernelChoice::Fused).tiled(tile),
        Case::new(p)
            .kernel(KernelChoice::Fused)
            .tiled(tile)
            .magnitude(3.0)
            .bias([2, 1, 19, 41])
            .key_lengths(vec![41, 7])
            .opts(|o| {
                o.softcap = Some(4.0);
                o.window = Some(Window::symmetric(9));
                o.dropout = Some(Dropout { p: 0.25, seed: 11 });
                o.alibi_slopes = Some(vec![0.5, 0.125].into());
            }),
    ]);
}

/// The same call twice gives the same bits (no atomics, fixed reduction order).
#[test]
fn every_design_is_deterministic() {
    let ctx = ctx();
    let p = problem(1, 4, 2, 45, 77, 32, 32);
    let [qs, ks, vs] = p.qkv_shapes();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let t = |s: &[usize; 4], rng: &mut rand_chacha::ChaCha8Rng| {
        wgpu_attention::Tensor::from_slice(ctx, &random(rng, s.iter().product(), 1.0), s).unwrap()
    };
    let (q, k, v) = (t(&qs, &mut rng), t(&ks, &mut rng), t(&vs, &mut rng));
    for design in available_designs(ctx, DType::F32) {
        let opts = AttentionOptions {
            kernel: KernelChoice::Fused,
            design: Some(design),
            causal: Some(wgpu_attention::Alignment::TopLeft),
            dropout: Some(Dropout { p: 0.1, seed: 5 }),
            return_lse: true,
            ..Default::default()
        };
        let run = || {
            let out = attention(ctx, &q, &k, &v, &opts).unwrap();
            (
                out.out.to_vec::<f32>(ctx).unwrap(),
                out.lse.unwrap().to_vec::<f32>(ctx).unwrap(),
            )
        };
        let (first, second) = (run(), run());
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&first.0), bits(&second.0), "{design}: O differs between runs");
        assert_eq!(bits(&first.1), bits(&second.1), "{design}: LSE differs between runs");
    }
}

/// The output names the design that ran; a design the adapter lacks falls back with a note; an
/// explicit tile selects its design.
#[test]
fn the_output_names_the_design_and_fallbacks_say_why() {
    let ctx = ctx();
    let p = problem(1, 2, 2, 9, 9, 8, 8);
    let [qs, ..] = p.qkv_shapes();
    let x = wgpu_attention::Tensor::from_slice(ctx, &vec![0.25f32; qs.iter().product()], &qs).unwrap();
    let run = |design: Option<Design>, tuning: Tuning| {
        let opts = AttentionOptions {
            kernel: KernelChoice::Fused,
            design,
            ..Default::default()
        };
        let call = wgpu_attention::Attention::with_tuning(ctx, &x, &x, &x, &opts, &tuning).unwrap();
        call.submit().unwrap();
        call.into_output()
    };
    let available = available_designs(ctx, DType::F32);
    for design in Design::ALL {
        let out = run(Some(design), Tuning::default());
        match available.contains(&design) {
            true => {
                assert_eq!(out.design, Some(design));
                assert!(out.design_note.is_none(), "{design}: {:?}", out.design_note);
            }
            false => {
                let note = out
                    .design_note
                    .unwrap_or_else(|| panic!("{design} fell back without a note"));
                assert!(note.starts_with(&format!("{design} design unavailable")), "{note}");
                assert!(out.design.is_some_and(|d| available.contains(&d)));
            }
        }
    }
    if available.contains(&Design::Tiled) {
        let tuning = Tuning {
            tiled: Some(TiledConfig::new(8, 8, 2)),
            ..Default::default()
        };
        assert_eq!(run(None, tuning).design, Some(Design::Tiled));
    }
    let tuning = Tuning {
        flash: Some(wgpu_attention::FlashConfig::new(16, 2)),
        ..Default::default()
    };
    assert_eq!(run(None, tuning).design, Some(Design::Register));
    // CPU adapters run the register design by default (without a tuning cache entry).
    if ctx.info().adapter.as_ref().unwrap().device_type == wgpu_attention::wgpu::DeviceType::Cpu {
        assert_eq!(run(None, Tuning::default()).design, Some(Design::Register));
    }
}

/// A tile whose workgroup memory exceeds the device's is a clear error before any dispatch, and
/// an invalid tile names the rule it breaks.
#[test]
fn oversized_and_invalid_tiles_are_errors() {
    let ctx = ctx();
    let p = problem(1, 1, 1, 8, 8, 256, 256);
    let [qs, ..] = p.qkv_shapes();
    let x = wgpu_attention::Tensor::from_slice(ctx, &vec![0.5f32; qs.iter().product()], &qs).unwrap();
    let opts = AttentionOptions {
        kernel: KernelChoice::Fused,
        design: Some(Design::Tiled),
        ..Default::default()
    };
    require!(Cap::Tiled);
    let with = |tile| {
        let tuning = Tuning {
            tiled: Some(tile),
            ..Default::default()
        };
        wgpu_attention::Attention::with_tuning(ctx, &x, &x, &x, &opts, &tuning).map(|_| ())
    };
    let big = TiledConfig::new(64, 64, 4);
    assert!(big.shared_bytes(256, 256) > ctx.limits().max_compute_workgroup_storage_size as u64);
    assert!(matches!(with(big), Err(Error::Limit { .. })), "{:?}", with(big));
    let ragged = TiledConfig::new(8, 10, 4); // block_k not a multiple of lanes
    assert!(
        matches!(with(ragged), Err(Error::InvalidOption { .. })),
        "{:?}",
        with(ragged)
    );
    // The built-in tile always fits.
    let cfg = TiledConfig::default_for(ctx, 256, 256).unwrap();
    assert!(cfg.shared_bytes(256, 256) <= ctx.limits().max_compute_workgroup_storage_size as u64);
    with(cfg).unwrap();
}

/// f16 storage on the tiled design (f32 tiles in workgroup memory).
#[test]
fn tiled_f16() {
    require!(Cap::Tiled);
    require!(Cap::F16);
    let tile = TiledConfig::new(16, 16, 4);
    check_all([
        Case::new(problem(1, 4, 2, 37, 53, 64, 64))
            .dtype(DType::F16)
            .kernel(KernelChoice::Fused)
            .tiled(tile),
        Case::new(problem(2, 2, 2, 20, 20, 32, 16))
            .dtype(DType::F16)
            .kernel(KernelChoice::Fused)
            .tiled(tile)
            .bias([1, 2, 20, 20])
            .opts(|o| o.causal = Some(wgpu_attention::Alignment::TopLeft)),
    ]);
}
