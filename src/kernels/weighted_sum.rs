//! Host side of `shaders/weighted_sum.wgsl`: O = P V from the [bh_count, Lq, Lk] weights.

use super::gemm_tile::{gemm_step, GemmTile};
use super::{BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{Kernel, Slot};
use crate::tensor::DType;

/// Bindings: params, P, V, O.
pub const SLOTS: &[(u32, Slot)] = &[
    (0, Slot::Uniform),
    (1, Slot::Read),
    (2, Slot::Read),
    (3, Slot::ReadWrite),
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
        SLOTS,
        false,
        tile,
        dtype,
        p,
        params,
        (p.len_q, p.dim_v),
        [weights, v, out],
    )
}
