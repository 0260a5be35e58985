//! The fused path: one `flash_forward` dispatch per chunk of (b, h) pairs, each chunk binding
//! only the window of every operand it touches so that each fits one storage binding.

use super::design::FusedKernel;
use super::params::{base_params, local_params};
use super::plan::{storage_buffer, PlanInputs};
use super::side::Side;
use super::{Attention, AttentionOutput, Extras, Problem};
use crate::chunks::{self, Chunk, Operand};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::flash_forward::FusedBindings;
use crate::kernels::{self, BoundBuffer, Params, Step};
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// Bindings every chunk shares: stand-ins for unused slots, the side buffer (key lengths, local-p
/// centers, the additive score vector), the ALiBi slopes uniform.
struct SharedBindings {
    unused: BoundBuffer,
    unused_lse: BoundBuffer,
    side: Side,
    alibi: Option<BoundBuffer>,
}

impl SharedBindings {
    fn new(ctx: &Context, opts: &AttentionOptions, extras: &Extras) -> Result<Self> {
        let side = Side::new(
            ctx,
            opts.key_lengths.as_ref(),
            extras.local.as_ref().map(|l| &l.centers),
            extras.score_vector.as_ref(),
        )?;
        Ok(Self {
            unused: kernels::unused_input(ctx),
            unused_lse: BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?),
            side,
            alibi: Attention::alibi_uniform(ctx, opts),
        })
    }
}

/// Every input the kernel reads must be a storage buffer.
fn require_storage_usage(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<()> {
    let inputs = [
        ("q", Some(q)),
        ("k", Some(k)),
        ("v", Some(v)),
        ("bias", opts.bias.as_ref()),
        ("mask", opts.mask.as_ref()),
        ("key_lengths", opts.key_lengths.as_ref()),
    ];
    for (name, t) in inputs {
        if let Some(t) = t.filter(|t| !t.buffer().usage().contains(wgpu::BufferUsages::STORAGE)) {
            return Err(Error::BufferUsage {
                name,
                needed: wgpu::BufferUsages::STORAGE,
                has: t.buffer().usage(),
            });
        }
    }
    Ok(())
}

/// Every windowed operand, as the kernel addresses it, in binding order: Q, K, V, O, then LSE,
/// bias and mask when present.
#[allow(clippy::too_many_arguments, reason = "one argument per operand")]
fn windowed_operands(
    p: &Problem,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Option<Tensor>,
    opts: &AttentionOptions,
) -> Result<Vec<Operand>> {
    let group = (p.hq / p.hkv) as u64;
    let operand = |name, t: &Tensor, rows: usize, row_len: usize, group: u64| Operand {
        name,
        tensor: t.clone(),
        strides: kernels::strides_of(t, 0),
        rows: rows as u64,
        row_len: row_len as u64,
        group,
    };
    let mut operands = vec![
        operand("q", q, p.lq, p.dk, 1),
        operand("k", k, p.lk, p.dk, group),
        operand("v", v, p.lk, p.dv, group),
        operand("out", out, p.lq, p.dv, 1),
    ];
    if let Some(l) = lse {
        let view = l.reshape(&[p.b, p.hq, p.lq, 1])?;
        operands.push(operand("lse", &view, p.lq, 1, 1));
    }
    if let Some(bias) = &opts.bias {
        operands.push(operand("bias", bias, p.lq, p.lk, 1));
    }
    if let Some(mask) = &opts.mask {
        operands.push(operand("mask", mask, p.lq, p.lk, 1));
    }
    Ok(operands)
}

/// What the dispatch of every chunk shares: the kernel configuration, the uniform without its
/// chunk fields, the operands and the bindings that do not depend on the chunk.
struct ChunkRecorder<'a> {
    ctx: &'a Context,
    kernel: FusedKernel,
    dtype: DType,
    base: Params,
    operands: &'a [Operand],
    shared: SharedBindings,
    local: bool,
    additive: bool,
}

impl ChunkRecorder<'_> {
    /// The dispatch of one chunk: its operand windows and element offsets go into a copy of the
    /// base uniform. Returns the step and the bytes of its uniform.
    fn record(&self, chunk: &Chunk) -> Result<(Step, u64)> {
        let mut params = self.base;
        params.bh_base = chunk.bh_base;
        params.bh_count = chunk.bh_count;
        params.bh_stride = crate::kernels::pair_stride(chunk.bh_count);
        // Bindings come in the order of `windowed_operands`.
        let mut windows = self
            .operands
            .iter()
            .zip(&chunk.bindings)
            .map(|(op, (bound, offset))| {
                let mut strides = op.strides;
                strides.offset = *offset;
                (op.name, bound.clone(), strides)
            })
            .peekable();
        let mut next = |name: &str| {
            windows
                .next_if(|w| w.0 == name)
                .map(|(_, bound, strides)| (bound, strides))
        };
        let (qb, qs) = next("q").expect("q is always bound");
        let (kb, ks) = next("k").expect("k is always bound");
        let (vb, vs) = next("v").expect("v is always bound");
        let (ob, os) = next("out").expect("out is always bound");
        (params.q, params.k, params.v, params.o) = (qs, ks, vs, os);
        let shared = &self.shared;
        let lse = match next("lse") {
            Some((b, s)) => {
                params.lse_off = s.offset;
                b
            }
            None => shared.unused_lse.clone(),
        };
        let bias = match next("bias") {
            Some((b, s)) => {
                params.bias = s;
                b
            }
            None => shared.unused.clone(),
        };
        let mask = match next("mask") {
            Some((b, s)) => {
                params.mask = s;
                b
            }
            None => shared.unused.clone(),
        };
        let params_buf = kernels::params_buffer(self.ctx, &params);
        let bindings = FusedBindings {
            params: &params,
            uniform: &params_buf,
            qkv: [&qb, &kb, &vb],
            out: &ob,
            lse: &lse,
            masks: [&bias, &mask, &shared.side.buffer],
            local: self.local,
            additive: self.additive,
            alibi: shared.alibi.as_ref(),
        };
        let step = self.kernel.step(self.ctx, self.dtype, &bindings)?;
        Ok((step, params_buf.size()))
    }
}

impl Attention {
    pub(super) fn plan_fused(ctx: &Context, inputs: PlanInputs) -> Result<Self> {
        let PlanInputs {
            problem,
            q,
            k,
            v,
            opts,
            extras,
            tuning,
        } = inputs;
        let p = &problem;
        if kernels::flash_forward::over_cpu_loop_budget(ctx, p) {
            return Err(Error::Unsupported(format!(
                "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; the fused kernel stays within it for {} keys with head dims up to 128, {} beyond (Dk={}, Dv={}, Lk={}): use KernelChoice::Auto, Decode or Staged",
                kernels::flash_forward::CPU_MAX_KEYS,
                kernels::flash_forward::CPU_MAX_KEYS_WIDE,
                p.dk,
                p.dv,
                p.lk
            )));
        }
        let (out, lse) = Self::outputs(ctx, p, q.dtype(), opts)?;
        require_storage_usage(q, k, v, opts)?;
        let operands = windowed_operands(p, q, k, v, &out, &lse, opts)?;
        let plan = chunks::plan(ctx, &operands, p.b as u64, p.hq as u64)?;
        let pick = super::design::pick(ctx, p, q.dtype(), opts, extras, tuning)?;
        let mut shared = SharedBindings::new(ctx, opts, extras)?;
        let mut base = base_params(p, opts);
        local_params(&mut base, &extras.local);
        base.centers_off = shared.side.centers_off;
        base.score_off = shared.side.score_off;
        let gather = shared.side.gather.take();
        let side_bytes = shared.side.bytes;
        let recorder = ChunkRecorder {
            ctx,
            kernel: pick.kernel,
            dtype: q.dtype(),
            base,
            operands: &operands,
            shared,
            local: extras.local.is_some(),
            additive: extras.score_vector.is_some(),
        };

        let mut steps: Vec<Step> = gather.into_iter().collect();
        let mut allocated = Self::output_bytes(opts, &out, &lse) + 32 + side_bytes;
        for chunk in &plan {
            let (step, uniform_bytes) = recorder.record(chunk)?;
            steps.push(step);
            allocated += uniform_bytes;
        }
        Ok(Self {
            ctx: ctx.clone(),
            problem,
            steps,
            output: AttentionOutput {
                out,
                lse,
                weights: None,
                kernel: KernelChoice::Fused,
                design: Some(pick.kernel.design()),
                design_note: pick.note,
            },
            causal: opts.causal.is_some(),
            allocated,
            splits: None,
        })
    }
}
