//! Host side of `shaders/qk_scores.wgsl`: S = scale · Q Kᵀ into a [bh_count, Lq, Lk] scratch.

use super::gemm_tile::{gemm_step, StagedGemm};
use super::{BoundBuffer, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{BindingKind, Kernel};

/// Bindings: params, Q, K, S.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::ReadWrite),
];

/// S = scale · Q Kᵀ for the chunk: `[q, k, scores]`.
pub(crate) fn step(ctx: &Context, g: &StagedGemm, buffers: [&BoundBuffer; 3]) -> Result<Step> {
    gemm_step(ctx, Kernel::QkScores, true, g, (g.p.len_q, g.p.len_k), buffers)
}
