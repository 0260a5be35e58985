//! Host side of `shaders/flash_forward.wgsl`: the fused single-pass kernel.

use super::{check_workgroup, dispatch_step, grid, BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, Kernel, Slot};
use crate::tensor::DType;

/// Bindings: params, Q, K, V, O, LSE, bias, mask, key lengths.
pub const SLOTS: &[(u32, Slot)] = &[
    (0, Slot::Uniform),
    (1, Slot::Read),
    (2, Slot::Read),
    (3, Slot::Read),
    (4, Slot::ReadWrite),
    (5, Slot::ReadWrite),
    (8, Slot::Read),
    (9, Slot::Read),
    (10, Slot::Read),
];

/// Tile configuration of the fused kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FlashConfig {
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Query rows per workgroup (multiple of 4).
    pub block_q: u32,
    /// Keys per streamed block (multiple of 4).
    pub block_k: u32,
}

impl FlashConfig {
    /// Candidate tiles, best first; [`FlashConfig::default_for`] takes the first that fits.
    pub const CANDIDATES: [(u32, u32); 9] = [
        (64, 32),
        (32, 64),
        (32, 32),
        (32, 16),
        (16, 32),
        (16, 16),
        (8, 16),
        (8, 8),
        (4, 4),
    ];

    /// Workgroup memory the kernel needs for head dims `dk`, `dv`, in bytes.
    pub fn workgroup_bytes(&self, dk: u32, dv: u32) -> u64 {
        let dv_pad = dv.div_ceil(4) * 4;
        let (bq, bk) = (self.block_q as u64, self.block_k as u64);
        4 * (bq * dk as u64 + bk * dk.max(dv_pad) as u64 + bq * bk + bq * dv_pad as u64 + 3 * bq)
    }

    /// The largest candidate tile that fits the device's workgroup memory for these head dims.
    pub fn default_for(ctx: &Context, dk: u32, dv: u32) -> Result<Self> {
        let limit = ctx.limits().max_compute_workgroup_storage_size as u64;
        let workgroup = 64.min(ctx.limits().max_compute_invocations_per_workgroup);
        Self::CANDIDATES
            .iter()
            .map(|&(block_q, block_k)| Self {
                workgroup,
                block_q,
                block_k,
            })
            .find(|c| c.workgroup_bytes(dk, dv) <= limit)
            .ok_or_else(|| Error::Limit {
                what: format!("fused attention with head dims Dk={dk}, Dv={dv} (smallest tile)"),
                limit: "max_compute_workgroup_storage_size",
                needed: Self {
                    workgroup,
                    block_q: 4,
                    block_k: 4,
                }
                .workgroup_bytes(dk, dv),
                max: limit,
            })
    }

    fn check(&self, ctx: &Context, dk: u32, dv: u32) -> Result<()> {
        for (name, x) in [("block_q", self.block_q), ("block_k", self.block_k)] {
            if x == 0 || x % 4 != 0 {
                return Err(Error::InvalidOption {
                    name,
                    value: x as f64,
                    why: "must be a positive multiple of 4",
                });
            }
        }
        check_workgroup(ctx, self.workgroup, self.workgroup_bytes(dk, dv))
    }
}

#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn step(
    ctx: &Context,
    cfg: FlashConfig,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    qkv: [&BoundBuffer; 3],
    out: &BoundBuffer,
    lse: &BoundBuffer,
    masks: [&BoundBuffer; 3],
) -> Result<Step> {
    cfg.check(ctx, p.dim_k, p.dim_v)?;
    let dv_pad = p.dim_v.div_ceil(4) * 4;
    let constants = [
        ("WORKGROUP", cfg.workgroup as f64),
        ("BLOCK_Q", cfg.block_q as f64),
        ("BLOCK_K", cfg.block_k as f64),
        ("DK", p.dim_k as f64),
        ("DV", p.dim_v as f64),
        ("DV_PAD", dv_pad as f64),
        ("DKV_MAX", p.dim_k.max(dv_pad) as f64),
    ];
    let kernel = pipeline::get(ctx, Kernel::FlashForward, dtype, SLOTS, &constants)?;
    let blocks = p.bh_count as u64 * p.len_q.div_ceil(cfg.block_q) as u64;
    let groups = grid(ctx, blocks, "flash_forward")?;
    let [q, k, v] = qkv;
    let [bias, mask, lengths] = masks;
    Ok(dispatch_step(
        ctx,
        kernel,
        params,
        &[q, k, v, out, lse, bias, mask, lengths],
        groups,
    ))
}
