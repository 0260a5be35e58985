//! The decode path (flash-decoding): `flash_decode` writes one partial state (O_s, LSE_s) per
//! (row, key split) into scratch, then `decode_merge` combines the splits of every row into O
//! (the caller's `out` with its strides, or a new tensor) and the LSE.

use super::params::base_params;
use super::plan::{storage_buffer, PlanInputs};
use super::{Attention, AttentionOutput, Extras, Problem};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::flash_decode::{self, DecodeExtras, DecodeParams, MergeParams, PartEntry};
use crate::kernels::{self, BoundBuffer, PageParams, Params};
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
    // Q, K, V and O are bound per dispatch, a window of its batches; bias, mask, block table
    // (and paged K/V) whole.
    let max = ctx.limits().max_storage_buffer_binding_size;
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let (windowed, whole) = operands(q, k, v, opts);
    if batches_per_dispatch(ctx, p, &windowed) == 0
        || whole
            .iter()
            .flatten()
            .any(|t| t.end_byte() - t.offset() / align * align > max)
    {
        return Some(
            "an operand (one batch of Q, K, V, O or the split scratch; bias, mask or paged K/V whole) exceeds one storage binding; the fused kernel chunks by heads"
                .into(),
        );
    }
    None
}

/// The operands bound as a window of each dispatch's batches (Q, O, and K/V unless paged) and
/// those bound whole (bias, mask, block table, paged K/V).
#[allow(clippy::type_complexity, reason = "two fixed lists of optional operands")]
fn operands<'a>(
    q: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    opts: &'a AttentionOptions,
) -> ([Option<&'a Tensor>; 4], [Option<&'a Tensor>; 5]) {
    let paged = opts.block_table.is_some();
    let kv = |t| (!paged).then_some(t);
    let kv_whole = |t| paged.then_some(t);
    (
        [Some(q), kv(k), kv(v), opts.out.as_ref()],
        [
            opts.bias.as_ref(),
            opts.mask.as_ref(),
            opts.block_table.as_ref(),
            kv_whole(k),
            kv_whole(v),
        ],
    )
}

/// The bindings of a paged K/V layout.
struct PageBindings {
    k: BoundBuffer,
    v: BoundBuffer,
    table: BoundBuffer,
    uniform: BoundBuffer,
}

/// Binds pages K [num_pages, P, Hkv, Dk], V [num_pages, P, Hkv, Dv] and the block table whole;
/// K/V strides go into `params` as (page, head, row within the page).
fn bind_pages(ctx: &Context, params: &mut Params, k: &Tensor, v: &Tensor, table: &Tensor) -> Result<PageBindings> {
    let (kb, ko) = kernels::bind_tensor(ctx, k, "k")?;
    let (vb, vo) = kernels::bind_tensor(ctx, v, "v")?;
    let (tb, to) = kernels::bind_tensor(ctx, table, "block_table")?;
    let page_strides = |t: &Tensor, offset: u32| {
        let st = t.strides();
        kernels::Strides {
            offset,
            batch: st[0] as u32,
            head: st[2] as u32,
            row: st[1] as u32,
        }
    };
    params.k = page_strides(k, ko);
    params.v = page_strides(v, vo);
    let size = k.shape()[1] as u32;
    let pages = PageParams {
        size,
        count: k.shape()[0] as u32,
        table_off: to,
        table_stride: table.strides()[0] as u32,
        shift: if size.is_power_of_two() {
            size.trailing_zeros()
        } else {
            32
        },
        _pad: [0; 3],
    };
    Ok(PageBindings {
        k: kb,
        v: vb,
        table: tb,
        uniform: BoundBuffer::whole(&kernels::params_buffer(ctx, &pages)),
    })
}

/// Bytes `[from, to)` of `t` that batches `[b0, b1)` reach (the whole tensor when it has no
/// batch axis of its own).
fn batch_window(t: &Tensor, b0: usize, b1: usize) -> (u64, u64) {
    let (sh, st) = (t.shape(), t.strides());
    if sh.len() != 4 || sh[0] <= 1 || sh.contains(&0) {
        return (t.offset(), t.end_byte());
    }
    let size = t.dtype().size() as u64;
    let inner: u64 = (1..4).map(|a| (sh[a] as u64 - 1) * st[a] as u64).sum::<u64>() + 1;
    let from = t.offset() + (b0 * st[0]) as u64 * size;
    (from, from + ((b1 - b0 - 1) as u64 * st[0] as u64 + inner) * size)
}

/// The most batches one dispatch can cover with every operand window (and the scratch of one
/// split) within one storage binding; 0 when a single batch does not fit.
fn batches_per_dispatch(ctx: &Context, p: &Problem, operands: &[Option<&Tensor>]) -> usize {
    let max = ctx.limits().max_storage_buffer_binding_size;
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    // A binding starts at its window's first byte rounded down to the storage alignment: the
    // slack is the same for every dispatch when the batch stride is a multiple of the alignment,
    // else at most align − 1 bytes.
    let slack = |t: &Tensor| match (t.strides()[0] * t.dtype().size()) as u64 % align {
        0 => t.offset() % align,
        _ => align - 1,
    };
    let fits = |nb: usize| {
        let scratch = (nb * p.hq * p.lq) as u64 * (p.dv.div_ceil(4) as u64 + 1) * 16;
        scratch <= max
            && operands.iter().flatten().all(|t| {
                let (from, to) = batch_window(t, 0, nb);
                to - from + slack(t) <= max
            })
    };
    // Window sizes grow with nb: the largest nb that fits, by bisection.
    if !fits(1) {
        return 0;
    }
    let (mut lo, mut hi) = (1, p.b.max(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
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
    pub(super) fn plan_decode(ctx: &Context, inputs: PlanInputs) -> Result<Self> {
        let PlanInputs {
            problem,
            q,
            k,
            v,
            opts,
            extras,
            tuning,
        } = inputs;
        let p = &problem;
        if let Some(why) = unsupported(ctx, p, [q, k, v], opts, extras) {
            return Err(Error::Unsupported(why));
        }
        let cfg = match tuning.decode {
            Some(c) => c,
            None => crate::tune::decode_config(ctx, p, q.dtype(), opts)?,
        };
        cfg.check(ctx, p.dk as u32, p.dv as u32)?;
        let rows = cfg.rows_for(p);
        let (out, lse) = Self::outputs(ctx, p, q.dtype(), opts)?;
        let (mut windowed, _) = operands(q, k, v, opts);
        windowed[3] = Some(&out);
        let per_dispatch = batches_per_dispatch(ctx, p, &windowed);
        if per_dispatch == 0 {
            return Err(Error::Unsupported(
                "one batch of an operand exceeds one storage binding; use KernelChoice::Fused".into(),
            ));
        }
        // As many splits as asked for, as far as the partial states of a dispatch fit one binding.
        let max = ctx.limits().max_storage_buffer_binding_size;
        let one_split = (per_dispatch * p.hq * p.lq) as u64 * (p.dv.div_ceil(4) as u64 + 1) * 16;
        // Splits fill the machine with the batches of one dispatch (dispatches run in order).
        let dispatch = Problem {
            b: per_dispatch,
            ..problem
        };
        let splits = cfg
            .splits_for(ctx, &dispatch)
            .min((max / one_split).clamp(1, u32::MAX as u64) as u32);
        if splits < cfg.min_splits(ctx, p) {
            return Err(Error::Limit {
                what: format!("{} keys in {splits} splits", p.lk),
                limit: "keys per split (the partial states of more splits exceed one storage binding)",
                needed: cfg.min_splits(ctx, p) as u64,
                max: splits as u64,
            });
        }
        let packed = flash_decode::packed_rows(p);
        let s = splits;

        // Scratch of one dispatch, reused by every dispatch (they run in order), in one binding:
        // partial O [b, Hq, Lq, S, ⌈Dv/4⌉·4] (f32), then from word `lse_words` the partial LSE
        // [b, Hq, Lq, S], four words each (a whole vec4 per store).
        let dv4 = p.dv.div_ceil(4) as u64 * 4;
        let part_rows = (per_dispatch * p.hq * p.lq) as u64 * s as u64;
        let lse_words = part_rows * dv4;
        let parts = storage_buffer(
            ctx,
            "wgpu-attention decode partial states",
            (lse_words + 4 * part_rows) * 4,
        )?;
        let parts_b = BoundBuffer::whole(&parts);
        // Part s of row (b, h, i) is scratch row ((b·Hq + h)·Lq + i)·S + s, b within the dispatch.
        let (row_o, row_lse) = (s * dv4 as u32, s);
        let table: Vec<PartEntry> = (0..s)
            .map(|i| PartEntry {
                o: [i * dv4 as u32, row_o * (p.hq * p.lq) as u32, row_o * p.lq as u32, row_o],
                lse: [
                    lse_words as u32 + 4 * i,
                    4 * row_lse * (p.hq * p.lq) as u32,
                    4 * row_lse * p.lq as u32,
                    4 * row_lse,
                ],
            })
            .collect();
        let table_buf = storage_buffer(ctx, "wgpu-attention decode part table", (table.len() * 32) as u64)?;
        ctx.queue().write_buffer(&table_buf, 0, bytemuck::cast_slice(&table));
        let table_b = BoundBuffer::whole(&table_buf);
        let (lse_b, lse_off) = match &lse {
            Some(t) => kernels::bind_tensor(ctx, t, "lse")?,
            None => (
                BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?),
                0,
            ),
        };

        let mut base = base_params(p, opts);
        base.bh_count = (p.b * p.hq) as u32;
        // Bias, mask and key lengths are bound whole (indexed with the global batch).
        let [bias, mask, lens] = Self::bind_masks(ctx, &mut base, opts)?;
        let alibi = Self::alibi_uniform(ctx, opts);
        // Paged K/V: pages, block table and page uniform bound whole, shared by every dispatch.
        let paged = match &opts.block_table {
            Some(table) => Some(bind_pages(ctx, &mut base, k, v, table)?),
            None => None,
        };
        // A window of `t` for batches [b0, b1) and the element offset of batch b0 in it.
        let window = |t: &Tensor, name: &'static str, b0: usize, b1: usize| -> Result<(BoundBuffer, u32)> {
            t.check_device(name, ctx)?;
            if !t.buffer().usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(Error::BufferUsage {
                    name,
                    needed: wgpu::BufferUsages::STORAGE,
                    has: t.buffer().usage(),
                });
            }
            let (from, to) = batch_window(t, b0, b1);
            let (start, size) = kernels::binding_window(ctx, t.buffer(), from, to);
            if size > max {
                return Err(Error::Limit {
                    what: format!("binding {name} ({size} bytes)"),
                    limit: "max_storage_buffer_binding_size",
                    needed: size,
                    max,
                });
            }
            let elem = ((from - start) / t.dtype().size() as u64) as u32;
            Ok((
                BoundBuffer {
                    buffer: t.buffer().clone(),
                    offset: start,
                    size,
                },
                elem,
            ))
        };
        let mut steps = Vec::new();
        let mut uniforms = 0;
        for b0 in (0..p.b).step_by(per_dispatch) {
            let b1 = (b0 + per_dispatch).min(p.b);
            let mut params = base;
            let (qb, qo) = window(q, "q", b0, b1)?;
            params.q = kernels::strides_of(q, qo);
            let (kb, vb) = match &paged {
                Some(pages) => (pages.k.clone(), pages.v.clone()),
                None => {
                    let (kb, ko) = window(k, "k", b0, b1)?;
                    let (vb, vo) = window(v, "v", b0, b1)?;
                    params.k = kernels::strides_of(k, ko);
                    params.v = kernels::strides_of(v, vo);
                    (kb, vb)
                }
            };
            let d = DecodeParams {
                splits: s,
                packed_rows: packed,
                row_blocks: packed.div_ceil(rows),
                batch_base: b0 as u32,
                batch_count: (b1 - b0) as u32,
                lse_base: (lse_words / 4) as u32,
                _pad: [0; 2],
            };
            let params_buf = kernels::params_buffer(ctx, &params);
            let decode_buf = kernels::params_buffer(ctx, &d);
            steps.push(flash_decode::decode_step(
                ctx,
                cfg,
                rows,
                q.dtype(),
                &params,
                &params_buf,
                (&d, &decode_buf),
                [&qb, &kb, &vb],
                &parts_b,
                [&bias, &mask, &lens],
                &DecodeExtras {
                    alibi: alibi.as_ref(),
                    pages: paged.as_ref().map(|g| (&g.table, &g.uniform)),
                },
            )?);
            let (ob, oo) = window(&out, "out", b0, b1)?;
            let os = kernels::strides_of(&out, oo);
            let m = MergeParams {
                batch: (b1 - b0) as u32,
                heads: p.hq as u32,
                len: p.lq as u32,
                dim: p.dv as u32,
                parts: s,
                flags: lse.is_some() as u32,
                o_off: os.offset,
                o_sb: os.batch,
                o_sh: os.head,
                o_sl: os.row,
                lse_off: lse_off + (b0 * p.hq * p.lq) as u32,
                _pad: 0,
            };
            let merge_buf = kernels::params_buffer(ctx, &m);
            steps.push(flash_decode::merge_step(
                ctx,
                q.dtype(),
                false,
                &m,
                &merge_buf,
                [&parts_b, &parts_b, &table_b],
                &ob,
                &lse_b,
            )?);
            uniforms += params_buf.size() + decode_buf.size() + merge_buf.size();
        }

        let allocated = Self::output_bytes(opts, &out, &lse) + parts.size() + table_buf.size() + uniforms;
        Ok(Self {
            ctx: ctx.clone(),
            problem,
            steps,
            output: AttentionOutput {
                out,
                lse,
                weights: None,
                kernel: KernelChoice::Decode,
                design: None,
                design_note: None,
            },
            causal: opts.causal.is_some(),
            allocated,
            splits: Some(splits),
        })
    }
}
