//! `merge_attention_states`: the GPU merge against its CPU twin, and split-key attention merged
//! back equals attention over every key.

mod common;
use common::skip::Cap;
use common::*;
use wgpu_attention::reference::{self, HostInputs, Tolerance};
use wgpu_attention::{
    attention, merge_attention_states, Alignment, AttentionOptions, DType, Error, KernelChoice, Tensor,
};

fn host_parts(parts: &[(Vec<f32>, Vec<f32>)]) -> Vec<(&[f32], &[f32])> {
    parts.iter().map(|(o, l)| (o.as_slice(), l.as_slice())).collect()
}

#[test]
fn gpu_merge_matches_the_cpu_twin() {
    let ctx = ctx();
    let (b, h, l, d) = (2, 3, 5, 7);
    let rows = b * h * l;
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    let mut parts: Vec<(Vec<f32>, Vec<f32>)> = (0..4)
        .map(|_| (random(&mut rng, rows * d, 1.0), random(&mut rng, rows, 5.0)))
        .collect();
    // Row 0: every part empty; row 1: one part empty; row 2: a NaN LSE; row 3: NaN in one O of a
    // part that weighs; row 4: +inf LSE.
    for p in parts.iter_mut() {
        p.1[0] = f32::NEG_INFINITY;
    }
    parts[2].1[1] = f32::NEG_INFINITY;
    parts[1].1[2] = f32::NAN;
    parts[3].0[3 * d + 2] = f32::NAN;
    parts[0].1[4] = f32::INFINITY;
    for dtype in [DType::F32, DType::F16] {
        if dtype == DType::F16 && !common::skip::has_for(Cap::F16, "f16 parts") {
            continue;
        }
        let parts: Vec<(Vec<f32>, Vec<f32>)> = match dtype {
            DType::F16 => parts.iter().map(|(o, x)| (round_f16(o), x.clone())).collect(),
            _ => parts.clone(),
        };
        let tensors: Vec<(Tensor, Tensor)> = parts
            .iter()
            .map(|(o, x)| {
                (
                    upload(ctx, o, &[b, h, l, d], dtype),
                    Tensor::from_slice(ctx, x, &[b, h, l]).unwrap(),
                )
            })
            .collect();
        let refs: Vec<(&Tensor, &Tensor)> = tensors.iter().map(|(o, x)| (o, x)).collect();
        let (o, lse) = merge_attention_states(ctx, &refs).unwrap();
        assert_eq!(o.dtype(), dtype);
        assert_eq!(o.shape(), [b, h, l, d]);
        let (eo, el) = reference::merge_states(&host_parts(&parts), rows, d);
        let tol = if dtype == DType::F16 {
            Tolerance::F16
        } else {
            Tolerance::F32
        };
        let c = reference::compare(&o.to_f32_vec(ctx).unwrap(), &eo, tol);
        assert!(c.ok(), "{dtype:?} O: {c}");
        let c = reference::compare(&lse.to_vec::<f32>(ctx).unwrap(), &el, Tolerance::F32);
        assert!(c.ok(), "{dtype:?} LSE: {c}");
        assert!(el[0] == f64::NEG_INFINITY && eo[..d].iter().all(|&x| x == 0.0));
        assert!(el[2].is_nan() && eo[2 * d..3 * d].iter().all(|x| x.is_nan()));
        assert!(el[3].is_finite() && eo[3 * d + 2].is_nan() && eo[3 * d + 1].is_finite());
        assert!(el[4].is_nan());
    }
}

/// Attention over keys [0, n) equals the merge of attention over [0, m) and [m, n), on every
/// kernel, with causal masks, key lengths that leave a part with no key, and strided parts.
#[test]
fn split_keys_merge_to_the_whole() {
    let ctx = ctx();
    for (kernel, lq, causal, lens) in [
        (KernelChoice::Decode, 1, None, None),
        (KernelChoice::Fused, 9, Some(Alignment::BottomRight), None),
        (KernelChoice::Decode, 3, None, Some(vec![20u32, 5])), // batch 1: the second part is empty
        (KernelChoice::Staged, 4, None, None),
    ] {
        let p = problem(2, 4, 2, lq, 37, 16, 8);
        let m = 20;
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
        let [qs, ks, vs] = p.qkv_shapes();
        let q = Tensor::from_slice(ctx, &random(&mut rng, qs.iter().product(), 1.0), &qs).unwrap();
        let k = Tensor::from_slice(ctx, &random(&mut rng, ks.iter().product(), 1.0), &ks).unwrap();
        let v = Tensor::from_slice(ctx, &random(&mut rng, vs.iter().product(), 1.0), &vs).unwrap();
        let keys = |t: &Tensor, from: usize, to: usize| {
            let s = t.strides().to_vec();
            let sh = t.shape();
            t.view(from * s[2], &[sh[0], sh[1], to - from, sh[3]], &s).unwrap()
        };
        let lengths = |shift: u32| {
            lens.as_ref().map(|l| {
                Tensor::from_slice(
                    ctx,
                    &l.iter().map(|x| x.saturating_sub(shift)).collect::<Vec<_>>(),
                    &[2],
                )
                .unwrap()
            })
        };
        let opts = |lengths: Option<Tensor>| AttentionOptions {
            kernel,
            return_lse: true,
            key_lengths: lengths,
            ..Default::default()
        };
        let whole_opts = AttentionOptions {
            causal,
            ..opts(lengths(0))
        };
        let whole = attention(ctx, &q, &k, &v, &whole_opts).unwrap();
        // Bottom-right causal relative to all 37 keys, as a boolean mask over each part.
        let first_mask = causal.map(|_| {
            let bits: Vec<bool> = (0..lq * m)
                .map(|e| (e % m) as i64 <= (e / m) as i64 + 37 - lq as i64)
                .collect();
            Tensor::from_slice(ctx, &bits, &[lq, m]).unwrap()
        });
        let second_mask = causal.map(|_| {
            let n = 37 - m;
            let bits: Vec<bool> = (0..lq * n)
                .map(|e| (m + e % n) as i64 <= (e / n) as i64 + 37 - lq as i64)
                .collect();
            Tensor::from_slice(ctx, &bits, &[lq, n]).unwrap()
        });
        let first_opts = AttentionOptions {
            mask: first_mask,
            ..opts(lengths(0))
        };
        let second_opts = AttentionOptions {
            mask: second_mask,
            ..opts(lengths(m as u32))
        };
        let a = attention(ctx, &q, &keys(&k, 0, m), &keys(&v, 0, m), &first_opts).unwrap();
        let b = attention(ctx, &q, &keys(&k, m, 37), &keys(&v, m, 37), &second_opts).unwrap();
        let (o, lse) = merge_attention_states(
            ctx,
            &[(&a.out, a.lse.as_ref().unwrap()), (&b.out, b.lse.as_ref().unwrap())],
        )
        .unwrap();
        let expected_o: Vec<f64> = whole
            .out
            .to_vec::<f32>(ctx)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let expected_l: Vec<f64> = whole
            .lse
            .unwrap()
            .to_vec::<f32>(ctx)
            .unwrap()
            .iter()
            .map(|&x| x as f64)
            .collect();
        let tol = Tolerance { abs: 4e-5, rel: 4e-4 };
        let c = reference::compare(&o.to_vec::<f32>(ctx).unwrap(), &expected_o, tol);
        assert!(c.ok(), "{kernel:?} O: {c}");
        let c = reference::compare(&lse.to_vec::<f32>(ctx).unwrap(), &expected_l, tol);
        assert!(c.ok(), "{kernel:?} LSE: {c}");
        // And against the reference over all keys.
        let host = |t: &Tensor| t.to_vec::<f32>(ctx).unwrap();
        let (qh, kh, vh) = (host(&q), host(&k), host(&v));
        let r = reference::sdpa(
            &HostInputs {
                key_lengths: lens.as_deref(),
                ..HostInputs::new(p, &qh, &kh, &vh)
            },
            &AttentionOptions {
                causal,
                ..Default::default()
            },
        );
        let c = reference::compare(&o.to_vec::<f32>(ctx).unwrap(), &r.out, tol);
        assert!(c.ok(), "{kernel:?} O vs reference: {c}");
    }
}

#[test]
fn merge_errors() {
    let ctx = ctx();
    let o = Tensor::zeros(ctx, &[1, 2, 3, 4], DType::F32).unwrap();
    let l = Tensor::zeros(ctx, &[1, 2, 3], DType::F32).unwrap();
    let e = merge_attention_states(ctx, &[]).unwrap_err();
    assert!(matches!(e, Error::InvalidOption { name: "parts", .. }), "{e}");
    let o2 = Tensor::zeros(ctx, &[1, 2, 3, 5], DType::F32).unwrap();
    let e = merge_attention_states(ctx, &[(&o, &l), (&o2, &l)]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "o", .. }), "{e}");
    let l2 = Tensor::zeros(ctx, &[1, 2, 4], DType::F32).unwrap();
    let e = merge_attention_states(ctx, &[(&o, &l2)]).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { name: "lse", .. }), "{e}");
    let oh = Tensor::zeros(ctx, &[1, 2, 3, 4], DType::F16).unwrap();
    let e = merge_attention_states(ctx, &[(&o, &l), (&oh, &l)]).unwrap_err();
    assert!(matches!(e, Error::DType { name: "o", .. }), "{e}");
    let lu = Tensor::zeros(ctx, &[1, 2, 3], DType::U32).unwrap();
    let e = merge_attention_states(ctx, &[(&o, &lu)]).unwrap_err();
    assert!(matches!(e, Error::DType { name: "lse", .. }), "{e}");
    let o3 = Tensor::zeros(ctx, &[2, 3, 4], DType::F32).unwrap();
    let e = merge_attention_states(ctx, &[(&o3, &l)]).unwrap_err();
    assert!(matches!(e, Error::Rank { .. }), "{e}");
    // One part: the identity (a −∞ row stays empty).
    let (mo, ml) = merge_attention_states(ctx, &[(&o, &l)]).unwrap();
    assert_eq!(mo.to_vec::<f32>(ctx).unwrap(), vec![0.0; 24]);
    assert_eq!(ml.to_vec::<f32>(ctx).unwrap(), vec![0.0; 6]);
    // Empty rows: empty outputs.
    let oe = Tensor::zeros(ctx, &[0, 2, 3, 4], DType::F32).unwrap();
    let le = Tensor::zeros(ctx, &[0, 2, 3], DType::F32).unwrap();
    let (mo, _) = merge_attention_states(ctx, &[(&oe, &le)]).unwrap();
    assert_eq!(mo.shape(), [0, 2, 3, 4]);
}
