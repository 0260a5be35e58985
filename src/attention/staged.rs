//! The staged path: scores (QKᵀ, the naive additive scores, or given scores) → masked softmax →
//! P·V, over chunks of (b, h) pairs whose score matrices fit one storage binding. With
//! `return_weights`, P is kept (the scratch itself when one chunk holds every head, a copy per
//! chunk otherwise).

use super::naive_additive::NaiveAdditive;
use super::params::base_params;
use super::plan::{storage_buffer, PlanInputs};
use super::{Attention, AttentionOutput, Problem};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::gemm_tile::StagedGemm;
use crate::kernels::{self, BoundBuffer, GemmTile, Params, Step};
use crate::options::KernelChoice;
use crate::tensor::{DType, Tensor};

/// How the score matrix [B·Hq, Lq, Lk] is split: `per_chunk` (b, h) pairs at a time, each pair
/// `per_head` bytes.
#[derive(Debug, Clone, Copy)]
struct ScoreChunks {
    total: u64,
    per_head: u64,
    per_chunk: u64,
}

impl ScoreChunks {
    fn new(ctx: &Context, p: &Problem) -> Result<Self> {
        let total = (p.b * p.hq) as u64;
        let per_head = p.lq as u64 * p.lk as u64 * 4;
        let max_bind = ctx.max_binding_size();
        if per_head > max_bind {
            return Err(Error::Limit {
                what: format!(
                    "staged attention score matrix of one head ({}x{} f32; the fused kernel has no such limit)",
                    p.lq, p.lk
                ),
                limit: "max_storage_buffer_binding_size",
                needed: per_head,
                max: max_bind,
            });
        }
        let per_chunk = (max_bind / per_head).min(total).max(1);
        Ok(Self {
            total,
            per_head,
            per_chunk,
        })
    }

    fn count(&self) -> u64 {
        self.total.div_ceil(self.per_chunk)
    }

    /// (first pair, pairs) of every chunk.
    fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.count()).map(|c| {
            let base = c * self.per_chunk;
            (base, self.per_chunk.min(self.total - base))
        })
    }
}

/// Where the scores of a chunk come from.
enum ScoreSource<'a> {
    /// S = scale · Q Kᵀ (`qk_scores`).
    QkT,
    /// The naive additive scores (`additive_hidden` + GEMM).
    Additive(NaiveAdditive),
    /// Precomputed scores, copied in (location-based attention).
    Given(&'a Tensor),
}

/// Everything the steps of one chunk share.
struct StagedRecorder<'a> {
    ctx: &'a Context,
    dtype: DType,
    gemm: GemmTile,
    softmax_workgroup: u32,
    params: Params,
    chunks: ScoreChunks,
    scores: ScoreSource<'a>,
    /// Q, K, V.
    qkv: [BoundBuffer; 3],
    /// Bias, mask and the side buffer (key lengths, local-p centers).
    masks: [BoundBuffer; 3],
    /// The ALiBi slopes uniform.
    alibi: Option<BoundBuffer>,
    out: BoundBuffer,
    lse: BoundBuffer,
    scratch: wgpu::Buffer,
    /// The returned weights when they are not the scratch itself.
    weights_copy: Option<wgpu::Buffer>,
}

impl StagedRecorder<'_> {
    /// Appends the steps of the chunk of `count` pairs from `base`; returns the bytes of the
    /// uniforms it allocated.
    fn record(&self, base: u64, count: u64, steps: &mut Vec<Step>) -> Result<u64> {
        let (ctx, per_head) = (self.ctx, self.chunks.per_head);
        let mut p = self.params;
        p.bh_base = base as u32;
        p.bh_count = count as u32;
        let pb = kernels::params_buffer(ctx, &p);
        let mut allocated = pb.size();
        let gemm = StagedGemm {
            tile: self.gemm,
            dtype: self.dtype,
            p: &p,
            params: &pb,
        };
        let s = BoundBuffer {
            buffer: self.scratch.clone(),
            offset: 0,
            size: count * per_head,
        };
        match &self.scores {
            ScoreSource::Additive(a) => allocated += a.score_steps(ctx, &p, &self.qkv, &s, steps)?,
            ScoreSource::Given(given) => steps.push(Step::Copy {
                src: given.buffer().clone(),
                src_offset: given.offset() + base * per_head,
                dst: self.scratch.clone(),
                dst_offset: 0,
                size: count * per_head,
            }),
            ScoreSource::QkT => steps.push(kernels::qk_scores::step(ctx, &gemm, [&self.qkv[0], &self.qkv[1], &s])?),
        }
        let m = &self.masks;
        steps.push(kernels::masked_softmax::step(
            ctx,
            self.softmax_workgroup,
            self.dtype,
            &p,
            &pb,
            &s,
            &self.lse,
            [&m[0], &m[1], &m[2]],
            self.alibi.as_ref(),
        )?);
        steps.push(kernels::weighted_sum::step(ctx, &gemm, [&s, &self.qkv[2], &self.out])?);
        if let Some(w) = &self.weights_copy {
            steps.push(Step::Copy {
                src: self.scratch.clone(),
                src_offset: 0,
                dst: w.clone(),
                dst_offset: base * per_head,
                size: count * per_head,
            });
        }
        Ok(allocated)
    }
}

impl Attention {
    pub(super) fn plan_staged(ctx: &Context, inputs: PlanInputs) -> Result<Self> {
        let PlanInputs {
            problem,
            q,
            k,
            v,
            opts,
            extras,
            tuning,
        } = inputs;
        if let Some(e) = kernels::policy::staged_over_budget(ctx, problem.lk) {
            return Err(e);
        }
        let mut params = base_params(&problem, opts);
        let (qkv, [bias, mask], side) = Self::bind_inputs(ctx, &mut params, q, k, v, opts, extras)?;
        let scores = match (&extras.score_vector, &extras.scores) {
            (Some(sv), _) => ScoreSource::Additive(NaiveAdditive::new(ctx, &problem, q.dtype(), sv)?),
            (None, Some(given)) => ScoreSource::Given(given),
            (None, None) => ScoreSource::QkT,
        };
        let (out, lse) = Self::outputs(ctx, &problem, q.dtype(), opts)?;
        let (ob, oo) = kernels::bind_tensor(ctx, &out, "out")?;
        params.o = kernels::strides_of(&out, oo);
        let lse_b = match &lse {
            Some(t) => BoundBuffer::whole(t.buffer()),
            None => BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?),
        };

        let chunks = ScoreChunks::new(ctx, &problem)?;
        let weights = match opts.return_weights {
            true => Some(Tensor::zeros(
                ctx,
                &[problem.b, problem.hq, problem.lq, problem.lk],
                DType::F32,
            )?),
            false => None,
        };
        // One chunk with weights requested: P is computed in place in the returned tensor.
        let (scratch, weights_copy) = match (&weights, chunks.count()) {
            (Some(w), 1) => (w.buffer().clone(), None),
            (w, _) => (
                storage_buffer(ctx, "wgpu-attention scores", chunks.per_chunk * chunks.per_head)?,
                w.as_ref().map(|w| w.buffer().clone()),
            ),
        };
        let mut allocated = Self::output_bytes(opts, &out, &lse) + 16;
        allocated += weights.as_ref().map_or(0, |w| w.buffer().size());
        if let ScoreSource::Additive(a) = &scores {
            allocated += a.hidden.size;
        }
        if weights.is_none() || chunks.count() > 1 {
            allocated += scratch.size();
        }
        let recorder = StagedRecorder {
            ctx,
            dtype: q.dtype(),
            gemm: tuning.gemm.unwrap_or_default(),
            softmax_workgroup: tuning.softmax_workgroup.unwrap_or(
                kernels::masked_softmax::DEFAULT_WORKGROUP.min(ctx.limits().max_compute_invocations_per_workgroup),
            ),
            params,
            chunks,
            scores,
            qkv,
            masks: [bias, mask, side.buffer],
            alibi: Self::alibi_uniform(ctx, opts),
            out: ob,
            lse: lse_b,
            scratch,
            weights_copy,
        };
        allocated += side.bytes;
        let mut steps: Vec<Step> = side.gather.into_iter().collect();
        for (base, count) in chunks.ranges() {
            allocated += recorder.record(base, count, &mut steps)?;
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
                design: None,
                design_note: None,
            },
            causal: opts.causal.is_some(),
            allocated,
            splits: None,
        })
    }
}
