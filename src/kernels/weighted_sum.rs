//! Host side of `shaders/weighted_sum.wgsl`: O = P V from the [bh_count, Lq, Lk] weights.

use super::gemm_tile::{gemm_step, StagedGemm};
use super::{BoundBuffer, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{BindingKind, Kernel};

/// Bindings: params, P, V, O.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::ReadWrite),
];

/// O = P V for the chunk: `[weights, v, out]`.
pub(crate) fn step(ctx: &Context, g: &StagedGemm, buffers: [&BoundBuffer; 3]) -> Result<Step> {
    gemm_step(ctx, Kernel::WeightedSum, false, g, (g.p.len_q, g.p.dim_v), buffers)
}
