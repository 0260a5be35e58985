//! Problems with an empty axis (see [`crate::attention()`]):
//! - no query rows (B = 0 or Lq = 0): empty outputs, nothing recorded;
//! - no keys (Lk = 0): every row is fully masked, so O = 0 and LSE = −∞. It is planned as one
//!   zero key that key padding (length 0 for every batch) masks for every row, so the chosen
//!   kernel runs its fully-masked-row path and writes O (any strides, the caller's `out`
//!   included) and LSE exactly as it does for masked rows. Bias and masks, empty along Lk, drop
//!   out; so do the options that only shape scores or weights.

use super::plan::PlanInputs;
use super::{Attention, AttentionOutput, Extras, Problem, Tuning};
use crate::context::Context;
use crate::error::Result;
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

impl Attention {
    /// B = 0 or Lq = 0: O, LSE and P with their logical shapes and no elements; no steps.
    pub(super) fn without_rows(
        ctx: &Context,
        problem: Problem,
        dtype: DType,
        opts: &AttentionOptions,
        kernel: KernelChoice,
    ) -> Result<Self> {
        let p = problem;
        let (out, lse) = Self::outputs(ctx, &p, dtype, opts)?;
        let weights = match opts.return_weights {
            true => Some(Tensor::zeros(ctx, &[p.b, p.hq, p.lq, p.lk], DType::F32)?),
            false => None,
        };
        let allocated = Self::output_bytes(opts, &out, &lse) + weights.as_ref().map_or(0, |w| w.buffer().size());
        Ok(Self {
            ctx: ctx.clone(),
            problem,
            steps: Vec::new(),
            output: AttentionOutput {
                out,
                lse,
                weights,
                kernel,
                design: None,
                design_note: None,
            },
            causal: opts.causal.is_some(),
            allocated,
            splits: None,
        })
    }

    /// Lk = 0 (with B, Lq ≥ 1): the call on one key that every row masks.
    pub(super) fn without_keys(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
        tuning: &Tuning,
        kernel: KernelChoice,
    ) -> Result<Self> {
        let p = problem;
        // One zero row serves as the only key and value of every (b, kv head).
        let row = Tensor::zeros(ctx, &[p.dk.max(p.dv)], q.dtype())?;
        let k = row.view(0, &[p.b, p.hkv, 1, p.dk], &[0, 0, p.dk, 1])?;
        let v = row.view(0, &[p.b, p.hkv, 1, p.dv], &[0, 0, p.dv, 1])?;
        let no_keys = Tensor::zeros(ctx, &[p.b], DType::U32)?;
        let masked = AttentionOptions {
            key_lengths: Some(no_keys.clone()),
            return_lse: opts.return_lse,
            return_weights: opts.return_weights,
            kernel,
            design: opts.design,
            out: opts.out.clone(),
            ..Default::default()
        };
        let extras = Extras {
            score_vector: extras.score_vector.clone(),
            local: None,
            scores: None,
        };
        let one_key = Problem { lk: 1, ..p };
        let inputs = PlanInputs {
            problem: one_key,
            q,
            k: &k,
            v: &v,
            opts: &masked,
            extras: &extras,
            tuning,
        };
        let mut call = Self::record(ctx, kernel, inputs)?;
        call.problem = p;
        call.causal = opts.causal.is_some();
        call.allocated += row.buffer().size() + no_keys.buffer().size();
        if let Some(w) = &mut call.output.weights {
            // P of the one stand-in key is not part of the result: P is [B, Hq, Lq, 0].
            *w = Tensor::zeros(ctx, &[p.b, p.hq, p.lq, 0], DType::F32)?;
        }
        Ok(call)
    }
}
