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
use crate::tensor::{DType, Tensor};

/// The sizes of one attention problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
        crate::tensor::check_operand(name, t, 4..=4)?;
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
    if let Some(d) = &opts.dropout {
        if !(d.p.is_finite() && (0.0..1.0).contains(&d.p)) {
            return Err(Error::InvalidOption {
                name: "dropout.p",
                value: d.p as f64,
                why: "must be in [0, 1)",
            });
        }
    }
    if let Some(out) = &opts.out {
        let expected = vec![p.b, p.hq, p.lq, p.dv];
        if out.shape() != expected.as_slice() {
            return Err(Error::ShapeMismatch {
                name: "out",
                expected,
                got: out.shape().to_vec(),
            });
        }
        if out.dtype() != q.dtype() {
            return Err(Error::DType {
                name: "out",
                got: out.dtype(),
                expected: q.dtype().name(),
            });
        }
        check_rows_contiguous("out", out)?;
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
    crate::tensor::check_strides_fit(name, t)
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

pub(crate) fn base_params(p: &Problem, opts: &AttentionOptions) -> Params {
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
    if let Some(d) = opts.dropout.filter(|d| d.p > 0.0) {
        f |= flags::DROPOUT;
        params.dropout_threshold = d.threshold();
        params.dropout_scale = (1.0 / (1.0 - d.p as f64)) as f32;
        params.seed_lo = d.seed as u32;
        params.seed_hi = (d.seed >> 32) as u32;
    }
    if opts.zero_score_mask {
        f |= flags::ZERO_SCORE;
    }
    params.flags = f;
    params
}

/// Sets the local-p fields of `params`; the centers' element offset is set by the caller.
fn local_params(params: &mut Params, local: &Option<LocalWindows>) {
    if let Some(l) = local {
        params.flags |= flags::LOCAL;
        params.local_radius = l.radius;
        params.local_gauss = if l.gaussian {
            // σ = radius / 2, so 1 / (2σ²) = 2 / radius².
            2.0 / (l.radius * l.radius)
        } else {
            0.0
        };
    }
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
        let kernel = match opts.kernel {
            KernelChoice::Auto if opts.return_weights => KernelChoice::Staged,
            KernelChoice::Auto => KernelChoice::Fused,
            other => other,
        };
        ctx.scoped("attention setup", || match kernel {
            KernelChoice::Staged => Self::plan_staged(ctx, problem, q, k, v, opts, extras, tuning),
            _ => Self::plan_fused(ctx, problem, q, k, v, opts, extras, tuning),
        })
    }

    /// Binds Q, K, V and the optional mask inputs; fills their strides into `params`.
    pub(crate) fn bind_inputs(
        ctx: &Context,
        params: &mut Params,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
    ) -> Result<([BoundBuffer; 3], [BoundBuffer; 4])> {
        let (qb, qo) = kernels::bind_tensor(ctx, q, "q")?;
        let (kb, ko) = kernels::bind_tensor(ctx, k, "k")?;
        let (vb, vo) = kernels::bind_tensor(ctx, v, "v")?;
        params.q = kernels::strides_of(q, qo);
        params.k = kernels::strides_of(k, ko);
        params.v = kernels::strides_of(v, vo);
        let dummy = kernels::unused_input(ctx);
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
        let (centers, centers_strides) = bind_opt(&extras.local.as_ref().map(|l| l.centers.clone()), "centers")?;
        params.bias = bias_strides;
        params.mask = mask_strides;
        params.centers_off = centers_strides.offset;
        local_params(params, &extras.local);
        Ok(([qb, kb, vb], [bias, mask, lens, centers]))
    }

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

    #[allow(clippy::too_many_arguments, reason = "internal planner of the public constructors")]
    fn plan_fused(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
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
        if let Some(local) = &extras.local {
            let view = local.centers.reshape(&[p.b, p.hq, p.lq, 1])?;
            operands.push(operand("centers", &view, p.lq, 1, 1));
        }
        let plan = chunks::plan(ctx, &operands, p.b as u64, p.hq as u64)?;

        let cfg = match tuning.flash {
            Some(c) => c,
            None => crate::tune::flash_config(ctx, p, q.dtype())?,
        };
        let dummy = kernels::unused_input(ctx);
        let dummy_lse = BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?);
        let lengths = match &opts.key_lengths {
            Some(t) => kernels::bind_tensor(ctx, t, "key_lengths")?.0,
            None => dummy.clone(),
        };
        let score_vector = match &extras.score_vector {
            Some(t) => {
                let (b, off) = kernels::bind_tensor(ctx, t, "score_vector")?;
                Some((b, off))
            }
            None => None,
        };
        let mut base = base_params(p, opts);
        local_params(&mut base, &extras.local);
        base.score_off = score_vector.as_ref().map_or(0, |s| s.1);
        let mut steps = Vec::with_capacity(plan.len());
        let out_bytes = if opts.out.is_some() { 0 } else { out.buffer().size() };
        let mut allocated = out_bytes + lse.as_ref().map_or(16, |t| t.buffer().size()) + 32;
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
            let centers_b = match &extras.local {
                Some(_) => {
                    let (b, s) = next("centers");
                    params.centers_off = s.offset;
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
                extras.local.as_ref().map(|_| &centers_b),
                score_vector.as_ref().map(|s| &s.0),
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

    #[allow(clippy::too_many_arguments, reason = "internal planner of the public constructors")]
    fn plan_staged(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
        tuning: &Tuning,
    ) -> Result<Self> {
        let mut params = base_params(&problem, opts);
        let (qkv, masks) = Self::bind_inputs(ctx, &mut params, q, k, v, opts, extras)?;
        let additive = match &extras.score_vector {
            Some(sv) => Some(NaiveAdditive::new(ctx, &problem, q.dtype(), sv)?),
            None => None,
        };
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
        let max_bind = ctx.max_binding_size();
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
        let out_bytes = if opts.out.is_some() { 0 } else { out.buffer().size() };
        let mut allocated = out_bytes + lse.as_ref().map_or(16, |t| t.buffer().size()) + 16;
        allocated += weights.as_ref().map_or(0, |w| w.buffer().size());
        allocated += additive.as_ref().map_or(0, |a| a.hidden.size);
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
            match (&additive, &extras.scores) {
                (Some(a), _) => allocated += a.score_steps(ctx, &p, &qkv, &s, &mut steps)?,
                (None, Some(given)) => steps.push(Step::Copy {
                    src: given.buffer().clone(),
                    src_offset: given.offset() + base * per_head,
                    dst: scratch.clone(),
                    dst_offset: 0,
                    size: count * per_head,
                }),
                (None, None) => steps.push(kernels::qk_scores::step(
                    ctx, gemm, dtype, &p, &pb, &qkv[0], &qkv[1], &s,
                )?),
            }
            steps.push(kernels::masked_softmax::step(
                ctx,
                softmax_wg,
                dtype,
                &p,
                &pb,
                &s,
                &lse_b,
                [&masks[0], &masks[1], &masks[2], &masks[3]],
            )?);
            steps.push(kernels::weighted_sum::step(
                ctx, gemm, dtype, &p, &pb, &s, &qkv[2], &ob,
            )?);
            if let (Some(w), true) = (&weights, n_chunks > 1) {
                steps.push(Step::Copy {
                    src: scratch.clone(),
                    src_offset: 0,
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

    /// The call as a one-phase [`crate::Prepared`] named `phase`.
    pub fn into_prepared(self, phase: &'static str) -> crate::Prepared<AttentionOutput> {
        let flops = self.problem.flops(self.causal);
        let mut prepared = crate::Prepared::new(&self.ctx, self.output);
        prepared.push(phase, self.steps, self.allocated, flops);
        prepared
    }
}

/// The naive additive scores of the staged path (the baseline of the fused additive kernel), as a
/// framework computes them: for blocks of query rows, T = tanh(Q'ᵢ + K'ⱼ) materialized as
/// [rows, Lk, Da] (`additive_hidden`), then S = T v with the GEMM kernel.
struct NaiveAdditive {
    hidden: BoundBuffer,
    score_vector: (BoundBuffer, u32),
    rows_per_block: u32,
}

impl NaiveAdditive {
    fn new(ctx: &Context, p: &Problem, dtype: DType, score_vector: &Tensor) -> Result<Self> {
        if dtype != DType::F32 {
            return Err(Error::Unsupported(
                "the naive additive path is f32 only (its f32 score GEMM reads the hidden tensor); use the fused path for f16".into(),
            ));
        }
        let row_bytes = p.lk as u64 * p.dk as u64 * 4;
        let max_bind = ctx.max_binding_size();
        if row_bytes > max_bind {
            return Err(Error::Limit {
                what: format!("naive additive hidden tensor of one query row ({}x{} f32)", p.lk, p.dk),
                limit: "max_storage_buffer_binding_size",
                needed: row_bytes,
                max: max_bind,
            });
        }
        let rows_per_block = (max_bind / row_bytes).min(p.lq as u64) as u32;
        let size = rows_per_block as u64 * row_bytes;
        let hidden = storage_buffer(ctx, "wgpu-attention additive hidden", size)?;
        Ok(Self {
            hidden: BoundBuffer::whole(&hidden),
            score_vector: kernels::bind_tensor(ctx, score_vector, "score_vector")?,
            rows_per_block,
        })
    }

    /// Steps writing the scores of the chunk `p` (its (b, h) pairs) into `scores`; returns the
    /// bytes of uniforms allocated.
    fn score_steps(
        &self,
        ctx: &Context,
        p: &Params,
        qkv: &[BoundBuffer; 3],
        scores: &BoundBuffer,
        steps: &mut Vec<Step>,
    ) -> Result<u64> {
        use kernels::gemm::{GemmParams, MatrixStrides};
        let tile = GemmTile {
            wg_x: 1,
            wg_y: 64,
            tile_k: 16,
        };
        let mut allocated = 0;
        for bh in p.bh_base..p.bh_base + p.bh_count {
            for row_base in (0..p.len_q).step_by(self.rows_per_block as usize) {
                let rows = self.rows_per_block.min(p.len_q - row_base);
                let mut hp = *p;
                hp.bh_base = bh;
                hp.bh_count = 1;
                hp.row_base = row_base;
                hp.row_count = rows;
                let hb = kernels::params_buffer(ctx, &hp);
                steps.push(kernels::additive_hidden::step(
                    ctx,
                    DType::F32,
                    &hp,
                    &hb,
                    &qkv[0],
                    &qkv[1],
                    &self.hidden,
                )?);
                let gp = GemmParams {
                    m: rows * p.len_k,
                    n: 1,
                    k: p.dim_k,
                    batch: 1,
                    inner: 1,
                    alpha: 1.0,
                    post_scale: 1.0,
                    a: MatrixStrides {
                        row: p.dim_k,
                        col: 1,
                        ..Default::default()
                    },
                    b: MatrixStrides {
                        offset: self.score_vector.1,
                        row: 1,
                        ..Default::default()
                    },
                    c: MatrixStrides {
                        offset: ((bh - p.bh_base) * p.len_q + row_base) * p.len_k,
                        row: 1,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let gb = kernels::params_buffer(ctx, &gp);
                allocated += hb.size() + gb.size();
                steps.push(kernels::gemm::step(
                    ctx,
                    tile,
                    DType::F32,
                    &gp,
                    &gb,
                    [&self.hidden, &self.score_vector.0, scores, &self.score_vector.0],
                )?);
            }
        }
        Ok(allocated)
    }
}
