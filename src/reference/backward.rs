//! Reference gradients of scaled dot-product attention (docs/ATTENTION.md §10), naive and in f64,
//! from the definition: the forward's probabilities P come from [`super::sdpa`] (dropout off),
//! then every gradient is a plain sum over the materialized matrices.

use super::sdpa::{sdpa, HostInputs, HostScore};
use crate::error::{Error, Result};
use crate::options::AttentionOptions;

/// Reference gradients, in f64, row-major.
#[derive(Debug, Clone)]
pub struct ReferenceGradients {
    /// dQ [B, Hq, Lq, Dk].
    pub dq: Vec<f64>,
    /// dK [B, Hkv, Lk, Dk], summed over the query heads of each group.
    pub dk: Vec<f64>,
    /// dV [B, Hkv, Lk, Dv], summed over the query heads of each group.
    pub dv: Vec<f64>,
    /// dBias with the shape of `inputs.bias` (summed over its broadcast axes), when a bias is given.
    pub dbias: Option<Vec<f64>>,
}

/// The gradients of L = Σ dO ∘ O with respect to Q, K, V and the bias, for attention with the
/// inputs and scalar options of [`super::sdpa`] and the output gradient `d_out` [B, Hq, Lq, Dv].
///
/// With P the softmax probabilities, Z the dropout factors (0 or 1 / (1 − p)), t = tanh(s / c) of
/// the soft cap and scale σ:
/// dV = (P ∘ Z)ᵀ dO, dP = Z ∘ (dO Vᵀ), dS = P ∘ (dP − rowsum(P ∘ dP)), dBias = dS (summed over
/// broadcast axes), dS′ = dS ∘ (1 − t²) with a cap (dS otherwise), dQ = σ dS′ K, dK = σ dS′ᵀ Q.
/// A pair of probability 0 (masked, or a row with no key taking part) contributes nothing.
///
/// Only the dot-product score without local-p windows has a gradient here
/// ([`Error::Unsupported`] otherwise).
pub fn sdpa_backward(inputs: &HostInputs, opts: &AttentionOptions, d_out: &[f32]) -> Result<ReferenceGradients> {
    if !matches!(inputs.score, HostScore::Dot) || inputs.local.is_some() {
        return Err(Error::Unsupported(
            "reference gradients exist for the scaled dot-product score only".into(),
        ));
    }
    let p = inputs.problem;
    if d_out.len() != p.b * p.hq * p.lq * p.dv {
        return Err(Error::ShapeMismatch {
            name: "d_out",
            expected: vec![p.b, p.hq, p.lq, p.dv],
            got: vec![d_out.len()],
        });
    }
    let group = p.hq / p.hkv;
    let scale = opts.scale.map_or(1.0 / (p.dk as f64).sqrt(), |s| s as f64);
    let dropout = opts.dropout.filter(|d| d.p > 0.0);
    // P without dropout; dropout enters through Z below.
    let plain = AttentionOptions {
        dropout: None,
        ..opts.clone()
    };
    let probs = sdpa(inputs, &plain).weights;
    let mut dq = vec![0.0; p.b * p.hq * p.lq * p.dk];
    let mut dk = vec![0.0; p.b * p.hkv * p.lk * p.dk];
    let mut dv = vec![0.0; p.b * p.hkv * p.lk * p.dv];
    let mut dbias = inputs.bias.map(|b| vec![0.0; b.data.len()]);
    let (q, k, v) = (inputs.q, inputs.k, inputs.v);
    let mut d_p = vec![0.0; p.lk];
    for b in 0..p.b {
        for h in 0..p.hq {
            let hk = h / group;
            for i in 0..p.lq {
                let row = (b * p.hq + h) * p.lq + i;
                let dout = &d_out[row * p.dv..(row + 1) * p.dv];
                let qrow = &q[row * p.dk..(row + 1) * p.dk];
                let pr = &probs[row * p.lk..(row + 1) * p.lk];
                let z = |j: usize| match dropout {
                    Some(d) => match super::philox::dropout_keeps(d.seed, d.threshold(), b, h, i, j) {
                        true => 1.0 / (1.0 - d.p as f64),
                        false => 0.0,
                    },
                    None => 1.0,
                };
                let kv_row = |j: usize| (b * p.hkv + hk) * p.lk + j;
                // dV and dP.
                for j in 0..p.lk {
                    if pr[j] == 0.0 {
                        d_p[j] = 0.0;
                        continue;
                    }
                    let vr = kv_row(j) * p.dv;
                    let zj = z(j);
                    let mut dot = 0.0;
                    for c in 0..p.dv {
                        dv[vr + c] += pr[j] * zj * dout[c] as f64;
                        dot += dout[c] as f64 * v[vr + c] as f64;
                    }
                    d_p[j] = zj * dot;
                }
                let d_sum: f64 = (0..p.lk).filter(|&j| pr[j] != 0.0).map(|j| pr[j] * d_p[j]).sum();
                // dS, dBias, then through the cap to dQ and dK.
                for j in 0..p.lk {
                    if pr[j] == 0.0 {
                        continue;
                    }
                    let mut ds = pr[j] * (d_p[j] - d_sum);
                    if let (Some(db), Some(bias)) = (dbias.as_mut(), inputs.bias.as_ref()) {
                        let [sb, sh, lq, lk] = bias.shape;
                        let (bb, bh) = (if sb == 1 { 0 } else { b }, if sh == 1 { 0 } else { h });
                        db[((bb * sh + bh) * lq + i) * lk + j] += ds;
                    }
                    let kr = kv_row(j) * p.dk;
                    if let Some(c) = opts.softcap {
                        let raw: f64 = scale * (0..p.dk).map(|d| qrow[d] as f64 * k[kr + d] as f64).sum::<f64>();
                        let t = (raw / c as f64).tanh();
                        ds *= 1.0 - t * t;
                    }
                    for d in 0..p.dk {
                        dq[row * p.dk + d] += scale * ds * k[kr + d] as f64;
                        dk[kr + d] += scale * ds * qrow[d] as f64;
                    }
                }
            }
        }
    }
    Ok(ReferenceGradients { dq, dk, dv, dbias })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::Problem;
    use crate::options::{Alignment, Dropout, Window};
    use crate::reference::{Broadcast, HostInputs};

    /// A deterministic pseudo-random vector in (−1, 1).
    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                ((x >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// L = Σ dO ∘ O of the reference forward.
    fn loss(inputs: &HostInputs, opts: &AttentionOptions, d_out: &[f32]) -> f64 {
        let o = sdpa(inputs, opts).out;
        o.iter().zip(d_out).map(|(o, d)| o * *d as f64).sum()
    }

    /// Central differences of `loss` in every element of the operand `which` selects.
    fn numeric(base: &HostInputs, opts: &AttentionOptions, d_out: &[f32], which: usize, data: &[f32]) -> Vec<f64> {
        let mut x = data.to_vec();
        let mut grad = vec![0.0; x.len()];
        for e in 0..x.len() {
            let orig = x[e];
            let step = 1e-3f32;
            let (hi, lo) = (orig + step, orig - step);
            let mut eval = |val: f32| {
                x[e] = val;
                let mut inputs = *base;
                match which {
                    0 => inputs.q = &x,
                    1 => inputs.k = &x,
                    2 => inputs.v = &x,
                    _ => {
                        inputs.bias = Some(Broadcast {
                            data: &x,
                            shape: base.bias.expect("a bias").shape,
                        })
                    }
                }
                loss(&inputs, opts, d_out)
            };
            let (l_hi, l_lo) = (eval(hi), eval(lo));
            x[e] = orig;
            grad[e] = (l_hi - l_lo) / (hi as f64 - lo as f64);
        }
        grad
    }

    fn assert_close(name: &str, analytic: &[f64], numeric: &[f64]) {
        assert_eq!(analytic.len(), numeric.len(), "{name}: lengths");
        let mut nonzero = 0;
        for (e, (a, n)) in analytic.iter().zip(numeric).enumerate() {
            assert!(
                (a - n).abs() <= 2e-4 + 2e-3 * n.abs(),
                "{name}[{e}]: analytic {a:e}, central difference {n:e}"
            );
            nonzero += (n.abs() > 1e-6) as usize;
        }
        assert!(nonzero > 0, "{name}: every gradient is zero, the check proves nothing");
    }

    fn check(p: Problem, opts: &AttentionOptions, bias_shape: Option<[usize; 4]>, mask: Option<[usize; 4]>) {
        let [qs, ks, vs] = p.qkv_shapes();
        let q = data(qs.iter().product(), 1);
        let k = data(ks.iter().product(), 2);
        let v = data(vs.iter().product(), 3);
        let d_out = data(p.b * p.hq * p.lq * p.dv, 4);
        let bias = bias_shape.map(|s| data(s.iter().product(), 5));
        let mask_data: Option<Vec<bool>> = mask.map(|s| (0..s.iter().product()).map(|e: usize| e % 5 != 2).collect());
        let mut inputs = HostInputs::new(p, &q, &k, &v);
        inputs.bias = bias
            .as_deref()
            .zip(bias_shape)
            .map(|(data, shape)| Broadcast { data, shape });
        inputs.mask = mask_data
            .as_deref()
            .zip(mask)
            .map(|(data, shape)| Broadcast { data, shape });
        let g = sdpa_backward(&inputs, opts, &d_out).unwrap();
        assert_close("dq", &g.dq, &numeric(&inputs, opts, &d_out, 0, &q));
        assert_close("dk", &g.dk, &numeric(&inputs, opts, &d_out, 1, &k));
        assert_close("dv", &g.dv, &numeric(&inputs, opts, &d_out, 2, &v));
        if let Some(b) = &bias {
            assert_close(
                "dbias",
                g.dbias.as_ref().unwrap(),
                &numeric(&inputs, opts, &d_out, 3, b),
            );
        }
    }

    fn problem(hq: usize, hkv: usize, lq: usize, lk: usize, dk: usize, dv: usize) -> Problem {
        Problem {
            b: 2,
            hq,
            hkv,
            lq,
            lk,
            dk,
            dv,
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        check(problem(2, 1, 3, 4, 3, 2), &AttentionOptions::default(), None, None);
    }

    #[test]
    fn masks_cap_bias_and_dropout_match_central_differences() {
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            softcap: Some(1.5),
            scale: Some(1.3),
            ..Default::default()
        };
        check(problem(2, 2, 3, 5, 2, 3), &opts, Some([1, 2, 3, 5]), Some([2, 1, 3, 5]));
        let opts = AttentionOptions {
            window: Some(Window::symmetric(1)),
            dropout: Some(Dropout { p: 0.3, seed: 11 }),
            ..Default::default()
        };
        check(problem(3, 1, 4, 3, 2, 2), &opts, Some([2, 1, 4, 3]), None);
    }

    #[test]
    fn fully_masked_rows_have_zero_gradients() {
        let p = problem(1, 1, 2, 3, 2, 2);
        let (q, k, v) = (data(8, 1), data(12, 2), data(12, 3));
        let mask: Vec<bool> = (0..6).map(|e| e >= 3).collect(); // row 0 sees no key
        let mut inputs = HostInputs::new(p, &q, &k, &v);
        inputs.mask = Some(Broadcast {
            data: &mask,
            shape: [1, 1, 2, 3],
        });
        let g = sdpa_backward(&inputs, &AttentionOptions::default(), &data(8, 4)).unwrap();
        for b in 0..2 {
            assert!(g.dq[b * 4..b * 4 + 2].iter().all(|&x| x == 0.0), "{:?}", g.dq);
            assert!(g.dq[b * 4 + 2..b * 4 + 4].iter().any(|&x| x != 0.0));
        }
        assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|x| x.is_finite()));
    }
}
