//! CPU references of the attention family (docs/ATTENTION.md §2–§8), naive and in f64, written from
//! the formulas (not from the GPU algorithms). Score functions, local-p windows, dropout and
//! zero-score masking are options of [`super::sdpa`]; this module holds the rest. Host arrays are
//! row-major f32 slices; results are f64.

use super::philox;
use super::sdpa::{sdpa, HostInputs, HostScore};
use crate::attention::Problem;
use crate::options::AttentionOptions;

/// y = x W (+ bias) for x [rows, k] and W given by `w(k_index, n_index)`, in f64.
pub(crate) fn linear(x: &[f32], k: usize, n: usize, w: impl Fn(usize, usize) -> f64, bias: Option<&[f32]>) -> Vec<f64> {
    let rows = x.len() / k;
    let mut y = vec![0.0; rows * n];
    for r in 0..rows {
        for c in 0..n {
            let dot: f64 = (0..k).map(|i| x[r * k + i] as f64 * w(i, c)).sum();
            y[r * n + c] = dot + bias.map_or(0.0, |b| b[c] as f64);
        }
    }
    y
}

/// A host GEMM operand: row-major data, batch count (1 = broadcast when the other side has more).
#[derive(Debug, Clone, Copy)]
pub struct HostMatrix<'a> {
    /// Row-major [batch, rows, cols] as stored (before any transpose).
    pub data: &'a [f32],
    /// Number of matrices (1 broadcasts).
    pub batch: usize,
    /// Stored rows.
    pub rows: usize,
    /// Stored columns.
    pub cols: usize,
    /// Use the transpose.
    pub trans: bool,
}

impl HostMatrix<'_> {
    fn at(&self, t: usize, r: usize, c: usize) -> f64 {
        let t = if self.batch == 1 { 0 } else { t };
        let (r, c) = if self.trans { (c, r) } else { (r, c) };
        self.data[(t * self.rows + r) * self.cols + c] as f64
    }
    fn dims(&self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

/// Activation of [`gemm`] (mirrors [`crate::Activation`]).
pub use crate::gemm::Activation;

/// C = post_scale · act(alpha · op(A) op(B) + bias + c0), batched; returns [batch, M, N].
#[allow(clippy::too_many_arguments, reason = "mirrors every GEMM option")]
pub fn gemm(
    a: HostMatrix,
    b: HostMatrix,
    alpha: f64,
    bias: Option<&[f32]>,
    c0: Option<&[f32]>,
    activation: Activation,
    post_scale: f64,
) -> Vec<f64> {
    let ((m, k), (_, n)) = (a.dims(), b.dims());
    let batch = a.batch.max(b.batch);
    let mut c = vec![0.0; batch * m * n];
    for t in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let e = (t * m + i) * n + j;
                let dot: f64 = (0..k).map(|x| a.at(t, i, x) * b.at(t, x, j)).sum();
                let mut y = alpha * dot + bias.map_or(0.0, |b| b[j] as f64) + c0.map_or(0.0, |c| c[e] as f64);
                y = match activation {
                    Activation::None => y,
                    Activation::Tanh => y.tanh(),
                    Activation::Sigmoid => 1.0 / (1.0 + (-y).exp()),
                };
                c[e] = post_scale * y;
            }
        }
    }
    c
}

/// Local-p positions pᵢ = Lk · sigmoid(v_pᵀ tanh(W_p qᵢ)) for every row of q [rows, Dk];
/// W_p [Dp, Dk], v_p \[Dp\].
pub fn local_p_positions(q: &[f32], dk: usize, w_p: &[f32], v_p: &[f32], lk: usize) -> Vec<f64> {
    let dp = v_p.len();
    let hidden = linear(q, dk, dp, |i, o| w_p[o * dk + i] as f64, None);
    hidden
        .chunks(dp)
        .map(|h| {
            let s: f64 = h.iter().zip(v_p).map(|(x, &v)| x.tanh() * v as f64).sum();
            lk as f64 / (1.0 + (-s).exp())
        })
        .collect()
}

/// Hard attention reference: per row, the key maximizing ln Pᵢⱼ + Gumbel(word(seed, b, h, i, j))
/// among keys with Pᵢⱼ > 0 (the Gumbel-max draw from Categorical(Pᵢ,:)).
#[derive(Debug, Clone)]
pub struct HardReference {
    /// Output rows V\[j\] [B, Hq, Lq, Dv] (0 for fully masked rows).
    pub out: Vec<f64>,
    /// Sampled index per row (`u32::MAX` for fully masked rows).
    pub indices: Vec<u32>,
    /// Per row, the gap between the best and the second-best perturbed score (∞ with one
    /// candidate): a GPU that rounds differently can only disagree when this is tiny.
    pub margins: Vec<f64>,
}

/// See [`HardReference`].
pub fn hard(inputs: &HostInputs, opts: &AttentionOptions, seed: u64) -> HardReference {
    let p = inputs.problem;
    let reference = sdpa(inputs, opts);
    let rows = p.b * p.hq * p.lq;
    let mut out = vec![0.0; rows * p.dv];
    let mut indices = vec![u32::MAX; rows];
    let mut margins = vec![f64::INFINITY; rows];
    for b in 0..p.b {
        for h in 0..p.hq {
            let hk = h / (p.hq / p.hkv);
            for i in 0..p.lq {
                let row = (b * p.hq + h) * p.lq + i;
                let (mut best, mut second, mut best_j) = (f64::NEG_INFINITY, f64::NEG_INFINITY, None);
                for j in 0..p.lk {
                    let pj = reference.weights[row * p.lk + j];
                    if pj <= 0.0 {
                        continue;
                    }
                    let x = pj.ln() + philox::gumbel(philox::random_u32(seed, b, h, i, j));
                    if x > best {
                        (second, best, best_j) = (best, x, Some(j));
                    } else if x > second {
                        second = x;
                    }
                }
                if let Some(j) = best_j {
                    indices[row] = j as u32;
                    margins[row] = best - second;
                    let vrow = ((b * p.hkv + hk) * p.lk + j) * p.dv;
                    for d in 0..p.dv {
                        out[row * p.dv + d] = inputs.v[vrow + d] as f64;
                    }
                }
            }
        }
    }
    HardReference { out, indices, margins }
}

/// Pooling reference outputs: pooled [B, D] and weights α [B, L].
#[derive(Debug, Clone)]
pub struct PoolReference {
    /// Pooled vectors [B, D].
    pub out: Vec<f64>,
    /// Weights [B, L].
    pub weights: Vec<f64>,
}

/// Σₜ αₜ xₜ for X [B, L, D] and α [B, L].
fn weighted_rows(x: &[f32], alpha: &[f64], b: usize, l: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; b * d];
    for bi in 0..b {
        for t in 0..l {
            for c in 0..d {
                out[bi * d + c] += alpha[bi * l + t] * x[(bi * l + t) * d + c] as f64;
            }
        }
    }
    out
}

/// Softmax of each row of `s` [rows, n] over entries where `keep` holds; all excluded → 0.
fn softmax_rows(s: &[f64], n: usize, keep: impl Fn(usize) -> bool) -> Vec<f64> {
    let mut out = vec![0.0; s.len()];
    for (r, row) in s.chunks(n).enumerate() {
        let m = (0..n)
            .filter(|&t| keep(r * n + t))
            .map(|t| row[t])
            .fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = (0..n).filter(|&t| keep(r * n + t)).map(|t| (row[t] - m).exp()).sum();
        for t in (0..n).filter(|&t| keep(r * n + t)) {
            out[r * n + t] = (row[t] - m).exp() / sum;
        }
    }
    out
}

/// Hierarchical attention pooling: uₜ = tanh(xₜ W + b), sₜ = uₜᵀu_w, α = softmax over kept t.
/// X [B, L, D], W [D, Da], b \[Da\], u_w \[Da\], mask [B, L] (true = kept).
#[allow(clippy::too_many_arguments, reason = "one argument per input of the formula")]
pub fn han(
    x: &[f32],
    (b, l, d): (usize, usize, usize),
    w: &[f32],
    bias: &[f32],
    u: &[f32],
    mask: Option<&[bool]>,
) -> PoolReference {
    let da = u.len();
    let hidden = linear(x, d, da, |i, o| w[i * da + o] as f64, Some(bias));
    let s: Vec<f64> = hidden
        .chunks(da)
        .map(|h| h.iter().zip(u).map(|(x, &u)| x.tanh() * u as f64).sum())
        .collect();
    let weights = softmax_rows(&s, l, |e| mask.is_none_or(|m| m[e]));
    PoolReference {
        out: weighted_rows(x, &weights, b, l, d),
        weights,
    }
}

/// Feed-forward attention: eₜ = tanh(xₜ·w + bₜ), aₜ = exp(eₜ)·maskₜ, α = a / (Σa + ε).
pub fn feed_forward(
    x: &[f32],
    (b, l, d): (usize, usize, usize),
    w: &[f32],
    step_bias: Option<&[f32]>,
    mask: Option<&[bool]>,
    eps: f64,
) -> PoolReference {
    let s = linear(x, d, 1, |i, _| w[i] as f64, None);
    let mut weights = vec![0.0; b * l];
    for bi in 0..b {
        for t in 0..l {
            let e = (s[bi * l + t] + step_bias.map_or(0.0, |sb| sb[t] as f64)).tanh();
            let kept = mask.is_none_or(|m| m[bi * l + t]);
            weights[bi * l + t] = if kept { e.exp() } else { 0.0 };
        }
        let sum: f64 = weights[bi * l..(bi + 1) * l].iter().sum();
        for a in &mut weights[bi * l..(bi + 1) * l] {
            *a /= sum + eps;
        }
    }
    PoolReference {
        out: weighted_rows(x, &weights, b, l, d),
        weights,
    }
}

/// Self-attention sum: A = softmax(X Xᵀ / √D), C = A X, output Σₜ Cₜ [B, D].
pub fn self_sum(x: &[f32], (b, l, d): (usize, usize, usize)) -> Vec<f64> {
    let mut out = vec![0.0; b * d];
    let scale = 1.0 / (d as f64).sqrt();
    for bi in 0..b {
        let row = |t: usize| &x[(bi * l + t) * d..(bi * l + t + 1) * d];
        let mut s: Vec<f64> = Vec::with_capacity(l * l);
        for t in 0..l {
            for u in 0..l {
                s.push(
                    scale
                        * row(t)
                            .iter()
                            .zip(row(u))
                            .map(|(&p, &q)| p as f64 * q as f64)
                            .sum::<f64>(),
                );
            }
        }
        let a = softmax_rows(&s, l, |_| true);
        for t in 0..l {
            for u in 0..l {
                for c in 0..d {
                    out[bi * d + c] += a[t * l + u] * row(u)[c] as f64;
                }
            }
        }
    }
    out
}

/// Code-wise attention: S = C Gᵀ, mᵢ = maxⱼ Sᵢⱼ, α = softmax over i, output αᵀC [B, H].
pub fn codewise(c: &[f32], g: &[f32], (b, lc, lg, h): (usize, usize, usize, usize)) -> PoolReference {
    let mut m = vec![f64::NEG_INFINITY; b * lc];
    for bi in 0..b {
        for i in 0..lc {
            for j in 0..lg {
                let s: f64 = (0..h)
                    .map(|e| c[(bi * lc + i) * h + e] as f64 * g[(bi * lg + j) * h + e] as f64)
                    .sum();
                m[bi * lc + i] = m[bi * lc + i].max(s);
            }
        }
    }
    let weights = softmax_rows(&m, lc, |_| true);
    PoolReference {
        out: weighted_rows(c, &weights, b, lc, h),
        weights,
    }
}

/// Location-based attention reference outputs.
#[derive(Debug, Clone)]
pub struct LocationReference {
    /// W_c [q; context] + b_c [B, Lq, Do].
    pub out: Vec<f64>,
    /// a V [B, Lq, Dv].
    pub context: Vec<f64>,
    /// a [B, Lq, Lk].
    pub weights: Vec<f64>,
}

/// Host weights of location-based attention (row-major, `Linear` layout).
#[derive(Debug, Clone, Copy)]
pub struct HostLocationWeights<'a> {
    /// W_a [Lk, Dq + Dh].
    pub w_a: &'a [f32],
    /// b_a \[Lk\].
    pub b_a: &'a [f32],
    /// W_c [Do, Dq + Dv].
    pub w_c: &'a [f32],
    /// b_c \[Do\].
    pub b_c: &'a [f32],
}

/// a = softmax(W_a [q; h] + b_a) (with the scalar masks of `opts` and the key lengths, applied
/// by [`sdpa`] to the given scores), context = a V, out = W_c [q; context] + b_c.
/// q [B, Lq, Dq], h [B, Lq, Dh], v [B, Lk, Dv].
#[allow(clippy::too_many_arguments, reason = "one argument per input of the formula")]
pub fn location(
    q: &[f32],
    h: &[f32],
    v: &[f32],
    (b, lq, dq, dh, lk, dv): (usize, usize, usize, usize, usize, usize),
    w: HostLocationWeights,
    key_lengths: Option<&[u32]>,
    opts: &AttentionOptions,
) -> LocationReference {
    let qh: Vec<f32> = (0..b * lq)
        .flat_map(|r| q[r * dq..(r + 1) * dq].iter().chain(&h[r * dh..(r + 1) * dh]).copied())
        .collect();
    let s = linear(&qh, dq + dh, lk, |i, o| w.w_a[o * (dq + dh) + i] as f64, Some(w.b_a));
    let problem = Problem {
        b,
        hq: 1,
        hkv: 1,
        lq,
        lk,
        dk: 1,
        dv,
    };
    let inputs = HostInputs {
        score: HostScore::Given { s: &s },
        key_lengths,
        ..HostInputs::new(problem, q, q, v)
    };
    let r = sdpa(&inputs, opts);
    let d_out = w.b_c.len();
    let qc: Vec<f64> = (0..b * lq)
        .flat_map(|row| {
            q[row * dq..(row + 1) * dq]
                .iter()
                .map(|&x| x as f64)
                .chain(r.out[row * dv..(row + 1) * dv].iter().copied())
        })
        .collect();
    let mut out = vec![0.0; b * lq * d_out];
    for row in 0..b * lq {
        for o in 0..d_out {
            let x = &qc[row * (dq + dv)..(row + 1) * (dq + dv)];
            out[row * d_out + o] = w.b_c[o] as f64
                + x.iter()
                    .enumerate()
                    .map(|(i, &x)| x * w.w_c[o * (dq + dv) + i] as f64)
                    .sum::<f64>();
        }
    }
    LocationReference {
        out,
        context: r.out,
        weights: r.weights,
    }
}

/// A host linear layer y = x Wᵀ + b, W [out, in].
#[derive(Debug, Clone, Copy)]
pub struct HostLinear<'a> {
    /// W [out, in].
    pub w: &'a [f32],
    /// b \[out\].
    pub b: Option<&'a [f32]>,
}

impl HostLinear<'_> {
    fn apply(&self, x: &[f32], inputs: usize) -> Vec<f64> {
        let outs = self.w.len() / inputs;
        linear(x, inputs, outs, |i, o| self.w[o * inputs + i] as f64, self.b)
    }
}

/// Multi-head attention reference outputs.
#[derive(Debug, Clone)]
pub struct MhaReference {
    /// [B, Lq, E_out].
    pub out: Vec<f64>,
    /// Head-averaged weights [B, Lq, Lk].
    pub weights: Vec<f64>,
}

/// Multi-head attention: projections, §1 per head (scalar options and masks of `inputs_masks`),
/// concatenation, output projection. x_q [B, Lq, E], x_kv [B, Lk, E_kv]; `key_keep` [B, Lk]
/// (true = key takes part).
#[allow(clippy::too_many_arguments, reason = "one argument per input of the layer")]
pub fn mha(
    x_q: &[f32],
    x_kv: &[f32],
    (b, lq, lk, e, e_kv): (usize, usize, usize, usize, usize),
    (hq, hkv, dh): (usize, usize, usize),
    [wq, wk, wv, wo]: [HostLinear; 4],
    key_keep: Option<&[bool]>,
    opts: &AttentionOptions,
) -> MhaReference {
    // [B, L, H·Dh] → [B, H, L, Dh] as f32 host arrays for the sdpa reference.
    let split = |y: Vec<f64>, l: usize, h: usize| -> Vec<f32> {
        let mut out = vec![0.0f32; y.len()];
        for bi in 0..b {
            for t in 0..l {
                for hh in 0..h {
                    for d in 0..dh {
                        out[((bi * h + hh) * l + t) * dh + d] = y[(bi * l + t) * h * dh + hh * dh + d] as f32;
                    }
                }
            }
        }
        out
    };
    let q = split(wq.apply(x_q, e), lq, hq);
    let k = split(wk.apply(x_kv, e_kv), lk, hkv);
    let v = split(wv.apply(x_kv, e_kv), lk, hkv);
    let problem = Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk: dh,
        dv: dh,
    };
    let mask: Option<Vec<bool>> =
        key_keep.map(|m| (0..b * lq * lk).map(|x| m[(x / (lq * lk)) * lk + x % lk]).collect());
    let inputs = HostInputs {
        mask: mask.as_deref().map(|data| super::Broadcast {
            data,
            shape: [b, 1, lq, lk],
        }),
        ..HostInputs::new(problem, &q, &k, &v)
    };
    let r = sdpa(&inputs, opts);
    // Concatenate heads (in f64, rounded to f32 only as the GPU's projection input would be).
    let mut concat = vec![0.0f32; b * lq * hq * dh];
    for bi in 0..b {
        for hh in 0..hq {
            for t in 0..lq {
                for d in 0..dh {
                    concat[(bi * lq + t) * hq * dh + hh * dh + d] = r.out[((bi * hq + hh) * lq + t) * dh + d] as f32;
                }
            }
        }
    }
    let out = wo.apply(&concat, hq * dh);
    let mut weights = vec![0.0; b * lq * lk];
    for bi in 0..b {
        for hh in 0..hq {
            for x in 0..lq * lk {
                weights[bi * lq * lk + x] += r.weights[(bi * hq + hh) * lq * lk + x] / hq as f64;
            }
        }
    }
    MhaReference { out, weights }
}
