//! Host side of `shaders/flash_decode.wgsl` (split-KV decode with GQA packing) and
//! `shaders/decode_merge.wgsl` (the merge of partial attention states).

use super::policy::is_cpu;
use super::{check_workgroup_x, dispatch_step, grid, BoundBuffer, Params, Step};
use crate::attention::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, BindingKind, Kernel, Switches};
use crate::tensor::DType;

/// Largest head dim the decode kernel keeps in registers.
pub const MAX_HEAD_DIM: u32 = 256;
/// Largest number of packed rows one invocation may own.
pub const MAX_ROWS: u32 = 16;
/// Most splits of one (b, kv head) key range.
pub const MAX_SPLITS: u32 = 1024;
/// Most keys one invocation of the row design visits (see [`DecodeConfig::min_splits`]).
pub const KEYS_PER_SPLIT: usize = 16384;

/// Bindings of the decode kernel: params, Q, K, V, the partial states (O, then LSE), bias, mask,
/// key lengths, the split uniform (then the block table (13), the ALiBi slopes (14) and the page
/// uniform (15) in those variants): 7 storage buffers, 8 when paged.
const DECODE_BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::Read),
    (6, BindingKind::ReadWrite),
    (8, BindingKind::Read),
    (9, BindingKind::Read),
    (10, BindingKind::Read),
    (11, BindingKind::Uniform),
];

/// The decode kernels' bindings: [`DECODE_BINDINGS`], then the block table (13) and the page
/// uniform (15) when paged, the ALiBi slopes (14) with ALiBi.
pub(crate) fn decode_bindings(s: Switches) -> Vec<(u32, BindingKind)> {
    let mut bindings = DECODE_BINDINGS.to_vec();
    bindings.extend(s.paged.then_some((13, BindingKind::Read)));
    bindings.extend(s.alibi.then_some((14, BindingKind::Uniform)));
    bindings.extend(s.paged.then_some((15, BindingKind::Uniform)));
    bindings
}

/// Bindings of the merge kernel: uniform, parts' O words, parts' LSE, part table, O, LSE.
pub(crate) const MERGE_BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::Read),
    (4, BindingKind::ReadWrite),
    (5, BindingKind::ReadWrite),
];

/// Tile of the decode kernel: `workgroup` invocations, each owning `rows` packed rows (query
/// heads of one KV head × query rows) and one of `splits` key ranges — or, with `lanes`, one
/// subgroup per (rows, split) with the head dim spread over its lanes
/// (`shaders/flash_decode_lanes.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DecodeConfig {
    /// Invocations per workgroup (with `lanes`: the subgroup size, which it must equal).
    pub workgroup: u32,
    /// Packed rows per invocation (1 to [`MAX_ROWS`]); 0 = all packed rows up to the built-in cap.
    pub rows: u32,
    /// Splits of each (b, kv head) key range; 0 = chosen from the device and the problem.
    pub splits: u32,
    /// Spread the head dim over the lanes of a subgroup (needs `SUBGROUP` and a fixed subgroup
    /// size); otherwise every invocation holds whole rows.
    #[cfg_attr(feature = "serde", serde(default))]
    pub lanes: bool,
}

impl DecodeConfig {
    /// The built-in tile for `problem` on `ctx`: CPU adapters use narrow workgroups (each
    /// workgroup is a SIMD batch of one thread) and split the keys over the threads × an
    /// occupancy factor; GPUs use 64 invocations and aim at a few hundred workgroups.
    pub fn default_for(ctx: &Context, problem: &Problem) -> Result<Self> {
        check_head_dims(problem.dk as u32, problem.dv as u32)?;
        let workgroup = if is_cpu(ctx) { 8 } else { 64 }.min(ctx.limits().max_compute_invocations_per_workgroup);
        Ok(Self {
            workgroup,
            rows: 0,
            splits: 0,
            lanes: false,
        })
    }

    /// The built-in tile of `ctx`: the lanes design on GPUs with a fixed subgroup size (the head
    /// dim spread over a subgroup keeps the per-invocation state in registers) and on the CPU
    /// drivers [`CPU_DECODE_DESIGNS`] measured it on; the row design elsewhere.
    pub fn built_in(ctx: &Context, problem: &Problem) -> Result<Self> {
        let lanes = !is_cpu(ctx) || cpu_decode_design(ctx).is_some_and(|d| d.lanes);
        match lanes {
            true => Ok(Self::lanes_for(ctx, problem)?.unwrap_or(Self::default_for(ctx, problem)?)),
            false => Self::default_for(ctx, problem),
        }
    }

    /// The lanes design's tile on `ctx`, when the device has a fixed subgroup size.
    pub fn lanes_for(ctx: &Context, problem: &Problem) -> Result<Option<Self>> {
        check_head_dims(problem.dk as u32, problem.dv as u32)?;
        Ok(fixed_subgroup(ctx).map(|size| Self {
            workgroup: size,
            rows: 0,
            splits: 0,
            lanes: true,
        }))
    }

    /// Packed rows per invocation for `problem`: all of them up to a cap that shrinks with the
    /// head dims (register pressure, and lavapipe's compile time grows with rows × head dim).
    pub fn rows_for(&self, problem: &Problem) -> u32 {
        if self.rows > 0 {
            return self.rows;
        }
        let packed = packed_rows(problem);
        let cap = match problem.dk + problem.dv {
            0..=128 => 8,
            129..=256 => 4,
            _ => 2,
        };
        packed.min(cap).max(1)
    }

    /// Splits of every (b, kv head) key range for `problem` on `ctx`.
    pub fn splits_for(&self, ctx: &Context, problem: &Problem) -> u32 {
        let lk = problem.lk.max(1) as u64;
        let (wanted, min_keys) = if self.splits > 0 {
            (self.splits as u64, 1)
        } else {
            let rows = self.rows_for(problem);
            // A split occupies one invocation, or a whole workgroup in the lanes design.
            let per_split = if self.lanes { self.workgroup as u64 } else { 1 };
            let blocks = (problem.b * problem.hkv) as u64 * packed_rows(problem).div_ceil(rows) as u64 * per_split;
            let invocations = if is_cpu(ctx) {
                // Every thread gets several workgroups of full SIMD batches.
                let threads = std::thread::available_parallelism().map_or(4, |n| n.get()) as u64;
                threads * 4 * self.workgroup as u64
            } else {
                // A few hundred workgroups cover the compute units of any current GPU.
                256 * self.workgroup as u64
            };
            (invocations.div_ceil(blocks), 64)
        };
        let splits = wanted
            .min(lk.div_ceil(min_keys))
            .max(self.min_splits(ctx, problem) as u64);
        splits.clamp(1, MAX_SPLITS as u64) as u32
    }

    /// The fewest splits that keep every invocation's key loop short: at most
    /// [`KEYS_PER_SPLIT`] keys (a quarter of that in the lanes design), and under an llvmpipe
    /// loop budget (see `kernels::policy::loop_budget`) at most 8192 keys for head dims up to 128 and 128
    /// keys beyond (inner loops over more than 32 vec4 are not unrolled there and count against
    /// the budget).
    pub fn min_splits(&self, ctx: &Context, problem: &Problem) -> u32 {
        let mut budget = if self.lanes { KEYS_PER_SPLIT / 4 } else { KEYS_PER_SPLIT };
        if super::policy::loop_budget(ctx) {
            budget = budget.min(if problem.dk.max(problem.dv) <= 128 { 8192 } else { 128 });
        }
        problem.lk.div_ceil(budget).clamp(1, u32::MAX as usize) as u32
    }

    /// Checks the tile against the kernel's rules and the device's limits.
    pub fn check(&self, ctx: &Context, dk: u32, dv: u32) -> Result<()> {
        check_head_dims(dk, dv)?;
        if self.rows > MAX_ROWS {
            return Err(Error::InvalidOption {
                name: "rows",
                value: self.rows as f64,
                why: "packed rows per invocation must be between 1 and 16 (0: automatic)",
            });
        }
        if self.splits > MAX_SPLITS {
            return Err(Error::InvalidOption {
                name: "splits",
                value: self.splits as f64,
                why: "at most 1024 splits (0: automatic)",
            });
        }
        if self.lanes && fixed_subgroup(ctx) != Some(self.workgroup) {
            return Err(Error::InvalidOption {
                name: "decode workgroup",
                value: self.workgroup as f64,
                why: "the lanes design needs SUBGROUP and a workgroup equal to the device's fixed subgroup size",
            });
        }
        check_workgroup_x(ctx, "decode", self.workgroup)
    }
}

/// A decode design measured on a CPU driver: `bench --preset decode` (B 1 and 8, Hq/Hkv 32/8,
/// D = 128, Lk 4096 and 16384, contiguous and paged caches) in the record named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasuredDecodeDesign {
    /// The adapter name's prefix.
    pub adapter: &'static str,
    /// Mesa major versions the entry covers, inclusive (0..=u32::MAX for drivers outside Mesa).
    pub mesa: (u32, u32),
    /// Whether the lanes design is the faster one there.
    pub lanes: bool,
    /// The record in `benchmarks/` whose decode table justifies the entry.
    pub record: &'static str,
}

/// The built-in decode design on CPU drivers, one entry per driver measured; a CPU driver not
/// listed keeps the row design (no record says otherwise). GPUs take the lanes design where the
/// subgroup size is fixed: an estimate until a record from a GPU says otherwise (docs/GPU.md).
pub const CPU_DECODE_DESIGNS: &[MeasuredDecodeDesign] = &[
    // Mesa 25.0.7, 30 samples a row: lanes 6.7 / 26.0 ms against rows 8.7 / 31.6 ms (B 1, Lk
    // 4096 / 16384, contiguous), ahead at B 8 and on paged caches too. Later Mesa versions are
    // assumed alike until recorded.
    MeasuredDecodeDesign {
        adapter: "llvmpipe",
        mesa: (25, u32::MAX),
        lanes: true,
        record: "benchmarks/2026-12-06-llvmpipe-mesa-25.0.7-decode/decode.json",
    },
    // Mesa 22.3.6, the same binary in the same record: rows 18.5 / 45.6 ms against lanes 24.0 /
    // 94.2 ms. Mesa 23 and 24 are assumed alike until recorded.
    MeasuredDecodeDesign {
        adapter: "llvmpipe",
        mesa: (22, 24),
        lanes: false,
        record: "benchmarks/2026-12-06-llvmpipe-mesa-25.0.7/decode.mesa22.json",
    },
];

/// The entry of [`CPU_DECODE_DESIGNS`] that covers `ctx`'s adapter and driver.
pub fn cpu_decode_design(ctx: &Context) -> Option<&'static MeasuredDecodeDesign> {
    let a = ctx.info().adapter.as_ref()?;
    let mesa = super::policy::mesa_major(&a.driver_info).unwrap_or(0);
    CPU_DECODE_DESIGNS
        .iter()
        .find(|d| a.name.starts_with(d.adapter) && (d.mesa.0..=d.mesa.1).contains(&mesa))
}

/// The device's subgroup size when `SUBGROUP` is granted and the size is fixed (4 to 64).
fn fixed_subgroup(ctx: &Context) -> Option<u32> {
    let info = ctx.info().adapter.as_ref()?;
    let size = info.subgroup_min_size;
    (ctx.features().contains(wgpu::Features::SUBGROUP)
        && size == info.subgroup_max_size
        && matches!(size, 4 | 8 | 16 | 32 | 64))
    .then_some(size)
}

/// Packed rows of one (b, kv head): Hq / Hkv · Lq.
pub fn packed_rows(problem: &Problem) -> u32 {
    ((problem.hq / problem.hkv.max(1)) * problem.lq).max(1) as u32
}

fn check_head_dims(dk: u32, dv: u32) -> Result<()> {
    if dk.max(dv) > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "the decode kernel keeps a head in registers: head dims up to {MAX_HEAD_DIM} (got Dk={dk}, Dv={dv}); use KernelChoice::Staged"
        )));
    }
    Ok(())
}

/// The split uniform of the decode kernel; mirrors `struct Decode` in `shaders/flash_decode.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DecodeParams {
    pub splits: u32,
    pub packed_rows: u32,
    pub row_blocks: u32,
    pub batch_base: u32,
    pub batch_count: u32,
    /// vec4 index in the scratch where the partial LSEs start (after the partial O).
    pub lse_base: u32,
    pub _pad: [u32; 2],
}

/// The merge uniform; mirrors `struct Merge` in `shaders/decode_merge.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MergeParams {
    pub batch: u32,
    pub heads: u32,
    pub len: u32,
    pub dim: u32,
    pub parts: u32,
    pub flags: u32,
    pub o_off: u32,
    pub o_sb: u32,
    pub o_sh: u32,
    pub o_sl: u32,
    pub lse_off: u32,
    pub _pad: u32,
}

/// One part of a merge: element offsets and (batch, head, row) strides of its O and its LSE;
/// mirrors `struct PartEntry` in `shaders/decode_merge.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PartEntry {
    pub o: [u32; 4],
    pub lse: [u32; 4],
}

/// The decode kernel's optional inputs: ALiBi slopes (uniform) and a paged K/V layout (block
/// table and page uniform).
#[derive(Default)]
pub(crate) struct DecodeExtras<'a> {
    pub alibi: Option<&'a BoundBuffer>,
    pub pages: Option<(&'a BoundBuffer, &'a BoundBuffer)>,
}

/// Whether Q, K and V allow vec4 loads: head dims, offsets and strides multiples of 4.
fn vec4_ok(p: &Params) -> bool {
    p.dim_k.is_multiple_of(4)
        && p.dim_v.is_multiple_of(4)
        && [p.q, p.k, p.v]
            .iter()
            .all(|s| [s.offset, s.row, s.head, s.batch].iter().all(|x| x.is_multiple_of(4)))
}

/// The decode dispatch: every (pair, row block, split) invocation writes its partial states.
#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn decode_step(
    ctx: &Context,
    cfg: DecodeConfig,
    rows: u32,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    decode: (&DecodeParams, &wgpu::Buffer),
    qkv: [&BoundBuffer; 3],
    parts: &BoundBuffer,
    masks: [&BoundBuffer; 3],
    extras: &DecodeExtras<'_>,
) -> Result<Step> {
    cfg.check(ctx, p.dim_k, p.dim_v)?;
    let (dk4, dv4) = (p.dim_k.div_ceil(4), p.dim_v.div_ceil(4));
    let mut constants = vec![
        ("DK", p.dim_k as f64),
        ("DV", p.dim_v as f64),
        ("DK4", dk4 as f64),
        ("DV4", dv4 as f64),
    ];
    let (kernel, subgroup) = match cfg.lanes {
        true => {
            constants.push(("KC", dk4.div_ceil(cfg.workgroup) as f64));
            constants.push(("VC", dv4.div_ceil(cfg.workgroup) as f64));
            (Kernel::FlashDecodeLanes, cfg.workgroup)
        }
        false => {
            constants.push(("WORKGROUP", cfg.workgroup as f64));
            (Kernel::FlashDecode, 0)
        }
    };
    let switches = Switches {
        rows,
        vec4_io: vec4_ok(p),
        alibi: extras.alibi.is_some(),
        paged: extras.pages.is_some(),
        subgroup,
        ..Switches::default()
    };
    let compiled = pipeline::get(ctx, kernel, dtype, switches, &constants)?;
    let (d, decode_buf) = decode;
    let blocks = (d.batch_count as u64 * p.heads_kv as u64) * d.row_blocks as u64 * d.splits as u64;
    let groups = match cfg.lanes {
        true => grid(ctx, blocks, "flash_decode_lanes")?,
        false => grid(ctx, blocks.div_ceil(cfg.workgroup as u64), "flash_decode")?,
    };
    let [q, k, v] = qkv;
    let [bias, mask, lengths] = masks;
    let uniform = BoundBuffer::whole(decode_buf);
    let mut buffers = vec![q, k, v, parts, bias, mask, lengths, &uniform];
    buffers.extend(extras.pages.map(|(table, _)| table));
    buffers.extend(extras.alibi);
    buffers.extend(extras.pages.map(|(_, uniform)| uniform));
    Ok(dispatch_step(ctx, compiled, params, &buffers, groups))
}

/// The merge dispatch: one invocation per output element. `dtype` is the output's; `parts_f16`
/// reads the parts' O as f16 (otherwise f32).
#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn merge_step(
    ctx: &Context,
    dtype: DType,
    parts_f16: bool,
    m: &MergeParams,
    params: &wgpu::Buffer,
    parts: [&BoundBuffer; 3],
    out: &BoundBuffer,
    lse: &BoundBuffer,
) -> Result<Step> {
    let workgroup = 64u32.min(ctx.limits().max_compute_invocations_per_workgroup);
    let constants = [
        ("WORKGROUP", workgroup as f64),
        ("PARTS_F16", if parts_f16 { 1.0 } else { 0.0 }),
    ];
    let kernel = pipeline::get(ctx, Kernel::DecodeMerge, dtype, Switches::default(), &constants)?;
    let elements = m.batch as u64 * m.heads as u64 * m.len as u64 * m.dim as u64;
    if elements > u32::MAX as u64 {
        return Err(Error::Limit {
            what: format!("merge of {elements} output elements"),
            limit: "2^32 - 1 elements (32-bit indices)",
            needed: elements,
            max: u32::MAX as u64,
        });
    }
    let groups = grid(ctx, elements.div_ceil(workgroup as u64), "decode_merge")?;
    let [o, l, table] = parts;
    Ok(dispatch_step(ctx, kernel, params, &[o, l, table, out, lse], groups))
}
