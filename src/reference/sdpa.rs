//! Reference scaled dot-product attention (docs/ATTENTION.md §1), naive and in f64.

use crate::attention::Problem;
use crate::options::{Alignment, AttentionOptions};

/// A host array broadcastable to [B, Hq, Lq, Lk]: `shape` is [B|1, Hq|1, Lq, Lk], row-major.
#[derive(Debug, Clone, Copy)]
pub struct Broadcast<'a, T> {
    /// Row-major data of `shape`.
    pub data: &'a [T],
    /// [B or 1, Hq or 1, Lq, Lk].
    pub shape: [usize; 4],
}

impl<T: Copy> Broadcast<'_, T> {
    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> T {
        let [sb, sh, lq, lk] = self.shape;
        let (b, h) = (if sb == 1 { 0 } else { b }, if sh == 1 { 0 } else { h });
        self.data[((b * sh + h) * lq + i) * lk + j]
    }
}

/// Host inputs of the reference: Q [B, Hq, Lq, Dk], K [B, Hkv, Lk, Dk], V [B, Hkv, Lk, Dv], all
/// row-major, plus the tensor-valued options (the GPU call takes them as tensors in its options).
#[derive(Debug, Clone, Copy)]
pub struct HostInputs<'a> {
    /// Problem sizes.
    pub problem: Problem,
    /// Queries.
    pub q: &'a [f32],
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// Additive bias.
    pub bias: Option<Broadcast<'a, f32>>,
    /// Boolean mask, true = the key takes part.
    pub mask: Option<Broadcast<'a, bool>>,
    /// Valid key count per batch.
    pub key_lengths: Option<&'a [u32]>,
    /// The score function (§2); [`HostScore::Dot`] is §1's scaled dot product.
    pub score: HostScore<'a>,
    /// Local-p windows (§4): aligned positions [B, Hq, Lq], the radius W, and whether weights are
    /// multiplied by the Gaussian exp(−(j − pᵢ)² / (2σ²)), σ = W / 2.
    pub local: Option<(&'a [f32], f64, bool)>,
}

/// Score functions of docs/ATTENTION.md §2, computed literally from the raw inputs.
#[derive(Debug, Clone, Copy, Default)]
pub enum HostScore<'a> {
    /// scale · qᵀk.
    #[default]
    Dot,
    /// scale · qᵀ W k, W [Dq, Dk] row-major (Q has head dim Dq = `w.len() / Dk`).
    General {
        /// W, row-major [Dq, Dk].
        w: &'a [f32],
    },
    /// vᵀ tanh(W_q q + W_k k + b), unscaled. Q has head dim Dq, K head dim Dk; `problem.dk` is
    /// ignored.
    Additive {
        /// W_q [Da, Dq].
        w_q: &'a [f32],
        /// W_k [Da, Dk].
        w_k: &'a [f32],
        /// b \[Da\].
        b: &'a [f32],
        /// v \[Da\].
        v: &'a [f32],
        /// Query head dim Dq.
        dq: usize,
        /// Key head dim Dk.
        dk: usize,
    },
    /// Precomputed raw scores [B, Hq, Lq, Lk], used as they are (no scale): location-based
    /// attention (§3). Q and K are ignored.
    Given {
        /// The scores.
        s: &'a [f64],
    },
}

impl<'a> HostInputs<'a> {
    /// Q, K, V with no bias, mask or key padding.
    pub fn new(problem: Problem, q: &'a [f32], k: &'a [f32], v: &'a [f32]) -> Self {
        Self {
            problem,
            q,
            k,
            v,
            bias: None,
            mask: None,
            key_lengths: None,
            score: HostScore::Dot,
            local: None,
        }
    }
}

/// Reference outputs, in f64.
#[derive(Debug, Clone)]
pub struct ReferenceOutput {
    /// O [B, Hq, Lq, Dv].
    pub out: Vec<f64>,
    /// LSE [B, Hq, Lq] (−∞ for fully masked rows).
    pub lse: Vec<f64>,
    /// P [B, Hq, Lq, Lk].
    pub weights: Vec<f64>,
}

/// Scaled dot-product attention. Uses the scalar options of `opts` (scale, softcap, causal,
/// window); its tensor fields are ignored in favour of `inputs`.
///
/// Empty axes follow [`crate::attention()`]: B = 0 or Lq = 0 gives empty outputs; Lk = 0 leaves
/// every row fully masked (O = 0, LSE = −∞, no weights).
pub fn sdpa(inputs: &HostInputs, opts: &AttentionOptions) -> ReferenceOutput {
    sdpa_from_batch(inputs, opts, 0)
}

/// [`sdpa`] on batches numbered from `first_batch` (the b of the dropout counter and of [B, Hq]
/// ALiBi slopes): one sequence of a packed batch run alone keeps its own stream and slopes.
pub(super) fn sdpa_from_batch(inputs: &HostInputs, opts: &AttentionOptions, first_batch: usize) -> ReferenceOutput {
    let p = inputs.problem;
    let group = p.hq / p.hkv;
    let scale = opts.scale.map_or(1.0 / (p.dk as f64).sqrt(), |s| s as f64);
    let score = Scorer::new(inputs);
    let dropout = opts.dropout.filter(|d| d.p > 0.0);
    let mut out = vec![0.0; p.b * p.hq * p.lq * p.dv];
    let mut lse = vec![f64::NEG_INFINITY; p.b * p.hq * p.lq];
    let mut weights = vec![0.0; p.b * p.hq * p.lq * p.lk];
    let mut s = vec![f64::NEG_INFINITY; p.lk];
    for b in 0..p.b {
        for h in 0..p.hq {
            let hk = h / group;
            for i in 0..p.lq {
                let row = (b * p.hq + h) * p.lq + i;
                // 1–4: scores, soft cap, bias, masks.
                for (j, sj) in s.iter_mut().enumerate() {
                    // Scores are f32 quantities (numeric policy): each step is rounded to f32, so a
                    // score beyond f32's range is ±∞ and f32::MIN + x is f32::MIN, as on the GPU.
                    let mut x = f32_round(match inputs.score {
                        HostScore::Additive { .. } => score.at(row, (b * p.hkv + hk) * p.lk + j),
                        HostScore::Given { s } => s[row * p.lk + j],
                        _ => scale * score.at(row, (b * p.hkv + hk) * p.lk + j),
                    });
                    let zero = x == 0.0;
                    if let Some(c) = opts.softcap {
                        let c = c as f64;
                        x = f32_round(c * (x / c).tanh()); // ±∞ caps to ±c; NaN stays NaN
                    }
                    if let Some(bias) = &inputs.bias {
                        x = f32_round(x + bias.at(b, h, i, j) as f64);
                    }
                    if let Some(slopes) = &opts.alibi_slopes {
                        // −slope · |i' − j|, i' bottom-right aligned (per sequence when asked).
                        let pos = i as i64 + offset(inputs, opts, &p, b, Alignment::BottomRight);
                        let distance = (pos - j as i64).abs() as f64;
                        x = f32_round(x - f32_round(slopes.slope(first_batch + b, h, p.hq) as f64 * distance));
                    }
                    *sj = if allowed(inputs, opts, &p, b, h, i, j) && !(opts.zero_score_mask && zero) {
                        x
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                // A NaN score among the keys taking part makes the whole row NaN (O, P and LSE).
                if s.iter().any(|x| x.is_nan()) {
                    lse[row] = f64::NAN;
                    out[row * p.dv..(row + 1) * p.dv].fill(f64::NAN);
                    weights[row * p.lk..(row + 1) * p.lk].fill(f64::NAN);
                    continue;
                }
                // 5: softmax over keys, max subtracted; −∞ scores (masked) contribute nothing. A +∞
                // score makes the row NaN through ∞ − ∞, as PyTorch's softmax does.
                let m = s
                    .iter()
                    .copied()
                    .filter(|x| *x != f64::NEG_INFINITY)
                    .fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY {
                    continue; // fully masked row: O = 0, P = 0, LSE = −∞
                }
                let sum: f64 = s.iter().map(|&x| (x - m).exp()).sum();
                lse[row] = m + sum.ln();
                // 6: dropout and the local-p Gaussian weight P (not the LSE); 7: O = P V.
                for (j, &x) in s.iter().enumerate() {
                    let mut pj = (x - m).exp() / sum;
                    if let Some(d) = dropout {
                        pj *= match super::philox::dropout_keeps(d.seed, d.threshold(), first_batch + b, h, i, j) {
                            true => 1.0 / (1.0 - d.p as f64),
                            false => 0.0,
                        };
                    }
                    if let Some((centers, radius, true)) = inputs.local {
                        let dist = j as f64 - centers[row] as f64;
                        let sigma = radius / 2.0;
                        pj *= (-dist * dist / (2.0 * sigma * sigma)).exp();
                    }
                    weights[row * p.lk + j] = pj;
                    if pj == 0.0 {
                        continue; // weight 0 (masked or dropped): its V row does not reach O
                    }
                    let vrow = ((b * p.hkv + hk) * p.lk + j) * p.dv;
                    for d in 0..p.dv {
                        out[row * p.dv + d] += pj * inputs.v[vrow + d] as f64;
                    }
                }
            }
        }
    }
    ReferenceOutput { out, lse, weights }
}

/// `x` rounded to the nearest f32 (±∞ beyond its range, NaN kept).
fn f32_round(x: f64) -> f64 {
    x as f32 as f64
}

/// The offset of batch `b`'s aligned query positions: bottom-right per sequence
/// (`align_to_key_lengths`) uses the batch's key length as Lk.
fn offset(inputs: &HostInputs, opts: &AttentionOptions, p: &Problem, b: usize, a: Alignment) -> i64 {
    match (a, inputs.key_lengths) {
        (Alignment::BottomRight, Some(lens)) if opts.align_to_key_lengths => {
            a.offset(p.lq, (lens[b] as usize).min(p.lk))
        }
        _ => a.offset(p.lq, p.lk),
    }
}

/// Whether key `j` takes part for query `i` (every mask of §1 step 4, combined by AND).
fn allowed(inputs: &HostInputs, opts: &AttentionOptions, p: &Problem, b: usize, h: usize, i: usize, j: usize) -> bool {
    let (i, j) = (i as i64, j as i64);
    if let Some(mask) = &inputs.mask {
        if !mask.at(b, h, i as usize, j as usize) {
            return false;
        }
    }
    if let Some(lens) = inputs.key_lengths {
        if j >= lens[b] as i64 {
            return false;
        }
    }
    let offset = |a: Alignment| offset(inputs, opts, p, b, a);
    if let Some(a) = opts.causal {
        if j > i + offset(a) {
            return false;
        }
    }
    if let Some(w) = opts.window {
        let pos = i + offset(w.alignment);
        if w.left.is_some_and(|l| j < pos - l as i64) || w.right.is_some_and(|r| j > pos + r as i64) {
            return false;
        }
    }
    if let Some((centers, radius, _)) = inputs.local {
        let center = centers[(b * p.hq + h) * p.lq + i as usize] as f64;
        if (j as f64 - center).abs() > radius {
            return false;
        }
    }
    true
}

/// Raw scores of §2 for (query row, key row) pairs; projections are precomputed in f64.
struct Scorer<'a> {
    inputs: &'a HostInputs<'a>,
    /// General: Q W [rows, Dk]; additive: W_q q + b [rows, Da].
    q_proj: Vec<f64>,
    /// Additive: W_k k [key rows, Da].
    k_proj: Vec<f64>,
}

impl<'a> Scorer<'a> {
    fn new(inputs: &'a HostInputs<'a>) -> Self {
        use super::family::linear as project;
        let dk = inputs.problem.dk;
        let (q_proj, k_proj) = match inputs.score {
            HostScore::Dot | HostScore::Given { .. } => (Vec::new(), Vec::new()),
            HostScore::General { w } => {
                let dq = w.len() / dk;
                (project(inputs.q, dq, dk, |d, o| w[d * dk + o] as f64, None), Vec::new())
            }
            HostScore::Additive {
                w_q, w_k, b, v, dq, dk, ..
            } => {
                let da = v.len();
                (
                    project(inputs.q, dq, da, |d, o| w_q[o * dq + d] as f64, Some(b)),
                    project(inputs.k, dk, da, |d, o| w_k[o * dk + d] as f64, None),
                )
            }
        };
        Self { inputs, q_proj, k_proj }
    }

    /// The unscaled score of query row `qr` and key row `kr` (flat row indices).
    fn at(&self, qr: usize, kr: usize) -> f64 {
        let dk = self.inputs.problem.dk;
        let k = &self.inputs.k;
        match self.inputs.score {
            HostScore::Given { .. } => unreachable!("given scores are read directly"),
            HostScore::Dot => (0..dk)
                .map(|d| self.inputs.q[qr * dk + d] as f64 * k[kr * dk + d] as f64)
                .sum(),
            HostScore::General { .. } => (0..dk).map(|d| self.q_proj[qr * dk + d] * k[kr * dk + d] as f64).sum(),
            HostScore::Additive { v, .. } => {
                let da = v.len();
                (0..da)
                    .map(|a| v[a] as f64 * (self.q_proj[qr * da + a] + self.k_proj[kr * da + a]).tanh())
                    .sum()
            }
        }
    }
}
