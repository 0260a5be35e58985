//! Host side of `shaders/gemm.wgsl`: batched C = act(alpha · A B + bias (+ C)).

use super::{dispatch_step, grid, BoundBuffer, GemmTile, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, BindingKind, Kernel};
use crate::tensor::DType;

/// Bindings: params, A, B, C, bias.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::ReadWrite),
    (4, BindingKind::Read),
];

/// Flag bits of [`GemmParams::flags`].
pub mod flags {
    pub const BIAS: u32 = 1;
    pub const ACCUMULATE: u32 = 2;
    pub const TANH: u32 = 4;
    pub const SIGMOID: u32 = 8;
}

/// Element offset and strides of one GEMM operand: batch index t splits into
/// (t / inner, t % inner) with strides `outer` and `inner`; `row` and `col` step the matrix.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatrixStrides {
    pub offset: u32,
    pub outer: u32,
    pub inner: u32,
    pub row: u32,
    pub col: u32,
}

/// The uniform of `gemm.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch: u32,
    pub inner: u32,
    pub flags: u32,
    pub alpha: f32,
    pub bias_off: u32,
    pub a: MatrixStrides,
    pub b: MatrixStrides,
    pub c: MatrixStrides,
    pub post_scale: f32,
}

pub(crate) fn step(
    ctx: &Context,
    tile: GemmTile,
    dtype: DType,
    gp: &GemmParams,
    params: &wgpu::Buffer,
    buffers: [&BoundBuffer; 4],
) -> Result<Step> {
    tile.check(ctx)?;
    let b_k_contiguous = gp.b.row == 1 && gp.b.col != 1;
    let kernel = pipeline::get(
        ctx,
        Kernel::Gemm,
        dtype,
        Default::default(),
        &tile.constants(b_k_contiguous),
    )?;
    let groups = grid(ctx, gp.batch as u64 * tile.tiles(gp.m, gp.n), "gemm")?;
    Ok(dispatch_step(ctx, kernel, params, &buffers, groups))
}
