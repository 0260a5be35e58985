//! Awkward shapes, head dims, GQA ratios, magnitudes and layouts on both paths.

mod common;
use common::*;
use wgpu_attention::{attention, Alignment, AttentionOptions, DType, FlashConfig, KernelChoice, Tensor};

fn both(case: Case) -> [Case; 2] {
    [
        case.clone()
            .kernel(KernelChoice::Staged)
            .opts(|o| o.return_weights = true),
        case.kernel(KernelChoice::Fused),
    ]
}

#[test]
fn awkward_lengths() {
    let mut cases = Vec::new();
    for (lq, lk) in [(1, 1), (1, 97), (97, 1), (2, 3), (31, 33), (65, 63), (129, 7)] {
        cases.extend(both(
            Case::new(problem(1, 2, 2, lq, lk, 8, 8)).seed(lq as u64 * 1000 + lk as u64),
        ));
        cases.extend(both(
            Case::new(problem(1, 1, 1, lq, lk, 16, 8)).opts(|o| o.causal = Some(Alignment::BottomRight)),
        ));
    }
    check_all(cases);
}

/// Decoding: one query against a long cache, with bottom-right causal and a sliding window.
#[test]
fn decode_one_query_long_keys() {
    check_all([
        Case::new(problem(2, 8, 2, 1, 3001, 64, 64)).kernel(KernelChoice::Fused),
        Case::new(problem(1, 8, 1, 1, 2048, 64, 64))
            .kernel(KernelChoice::Fused)
            .opts(|o| o.causal = Some(Alignment::BottomRight)),
        Case::new(problem(1, 4, 4, 3, 2500, 64, 64))
            .kernel(KernelChoice::Fused)
            .opts(|o| {
                o.causal = Some(Alignment::BottomRight);
                o.window = Some(wgpu_attention::Window::causal_local(100, Alignment::BottomRight));
            }),
        Case::new(problem(1, 2, 1, 1, 1500, 32, 32))
            .kernel(KernelChoice::Staged)
            .opts(|o| o.return_weights = true),
    ]);
}

#[test]
fn gqa_ratios() {
    check_all(
        [(1, 1), (2, 1), (8, 1), (8, 2), (8, 8), (4, 1)]
            .into_iter()
            .flat_map(|(hq, hkv)| both(Case::new(problem(2, hq, hkv, 9, 21, 8, 8)).seed(hq as u64 * 10 + hkv as u64))),
    );
}

/// Every multiple of 8 up to 256, with a tile that compiles fast on CPU drivers (one row per
/// invocation, plain fetch); the default tiles are checked at representative dims below.
#[test]
fn head_dims_fused_every_multiple_of_8() {
    let mut plain = FlashConfig::new(32, 1);
    plain.subgroups = false;
    let cases = (8..=256).step_by(8).map(|d| {
        Case::new(problem(1, 1, 1, 5, 19, d, d))
            .kernel(KernelChoice::Fused)
            .seed(d as u64)
            .tile(plain)
            .opts(|o| o.causal = Some(Alignment::BottomRight))
    });
    check_all(cases);
}

/// The default tile choice (rows per invocation, subgroup fetch) at small, medium and large heads,
/// and explicit tiles covering rows 1..8 with and without subgroups.
#[test]
fn head_dims_fused_default_and_explicit_tiles() {
    let mut cases: Vec<Case> = [64, 128, 256]
        .into_iter()
        .map(|d| {
            Case::new(problem(1, 2, 1, 70, 33, d, d))
                .kernel(KernelChoice::Fused)
                .seed(d as u64)
        })
        .collect();
    for (rows, subgroups) in [(1, true), (3, true), (5, false), (8, true), (8, false)] {
        let mut tile = FlashConfig::new(16, rows);
        tile.subgroups = subgroups;
        cases.push(
            Case::new(problem(2, 2, 2, 41, 29, 32, 32))
                .kernel(KernelChoice::Fused)
                .tile(tile)
                .opts(|o| o.causal = Some(Alignment::TopLeft)),
        );
    }
    check_all(cases);
}

#[test]
fn head_dims_uneven_and_dk_ne_dv() {
    check_all(
        [(3, 5), (8, 64), (64, 8), (40, 24), (100, 12), (256, 128), (1, 1)]
            .into_iter()
            .flat_map(|(dk, dv)| both(Case::new(problem(1, 2, 1, 11, 14, dk, dv)).seed(dk as u64 * 7 + dv as u64))),
    );
}

#[test]
fn head_dims_staged_large() {
    check_all([64, 128, 256].into_iter().map(|d| {
        Case::new(problem(1, 1, 1, 9, 17, d, d))
            .kernel(KernelChoice::Staged)
            .opts(|o| o.return_weights = true)
    }));
}

#[test]
fn large_magnitudes_no_overflow() {
    let mut cases = Vec::new();
    for m in [100.0, 1e4] {
        cases.extend(both(Case::new(problem(1, 2, 2, 13, 29, 16, 16)).magnitude(m)));
        cases.extend(both(
            Case::new(problem(1, 2, 2, 13, 29, 16, 16))
                .magnitude(m)
                .opts(|o| o.causal = Some(Alignment::TopLeft)),
        ));
    }
    cases.push(
        Case::new(problem(1, 2, 2, 13, 29, 16, 16))
            .magnitude(150.0)
            .dtype(DType::F16)
            .kernel(KernelChoice::Fused),
    );
    check_all(cases);
}

#[test]
fn f16_fused_and_staged() {
    check_all([
        Case::new(problem(1, 4, 2, 33, 47, 64, 64))
            .dtype(DType::F16)
            .kernel(KernelChoice::Fused),
        Case::new(problem(2, 2, 2, 8, 8, 128, 64))
            .dtype(DType::F16)
            .kernel(KernelChoice::Fused),
        Case::new(problem(1, 2, 1, 17, 9, 32, 32))
            .dtype(DType::F16)
            .kernel(KernelChoice::Staged)
            .opts(|o| o.return_weights = true),
    ]);
}

#[test]
fn larger_blocks_cross_tiles() {
    check_all([
        Case::new(problem(1, 2, 1, 150, 300, 64, 64))
            .kernel(KernelChoice::Fused)
            .opts(|o| o.causal = Some(Alignment::BottomRight)),
        Case::new(problem(1, 2, 1, 150, 300, 64, 64)).kernel(KernelChoice::Fused),
        Case::new(problem(1, 1, 1, 130, 260, 64, 64))
            .kernel(KernelChoice::Staged)
            .opts(|o| o.causal = Some(Alignment::TopLeft)),
    ]);
}

/// [B, L, H, D] buffers viewed through strides give the same result as [B, H, L, D] copies.
#[test]
fn blhd_layout_through_strides() {
    let ctx = ctx();
    let (b, h, l, d) = (2, 3, 11, 8);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5);
    let blhd = random(&mut rng, b * l * h * d, 1.0);
    let mut bhld = vec![0.0; blhd.len()];
    for bi in 0..b {
        for li in 0..l {
            for hi in 0..h {
                for di in 0..d {
                    bhld[((bi * h + hi) * l + li) * d + di] = blhd[((bi * l + li) * h + hi) * d + di];
                }
            }
        }
    }
    let src = Tensor::from_slice(ctx, &blhd, &[b, l, h, d]).unwrap();
    let view = Tensor::from_blhd(src.buffer(), 0, [b, l, h, d], DType::F32).unwrap();
    let dense = Tensor::from_slice(ctx, &bhld, &[b, h, l, d]).unwrap();
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            kernel,
            causal: Some(Alignment::TopLeft),
            ..Default::default()
        };
        let a = attention(ctx, &view, &view, &view, &opts)
            .unwrap()
            .out
            .to_vec::<f32>(ctx)
            .unwrap();
        let e = attention(ctx, &dense, &dense, &dense, &opts)
            .unwrap()
            .out
            .to_vec::<f32>(ctx)
            .unwrap();
        assert_eq!(a, e, "{kernel:?}");
    }
}

/// Tensors at non-zero offsets inside a caller's buffer.
#[test]
fn tensors_at_offsets_in_one_buffer() {
    let ctx = ctx();
    let (b, h, l, d) = (1, 2, 9, 8);
    let n = b * h * l * d;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
    let data = random(&mut rng, 3 * n + 3, 1.0);
    let packed = Tensor::from_slice(ctx, &data, &[3 * n + 3]).unwrap();
    // Offsets of 1 element: not aligned to the device's storage-offset alignment.
    let at = |i: usize| {
        Tensor::from_buffer(
            packed.buffer(),
            (4 * (1 + i * (n + 1))) as u64,
            &[b, h, l, d],
            DType::F32,
        )
        .unwrap()
    };
    let (q, k, v) = (at(0), at(1), at(2));
    let slice = |i: usize| data[1 + i * (n + 1)..1 + i * (n + 1) + n].to_vec();
    let (qd, kd, vd) = (slice(0), slice(1), slice(2));
    let expected = wgpu_attention::reference::sdpa(
        &wgpu_attention::reference::HostInputs {
            problem: problem(b, h, h, l, l, d, d),
            q: &qd,
            k: &kd,
            v: &vd,
            bias: None,
            mask: None,
            key_lengths: None,
            score: Default::default(),
            local: None,
        },
        &AttentionOptions::default(),
    );
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        let got = attention(ctx, &q, &k, &v, &opts)
            .unwrap()
            .out
            .to_vec::<f32>(ctx)
            .unwrap();
        let c = wgpu_attention::reference::compare(&got, &expected.out, wgpu_attention::reference::Tolerance::F32);
        assert!(c.ok(), "{kernel:?}: {c}");
    }
}

/// Same input, same output bits, on both paths.
#[test]
fn bitwise_deterministic() {
    let ctx = ctx();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let x = random(&mut rng, 2 * 4 * 70 * 32, 1.0);
    let q = Tensor::from_slice(ctx, &x, &[2, 4, 70, 32]).unwrap();
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            kernel,
            causal: Some(Alignment::TopLeft),
            return_lse: true,
            ..Default::default()
        };
        let r1 = attention(ctx, &q, &q, &q, &opts).unwrap();
        let r2 = attention(ctx, &q, &q, &q, &opts).unwrap();
        let bits = |t: &Tensor| -> Vec<u32> { t.to_vec::<f32>(ctx).unwrap().iter().map(|f| f.to_bits()).collect() };
        assert_eq!(bits(&r1.out), bits(&r2.out), "{kernel:?} O");
        assert_eq!(
            bits(r1.lse.as_ref().unwrap()),
            bits(r2.lse.as_ref().unwrap()),
            "{kernel:?} LSE"
        );
    }
}

/// Fused and staged agree with each other closely, not only with the reference.
#[test]
fn fused_matches_staged() {
    let ctx = ctx();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
    let [qs, ks, vs] = problem(2, 4, 2, 37, 53, 32, 16).qkv_shapes();
    let q = Tensor::from_slice(ctx, &random(&mut rng, qs.iter().product(), 1.0), &qs).unwrap();
    let k = Tensor::from_slice(ctx, &random(&mut rng, ks.iter().product(), 1.0), &ks).unwrap();
    let v = Tensor::from_slice(ctx, &random(&mut rng, vs.iter().product(), 1.0), &vs).unwrap();
    let run = |kernel| {
        let opts = AttentionOptions {
            kernel,
            causal: Some(Alignment::BottomRight),
            ..Default::default()
        };
        attention(ctx, &q, &k, &v, &opts)
            .unwrap()
            .out
            .to_vec::<f32>(ctx)
            .unwrap()
    };
    let (a, b) = (run(KernelChoice::Fused), run(KernelChoice::Staged));
    let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let c = wgpu_attention::reference::compare(&a, &b64, wgpu_attention::reference::Tolerance { abs: 1e-5, rel: 1e-4 });
    assert!(c.ok(), "{c}");
}
