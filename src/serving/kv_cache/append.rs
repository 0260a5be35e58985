//! Appending rows to a [`KvCache`]: padded, uneven and packed appends, recorded once or every
//! step, the keys optionally rotated on the way in.

use super::KvCache;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, kv_write, Step};
use crate::serving::rope::{check_rows_operand, Rope};
use crate::tensor::Tensor;

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

/// Options of [`KvCache::append_with`].
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Rows of `k_new`/`v_new` each sequence takes (each ≤ Lnew; rows past it are ignored), for
    /// uneven appends such as the prompt chunks of a ragged batch. `None`: all Lnew rows.
    pub lengths: Option<Vec<u32>>,
    /// Rotary embedding applied to the new keys (not the values) at positions len_b + row.
    pub rope: Option<Rope>,
}

impl KvCache {
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
}
