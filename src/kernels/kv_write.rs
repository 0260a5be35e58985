//! Host side of `shaders/kv_write.wgsl`: rows written into a KV cache at each sequence's length,
//! the lengths advanced, and the rotary embedding.

use super::{dispatch_step, grid, BoundBuffer, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, source, destination, starts (lengths), counts, cos table, sin table, block
/// table.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::ReadWrite),
    (3, BindingKind::ReadWrite),
    (4, BindingKind::Read),
    (5, BindingKind::Read),
    (6, BindingKind::Read),
    (7, BindingKind::Read),
];

/// Invocations per workgroup (one row each).
pub const WORKGROUP: u32 = 64;

/// The uniform of `kv_write.wgsl` (`struct WriteParams`); offsets and strides in elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WriteParams {
    pub batch: u32,
    pub heads: u32,
    pub rows: u32,
    pub dim: u32,
    pub src: super::Strides,
    pub dst: super::Strides,
    pub dst_rows: u32,
    pub flags: u32,
    pub rotary_dim: u32,
    pub table_rows: u32,
    pub cos_off: u32,
    pub sin_off: u32,
    pub starts_off: u32,
    pub counts_off: u32,
    pub page_size: u32,
    pub page_count: u32,
    pub table_off: u32,
    pub table_stride: u32,
}

/// Flag bits of `WriteParams::flags`.
pub mod flags {
    pub const AT_START: u32 = 1;
    pub const COUNTS: u32 = 2;
    pub const ROPE: u32 = 4;
    pub const HALF_SPLIT: u32 = 8;
    pub const ADVANCE: u32 = 16;
    pub const PAGED: u32 = 32;
    pub const PACKED: u32 = 64;
}

/// The bindings of one dispatch, in slot order after the uniform.
pub(crate) struct WriteBindings<'a> {
    pub src: &'a BoundBuffer,
    pub dst: &'a BoundBuffer,
    pub starts: &'a BoundBuffer,
    pub counts: &'a BoundBuffer,
    pub cos: &'a BoundBuffer,
    pub sin: &'a BoundBuffer,
    pub block_table: &'a BoundBuffer,
}

/// One dispatch: every row of the source (or one invocation per batch when advancing).
pub(crate) fn step(ctx: &Context, dtype: DType, p: &WriteParams, b: WriteBindings<'_>) -> Result<Step> {
    let workgroup = WORKGROUP.min(ctx.limits().max_compute_invocations_per_workgroup);
    let kernel = pipeline::get(
        ctx,
        Kernel::KvWrite,
        dtype,
        Default::default(),
        &[("WORKGROUP", workgroup as f64)],
    )?;
    let invocations = if p.flags & flags::ADVANCE != 0 {
        p.batch as u64
    } else {
        p.batch as u64 * p.heads as u64 * p.rows as u64
    };
    let groups = grid(ctx, invocations.div_ceil(workgroup as u64), "kv_write")?;
    let params = super::params_buffer(ctx, p);
    Ok(dispatch_step(
        ctx,
        kernel,
        &params,
        &[b.src, b.dst, b.starts, b.counts, b.cos, b.sin, b.block_table],
        groups,
    ))
}
