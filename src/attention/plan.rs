//! Planning an attention call: validation, the kernel path, the outputs and the input bindings
//! every path shares. The recording itself is in `fused.rs` and `staged.rs`; problems with an
//! empty axis are planned in `empty.rs`.

use super::params::local_params;
use super::side::Side;
use super::{validate, Attention, Problem, Tuning};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::{self, BoundBuffer, Params};
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// Inputs of the family members that reuse the attention kernels (crate-private: the public
/// entry points are in [`crate::family`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    /// Additive (Bahdanau) score vector v \[Da\]: Q and K are then the projections W_q q + b and
    /// W_k k, and score(q, k) = vᵀ tanh(q + k). Fused: reduced in the tile; staged: the naive path
    /// through the [rows, Lk, Da] tanh tensor.
    pub score_vector: Option<Tensor>,
    /// Local-p windows (§4).
    pub local: Option<LocalWindows>,
    /// Precomputed scores S [B, Hq, Lq, Lk] (f32, contiguous) for the staged path (location-based
    /// attention, §3): copied in place of QKᵀ; Q and K are then only shape carriers.
    pub scores: Option<Tensor>,
}

/// Per-row windows of local-p attention: row i sees keys with |j − centers\[i\]| ≤ radius, each
/// weight multiplied by exp(−(j − centers\[i\])² / (2σ²)) with σ = radius / 2 when `gaussian`.
#[derive(Debug, Clone)]
pub(crate) struct LocalWindows {
    /// Aligned positions [B, Hq, Lq], f32, contiguous.
    pub centers: Tensor,
    pub radius: f32,
    pub gaussian: bool,
}

/// A validated, non-empty call as every kernel path plans it (`plan_fused`, `plan_staged`,
/// `plan_decode`): the problem and the call's operands.
#[derive(Clone, Copy)]
pub(super) struct PlanInputs<'a> {
    pub problem: Problem,
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub opts: &'a AttentionOptions,
    pub extras: &'a Extras,
    pub tuning: &'a Tuning,
}

/// A scratch buffer of `size` bytes with the usages of a tensor, checked against `max_buffer_size`.
pub(super) fn storage_buffer(ctx: &Context, label: &str, size: u64) -> Result<wgpu::Buffer> {
    ctx.check_buffer_size(label, size)?;
    Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: crate::tensor::padded_size(size),
        usage: crate::tensor::TENSOR_USAGE,
        mapped_at_creation: false,
    }))
}

/// The path `opts.kernel` resolves to: under `Auto`, staged when weights are requested, decode
/// for few packed rows when it supports the call, else fused.
fn resolve_kernel(
    ctx: &Context,
    p: &Problem,
    qkv: [&Tensor; 3],
    opts: &AttentionOptions,
    extras: &Extras,
) -> KernelChoice {
    match opts.kernel {
        KernelChoice::Auto if opts.block_table.is_some() => KernelChoice::Decode,
        KernelChoice::Auto if opts.return_weights => KernelChoice::Staged,
        KernelChoice::Auto if super::decode::auto_prefers(ctx, p, qkv, opts, extras) => KernelChoice::Decode,
        // Past a CPU driver's loop budget the fused kernel cannot run: split keys, or stage.
        KernelChoice::Auto if kernels::flash_forward::over_cpu_loop_budget(ctx, p) => {
            match super::decode::unsupported(ctx, p, qkv, opts, extras) {
                None => KernelChoice::Decode,
                Some(_) => KernelChoice::Staged,
            }
        }
        KernelChoice::Auto => KernelChoice::Fused,
        other => other,
    }
}

/// `t` bound whole with its strides, or the unused-input buffer when absent.
fn bind_optional(ctx: &Context, t: &Option<Tensor>, name: &'static str) -> Result<(BoundBuffer, kernels::Strides)> {
    match t {
        Some(t) => {
            let (b, o) = kernels::bind_tensor(ctx, t, name)?;
            Ok((b, kernels::strides_of(t, o)))
        }
        None => Ok((kernels::unused_input(ctx), Default::default())),
    }
}

impl Attention {
    /// Validates, plans and prepares an attention call with default tiles.
    pub fn new(ctx: &Context, q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Self> {
        Self::with_tuning(ctx, q, k, v, opts, &Tuning::default())
    }

    /// Like [`Attention::new`] with explicit tile settings (for benchmarks and the tuner).
    pub fn with_tuning(
        ctx: &Context,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        tuning: &Tuning,
    ) -> Result<Self> {
        Self::plan(ctx, q, k, v, opts, &Extras::default(), tuning)
    }

    /// Validates and plans a call with the family's extra inputs.
    pub(crate) fn plan(
        ctx: &Context,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
        tuning: &Tuning,
    ) -> Result<Self> {
        let problem = validate(ctx, q, k, v, opts)?;
        let kernel = resolve_kernel(ctx, &problem, [q, k, v], opts, extras);
        ctx.scoped("attention setup", || {
            if problem.b == 0 || problem.lq == 0 {
                Self::without_rows(ctx, problem, q.dtype(), opts, kernel)
            } else if problem.lk == 0 {
                Self::without_keys(ctx, problem, q, opts, extras, tuning, kernel)
            } else {
                let inputs = PlanInputs {
                    problem,
                    q,
                    k,
                    v,
                    opts,
                    extras,
                    tuning,
                };
                Self::record(ctx, kernel, inputs)
            }
        })
    }

    /// Records a non-empty problem on the resolved kernel path.
    pub(super) fn record(ctx: &Context, kernel: KernelChoice, inputs: PlanInputs) -> Result<Self> {
        match kernel {
            KernelChoice::Staged => Self::plan_staged(ctx, inputs),
            KernelChoice::Decode => Self::plan_decode(ctx, inputs),
            _ => Self::plan_fused(ctx, inputs),
        }
    }

    /// Binds Q, K, V, the bias and the mask, and builds the side buffer (key lengths and local-p
    /// centers); fills their strides and offsets into `params`.
    pub(crate) fn bind_inputs(
        ctx: &Context,
        params: &mut Params,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
    ) -> Result<([BoundBuffer; 3], [BoundBuffer; 2], Side)> {
        let (qb, qo) = kernels::bind_tensor(ctx, q, "q")?;
        let (kb, ko) = kernels::bind_tensor(ctx, k, "k")?;
        let (vb, vo) = kernels::bind_tensor(ctx, v, "v")?;
        params.q = kernels::strides_of(q, qo);
        params.k = kernels::strides_of(k, ko);
        params.v = kernels::strides_of(v, vo);
        let [bias, mask, _] = Self::bind_masks(ctx, params, opts)?;
        let side = Side::new(
            ctx,
            opts.key_lengths.as_ref(),
            extras.local.as_ref().map(|l| &l.centers),
            None,
        )?;
        params.centers_off = side.centers_off;
        local_params(params, &extras.local);
        Ok(([qb, kb, vb], [bias, mask], side))
    }

    /// Bias, mask and key lengths bound whole (the unused-input buffer for those not given);
    /// their strides go into `params`.
    pub(super) fn bind_masks(ctx: &Context, params: &mut Params, opts: &AttentionOptions) -> Result<[BoundBuffer; 3]> {
        let (bias, bias_strides) = bind_optional(ctx, &opts.bias, "bias")?;
        let (mask, mask_strides) = bind_optional(ctx, &opts.mask, "mask")?;
        let (lens, _) = bind_optional(ctx, &opts.key_lengths, "key_lengths")?;
        (params.bias, params.mask) = (bias_strides, mask_strides);
        Ok([bias, mask, lens])
    }

    /// The ALiBi slopes uniform (`shaders/common/alibi.wgsl`: 1024 vec4, [Hq] or [B, Hq]
    /// slopes, zero past them) when `opts.alibi_slopes` is set.
    pub(super) fn alibi_uniform(ctx: &Context, opts: &AttentionOptions) -> Option<BoundBuffer> {
        opts.alibi_slopes
            .as_ref()
            .map(|slopes| BoundBuffer::whole(&kernels::alibi_buffer(ctx, slopes)))
    }

    /// O (the caller's `opts.out`, or a new tensor) and, when requested, LSE.
    pub(crate) fn outputs(
        ctx: &Context,
        p: &Problem,
        dtype: DType,
        opts: &AttentionOptions,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let out = match &opts.out {
            Some(t) => t.clone(),
            None => Tensor::zeros(ctx, &[p.b, p.hq, p.lq, p.dv], dtype)?,
        };
        let lse = match opts.return_lse {
            true => Some(Tensor::zeros(ctx, &[p.b, p.hq, p.lq], DType::F32)?),
            false => None,
        };
        Ok((out, lse))
    }

    /// Bytes of the outputs this call allocated: O (unless it is the caller's `opts.out`) and LSE
    /// or the 16-byte buffer bound in its place.
    pub(super) fn output_bytes(opts: &AttentionOptions, out: &Tensor, lse: &Option<Tensor>) -> u64 {
        let out_bytes = if opts.out.is_some() { 0 } else { out.buffer().size() };
        out_bytes + lse.as_ref().map_or(16, |t| t.buffer().size())
    }
}
