//! Host side of the backward kernels: `shaders/flash_backward_pre.wgsl` (D = rowsum(dO ∘ O) and
//! the per-row records), `flash_backward_q.wgsl` (dQ), `flash_backward_kv.wgsl` (dK, dV) and
//! `flash_backward_bias.wgsl` (dBias).

use super::{check_workgroup_x, dispatch_step, grid, BoundBuffer, Code, Params, Step, Strides};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, BindingKind, Kernel, Switches};
use crate::tensor::DType;

/// The backward kernels' second uniform; mirrors `struct Backward` in
/// `shaders/common/grad_io.wgsl`. Offsets and strides are in elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct BackwardParams {
    /// dO [B, Hq, Lq, Dv].
    pub d_out: Strides,
    /// The forward's LSE [B, Hq, Lq] (the `head` field is the head stride, `row` the row stride).
    pub lse: Strides,
    pub dk_off: u32,
    pub dv_off: u32,
    pub bias_batches: u32,
    pub bias_heads: u32,
    pub rows_off: u32,
    /// vec4 offset in the records of the key lengths the pre-pass copies there.
    pub lengths_off: u32,
    pub pad: [u32; 2],
}

/// Pre-pass bindings: params, O, dO, LSE, row records, the backward uniform, key lengths (the
/// side buffer, copied into the records).
pub(crate) const PRE_BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::Read),
    (5, BindingKind::ReadWrite),
    (7, BindingKind::Uniform),
    (10, BindingKind::Read),
];

/// Gradient-kernel bindings: params, Q, K, V, row records (with the key lengths), gradient output,
/// the backward uniform, bias, mask (7 storage buffers; dO read from its tensor makes 8).
const GRAD_BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::Read),
    (5, BindingKind::ReadWrite),
    (6, BindingKind::ReadWrite),
    (7, BindingKind::Uniform),
    (8, BindingKind::Read),
    (9, BindingKind::Read),
];

/// Storage bindings of the gradient kernels that read dO directly (WebGPU's guaranteed 8); with
/// fewer per stage, dO is copied into the row records in f32 by the pre-pass.
pub const DIRECT_STORAGE_BINDINGS: u32 = 8;

/// Largest head dim the backward kernels keep in registers.
pub const MAX_HEAD_DIM: u32 = 256;
/// Largest number of rows one invocation of the dQ or dK/dV kernel may own (the default tile's 8:
/// more compile for many minutes on CPU drivers).
pub const MAX_ROWS: u32 = 8;
/// Rows per invocation of the dQ and dK/dV kernels' quick code, which also keeps its head-dim
/// loops as loops (see [`crate::pipeline::PipelineCache::set_quick_first_calls`]): at D = 64
/// lavapipe compiles it in about 1.5 s per kernel against minutes for the default tile's fast
/// code, which runs about 5× faster.
pub const QUICK_ROWS: u32 = 1;
/// Invocations per workgroup of the pre-pass and dBias kernels.
const FLAT_WORKGROUP: u32 = 64;

/// Tile of the dQ and dK/dV kernels: `workgroup` invocations, each owning `rows` query rows
/// (dQ) or key rows (dK/dV), so a workgroup covers `workgroup · rows` rows of one head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct BackwardConfig {
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Rows per invocation (1 to [`MAX_ROWS`]).
    pub rows: u32,
}

impl BackwardConfig {
    /// A config.
    pub fn new(workgroup: u32, rows: u32) -> Self {
        Self { workgroup, rows }
    }

    /// The built-in default: CPU adapters (lavapipe) reuse each loaded vector across several rows
    /// per invocation, fewer as heads grow (registers and compile time); GPUs take one row per
    /// invocation and wide workgroups.
    pub fn default_for(ctx: &Context, dk: u32, dv: u32) -> Result<Self> {
        check_head_dims(dk, dv)?;
        let cpu = super::policy::is_cpu(ctx);
        // Measured on lavapipe at B=1, H=8, L=1024, D=64: 8 rows per invocation are twice as fast
        // as 4.
        let (workgroup, rows) = match (cpu, dk + dv) {
            (true, 0..=128) => (16, 8),
            (true, 129..=256) => (16, 4),
            (true, _) => (16, 2),
            (false, _) => (64, 1),
        };
        Ok(Self {
            workgroup: workgroup.min(ctx.limits().max_compute_invocations_per_workgroup),
            rows,
        })
    }

    /// Checks the tile against the kernels' rules and the device's limits.
    pub fn check(&self, ctx: &Context, dk: u32, dv: u32) -> Result<()> {
        check_head_dims(dk, dv)?;
        if self.rows == 0 || self.rows > MAX_ROWS {
            return Err(Error::InvalidOption {
                name: "rows",
                value: self.rows as f64,
                why: "rows per invocation of the backward kernels must be between 1 and 8",
            });
        }
        check_workgroup_x(ctx, "backward", self.workgroup)
    }

    /// Rows per workgroup.
    pub fn block(&self) -> u32 {
        self.workgroup * self.rows
    }
}

pub(crate) fn check_head_dims(dk: u32, dv: u32) -> Result<()> {
    if dk.max(dv) > MAX_HEAD_DIM {
        return Err(Error::Unsupported(format!(
            "the backward kernels keep a head in registers: head dims up to {MAX_HEAD_DIM} (got Dk={dk}, Dv={dv})"
        )));
    }
    Ok(())
}

/// Whether Q, K and V allow vec4 access: head dims, offsets and row strides multiples of 4.
fn vec4_ok(p: &Params) -> bool {
    p.dim_k.is_multiple_of(4)
        && p.dim_v.is_multiple_of(4)
        && [p.q, p.k, p.v]
            .iter()
            .all(|s| [s.offset, s.row, s.head, s.batch].iter().all(|x| x.is_multiple_of(4)))
}

fn head_constants(workgroup: u32, p: &Params) -> [(&'static str, f64); 5] {
    [
        ("WORKGROUP", workgroup as f64),
        ("DK", p.dim_k as f64),
        ("DV", p.dim_v as f64),
        ("DK4", p.dim_k.div_ceil(4) as f64),
        ("DV4", p.dim_v.div_ceil(4) as f64),
    ]
}

/// The uniform and the buffers every gradient dispatch binds.
pub(crate) struct BackwardBindings<'a> {
    /// The attention uniform's contents and its buffer.
    pub params: &'a Params,
    pub params_buf: &'a wgpu::Buffer,
    pub qkv: [&'a BoundBuffer; 3],
    /// Row records (dO, LSE, D).
    pub rows: &'a BoundBuffer,
    /// The backward uniform.
    pub backward: &'a BoundBuffer,
    /// Bias and mask (the key lengths are in the row records).
    pub masks: [&'a BoundBuffer; 2],
    /// The caller's dO, when the kernels read it directly (the records then hold only LSE, D).
    pub d_out: Option<&'a BoundBuffer>,
    /// Whether that dO allows vec4 loads (head dim, offset and strides multiples of 4).
    pub d_out_vec4: bool,
    /// The ALiBi slopes uniform, when the call has ALiBi.
    pub alibi: Option<&'a BoundBuffer>,
}

/// The pre-pass over every query row: reads O, dO and LSE, writes the row records (with dO in
/// f32 when `record_do`) and copies the key lengths after them.
#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn pre_step(
    ctx: &Context,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    [o, d_out, lse]: [&BoundBuffer; 3],
    rows: &BoundBuffer,
    backward: &BoundBuffer,
    key_lengths: &BoundBuffer,
    record_do: bool,
) -> Result<Step> {
    let constants = [
        ("WORKGROUP", FLAT_WORKGROUP as f64),
        ("DV", p.dim_v as f64),
        ("DV4", p.dim_v.div_ceil(4) as f64),
        ("RECORD_DO", if record_do { 1.0 } else { 0.0 }),
    ];
    let kernel = pipeline::get(ctx, Kernel::FlashBackwardPre, dtype, Switches::default(), &constants)?;
    let count = p.batch as u64 * p.heads_q as u64 * p.len_q as u64;
    let groups = grid(ctx, count.div_ceil(FLAT_WORKGROUP as u64), "flash_backward_pre")?;
    Ok(dispatch_step(
        ctx,
        kernel,
        params,
        &[o, d_out, lse, rows, backward, key_lengths],
        groups,
    ))
}

/// The gradient kernels' bindings: [`GRAD_BINDINGS`], then dO (11) for the kernels that read
/// the caller's tensor and the ALiBi slopes (14) in those variants.
pub(crate) fn grad_bindings(direct: bool, s: Switches) -> Vec<(u32, BindingKind)> {
    let mut bindings = GRAD_BINDINGS.to_vec();
    bindings.extend(direct.then_some((11, BindingKind::Read)));
    bindings.extend(s.alibi.then_some((14, BindingKind::Uniform)));
    bindings
}

/// The staged element-wise step's bindings: [`DS_BINDINGS`], then the ALiBi slopes (14).
pub(crate) fn ds_bindings(s: Switches) -> Vec<(u32, BindingKind)> {
    let mut bindings = DS_BINDINGS.to_vec();
    bindings.extend(s.alibi.then_some((14, BindingKind::Uniform)));
    bindings
}

/// Which gradient kernel a dispatch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GradKernel {
    /// dQ over blocks of query rows.
    Q,
    /// dK and dV over blocks of key rows.
    Kv,
    /// dBias, one invocation per element (`elements` of them).
    Bias { elements: u64 },
}

/// One dispatch of a gradient kernel writing into `grad`.
pub(crate) fn grad_step(
    ctx: &Context,
    which: GradKernel,
    cfg: BackwardConfig,
    code: Code,
    dtype: DType,
    b: &BackwardBindings,
    grad: &BoundBuffer,
) -> Result<Step> {
    let p = b.params;
    cfg.check(ctx, p.dim_k, p.dim_v)?;
    let vec4_io = vec4_ok(p) && (b.d_out.is_none() || b.d_out_vec4);
    let direct = b.d_out.is_some();
    let kernel = match which {
        GradKernel::Q if direct => Kernel::FlashBackwardQDirect,
        GradKernel::Q => Kernel::FlashBackwardQ,
        GradKernel::Kv if direct => Kernel::FlashBackwardKvDirect,
        GradKernel::Kv => Kernel::FlashBackwardKv,
        GradKernel::Bias { .. } if direct => Kernel::FlashBackwardBiasDirect,
        GradKernel::Bias { .. } => Kernel::FlashBackwardBias,
    };
    let bias = matches!(which, GradKernel::Bias { .. });
    let workgroup = if bias { FLAT_WORKGROUP } else { cfg.workgroup };
    let constants = head_constants(workgroup, p);
    let mut switches = Switches {
        rows: if bias { 0 } else { cfg.rows },
        vec4_io,
        alibi: b.alibi.is_some(),
        ..Switches::default()
    };
    // The backward's products: 2.5 times the forward's multiply-adds.
    let macs = 2.5 * p.forward_macs();
    let mut cfg = cfg;
    if code == Code::QuickUntilCompiled && !bias && pipeline::runs_quick(ctx, macs, kernel, dtype, switches, &constants)
    {
        cfg.rows = QUICK_ROWS;
        switches.rows = QUICK_ROWS;
        switches.compact = true;
    }
    let count = match which {
        GradKernel::Q => p.bh_count as u64 * p.len_q.div_ceil(cfg.block()) as u64,
        GradKernel::Kv => p.batch as u64 * p.heads_kv as u64 * p.len_k.div_ceil(cfg.block()) as u64,
        GradKernel::Bias { elements } => elements.div_ceil(FLAT_WORKGROUP as u64),
    };
    // The kernels that read the caller's dO directly bind it at 11.
    let compiled = pipeline::get(ctx, kernel, dtype, switches, &constants)?;
    let groups = grid(ctx, count, kernel.file())?;
    let [q, k, v] = b.qkv;
    let [bias, mask] = b.masks;
    let mut buffers = vec![q, k, v, b.rows, grad, b.backward, bias, mask];
    buffers.extend(b.d_out);
    buffers.extend(b.alibi);
    Ok(dispatch_step(ctx, compiled, b.params_buf, &buffers, groups))
}

/// Staged element-wise step bindings: params, scores (in/out), dP (in/out), row records, the
/// backward uniform, bias, mask (the key lengths are in the records).
const DS_BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadWrite),
    (2, BindingKind::ReadWrite),
    (5, BindingKind::ReadWrite),
    (7, BindingKind::Uniform),
    (8, BindingKind::Read),
    (9, BindingKind::Read),
];

/// The staged backward's element-wise step over the materialized [B, Hq, Lq, Lk] f32 matrices:
/// scores → P ∘ Z and dP → dS′ in place.
pub(crate) fn ds_step(
    ctx: &Context,
    b: &BackwardBindings,
    [scores, d_p]: [&BoundBuffer; 2],
    elements: u64,
) -> Result<Step> {
    let constants = [
        ("WORKGROUP", FLAT_WORKGROUP as f64),
        ("DV4", b.params.dim_v.div_ceil(4) as f64),
    ];
    let switches = Switches {
        alibi: b.alibi.is_some(),
        ..Switches::default()
    };
    let kernel = pipeline::get(ctx, Kernel::FlashBackwardDs, DType::F32, switches, &constants)?;
    let groups = grid(ctx, elements.div_ceil(FLAT_WORKGROUP as u64), "flash_backward_ds")?;
    let [bias, mask] = b.masks;
    let mut buffers = vec![scores, d_p, b.rows, b.backward, bias, mask];
    buffers.extend(b.alibi);
    Ok(dispatch_step(ctx, kernel, b.params_buf, &buffers, groups))
}
