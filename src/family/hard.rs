//! Hard (stochastic) attention (docs/ATTENTION.md §5, Xu et al. 2015): each query samples one key
//! j ~ Categorical(Pᵢ,:) and outputs V\[j\]. Sampling is the Gumbel-max trick over the Philox
//! stream keyed by (seed, b, h, i, j) (`shaders/hard_attention.wgsl`), so the same seed gives the
//! same indices on every run and the CPU reference draws the identical ones.

use crate::attention::{self, base_params, Attention, Extras};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, BoundBuffer};
use crate::options::AttentionOptions;
use crate::prepared::Prepared;
use crate::tensor::{DType, Tensor};

/// Index of a row whose keys are all masked (its output row is 0).
pub const NO_KEY: u32 = u32::MAX;

/// Outputs of [`hard`].
#[derive(Debug, Clone)]
pub struct HardOutput {
    /// O [B, Hq, Lq, Dv]: the sampled V rows (dtype of Q).
    pub out: Tensor,
    /// Sampled key per query [B, Hq, Lq] (u32; [`NO_KEY`] for a fully masked row).
    pub indices: Tensor,
}

/// Hard attention with the scores, scale and masks of §1 (`opts`; dropout, LSE, weights and the
/// kernel choice do not apply). Inputs must each fit one storage binding.
pub fn hard(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seed: u64,
    opts: &AttentionOptions,
) -> Result<Prepared<HardOutput>> {
    let p = attention::validate(ctx, q, k, v, opts)?;
    attention::require_nonempty(q, k, v)?;
    if opts.dropout.is_some() || opts.return_lse || opts.return_weights {
        return Err(Error::Unsupported(
            "hard attention returns sampled rows and indices: dropout, LSE and weights do not apply".into(),
        ));
    }
    // One invocation per query row loops over every key and, per key, over the head's vec4s.
    let steps = p.lk as u64 * (p.dk.div_ceil(4) as u64 + 1);
    if crate::kernels::policy::loop_budget(ctx) && steps > 60000 {
        return Err(Error::Unsupported(format!(
            "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; hard attention over {} keys at Dk = {} needs {steps} loop steps per row (at most 60000 here)",
            p.lk, p.dk
        )));
    }
    if opts.alibi_slopes.is_some() || opts.block_table.is_some() {
        return Err(Error::Unsupported(
            "hard attention takes dense K/V and no ALiBi; give the slopes as a bias instead".into(),
        ));
    }
    ctx.scoped("hard attention setup", || {
        let mut params = base_params(&p, opts);
        params.seed_lo = seed as u32;
        params.seed_hi = (seed >> 32) as u32;
        params.bh_count = (p.b * p.hq) as u32;
        let (qkv, [bias, mask], side) = Attention::bind_inputs(ctx, &mut params, q, k, v, opts, &Extras::default())?;
        let (out, _) = Attention::outputs(ctx, &p, q.dtype(), opts)?;
        let indices = Tensor::zeros(ctx, &[p.b, p.hq, p.lq], DType::U32)?;
        let (ob, oo) = kernels::bind_tensor(ctx, &out, "out")?;
        params.o = kernels::strides_of(&out, oo);
        let ib = BoundBuffer::whole(indices.buffer());
        let pb = kernels::params_buffer(ctx, &params);
        let step = kernels::hard_attention::step(
            ctx,
            q.dtype(),
            &params,
            &pb,
            [&qkv[0], &qkv[1], &qkv[2]],
            &ob,
            &ib,
            [&bias, &mask, &side.buffer],
        )?;
        let allocated = indices.buffer().size() + pb.size() + if opts.out.is_none() { out.buffer().size() } else { 0 };
        let flops = 2.0 * (p.b * p.hq) as f64 * p.lq as f64 * p.lk as f64 * p.dk as f64;
        let mut call = Prepared::new(ctx, HardOutput { out, indices });
        call.push("hard attention", vec![step], allocated, flops);
        Ok(call)
    })
}
