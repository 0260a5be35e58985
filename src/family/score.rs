//! Score functions (docs/ATTENTION.md §2, Luong et al. 2015; Bahdanau et al. 2015). Each combines with
//! every option of §1 (masks, soft cap, bias, dropout, LSE, weights on the staged path).
//!
//! Q [B, Hq, Lq, Dq], K [B, Hkv, Lk, Dk], V [B, Hkv, Lk, Dv] as in §1.

use crate::attention::{Attention, AttentionOutput, Extras, Tuning};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::{expect_dtype, expect_rank, expect_shape};
use crate::gemm::{self, GemmOptions};
use crate::options::AttentionOptions;
#[allow(unused_imports, reason = "doc links")]
use crate::options::KernelChoice;
use crate::prepared::Prepared;
use crate::tensor::Tensor;

/// Dot score qᵀk: §1 with scale 1 unless `opts.scale` says otherwise (scaled dot is
/// [`crate::attention()`] itself).
pub fn dot(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<Prepared<AttentionOutput>> {
    let opts = AttentionOptions {
        scale: Some(opts.scale.unwrap_or(1.0)),
        ..opts.clone()
    };
    Ok(Attention::new(ctx, q, k, v, &opts)?.into_prepared("attention"))
}

/// General (bilinear) score qᵀ W k with W [Dq, Dk] shared by all heads, computed as (qᵀW)·k: one
/// GEMM projects Q to [B, Hq, Lq, Dk], then §1 runs with scale 1 (unless `opts.scale` is set).
pub fn general(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    w: &Tensor,
    opts: &AttentionOptions,
) -> Result<Prepared<AttentionOutput>> {
    let qs = expect_rank("q", q, 4)?;
    let ks = expect_rank("k", k, 4)?;
    expect_shape("w", w, &[qs[3], ks[3]])?;
    expect_dtype("w", w, q.dtype())?;
    let projection = gemm::prepare(ctx, q, w, &GemmOptions::default())?;
    let mut call = Prepared::new(ctx, ());
    let q_w = call.absorb("projection", projection);
    let out = dot(ctx, &q_w, k, v, opts)?;
    let out = call.absorb("attention", out);
    Ok(call.with_output(out))
}

/// Weights of the additive (Bahdanau, "concat") score vᵀ tanh(W_q q + W_k k + b).
#[derive(Debug, Clone)]
pub struct AdditiveWeights {
    /// W_q [Da, Dq].
    pub w_q: Tensor,
    /// W_k [Da, Dk].
    pub w_k: Tensor,
    /// b \[Da\] (optional: zero).
    pub bias: Option<Tensor>,
    /// v \[Da\].
    pub v: Tensor,
}

/// Additive attention. Q and K are projected once (two GEMMs: Q' = Q W_qᵀ + b, K' = K W_kᵀ);
/// then, with [`KernelChoice::Auto`]/[`KernelChoice::Fused`], the fused kernel reduces
/// vᵀ tanh(Q'ᵢ + K'ⱼ) over Da inside its tile with online softmax and the weighted sum, never
/// materializing [Lq, Lk, Da] (Da ≤ 256; f32 or f16). [`KernelChoice::Staged`] is the naive
/// baseline a framework would run: it materializes tanh(Q'ᵢ + K'ⱼ) as [rows, Lk, Da] blocks,
/// reduces them with a GEMM into S, then softmax and P·V (f32; returns weights on request).
/// Scores are not scaled: `opts.scale` must be `None`.
pub fn additive(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    weights: &AdditiveWeights,
    opts: &AttentionOptions,
) -> Result<Prepared<AttentionOutput>> {
    let qs = expect_rank("q", q, 4)?;
    let ks = expect_rank("k", k, 4)?;
    let wv = expect_rank("v (score vector)", &weights.v, 1)?;
    let da = wv[0];
    expect_shape("w_q", &weights.w_q, &[da, qs[3]])?;
    expect_shape("w_k", &weights.w_k, &[da, ks[3]])?;
    for (name, t) in [
        ("w_q", &weights.w_q),
        ("w_k", &weights.w_k),
        ("v (score vector)", &weights.v),
    ] {
        expect_dtype(name, t, q.dtype())?;
    }
    if let Some(b) = &weights.bias {
        expect_shape("bias (additive b)", b, &[da])?;
        expect_dtype("bias (additive b)", b, q.dtype())?;
    }
    if let Some(s) = opts.scale {
        return Err(Error::InvalidOption {
            name: "scale",
            value: s as f64,
            why: "additive scores are not scaled; leave scale unset",
        });
    }
    let mut call = Prepared::new(ctx, ());
    let project = |x: &Tensor, w: &Tensor, bias: Option<Tensor>| {
        let o = GemmOptions {
            trans_b: true,
            bias,
            ..Default::default()
        };
        gemm::prepare(ctx, x, w, &o)
    };
    let q_proj = call.absorb("projection", project(q, &weights.w_q, weights.bias.clone())?);
    let k_proj = call.absorb("projection", project(k, &weights.w_k, None)?);
    let extras = Extras {
        score_vector: Some(weights.v.clone()),
        ..Default::default()
    };
    let opts = AttentionOptions {
        scale: Some(1.0),
        ..opts.clone()
    };
    let attention = Attention::plan(ctx, &q_proj, &k_proj, v, &opts, &extras, &Tuning::default())?;
    let out = call.absorb("attention", attention.into_prepared("attention"));
    Ok(call.with_output(out))
}
