//! Attention pooling, sequence → one vector (docs/ATTENTION.md §7). X is [B, L, D]; outputs are
//! [B, D] plus the pooling weights α [B, L]. `shaders/pool.wgsl` does the weighting and the sum;
//! projections use the GEMM kernel. f32, or f16 storage where the adapter has `SHADER_F16`.

use crate::attention::Attention;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::{column, expect_dtype, expect_rank, expect_shape, one_head};
use crate::gemm::{self, Activation, GemmOptions};
use crate::kernels::pool::{flags, mode, PoolParams};
use crate::kernels::{self, BoundBuffer};
use crate::options::AttentionOptions;
use crate::prepared::Prepared;
use crate::tensor::{DType, Tensor};

/// Outputs of a pooling call.
#[derive(Debug, Clone)]
pub struct PoolOutput {
    /// Pooled vectors [B, D] (dtype of X).
    pub out: Tensor,
    /// Weights α [B, L] (f32): softmax weights, feed-forward weights, or the sum's 1/0 mask.
    pub weights: Tensor,
}

/// Weights of hierarchical attention pooling.
#[derive(Debug, Clone)]
pub struct HanWeights {
    /// W [D, Da].
    pub w: Tensor,
    /// b \[Da\].
    pub b: Tensor,
    /// Context vector u_w \[Da\].
    pub u: Tensor,
}

/// Hierarchical attention pooling (Yang et al. 2016): uₜ = tanh(xₜ W + b), sₜ = uₜᵀ u_w,
/// α = softmax over t (steps where `mask` [B, L] is false are excluded; all excluded → 0),
/// output Σₜ αₜ xₜ.
pub fn han(ctx: &Context, x: &Tensor, weights: &HanWeights, mask: Option<&Tensor>) -> Result<Prepared<PoolOutput>> {
    let xs = expect_rank("x", x, 3)?;
    let da = expect_rank("u", &weights.u, 1)?[0];
    expect_shape("w", &weights.w, &[xs[2], da])?;
    expect_shape("b", &weights.b, &[da])?;
    for (name, t) in [("w", &weights.w), ("b", &weights.b), ("u", &weights.u)] {
        expect_dtype(name, t, x.dtype())?;
    }
    let mut call = Prepared::new(ctx, ());
    let hidden = GemmOptions {
        bias: Some(weights.b.clone()),
        activation: Activation::Tanh,
        ..Default::default()
    };
    let u = call.absorb("projection", gemm::prepare(ctx, x, &weights.w, &hidden)?);
    let scores = call.absorb(
        "projection",
        gemm::prepare(ctx, &u, &column(&weights.u)?, &Default::default())?,
    );
    let pooled = pool(ctx, Some(&scores), x, mode::SOFTMAX, mask, None, 0.0)?;
    let out = call.absorb("pooling", pooled);
    Ok(call.with_output(out))
}

/// Weights of feed-forward attention.
#[derive(Debug, Clone)]
pub struct FeedForwardWeights {
    /// w \[D\].
    pub w: Tensor,
    /// Per-step bias b \[L\] (optional).
    pub b: Option<Tensor>,
}

/// Options of [`feed_forward`].
#[derive(Debug, Clone)]
pub struct FeedForwardOptions {
    /// Step mask [B, L] (bool, true = the step takes part).
    pub mask: Option<Tensor>,
    /// ε of the normalization (default 1e-7, as in the Keras layer); must be > 0.
    pub eps: f32,
}

impl Default for FeedForwardOptions {
    fn default() -> Self {
        Self { mask: None, eps: 1e-7 }
    }
}

/// Feed-forward attention (Raffel & Ellis 2015): eₜ = tanh(xₜ·w + bₜ), aₜ = exp(eₜ)·maskₜ,
/// α = a / (Σa + ε), output Σₜ αₜ xₜ. No max subtraction (tanh bounds e); all masked → 0.
pub fn feed_forward(
    ctx: &Context,
    x: &Tensor,
    weights: &FeedForwardWeights,
    opts: &FeedForwardOptions,
) -> Result<Prepared<PoolOutput>> {
    let xs = expect_rank("x", x, 3)?;
    expect_shape("w", &weights.w, &[xs[2]])?;
    expect_dtype("w", &weights.w, x.dtype())?;
    if let Some(b) = &weights.b {
        expect_shape("b", b, &[xs[1]])?;
        expect_dtype("b", b, x.dtype())?;
    }
    if !(opts.eps.is_finite() && opts.eps > 0.0) {
        return Err(Error::InvalidOption {
            name: "eps",
            value: opts.eps as f64,
            why: "must be finite and > 0",
        });
    }
    let mut call = Prepared::new(ctx, ());
    let scores = call.absorb(
        "projection",
        gemm::prepare(ctx, x, &column(&weights.w)?, &Default::default())?,
    );
    let pooled = pool(
        ctx,
        Some(&scores),
        x,
        mode::FEED_FORWARD,
        opts.mask.as_ref(),
        weights.b.as_ref(),
        opts.eps,
    )?;
    let out = call.absorb("pooling", pooled);
    Ok(call.with_output(out))
}

/// Self-attention sum: A = softmax(X Xᵀ / √D) (the fused kernel with
/// Q = K = V = X), C = A X, output Σₜ Cₜ. `weights` is all ones.
pub fn self_sum(ctx: &Context, x: &Tensor) -> Result<Prepared<PoolOutput>> {
    expect_rank("x", x, 3)?;
    let xh = one_head(x)?;
    let mut call = Prepared::new(ctx, ());
    let attention = Attention::new(ctx, &xh, &xh, &xh, &AttentionOptions::default())?;
    let c = call.absorb("attention", attention.into_prepared("attention")).out;
    let cs = c.shape().to_vec();
    let c = c.reshape(&[cs[0], cs[2], cs[3]])?;
    let pooled = pool(ctx, None, &c, mode::SUM, None, None, 0.0)?;
    let out = call.absorb("pooling", pooled);
    Ok(call.with_output(out))
}

/// The pooling kernel over X [B, L, D] with step scores [B, L, W] (max over W), `mode` from
/// [`mode`], optional step mask [B, L] and per-step bias \[L\].
pub(crate) fn pool(
    ctx: &Context,
    scores: Option<&Tensor>,
    x: &Tensor,
    pool_mode: u32,
    mask: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Prepared<PoolOutput>> {
    crate::tensor::check_operand("x", x, 3..=3)?;
    let (b, l, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if !matches!(x.dtype(), DType::F32 | DType::F16) {
        return Err(Error::DType {
            name: "x",
            got: x.dtype(),
            expected: "f32 or f16",
        });
    }
    if let Some(m) = mask {
        expect_shape("mask", m, &[b, l])?;
        expect_dtype("mask", m, DType::Bool)?;
        if m.strides()[1] != 1 {
            return Err(Error::Strides {
                name: "mask",
                shape: m.shape().to_vec(),
                strides: m.strides().to_vec(),
                why: "the last dimension must be contiguous (stride 1)",
            });
        }
    }
    ctx.scoped("pooling setup", || {
        let out = Tensor::zeros(ctx, &[b, d], x.dtype())?;
        let weights = Tensor::zeros(ctx, &[b, l], DType::F32)?;
        let (xb, xo) = kernels::bind_tensor(ctx, x, "x")?;
        let (ob, oo) = kernels::bind_tensor(ctx, &out, "out")?;
        let wb = BoundBuffer::whole(weights.buffer());
        let xst = x.strides();
        let mut pp = PoolParams {
            batch: b as u32,
            len: l as u32,
            width: 1,
            dim: d as u32,
            mode: pool_mode,
            eps,
            x: [xo, xst[0] as u32, xst[1] as u32, xst[2] as u32],
            o: [oo, d as u32, 1],
            ..Default::default()
        };
        let sb = match scores {
            Some(s) => {
                let (sb, so) = kernels::bind_tensor(ctx, s, "scores")?;
                let st = s.strides();
                pp.width = s.shape()[2] as u32;
                pp.s = [so, st[0] as u32, st[1] as u32, st[2] as u32];
                sb
            }
            None => xb.clone(),
        };
        let mb = match mask {
            Some(m) => {
                let (mb, mo) = kernels::bind_tensor(ctx, m, "mask")?;
                pp.flags |= flags::MASK;
                pp.mask_off = mo;
                pp.mask_sb = m.strides()[0] as u32;
                mb
            }
            None => kernels::unused_input(ctx),
        };
        let bb = match bias {
            Some(t) => {
                let (bb, bo) = kernels::bind_tensor(ctx, t, "b")?;
                pp.flags |= flags::BIAS;
                pp.bias_off = bo;
                bb
            }
            None => xb.clone(),
        };
        let pb = kernels::params_buffer(ctx, &pp);
        let step = kernels::pool::step(ctx, x.dtype(), &pp, &pb, [&sb, &xb, &ob, &wb, &mb, &bb])?;
        let allocated = out.buffer().size() + weights.buffer().size() + pb.size();
        let flops = 2.0 * (b * l * d) as f64;
        let mut call = Prepared::new(ctx, PoolOutput { out, weights });
        call.push("pooling", vec![step], allocated, flops);
        Ok(call)
    })
}
