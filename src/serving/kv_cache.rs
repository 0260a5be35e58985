//! The KV cache for token-by-token generation (docs/ATTENTION.md §9): [`KvCache`], its
//! constructors, accessors, query rotation and attention. Appends are in `append`, the paged
//! layout (block table, page pool) in [`super::paged`].
//!
//! [`KvCache`] holds K [B, Hkv, capacity, Dk] and V [B, Hkv, capacity, Dv] (f32 or f16) and the
//! length of every sequence, both in a GPU u32 buffer \[B\] ([`KvCache::seqlens`], what the kernels
//! read) and mirrored on the host ([`KvCache::lengths`], so misuse is refused without a readback).
//!
//! - [`KvCache::append`] writes new rows at each sequence's length and advances the GPU lengths in
//!   the same recorded work (a row-writing dispatch per tensor, then one that adds the row counts):
//!   no host round trip. Sequences may take different row counts ([`AppendOptions::lengths`]) and
//!   the new keys may be rotated on the way in ([`AppendOptions::rope`], positions = the sequence's
//!   length + row index). An append past the capacity is refused before anything is recorded.
//! - [`KvCache::rope_q`] rotates the queries of the same new tokens (call it before their append:
//!   positions are the current lengths + row index).
//! - [`KvCache::attend`] runs attention ([`crate::attention()`]) over the cache with the GPU
//!   lengths as key lengths; bottom-right causal masks and windows are aligned **per sequence**
//!   ([`AttentionOptions::align_to_key_lengths`]): query i of a chunk of Lq new queries of sequence
//!   b sees keys j ≤ i + len_b − Lq.
//!
//! Every operation has an `_encode` form that records into the caller's encoder, so a decode step
//! (rope, append, attend) is one submission. The host lengths advance when an append is recorded:
//! submit that encoder, or resynchronise with [`KvCache::set_lengths`] if it is dropped.
//!
//! ```
//! # fn main() -> Result<(), wgpu_attention::Error> {
//! use wgpu_attention::{Alignment, AttentionOptions, Context, DType, KvCache, Tensor};
//! let ctx = Context::new()?;
//! let (b, hq, hkv, d) = (2, 4, 2, 8);
//! let mut cache = KvCache::new(&ctx, b, hkv, 64, d, d, DType::F32)?;
//! // Prefill: 5 tokens per sequence.
//! let k = Tensor::from_slice(&ctx, &vec![0.1f32; b * hkv * 5 * d], &[b, hkv, 5, d])?;
//! cache.append(&ctx, &k, &k)?;
//! // One decode step: append the new token's K/V, then attend with its query.
//! let k1 = Tensor::from_slice(&ctx, &vec![0.2f32; b * hkv * d], &[b, hkv, 1, d])?;
//! cache.append(&ctx, &k1, &k1)?;
//! let q = Tensor::from_slice(&ctx, &vec![0.3f32; b * hq * d], &[b, hq, 1, d])?;
//! let opts = AttentionOptions { causal: Some(Alignment::BottomRight), ..Default::default() };
//! let o: Vec<f32> = cache.attend(&ctx, &q, &opts)?.out.to_vec(&ctx)?;
//! assert_eq!(cache.lengths(), &[6, 6]);
//! assert_eq!(o.len(), b * hq * d);
//! # Ok(()) }
//! ```

mod append;

pub use append::{AppendOptions, PreparedAppend};

use super::paged::PageTable;
use super::rope::{check_rows_operand, rotate_into_new, rotate_step, Rope};
use crate::attention::{Attention, AttentionOutput};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, Step};
use crate::options::AttentionOptions;
use crate::tensor::{DType, Tensor};

/// The queries' rotary embedding recorded once ([`KvCache::prepare_rope_q`]) and replayed each
/// step with [`KvCache::rope_q_prepared`], always into the same output tensor.
#[derive(Debug)]
pub struct PreparedRope {
    step: Option<Step>,
    out: Tensor,
    rows: usize,
    max_positions: usize,
    cache: Tensor,
}

impl PreparedRope {
    /// The rotated queries (written by every replay).
    pub fn out(&self) -> &Tensor {
        &self.out
    }
}

/// A KV cache, contiguous (K [B, Hkv, capacity, Dk], V [B, Hkv, capacity, Dv]) or paged (K
/// [pages, page_size, Hkv, Dk], V [pages, page_size, Hkv, Dv] and a block table [B,
/// pages_per_seq]), with the length of every sequence (GPU buffer and host mirror). See the
/// [module docs](crate::serving::kv_cache).
///
/// Not `Clone`: two handles appending to the same buffers would each advance their own host
/// mirror. Share it behind a lock, or wrap [`KvCache::k`], [`KvCache::v`] and
/// [`KvCache::seqlens`] for read-only use.
#[derive(Debug)]
pub struct KvCache {
    pub(super) k: Tensor,
    pub(super) v: Tensor,
    pub(super) seqlens: Tensor,
    pub(super) lengths: Vec<u32>,
    pub(super) capacity: usize,
    pub(super) pages: Option<PageTable>,
}

impl KvCache {
    /// An empty cache (every length 0) of `b` sequences, `hkv` key/value heads and `capacity`
    /// rows per sequence, in `dtype` (f32, or f16 with `SHADER_F16`). K and V must each fit one
    /// storage binding.
    pub fn new(
        ctx: &Context,
        b: usize,
        hkv: usize,
        capacity: usize,
        dk: usize,
        dv: usize,
        dtype: DType,
    ) -> Result<Self> {
        check_cache_dtype(ctx, dtype)?;
        let shapes = [
            ("kv cache K", [b, hkv, capacity, dk]),
            ("kv cache V", [b, hkv, capacity, dv]),
        ];
        check_cache_shapes(ctx, &shapes, capacity, dtype)?;
        Ok(Self {
            k: Tensor::zeros(ctx, &shapes[0].1, dtype)?,
            v: Tensor::zeros(ctx, &shapes[1].1, dtype)?,
            seqlens: Tensor::zeros(ctx, &[b], DType::U32)?,
            lengths: vec![0; b],
            capacity,
            pages: None,
        })
    }

    /// Sequences B.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }
    /// Key/value heads Hkv.
    pub fn heads(&self) -> usize {
        self.k.shape()[if self.pages.is_some() { 2 } else { 1 }]
    }
    /// Rows per sequence.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Key head dim Dk.
    pub fn dim_k(&self) -> usize {
        self.k.shape()[3]
    }
    /// Value head dim Dv.
    pub fn dim_v(&self) -> usize {
        self.v.shape()[3]
    }
    /// Storage type of K and V.
    pub fn dtype(&self) -> DType {
        self.k.dtype()
    }
    /// The host mirror of the sequence lengths (as of the last recorded append or
    /// [`KvCache::set_lengths`]).
    pub fn lengths(&self) -> &[u32] {
        &self.lengths
    }
    /// The longest sequence: the key length Lk of [`KvCache::attend`] (masks and bias given to it
    /// have this last axis).
    pub fn max_len(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0) as usize
    }
    /// K [B, Hkv, capacity, Dk] (rows at or past a sequence's length are stale or zero).
    pub fn k(&self) -> &Tensor {
        &self.k
    }
    /// V [B, Hkv, capacity, Dv].
    pub fn v(&self) -> &Tensor {
        &self.v
    }
    /// The sequence lengths on the GPU, u32 \[B\] (usable as [`AttentionOptions::key_lengths`]).
    pub fn seqlens(&self) -> &Tensor {
        &self.seqlens
    }

    /// Views K [B, Hkv, Lk, Dk] and V [B, Hkv, Lk, Dv] of the first Lk = [`KvCache::max_len`]
    /// rows of every sequence (strided: no copy). Contiguous caches only.
    pub fn views(&self) -> Result<(Tensor, Tensor)> {
        if self.pages.is_some() {
            return Err(Error::Unsupported(
                "a paged cache has no [B, Hkv, L, D] view: attend through its block table".into(),
            ));
        }
        self.views_of(self.max_len())
    }

    /// Views of the first `lk` rows of every sequence of a contiguous cache.
    fn views_of(&self, lk: usize) -> Result<(Tensor, Tensor)> {
        let view = |t: &Tensor| {
            let s = t.strides();
            let shape = t.shape();
            t.view(0, &[shape[0], shape[1], lk, shape[3]], s)
        };
        Ok((view(&self.k)?, view(&self.v)?))
    }

    /// Sets every sequence's length (on the GPU through the queue, before the next submission's
    /// work, and in the host mirror). Rows are not touched: shrinking a length drops rows from
    /// attention, growing it exposes whatever the rows hold.
    pub fn set_lengths(&mut self, ctx: &Context, lengths: &[u32]) -> Result<()> {
        self.seqlens.check_device("kv cache", ctx)?;
        if lengths.len() != self.batch() {
            return Err(Error::ShapeMismatch {
                name: "lengths",
                expected: vec![self.batch()],
                got: vec![lengths.len()],
            });
        }
        if let Some((b, &l)) = lengths.iter().enumerate().find(|(_, &l)| l as usize > self.capacity) {
            return Err(Error::CacheFull {
                batch: b,
                length: l,
                appended: 0,
                capacity: self.capacity,
            });
        }
        ctx.queue().write_buffer(
            self.seqlens.buffer(),
            self.seqlens.offset(),
            bytemuck::cast_slice(lengths),
        );
        self.lengths = lengths.to_vec();
        Ok(())
    }
    fn check_same_cache(&self, cache: &Tensor, what: &str) -> Result<()> {
        if !cache.overlaps(&self.seqlens) {
            return Err(Error::Unsupported(format!(
                "this {what} was prepared for another KV cache"
            )));
        }
        Ok(())
    }

    /// Rotates Q [B, Hq, Lq, Dk] of the tokens about to be appended: row i of sequence b at
    /// position len_b + i, with len_b read on the GPU (checked against the tables through the host
    /// mirror). Returns a new tensor; one submission.
    pub fn rope_q(&self, ctx: &Context, q: &Tensor, rope: &Rope) -> Result<Tensor> {
        ctx.scoped("rope submit", || {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            let out = self.rope_q_encode(ctx, &mut enc, q, rope)?;
            ctx.queue().submit([enc.finish()]);
            Ok(out)
        })
    }

    /// Q [B, Hq, Lq, Dk] of this cache's B sequences, on its device; returns its shape.
    fn check_queries<'a>(&self, ctx: &Context, q: &'a Tensor) -> Result<&'a [usize]> {
        self.seqlens.check_device("kv cache", ctx)?;
        let s = check_rows_operand(ctx, "q", q)?;
        if s[0] != self.batch() {
            return Err(Error::ShapeMismatch {
                name: "q",
                expected: vec![self.batch(), s[1], s[2], s[3]],
                got: s.to_vec(),
            });
        }
        Ok(s)
    }

    /// [`KvCache::rope_q`] recorded into the caller's encoder (before the append of the same
    /// tokens, so that it reads the lengths they start at).
    pub fn rope_q_encode(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        rope: &Rope,
    ) -> Result<Tensor> {
        let s = self.check_queries(ctx, q)?;
        let lq = s[2] as u64;
        let last = (lq > 0).then(|| self.max_len() as u64 + lq - 1);
        rope.check(ctx, s[3], last)?;
        rotate_into_new(ctx, encoder, q, &self.seqlens, rope)
    }

    /// [`KvCache::rope_q`] checked and bound once, to replay every step with
    /// [`KvCache::rope_q_prepared`]: it rotates `q` as it is when the work runs into
    /// [`PreparedRope::out`].
    pub fn prepare_rope_q(&self, ctx: &Context, q: &Tensor, rope: &Rope) -> Result<PreparedRope> {
        let s = self.check_queries(ctx, q)?;
        rope.check(ctx, s[3], None)?;
        let out = Tensor::zeros(ctx, s, q.dtype())?;
        Ok(PreparedRope {
            step: rotate_step(ctx, q, &out, &self.seqlens, rope)?,
            rows: s[2],
            max_positions: rope.max_positions(),
            cache: self.seqlens.clone(),
            out,
        })
    }

    /// Records a prepared rotation of the queries (before the append of the same tokens); the
    /// only host work is the check of the positions against the rope tables.
    pub fn rope_q_prepared(&self, encoder: &mut wgpu::CommandEncoder, rope: &PreparedRope) -> Result<()> {
        self.check_same_cache(&rope.cache, "prepared rotation")?;
        let end = self.max_len() as u64 + rope.rows as u64;
        if rope.rows > 0 && end > rope.max_positions as u64 {
            return Err(Error::PositionOutOfRange {
                position: end - 1,
                max_positions: rope.max_positions,
            });
        }
        if let Some(step) = &rope.step {
            kernels::encode_steps(encoder, std::slice::from_ref(step), None);
        }
        Ok(())
    }

    /// Attention of Q [B, Hq, Lq, Dk] over the cache: [`crate::attention()`] with K and V the
    /// first [`KvCache::max_len`] rows ([`KvCache::views`]), the GPU lengths as key lengths (no
    /// readback) and bottom-right masks aligned per sequence (j ≤ i + len_b − Lq). `opts` may set
    /// everything but `key_lengths`; masks and bias have Lk = [`KvCache::max_len`]. A sequence of
    /// length 0 gives O = 0, LSE = −∞. Q holds the Lq newest tokens of every sequence: after an
    /// uneven append, a sequence that took fewer than Lq rows is misaligned (docs/ATTENTION.md
    /// §9). One submission.
    pub fn attend(&self, ctx: &Context, q: &Tensor, opts: &AttentionOptions) -> Result<AttentionOutput> {
        let call = self.prepare_attend(ctx, q, opts)?;
        call.submit()?;
        Ok(call.into_output())
    }

    /// [`KvCache::attend`] recorded into the caller's encoder.
    pub fn attend_encode(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        opts: &AttentionOptions,
    ) -> Result<AttentionOutput> {
        let call = self.prepare_attend(ctx, q, opts)?;
        call.encode(encoder);
        Ok(call.into_output())
    }

    /// The prepared attention call over the cache as it is now: its key length Lk is
    /// [`KvCache::attend_len`] at preparation. It reads the lengths on the GPU when it runs, but a
    /// replay after further appends still sees at most Lk rows per sequence (longer lengths count
    /// as Lk, for the key range and the alignment alike): replay [`KvCache::prepare_replay`]
    /// instead, or prepare again after appending.
    pub fn prepare_attend(&self, ctx: &Context, q: &Tensor, opts: &AttentionOptions) -> Result<Attention> {
        self.prepare_over(ctx, q, opts, self.attend_len())
    }

    /// The attention call over the whole capacity (Lk = [`KvCache::capacity`]; masks and bias
    /// have that last axis), for replaying every step: it reads the lengths (and the block
    /// table) on the GPU when it runs, and splits each sequence's keys by its current length,
    /// so one prepared call serves every step of a generation with `encode` alone.
    pub fn prepare_replay(&self, ctx: &Context, q: &Tensor, opts: &AttentionOptions) -> Result<Attention> {
        self.prepare_over(ctx, q, opts, self.capacity)
    }

    /// The key length Lk of [`KvCache::attend`]: [`KvCache::max_len`], rounded up to whole pages
    /// in a paged cache (at least one page).
    pub fn attend_len(&self) -> usize {
        match &self.pages {
            Some(pages) => self.max_len().div_ceil(pages.size).max(1) * pages.size,
            None => self.max_len(),
        }
    }

    /// An attention call over the first `rows` rows of every sequence.
    fn prepare_over(&self, ctx: &Context, q: &Tensor, opts: &AttentionOptions, rows: usize) -> Result<Attention> {
        if opts.key_lengths.is_some() || opts.block_table.is_some() {
            return Err(Error::Unsupported(
                "KvCache::attend takes the key lengths and block table from the cache; leave them unset".into(),
            ));
        }
        let mut opts = AttentionOptions {
            key_lengths: Some(self.seqlens.clone()),
            align_to_key_lengths: true,
            ..opts.clone()
        };
        let (k, v) = match &self.pages {
            None => self.views_of(rows)?,
            Some(pages) => {
                for (b, &len) in self.lengths.iter().enumerate() {
                    pages.check_mapped(b, 0, len as u64)?;
                }
                let cols = rows.div_ceil(pages.size).max(1);
                let table = &pages.table;
                opts.block_table = Some(table.view(0, &[self.batch(), cols], table.strides())?);
                (self.k.clone(), self.v.clone())
            }
        };
        Attention::new(ctx, q, &k, &v, &opts)
    }
}

pub(super) fn check_cache_dtype(ctx: &Context, dtype: DType) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F16) {
        return Err(Error::DType {
            name: "kv cache",
            got: dtype,
            expected: "f32 or f16",
        });
    }
    if dtype == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 KV cache",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    Ok(())
}

/// K and V are non-empty and each fits one storage binding; the capacity fits 31 bits.
pub(super) fn check_cache_shapes(
    ctx: &Context,
    shapes: &[(&'static str, [usize; 4]); 2],
    capacity: usize,
    dtype: DType,
) -> Result<()> {
    for (name, shape) in shapes {
        if let Some(axis) = shape.iter().position(|&n| n == 0) {
            return Err(Error::ZeroDim {
                name,
                axis,
                shape: shape.to_vec(),
            });
        }
    }
    if capacity > i32::MAX as usize {
        return Err(Error::Limit {
            what: "KV cache capacity".into(),
            limit: "2^31 - 1 rows",
            needed: capacity as u64,
            max: i32::MAX as u64,
        });
    }
    for (name, shape) in shapes {
        let bytes = crate::tensor::checked_bytes(name, shape, dtype)?;
        let max = ctx.max_binding_size();
        if bytes > max || bytes / dtype.size() as u64 > u32::MAX as u64 {
            return Err(Error::Limit {
                what: format!("{name} ({bytes} bytes in one binding)"),
                limit: "max_storage_buffer_binding_size",
                needed: bytes,
                max,
            });
        }
    }
    Ok(())
}
