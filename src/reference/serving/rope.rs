//! Reference rotary embedding (docs/ATTENTION.md §9): the twin of [`crate::serving::rope()`],
//! naive and in f64.

use crate::serving::RopeStyle;

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
