//! The tile of the shared GEMM core (`shaders/common/gemm_tile.wgsl`) and the dispatch of the GEMM
//! kernels built on it (`qk_scores`, `weighted_sum`).

use super::{check_workgroup, dispatch_step, grid, BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::Result;

/// Tile of the shared GEMM core (`shaders/common/gemm_tile.wgsl`): a `wg_y × wg_x` workgroup
/// computes a `4·wg_y × 4·wg_x` output tile, stepping `tile_k` along the reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GemmTile {
    pub wg_x: u32,
    pub wg_y: u32,
    pub tile_k: u32,
}

impl Default for GemmTile {
    fn default() -> Self {
        Self {
            wg_x: 16,
            wg_y: 16,
            tile_k: 16,
        }
    }
}

impl GemmTile {
    pub(crate) fn constants(&self, b_k_contiguous: bool) -> [(&'static str, f64); 4] {
        [
            ("WG_X", self.wg_x as f64),
            ("WG_Y", self.wg_y as f64),
            ("TILE_K", self.tile_k as f64),
            ("B_K_CONTIGUOUS", if b_k_contiguous { 1.0 } else { 0.0 }),
        ]
    }

    /// Output tiles covering an `m × n` matrix.
    pub(crate) fn tiles(&self, m: u32, n: u32) -> u64 {
        m.div_ceil(4 * self.wg_y) as u64 * n.div_ceil(4 * self.wg_x) as u64
    }

    pub(crate) fn check(&self, ctx: &Context) -> Result<()> {
        let bytes = 4 * self.tile_k as u64 * 4 * (self.wg_x + self.wg_y) as u64;
        check_workgroup(ctx, self.wg_x * self.wg_y, bytes)
    }
}

/// What the staged path's two products (`qk_scores`, `weighted_sum`) share for one chunk of
/// (b, h) pairs: the tile, the storage type and the chunk's uniform.
pub(crate) struct StagedGemm<'a> {
    pub tile: GemmTile,
    pub dtype: crate::tensor::DType,
    pub p: &'a Params,
    pub params: &'a wgpu::Buffer,
}

/// One dispatch of a GEMM kernel (`qk_scores` or `weighted_sum`) over the chunk's (b, h) pairs:
/// an `m × n` output per pair, `buffers` (A, B, C) in the kernel's binding order.
pub(crate) fn gemm_step(
    ctx: &Context,
    kernel: crate::pipeline::Kernel,
    b_k_contiguous: bool,
    g: &StagedGemm,
    (m, n): (u32, u32),
    buffers: [&BoundBuffer; 3],
) -> Result<Step> {
    g.tile.check(ctx)?;
    let constants = g.tile.constants(b_k_contiguous);
    let compiled = crate::pipeline::get(ctx, kernel, g.dtype, Default::default(), &constants)?;
    let groups = grid(ctx, g.p.bh_count as u64 * g.tile.tiles(m, n), kernel.file())?;
    Ok(dispatch_step(ctx, compiled, g.params, &buffers, groups))
}
