//! The paged layout of a [`KvCache`]: a pool of pages shared by every sequence through a block
//! table [B, pages_per_seq] (vLLM's and FlashAttention's paged caches).

use super::kv_cache::{check_cache_dtype, check_cache_shapes, KvCache};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

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
pub(super) struct PageTable {
    /// u32 [B, pages_per_seq].
    pub(super) table: Tensor,
    pub(super) host: Vec<u32>,
    pub(super) size: usize,
    pub(super) count: usize,
}

impl PageTable {
    pub(super) fn columns(&self) -> usize {
        self.table.shape()[1]
    }

    /// Refuses positions [from, to) of sequence `b` that land on an unmapped page.
    pub(super) fn check_mapped(&self, b: usize, from: u64, to: u64) -> Result<()> {
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

impl KvCache {
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

    /// Rows per page of a paged cache (`None`: contiguous).
    pub fn page_size(&self) -> Option<usize> {
        self.pages.as_ref().map(|p| p.size)
    }
    /// The block table of a paged cache, u32 [B, pages_per_seq] on the GPU
    /// ([`crate::AttentionOptions::block_table`] of the attention calls over it).
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
}
