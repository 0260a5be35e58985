//! The decode path (flash-decoding): `flash_decode` writes one partial state (O_s, LSE_s) per
//! (row, key split) into scratch, then `decode_merge` combines the splits of every row into O
//! (the caller's `out` with its strides, or a new tensor) and the LSE.

use super::params::base_params;
use super::plan::storage_buffer;
use super::{Attention, AttentionOutput, Extras, Problem, Tuning};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::flash_decode::{self, DecodeConfig, DecodeParams, MergeParams, PartEntry};
use crate::kernels::{self, BoundBuffer};
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::Tensor;

/// Packed rows (Hq / Hkv · Lq) up to which `KernelChoice::Auto` takes the decode path.
pub const AUTO_MAX_PACKED_ROWS: usize = 64;
/// Query rows up to which `KernelChoice::Auto` takes the decode path.
pub const AUTO_MAX_LQ: usize = 16;

/// Why the decode path cannot run this call, if it cannot (checked before planning, so that
/// `Auto` falls back to the fused kernel).
pub(crate) fn unsupported(
    ctx: &Context,
    p: &Problem,
    [q, k, v]: [&Tensor; 3],
    opts: &AttentionOptions,
    extras: &Extras,
) -> Option<String> {
    if extras.score_vector.is_some() || extras.local.is_some() || extras.scores.is_some() {
        return Some("the decode kernel computes dot-product scores without local-p windows".into());
    }
    if opts.return_weights {
        return Some("the decode kernel never materializes the weights; use KernelChoice::Staged".into());
    }
    if p.dk.max(p.dv) > flash_decode::MAX_HEAD_DIM as usize {
        return Some(format!(
            "the decode kernel keeps a head in registers: head dims up to {} (got Dk={}, Dv={}); use KernelChoice::Staged",
            flash_decode::MAX_HEAD_DIM,
            p.dk,
            p.dv
        ));
    }
    let max = ctx.limits().max_storage_buffer_binding_size;
    let operands = [
        Some(q),
        Some(k),
        Some(v),
        opts.out.as_ref(),
        opts.bias.as_ref(),
        opts.mask.as_ref(),
    ];
    // A binding starts at the offset rounded down to the storage alignment; the partial O of one
    // split per row must fit one binding too.
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let one_split = (p.b * p.hq * p.lq) as u64 * p.dv.div_ceil(4) as u64 * 16;
    if one_split > max
        || operands
            .iter()
            .flatten()
            .any(|t| t.end_byte() - t.offset() + align > max)
    {
        return Some(
            "an operand exceeds one storage binding: the decode kernel binds every tensor whole (the fused kernel chunks them)"
                .into(),
        );
    }
    None
}

/// Whether `Auto` picks the decode path: few packed rows, no weights, everything supported.
pub(crate) fn auto_prefers(
    ctx: &Context,
    p: &Problem,
    qkv: [&Tensor; 3],
    opts: &AttentionOptions,
    extras: &Extras,
) -> bool {
    auto_prefers_shape(p) && unsupported(ctx, p, qkv, opts, extras).is_none()
}

/// The shape part of [`auto_prefers`]: few query rows and packed rows, head dims that fit.
pub(crate) fn auto_prefers_shape(p: &Problem) -> bool {
    let packed = flash_decode::packed_rows(p) as usize;
    p.lq <= AUTO_MAX_LQ && packed <= AUTO_MAX_PACKED_ROWS && p.dk.max(p.dv) <= flash_decode::MAX_HEAD_DIM as usize
}

impl Attention {
    #[allow(clippy::too_many_arguments, reason = "internal planner of the public constructors")]
    pub(super) fn plan_decode(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        opts: &AttentionOptions,
        extras: &Extras,
        tuning: &Tuning,
    ) -> Result<Self> {
        let p = &problem;
        if let Some(why) = unsupported(ctx, p, [q, k, v], opts, extras) {
            return Err(Error::Unsupported(why));
        }
        let cfg = match tuning.decode {
            Some(c) => c,
            None => DecodeConfig::default_for(ctx, p)?,
        };
        cfg.check(ctx, p.dk as u32, p.dv as u32)?;
        let rows = cfg.rows_for(p);
        // As many splits as asked for, as far as the partial O fits one storage binding.
        let max = ctx.limits().max_storage_buffer_binding_size;
        let one_split = (p.b * p.hq * p.lq) as u64 * p.dv.div_ceil(4) as u64 * 16;
        let splits = cfg
            .splits_for(ctx, p)
            .min((max / one_split).clamp(1, u32::MAX as u64) as u32);
        let packed = flash_decode::packed_rows(p);
        let d = DecodeParams {
            splits,
            split_keys: (p.lk.max(1) as u32).div_ceil(splits),
            packed_rows: packed,
            row_blocks: packed.div_ceil(rows),
        };

        let (out, lse) = Self::outputs(ctx, p, q.dtype(), opts)?;
        let mut params = base_params(p, opts);
        params.bh_count = (p.b * p.hq) as u32;
        let ([qb, kb, vb], [bias, mask, lens, _]) = Self::bind_inputs(ctx, &mut params, q, k, v, opts, extras)?;

        // Scratch: partial LSE [B, Hq, Lq, S] and partial O [B, Hq, Lq, S, ⌈Dv/4⌉·4] (f32).
        let dv4 = p.dv.div_ceil(4) as u64 * 4;
        let part_rows = (p.b * p.hq * p.lq) as u64 * splits as u64;
        let lse_bytes = part_rows * 4;
        let o_bytes = part_rows * dv4 * 4;
        if o_bytes > max {
            return Err(Error::Limit {
                what: format!("decode scratch ({o_bytes} bytes)"),
                limit: "max_storage_buffer_binding_size",
                needed: o_bytes,
                max,
            });
        }
        let part_lse = storage_buffer(ctx, "wgpu-attention decode partial lse", lse_bytes)?;
        let part_o = storage_buffer(ctx, "wgpu-attention decode partial o", o_bytes)?;

        let params_buf = kernels::params_buffer(ctx, &params);
        let decode_buf = kernels::params_buffer(ctx, &d);
        let (part_lse_b, part_o_b) = (BoundBuffer::whole(&part_lse), BoundBuffer::whole(&part_o));
        let decode = flash_decode::decode_step(
            ctx,
            cfg,
            rows,
            q.dtype(),
            &params,
            &params_buf,
            (&d, &decode_buf),
            [&qb, &kb, &vb],
            [&part_lse_b, &part_o_b],
            [&bias, &mask, &lens],
        )?;

        // Part s of row (b, h, i) is scratch row ((b·Hq + h)·Lq + i)·S + s.
        let s = splits;
        let (row_o, row_lse) = (s * dv4 as u32, s);
        let table: Vec<PartEntry> = (0..s)
            .map(|i| PartEntry {
                o: [i * dv4 as u32, row_o * (p.hq * p.lq) as u32, row_o * p.lq as u32, row_o],
                lse: [i, row_lse * (p.hq * p.lq) as u32, row_lse * p.lq as u32, row_lse],
            })
            .collect();
        let table_buf = storage_buffer(ctx, "wgpu-attention decode part table", (table.len() * 32) as u64)?;
        ctx.queue().write_buffer(&table_buf, 0, bytemuck::cast_slice(&table));
        let (ob, oo) = kernels::bind_tensor(ctx, &out, "out")?;
        let os = kernels::strides_of(&out, oo);
        let (lse_b, lse_off) = match &lse {
            Some(t) => kernels::bind_tensor(ctx, t, "lse")?,
            None => (
                BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?),
                0,
            ),
        };
        let m = MergeParams {
            batch: p.b as u32,
            heads: p.hq as u32,
            len: p.lq as u32,
            dim: p.dv as u32,
            parts: s,
            flags: lse.is_some() as u32,
            o_off: os.offset,
            o_sb: os.batch,
            o_sh: os.head,
            o_sl: os.row,
            lse_off,
            _pad: 0,
        };
        let merge_buf = kernels::params_buffer(ctx, &m);
        let merge = flash_decode::merge_step(
            ctx,
            q.dtype(),
            false,
            &m,
            &merge_buf,
            [&part_o_b, &part_lse_b, &BoundBuffer::whole(&table_buf)],
            &ob,
            &lse_b,
        )?;

        let allocated = Self::output_bytes(opts, &out, &lse)
            + part_lse.size()
            + part_o.size()
            + table_buf.size()
            + params_buf.size()
            + decode_buf.size()
            + merge_buf.size();
        Ok(Self {
            ctx: ctx.clone(),
            problem,
            steps: vec![decode, merge],
            output: AttentionOutput {
                out,
                lse,
                weights: None,
                kernel: KernelChoice::Decode,
            },
            causal: opts.causal.is_some(),
            allocated,
        })
    }
}
