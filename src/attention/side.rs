//! The side buffer of a call (`shaders/common/side.wgsl`, binding 10): its key lengths and, for
//! the local-p and additive kernels, the centers and the score vector, in one storage binding, so
//! that no kernel binds more than the 8 storage buffers WebGPU guarantees. A call with key
//! lengths only binds them directly; more arrays are gathered into a buffer of the call's own
//! (`shaders/side_gather.wgsl`) by a dispatch recorded before the kernels that read it.

use super::plan::storage_buffer;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::side_gather::{gather_step, SidePart};
use crate::kernels::{self, BoundBuffer, Step};
use crate::tensor::{DType, Tensor};

pub(crate) struct Side {
    /// What binding 10 binds.
    pub buffer: BoundBuffer,
    /// The gather filling it, when it holds more than the key lengths.
    pub gather: Option<Step>,
    /// Word of the local-p centers and element of the score vector in it (the uniform's
    /// `centers_off` and `score_off`).
    pub centers_off: u32,
    pub score_off: u32,
    /// Bytes the call allocated for it (buffer and uniform).
    pub bytes: u64,
}

impl Side {
    /// The side buffer of key lengths (or packed sequences' key offsets) `lengths`, local-p
    /// `centers` (f32, contiguous) and the additive `score_vector`, any of them absent.
    pub(crate) fn new(
        ctx: &Context,
        lengths: Option<&Tensor>,
        centers: Option<&Tensor>,
        score_vector: Option<&Tensor>,
    ) -> Result<Self> {
        if centers.is_none() && score_vector.is_none() {
            let buffer = match lengths {
                Some(t) => kernels::bind_tensor(ctx, t, "key_lengths")?.0,
                None => kernels::unused_input(ctx),
            };
            return Ok(Self {
                buffer,
                gather: None,
                centers_off: 0,
                score_off: 0,
                bytes: 0,
            });
        }
        // Key lengths from word 0 (`key_lengths_at`), then the centers, then the score vector.
        let mut parts = Vec::new();
        let mut at = 0u32;
        let mut push = |t: &Tensor, name: &'static str| -> Result<(u32, u32)> {
            let (source, elem) = kernels::bind_tensor(ctx, t, name)?;
            // 32-bit words covering the elements; f16 values keep their parity.
            let (first, words, parity) = match t.dtype() {
                DType::F16 => (elem / 2, ((elem % 2) as usize + t.numel()).div_ceil(2) as u32, elem % 2),
                _ => (elem, t.numel() as u32, 0),
            };
            let start = at;
            parts.push(SidePart {
                source,
                first,
                words,
                at: start,
            });
            at += words;
            Ok((start, parity))
        };
        if let Some(t) = lengths {
            push(t, "key_lengths")?;
        }
        let centers_off = match centers {
            Some(t) => push(t, "centers")?.0,
            None => 0,
        };
        let score_off = match score_vector {
            Some(t) => {
                let (word, parity) = push(t, "score_vector")?;
                match t.dtype() {
                    DType::F16 => word * 2 + parity,
                    _ => word,
                }
            }
            None => 0,
        };
        let size = (at as u64 * 4).max(16);
        let max = ctx.limits().max_storage_buffer_binding_size;
        if size > max {
            return Err(Error::Limit {
                what: format!("the side buffer ({size} bytes of key lengths, local-p centers and score vector)"),
                limit: "max_storage_buffer_binding_size",
                needed: size,
                max,
            });
        }
        let buffer = storage_buffer(ctx, "wgpu-attention side buffer", size)?;
        let bound = BoundBuffer::whole(&buffer);
        let (step, uniform) = gather_step(ctx, &parts, &bound)?;
        Ok(Self {
            buffer: bound,
            gather: Some(step),
            centers_off,
            score_off,
            bytes: buffer.size() + uniform,
        })
    }
}
