//! ALiBi slopes (`AttentionOptions::alibi_slopes`, [Hq] or [B, Hq]) on every kernel path
//! against the CPU reference, against an explicit bias tensor, and its errors.

mod common;
use common::*;
use wgpu_attention::{
    alibi_slopes, attention, AlibiSlopes, Alignment, AttentionOptions, DType, Error, KernelChoice, Tensor, Window,
};

const PATHS: [KernelChoice; 3] = [KernelChoice::Fused, KernelChoice::Staged, KernelChoice::Decode];

/// Slopes large enough that a wrong distance or sign moves the output past the tolerance.
fn steep(heads: usize) -> Vec<f32> {
    (0..heads).map(|h| 0.9 / (h as f32 + 1.0)).collect()
}

#[test]
fn recipe_slopes() {
    let eight: Vec<f32> = (1..=8).map(|i| 0.5f32.powi(i)).collect();
    assert_eq!(alibi_slopes(8), eight);
    // 12 heads: the 8 of n = 8, then every other slope of n = 16 (2^-0.5, 2^-1.5, ...).
    let twelve = alibi_slopes(12);
    assert_eq!(&twelve[..8], &eight[..]);
    for (k, s) in twelve[8..].iter().enumerate() {
        let expected = 2f64.powf(-((2 * k + 1) as f64) / 2.0) as f32;
        assert!(
            (s - expected).abs() <= f32::EPSILON * expected,
            "slope {k}: {s} vs {expected}"
        );
    }
    assert!(alibi_slopes(0).is_empty());
    assert_eq!(alibi_slopes(1), vec![2f32.powi(-8)]);
}

#[test]
fn every_path_matches_the_reference() {
    let mut cases = Vec::new();
    for kernel in PATHS {
        let p = problem(2, 4, 2, 3, 37, 16, 16);
        let alibi = |c: Case| c.kernel(kernel).opts(|o| o.alibi_slopes = Some(steep(4).into()));
        cases.extend([
            alibi(Case::new(p)),
            // Lq ≠ Lk: distances from the bottom-right aligned position, with both causal alignments.
            alibi(Case::new(p)).opts(|o| o.causal = Some(Alignment::BottomRight)),
            alibi(Case::new(p)).opts(|o| o.causal = Some(Alignment::TopLeft)),
            alibi(Case::new(problem(1, 8, 1, 2, 29, 8, 12))).opts(|o| o.alibi_slopes = Some(alibi_slopes(8).into())),
            // After the soft cap and the bias.
            alibi(Case::new(p)).bias([1, 4, 3, 37]).opts(|o| o.softcap = Some(2.0)),
            // Per-sequence alignment to the key lengths (a KV cache of uneven lengths).
            alibi(Case::new(p)).key_lengths(vec![30, 5]).opts(|o| {
                o.causal = Some(Alignment::BottomRight);
                o.align_to_key_lengths = true;
            }),
            alibi(Case::new(p))
                .key_lengths(vec![0, 12])
                .opts(|o| o.window = Some(Window::causal_local(4, Alignment::BottomRight))),
            alibi(Case::new(p)).dtype(DType::F16),
            // Zero and negative slopes are numbers like any other.
            alibi(Case::new(p)).opts(|o| o.alibi_slopes = Some(vec![0.0, -0.3, 0.5, 0.0].into())),
            // [B, Hq] slopes (FlashAttention's (batch, nheads)): each batch its own, here the
            // second batch's reversed, so a slope read from the wrong batch moves the output.
            alibi(Case::new(p)).opts(|o| {
                let mut per_batch = steep(4);
                per_batch.extend(steep(4).into_iter().rev());
                o.alibi_slopes = Some(AlibiSlopes::per_batch(2, per_batch));
            }),
            alibi(Case::new(problem(3, 2, 1, 2, 23, 8, 8)))
                .key_lengths(vec![23, 4, 11])
                .opts(|o| {
                    o.alibi_slopes = Some(AlibiSlopes::per_batch(3, vec![0.9, 0.1, 0.0, 0.5, 0.3, 0.7]));
                    o.causal = Some(Alignment::BottomRight);
                    o.align_to_key_lengths = true;
                }),
        ]);
    }
    // The decode path's cases again over paged K/V.
    let paged: Vec<Case> = cases
        .iter()
        .filter(|c| c.opts.kernel == KernelChoice::Decode)
        .cloned()
        .map(Case::paged)
        .collect();
    cases.extend(paged);
    check_all(cases);
}

/// ALiBi gives the same O as the bias tensor −slope_h·|i + Lk − Lq − j| on every path.
#[test]
fn equals_the_explicit_bias() {
    let ctx = common::ctx();
    let (b, h, lq, lk, d) = (1, 3, 4, 19, 8);
    let slopes = vec![0.7, 0.25, 1.5];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let q = Tensor::from_slice(ctx, &random(&mut rng, b * h * lq * d, 1.0), &[b, h, lq, d]).unwrap();
    let k = Tensor::from_slice(ctx, &random(&mut rng, b * h * lk * d, 1.0), &[b, h, lk, d]).unwrap();
    let v = Tensor::from_slice(ctx, &random(&mut rng, b * h * lk * d, 1.0), &[b, h, lk, d]).unwrap();
    let mut bias = Vec::new();
    for s in &slopes {
        for i in 0..lq {
            for j in 0..lk {
                let pos = (i + lk - lq) as f32;
                bias.push(-s * (pos - j as f32).abs());
            }
        }
    }
    let bias = Tensor::from_slice(ctx, &bias, &[1, h, lq, lk]).unwrap();
    for kernel in PATHS {
        let with_alibi = AttentionOptions {
            alibi_slopes: Some(slopes.clone().into()),
            kernel,
            ..Default::default()
        };
        let with_bias = AttentionOptions {
            bias: Some(bias.clone()),
            kernel,
            ..Default::default()
        };
        let a: Vec<f32> = attention(ctx, &q, &k, &v, &with_alibi)
            .unwrap()
            .out
            .to_vec(ctx)
            .unwrap();
        let e: Vec<f32> = attention(ctx, &q, &k, &v, &with_bias).unwrap().out.to_vec(ctx).unwrap();
        let worst = a.iter().zip(&e).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(worst < 1e-5, "{kernel:?}: ALiBi differs from its bias by {worst}");
    }
}

#[test]
fn bad_slopes_are_refused() {
    let ctx = common::ctx();
    let t = |shape: &[usize]| Tensor::zeros(ctx, shape, DType::F32).unwrap();
    let (q, k) = (t(&[1, 4, 2, 8]), t(&[1, 2, 5, 8]));
    let call = |slopes: Vec<f32>| {
        let opts = AttentionOptions {
            alibi_slopes: Some(slopes.into()),
            ..Default::default()
        };
        attention(ctx, &q, &k, &k, &opts).map(|_| ())
    };
    assert!(matches!(
        call(vec![0.5; 2]),
        Err(Error::ShapeMismatch {
            name: "alibi_slopes",
            ..
        })
    ));
    assert!(matches!(
        call(vec![0.5, f32::NAN, 0.1, 0.1]),
        Err(Error::InvalidOption {
            name: "alibi_slopes",
            ..
        })
    ));
    assert!(matches!(
        call(vec![0.5, f32::INFINITY, 0.1, 0.1]),
        Err(Error::InvalidOption {
            name: "alibi_slopes",
            ..
        })
    ));
    let many = AttentionOptions {
        alibi_slopes: Some(vec![0.1; 4097].into()),
        ..Default::default()
    };
    let (q4097, k1) = (t(&[1, 4097, 1, 4]), t(&[1, 1, 3, 4]));
    assert!(matches!(
        attention(ctx, &q4097, &k1, &k1, &many),
        Err(Error::Limit { .. })
    ));

    // [B, Hq] slopes: the batch must be the call's, the values B · Hq, and B · Hq ≤ 4096.
    let per_batch = |b: usize, values: Vec<f32>| AttentionOptions {
        alibi_slopes: Some(AlibiSlopes::per_batch(b, values)),
        ..Default::default()
    };
    let e = attention(ctx, &q, &k, &k, &per_batch(2, vec![0.5; 8])).unwrap_err();
    assert!(
        matches!(&e, Error::ShapeMismatch { name: "alibi_slopes", expected, got } if *expected == vec![1, 4] && *got == vec![2, 4]),
        "{e}"
    );
    let e = attention(ctx, &q, &k, &k, &per_batch(1, vec![0.5; 3])).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::ShapeMismatch {
                name: "alibi_slopes",
                ..
            }
        ),
        "{e}"
    );
    let e = attention(ctx, &q, &k, &k, &per_batch(3, vec![0.5; 4])).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidOption {
                name: "alibi_slopes",
                ..
            }
        ),
        "{e}"
    );
    let (q, k) = (t(&[2, 2049, 1, 4]), t(&[2, 1, 3, 4]));
    let e = attention(ctx, &q, &k, &k, &per_batch(2, vec![0.1; 2 * 2049])).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Limit {
                needed: 4098,
                max: 4096,
                ..
            }
        ) && e.to_string().contains("B·Hq"),
        "{e}"
    );
}
