//! Local attention (docs/ATTENTION.md §4, Luong et al. 2015): each query attends to a window of keys
//! around an aligned position. The fused kernel skips key blocks outside every window.

use crate::attention::{Attention, AttentionOutput, Extras, LocalWindows, Tuning};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::{column, expect_dtype, expect_rank, expect_shape};
use crate::gemm::{self, Activation, GemmOptions};
use crate::options::{Alignment, AttentionOptions, Window};
use crate::prepared::Prepared;
use crate::tensor::{DType, Tensor};

/// Local-m (monotonic alignment pᵢ = i): only keys with |j − i| ≤ `half_width` take part
/// (softmax over the window, no Gaussian), combined with the other options of §1.
pub fn local_m(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    half_width: u32,
    opts: &AttentionOptions,
) -> Result<Prepared<AttentionOutput>> {
    if opts.window.is_some() {
        return Err(Error::InvalidOption {
            name: "window",
            value: f64::NAN,
            why: "local-m sets the window itself; leave opts.window unset",
        });
    }
    let opts = AttentionOptions {
        window: Some(Window {
            left: Some(half_width),
            right: Some(half_width),
            alignment: Alignment::TopLeft,
        }),
        ..opts.clone()
    };
    Ok(Attention::new(ctx, q, k, v, &opts)?.into_prepared("attention"))
}

/// Weights of the local-p position predictor pᵢ = Lk · sigmoid(v_pᵀ tanh(W_p qᵢ)).
#[derive(Debug, Clone)]
pub struct LocalPWeights {
    /// W_p [Dp, Dk].
    pub w_p: Tensor,
    /// v_p \[Dp\].
    pub v_p: Tensor,
}

/// Outputs of [`local_p`].
#[derive(Debug, Clone)]
pub struct LocalOutput {
    /// O (and LSE / P on request) as in §1. P includes the Gaussian factor.
    pub attention: AttentionOutput,
    /// The predicted positions pᵢ [B, Hq, Lq] (f32), in key units.
    pub positions: Tensor,
}

/// Local-p (predictive alignment): pᵢ = Lk · sigmoid(v_pᵀ tanh(W_p qᵢ)) per query row (two GEMMs),
/// softmax over the keys with |j − pᵢ| ≤ `half_width` (clipped to the sequence), then each weight
/// multiplied by exp(−(j − pᵢ)² / (2σ²)) with σ = half_width / 2, **not** renormalized (as in the
/// paper). LSE is that of the windowed softmax. f32 only (positions are f32). `half_width` ≥ 1.
pub fn local_p(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    weights: &LocalPWeights,
    half_width: u32,
    opts: &AttentionOptions,
) -> Result<Prepared<LocalOutput>> {
    let qs = expect_rank("q", q, 4)?.to_vec();
    let ks = expect_rank("k", k, 4)?;
    expect_dtype("q", q, DType::F32)?;
    let dp = expect_rank("v_p", &weights.v_p, 1)?[0];
    expect_shape("w_p", &weights.w_p, &[dp, qs[3]])?;
    expect_dtype("w_p", &weights.w_p, DType::F32)?;
    expect_dtype("v_p", &weights.v_p, DType::F32)?;
    check_half_width(half_width)?;
    let lk = ks[2];
    let mut call = Prepared::new(ctx, ());
    let hidden = GemmOptions {
        trans_b: true,
        activation: Activation::Tanh,
        ..Default::default()
    };
    let hidden = call.absorb("positions", gemm::prepare(ctx, q, &weights.w_p, &hidden)?);
    let to_position = GemmOptions {
        activation: Activation::Sigmoid,
        post_scale: lk as f32,
        ..Default::default()
    };
    let positions = call.absorb(
        "positions",
        gemm::prepare(ctx, &hidden, &column(&weights.v_p)?, &to_position)?,
    );
    let positions = positions.reshape(&qs[..3])?;
    let attention = call.absorb("attention", local_p_at(ctx, q, k, v, &positions, half_width, opts)?);
    Ok(call.with_output(LocalOutput { attention, positions }))
}

/// Local-p attention with given positions [B, Hq, Lq] (f32): the attention half of [`local_p`],
/// for positions computed elsewhere (and for checking the kernel against the CPU reference with
/// the very same positions).
pub fn local_p_at(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    positions: &Tensor,
    half_width: u32,
    opts: &AttentionOptions,
) -> Result<Prepared<AttentionOutput>> {
    let qs = expect_rank("q", q, 4)?;
    expect_shape("positions", positions, &qs[..3])?;
    expect_dtype("positions", positions, DType::F32)?;
    check_half_width(half_width)?;
    if !positions.is_contiguous() {
        return Err(Error::Strides {
            name: "positions",
            shape: positions.shape().to_vec(),
            strides: positions.strides().to_vec(),
            why: "must be contiguous",
        });
    }
    let extras = Extras {
        local: Some(LocalWindows {
            centers: positions.clone(),
            radius: half_width as f32,
            gaussian: true,
        }),
        ..Default::default()
    };
    Ok(Attention::plan(ctx, q, k, v, opts, &extras, &Tuning::default())?.into_prepared("attention"))
}

/// Local-p's Gaussian has σ = W / 2, so the window must be at least 1.
fn check_half_width(half_width: u32) -> Result<()> {
    if half_width == 0 {
        return Err(Error::InvalidOption {
            name: "half_width",
            value: 0.0,
            why: "local-p needs a window of at least 1 (σ = W / 2 must be positive)",
        });
    }
    Ok(())
}
