//! Host side of `shaders/gemm_coopmat.wgsl`: the GEMM on cooperative matrices (f16 storage, f32
//! accumulation). Same bindings and uniform as `gemm.wgsl` ([`super::gemm::BINDINGS`],
//! [`super::gemm::GemmParams`]).

use super::gemm::GemmParams;
use super::{check_workgroup, check_workgroup_x, dispatch_step, grid, BoundBuffer, Step};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, Kernel, Switches};
use crate::tensor::DType;

/// Block of the cooperative-matrix GEMM: a workgroup of `workgroup` invocations (whole
/// subgroups) computes `block_m × block_n` outputs, reducing `block_k` at a time; the blocks are
/// multiples of the matrix size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CoopmatBlock {
    pub workgroup: u32,
    pub block_m: u32,
    pub block_n: u32,
    pub block_k: u32,
}

impl CoopmatBlock {
    /// Candidate blocks (block_m, block_n, block_k in matrix sizes), largest first: the first
    /// that fits the device's workgroup memory is used.
    const CANDIDATES: [(u32, u32, u32); 4] = [(8, 8, 2), (4, 4, 2), (2, 2, 2), (1, 1, 1)];

    /// Workgroup memory: the f16 A and B blocks and the f32 C block with its scratch fragment of
    /// `m × m` (each array rounded up to 16 bytes).
    fn workgroup_bytes(&self, m: u32) -> u64 {
        let (bm, bn, bk, m) = (self.block_m as u64, self.block_n as u64, self.block_k as u64, m as u64);
        let round = |b: u64| b.div_ceil(16) * 16;
        round(2 * bm * bk) + round(2 * bk * bn) + round(4 * (bm * bn + m * m))
    }

    /// Fragments each subgroup accumulates: the fragments of the block over the fewest subgroups
    /// the device may form (workgroup / largest subgroup size).
    fn fragments_per_subgroup(&self, m: u32, subgroup_max: u32) -> u32 {
        let frags = (self.block_m / m) * (self.block_n / m);
        let subgroups = (self.workgroup / subgroup_max).max(1);
        frags.div_ceil(subgroups)
    }
}

/// Most accumulator fragments per subgroup (held in registers across the reduction).
const MAX_FRAGMENTS: u32 = 16;

/// The largest subgroup size the device may pick (32 when the adapter does not say).
fn subgroup_max(ctx: &Context) -> u32 {
    ctx.info()
        .adapter
        .as_ref()
        .map_or(32, |a| a.subgroup_max_size.clamp(4, 128))
}

/// The block for `ctx`: on CPU adapters one subgroup per workgroup (lavapipe runs a workgroup on
/// one thread) and blocks of at most 4×4 fragments; on GPUs 128 invocations (four subgroups of
/// 32) and the largest candidate that fits the workgroup memory with at most 16 fragments per
/// subgroup. (Measured in the Mesa 26.1 lavapipe lane at 1024×512×512: 4×4 fragments of 8×8 ran
/// at ~3 GFLOP/s, 2×2 at ~2.)
pub(crate) fn block_for(ctx: &Context) -> Result<CoopmatBlock> {
    let m = super::policy::coopmat_size(ctx)?;
    let subgroup = subgroup_max(ctx);
    let cpu = super::policy::is_cpu(ctx);
    let max_invocations = ctx.limits().max_compute_invocations_per_workgroup;
    let workgroup = if cpu { subgroup } else { 128u32.max(subgroup) };
    if workgroup > max_invocations || !workgroup.is_multiple_of(subgroup) {
        return Err(Error::Unsupported(format!(
            "the cooperative-matrix GEMM needs a workgroup of whole subgroups of {subgroup}; the device allows {max_invocations} invocations"
        )));
    }
    let max_bytes = ctx.limits().max_compute_workgroup_storage_size as u64;
    let cpu_cap = if cpu { 4 } else { u32::MAX };
    let blocks = CoopmatBlock::CANDIDATES
        .iter()
        .filter(|&&(bm, bn, _)| bm <= cpu_cap && bn <= cpu_cap)
        .map(|&(bm, bn, bk)| CoopmatBlock {
            workgroup,
            block_m: bm * m,
            block_n: bn * m,
            block_k: bk * m,
        })
        .filter(|b| b.fragments_per_subgroup(m, subgroup) <= MAX_FRAGMENTS);
    let mut smallest = None;
    for b in blocks {
        if check_workgroup(ctx, workgroup, b.workgroup_bytes(m)).is_ok() {
            return Ok(b);
        }
        smallest = Some(b);
    }
    let needed = smallest.map_or(0, |b| b.workgroup_bytes(m));
    Err(Error::Unsupported(format!(
        "the cooperative-matrix GEMM needs {needed} bytes of workgroup memory at its smallest block; the device has {max_bytes}"
    )))
}

/// Why the cooperative-matrix GEMM cannot run on `ctx` for `dtype` storage, or `None`: f32
/// storage, a device without f16 → f32 cooperative matrices or subgroups, or no block that fits
/// the device's workgroup limits.
pub(crate) fn unsupported(ctx: &Context, dtype: DType) -> Option<String> {
    if let Some(why) = super::flash_coopmat::device_unsupported(ctx, dtype) {
        return Some(why.replace("the cooperative-matrix kernel", "the cooperative-matrix GEMM"));
    }
    block_for(ctx).err().map(|e| e.to_string())
}

pub(crate) fn step(
    ctx: &Context,
    dtype: DType,
    gp: &GemmParams,
    params: &wgpu::Buffer,
    buffers: [&BoundBuffer; 4],
) -> Result<Step> {
    if let Some(why) = unsupported(ctx, dtype) {
        return Err(Error::Unsupported(format!("GemmDesign::Coopmat: {why}")));
    }
    let m = super::policy::coopmat_size(ctx)?;
    let block = block_for(ctx)?;
    check_workgroup_x(ctx, "gemm_coopmat", block.workgroup)?;
    let switches = Switches {
        coop: m,
        rows: block.fragments_per_subgroup(m, subgroup_max(ctx)),
        ..Switches::default()
    };
    let a_m_contiguous = gp.a.row == 1 && gp.a.col != 1;
    let b_k_contiguous = gp.b.row == 1 && gp.b.col != 1;
    let constants = [
        ("WORKGROUP", block.workgroup as f64),
        ("BM", block.block_m as f64),
        ("BN", block.block_n as f64),
        ("BK", block.block_k as f64),
        ("A_M_CONTIGUOUS", a_m_contiguous as u32 as f64),
        ("B_K_CONTIGUOUS", b_k_contiguous as u32 as f64),
    ];
    let kernel = pipeline::get(ctx, Kernel::GemmCoopmat, dtype, switches, &constants)?;
    let blocks = gp.m.div_ceil(block.block_m) as u64 * gp.n.div_ceil(block.block_n) as u64;
    let groups = grid(ctx, gp.batch as u64 * blocks, "gemm_coopmat")?;
    Ok(dispatch_step(ctx, kernel, params, &buffers, groups))
}

#[cfg(test)]
mod tests {
    use super::CoopmatBlock;

    #[test]
    fn coopmat_gemm_fragments_cover_the_block() {
        let b = CoopmatBlock {
            workgroup: 128,
            block_m: 64,
            block_n: 64,
            block_k: 32,
        };
        assert_eq!(b.fragments_per_subgroup(16, 32), 4); // 16 fragments, 4 subgroups
        assert_eq!(b.fragments_per_subgroup(16, 64), 8); // 2 subgroups
        assert_eq!(b.fragments_per_subgroup(8, 128), 64); // 1 subgroup
        assert_eq!(b.workgroup_bytes(16), 2 * 64 * 32 * 2 + 4 * (64 * 64 + 16 * 16));
    }
}
