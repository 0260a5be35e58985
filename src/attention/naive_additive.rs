//! The naive additive (Bahdanau) scores of the staged path: the baseline the fused additive
//! kernel is measured against.

use super::plan::storage_buffer;
use super::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, BoundBuffer, GemmTile, Params, Step};
use crate::tensor::{DType, Tensor};

/// The naive additive scores of the staged path (the baseline of the fused additive kernel), as a
/// framework computes them: for blocks of query rows, T = tanh(Q'ᵢ + K'ⱼ) materialized as
/// [rows, Lk, Da] (`additive_hidden`), then S = T v with the GEMM kernel.
pub(super) struct NaiveAdditive {
    pub(super) hidden: BoundBuffer,
    score_vector: (BoundBuffer, u32),
    rows_per_block: u32,
}

impl NaiveAdditive {
    pub(super) fn new(ctx: &Context, p: &Problem, dtype: DType, score_vector: &Tensor) -> Result<Self> {
        if dtype != DType::F32 {
            return Err(Error::Unsupported(
                "the naive additive path is f32 only (its f32 score GEMM reads the hidden tensor); use the fused path for f16".into(),
            ));
        }
        let row_bytes = p.lk as u64 * p.dk as u64 * 4;
        let max_bind = ctx.max_binding_size();
        if row_bytes > max_bind {
            return Err(Error::Limit {
                what: format!("naive additive hidden tensor of one query row ({}x{} f32)", p.lk, p.dk),
                limit: "max_storage_buffer_binding_size",
                needed: row_bytes,
                max: max_bind,
            });
        }
        let rows_per_block = (max_bind / row_bytes).min(p.lq as u64) as u32;
        let size = rows_per_block as u64 * row_bytes;
        let hidden = storage_buffer(ctx, "wgpu-attention additive hidden", size)?;
        Ok(Self {
            hidden: BoundBuffer::whole(&hidden),
            score_vector: kernels::bind_tensor(ctx, score_vector, "score_vector")?,
            rows_per_block,
        })
    }

    /// Steps writing the scores of the chunk `p` (its (b, h) pairs) into `scores`; returns the
    /// bytes of uniforms allocated.
    pub(super) fn score_steps(
        &self,
        ctx: &Context,
        p: &Params,
        qkv: &[BoundBuffer; 3],
        scores: &BoundBuffer,
        steps: &mut Vec<Step>,
    ) -> Result<u64> {
        use kernels::gemm::{GemmParams, MatrixStrides};
        let tile = GemmTile {
            wg_x: 1,
            wg_y: 64,
            tile_k: 16,
        };
        let mut allocated = 0;
        for bh in p.bh_base..p.bh_base + p.bh_count {
            for row_base in (0..p.len_q).step_by(self.rows_per_block as usize) {
                let rows = self.rows_per_block.min(p.len_q - row_base);
                let mut hp = *p;
                hp.bh_base = bh;
                hp.bh_count = 1;
                hp.row_base = row_base;
                hp.row_count = rows;
                let hb = kernels::params_buffer(ctx, &hp);
                steps.push(kernels::additive_hidden::step(
                    ctx,
                    DType::F32,
                    &hp,
                    &hb,
                    &qkv[0],
                    &qkv[1],
                    &self.hidden,
                )?);
                let gp = GemmParams {
                    m: rows * p.len_k,
                    n: 1,
                    k: p.dim_k,
                    batch: 1,
                    inner: 1,
                    alpha: 1.0,
                    post_scale: 1.0,
                    a: MatrixStrides {
                        row: p.dim_k,
                        col: 1,
                        ..Default::default()
                    },
                    b: MatrixStrides {
                        offset: self.score_vector.1,
                        row: 1,
                        ..Default::default()
                    },
                    c: MatrixStrides {
                        offset: ((bh - p.bh_base) * p.len_q + row_base) * p.len_k,
                        row: 1,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let gb = kernels::params_buffer(ctx, &gp);
                allocated += hb.size() + gb.size();
                steps.push(kernels::gemm::step(
                    ctx,
                    tile,
                    DType::F32,
                    &gp,
                    &gb,
                    [&self.hidden, &self.score_vector.0, scores, &self.score_vector.0],
                )?);
            }
        }
        Ok(allocated)
    }
}
