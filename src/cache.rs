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
use crate::rope::{check_rows_operand, rotate_into_new, Rope};
use crate::tensor::{DType, Tensor};

/// Options of [`KvCache::append_with`].
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// Rows of `k_new`/`v_new` each sequence takes (each ≤ Lnew; rows past it are ignored), for
    /// uneven appends such as the prompt chunks of a ragged batch. `None`: all Lnew rows.
    pub lengths: Option<Vec<u32>>,
    /// Rotary embedding applied to the new keys (not the values) at positions len_b + row.
    pub rope: Option<Rope>,
}

/// A contiguous KV cache: K [B, Hkv, capacity, Dk], V [B, Hkv, capacity, Dv] and the length of
/// every sequence (GPU buffer and host mirror). See the [module docs](self).
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
        for (name, d) in [("kv cache K", dk), ("kv cache V", dv)] {
            let shape = [b, hkv, capacity, d];
            if let Some(axis) = shape.iter().position(|&n| n == 0) {
                return Err(Error::ZeroDim {
                    name,
                    axis,
                    shape: shape.to_vec(),
                });
            }
        }
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
        if capacity > i32::MAX as usize {
            return Err(Error::Limit {
                what: "KV cache capacity".into(),
                limit: "2^31 - 1 rows",
                needed: capacity as u64,
                max: i32::MAX as u64,
            });
        }
        for (name, d) in [("kv cache K", dk), ("kv cache V", dv)] {
            let bytes = crate::tensor::checked_bytes(name, &[b, hkv, capacity, d], dtype)?;
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
        Ok(Self {
            k: Tensor::zeros(ctx, &[b, hkv, capacity, dk], dtype)?,
            v: Tensor::zeros(ctx, &[b, hkv, capacity, dv], dtype)?,
            seqlens: Tensor::zeros(ctx, &[b], DType::U32)?,
            lengths: vec![0; b],
            capacity,
        })
    }

    /// Sequences B.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }
    /// Key/value heads Hkv.
    pub fn heads(&self) -> usize {
        self.k.shape()[1]
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
    /// rows of every sequence (strided: no copy).
    pub fn views(&self) -> Result<(Tensor, Tensor)> {
        let lk = self.max_len();
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
    /// GPU lengths. Everything is checked first (shapes, dtypes, capacity, rope positions): on an
    /// error nothing is recorded and the cache is unchanged. The host lengths advance now.
    pub fn append_encode(
        &mut self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        k_new: &Tensor,
        v_new: &Tensor,
        opts: &AppendOptions,
    ) -> Result<()> {
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
            if t.dtype() != self.dtype() {
                return Err(Error::DType {
                    name,
                    got: t.dtype(),
                    expected: self.dtype().name(),
                });
            }
            for (output, cached) in [
                ("kv cache K", &self.k),
                ("kv cache V", &self.v),
                ("seqlens", &self.seqlens),
            ] {
                if t.overlaps(cached) {
                    return Err(Error::Aliasing { output, input: name });
                }
            }
        }
        let counts: Vec<u32> = match &opts.lengths {
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
                l.clone()
            }
            None => vec![u32::try_from(lnew).unwrap_or(u32::MAX); b],
        };
        for (batch, (&len, &count)) in self.lengths.iter().zip(&counts).enumerate() {
            if len as u64 + count as u64 > self.capacity as u64 {
                return Err(Error::CacheFull {
                    batch,
                    length: len,
                    appended: count,
                    capacity: self.capacity,
                });
            }
        }
        if let Some(rope) = &opts.rope {
            let last = self
                .lengths
                .iter()
                .zip(&counts)
                .filter(|(_, &c)| c > 0)
                .map(|(&l, &c)| l as u64 + c as u64 - 1)
                .max();
            rope.check(ctx, dk, last)?;
        }
        if counts.iter().all(|&c| c == 0) {
            return Ok(());
        }
        let steps = ctx.scoped("kv append setup", || {
            self.append_steps(ctx, k_new, v_new, opts, &counts)
        })?;
        kernels::encode_steps(encoder, &steps, None);
        for (len, c) in self.lengths.iter_mut().zip(&counts) {
            *len += c;
        }
        Ok(())
    }

    /// The dispatches of a checked append: K rows (rotated), V rows, then the advance.
    fn append_steps(
        &self,
        ctx: &Context,
        k_new: &Tensor,
        v_new: &Tensor,
        opts: &AppendOptions,
        counts: &[u32],
    ) -> Result<Vec<Step>> {
        let unused = kernels::unused_input(ctx);
        let (starts, starts_off) = kernels::bind_tensor(ctx, &self.seqlens, "seqlens")?;
        let mut base = kv_write::WriteParams {
            batch: self.batch() as u32,
            heads: self.heads() as u32,
            rows: k_new.shape()[2] as u32,
            dst_rows: self.capacity as u32,
            flags: kv_write::flags::AT_START,
            starts_off,
            ..Default::default()
        };
        let counts_bound = match &opts.lengths {
            Some(_) => {
                let t = Tensor::from_slice(ctx, counts, &[counts.len()])?;
                base.flags |= kv_write::flags::COUNTS;
                kernels::bind_tensor(ctx, &t, "append lengths")?.0
            }
            None => unused.clone(),
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
            p.src = kernels::strides_of(src, src_off);
            p.dst = kernels::strides_of(dst, dst_off);
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
            },
        )?);
        Ok(steps)
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

    /// [`KvCache::rope_q`] recorded into the caller's encoder (before the append of the same
    /// tokens, so that it reads the lengths they start at).
    pub fn rope_q_encode(
        &self,
        ctx: &Context,
        encoder: &mut wgpu::CommandEncoder,
        q: &Tensor,
        rope: &Rope,
    ) -> Result<Tensor> {
        self.seqlens.check_device("kv cache", ctx)?;
        let s = check_rows_operand(ctx, "q", q)?;
        if s[0] != self.batch() {
            return Err(Error::ShapeMismatch {
                name: "q",
                expected: vec![self.batch(), s[1], s[2], s[3]],
                got: s.to_vec(),
            });
        }
        let lq = s[2] as u64;
        let last = (lq > 0).then(|| self.max_len() as u64 + lq - 1);
        rope.check(ctx, s[3], last)?;
        rotate_into_new(ctx, encoder, q, &self.seqlens, rope)
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
    /// [`KvCache::max_len`] at preparation. It reads the lengths on the GPU when it runs, but a
    /// replay after further appends still sees at most Lk rows per sequence (longer lengths count
    /// as Lk, for the key range and the alignment alike): prepare again after appending.
    pub fn prepare_attend(&self, ctx: &Context, q: &Tensor, opts: &AttentionOptions) -> Result<Attention> {
        if opts.key_lengths.is_some() {
            return Err(Error::Unsupported(
                "KvCache::attend takes the key lengths from the cache; leave AttentionOptions::key_lengths unset"
                    .into(),
            ));
        }
        let (k, v) = self.views()?;
        let opts = AttentionOptions {
            key_lengths: Some(self.seqlens.clone()),
            align_to_key_lengths: true,
            ..opts.clone()
        };
        Attention::new(ctx, q, &k, &v, &opts)
    }
}
