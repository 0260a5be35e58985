//! Host side of `shaders/weighted_sum.wgsl`: O = P V from the [bh_count, Lq, Lk] weights.

use super::gemm_tile::{gemm_step, GemmTile};
use super::{BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, P, V, O.
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
    weights: &BoundBuffer,
    v: &BoundBuffer,
    out: &BoundBuffer,
) -> Result<Step> {
    gemm_step(
        ctx,
        Kernel::WeightedSum,
        false,
        tile,
        dtype,
        p,
        params,
        (p.len_q, p.dim_v),
        [weights, v, out],
    )
}
