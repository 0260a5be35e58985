//! The backward pass of scaled dot-product attention (docs/ATTENTION.md §10): dQ, dK, dV and
//! optionally dBias from Q, K, V, the forward's output O, its LSE and the output gradient dO.
//!
//! The fused path recomputes the probabilities blockwise (FlashAttention-2): a pre-pass computes
//! D = rowsum(dO ∘ O) per query row (`shaders/flash_backward_pre.wgsl`), one kernel streams the
//! keys of each query block for dQ (`flash_backward_q.wgsl`), another the query rows of each key
//! block for dK and dV (`flash_backward_kv.wgsl`), and, with a bias, a last one reduces dS over
//! the bias's broadcast axes (`flash_backward_bias.wgsl`). The staged path (`KernelChoice::Staged`,
//! f32) is the baseline: GEMMs around an element-wise step (`flash_backward_ds.wgsl`) over the
//! materialized P and dS.
//!
//! The forward's LSE is the only saved statistic; the extra memory of the fused path is one
//! 16-byte record (LSE, D) per query row, plus dO in f32 on devices with only 8 storage bindings
//! per shader stage. Every gradient element is written once by one invocation that sums in a
//! fixed order: two identical calls give bitwise identical gradients.

use crate::attention::{base_params, validate, Problem};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::flash_backward::{self, BackwardBindings, BackwardParams, GradKernel};
use crate::kernels::{self, BackwardConfig, BoundBuffer, Code, Step, Strides};
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// Gradients of the attention inputs. Tensors stay on the GPU; download with [`Tensor::to_vec`].
#[derive(Debug, Clone)]
pub struct Gradients {
    /// dQ [B, Hq, Lq, Dk], dtype of Q.
    pub dq: Tensor,
    /// dK [B, Hkv, Lk, Dk], dtype of Q (summed over the query heads of each group).
    pub dk: Tensor,
    /// dV [B, Hkv, Lk, Dv], dtype of Q (summed over the query heads of each group).
    pub dv: Tensor,
    /// dBias with the shape of the bias (summed over its broadcast axes), dtype of the bias; when
    /// a bias was given and its gradient not skipped.
    pub dbias: Option<Tensor>,
}

/// Options of the backward pass beyond the forward's [`AttentionOptions`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BackwardOptions {
    /// Do not compute dBias even though a bias is given (it costs one more pass over the scores).
    pub skip_bias_grad: bool,
    /// Tile of the dQ and dK/dV kernels; `None` uses [`BackwardConfig::default_for`].
    pub config: Option<BackwardConfig>,
}

/// A validated, fully prepared backward call that can be recorded any number of times.
#[derive(Debug)]
pub struct AttentionBackward {
    ctx: Context,
    problem: Problem,
    steps: Vec<Step>,
    grads: Gradients,
    causal: bool,
    allocated: u64,
}

/// Computes dQ, dK, dV (and dBias when `opts.bias` is given) of attention with options `opts`,
/// from the inputs Q, K, V, the forward's output `out` and LSE `lse` (`return_lse` of the
/// forward, [B, Hq, Lq] f32) and the gradient `d_out` of the loss with respect to O. One
/// submission; returns without waiting for the GPU (downloading a result waits).
///
/// `opts` must be the options of the forward call. Supported: every mask (boolean, key lengths,
/// causal in both alignments, windows, zero-score), ALiBi, scale, soft cap, additive bias (with its
/// gradient), dropout (the forward's Philox mask is replayed), GQA/MQA, Lq ≠ Lk, Dk ≠ Dv up to
/// 256, f32 and f16 storage (f32 accumulation). Rows with no key taking part get zero gradients.
/// Each tensor must fit one storage binding ([`crate::Error::Limit`] otherwise).
/// `opts.kernel` picks the path: `Auto` and `Fused` run the fused kernels; `Staged` runs the
/// baseline that materializes P and dS ([B, Hq, Lq, Lk] f32 each) between GEMMs (f32 only, and
/// with grouped heads Q and dO in a [B, H, L, D] layout); `Decode` is refused
/// ([`crate::Error::Unsupported`]), as are paged K/V (`block_table`) and, on CPU drivers, fused
/// loops beyond 32768 keys or query rows per KV head. `opts.out`, `return_lse` and
/// `return_weights` play no part.
///
/// ```
/// # fn main() -> Result<(), wgpu_attention::Error> {
/// use wgpu_attention::{attention, attention_backward, Alignment, AttentionOptions, Context, Tensor};
/// let ctx = Context::new()?;
/// let (b, h, l, d) = (1, 2, 16, 8);
/// let x: Vec<f32> = (0..b * h * l * d).map(|i| (i as f32 * 0.01).sin()).collect();
/// let q = Tensor::from_slice(&ctx, &x, &[b, h, l, d])?;
/// let opts = AttentionOptions { causal: Some(Alignment::TopLeft), return_lse: true, ..Default::default() };
/// let fwd = attention(&ctx, &q, &q, &q, &opts)?;
/// let d_out = Tensor::from_slice(&ctx, &vec![1.0f32; b * h * l * d], &[b, h, l, d])?;
/// let lse = fwd.lse.as_ref().expect("requested");
/// let grads = attention_backward(&ctx, &q, &q, &q, &fwd.out, &d_out, lse, &opts)?;
/// let dq: Vec<f32> = grads.dq.to_vec(&ctx)?;
/// assert_eq!(dq.len(), b * h * l * d);
/// # Ok(()) }
/// ```
#[allow(
    clippy::too_many_arguments,
    reason = "the forward's three inputs, two saved tensors and dO"
)]
pub fn attention_backward(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    d_out: &Tensor,
    lse: &Tensor,
    opts: &AttentionOptions,
) -> Result<Gradients> {
    AttentionBackward::new(ctx, q, k, v, out, d_out, lse, opts)?.run()
}

impl AttentionBackward {
    /// Validates and prepares a backward call with the default options (see
    /// [`attention_backward`]).
    #[allow(
        clippy::too_many_arguments,
        reason = "the forward's three inputs, two saved tensors and dO"
    )]
    pub fn new(
        ctx: &Context,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        d_out: &Tensor,
        lse: &Tensor,
        opts: &AttentionOptions,
    ) -> Result<Self> {
        Self::with_options(ctx, [q, k, v], [out, d_out, lse], opts, &BackwardOptions::default())
    }

    /// Like [`AttentionBackward::new`] with backward options; `inputs` are Q, K, V and `saved`
    /// are O, dO and the LSE.
    pub fn with_options(
        ctx: &Context,
        inputs: [&Tensor; 3],
        saved: [&Tensor; 3],
        opts: &AttentionOptions,
        bopts: &BackwardOptions,
    ) -> Result<Self> {
        let [q, k, v] = inputs;
        let [out, d_out, lse] = saved;
        let problem = validate_backward(ctx, inputs, saved, opts)?;
        let p = problem;
        ctx.scoped("attention backward setup", || {
            let dtype = q.dtype();
            let dq = Tensor::zeros(ctx, &[p.b, p.hq, p.lq, p.dk], dtype)?;
            let (dkv, dk_off, dv_off) = grad_kv_buffer(ctx, &p, dtype)?;
            let dk = dkv.view(
                dk_off,
                &[p.b, p.hkv, p.lk, p.dk],
                &[p.hkv * p.lk * p.dk, p.lk * p.dk, p.dk, 1],
            )?;
            let dv = dkv.view(
                dv_off,
                &[p.b, p.hkv, p.lk, p.dv],
                &[p.hkv * p.lk * p.dv, p.lk * p.dv, p.dv, 1],
            )?;
            let dbias = match (&opts.bias, bopts.skip_bias_grad) {
                (Some(bias), false) => Some(Tensor::zeros(ctx, bias.shape(), bias.dtype())?),
                _ => None,
            };
            let mut allocated =
                dq.buffer().size() + dkv.buffer().size() + dbias.as_ref().map_or(0, |t| t.buffer().size());
            let grads = Gradients { dq, dk, dv, dbias };
            let mut steps = Vec::new();
            if p.b > 0 && p.lq > 0 && p.lk > 0 {
                let (cfg, code) = match bopts.config {
                    Some(c) => (c, Code::Fast),
                    None => (
                        BackwardConfig::default_for(ctx, p.dk as u32, p.dv as u32)?,
                        Code::QuickUntilCompiled,
                    ),
                };
                let recorded = record(
                    ctx,
                    &p,
                    cfg,
                    code,
                    [q, k, v],
                    [out, d_out, lse],
                    opts,
                    &grads,
                    &dkv,
                    [dk_off, dv_off],
                )?;
                steps = recorded.0;
                allocated += recorded.1;
            }
            Ok(Self {
                ctx: ctx.clone(),
                problem,
                steps,
                grads,
                causal: opts.causal.is_some(),
                allocated,
            })
        })
    }

    /// Compiles (and runs once, for drivers that compile at the first dispatch) the fast code of
    /// the pipelines a backward call of `problem` in `dtype` with `opts` and `bopts` will use, on
    /// a tiny stand-in problem of the same shape class (see [`crate::Attention::warm_up`]). Later
    /// calls then run that code instead of the quick first-call code of
    /// [`crate::pipeline::PipelineCache::set_quick_first_calls`]. On lavapipe the default tile's
    /// fast code takes minutes to compile cold: a process meant to train should warm up once
    /// (or run `wgpu-attention warm-up --backward`, which persists it where the device has
    /// `PIPELINE_CACHE`). Tensor-valued options only need to be present. Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn warm_up(
        ctx: &Context,
        problem: &Problem,
        dtype: DType,
        opts: &AttentionOptions,
        bopts: &BackwardOptions,
    ) -> Result<()> {
        let p = problem;
        let stand_in = crate::attention::warm::StandIn::new(ctx, p, dtype, opts)?;
        let [q, k, v] = &stand_in.qkv;
        // O and dO have Q's rows and V's head dim; the LSE one value per row.
        let rows = &q.shape()[..3];
        let out = Tensor::zeros(ctx, &[rows[0], rows[1], rows[2], p.dv], dtype)?;
        let d_out = Tensor::zeros(ctx, out.shape(), dtype)?;
        let lse = Tensor::zeros(ctx, rows, DType::F32)?;
        // An explicit tile: the fast code, never the quick one.
        let bopts = BackwardOptions {
            config: Some(match bopts.config {
                Some(c) => c,
                None => BackwardConfig::default_for(ctx, p.dk as u32, p.dv as u32)?,
            }),
            ..*bopts
        };
        Self::with_options(ctx, [q, k, v], [&out, &d_out, &lse], &stand_in.opts, &bopts)?.submit()?;
        ctx.wait()
    }

    /// Records the call into `encoder` (the caller submits it).
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        kernels::encode_steps(encoder, &self.steps, None);
    }

    /// Records the call with timestamps: `first` at the start of its first compute pass and
    /// `first + 1` at the end of its last (the query set needs `TIMESTAMP_QUERY`).
    pub fn encode_timed(&self, encoder: &mut wgpu::CommandEncoder, queries: &wgpu::QuerySet, first: u32) {
        kernels::encode_steps(encoder, &self.steps, Some((queries, first)));
    }

    /// Records and submits the call in one submission, capturing wgpu errors.
    pub fn submit(&self) -> Result<()> {
        self.ctx.scoped("attention backward submit", || {
            let mut enc = self.ctx.device().create_command_encoder(&Default::default());
            self.encode(&mut enc);
            self.ctx.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// Submits the call and returns the gradients.
    pub fn run(self) -> Result<Gradients> {
        self.submit()?;
        Ok(self.grads)
    }

    /// The problem sizes.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
    /// Whether a causal mask is applied (for FLOP counting).
    pub fn is_causal(&self) -> bool {
        self.causal
    }
    /// FLOPs of one run by the FlashAttention convention: 2.5 × the forward's.
    pub fn flops(&self) -> f64 {
        2.5 * self.problem.flops(self.causal)
    }
    /// The call as a one-phase [`crate::Prepared`] named `phase`.
    pub fn into_prepared(self, phase: &'static str) -> crate::Prepared<Gradients> {
        let flops = self.flops();
        let mut prepared = crate::Prepared::new(&self.ctx, self.grads);
        prepared.push(phase, self.steps, self.allocated, flops);
        prepared
    }

    /// The gradients (valid after a submission has run).
    pub fn gradients(&self) -> &Gradients {
        &self.grads
    }
    /// Consumes the call, keeping its gradients.
    pub fn into_gradients(self) -> Gradients {
        self.grads
    }
    /// Bytes of device memory this call allocated (gradients, scratch, uniforms), not its inputs.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
    /// Number of compute dispatches per run.
    pub fn dispatch_count(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count()
    }
}

/// One buffer holding dK then dV (the dK/dV kernel writes both through one binding): the tensor
/// and the element offsets of dK and dV, dV's aligned to 256 bytes.
fn grad_kv_buffer(ctx: &Context, p: &Problem, dtype: DType) -> Result<(Tensor, usize, usize)> {
    let n_dk = p.b * p.hkv * p.lk * p.dk;
    let n_dv = p.b * p.hkv * p.lk * p.dv;
    let align = 256 / dtype.size();
    let dv_off = n_dk.div_ceil(align) * align;
    let total = dv_off.checked_add(n_dv).ok_or(Error::SizeOverflow {
        name: "dk/dv",
        shape: vec![p.b, p.hkv, p.lk, p.dk + p.dv],
        strides: vec![],
        offset: 0,
    })?;
    Ok((Tensor::zeros(ctx, &[total.max(1)], dtype)?, 0, dv_off))
}

/// Checks the forward's inputs and options (as the forward does), then O, dO and LSE against
/// them; returns the problem sizes.
pub fn validate_backward(
    ctx: &Context,
    [q, k, v]: [&Tensor; 3],
    [out, d_out, lse]: [&Tensor; 3],
    opts: &AttentionOptions,
) -> Result<Problem> {
    let p = validate(ctx, q, k, v, opts)?;
    if opts.block_table.is_some() {
        return Err(Error::Unsupported(
            "the attention backward reads contiguous K and V: no block table (paged K/V)".into(),
        ));
    }
    if opts.kernel == KernelChoice::Decode {
        return Err(Error::Unsupported(
            "the attention backward has no decode kernel; use Auto, Fused or Staged".into(),
        ));
    }
    if opts.kernel == KernelChoice::Staged {
        if let Some(e) = crate::kernels::policy::staged_over_budget(ctx, p.lk.max(p.lq)) {
            return Err(e);
        }
        if q.dtype() != DType::F32 {
            return Err(Error::Unsupported(
                "the staged backward materializes P and dS in f32 through f32 GEMMs: f32 tensors only; use Auto or Fused for f16"
                    .into(),
            ));
        }
        for (name, t) in [("q", q), ("d_out", d_out)] {
            if p.hq != p.hkv && p.b > 0 && p.lq > 0 && t.strides()[1] != p.lq * t.strides()[2] {
                return Err(Error::Unsupported(format!(
                    "the staged backward with grouped heads multiplies the rows of a group's heads as one matrix: {name} needs a head stride of Lq × its row stride (a [B, H, L, D] layout); use Auto or Fused"
                )));
            }
        }
    }
    flash_backward::check_head_dims(p.dk as u32, p.dv as u32)?;
    // llvmpipe before Mesa 25 ends a shader's loops after 65535 iterations without an error: the
    // dQ kernel loops over the keys, the dK/dV kernel over the query rows of a group's heads.
    let cpu_max = crate::kernels::flash_forward::CPU_MAX_KEYS;
    let group_rows = (p.hq / p.hkv).saturating_mul(p.lq);
    let longest = p.lk.max(group_rows);
    let too_long =
        longest > cpu_max || (p.dk.max(p.dv) > 128 && longest > crate::kernels::flash_forward::CPU_MAX_KEYS_WIDE);
    if opts.kernel != KernelChoice::Staged && crate::kernels::policy::loop_budget(ctx) && too_long {
        return Err(Error::Unsupported(format!(
            "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; the fused backward stays within it for {cpu_max} keys and query rows per KV head with head dims up to 128, 128 beyond (Dk = {}, Dv = {}, Lk = {}, Hq / Hkv · Lq = {group_rows}): use KernelChoice::Staged",
            p.dk, p.dv, p.lk
        )));
    }
    for (name, t) in [("out", out), ("d_out", d_out)] {
        t.check_device(name, ctx)?;
        let expected = vec![p.b, p.hq, p.lq, p.dv];
        if t.shape() != expected.as_slice() {
            return Err(Error::ShapeMismatch {
                name,
                expected,
                got: t.shape().to_vec(),
            });
        }
        if t.dtype() != q.dtype() {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: q.dtype().name(),
            });
        }
        if t.strides()[3] != 1 && p.dv != 1 {
            return Err(Error::Strides {
                name,
                shape: t.shape().to_vec(),
                strides: t.strides().to_vec(),
                why: "the last dimension must be contiguous (stride 1)",
            });
        }
        crate::tensor::check_strides_fit(name, t)?;
    }
    lse.check_device("lse", ctx)?;
    let expected = vec![p.b, p.hq, p.lq];
    if lse.shape() != expected.as_slice() {
        return Err(Error::ShapeMismatch {
            name: "lse",
            expected,
            got: lse.shape().to_vec(),
        });
    }
    if lse.dtype() != DType::F32 {
        return Err(Error::DType {
            name: "lse",
            got: lse.dtype(),
            expected: "f32",
        });
    }
    crate::tensor::check_strides_fit("lse", lse)?;
    Ok(p)
}

/// `t` bound whole with its strides, or the unused-input buffer when absent.
fn bind_optional(ctx: &Context, t: &Option<Tensor>, name: &'static str) -> Result<(BoundBuffer, Strides)> {
    match t {
        Some(t) => {
            let (b, o) = kernels::bind_tensor(ctx, t, name)?;
            Ok((b, kernels::strides_of(t, o)))
        }
        None => Ok((kernels::unused_input(ctx), Strides::default())),
    }
}

/// Records the pre-pass and the gradient kernels; returns the steps and the bytes of scratch and
/// uniforms they allocated.
#[allow(clippy::too_many_arguments, reason = "internal planner of the public constructors")]
fn record(
    ctx: &Context,
    p: &Problem,
    cfg: BackwardConfig,
    code: Code,
    [q, k, v]: [&Tensor; 3],
    [out, d_out, lse]: [&Tensor; 3],
    opts: &AttentionOptions,
    grads: &Gradients,
    dkv: &Tensor,
    [dk_off, dv_off]: [usize; 2],
) -> Result<(Vec<Step>, u64)> {
    cfg.check(ctx, p.dk as u32, p.dv as u32)?;
    let dtype = q.dtype();
    let mut params = base_params(p, opts);
    params.bh_base = 0;
    params.bh_count = (p.b * p.hq) as u32;
    params.bh_stride = 1;
    let (qb, qs) = bind_optional(ctx, &Some(q.clone()), "q")?;
    let (kb, ks) = bind_optional(ctx, &Some(k.clone()), "k")?;
    let (vb, vs) = bind_optional(ctx, &Some(v.clone()), "v")?;
    let (ob, os) = bind_optional(ctx, &Some(out.clone()), "out")?;
    (params.q, params.k, params.v, params.o) = (qs, ks, vs, os);
    let (bias, bias_strides) = bind_optional(ctx, &opts.bias, "bias")?;
    let (mask, mask_strides) = bind_optional(ctx, &opts.mask, "mask")?;
    let (lens, _) = bind_optional(ctx, &opts.key_lengths, "key_lengths")?;
    (params.bias, params.mask) = (bias_strides, mask_strides);

    let (dob, dos) = bind_optional(ctx, &Some(d_out.clone()), "d_out")?;
    let (lb, lse_off) = kernels::bind_tensor(ctx, lse, "lse")?;
    let ls = lse.strides();
    let lse_strides = Strides {
        offset: lse_off,
        batch: if p.b == 1 { 0 } else { ls[0] as u32 },
        head: if p.hq == 1 { 0 } else { ls[1] as u32 },
        row: ls[2] as u32,
    };
    // One record per query row: (LSE, D, 0, 0), after dO in f32 (DV4 vec4s) when the device has
    // too few storage bindings for the kernels to read dO directly (and on the staged path).
    let direct = opts.kernel != KernelChoice::Staged
        && ctx.limits().max_storage_buffers_per_shader_stage >= flash_backward::DIRECT_STORAGE_BINDINGS;
    let record_floats = match direct {
        true => 4,
        false => 4 * (p.dv.div_ceil(4) + 1),
    };
    // After the records, the key lengths (copied by the pre-pass, read there by the gradient
    // kernels: one storage binding fewer), four per vec4.
    let record_words = p.b * p.hq * p.lq * record_floats;
    let rows_tensor = Tensor::zeros(ctx, &[record_words + 4 * p.b.div_ceil(4)], DType::F32)?;
    let (rows, rows_off) = kernels::bind_tensor(ctx, &rows_tensor, "backward row records")?;
    let (dqb, _) = kernels::bind_tensor(ctx, &grads.dq, "dq")?;
    let (dkvb, _) = kernels::bind_tensor(ctx, dkv, "dk/dv")?;
    let (bias_batches, bias_heads) = match opts.bias.as_ref().map(|b| b.shape()) {
        Some([bb, bh, _, _]) => (*bb as u32, *bh as u32),
        _ => (1, 1),
    };
    let backward = BackwardParams {
        d_out: dos,
        lse: lse_strides,
        dk_off: dk_off as u32,
        dv_off: dv_off as u32,
        bias_batches,
        bias_heads,
        rows_off: rows_off / 4,
        lengths_off: (rows_off as usize + record_words) as u32 / 4,
        pad: [0; 2],
    };

    // ALiBi slopes as the uniform table of `shaders/common/alibi.wgsl` (the forward's validation
    // keeps them within it).
    let alibi_buf = opts
        .alibi_slopes
        .as_ref()
        .map(|slopes| kernels::alibi_buffer(ctx, slopes));
    let alibi = alibi_buf.as_ref().map(BoundBuffer::whole);
    let params_buf = kernels::params_buffer(ctx, &params);
    let backward_buf = kernels::params_buffer(ctx, &backward);
    let backward_bound = BoundBuffer::whole(&backward_buf);
    let mut steps = vec![flash_backward::pre_step(
        ctx,
        dtype,
        &params,
        &params_buf,
        [&ob, &dob, &lb],
        &rows,
        &backward_bound,
        &lens,
        !direct,
    )?];
    let bindings = BackwardBindings {
        params: &params,
        params_buf: &params_buf,
        qkv: [&qb, &kb, &vb],
        rows: &rows,
        backward: &backward_bound,
        masks: [&bias, &mask],
        d_out: direct.then_some(&dob),
        alibi: alibi.as_ref(),
        d_out_vec4: [dos.offset, dos.batch, dos.head, dos.row]
            .iter()
            .all(|x| x.is_multiple_of(4)),
    };
    let grad =
        |which, buf: &BoundBuffer, dtype| flash_backward::grad_step(ctx, which, cfg, code, dtype, &bindings, buf);
    let mut allocated = rows_tensor.buffer().size()
        + params_buf.size()
        + backward_buf.size()
        + alibi_buf.as_ref().map_or(0, |b| b.size());
    if opts.kernel == KernelChoice::Staged {
        let (staged, bytes) = record_staged(ctx, p, [q, k, v], d_out, grads, &bindings)?;
        steps.extend(staged);
        allocated += bytes;
    } else {
        steps.push(grad(GradKernel::Q, &dqb, dtype)?);
        steps.push(grad(GradKernel::Kv, &dkvb, dtype)?);
    }
    if let Some(dbias) = &grads.dbias {
        let (db, _) = kernels::bind_tensor(ctx, dbias, "dbias")?;
        let elements = dbias.numel() as u64;
        steps.push(grad(GradKernel::Bias { elements }, &db, dbias.dtype())?);
    }
    Ok((steps, allocated))
}

/// `t` [B, H, L, D] seen as [B, Hkv, (H / Hkv) · L, D]: the rows of the heads of each group as one
/// matrix (validated: the head stride is L × the row stride, or one head per group).
fn group_rows(t: &Tensor, p: &Problem) -> Result<Tensor> {
    let s = t.strides();
    let g = p.hq / p.hkv;
    t.view(0, &[p.b, p.hkv, g * p.lq, t.shape()[3]], &[s[0], g * s[1], s[2], s[3]])
}

/// The staged backward (f32): S = scale · Q Kᵀ and dP̃ = dO Vᵀ by GEMMs into two materialized
/// [B, Hq, Lq, Lk] matrices, the element-wise step (P ∘ Z, dS′), then dV = (P ∘ Z)ᵀ dO,
/// dQ = scale · dS′ K and dK = scale · dS′ᵀ Q by GEMMs. A group's query heads are the rows of one
/// matrix, so dK and dV sum over them inside one product. Returns the steps and the bytes of the
/// matrices and uniforms.
fn record_staged(
    ctx: &Context,
    p: &Problem,
    [q, k, v]: [&Tensor; 3],
    d_out: &Tensor,
    grads: &Gradients,
    bindings: &BackwardBindings,
) -> Result<(Vec<Step>, u64)> {
    use crate::gemm::{prepare, GemmOptions};
    let scale = bindings.params.scale;
    let g = p.hq / p.hkv;
    let shape = [p.b, p.hkv, g * p.lq, p.lk];
    let scores = Tensor::zeros(ctx, &[p.b, p.hq, p.lq, p.lk], DType::F32)?;
    let d_p = Tensor::zeros(ctx, &[p.b, p.hq, p.lq, p.lk], DType::F32)?;
    let (scores_g, d_p_g) = (scores.reshape(&shape)?, d_p.reshape(&shape)?);
    let (q_g, do_g) = (group_rows(q, p)?, group_rows(d_out, p)?);
    let dq_g = grads.dq.reshape(&[p.b, p.hkv, g * p.lq, p.dk])?;
    let mut steps = Vec::new();
    let mut allocated = scores.buffer().size() + d_p.buffer().size();
    let mut gemm = |steps: &mut Vec<Step>, a: &Tensor, b: &Tensor, opts: GemmOptions| -> Result<()> {
        let (s, bytes, _) = prepare(ctx, a, b, &opts)?.into_parts();
        steps.extend(s);
        allocated += bytes;
        Ok(())
    };
    let into = |t: &Tensor| GemmOptions {
        out: Some(t.clone()),
        ..Default::default()
    };
    let scaled_scores = GemmOptions {
        trans_b: true,
        alpha: scale,
        ..into(&scores_g)
    };
    gemm(&mut steps, &q_g, k, scaled_scores)?;
    gemm(
        &mut steps,
        &do_g,
        v,
        GemmOptions {
            trans_b: true,
            ..into(&d_p_g)
        },
    )?;
    let (sb, _) = kernels::bind_tensor(ctx, &scores, "scores")?;
    let (db, _) = kernels::bind_tensor(ctx, &d_p, "dP")?;
    steps.push(flash_backward::ds_step(
        ctx,
        bindings,
        [&sb, &db],
        scores.numel() as u64,
    )?);
    gemm(
        &mut steps,
        &scores_g,
        &do_g,
        GemmOptions {
            trans_a: true,
            ..into(&grads.dv)
        },
    )?;
    gemm(
        &mut steps,
        &d_p_g,
        k,
        GemmOptions {
            alpha: scale,
            ..into(&dq_g)
        },
    )?;
    let dk = GemmOptions {
        trans_a: true,
        alpha: scale,
        ..into(&grads.dk)
    };
    gemm(&mut steps, &d_p_g, &q_g, dk)?;
    Ok((steps, allocated))
}
