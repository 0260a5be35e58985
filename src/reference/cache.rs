//! Reference KV cache and rotary embedding (docs/ATTENTION.md §9): the twins of
//! [`crate::KvCache`] and [`crate::rope()`], naive and in f64.

use super::sdpa::{sdpa, HostInputs, ReferenceOutput};
use crate::attention::Problem;
use crate::options::AttentionOptions;
use crate::rope::RopeStyle;

/// Where the rotation angles come from.
#[derive(Debug, Clone, Copy)]
pub enum HostAngles<'a> {
    /// θ = pos · base^(−2i/rotary_dim).
    ThetaBase(f64),
    /// cos θ and sin θ tables [max_positions, rotary_dim / 2], row-major.
    Tables {
        /// cos θ.
        cos: &'a [f32],
        /// sin θ.
        sin: &'a [f32],
    },
}

/// A rotary embedding on the host.
#[derive(Debug, Clone, Copy)]
pub struct HostRope<'a> {
    /// Pair convention.
    pub style: RopeStyle,
    /// Rotated columns (even, ≤ D).
    pub rotary_dim: usize,
    /// The angles.
    pub angles: HostAngles<'a>,
}

impl HostRope<'_> {
    /// (cos θ, sin θ) of pair `i` at `pos`.
    fn cos_sin(&self, pos: usize, i: usize) -> (f64, f64) {
        match self.angles {
            HostAngles::ThetaBase(base) => {
                let theta = pos as f64 * base.powf(-2.0 * i as f64 / self.rotary_dim as f64);
                (theta.cos(), theta.sin())
            }
            HostAngles::Tables { cos, sin } => {
                let k = pos * (self.rotary_dim / 2) + i;
                (cos[k] as f64, sin[k] as f64)
            }
        }
    }

    /// One head row rotated at `pos`, in f64.
    pub fn rotate_row(&self, x: &[f32], pos: usize) -> Vec<f64> {
        let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let half = self.rotary_dim / 2;
        for i in 0..half {
            let (a, b) = match self.style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::HalfSplit => (i, i + half),
            };
            let (c, s) = self.cos_sin(pos, i);
            let (x0, x1) = (x[a] as f64, x[b] as f64);
            y[a] = x0 * c - x1 * s;
            y[b] = x1 * c + x0 * s;
        }
        y
    }
}

/// X [B, H, L, D] row-major rotated with row l of batch b at position `starts[b] + l`.
pub fn rope(x: &[f32], shape: [usize; 4], starts: &[u32], rope: &HostRope) -> Vec<f64> {
    let [b, h, l, d] = shape;
    let mut out = Vec::with_capacity(x.len());
    for (bi, &start) in starts.iter().enumerate().take(b) {
        for hi in 0..h {
            for li in 0..l {
                let row = ((bi * h + hi) * l + li) * d;
                out.extend(rope.rotate_row(&x[row..row + d], start as usize + li));
            }
        }
    }
    out
}

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

/// Dense K or V [B, Hkv, pages_per_seq · page_size, D] (row-major) of a paged layout: `pages` is
/// [num_pages, page_size, Hkv, D] row-major and `table` [B, pages_per_seq] row-major; key `j`
/// of sequence `b` is row `j % page_size` of page `table[b, j / page_size]`. Unmapped entries
/// (ids ≥ num_pages) give zero rows.
pub fn gather_pages(pages: &[f32], [num_pages, page_size, hkv, d]: [usize; 4], table: &[u32], b: usize) -> Vec<f32> {
    let cols = table.len().checked_div(b).unwrap_or(0);
    let lk = cols * page_size;
    let mut out = vec![0.0; b * hkv * lk * d];
    for s in 0..b {
        for j in 0..lk {
            let page = table[s * cols + j / page_size] as usize;
            if page >= num_pages {
                continue;
            }
            for h in 0..hkv {
                let src = ((page * page_size + j % page_size) * hkv + h) * d;
                let dst = ((s * hkv + h) * lk + j) * d;
                out[dst..dst + d].copy_from_slice(&pages[src..src + d]);
            }
        }
    }
    out
}
