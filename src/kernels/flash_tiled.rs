//! Host side of `shaders/flash_tiled.wgsl`: the workgroup-tiled fused kernel (FlashAttention-2
//! structure: Q block and K/V tiles in workgroup memory, O slices in registers).

use super::flash_forward::FusedBindings;
use super::{check_workgroup, check_workgroup_x, grid, Step};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, Kernel, Switches};
use crate::tensor::DType;

/// Largest head dim of the tiled design.
pub const MAX_HEAD_DIM: u32 = 256;

/// Tiles of the workgroup-tiled design: a workgroup owns `block_q` query rows of one (b, h) pair
/// with `lanes` invocations per row (`block_q · lanes` invocations) and walks the keys in tiles of
/// `block_k`. Its workgroup memory is [`TiledConfig::shared_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TiledConfig {
    /// Query rows per workgroup (Br).
    pub block_q: u32,
    /// Keys per tile (Bc), a multiple of `lanes`.
    pub block_k: u32,
    /// Invocations sharing a query row, each owning a slice of its head dim.
    pub lanes: u32,
}

impl TiledConfig {
    /// Candidate tiles (block_q, block_k, lanes) tried by the tuner and, in this order, by
    /// [`TiledConfig::default_for`] (the first that fits the device wins).
    pub const CANDIDATES: [(u32, u32, u32); 8] = [
        (64, 32, 4),
        (32, 32, 8),
        (32, 32, 4),
        (32, 16, 4),
        (16, 32, 8),
        (16, 16, 4),
        (16, 8, 4),
        (8, 8, 4),
    ];

    /// A config.
    pub fn new(block_q: u32, block_k: u32, lanes: u32) -> Self {
        Self {
            block_q,
            block_k,
            lanes,
        }
    }

    /// Invocations per workgroup.
    pub fn workgroup(&self) -> u32 {
        self.block_q * self.lanes
    }

    /// O vec4 registers per invocation: its slice of the head dim.
    pub fn slots(&self, dv: u32) -> u32 {
        dv.div_ceil(4).div_ceil(self.lanes).max(1)
    }

    /// Workgroup memory of the kernel: the scaled Q block, one K/V tile, the score tile and one
    /// float per invocation (row maxima and sums), f32.
    pub fn shared_bytes(&self, dk: u32, dv: u32) -> u64 {
        let (dk4, kv4) = (dk.div_ceil(4) as u64, dk.max(dv).div_ceil(4) as u64);
        let (bq, bk) = (self.block_q as u64, self.block_k as u64);
        16 * (bq * dk4 + bk * kv4) + 4 * bq * bk + 4 * self.workgroup() as u64
    }

    /// The first candidate that fits the device for head dims `dk`, `dv` with at most 8 O
    /// vec4 per invocation (32 registers), else the smallest that fits.
    pub fn default_for(ctx: &Context, dk: u32, dv: u32) -> Result<Self> {
        check_head_dims(dk, dv)?;
        let fitting = Self::candidates(ctx, dk, dv);
        let choice = fitting.iter().find(|c| c.slots(dv) <= 8).or(fitting.last());
        choice.copied().ok_or_else(|| {
            Error::Unsupported(format!(
                "no tile of the tiled design fits this device's workgroup memory ({} bytes) at Dk={dk}, Dv={dv}",
                ctx.limits().max_compute_workgroup_storage_size
            ))
        })
    }

    /// Every candidate that fits the device for head dims `dk`, `dv`.
    pub fn candidates(ctx: &Context, dk: u32, dv: u32) -> Vec<Self> {
        Self::CANDIDATES
            .iter()
            .map(|&(q, k, l)| Self::new(q, k, l))
            .filter(|c| c.check(ctx, dk, dv).is_ok())
            .collect()
    }

    /// Checks the tile against the kernel's rules and the device's limits.
    pub fn check(&self, ctx: &Context, dk: u32, dv: u32) -> Result<()> {
        check_head_dims(dk, dv)?;
        let valid = self.block_q > 0
            && self.block_k > 0
            && self.lanes > 0
            && self.block_k.is_multiple_of(self.lanes)
            && self.slots(dv) <= 64;
        if !valid {
            return Err(Error::InvalidOption {
                name: "tiled config",
                value: self.block_k as f64,
                why: "block_q, block_k and lanes must be positive, block_k a multiple of lanes",
            });
        }
        check_workgroup_x(ctx, "tiled", self.workgroup())?;
        check_workgroup(ctx, self.workgroup(), self.shared_bytes(dk, dv))
    }
}

fn check_head_dims(dk: u32, dv: u32) -> Result<()> {
    if dk.max(dv) > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "the tiled design serves head dims up to {MAX_HEAD_DIM} (got Dk={dk}, Dv={dv})"
        )));
    }
    Ok(())
}

/// Why the tiled design cannot serve a call with these inputs, or `None` when it can. It has the
/// dot score only (the additive score runs on the register design), and on drivers with a loop
/// budget (`kernels::policy::loop_budget`) its key loop is not bounded: those run the register design.
pub(crate) fn unsupported(ctx: &Context, additive: bool) -> Option<String> {
    if additive {
        return Some("the tiled design has the dot-product score only".into());
    }
    if super::policy::loop_budget(ctx) {
        return Some("llvmpipe before Mesa 25 ends shader loops after 65535 iterations".into());
    }
    None
}

pub(crate) fn step(ctx: &Context, cfg: TiledConfig, dtype: DType, b: &FusedBindings) -> Result<Step> {
    let p = b.params;
    if b.additive {
        return Err(Error::Unsupported(
            "the tiled design has the dot-product score only".into(),
        ));
    }
    cfg.check(ctx, p.dim_k, p.dim_v)?;
    let (dk4, dv4) = (p.dim_k.div_ceil(4), p.dim_v.div_ceil(4));
    let mut constants = vec![
        ("WORKGROUP", cfg.workgroup() as f64),
        ("BLOCK_Q", cfg.block_q as f64),
        ("BLOCK_K", cfg.block_k as f64),
        ("LANES", cfg.lanes as f64),
        ("DK", p.dim_k as f64),
        ("DV", p.dim_v as f64),
        ("DK4", dk4 as f64),
        ("DV4", dv4 as f64),
        ("KV4", dk4.max(dv4) as f64),
    ];
    if p.flags & super::flags::VARLEN != 0 {
        constants.push(("VARLEN", 1.0));
    }
    let switches = Switches {
        slots: cfg.slots(p.dim_v),
        ..b.switches()
    };
    let kernel = pipeline::get(ctx, Kernel::FlashTiled, dtype, switches, &constants)?;
    let blocks = p.bh_count as u64 * p.len_q.div_ceil(cfg.block_q) as u64;
    Ok(b.dispatch(ctx, kernel, grid(ctx, blocks, "flash_tiled")?))
}
