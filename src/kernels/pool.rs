//! Host side of `shaders/pool.wgsl`: attention pooling of a sequence into one vector per batch.

use super::{check_workgroup, dispatch_step, grid, BoundBuffer, Step};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, scores, X, out, alpha (weights), step mask, step bias.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::ReadWrite),
    (4, BindingKind::ReadWrite),
    (5, BindingKind::Read),
    (6, BindingKind::Read),
];

/// How step scores become weights.
pub mod mode {
    pub const SOFTMAX: u32 = 0;
    pub const FEED_FORWARD: u32 = 1;
    pub const SUM: u32 = 2;
}

/// Flag bits of [`PoolParams::flags`].
pub mod flags {
    pub const MASK: u32 = 1;
    pub const BIAS: u32 = 2;
}

/// The uniform of `pool.wgsl`; offsets and strides in elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PoolParams {
    pub batch: u32,
    pub len: u32,
    pub width: u32,
    pub dim: u32,
    pub mode: u32,
    pub flags: u32,
    pub eps: f32,
    pub _pad0: u32,
    /// Scores: offset, batch, step, width strides.
    pub s: [u32; 4],
    /// X: offset, batch, step, dim strides.
    pub x: [u32; 4],
    pub mask_off: u32,
    pub mask_sb: u32,
    pub bias_off: u32,
    pub _pad1: u32,
    /// Out: offset, batch, dim strides.
    pub o: [u32; 3],
    pub _pad2: u32,
}

const WORKGROUP: u32 = 64;
/// Loop steps one invocation may take under an llvmpipe loop budget (65535, with a margin).
const LOOP_STEPS: u64 = 60000;

pub(crate) fn step(
    ctx: &Context,
    dtype: DType,
    pp: &PoolParams,
    params: &wgpu::Buffer,
    buffers: [&BoundBuffer; 6],
) -> Result<Step> {
    let workgroup = WORKGROUP.min(ctx.limits().max_compute_invocations_per_workgroup);
    check_workgroup(ctx, workgroup, 2 * 4 * workgroup as u64)?;
    // Each invocation loops over ⌈dim / workgroup⌉ · len steps of the weighted sum (plus the
    // strided passes over len): stay within an llvmpipe loop budget (see `policy::loop_budget`).
    let (len, dim) = (pp.len as u64, pp.dim as u64);
    let steps = dim.div_ceil(workgroup as u64) * (len + 1) + 4 * len.div_ceil(workgroup as u64) + pp.width as u64;
    if super::policy::loop_budget(ctx) && steps > LOOP_STEPS {
        return Err(Error::Unsupported(format!(
            "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; pooling {len} steps of width {dim} needs {steps} loop steps per invocation (at most {LOOP_STEPS} here)"
        )));
    }
    let kernel = pipeline::get(
        ctx,
        Kernel::Pool,
        dtype,
        Default::default(),
        &[("WORKGROUP", workgroup as f64)],
    )?;
    let groups = grid(ctx, pp.batch as u64, "pool")?;
    Ok(dispatch_step(ctx, kernel, params, &buffers, groups))
}
