//! Host side of `shaders/hard_attention.wgsl`: one sampled key per query row.

use super::{dispatch_step, grid, BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, Q, K, V, O, indices, bias, mask, key lengths.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::Read),
    (4, BindingKind::ReadWrite),
    (6, BindingKind::ReadWrite),
    (8, BindingKind::Read),
    (9, BindingKind::Read),
    (10, BindingKind::Read),
];

/// Invocations per workgroup (one query row each).
pub const WORKGROUP: u32 = 64;

#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn step(
    ctx: &Context,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    qkv: [&BoundBuffer; 3],
    out: &BoundBuffer,
    indices: &BoundBuffer,
    masks: [&BoundBuffer; 3],
) -> Result<Step> {
    let workgroup = WORKGROUP.min(ctx.limits().max_compute_invocations_per_workgroup);
    let constants = [
        ("WORKGROUP", workgroup as f64),
        ("DK", p.dim_k as f64),
        ("DV", p.dim_v as f64),
    ];
    let kernel = pipeline::get(ctx, Kernel::HardAttention, dtype, Default::default(), &constants)?;
    let rows = p.bh_count as u64 * p.len_q as u64;
    let groups = grid(ctx, rows.div_ceil(workgroup as u64), "hard_attention")?;
    let [q, k, v] = qkv;
    let [bias, mask, lengths] = masks;
    Ok(dispatch_step(
        ctx,
        kernel,
        params,
        &[q, k, v, out, indices, bias, mask, lengths],
        groups,
    ))
}
