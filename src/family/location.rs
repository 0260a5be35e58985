//! Location-based attention (docs/ATTENTION.md §3, Luong et al. 2015):
//! the weights come from the query alone, a = softmax(W_a [q; h] + b_a) over the Lk positions,
//! context = a V, output = W_c [q; context] + b_c. Concatenations are never built: W_a and W_c are
//! split into column blocks (strided views) and the two GEMMs of each accumulate into one output.

use crate::attention::{Attention, Extras, Tuning};
use crate::context::Context;
use crate::error::Result;
use crate::family::{columns, expect_dtype, expect_rank, expect_shape, one_head};
use crate::gemm::{self, GemmOptions};
use crate::options::{AttentionOptions, KernelChoice};
use crate::prepared::Prepared;
use crate::tensor::{DType, Tensor};

/// Weights of location-based attention (`Linear` layout: [out, in]).
#[derive(Debug, Clone)]
pub struct LocationWeights {
    /// W_a [Lk, Dq + Dh].
    pub w_a: Tensor,
    /// b_a \[Lk\].
    pub b_a: Tensor,
    /// W_c [Do, Dq + Dv].
    pub w_c: Tensor,
    /// b_c \[Do\].
    pub b_c: Tensor,
}

/// Outputs of [`location`].
#[derive(Debug, Clone)]
pub struct LocationOutput {
    /// W_c [q; context] + b_c, [B, Lq, Do].
    pub out: Tensor,
    /// a V, [B, Lq, Dv].
    pub context: Tensor,
    /// a, [B, Lq, Lk] (f32).
    pub weights: Tensor,
}

/// Location-based attention for queries q [B, Lq, Dq] with hidden states h [B, Lq, Dh] over
/// values v [B, Lk, Dv] (f32). `opts` may mask positions (bool mask, key lengths, causal, window,
/// bias, soft cap, dropout apply to the location scores as in §1; `scale` is not used).
pub fn location(
    ctx: &Context,
    q: &Tensor,
    h: &Tensor,
    v: &Tensor,
    weights: &LocationWeights,
    opts: &AttentionOptions,
) -> Result<Prepared<LocationOutput>> {
    let qs = expect_rank("q", q, 3)?.to_vec();
    let hs = expect_rank("h", h, 3)?;
    let vs = expect_rank("v", v, 3)?.to_vec();
    let (b, lq, dq, dh, lk, dv) = (qs[0], qs[1], qs[2], hs[2], vs[1], vs[2]);
    expect_shape("h", h, &[b, lq, dh])?;
    expect_shape("v", v, &[b, lk, dv])?;
    expect_shape("w_a", &weights.w_a, &[lk, dq + dh])?;
    expect_shape("b_a", &weights.b_a, &[lk])?;
    let d_out = weights.w_c.shape().first().copied().unwrap_or(0);
    expect_shape("w_c", &weights.w_c, &[d_out, dq + dv])?;
    expect_shape("b_c", &weights.b_c, &[d_out])?;
    for (name, t) in [
        ("q", q),
        ("h", h),
        ("v", v),
        ("w_a", &weights.w_a),
        ("b_a", &weights.b_a),
        ("w_c", &weights.w_c),
        ("b_c", &weights.b_c),
    ] {
        expect_dtype(name, t, DType::F32)?;
    }
    let mut call = Prepared::new(ctx, ());
    let linear = |bias: Option<Tensor>, out: &Tensor, accumulate: bool| GemmOptions {
        trans_b: true,
        bias,
        out: Some(out.clone()),
        accumulate,
        ..Default::default()
    };
    // Scores S = q W_a[:, :Dq]ᵀ + b_a + h W_a[:, Dq:]ᵀ.
    let scores = Tensor::zeros(ctx, &[b, lq, lk], DType::F32)?;
    let w_aq = columns(&weights.w_a, 0, dq)?;
    let w_ah = columns(&weights.w_a, dq, dh)?;
    call.absorb(
        "scores",
        gemm::prepare(ctx, q, &w_aq, &linear(Some(weights.b_a.clone()), &scores, false))?,
    );
    call.absorb("scores", gemm::prepare(ctx, h, &w_ah, &linear(None, &scores, true))?);
    // a = masked softmax(S), context = a V: the staged path fed with S (Q and K carry shapes only).
    let q_shape = scores.view(0, &[b, 1, lq, 1], &[lq * lk, 0, lk, 1])?;
    let k_shape = scores.view(0, &[b, 1, lk, 1], &[lq * lk, 0, 1, 1])?;
    let extras = Extras {
        scores: Some(scores.reshape(&[b, 1, lq, lk])?),
        ..Default::default()
    };
    let staged = AttentionOptions {
        kernel: KernelChoice::Staged,
        return_weights: true,
        scale: None,
        ..opts.clone()
    };
    let attention = Attention::plan(
        ctx,
        &q_shape,
        &k_shape,
        &one_head(v)?,
        &staged,
        &extras,
        &Tuning::default(),
    )?;
    let attention = call.absorb("attention", attention.into_prepared("attention"));
    let context = attention.out.reshape(&[b, lq, dv])?;
    let a = attention
        .weights
        .expect("staged path with return_weights")
        .reshape(&[b, lq, lk])?;
    // Output W_c[:, :Dq] q + W_c[:, Dq:] context + b_c.
    let out = Tensor::zeros(ctx, &[b, lq, d_out], DType::F32)?;
    let w_cq = columns(&weights.w_c, 0, dq)?;
    let w_cc = columns(&weights.w_c, dq, dv)?;
    call.absorb(
        "output",
        gemm::prepare(ctx, q, &w_cq, &linear(Some(weights.b_c.clone()), &out, false))?,
    );
    call.absorb(
        "output",
        gemm::prepare(ctx, &context, &w_cc, &linear(None, &out, true))?,
    );
    Ok(call.with_output(LocationOutput {
        out,
        context,
        weights: a,
    }))
}
