//! Reference scaled dot-product attention (ATTENTION.md §1), naive and in f64.

use crate::attention::Problem;
use crate::options::AttentionOptions;

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
pub fn sdpa(inputs: &HostInputs, opts: &AttentionOptions) -> ReferenceOutput {
    let p = inputs.problem;
    let group = p.hq / p.hkv;
    let scale = opts.scale.map_or(1.0 / (p.dk as f64).sqrt(), |s| s as f64);
    let mut out = vec![0.0; p.b * p.hq * p.lq * p.dv];
    let mut lse = vec![f64::NEG_INFINITY; p.b * p.hq * p.lq];
    let mut weights = vec![0.0; p.b * p.hq * p.lq * p.lk];
    let mut s = vec![f64::NEG_INFINITY; p.lk];
    for b in 0..p.b {
        for h in 0..p.hq {
            let hk = h / group;
            for i in 0..p.lq {
                let row = (b * p.hq + h) * p.lq + i;
                let q = &inputs.q[row * p.dk..(row + 1) * p.dk];
                // 1–4: scores, soft cap, bias, masks.
                for (j, sj) in s.iter_mut().enumerate() {
                    let krow = ((b * p.hkv + hk) * p.lk + j) * p.dk;
                    let dot: f64 = (0..p.dk).map(|d| q[d] as f64 * inputs.k[krow + d] as f64).sum();
                    let mut x = scale * dot;
                    if let Some(c) = opts.softcap {
                        let c = c as f64;
                        x = c * (x / c).tanh();
                    }
                    if let Some(bias) = &inputs.bias {
                        x += bias.at(b, h, i, j) as f64;
                    }
                    *sj = if allowed(inputs, opts, &p, b, h, i, j) {
                        x
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                // 5: softmax over keys, max subtracted; −∞ scores (masked) contribute nothing.
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
                // 7: O = P V.
                for (j, &x) in s.iter().enumerate() {
                    let pj = (x - m).exp() / sum;
                    weights[row * p.lk + j] = pj;
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
    if let Some(a) = opts.causal {
        if j > i + a.offset(p.lq, p.lk) {
            return false;
        }
    }
    if let Some(w) = opts.window {
        let pos = i + w.alignment.offset(p.lq, p.lk);
        if w.left.is_some_and(|l| j < pos - l as i64) || w.right.is_some_and(|r| j > pos + r as i64) {
            return false;
        }
    }
    true
}
