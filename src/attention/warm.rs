//! Compiling a call's pipelines ahead of its first use.

use super::{Attention, Problem, Tuning};
use crate::context::Context;
use crate::error::Result;
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

impl Attention {
    /// Compiles (and runs once, so that drivers which compile at the first dispatch do so) the
    /// pipelines a call of `problem` in `dtype` with `opts` will use, without allocating its
    /// tensors: the same tile, kernel variant and options on a tiny stand-in problem. A later call
    /// of that shape class finds every pipeline in the context's cache (and, where the device has
    /// `PIPELINE_CACHE` or the driver caches shaders on disk, later processes start warm too).
    ///
    /// Tensor-valued options (`bias`, `mask`, `key_lengths`) only need to be present: stand-ins of
    /// the tiny shape are used in their place. `out` is ignored. Native only: in the browser use
    /// [`Attention::warm_up_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn warm_up(ctx: &Context, problem: &Problem, dtype: DType, opts: &AttentionOptions) -> Result<()> {
        Self::submit_stand_in(ctx, problem, dtype, opts)?;
        ctx.wait()
    }

    /// [`Attention::warm_up`] without blocking.
    pub async fn warm_up_async(ctx: &Context, problem: &Problem, dtype: DType, opts: &AttentionOptions) -> Result<()> {
        Self::submit_stand_in(ctx, problem, dtype, opts)?;
        ctx.wait_async().await
    }

    /// Submits the stand-in call of [`Attention::warm_up`].
    fn submit_stand_in(ctx: &Context, problem: &Problem, dtype: DType, opts: &AttentionOptions) -> Result<()> {
        let p = problem;
        // The path is chosen on the real problem: the stand-in's shorter Lq must not change it.
        let kernel = match opts.kernel {
            KernelChoice::Auto if opts.return_weights => KernelChoice::Staged,
            KernelChoice::Auto if super::decode::auto_prefers_shape(p) => KernelChoice::Decode,
            KernelChoice::Auto => KernelChoice::Fused,
            other => other,
        };
        let tuning = match kernel {
            KernelChoice::Decode => {
                let cfg = crate::tune::decode_config(ctx, p, dtype, opts)?;
                Tuning {
                    decode: Some(crate::kernels::DecodeConfig {
                        rows: cfg.rows_for(p),
                        ..cfg
                    }),
                    ..Default::default()
                }
            }
            _ => Tuning {
                flash: Some(crate::tune::flash_config(ctx, p, dtype, opts)?),
                ..Default::default()
            },
        };
        let stand_in = StandIn::new(ctx, p, dtype, opts)?;
        let stand_in_opts = AttentionOptions {
            kernel,
            ..stand_in.opts.clone()
        };
        let [q, k, v] = &stand_in.qkv;
        Self::with_tuning(ctx, q, k, v, &stand_in_opts, &tuning)?.submit()?;
        Ok(())
    }
}

/// A tiny call of the same shape class as `problem` (at most 4 query rows and keys, one KV
/// head and its query heads): zero Q, K, V and stand-ins of the tensor-valued options.
pub(crate) struct StandIn {
    pub qkv: [Tensor; 3],
    /// `opts` with `bias`, `mask` and `key_lengths` replaced by stand-ins and no `out`.
    pub opts: AttentionOptions,
}

impl StandIn {
    pub fn new(ctx: &Context, p: &Problem, dtype: DType, opts: &AttentionOptions) -> Result<Self> {
        let (lq, lk) = (p.lq.clamp(1, 4), p.lk.clamp(1, 4));
        let group = (p.hq / p.hkv.max(1)).max(1);
        let zeros = |shape: &[usize], dtype| Tensor::zeros(ctx, shape, dtype);
        let qkv = [
            zeros(&[1, group, lq, p.dk], dtype)?,
            zeros(&[1, 1, lk, p.dk], dtype)?,
            zeros(&[1, 1, lk, p.dv], dtype)?,
        ];
        let opts = AttentionOptions {
            bias: opts.bias.as_ref().map(|_| zeros(&[1, 1, lq, lk], dtype)).transpose()?,
            mask: match &opts.mask {
                Some(_) => Some(Tensor::from_slice(ctx, &vec![true; lq * lk], &[1, 1, lq, lk])?),
                None => None,
            },
            key_lengths: match &opts.key_lengths {
                Some(_) => Some(Tensor::from_slice(ctx, &[lk as u32], &[1])?),
                None => None,
            },
            out: None,
            ..opts.clone()
        };
        Ok(Self { qkv, opts })
    }
}
