//! NeurJudge attentions (docs/ATTENTION.md §6, Yue et al. 2021). C [B, Lc, H] is the context
//! (fact) sequence, G [B, Lg, H] the guide (charge/article) sequence; padding rows are zero vectors.

use crate::attention::{Attention, AttentionOutput};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::pooling::{pool, PoolOutput};
use crate::family::{expect_dtype, expect_rank, one_head};
use crate::gemm::{self, GemmOptions};
use crate::kernels::pool::mode;
use crate::options::AttentionOptions;
use crate::prepared::Prepared;
use crate::tensor::Tensor;

fn check_pair(c: &Tensor, g: &Tensor) -> Result<()> {
    let cs = expect_rank("c", c, 3)?;
    let gs = expect_rank("g", g, 3)?;
    expect_dtype("g", g, c.dtype())?;
    if cs[0] != gs[0] || cs[2] != gs[2] {
        return Err(Error::ShapeMismatch {
            name: "g",
            expected: vec![cs[0], gs[1], cs[2]],
            got: gs.to_vec(),
        });
    }
    Ok(())
}

/// Zero-score masked attention ("Mask_Attention"): A = C Gᵀ with every score exactly 0.0 masked,
/// softmax over Lg (fully masked rows give 0), output A G [B, Lc, H]. This is §1 with Q = C,
/// K = V = G, scale 1 and [`AttentionOptions::zero_score_mask`]; `opts` may add the other options
/// (e.g. `return_weights`), its `scale` and `zero_score_mask` are overridden. Every output drops
/// §1's head axis like `out`: LSE is [B, Lc], the weights [B, Lc, Lg]; a mask or bias is
/// [B|1, 1, Lc, Lg] or [Lc, Lg].
pub fn zero_masked(
    ctx: &Context,
    c: &Tensor,
    g: &Tensor,
    opts: &AttentionOptions,
) -> Result<Prepared<AttentionOutput>> {
    check_pair(c, g)?;
    let opts = AttentionOptions {
        scale: Some(1.0),
        zero_score_mask: true,
        ..opts.clone()
    };
    let (q, kv) = (one_head(c)?, one_head(g)?);
    let call = Attention::new(ctx, &q, &kv, &kv, &opts)?.into_prepared("attention");
    let mut out = call.output().clone();
    let (b, lc, h, lg) = (c.shape()[0], c.shape()[1], c.shape()[2], g.shape()[1]);
    out.out = out.out.reshape(&[b, lc, h])?;
    out.lse = out.lse.map(|t| t.reshape(&[b, lc])).transpose()?;
    out.weights = out.weights.map(|t| t.reshape(&[b, lc, lg])).transpose()?;
    Ok(call.with_output(out))
}

/// Code-wise attention: S = C Gᵀ [B, Lc, Lg] (GEMM), mᵢ = maxⱼ Sᵢⱼ, α = softmax over i of m,
/// output αᵀ C [B, 1, H] (`weights`: α [B, Lc]).
pub fn codewise(ctx: &Context, c: &Tensor, g: &Tensor) -> Result<Prepared<PoolOutput>> {
    check_pair(c, g)?;
    let mut call = Prepared::new(ctx, ());
    let trans = GemmOptions {
        trans_b: true,
        ..Default::default()
    };
    let scores = call.absorb("scores", gemm::prepare(ctx, c, g, &trans)?);
    let mut pooled = call.absorb("pooling", pool(ctx, Some(&scores), c, mode::SOFTMAX, None, None, 0.0)?);
    let s = pooled.out.shape().to_vec();
    pooled.out = pooled.out.reshape(&[s[0], 1, s[1]])?;
    Ok(call.with_output(pooled))
}
