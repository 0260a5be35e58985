//! Host side of `shaders/weighted_sum.wgsl`: O = P V from the [bh_count, Lq, Lk] weights.

use super::{dispatch_step, grid, BoundBuffer, GemmTile, Params, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, Kernel, Slot};
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
    tile.check(ctx)?;
    let kernel = pipeline::get(
        ctx,
        Kernel::WeightedSum,
        dtype,
        Default::default(),
        SLOTS,
        &tile.constants(false),
    )?;
    let tiles = p.bh_count as u64 * tile.tiles(p.len_q, p.dim_v);
    let groups = grid(ctx, tiles, "weighted_sum")?;
    Ok(dispatch_step(ctx, kernel, params, &[weights, v, out], groups))
}
