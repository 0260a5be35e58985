//! Merging partial attention states: attention over a key sequence split into parts (across
//! calls, devices or ring steps) is recovered exactly from each part's output O and LSE:
//!
//! LSE = log Σᵢ e^{LSEᵢ},  O = Σᵢ e^{LSEᵢ − LSE} Oᵢ.
//!
//! Parts with LSEᵢ = −∞ (no key of the row in that part) contribute nothing; a row with no part
//! left gets O = 0 and LSE = −∞; a NaN (or +∞) LSEᵢ makes the row NaN (O and LSE), as a NaN
//! score does in one call. The GPU kernel is the decode path's own merge
//! (`shaders/decode_merge.wgsl`); [`crate::reference::merge_states`] is its CPU twin.
//!
//! ```
//! # fn main() -> Result<(), wgpu_attention::Error> {
//! use wgpu_attention::{attention, merge_attention_states, AttentionOptions, Context, Tensor};
//! let ctx = Context::new()?;
//! let x: Vec<f32> = (0..2 * 8 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
//! let q = Tensor::from_slice(&ctx, &x[..8 * 4], &[1, 1, 8, 4])?;
//! let k = Tensor::from_slice(&ctx, &x, &[1, 1, 16, 4])?;
//! let opts = AttentionOptions { return_lse: true, ..Default::default() };
//! // Keys [0, 8) and [8, 16) in two calls, then merged: equals attention over all 16 keys.
//! let first = attention(&ctx, &q, &k.view(0, &[1, 1, 8, 4], &[64, 64, 4, 1])?, &k.view(0, &[1, 1, 8, 4], &[64, 64, 4, 1])?, &opts)?;
//! let second = attention(&ctx, &q, &k.view(32, &[1, 1, 8, 4], &[64, 64, 4, 1])?, &k.view(32, &[1, 1, 8, 4], &[64, 64, 4, 1])?, &opts)?;
//! let (o, lse) = merge_attention_states(
//!     &ctx,
//!     &[(&first.out, first.lse.as_ref().unwrap()), (&second.out, second.lse.as_ref().unwrap())],
//! )?;
//! let whole = attention(&ctx, &q, &k, &k, &opts)?;
//! let (a, b): (Vec<f32>, Vec<f32>) = (o.to_vec(&ctx)?, whole.out.to_vec(&ctx)?);
//! assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
//! # let _ = lse; Ok(()) }
//! ```

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::flash_decode::{self, MergeParams, PartEntry};
use crate::kernels::{self, BoundBuffer};
use crate::tensor::{padded_size, DType, Tensor, TENSOR_USAGE};

/// Merges partial attention states `(O, LSE)` on the GPU: each O is [B, H, L, D] (f32 or f16, any
/// strides with a contiguous last dim), each LSE [B, H, L] f32 (any strides); every part has the
/// same shape and dtype. Returns O [B, H, L, D] in the parts' dtype and LSE [B, H, L] f32, both
/// contiguous. One submission; returns without waiting for the GPU.
///
/// Errors: no parts ([`Error::InvalidOption`]), ranks, shapes or dtypes that differ between parts
/// or from the rules above ([`Error::Rank`], [`Error::ShapeMismatch`], [`Error::DType`]), a
/// zero head dim, tensors of another device, buffers without `COPY_SRC` (the parts are gathered
/// into one scratch binding) and sizes beyond the device's limits.
pub fn merge_attention_states(ctx: &Context, parts: &[(&Tensor, &Tensor)]) -> Result<(Tensor, Tensor)> {
    let shape = validate_parts(ctx, parts)?;
    let [b, h, l, d] = shape;
    let dtype = parts[0].0.dtype();
    let out = Tensor::zeros(ctx, &shape, dtype)?;
    let lse = Tensor::zeros(ctx, &[b, h, l], DType::F32)?;
    if b * h * l == 0 {
        return Ok((out, lse));
    }
    ctx.scoped("merge_attention_states", || {
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        // Gather every part's window into two scratch buffers (O words, LSE) and describe each
        // part by its element offset there and its strides.
        let mut table = Vec::with_capacity(parts.len());
        let mut o_windows = Vec::new();
        let mut lse_windows = Vec::new();
        let (mut o_bytes, mut lse_bytes) = (0u64, 0u64);
        for (o, x) in parts {
            let (start, end) = window(o);
            let elem = dtype.size() as u64;
            let o_elem = (o_bytes + o.offset() - start) / elem;
            o_windows.push((o.buffer().clone(), start, o_bytes, end - start));
            o_bytes += end - start;
            let (lstart, lend) = window(x);
            let l_elem = (lse_bytes + x.offset() - lstart) / 4;
            lse_windows.push((x.buffer().clone(), lstart, lse_bytes, lend - lstart));
            lse_bytes += lend - lstart;
            let os = o.strides();
            let ls = x.strides();
            let pick = |shape: &[usize], strides: &[usize], axis: usize| {
                if shape[axis] == 1 {
                    0
                } else {
                    strides[axis] as u64
                }
            };
            let fits = |x: u64| u32::try_from(x).map_err(|_| too_large(x));
            table.push(PartEntry {
                o: [
                    fits(o_elem)?,
                    fits(pick(o.shape(), os, 0))?,
                    fits(pick(o.shape(), os, 1))?,
                    fits(pick(o.shape(), os, 2))?,
                ],
                lse: [
                    fits(l_elem)?,
                    fits(pick(x.shape(), ls, 0))?,
                    fits(pick(x.shape(), ls, 1))?,
                    fits(pick(x.shape(), ls, 2))?,
                ],
            });
        }
        let max = ctx.limits().max_storage_buffer_binding_size;
        for (what, bytes) in [
            ("merge scratch (O parts)", o_bytes),
            ("merge scratch (LSE parts)", lse_bytes),
        ] {
            if bytes > max {
                return Err(Error::Limit {
                    what: format!("{what}, {bytes} bytes"),
                    limit: "max_storage_buffer_binding_size",
                    needed: bytes,
                    max,
                });
            }
        }
        let scratch = |label, size| -> Result<wgpu::Buffer> {
            ctx.check_buffer_size(label, size)?;
            Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: padded_size(size.max(4)),
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            }))
        };
        let o_scratch = scratch("wgpu-attention merge parts", o_bytes)?;
        let lse_scratch = scratch("wgpu-attention merge lse parts", lse_bytes)?;
        for (src, from, to, size) in o_windows {
            encoder.copy_buffer_to_buffer(&src, from, &o_scratch, to, size);
        }
        for (src, from, to, size) in lse_windows {
            encoder.copy_buffer_to_buffer(&src, from, &lse_scratch, to, size);
        }
        let table_buf = scratch("wgpu-attention merge table", (table.len() * 32) as u64)?;
        ctx.queue().write_buffer(&table_buf, 0, bytemuck::cast_slice(&table));
        let m = MergeParams {
            batch: b as u32,
            heads: h as u32,
            len: l as u32,
            dim: d as u32,
            parts: parts.len() as u32,
            flags: 1,
            o_off: 0,
            o_sb: (h * l * d) as u32,
            o_sh: (l * d) as u32,
            o_sl: d as u32,
            lse_off: 0,
            _pad: 0,
        };
        let params = kernels::params_buffer(ctx, &m);
        let step = flash_decode::merge_step(
            ctx,
            dtype,
            dtype == DType::F16,
            &m,
            &params,
            [
                &BoundBuffer::whole(&o_scratch),
                &BoundBuffer::whole(&lse_scratch),
                &BoundBuffer::whole(&table_buf),
            ],
            &kernels::bind_tensor(ctx, &out, "out")?.0,
            &kernels::bind_tensor(ctx, &lse, "lse")?.0,
        )?;
        kernels::encode_steps(&mut encoder, &[step], None);
        ctx.queue().submit([encoder.finish()]);
        Ok(())
    })?;
    Ok((out, lse))
}

fn too_large(x: u64) -> Error {
    Error::Limit {
        what: "merge part offset or stride".into(),
        limit: "2^32 - 1 elements (32-bit indices)",
        needed: x,
        max: u32::MAX as u64,
    }
}

/// Bytes `[start, end)` of a tensor's buffer that a 4-aligned copy of the tensor covers.
fn window(t: &Tensor) -> (u64, u64) {
    let start = t.offset() / 4 * 4;
    let end = padded_size(t.end_byte()).min(t.buffer().size());
    (start, end.max(start))
}

/// Checks the parts; returns the common O shape [B, H, L, D].
fn validate_parts(ctx: &Context, parts: &[(&Tensor, &Tensor)]) -> Result<[usize; 4]> {
    let Some((o0, _)) = parts.first() else {
        return Err(Error::InvalidOption {
            name: "parts",
            value: 0.0,
            why: "merging needs at least one (O, LSE) part",
        });
    };
    crate::tensor::check_operand_axes("o", o0, 4..=4, &[0, 1, 2])?;
    let s = o0.shape();
    let shape = [s[0], s[1], s[2], s[3]];
    if !matches!(o0.dtype(), DType::F32 | DType::F16) {
        return Err(Error::DType {
            name: "o",
            got: o0.dtype(),
            expected: "f32 or f16",
        });
    }
    if o0.dtype() == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 merge",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    for (o, x) in parts {
        o.check_device("o", ctx)?;
        x.check_device("lse", ctx)?;
        if o.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: "o",
                expected: shape.to_vec(),
                got: o.shape().to_vec(),
            });
        }
        if o.dtype() != o0.dtype() {
            return Err(Error::DType {
                name: "o",
                got: o.dtype(),
                expected: o0.dtype().name(),
            });
        }
        if o.strides()[3] != 1 && shape[3] != 1 {
            return Err(Error::Strides {
                name: "o",
                shape: o.shape().to_vec(),
                strides: o.strides().to_vec(),
                why: "the last dimension must be contiguous (stride 1)",
            });
        }
        if x.shape() != &shape[..3] {
            return Err(Error::ShapeMismatch {
                name: "lse",
                expected: shape[..3].to_vec(),
                got: x.shape().to_vec(),
            });
        }
        if x.dtype() != DType::F32 {
            return Err(Error::DType {
                name: "lse",
                got: x.dtype(),
                expected: "f32",
            });
        }
        for (name, t) in [("o", o), ("lse", x)] {
            if !t.buffer().usage().contains(wgpu::BufferUsages::COPY_SRC) {
                return Err(Error::BufferUsage {
                    name,
                    needed: wgpu::BufferUsages::COPY_SRC,
                    has: t.buffer().usage(),
                });
            }
        }
    }
    Ok(shape)
}
