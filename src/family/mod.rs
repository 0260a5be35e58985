//! The attention family of `docs/ATTENTION.md` §2–§8 on the GPU, one module per member. Every member
//! returns a [`Prepared`](crate::Prepared) call: `.run()?` submits it and hands back the outputs,
//! `.encode(&mut encoder)` records it into your own encoder. Inputs are [`Tensor`]s (f32; f16
//! where noted), options are structs with defaults, errors are the crate's [`Error`].
//!
//! | member | module | formula | paper |
//! |---|---|---|---|
//! | dot / scaled dot | [`score::dot`], [`crate::attention()`] | qᵀk, qᵀk/√d | Luong 2015; Vaswani 2017 |
//! | general (bilinear) | [`score::general`] | qᵀ W k = (qᵀW)·k | Luong 2015 |
//! | additive, fused | [`score::additive`] | vᵀ tanh(W_q q + W_k k + b), reduced in the tile | Bahdanau 2015 |
//! | location-based | [`location::location`] | a = softmax(W_a [q; h] + b_a), out = W_c [q; aV] + b_c | Luong 2015 |
//! | local-m | [`local::local_m`] | keys with \|j − i\| ≤ W | Luong 2015 |
//! | local-p | [`local::local_p`] | pᵢ = Lk·σ(v_pᵀ tanh(W_p qᵢ)), window \|j − pᵢ\| ≤ W, × exp(−(j−pᵢ)²/(2(W/2)²)) | Luong 2015 |
//! | hard (stochastic) | [`hard::hard`] | j ~ Categorical(Pᵢ), out = V\[j\] | Xu 2015 |
//! | dropout on P | [`crate::AttentionOptions::dropout`] | Philox-4x32-10 keep mask, × 1/(1−p) | Srivastava 2014 |
//! | zero-score masked | [`neurjudge::zero_masked`] | softmax(C Gᵀ, scores = 0 masked) G | Yue 2021 (NeurJudge) |
//! | code-wise | [`neurjudge::codewise`] | α = softmaxᵢ(maxⱼ (C Gᵀ)ᵢⱼ), out = αᵀC | Yue 2021 (NeurJudge) |
//! | hierarchical pooling | [`pooling::han`] | α = softmax(tanh(XW + b) u), out = Σ αₜxₜ | Yang 2016 |
//! | feed-forward pooling | [`pooling::feed_forward`] | aₜ = exp(tanh(xₜ·w + bₜ))·mₜ / (Σa + ε) | Raffel & Ellis 2015 |
//! | self-attention sum | [`pooling::self_sum`] | Σₜ (softmax(XXᵀ/√D) X)ₜ | — |
//! | multi-head | [`mha::MultiHeadAttention`] | concat(headᵢ) W_oᵀ + b_o, GQA | Vaswani 2017 |
//!
//! Every member has a CPU twin in [`crate::reference::family`] (or [`crate::reference::sdpa`]).
//!
//! ```
//! # fn main() -> Result<(), wgpu_attention::Error> {
//! use wgpu_attention::family::score::{additive, AdditiveWeights};
//! use wgpu_attention::{AttentionOptions, Context, Tensor};
//! let ctx = Context::new()?;
//! let (l, d, da) = (8, 4, 6);
//! let x: Vec<f32> = (0..l * d).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = Tensor::from_slice(&ctx, &x, &[1, 1, l, d])?; // [B, H, L, D]
//! let w: Vec<f32> = (0..da * d).map(|i| (i as f32 * 0.11).cos() * 0.3).collect();
//! let weights = AdditiveWeights {
//!     w_q: Tensor::from_slice(&ctx, &w, &[da, d])?,
//!     w_k: Tensor::from_slice(&ctx, &w, &[da, d])?,
//!     bias: None,
//!     v: Tensor::from_slice(&ctx, &w[..da], &[da])?,
//! };
//! // Fused: vᵀ tanh(W_q q + W_k k) is reduced inside the kernel's tile.
//! let out = additive(&ctx, &q, &q, &q, &weights, &AttentionOptions::default())?.run()?;
//! assert_eq!(out.out.to_vec::<f32>(&ctx)?.len(), l * d);
//! # Ok(()) }
//! ```

pub mod hard;
pub mod local;
pub mod location;
pub mod mha;
pub mod neurjudge;
pub mod pooling;
pub mod score;

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Checks that `t` has exactly `expected` as its shape.
pub(crate) fn expect_shape(name: &'static str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.shape() != expected {
        return Err(Error::ShapeMismatch {
            name,
            expected: expected.to_vec(),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// Checks that `t` has the dtype `expected`.
pub(crate) fn expect_dtype(name: &'static str, t: &Tensor, expected: DType) -> Result<()> {
    if t.dtype() != expected {
        return Err(Error::DType {
            name,
            got: t.dtype(),
            expected: expected.name(),
        });
    }
    Ok(())
}

/// Checks the rank of `t` and returns its shape.
pub(crate) fn expect_rank<'a>(name: &'static str, t: &'a Tensor, rank: usize) -> Result<&'a [usize]> {
    if t.shape().len() != rank {
        return Err(Error::Rank {
            name,
            expected: rank,
            shape: t.shape().to_vec(),
        });
    }
    Ok(t.shape())
}

/// A [B, L, D] tensor viewed as [B, 1, L, D] (one head).
pub(crate) fn one_head(t: &Tensor) -> Result<Tensor> {
    let (s, st) = (t.shape(), t.strides());
    t.view(0, &[s[0], 1, s[1], s[2]], &[st[0], 0, st[1], st[2]])
}

/// A 1-D tensor \[n\] viewed as an [n, 1] column.
pub(crate) fn column(t: &Tensor) -> Result<Tensor> {
    t.view(0, &[t.shape()[0], 1], &[t.strides()[0], 1])
}

/// Columns [from, from + count) of a 2-D tensor, as a strided view (no copy).
pub(crate) fn columns(t: &Tensor, from: usize, count: usize) -> Result<Tensor> {
    let st = t.strides();
    t.view(from * st[1], &[t.shape()[0], count], st)
}
