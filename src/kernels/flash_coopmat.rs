//! Host side of `shaders/flash_coopmat.wgsl`: the fused kernel on cooperative matrices (f16
//! storage, f32 accumulation). Same bindings and uniform as `flash_forward`, so the fused path
//! dispatches either with the same buffers.

use super::flash_forward::FusedBindings;
use super::{check_workgroup_x, grid, Step};
use crate::attention::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, Kernel, Switches};
use crate::tensor::DType;

/// Largest head dim of the cooperative-matrix kernel.
pub const MAX_HEAD_DIM: u32 = 256;

/// Tile of the cooperative-matrix kernel: a workgroup of `workgroup` invocations owns
/// `block_q` query rows of one (batch, head) and walks the keys `block_k` at a time. Both blocks
/// are multiples of the device's matrix size; every tile of Q, K, V, S, P and O lives in
/// workgroup memory ([`CoopmatConfig::workgroup_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CoopmatConfig {
    /// Invocations per workgroup (its subgroups share the matrix tiles).
    pub workgroup: u32,
    /// Query rows per workgroup (Br).
    pub block_q: u32,
    /// Keys per tile (Bc).
    pub block_k: u32,
}

impl CoopmatConfig {
    /// Candidate blocks (block_q, block_k), largest first: `default_for` takes the first that
    /// fits the device's workgroup memory; the tuner may try them all.
    pub const CANDIDATES: [(u32, u32); 6] = [(64, 64), (64, 32), (32, 32), (32, 16), (16, 16), (8, 8)];

    /// Every candidate the tuner tries on `ctx` for head dims `dk`, `dv`: the blocks that fit,
    /// each with one subgroup and with four (where the device allows them).
    pub fn candidates(ctx: &Context, dk: u32, dv: u32) -> Vec<Self> {
        let Ok(base) = Self::default_for(ctx, dk, dv) else {
            return Vec::new();
        };
        let subgroup = ctx
            .info()
            .adapter
            .as_ref()
            .map_or(32, |a| a.subgroup_max_size.clamp(4, 128));
        let mut out = Vec::new();
        for workgroup in [subgroup, 4 * subgroup] {
            for (block_q, block_k) in Self::CANDIDATES {
                let c = Self {
                    workgroup,
                    block_q,
                    block_k,
                };
                if c.check(ctx, dk, dv).is_ok() && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        // The default first: `max_tiles` keeps it.
        out.retain(|c| *c != base);
        out.insert(0, base);
        out
    }

    /// Workgroup memory of the kernel: the f16 Q, K and V tiles, the f32 scores and f16
    /// probabilities, the f32 O block and the running max/sum per row.
    pub fn workgroup_bytes(&self, dk: u32, dv: u32) -> u64 {
        let (br, bc, dk, dv) = (self.block_q as u64, self.block_k as u64, dk as u64, dv as u64);
        let f16_tiles = br * dk + bc * dk + bc * dv + br * bc;
        let f32_tiles = br * bc + br * dv + 2 * br;
        // Each array rounded up to 16 bytes, plus the two flags.
        2 * f16_tiles + 4 * f32_tiles + 6 * 16 + 8
    }

    /// The largest candidate block that fits the device, for head dims `dk`, `dv`. CPU adapters
    /// get one subgroup per workgroup (barriers are cheap there, and lavapipe runs a workgroup on
    /// one thread), GPUs four subgroups of 32.
    pub fn default_for(ctx: &Context, dk: u32, dv: u32) -> Result<Self> {
        let m = super::policy::coopmat_size(ctx)?;
        check_head_dims(m, dk, dv)?;
        let cpu = super::policy::is_cpu(ctx);
        let subgroup = ctx
            .info()
            .adapter
            .as_ref()
            .map_or(32, |a| a.subgroup_max_size.clamp(4, 128));
        let workgroup = if cpu { subgroup } else { 128 }.min(ctx.limits().max_compute_invocations_per_workgroup);
        let max_bytes = ctx.limits().max_compute_workgroup_storage_size as u64;
        let cpu_cap = if cpu { 32 } else { u32::MAX };
        Self::CANDIDATES
            .iter()
            .map(|&(block_q, block_k)| Self {
                workgroup,
                block_q,
                block_k,
            })
            .filter(|c| c.block_q <= cpu_cap && c.block_q.is_multiple_of(m) && c.block_k.is_multiple_of(m))
            .find(|c| c.workgroup_bytes(dk, dv) <= max_bytes)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the cooperative-matrix kernel needs {} bytes of workgroup memory for Dk={dk}, Dv={dv} at its smallest tile; the device has {max_bytes}",
                    Self {
                        workgroup,
                        block_q: m,
                        block_k: m
                    }
                    .workgroup_bytes(dk, dv)
                ))
            })
    }

    /// Checks the tile against the kernel's rules and the device's limits.
    pub fn check(&self, ctx: &Context, dk: u32, dv: u32) -> Result<()> {
        let m = super::policy::coopmat_size(ctx)?;
        check_head_dims(m, dk, dv)?;
        for (name, value) in [("block_q", self.block_q), ("block_k", self.block_k)] {
            if value == 0 || !value.is_multiple_of(m) || value > 256 {
                return Err(Error::Unsupported(format!(
                    "cooperative-matrix tile: {name} = {value} must be a multiple of the matrix size {m}, at most 256"
                )));
            }
        }
        // Cooperative-matrix operations need whole subgroups: a multiple of the largest size the
        // device may pick covers every size it may pick (powers of two).
        let subgroup = ctx.info().adapter.as_ref().map_or(0, |a| a.subgroup_max_size);
        if subgroup > 0 && !self.workgroup.is_multiple_of(subgroup) {
            return Err(Error::Unsupported(format!(
                "cooperative-matrix tile: a workgroup of {} is not a whole number of subgroups of {subgroup}",
                self.workgroup
            )));
        }
        check_workgroup_x(ctx, "flash_coopmat", self.workgroup)?;
        super::check_workgroup(ctx, self.workgroup, self.workgroup_bytes(dk, dv))
    }
}

fn check_head_dims(m: u32, dk: u32, dv: u32) -> Result<()> {
    if dk == 0 || dv == 0 || !dk.is_multiple_of(m) || !dv.is_multiple_of(m) || dk.max(dv) > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "the cooperative-matrix kernel needs head dims that are multiples of its matrix size {m}, up to {MAX_HEAD_DIM} (got Dk={dk}, Dv={dv})"
        )));
    }
    Ok(())
}

/// Why the cooperative-matrix kernel cannot serve a call, or `None` when it can: f32 storage,
/// a device without f16 → f32 cooperative matrices or subgroups, the additive score (no matrix
/// product), head dims that are not multiples of the matrix size, or a tile that does not fit
/// the workgroup memory.
pub(crate) fn unsupported(ctx: &Context, problem: &Problem, dtype: DType, additive: bool) -> Option<String> {
    if let Some(why) = device_unsupported(ctx, dtype) {
        return Some(why);
    }
    if additive {
        return Some("the additive score is not a matrix product".into());
    }
    let (dk, dv) = (problem.dk as u32, problem.dv as u32);
    if problem.dk > MAX_HEAD_DIM as usize || problem.dv > MAX_HEAD_DIM as usize {
        return Some(format!(
            "head dims up to {MAX_HEAD_DIM} (got Dk={}, Dv={})",
            problem.dk, problem.dv
        ));
    }
    CoopmatConfig::default_for(ctx, dk, dv).err().map(|e| e.to_string())
}

/// Why the kernel cannot run on `ctx` for `dtype` storage whatever the call, or `None`.
pub(crate) fn device_unsupported(ctx: &Context, dtype: DType) -> Option<String> {
    if dtype != DType::F16 {
        return Some(format!("cooperative matrices read f16 storage (got {})", dtype.name()));
    }
    if let Err(e) = super::policy::coopmat_size(ctx) {
        return Some(e.to_string());
    }
    if !ctx.features().contains(wgpu::Features::SUBGROUP) {
        return Some("the cooperative-matrix kernel spreads its tiles over subgroups: needs Features::SUBGROUP".into());
    }
    None
}

pub(crate) fn step(ctx: &Context, cfg: CoopmatConfig, dtype: DType, b: &FusedBindings) -> Result<Step> {
    let p = b.params;
    if dtype != DType::F16 || b.additive {
        return Err(Error::Unsupported(
            "the cooperative-matrix kernel serves f16 storage with the dot-product score".into(),
        ));
    }
    cfg.check(ctx, p.dim_k, p.dim_v)?;
    let m = super::policy::coopmat_size(ctx)?;
    let (br, bc, dk, dv) = (cfg.block_q, cfg.block_k, p.dim_k, p.dim_v);
    let mut constants = vec![
        ("WORKGROUP", cfg.workgroup as f64),
        ("BR", br as f64),
        ("BC", bc as f64),
        ("DK", dk as f64),
        ("DV", dv as f64),
        ("DK4", (dk / 4) as f64),
        ("DV4", (dv / 4) as f64),
    ];
    if p.flags & super::flags::VARLEN != 0 {
        constants.push(("VARLEN", 1.0));
    }
    let switches = Switches {
        coop: m,
        ..b.switches()
    };
    let kernel = pipeline::get(ctx, Kernel::FlashCoopmat, dtype, switches, &constants)?;
    let blocks = p.bh_count as u64 * p.len_q.div_ceil(br) as u64;
    Ok(b.dispatch(ctx, kernel, grid(ctx, blocks, "flash_coopmat")?))
}
