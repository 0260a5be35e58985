//! Reference variable-length attention (docs/ATTENTION.md §1c): each packed sequence is cut out
//! of the packed tensors and run alone through [`super::sdpa`], then its rows are put back.

use super::sdpa::{sdpa_from_batch, HostInputs, ReferenceOutput};
use crate::attention::Problem;
use crate::options::AttentionOptions;

/// Host inputs of [`sdpa_varlen`]: packed Q [total_q, Hq, Dk], K [total_k, Hkv, Dk],
/// V [total_k, Hkv, Dv] (row-major) and the B + 1 offsets of each side.
#[derive(Debug, Clone, Copy)]
pub struct VarlenHostInputs<'a> {
    /// Query heads Hq.
    pub hq: usize,
    /// Key/value heads Hkv.
    pub hkv: usize,
    /// Query/key head dim Dk.
    pub dk: usize,
    /// Value head dim Dv.
    pub dv: usize,
    /// Packed queries.
    pub q: &'a [f32],
    /// Packed keys.
    pub k: &'a [f32],
    /// Packed values.
    pub v: &'a [f32],
    /// Query offsets \[B + 1\].
    pub cu_seqlens_q: &'a [u32],
    /// Key offsets \[B + 1\].
    pub cu_seqlens_k: &'a [u32],
}

/// Variable-length attention: O [total_q, Hq, Dv] and LSE [Hq, total_q] (`weights` is empty).
/// Uses the scalar options of `opts` (scale, soft cap, causal, window, dropout, zero-score
/// masking). Sequence b is [`super::sdpa`] with B = 1 on its rows (Lq = len_q(b), Lk = len_k(b)),
/// its dropout stream keyed by b.
///
/// Offsets are read as the kernel reads them: each is clamped to the packed rows and to the
/// offset before it. Rows outside every sequence are 0 in O and LSE (the GPU does not write them).
pub fn sdpa_varlen(inputs: &VarlenHostInputs, opts: &AttentionOptions) -> ReferenceOutput {
    let x = inputs;
    let total_q = x.q.len() / (x.hq * x.dk).max(1);
    let total_k = x.k.len() / (x.hkv * x.dk).max(1);
    let batch = x.cu_seqlens_q.len().min(x.cu_seqlens_k.len()).saturating_sub(1);
    let mut out = vec![0.0; total_q * x.hq * x.dv];
    let mut lse = vec![0.0; x.hq * total_q];
    let range = |cu: &[u32], b: usize, total: usize| {
        let start = (cu[b] as usize).min(total);
        let end = (cu[b + 1] as usize).clamp(start, total);
        (start, end - start)
    };
    for b in 0..batch {
        let (q0, lq) = range(x.cu_seqlens_q, b, total_q);
        let (k0, lk) = range(x.cu_seqlens_k, b, total_k);
        if lq == 0 {
            continue;
        }
        // [len, H, D] rows of the packed tensor → [1, H, len, D].
        let gather = |data: &[f32], start: usize, len: usize, heads: usize, d: usize| -> Vec<f32> {
            let mut g = Vec::with_capacity(heads * len * d);
            for h in 0..heads {
                for r in start..start + len {
                    g.extend_from_slice(&data[(r * heads + h) * d..][..d]);
                }
            }
            g
        };
        let q = gather(x.q, q0, lq, x.hq, x.dk);
        let k = gather(x.k, k0, lk, x.hkv, x.dk);
        let v = gather(x.v, k0, lk, x.hkv, x.dv);
        let problem = Problem {
            b: 1,
            hq: x.hq,
            hkv: x.hkv,
            lq,
            lk,
            dk: x.dk,
            dv: x.dv,
        };
        let seq = sdpa_from_batch(&HostInputs::new(problem, &q, &k, &v), opts, b);
        for h in 0..x.hq {
            for i in 0..lq {
                let (src, dst) = (h * lq + i, (q0 + i) * x.hq + h);
                out[dst * x.dv..][..x.dv].copy_from_slice(&seq.out[src * x.dv..][..x.dv]);
                lse[h * total_q + q0 + i] = seq.lse[src];
            }
        }
    }
    ReferenceOutput {
        out,
        lse,
        weights: Vec::new(),
    }
}
