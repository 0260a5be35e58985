//! A contiguous KV cache for token-by-token generation (docs/ATTENTION.md §9).
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

use crate::attention::{Attention, AttentionOutput};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, kv_write, Step};
use crate::options::AttentionOptions;
use crate::rope::{check_rows_operand, rotate_into_new, rotate_step, Rope};
use crate::tensor::{DType, Tensor};

/// An append recorded once ([`KvCache::prepare_append`]) and replayed each step with
/// [`KvCache::append_prepared`]: no validation, pipeline lookup or bind-group creation per step.
#[derive(Debug)]
pub struct PreparedAppend {
    steps: Vec<Step>,
    counts: Vec<u32>,
    rope_positions: Option<usize>,
    /// The lengths buffer of the cache it was prepared for.
    cache: Tensor,
}

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

/// Options of [`KvCache::append_with`].
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Rows of `k_new`/`v_new` each sequence takes (each ≤ Lnew; rows past it are ignored), for
    /// uneven appends such as the prompt chunks of a ragged batch. `None`: all Lnew rows.
    pub lengths: Option<Vec<u32>>,
    /// Rotary embedding applied to the new keys (not the values) at positions len_b + row.
    pub rope: Option<Rope>,
}

/// The page pool of a paged [`KvCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PagedLayout {
    /// Pages in the pool, shared by every sequence.
    pub pages: usize,
    /// Rows (tokens) per page.
    pub page_size: usize,
    /// Columns of the block table: the most pages one sequence may hold, so its capacity is
    /// `pages_per_seq · page_size` rows.
    pub pages_per_seq: usize,
}

/// A block-table entry that maps no page: appending or attending over a position it covers is
/// refused ([`Error::PageUnmapped`]).
pub const UNMAPPED_PAGE: u32 = u32::MAX;

/// The block table of a paged cache: on the GPU and mirrored on the host.
#[derive(Debug)]
struct PageTable {
    /// u32 [B, pages_per_seq].
    table: Tensor,
    host: Vec<u32>,
    size: usize,
    count: usize,
}

impl PageTable {
    fn columns(&self) -> usize {
        self.table.shape()[1]
    }

    /// Refuses positions [from, to) of sequence `b` that land on an unmapped page.
    fn check_mapped(&self, b: usize, from: u64, to: u64) -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let cols = self.columns();
        for col in (from / self.size as u64)..=((to - 1) / self.size as u64) {
            let page = self.host[b * cols + col as usize];
            if page as usize >= self.count {
                return Err(Error::PageUnmapped {
                    batch: b,
                    position: (col * self.size as u64).max(from),
                    page,
                    pages: self.count,
                });
            }
        }
        Ok(())
    }
}

/// A KV cache, contiguous (K [B, Hkv, capacity, Dk], V [B, Hkv, capacity, Dv]) or paged (K
/// [pages, page_size, Hkv, Dk], V [pages, page_size, Hkv, Dv] and a block table [B,
/// pages_per_seq]), with the length of every sequence (GPU buffer and host mirror). See the
/// [module docs](self).
///
/// Not `Clone`: two handles appending to the same buffers would each advance their own host
/// mirror. Share it behind a lock, or wrap [`KvCache::k`], [`KvCache::v`] and
/// [`KvCache::seqlens`] for read-only use.
#[derive(Debug)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    seqlens: Tensor,
    lengths: Vec<u32>,
    capacity: usize,
    pages: Option<PageTable>,
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

    /// An empty paged cache: K [pages, page_size, Hkv, Dk] and V [pages, page_size, Hkv, Dv]
    /// (the shape of vLLM's and FlashAttention's paged caches, stored head-major: [pages, Hkv,
    /// page_size, D] in memory, which streams a head's keys page by page) shared by `b`
    /// sequences through a block table [b, pages_per_seq]. The table starts as "sequence s owns pages s ·
    /// pages_per_seq …" when the pool has that many pages, else every entry is
    /// [`UNMAPPED_PAGE`]: assign pages with [`KvCache::set_block_table`].
    pub fn new_paged(
        ctx: &Context,
        b: usize,
        hkv: usize,
        layout: PagedLayout,
        dk: usize,
        dv: usize,
        dtype: DType,
    ) -> Result<Self> {
        check_cache_dtype(ctx, dtype)?;
        let PagedLayout {
            pages,
            page_size,
            pages_per_seq,
        } = layout;
        let shapes = [
            ("kv cache K", [pages, page_size, hkv, dk]),
            ("kv cache V", [pages, page_size, hkv, dv]),
        ];
        if b == 0 || pages_per_seq == 0 {
            return Err(Error::ZeroDim {
                name: "block table",
                axis: if b == 0 { 0 } else { 1 },
                shape: vec![b, pages_per_seq],
            });
        }
        if pages > UNMAPPED_PAGE as usize {
            return Err(Error::Limit {
                what: format!("{pages} pages"),
                limit: "2^32 - 1 pages (u32 page ids)",
                needed: pages as u64,
                max: UNMAPPED_PAGE as u64,
            });
        }
        let capacity = pages_per_seq.saturating_mul(page_size);
        check_cache_shapes(ctx, &shapes, capacity, dtype)?;
        let cells = crate::tensor::checked_numel("block table", &[b, pages_per_seq])?;
        let host: Vec<u32> = if cells <= pages {
            (0..cells as u32).collect()
        } else {
            vec![UNMAPPED_PAGE; cells]
        };
        // Pages are stored head-major ([N, Hkv, P, D] in memory) and seen as [N, P, Hkv, D]: a
        // head's rows of a page are contiguous, so a sequence's keys stream in page-sized runs
        // (with the rows of all heads interleaved, every key of a head is a new 4 KiB stride).
        let head_major = |d: usize| -> Result<Tensor> {
            let t = Tensor::zeros(ctx, &[pages, hkv, page_size, d], dtype)?;
            t.view(
                0,
                &[pages, page_size, hkv, d],
                &[hkv * page_size * d, d, page_size * d, 1],
            )
        };
        Ok(Self {
            k: head_major(dk)?,
            v: head_major(dv)?,
            seqlens: Tensor::zeros(ctx, &[b], DType::U32)?,
            lengths: vec![0; b],
            capacity,
            pages: Some(PageTable {
                table: Tensor::from_slice(ctx, &host, &[b, pages_per_seq])?,
                host,
                size: page_size,
                count: pages,
            }),
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
    /// Rows per page of a paged cache (`None`: contiguous).
    pub fn page_size(&self) -> Option<usize> {
        self.pages.as_ref().map(|p| p.size)
    }
    /// The block table of a paged cache, u32 [B, pages_per_seq] on the GPU
    /// ([`AttentionOptions::block_table`] of the attention calls over it).
    pub fn block_table(&self) -> Option<&Tensor> {
        self.pages.as_ref().map(|p| &p.table)
    }
    /// The host mirror of the block table (row-major [B, pages_per_seq]).
    pub fn block_table_host(&self) -> Option<&[u32]> {
        self.pages.as_ref().map(|p| p.host.as_slice())
    }

    /// Maps the pages of every sequence: `table` is row-major [B, pages_per_seq], each entry a
    /// page id below the page count or [`UNMAPPED_PAGE`]. Written through the queue (before the
    /// next submission's work) and mirrored on the host. Sequences may share pages (a common
    /// prefix); an append writes into whatever page its positions map to.
    pub fn set_block_table(&mut self, ctx: &Context, table: &[u32]) -> Result<()> {
        let Some(pages) = &mut self.pages else {
            return Err(Error::Unsupported("a contiguous KV cache has no block table".into()));
        };
        pages.table.check_device("kv cache", ctx)?;
        if table.len() != pages.host.len() {
            return Err(Error::ShapeMismatch {
                name: "block table",
                expected: pages.table.shape().to_vec(),
                got: vec![table.len()],
            });
        }
        if let Some(&id) = table
            .iter()
            .find(|&&id| id != UNMAPPED_PAGE && id as usize >= pages.count)
        {
            return Err(Error::InvalidOption {
                name: "block table",
                value: id as f64,
                why: "page ids must be below the page count (or UNMAPPED_PAGE)",
            });
        }
        ctx.queue()
            .write_buffer(pages.table.buffer(), pages.table.offset(), bytemuck::cast_slice(table));
        pages.host = table.to_vec();
        Ok(())
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

    /// Appends K [B, Hkv, Lnew, Dk] and V [B, Hkv, Lnew, Dv] at every sequence's length and
    /// advances the lengths by Lnew; one submission.
    pub fn append(&mut self, ctx: &Context, k_new: &Tensor, v_new: &Tensor) -> Result<()> {
        self.append_with(ctx, k_new, v_new, &AppendOptions::default())
    }

    /// [`KvCache::append`] with uneven row counts and/or a rotary embedding of the keys.
    pub fn append_with(&mut self, ctx: &Context, k_new: &Tensor, v_new: &Tensor, opts: &AppendOptions) -> Result<()> {
        ctx.scoped("kv append submit", || {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            self.append_encode(ctx, &mut enc, k_new, v_new, opts)?;
            ctx.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// Records an append into the caller's encoder: the rows of K and V, then the advance of the
    /// GPU lengths. Everything is checked first (shapes, dtypes, capacity, pages, rope positions):
    /// on an error nothing is recorded and the cache is unchanged. The host lengths advance now.
    pub fn append_encode(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        k_new: &Tensor,
        v_new: &Tensor,
        opts: &AppendOptions,
    ) -> Result<()> {
        let counts = self.check_append(ctx, k_new, v_new, opts)?;
        self.check_room(&counts, opts.rope.as_ref().map(|r| r.max_positions()))?;
        if counts.iter().all(|&c| c == 0) {
            return Ok(());
        }
        let steps = ctx.scoped("kv append setup", || {
            self.append_steps(ctx, k_new, v_new, opts, &counts, None)
        })?;
        kernels::encode_steps(encoder, &steps, None);
        self.advance(&counts);
        Ok(())
    }

    /// Appends packed rows (the varlen layout of a ragged prefill): K [total, Hkv, Dk] and
    /// V [total, Hkv, Dv] hold the new rows of every sequence back to back, sequence b's at
    /// `offsets[b] .. offsets[b + 1]` (B + 1 offsets, first 0, nondecreasing, last ≤ total),
    /// written at each sequence's length; the keys rotated at positions len_b + r with `rope`.
    /// One submission.
    pub fn append_packed(
        &mut self,
        ctx: &Context,
        k_new: &Tensor,
        v_new: &Tensor,
        offsets: &[u32],
        rope: Option<&Rope>,
    ) -> Result<()> {
        ctx.scoped("kv append submit", || {
            let mut enc = ctx.device().create_command_encoder(&Default::default());
            self.append_packed_encode(ctx, &mut enc, k_new, v_new, offsets, rope)?;
            ctx.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// [`KvCache::append_packed`] recorded into the caller's encoder (checked first; the host
    /// lengths advance now).
    pub fn append_packed_encode(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        k_new: &Tensor,
        v_new: &Tensor,
        offsets: &[u32],
        rope: Option<&Rope>,
    ) -> Result<()> {
        let (b, hkv) = (self.batch(), self.heads());
        let mut views = Vec::with_capacity(2);
        for (name, t, d) in [("k_new", k_new, self.dim_k()), ("v_new", v_new, self.dim_v())] {
            let s = t.shape();
            if s.len() != 3 || s[1] != hkv || s[2] != d {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: vec![s.first().copied().unwrap_or(0), hkv, d],
                    got: s.to_vec(),
                });
            }
            let st = t.strides();
            // [1, total, Hkv, D] for the row checks shared with the padded append.
            views.push(t.view(0, &[1, s[0], s[1], s[2]], &[s[0] * st[0], st[0], st[1], st[2]])?);
        }
        let total = k_new.shape()[0];
        if v_new.shape()[0] != total {
            return Err(Error::ShapeMismatch {
                name: "v_new",
                expected: vec![total, hkv, self.dim_v()],
                got: v_new.shape().to_vec(),
            });
        }
        let ordered = offsets.len() == b + 1
            && offsets[0] == 0
            && offsets.windows(2).all(|w| w[0] <= w[1])
            && offsets[b] as usize <= total;
        if !ordered {
            return Err(Error::InvalidOption {
                name: "append offsets",
                value: offsets.len() as f64,
                why: "need B + 1 nondecreasing offsets from 0 to at most the packed rows",
            });
        }
        let counts: Vec<u32> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        // The padded append's checks on [1, total, Hkv, D] views: as one batch of `total` rows.
        let one = AppendOptions {
            lengths: None,
            rope: rope.cloned(),
        };
        for (name, t) in [("k_new", &views[0]), ("v_new", &views[1])] {
            check_rows_operand(ctx, name, t)?;
            self.check_new_rows(name, t)?;
        }
        if let Some(r) = rope {
            r.check(ctx, self.dim_k(), None)?;
        }
        self.check_room(&counts, rope.map(|r| r.max_positions()))?;
        if counts.iter().all(|&c| c == 0) {
            return Ok(());
        }
        let steps = ctx.scoped("kv append setup", || {
            let offsets = Tensor::from_slice(ctx, offsets, &[b + 1])?;
            self.append_steps(ctx, &views[0], &views[1], &one, &counts, Some(&offsets))
        })?;
        kernels::encode_steps(encoder, &steps, None);
        self.advance(&counts);
        Ok(())
    }

    /// An append checked and bound once, to replay every step with
    /// [`KvCache::append_prepared`]: its rows come from `k_new` and `v_new` as they are when the
    /// work runs (overwrite them between steps) and land at each sequence's GPU length.
    pub fn prepare_append(
        &self,
        ctx: &Context,
        k_new: &Tensor,
        v_new: &Tensor,
        opts: &AppendOptions,
    ) -> Result<PreparedAppend> {
        let counts = self.check_append(ctx, k_new, v_new, opts)?;
        let steps = match counts.iter().all(|&c| c == 0) {
            true => Vec::new(),
            false => ctx.scoped("kv append setup", || {
                self.append_steps(ctx, k_new, v_new, opts, &counts, None)
            })?,
        };
        Ok(PreparedAppend {
            steps,
            counts,
            rope_positions: opts.rope.as_ref().map(|r| r.max_positions()),
            cache: self.seqlens.clone(),
        })
    }

    /// Records a prepared append: the only host work is the check of the host lengths against
    /// the capacity, the block table and the rope tables (O(B)), then the lengths advance.
    pub fn append_prepared(&mut self, encoder: &mut wgpu::CommandEncoder, append: &PreparedAppend) -> Result<()> {
        self.check_same_cache(&append.cache, "prepared append")?;
        self.check_room(&append.counts, append.rope_positions)?;
        kernels::encode_steps(encoder, &append.steps, None);
        self.advance(&append.counts);
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

    fn advance(&mut self, counts: &[u32]) {
        for (len, c) in self.lengths.iter_mut().zip(counts) {
            *len += c;
        }
    }

    /// New rows in the cache's dtype that alias none of its buffers.
    fn check_new_rows(&self, name: &'static str, t: &Tensor) -> Result<()> {
        if t.dtype() != self.dtype() {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: self.dtype().name(),
            });
        }
        let table = self.pages.as_ref().map(|p| &p.table);
        for (output, cached) in [
            ("kv cache K", Some(&self.k)),
            ("kv cache V", Some(&self.v)),
            ("seqlens", Some(&self.seqlens)),
            ("block table", table),
        ] {
            if cached.is_some_and(|c| t.overlaps(c)) {
                return Err(Error::Aliasing { output, input: name });
            }
        }
        Ok(())
    }

    /// Checks the operands of an append; returns the rows each sequence takes.
    fn check_append(&self, ctx: &Context, k_new: &Tensor, v_new: &Tensor, opts: &AppendOptions) -> Result<Vec<u32>> {
        self.k.check_device("kv cache", ctx)?;
        let (b, hkv, dk, dv) = (self.batch(), self.heads(), self.dim_k(), self.dim_v());
        check_rows_operand(ctx, "k_new", k_new)?;
        check_rows_operand(ctx, "v_new", v_new)?;
        let lnew = k_new.shape()[2];
        for (name, t, d) in [("k_new", k_new, dk), ("v_new", v_new, dv)] {
            if t.shape() != [b, hkv, lnew, d] {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: vec![b, hkv, lnew, d],
                    got: t.shape().to_vec(),
                });
            }
            self.check_new_rows(name, t)?;
        }
        if let Some(rope) = &opts.rope {
            rope.check(ctx, dk, None)?;
        }
        match &opts.lengths {
            Some(l) => {
                if l.len() != b {
                    return Err(Error::ShapeMismatch {
                        name: "append lengths",
                        expected: vec![b],
                        got: vec![l.len()],
                    });
                }
                if let Some(&c) = l.iter().find(|&&c| c as usize > lnew) {
                    return Err(Error::InvalidOption {
                        name: "append lengths",
                        value: c as f64,
                        why: "each must be at most Lnew (the rows of k_new)",
                    });
                }
                Ok(l.clone())
            }
            None => Ok(vec![u32::try_from(lnew).unwrap_or(u32::MAX); b]),
        }
    }

    /// Refuses an append of `counts` rows per sequence that would pass the capacity, land on an
    /// unmapped page, or rotate past the rope tables (`rope_positions`), from the host lengths.
    fn check_room(&self, counts: &[u32], rope_positions: Option<usize>) -> Result<()> {
        for (batch, (&len, &count)) in self.lengths.iter().zip(counts).enumerate() {
            let end = len as u64 + count as u64;
            if end > self.capacity as u64 {
                return Err(Error::CacheFull {
                    batch,
                    length: len,
                    appended: count,
                    capacity: self.capacity,
                });
            }
            if let Some(pages) = &self.pages {
                pages.check_mapped(batch, len as u64, end)?;
            }
            if let Some(max_positions) = rope_positions.filter(|&m| count > 0 && end > m as u64) {
                return Err(Error::PositionOutOfRange {
                    position: end - 1,
                    max_positions,
                });
            }
        }
        Ok(())
    }

    /// The dispatches of a checked append: K rows (rotated), V rows, then the advance.
    ///
    /// With `packed` (the B + 1 row offsets on the GPU), `k_new`/`v_new` are [1, total, Hkv, D]
    /// views of packed rows: sequence b takes rows offsets\[b\] .. offsets\[b + 1\].
    fn append_steps(
        &self,
        ctx: &Context,
        k_new: &Tensor,
        v_new: &Tensor,
        opts: &AppendOptions,
        counts: &[u32],
        packed: Option<&Tensor>,
    ) -> Result<Vec<Step>> {
        let unused = kernels::unused_input(ctx);
        let (starts, starts_off) = kernels::bind_tensor(ctx, &self.seqlens, "seqlens")?;
        let rows = match packed {
            Some(_) => counts.iter().copied().max().unwrap_or(0),
            None => k_new.shape()[2] as u32,
        };
        let mut base = kv_write::WriteParams {
            batch: self.batch() as u32,
            heads: self.heads() as u32,
            rows,
            dst_rows: self.capacity as u32,
            flags: kv_write::flags::AT_START,
            starts_off,
            ..Default::default()
        };
        let table = match &self.pages {
            Some(pages) => {
                let (t, off) = kernels::bind_tensor(ctx, &pages.table, "block table")?;
                base.flags |= kv_write::flags::PAGED;
                base.page_size = pages.size as u32;
                base.page_count = pages.count as u32;
                base.table_off = off;
                base.table_stride = pages.table.strides()[0] as u32;
                t
            }
            None => unused.clone(),
        };
        let counts_bound = match (packed, &opts.lengths) {
            (Some(offsets), _) => {
                let (t, off) = kernels::bind_tensor(ctx, offsets, "append offsets")?;
                base.flags |= kv_write::flags::PACKED;
                base.counts_off = off;
                t
            }
            (None, Some(_)) => {
                let t = Tensor::from_slice(ctx, counts, &[counts.len()])?;
                base.flags |= kv_write::flags::COUNTS;
                kernels::bind_tensor(ctx, &t, "append lengths")?.0
            }
            (None, None) => unused.clone(),
        };
        let mut steps = Vec::with_capacity(3);
        for (name, src, dst, rope) in [
            ("k_new", k_new, &self.k, opts.rope.as_ref()),
            ("v_new", v_new, &self.v, None),
        ] {
            let mut p = base;
            p.dim = src.shape()[3] as u32;
            let (src_b, src_off) = kernels::bind_tensor(ctx, src, name)?;
            let (dst_b, dst_off) = kernels::bind_tensor(ctx, dst, "kv cache")?;
            p.src = match packed {
                // [1, total, H, D]: rows along axis 1, heads along axis 2.
                Some(_) => kernels::Strides {
                    offset: src_off,
                    batch: 0,
                    head: src.strides()[2] as u32,
                    row: src.strides()[1] as u32,
                },
                None => kernels::strides_of(src, src_off),
            };
            p.dst = self.row_strides(dst, dst_off);
            let (cos, sin) = match rope {
                Some(r) => r.bind(ctx, &mut p)?,
                None => (unused.clone(), unused.clone()),
            };
            steps.push(kv_write::step(
                ctx,
                self.dtype(),
                &p,
                kv_write::WriteBindings {
                    src: &src_b,
                    dst: &dst_b,
                    starts: &starts,
                    counts: &counts_bound,
                    cos: &cos,
                    sin: &sin,
                    block_table: &table,
                },
            )?);
        }
        let advance = kv_write::WriteParams {
            flags: base.flags | kv_write::flags::ADVANCE,
            ..base
        };
        let (dst_b, _) = kernels::bind_tensor(ctx, &self.k, "kv cache")?;
        steps.push(kv_write::step(
            ctx,
            self.dtype(),
            &advance,
            kv_write::WriteBindings {
                src: &unused,
                dst: &dst_b,
                starts: &starts,
                counts: &counts_bound,
                cos: &unused,
                sin: &unused,
                block_table: &unused,
            },
        )?);
        Ok(steps)
    }

    /// Strides of K or V as (sequence or page, head, row): a paged tensor is [pages, page_size,
    /// Hkv, D].
    fn row_strides(&self, t: &Tensor, offset: u32) -> kernels::Strides {
        match self.pages {
            Some(_) => {
                let st = t.strides();
                kernels::Strides {
                    offset,
                    batch: st[0] as u32,
                    head: st[2] as u32,
                    row: st[1] as u32,
                }
            }
            None => kernels::strides_of(t, offset),
        }
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

fn check_cache_dtype(ctx: &Context, dtype: DType) -> Result<()> {
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
fn check_cache_shapes(
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
