//! Reference KV cache (docs/ATTENTION.md §9): the twin of [`crate::serving::KvCache`], naive
//! and in f64.

use super::super::sdpa::{sdpa, HostInputs, ReferenceOutput};
use super::rope::HostRope;
use crate::attention::Problem;
use crate::options::AttentionOptions;

/// A KV cache on the host: K [B, Hkv, capacity, Dk], V [B, Hkv, capacity, Dv] and the lengths.
#[derive(Debug, Clone)]
pub struct HostKvCache {
    /// Sequences.
    pub b: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Rows per sequence.
    pub capacity: usize,
    /// Key head dim.
    pub dk: usize,
    /// Value head dim.
    pub dv: usize,
    /// K, row-major.
    pub k: Vec<f32>,
    /// V, row-major.
    pub v: Vec<f32>,
    /// Length of every sequence.
    pub lengths: Vec<u32>,
}

impl HostKvCache {
    /// An empty cache (zero rows, lengths 0).
    pub fn new(b: usize, hkv: usize, capacity: usize, dk: usize, dv: usize) -> Self {
        Self {
            b,
            hkv,
            capacity,
            dk,
            dv,
            k: vec![0.0; b * hkv * capacity * dk],
            v: vec![0.0; b * hkv * capacity * dv],
            lengths: vec![0; b],
        }
    }

    /// Appends K [B, Hkv, Lnew, Dk] and V [B, Hkv, Lnew, Dv] (row-major): sequence b takes its
    /// first `counts[b]` rows (all Lnew without counts) at its length, the keys rotated at their
    /// positions when `rope` is given (rounded to f32, as stored). Refuses an append past the
    /// capacity, leaving the cache unchanged.
    pub fn append(
        &mut self,
        k_new: &[f32],
        v_new: &[f32],
        lnew: usize,
        counts: Option<&[u32]>,
        rope: Option<&HostRope>,
    ) -> Result<(), String> {
        let count = |b: usize| counts.map_or(lnew, |c| c[b] as usize);
        for b in 0..self.b {
            if self.lengths[b] as usize + count(b) > self.capacity {
                return Err(format!(
                    "sequence {b}: {} + {} rows exceed the capacity {}",
                    self.lengths[b],
                    count(b),
                    self.capacity
                ));
            }
        }
        for b in 0..self.b {
            let len = self.lengths[b] as usize;
            for h in 0..self.hkv {
                for r in 0..count(b) {
                    let (src, dst) = (
                        (b * self.hkv + h) * lnew + r,
                        (b * self.hkv + h) * self.capacity + len + r,
                    );
                    let krow = &k_new[src * self.dk..(src + 1) * self.dk];
                    let rotated: Vec<f32> = match rope {
                        Some(rope) => rope.rotate_row(krow, len + r).into_iter().map(|x| x as f32).collect(),
                        None => krow.to_vec(),
                    };
                    self.k[dst * self.dk..(dst + 1) * self.dk].copy_from_slice(&rotated);
                    self.v[dst * self.dv..(dst + 1) * self.dv]
                        .copy_from_slice(&v_new[src * self.dv..(src + 1) * self.dv]);
                }
            }
            self.lengths[b] += count(b) as u32;
        }
        Ok(())
    }

    /// K and V of sequence `b`'s first `lengths[b]` rows, [1, Hkv, len, D] row-major.
    pub fn prefix(&self, b: usize) -> (Vec<f32>, Vec<f32>) {
        let len = self.lengths[b] as usize;
        let mut k = Vec::with_capacity(self.hkv * len * self.dk);
        let mut v = Vec::with_capacity(self.hkv * len * self.dv);
        for h in 0..self.hkv {
            let row = (b * self.hkv + h) * self.capacity;
            k.extend_from_slice(&self.k[row * self.dk..(row + len) * self.dk]);
            v.extend_from_slice(&self.v[row * self.dv..(row + len) * self.dv]);
        }
        (k, v)
    }

    /// Attention of Q [B, Hq, Lq, Dk] (row-major) over each sequence's prefix: [`sdpa`] per
    /// sequence with Lk = its length, so a bottom-right alignment is per sequence
    /// (j ≤ i + len_b − Lq). Uses the scalar options of `opts`; the weights are not returned.
    pub fn attend(&self, q: &[f32], hq: usize, lq: usize, opts: &AttentionOptions) -> ReferenceOutput {
        let mut out = Vec::with_capacity(self.b * hq * lq * self.dv);
        let mut lse = Vec::with_capacity(self.b * hq * lq);
        for b in 0..self.b {
            let (k, v) = self.prefix(b);
            let problem = Problem {
                b: 1,
                hq,
                hkv: self.hkv,
                lq,
                lk: self.lengths[b] as usize,
                dk: self.dk,
                dv: self.dv,
            };
            let qb = &q[b * hq * lq * self.dk..(b + 1) * hq * lq * self.dk];
            let r = sdpa(&HostInputs::new(problem, qb, &k, &v), opts);
            out.extend(r.out);
            lse.extend(r.lse);
        }
        ReferenceOutput {
            out,
            lse,
            weights: Vec::new(),
        }
    }
}
