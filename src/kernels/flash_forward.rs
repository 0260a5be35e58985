//! Host side of `shaders/flash_forward.wgsl`: the fused single-pass kernel.

use std::sync::Arc;

use super::{check_workgroup_x, dispatch_step, grid, BoundBuffer, Code, Params, Step};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, BindingKind, CompiledKernel, Kernel, Switches};
use crate::tensor::DType;

/// Bindings: params, Q, K, V, O, LSE, bias, mask, the side buffer (key lengths, local-p centers,
/// additive score vector: 8 storage buffers, WebGPU's guarantee), then the ALiBi slopes uniform
/// (14) with ALiBi.
pub(crate) fn bindings(v: Switches) -> Vec<(u32, BindingKind)> {
    let mut bindings = vec![
        (0, BindingKind::Uniform),
        (1, BindingKind::Read),
        (2, BindingKind::Read),
        (3, BindingKind::Read),
        (4, BindingKind::ReadWrite),
        (5, BindingKind::ReadWrite),
        (8, BindingKind::Read),
        (9, BindingKind::Read),
        (10, BindingKind::Read),
    ];
    bindings.extend(v.alibi.then_some((14, BindingKind::Uniform)));
    bindings
}

/// A measured built-in register tile on CPU drivers: rows per invocation for head dims
/// (Dk + Dv) up to `max_head`.
#[derive(Debug, Clone, Copy)]
pub struct MeasuredRegisterRows {
    pub max_head: u32,
    pub rows: u32,
    /// The record in `benchmarks/` whose rows justify the entry.
    pub record: &'static str,
}

/// The register design's rows per invocation on CPU drivers (16 invocations per workgroup,
/// subgroup fetch), by head dims. Measured on Mesa 25.0.7 lavapipe, B 1, H 8, L 1024, rows 1 /
/// 2 / 4 / 8, not causal: D 64: 97.6 / 87.0 / 80.3 / 98.0 ms; D 128: 195.8 / 167.2 / 206.4 /
/// 198.5 ms (causal alike). Compile time triples with each doubling of rows (cold at D 64:
/// 1.6 / 4.3 / 12.7 / ~40 s), which first calls avoid with one row (quick code). Head dims past
/// 256 (D > 128) keep one row and the plain fetch, unmeasured. Other CPU drivers are assumed
/// alike until recorded.
pub const CPU_REGISTER_ROWS: &[MeasuredRegisterRows] = &[
    MeasuredRegisterRows {
        max_head: 128,
        rows: 4,
        record: "benchmarks/2026-12-06-llvmpipe-mesa-25.0.7-register-tiles/register-tiles.json",
    },
    MeasuredRegisterRows {
        max_head: 256,
        rows: 2,
        record: "benchmarks/2026-12-06-llvmpipe-mesa-25.0.7-register-tiles/register-tiles.json",
    },
];

/// Keys a row block of the fused kernel may visit under an llvmpipe loop budget
/// (see `kernels::policy::loop_budget`), for head dims up to 128 (whose inner loops NIR unrolls).
pub const CPU_MAX_KEYS: usize = 8192;

/// Keys a row block may visit under an llvmpipe loop budget when a head dim exceeds 128.
pub const CPU_MAX_KEYS_WIDE: usize = 128;

/// Whether the fused kernel can run `problem` without outrunning the device's loop budget: any
/// call where there is none; on budgeted devices at most [`CPU_MAX_KEYS`] keys for head dims up
/// to 128 and [`CPU_MAX_KEYS_WIDE`] beyond (measured on Mesa 22.3.6: D = 8 failed at 16384 keys,
/// D = 256 at ~150, when loops over more than 32 vec4 stay loops).
pub(crate) fn fits(ctx: &Context, problem: &crate::attention::Problem) -> bool {
    let max_keys = match problem.dk.max(problem.dv) <= 128 {
        true => CPU_MAX_KEYS,
        false => CPU_MAX_KEYS_WIDE,
    };
    !super::policy::loop_budget(ctx) || problem.lk <= max_keys
}

/// Whether the fused kernel would exceed a CPU driver's loop budget on `problem`.
pub(crate) fn over_cpu_loop_budget(ctx: &Context, problem: &crate::attention::Problem) -> bool {
    !fits(ctx, problem)
}

/// Largest head dim the fused kernel keeps in registers.
pub const MAX_HEAD_DIM: u32 = 256;
/// Largest number of query rows one invocation may own: compile time triples with each doubling
/// of rows on CPU drivers, and on lavapipe 8 rows were no faster than 2.
pub const MAX_ROWS: u32 = 8;

/// Tile of the fused kernel: `workgroup` invocations, each owning `rows` query rows, so a
/// workgroup covers `workgroup · rows` rows of one (batch, head).
///
/// More rows per invocation reuse every loaded K/V vector more often but hold more registers:
/// CPU drivers (lavapipe) favour many rows, GPUs few. `wgpu-attention tune` measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FlashConfig {
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Query rows per invocation (1 to [`MAX_ROWS`]).
    pub rows: u32,
    /// Fetch K/V rows cooperatively with subgroup broadcasts when the device has `SUBGROUP` and a
    /// fixed subgroup size dividing the workgroup; otherwise every invocation loads them.
    #[cfg_attr(feature = "serde", serde(default = "yes"))]
    pub subgroups: bool,
}

#[cfg(feature = "serde")]
fn yes() -> bool {
    true
}

impl FlashConfig {
    /// Candidate tiles (workgroup, rows) tried by the tuner.
    pub const CANDIDATES: [(u32, u32); 10] = [
        (64, 1),
        (64, 2),
        (64, 4),
        (32, 4),
        (32, 8),
        (16, 8),
        (128, 1),
        (32, 2),
        (16, 4),
        (8, 8),
    ];

    /// A config.
    pub fn new(workgroup: u32, rows: u32) -> Self {
        Self {
            workgroup,
            rows,
            subgroups: true,
        }
    }

    /// The subgroup size the kernel will be specialized for on `ctx`, or 0 for the plain fetch.
    pub fn subgroup_size(&self, ctx: &Context) -> u32 {
        let Some(info) = ctx.info().adapter.as_ref() else {
            return 0;
        };
        let size = info.subgroup_min_size;
        let usable = self.subgroups
            && ctx.features().contains(wgpu::Features::SUBGROUP)
            && size == info.subgroup_max_size
            && matches!(size, 4 | 8 | 16 | 32 | 64)
            && self.workgroup.is_multiple_of(size);
        if usable {
            size
        } else {
            0
        }
    }

    /// Query rows per workgroup.
    pub fn block_q(&self) -> u32 {
        self.workgroup * self.rows
    }

    /// The built-in default. On CPU adapters: [`CPU_REGISTER_ROWS`], measured; GPUs are
    /// register-bound: few rows (an estimate until a GPU record says otherwise).
    pub fn default_for(ctx: &Context, dk: u32, dv: u32) -> Result<Self> {
        check_head_dims(dk, dv)?;
        let cpu = super::policy::is_cpu(ctx);
        let head = dk + dv;
        let (rows, subgroups) = match cpu {
            true => CPU_REGISTER_ROWS
                .iter()
                .find(|m| head <= m.max_head)
                .map_or((1, false), |m| (m.rows, true)),
            false if head <= 256 => (2, true),
            false => (1, true),
        };
        // CPU: 16 invocations per workgroup, so causal and window masks skip key ranges at a fine
        // grain; GPUs want more invocations per workgroup.
        let workgroup = if cpu { 16 } else { 64 }.min(ctx.limits().max_compute_invocations_per_workgroup);
        Ok(Self {
            workgroup,
            rows,
            subgroups,
        })
    }

    /// Checks the tile against the kernel's rules and the device's limits.
    pub fn check(&self, ctx: &Context, dk: u32, dv: u32) -> Result<()> {
        check_head_dims(dk, dv)?;
        if self.rows == 0 || self.rows > MAX_ROWS {
            return Err(Error::InvalidOption {
                name: "rows",
                value: self.rows as f64,
                why: "query rows per invocation must be between 1 and 8",
            });
        }
        check_workgroup_x(ctx, "fused", self.workgroup)
    }
}

fn check_head_dims(dk: u32, dv: u32) -> Result<()> {
    if dk.max(dv) > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "the fused kernel keeps a head in registers: head dims up to {MAX_HEAD_DIM} (got Dk={dk}, Dv={dv}); use KernelChoice::Staged"
        )));
    }
    Ok(())
}

/// Whether every Q/K/V/O operand allows vec4 access: head dims, offsets and row strides
/// multiples of 4 (batch and head strides are multiples of the row stride times a length, or 0).
pub(crate) fn vec4_ok(p: &Params) -> bool {
    let all = [p.q, p.k, p.v, p.o];
    p.dim_k.is_multiple_of(4)
        && p.dim_v.is_multiple_of(4)
        && all
            .iter()
            .all(|s| [s.offset, s.row, s.head, s.batch].iter().all(|x| x.is_multiple_of(4)))
}

/// What every fused design binds (the list of [`bindings`]): the uniform and its values, Q, K,
/// V, O, LSE, bias, mask, the side buffer (key lengths, and with local-p or the additive score
/// their centers and vector) and the ALiBi slopes.
pub(crate) struct FusedBindings<'a> {
    pub params: &'a Params,
    pub uniform: &'a wgpu::Buffer,
    pub qkv: [&'a BoundBuffer; 3],
    pub out: &'a BoundBuffer,
    pub lse: &'a BoundBuffer,
    /// Bias, boolean mask (or cu_seqlens_q) and the side buffer (key lengths or cu_seqlens_k,
    /// then the local-p centers and the additive score vector at the uniform's offsets).
    pub masks: [&'a BoundBuffer; 3],
    /// Local-p windows (centers in the side buffer).
    pub local: bool,
    /// The additive score (its vector in the side buffer).
    pub additive: bool,
    pub alibi: Option<&'a BoundBuffer>,
}

impl FusedBindings<'_> {
    /// The dispatch of `kernel` over these bindings, in slot order.
    pub(crate) fn dispatch(&self, ctx: &Context, kernel: Arc<CompiledKernel>, groups: (u32, u32)) -> Step {
        let [q, k, v] = self.qkv;
        let [bias, mask, lengths] = self.masks;
        let mut buffers = vec![q, k, v, self.out, self.lse, bias, mask, lengths];
        buffers.extend(self.alibi);
        dispatch_step(ctx, kernel, self.uniform, &buffers, groups)
    }

    /// The pipeline switches bits the bindings decide (local-p, additive score, ALiBi, vec4 I/O).
    pub(crate) fn switches(&self) -> Switches {
        Switches {
            vec4_io: vec4_ok(self.params),
            additive: self.additive,
            local: self.local,
            alibi: self.alibi.is_some(),
            ..Switches::default()
        }
    }
}

/// Query rows per invocation of the quick code (see
/// [`crate::pipeline::PipelineCache::set_quick_first_calls`]): one row's unrolled code compiles
/// in seconds at head dims up to 128 and runs 15–20% slower than the fast tile on lavapipe
/// ([`CPU_REGISTER_ROWS`]), so the forward needs no compact loops.
pub const QUICK_ROWS: u32 = 1;

/// The dispatch of tile `cfg` over the bindings; with [`Code::QuickUntilCompiled`] a first call
/// may run the quick code instead (one row per invocation).
pub(crate) fn step(ctx: &Context, cfg: FlashConfig, code: Code, dtype: DType, b: &FusedBindings) -> Result<Step> {
    let p = b.params;
    cfg.check(ctx, p.dim_k, p.dim_v)?;
    let mut constants = vec![
        ("WORKGROUP", cfg.workgroup as f64),
        ("DK", p.dim_k as f64),
        ("DV", p.dim_v as f64),
        ("DK4", p.dim_k.div_ceil(4) as f64),
        ("DV4", p.dim_v.div_ceil(4) as f64),
    ];
    // Packed sequences compile their own pipeline; the dense kernel keeps the default (false).
    if p.flags & super::flags::VARLEN != 0 {
        constants.push(("VARLEN", 1.0));
    }
    let mut switches = Switches {
        rows: cfg.rows,
        subgroup: cfg.subgroup_size(ctx),
        ..b.switches()
    };
    let mut cfg = cfg;
    if code == Code::QuickUntilCompiled
        && pipeline::runs_quick(ctx, p.forward_macs(), Kernel::FlashForward, dtype, switches, &constants)
    {
        cfg.rows = QUICK_ROWS;
        switches.rows = QUICK_ROWS;
    }
    let kernel = pipeline::get(ctx, Kernel::FlashForward, dtype, switches, &constants)?;
    let blocks = p.bh_count as u64 * p.len_q.div_ceil(cfg.block_q()) as u64;
    Ok(b.dispatch(ctx, kernel, grid(ctx, blocks, "flash_forward")?))
}
