//! Scaled dot-product attention (ATTENTION.md §1): validation, planning and recording.
//!
//! [`Attention::new`] validates every input on the host, picks the kernel path, allocates the
//! outputs and creates every pipeline and bind group (inside error scopes); [`Attention::encode`]
//! then records the work into any command encoder, as often as wanted.

use crate::chunks;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, flags, BoundBuffer, FlashConfig, GemmTile, Params, Step};
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// The sizes of one attention problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Batch size B.
    pub b: usize,
    /// Query heads Hq.
    pub hq: usize,
    /// Key/value heads Hkv (Hq is a multiple of it).
    pub hkv: usize,
    /// Query length Lq.
    pub lq: usize,
    /// Key length Lk.
    pub lk: usize,
    /// Query/key head dim Dk.
    pub dk: usize,
    /// Value head dim Dv.
    pub dv: usize,
}

impl Problem {
    /// Forward FLOPs by the FlashAttention convention: 2·B·Hq·Lq·Lk·(Dk + Dv) (= 4·B·H·Lq·Lk·D
    /// when Dk = Dv), halved for causal.
    pub fn flops(&self, causal: bool) -> f64 {
        let f = 2.0 * (self.b * self.hq) as f64 * self.lq as f64 * self.lk as f64 * (self.dk + self.dv) as f64;
        if causal {
            f / 2.0
        } else {
            f
        }
    }

    /// Shapes of Q, K, V in the default [B, H, L, D] layout.
    pub fn qkv_shapes(&self) -> [[usize; 4]; 3] {
        [
            [self.b, self.hq, self.lq, self.dk],
            [self.b, self.hkv, self.lk, self.dk],
            [self.b, self.hkv, self.lk, self.dv],
        ]
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "B={} Hq={} Hkv={} Lq={} Lk={} Dk={} Dv={}",
            self.b, self.hq, self.hkv, self.lq, self.lk, self.dk, self.dv
        )
    }
}

/// Results of an attention call. Tensors stay on the GPU; download with [`Tensor::to_vec`].
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// O [B, Hq, Lq, Dv], dtype of Q.
    pub out: Tensor,
    /// LSE [B, Hq, Lq] (f32), when requested.
    pub lse: Option<Tensor>,
    /// Attention weights P [B, Hq, Lq, Lk] (f32), when requested (staged path).
    pub weights: Option<Tensor>,
    /// The kernel path that ran.
    pub kernel: KernelChoice,
}

/// Kernel tile settings; `None` fields use the built-in defaults (or the tuning cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Fused-kernel tile.
    pub flash: Option<FlashConfig>,
    /// GEMM tile of the staged QKᵀ and P·V kernels.
    pub gemm: Option<GemmTile>,
    /// Invocations per row of the staged softmax.
    pub softmax_workgroup: Option<u32>,
}

/// A validated, fully prepared attention call that can be recorded any number of times.
#[derive(Debug)]
pub struct Attention {
    ctx: Context,
    problem: Problem,
    steps: Vec<Step>,
    output: AttentionOutput,
    causal: bool,
    /// Bytes the call allocates on the device (outputs, scratch, uniforms).
    allocated: u64,
}

/// Runs attention and returns O (and LSE / P on request). One submission; returns without
/// waiting for the GPU (downloading a result waits).
///
/// ```
/// # fn main() -> Result<(), wgpu_attention::Error> {
/// use wgpu_attention::{attention, AttentionOptions, Context, Tensor};
/// let ctx = Context::new()?;
/// let (b, h, l, d) = (1, 2, 16, 8);
/// let x: Vec<f32> = (0..b * h * l * d).map(|i| (i as f32 * 0.01).sin()).collect();
/// let q = Tensor::from_slice(&ctx, &x, &[b, h, l, d])?;
/// let out = attention(&ctx, &q, &q, &q, &AttentionOptions::default())?;
/// let o: Vec<f32> = out.out.to_vec(&ctx)?;
/// # let _ = o; Ok(()) }
/// ```
pub fn attention(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let call = Attention::new(ctx, q, k, v, opts)?;
    call.submit()?;
    Ok(call.into_output())
}

/// Records attention into the caller's encoder; the caller submits it. Outputs are allocated here
/// and valid once the caller's submission has run.
pub fn attention_encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let call = Attention::new(ctx, q, k, v, opts)?;
    call.encode(encoder);
    Ok(call.into_output())
}

/// Checks Q, K, V and every option against each other and the device; returns the problem sizes.
pub fn validate(ctx: &Context, q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Problem> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        if t.shape().len() != 4 {
            return Err(Error::Rank {
                name,
                expected: 4,
                shape: t.shape().to_vec(),
            });
        }
        if let Some(axis) = t.shape().iter().position(|&n| n == 0) {
            return Err(Error::ZeroDim {
                name,
                axis,
                shape: t.shape().to_vec(),
            });
        }
        if !matches!(t.dtype(), DType::F32 | DType::F16) {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: "f32 or f16",
            });
        }
        if t.dtype() != q.dtype() {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: q.dtype().name(),
            });
        }
        check_rows_contiguous(name, t)?;
        if t.shape().iter().any(|&n| n > i32::MAX as usize) {
            return Err(Error::Limit {
                what: format!("{name} dimension"),
                limit: "2^31 - 1 elements per axis",
                needed: *t.shape().iter().max().unwrap_or(&0) as u64,
                max: i32::MAX as u64,
            });
        }
    }
    if q.dtype() == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 attention",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    let p = Problem {
        b: qs[0],
        hq: qs[1],
        hkv: ks[1],
        lq: qs[2],
        lk: ks[2],
        dk: qs[3],
        dv: vs[3],
    };
    if ks[0] != p.b || ks[3] != p.dk {
        return Err(Error::ShapeMismatch {
            name: "k",
            expected: vec![p.b, ks[1], ks[2], p.dk],
            got: ks.to_vec(),
        });
    }
    if vs[0] != p.b || vs[1] != p.hkv || vs[2] != p.lk {
        return Err(Error::ShapeMismatch {
            name: "v",
            expected: vec![p.b, p.hkv, p.lk, vs[3]],
            got: vs.to_vec(),
        });
    }
    if !p.hq.is_multiple_of(p.hkv) {
        return Err(Error::HeadRatio { hq: p.hq, hkv: p.hkv });
    }
    if let Some(s) = opts.scale {
        if !s.is_finite() {
            return Err(Error::InvalidOption {
                name: "scale",
                value: s as f64,
                why: "must be finite",
            });
        }
    }
    if let Some(c) = opts.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::InvalidOption {
                name: "softcap",
                value: c as f64,
                why: "must be finite and > 0",
            });
        }
    }
    let target = [p.b, p.hq, p.lq, p.lk];
    if let Some(bias) = &opts.bias {
        check_broadcast("bias", bias, target)?;
        if bias.dtype() != q.dtype() {
            return Err(Error::DType {
                name: "bias",
                got: bias.dtype(),
                expected: q.dtype().name(),
            });
        }
    }
    if let Some(mask) = &opts.mask {
        check_broadcast("mask", mask, target)?;
        if mask.dtype() != DType::Bool {
            return Err(Error::DType {
                name: "mask",
                got: mask.dtype(),
                expected: "bool",
            });
        }
    }
    if let Some(lens) = &opts.key_lengths {
        if lens.shape() != [p.b] {
            return Err(Error::ShapeMismatch {
                name: "key_lengths",
                expected: vec![p.b],
                got: lens.shape().to_vec(),
            });
        }
        if lens.dtype() != DType::U32 {
            return Err(Error::DType {
                name: "key_lengths",
                got: lens.dtype(),
                expected: "u32",
            });
        }
        if !lens.is_contiguous() {
            return Err(Error::Strides {
                name: "key_lengths",
                shape: lens.shape().to_vec(),
                strides: lens.strides().to_vec(),
                why: "must be contiguous",
            });
        }
    }
    if opts.return_weights && opts.kernel == KernelChoice::Fused {
        return Err(Error::Unsupported(
            "the fused kernel never materializes the weights; use KernelChoice::Staged (or Auto) with return_weights"
                .into(),
        ));
    }
    Ok(p)
}

fn check_rows_contiguous(name: &'static str, t: &Tensor) -> Result<()> {
    if t.strides().last() != Some(&1) && t.shape().last() != Some(&1) {
        return Err(Error::Strides {
            name,
            shape: t.shape().to_vec(),
            strides: t.strides().to_vec(),
            why: "the last dimension must be contiguous (stride 1)",
        });
    }
    if t.strides().iter().any(|&s| s > u32::MAX as usize) {
        return Err(Error::Strides {
            name,
            shape: t.shape().to_vec(),
            strides: t.strides().to_vec(),
            why: "strides must fit in 32 bits",
        });
    }
    Ok(())
}

fn check_broadcast(name: &'static str, t: &Tensor, target: [usize; 4]) -> Result<()> {
    let s = t.shape();
    let ok = match s.len() {
        2 => s == &target[2..],
        4 => (s[0] == 1 || s[0] == target[0]) && (s[1] == 1 || s[1] == target[1]) && s[2..] == target[2..],
        _ => false,
    };
    if !ok {
        return Err(Error::Broadcast {
            name,
            got: s.to_vec(),
            target,
        });
    }
    check_rows_contiguous(name, t)
}

/// Window bounds are clamped to this (equivalent to unbounded: no sequence is this long).
const UNBOUNDED: i64 = 1 << 30;

fn base_params(p: &Problem, opts: &AttentionOptions) -> Params {
    let mut f = 0;
    let mut params = Params {
        batch: p.b as u32,
        heads_q: p.hq as u32,
        heads_kv: p.hkv as u32,
        len_q: p.lq as u32,
        len_k: p.lk as u32,
        dim_k: p.dk as u32,
        dim_v: p.dv as u32,
        scale: opts.scale.unwrap_or(1.0 / (p.dk as f32).sqrt()),
        softcap: opts.softcap.unwrap_or(0.0),
        ..Default::default()
    };
    if opts.softcap.is_some() {
        f |= flags::SOFTCAP;
    }
    if opts.bias.is_some() {
        f |= flags::BIAS;
    }
    if opts.mask.is_some() {
        f |= flags::MASK;
    }
    if opts.key_lengths.is_some() {
        f |= flags::KEY_LENGTHS;
    }
    if let Some(a) = opts.causal {
        f |= flags::CAUSAL;
        params.causal_offset = a.offset(p.lq, p.lk).clamp(-UNBOUNDED, UNBOUNDED) as i32;
    }
    if let Some(w) = opts.window {
        f |= flags::WINDOW;
        params.window_offset = w.alignment.offset(p.lq, p.lk).clamp(-UNBOUNDED, UNBOUNDED) as i32;
        params.window_left = w.left.map_or(UNBOUNDED, |x| (x as i64).min(UNBOUNDED)) as i32;
        params.window_right = w.right.map_or(UNBOUNDED, |x| (x as i64).min(UNBOUNDED)) as i32;
    }
    if opts.return_lse {
        f |= flags::LSE;
    }
    params.flags = f;
    params
}

fn storage_buffer(ctx: &Context, label: &str, size: u64) -> Result<wgpu::Buffer> {
    ctx.check_buffer_size(label, size)?;
    Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: crate::tensor::padded_size(size),
        usage: crate::tensor::TENSOR_USAGE,
        mapped_at_creation: false,
    }))
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
        let problem = validate(ctx, q, k, v, opts)?;
        let kernel = match opts.kernel {
            KernelChoice::Auto if opts.return_weights => KernelChoice::Staged,
            KernelChoice::Auto => KernelChoice::Fused,
            other => other,
        };
        ctx.scoped("attention setup", || match kernel {
            KernelChoice::Staged => Self::plan_staged(ctx, problem, q, k, v, opts, tuning),
            _ => Self::plan_fused(ctx, problem, q, k, v, opts, tuning),
        })
    }

    /// Binds Q, K, V and the optional mask inputs; fills their strides into `params`.
    fn bind_inputs(
        ctx: &Context,
        params: &mut Params,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
    ) -> Result<([BoundBuffer; 3], [BoundBuffer; 3])> {
        let (qb, qo) = kernels::bind_tensor(ctx, q, "q")?;
        let (kb, ko) = kernels::bind_tensor(ctx, k, "k")?;
        let (vb, vo) = kernels::bind_tensor(ctx, v, "v")?;
        params.q = kernels::strides_of(q, qo);
        params.k = kernels::strides_of(k, ko);
        params.v = kernels::strides_of(v, vo);
        let dummy = BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused input", 16)?);
        let bind_opt = |t: &Option<Tensor>, name: &'static str| -> Result<(BoundBuffer, kernels::Strides)> {
            match t {
                Some(t) => {
                    let (b, o) = kernels::bind_tensor(ctx, t, name)?;
                    Ok((b, kernels::strides_of(t, o)))
                }
                None => Ok((dummy.clone(), Default::default())),
            }
        };
        let (bias, bias_strides) = bind_opt(&opts.bias, "bias")?;
        let (mask, mask_strides) = bind_opt(&opts.mask, "mask")?;
        let (lens, _) = bind_opt(&opts.key_lengths, "key_lengths")?;
        params.bias = bias_strides;
        params.mask = mask_strides;
        Ok(([qb, kb, vb], [bias, mask, lens]))
    }

    fn outputs(ctx: &Context, p: &Problem, dtype: DType, opts: &AttentionOptions) -> Result<(Tensor, Option<Tensor>)> {
        let out = Tensor::zeros(ctx, &[p.b, p.hq, p.lq, p.dv], dtype)?;
        let lse = match opts.return_lse {
            true => Some(Tensor::zeros(ctx, &[p.b, p.hq, p.lq], DType::F32)?),
            false => None,
        };
        Ok((out, lse))
    }

    fn plan_fused(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        tuning: &Tuning,
    ) -> Result<Self> {
        let p = &problem;
        let (out, lse) = Self::outputs(ctx, p, q.dtype(), opts)?;
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
        // Every windowed operand, as the kernel addresses it; chunks keep each within a binding.
        let group = (p.hq / p.hkv) as u64;
        let operand = |name, t: &Tensor, rows: usize, row_len: usize, group: u64| chunks::Operand {
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
            operand("out", &out, p.lq, p.dv, 1),
        ];
        if let Some(l) = &lse {
            let view = l.reshape(&[p.b, p.hq, p.lq, 1])?;
            operands.push(operand("lse", &view, p.lq, 1, 1));
        }
        if let Some(bias) = &opts.bias {
            operands.push(operand("bias", bias, p.lq, p.lk, 1));
        }
        if let Some(mask) = &opts.mask {
            operands.push(operand("mask", mask, p.lq, p.lk, 1));
        }
        let plan = chunks::plan(ctx, &operands, p.b as u64, p.hq as u64)?;

        let cfg = match tuning.flash {
            Some(c) => c,
            None => crate::tune::flash_config(ctx, p, q.dtype())?,
        };
        let dummy = BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused input", 16)?);
        let dummy_lse = BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?);
        let lengths = match &opts.key_lengths {
            Some(t) => kernels::bind_tensor(ctx, t, "key_lengths")?.0,
            None => dummy.clone(),
        };
        let base = base_params(p, opts);
        let mut steps = Vec::with_capacity(plan.len());
        let mut allocated = out.buffer().size() + lse.as_ref().map_or(16, |t| t.buffer().size()) + 32;
        for chunk in &plan {
            let mut params = base;
            params.bh_base = chunk.bh_base;
            params.bh_count = chunk.bh_count;
            let mut it = operands.iter().zip(&chunk.bindings);
            let mut next = |expect: &str| {
                let (op, (bound, offset)) = it.next().expect("one binding per operand");
                debug_assert_eq!(op.name, expect);
                let mut strides = op.strides;
                strides.offset = *offset;
                (bound.clone(), strides)
            };
            let (qb, qs) = next("q");
            let (kb, ks) = next("k");
            let (vb, vs) = next("v");
            let (ob, os) = next("out");
            (params.q, params.k, params.v, params.o) = (qs, ks, vs, os);
            let lse_b = match &lse {
                Some(_) => {
                    let (b, s) = next("lse");
                    params.lse_off = s.offset;
                    b
                }
                None => dummy_lse.clone(),
            };
            let bias_b = match &opts.bias {
                Some(_) => {
                    let (b, s) = next("bias");
                    params.bias = s;
                    b
                }
                None => dummy.clone(),
            };
            let mask_b = match &opts.mask {
                Some(_) => {
                    let (b, s) = next("mask");
                    params.mask = s;
                    b
                }
                None => dummy.clone(),
            };
            let params_buf = kernels::params_buffer(ctx, &params);
            allocated += params_buf.size();
            steps.push(kernels::flash_forward::step(
                ctx,
                cfg,
                q.dtype(),
                &params,
                &params_buf,
                [&qb, &kb, &vb],
                &ob,
                &lse_b,
                [&bias_b, &mask_b, &lengths],
            )?);
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
            },
            causal: opts.causal.is_some(),
            allocated,
        })
    }

    fn plan_staged(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        tuning: &Tuning,
    ) -> Result<Self> {
        let mut params = base_params(&problem, opts);
        let (qkv, masks) = Self::bind_inputs(ctx, &mut params, q, k, v, opts)?;
        let (out, lse) = Self::outputs(ctx, &problem, q.dtype(), opts)?;
        let (ob, oo) = kernels::bind_tensor(ctx, &out, "out")?;
        params.o = kernels::strides_of(&out, oo);
        let lse_b = match &lse {
            Some(t) => BoundBuffer::whole(t.buffer()),
            None => BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?),
        };

        // The score matrix is processed in chunks of (b, h) pairs that fit one storage binding.
        let total_bh = (problem.b * problem.hq) as u64;
        let per_head = problem.lq as u64 * problem.lk as u64 * 4;
        let max_bind = ctx
            .limits()
            .max_storage_buffer_binding_size
            .min(ctx.limits().max_buffer_size);
        if per_head > max_bind {
            return Err(Error::Limit {
                what: format!(
                    "staged attention score matrix of one head ({}x{} f32; the fused kernel has no such limit)",
                    problem.lq, problem.lk
                ),
                limit: "max_storage_buffer_binding_size",
                needed: per_head,
                max: max_bind,
            });
        }
        let chunk = (max_bind / per_head).min(total_bh).max(1);
        let n_chunks = total_bh.div_ceil(chunk);
        let weights = match opts.return_weights {
            true => Some(Tensor::zeros(
                ctx,
                &[problem.b, problem.hq, problem.lq, problem.lk],
                DType::F32,
            )?),
            false => None,
        };
        let scratch = match (&weights, n_chunks) {
            (Some(w), 1) => w.buffer().clone(),
            _ => storage_buffer(ctx, "wgpu-attention scores", chunk * per_head)?,
        };
        let gemm = tuning.gemm.unwrap_or_default();
        let softmax_wg = tuning.softmax_workgroup.unwrap_or(
            kernels::masked_softmax::DEFAULT_WORKGROUP.min(ctx.limits().max_compute_invocations_per_workgroup),
        );
        let dtype = q.dtype();
        let mut steps = Vec::new();
        let mut allocated = out.buffer().size() + lse.as_ref().map_or(16, |t| t.buffer().size()) + 16;
        allocated += weights.as_ref().map_or(0, |w| w.buffer().size());
        if weights.is_none() || n_chunks > 1 {
            allocated += scratch.size();
        }
        for c in 0..n_chunks {
            let base = c * chunk;
            let count = chunk.min(total_bh - base);
            let mut p = params;
            p.bh_base = base as u32;
            p.bh_count = count as u32;
            let pb = kernels::params_buffer(ctx, &p);
            allocated += pb.size();
            let s = BoundBuffer {
                buffer: scratch.clone(),
                offset: 0,
                size: count * per_head,
            };
            steps.push(kernels::qk_scores::step(
                ctx, gemm, dtype, &p, &pb, &qkv[0], &qkv[1], &s,
            )?);
            steps.push(kernels::masked_softmax::step(
                ctx,
                softmax_wg,
                dtype,
                &p,
                &pb,
                &s,
                &lse_b,
                [&masks[0], &masks[1], &masks[2]],
            )?);
            steps.push(kernels::weighted_sum::step(
                ctx, gemm, dtype, &p, &pb, &s, &qkv[2], &ob,
            )?);
            if let (Some(w), true) = (&weights, n_chunks > 1) {
                steps.push(Step::Copy {
                    src: scratch.clone(),
                    dst: w.buffer().clone(),
                    dst_offset: base * per_head,
                    size: count * per_head,
                });
            }
        }
        Ok(Self {
            ctx: ctx.clone(),
            problem,
            steps,
            output: AttentionOutput {
                out,
                lse,
                weights,
                kernel: KernelChoice::Staged,
            },
            causal: opts.causal.is_some(),
            allocated,
        })
    }

    /// Records the call into `encoder`.
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
        self.ctx.scoped("attention submit", || {
            let mut enc = self.ctx.device().create_command_encoder(&Default::default());
            self.encode(&mut enc);
            self.ctx.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// The problem sizes.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
    /// Whether a causal mask is applied (for FLOP counting).
    pub fn is_causal(&self) -> bool {
        self.causal
    }
    /// The outputs (valid after a submission has run).
    pub fn output(&self) -> &AttentionOutput {
        &self.output
    }
    /// Consumes the call, keeping its outputs.
    pub fn into_output(self) -> AttentionOutput {
        self.output
    }
    /// Bytes of device memory this call allocated (outputs, scratch, uniforms), not counting inputs.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
    /// Number of compute dispatches per run.
    pub fn dispatch_count(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count()
    }
}
