//! Host side of `shaders/additive_hidden.wgsl`: the naive additive path's tanh tensor for a block
//! of query rows of one (b, h) pair (`Params::bh_base`, `row_base`, `row_count`).

use super::{dispatch_step, grid, BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, Q' (projected queries), K' (projected keys), hidden.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (7, BindingKind::ReadWrite),
];

const WORKGROUP: u32 = 64;

pub(crate) fn step(
    ctx: &Context,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    q: &BoundBuffer,
    k: &BoundBuffer,
    hidden: &BoundBuffer,
) -> Result<Step> {
    let kernel = pipeline::get(
        ctx,
        Kernel::AdditiveHidden,
        dtype,
        Default::default(),
        &[("WORKGROUP", WORKGROUP as f64)],
    )?;
    let elements = p.row_count as u64 * p.len_k as u64 * p.dim_k as u64;
    let groups = grid(ctx, elements.div_ceil(WORKGROUP as u64), "additive_hidden")?;
    Ok(dispatch_step(ctx, kernel, params, &[q, k, hidden], groups))
}
