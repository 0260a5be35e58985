//! Host side of `shaders/gemm_register.wgsl`: the register-blocked GEMM for CPU adapters. Same
//! bindings and uniform as `gemm.wgsl` ([`super::gemm::BINDINGS`], [`super::gemm::GemmParams`]).

use super::gemm::GemmParams;
use super::{check_workgroup_x, dispatch_step, grid, BoundBuffer, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, Kernel, Switches};
use crate::tensor::DType;

/// Output rows per invocation when the problem has that many; each invocation computes a
/// `rows × 8` block held in two vec4 accumulators per row.
pub const DEFAULT_ROWS: u32 = 8;
/// Invocations per workgroup (the `WG` override): one SIMD batch of a 256-bit CPU driver. A
/// workgroup covers `rows × 8·WG` outputs. (Measured on llvmpipe at 1024×512×512: 8 and 16 alike,
/// 64 ~30% slower.)
pub const DEFAULT_WORKGROUP: u32 = 8;

/// Rows per invocation for an `m`-row output: [`DEFAULT_ROWS`], or fewer (a power of two) for
/// short outputs so that no invocation computes mostly clamped rows.
pub(crate) fn rows_for(m: u32) -> u32 {
    DEFAULT_ROWS.min(m.max(1).next_power_of_two())
}

pub(crate) fn step(
    ctx: &Context,
    dtype: DType,
    gp: &GemmParams,
    params: &wgpu::Buffer,
    buffers: [&BoundBuffer; 4],
) -> Result<Step> {
    let (rows, workgroup) = (rows_for(gp.m), DEFAULT_WORKGROUP);
    check_workgroup_x(ctx, "gemm_register", workgroup)?;
    let switches = Switches {
        rows,
        ..Switches::default()
    };
    let kernel = pipeline::get(ctx, Kernel::GemmRegister, dtype, switches, &[("WG", workgroup as f64)])?;
    let blocks = gp.m.div_ceil(rows) as u64 * gp.n.div_ceil(8 * workgroup) as u64;
    let groups = grid(ctx, gp.batch as u64 * blocks, "gemm_register")?;
    Ok(dispatch_step(ctx, kernel, params, &buffers, groups))
}
