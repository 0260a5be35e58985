//! Splitting a problem into chunks of (batch, query head) pairs whose operands each fit one
//! storage binding (`max_storage_buffer_binding_size`). Each chunk binds only the window of every
//! tensor it touches, starting at an offset aligned to `min_storage_buffer_offset_alignment`; the
//! element offset of a tensor's element 0 relative to that window may be "negative" and is passed
//! to the shader as a wrapping u32 (WGSL u32 arithmetic is modular, so index sums come out exact).

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, BoundBuffer, Strides};
use crate::tensor::Tensor;

/// One operand as the shader addresses it: `index = offset + b·batch + h·head + row·row_stride + col`.
#[derive(Debug, Clone)]
pub(crate) struct Operand {
    pub name: &'static str,
    pub tensor: Tensor,
    /// Strides as the kernel sees them (0 for broadcast dims); `offset` unused here.
    pub strides: Strides,
    /// Rows per (b, h) and elements per row.
    pub rows: u64,
    pub row_len: u64,
    /// Query heads per head of this tensor (GQA for K/V; 1 otherwise).
    pub group: u64,
}

impl Operand {
    /// Element range [lo, hi) relative to element 0 that pair (b, h) touches.
    fn pair_span(&self, b: u64, h: u64) -> (u64, u64) {
        let s = &self.strides;
        let base = b * s.batch as u64 + (h / self.group) * s.head as u64;
        (base, base + (self.rows - 1) * s.row as u64 + self.row_len)
    }

    /// Bytes a binding of the element range [lo, hi) needs, and where it starts.
    fn window(&self, ctx: &Context, lo: u64, hi: u64) -> (u64, u64) {
        let (t, es) = (&self.tensor, self.tensor.dtype().size() as u64);
        kernels::binding_window(ctx, t.buffer(), t.offset() + lo * es, t.offset() + hi * es)
    }

    /// The binding for pairs with spans [lo, hi) and the wrapping element offset of element 0.
    fn bind(&self, ctx: &Context, lo: u64, hi: u64) -> (BoundBuffer, u32) {
        let es = self.tensor.dtype().size() as u64;
        let (start, size) = self.window(ctx, lo, hi);
        let offset = (self.tensor.offset() as i64 - start as i64) / es as i64;
        (
            BoundBuffer {
                buffer: self.tensor.buffer().clone(),
                offset: start,
                size,
            },
            offset as u32, // wraps for windows that start after element 0
        )
    }
}

/// A chunk: pairs [bh_base, bh_base + bh_count) and one binding per operand (in input order).
#[derive(Debug)]
pub(crate) struct Chunk {
    pub bh_base: u32,
    pub bh_count: u32,
    pub bindings: Vec<(BoundBuffer, u32)>,
}

/// Greedily groups consecutive (b, h) pairs so every operand's window fits one binding.
pub(crate) fn plan(ctx: &Context, operands: &[Operand], batch: u64, heads_q: u64) -> Result<Vec<Chunk>> {
    let max = ctx.limits().max_storage_buffer_binding_size;
    let total = batch * heads_q;
    let mut chunks = Vec::new();
    let mut start = 0u64;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let close = |start: u64, end: u64, spans: &[(u64, u64)], chunks: &mut Vec<Chunk>| {
        chunks.push(Chunk {
            bh_base: start as u32,
            bh_count: (end - start) as u32,
            bindings: operands
                .iter()
                .zip(spans)
                .map(|(op, &(lo, hi))| op.bind(ctx, lo, hi))
                .collect(),
        });
    };
    for bh in 0..total {
        let (b, h) = (bh / heads_q, bh % heads_q);
        let pair: Vec<(u64, u64)> = operands.iter().map(|op| op.pair_span(b, h)).collect();
        let merged: Vec<(u64, u64)> = if spans.is_empty() {
            pair.clone()
        } else {
            spans
                .iter()
                .zip(&pair)
                .map(|(&(l0, h0), &(l1, h1))| (l0.min(l1), h0.max(h1)))
                .collect()
        };
        let fits = operands
            .iter()
            .zip(&merged)
            .all(|(op, &(lo, hi))| op.window(ctx, lo, hi).1 <= max);
        if fits {
            spans = merged;
            continue;
        }
        if bh == start {
            // One (b, h) pair alone is too big for a binding.
            let (op, &(lo, hi)) = operands
                .iter()
                .zip(&pair)
                .find(|(op, &(lo, hi))| op.window(ctx, lo, hi).1 > max)
                .expect("some operand does not fit");
            return Err(Error::Limit {
                what: format!("{} of one (batch, head) pair", op.name),
                limit: "max_storage_buffer_binding_size",
                needed: op.window(ctx, lo, hi).1,
                max,
            });
        }
        close(start, bh, &spans, &mut chunks);
        start = bh;
        spans = pair;
    }
    close(start, total, &spans, &mut chunks);
    Ok(chunks)
}
