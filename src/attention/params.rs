//! The `Params` uniform of the attention kernels, filled from the problem and the options.

use super::{LocalWindows, Problem};
use crate::kernels::{flags, Params};
use crate::options::{Alignment, AttentionOptions};

/// Window bounds are clamped to this (equivalent to unbounded: no sequence is this long).
const UNBOUNDED: i64 = 1 << 30;

pub(crate) fn base_params(p: &Problem, opts: &AttentionOptions) -> Params {
    let mut f = 0;
    let mut params = Params {
        batch: p.b as u32,
        heads_q: p.hq as u32,
        heads_kv: p.hkv as u32,
        len_q: p.lq as u32,
        len_k: p.lk as u32,
        dim_k: p.dk as u32,
        dim_v: p.dv as u32,
        scale: opts.scale.unwrap_or(1.0 / (p.dk as f32).sqrt()),
        softcap: opts.softcap.unwrap_or(0.0),
        ..Default::default()
    };
    if opts.softcap.is_some() {
        f |= flags::SOFTCAP;
    }
    if opts.bias.is_some() {
        f |= flags::BIAS;
    }
    if opts.mask.is_some() {
        f |= flags::MASK;
    }
    if opts.key_lengths.is_some() {
        f |= flags::KEY_LENGTHS;
    }
    if let Some(a) = opts.causal {
        f |= flags::CAUSAL;
        params.causal_offset = a.offset(p.lq, p.lk).clamp(-UNBOUNDED, UNBOUNDED) as i32;
        if per_sequence(opts, a) {
            f |= flags::CAUSAL_PER_SEQ;
        }
    }
    if let Some(w) = opts.window {
        f |= flags::WINDOW;
        params.window_offset = w.alignment.offset(p.lq, p.lk).clamp(-UNBOUNDED, UNBOUNDED) as i32;
        params.window_left = w.left.map_or(UNBOUNDED, |x| (x as i64).min(UNBOUNDED)) as i32;
        params.window_right = w.right.map_or(UNBOUNDED, |x| (x as i64).min(UNBOUNDED)) as i32;
        if per_sequence(opts, w.alignment) {
            f |= flags::WINDOW_PER_SEQ;
        }
    }
    if opts.return_lse {
        f |= flags::LSE;
    }
    if let Some(d) = opts.dropout.filter(|d| d.p > 0.0) {
        f |= flags::DROPOUT;
        params.dropout_threshold = d.threshold();
        params.dropout_scale = (1.0 / (1.0 - d.p as f64)) as f32;
        params.seed_lo = d.seed as u32;
        params.seed_hi = (d.seed >> 32) as u32;
    }
    if opts.zero_score_mask {
        f |= flags::ZERO_SCORE;
    }
    if let Some(slopes) = &opts.alibi_slopes {
        f |= flags::ALIBI;
        if slopes.batch().is_some() {
            f |= flags::ALIBI_PER_BATCH;
        }
        params.alibi_offset = Alignment::BottomRight.offset(p.lq, p.lk).clamp(-UNBOUNDED, UNBOUNDED) as i32;
        if per_sequence(opts, Alignment::BottomRight) {
            f |= flags::ALIBI_PER_SEQ;
        }
    }
    params.flags = f;
    params
}

/// Whether an alignment is taken per batch from the key lengths (bottom-right with
/// `align_to_key_lengths` and key lengths given): i' = i + min(len_b, Lk) − Lq.
fn per_sequence(opts: &AttentionOptions, a: Alignment) -> bool {
    a == Alignment::BottomRight && opts.align_to_key_lengths && opts.key_lengths.is_some()
}

/// Sets the local-p fields of `params`; the centers' element offset is set by the caller.
pub(super) fn local_params(params: &mut Params, local: &Option<LocalWindows>) {
    if let Some(l) = local {
        params.flags |= flags::LOCAL;
        params.local_radius = l.radius;
        params.local_gauss = if l.gaussian {
            // σ = radius / 2, so 1 / (2σ²) = 2 / radius².
            2.0 / (l.radius * l.radius)
        } else {
            0.0
        };
    }
}
