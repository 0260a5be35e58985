//! Host side of `shaders/qk_scores.wgsl`: S = scale · Q Kᵀ into a [bh_count, Lq, Lk] scratch.

use super::gemm_tile::{gemm_step, GemmTile};
use super::{BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, Q, K, S.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::ReadWrite),
];

#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn step(
    ctx: &Context,
    tile: GemmTile,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    q: &BoundBuffer,
    k: &BoundBuffer,
    scores: &BoundBuffer,
) -> Result<Step> {
    gemm_step(
        ctx,
        Kernel::QkScores,
        true,
        tile,
        dtype,
        p,
        params,
        (p.len_q, p.len_k),
        [q, k, scores],
    )
}
