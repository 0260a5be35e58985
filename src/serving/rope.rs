//! Rotary position embedding (RoPE, docs/ATTENTION.md §9): the first `rotary_dim` columns of
//! every head row are rotated in pairs by angles that depend on the row's position; the other
//! columns pass through.
//!
//! Pair i (0 ≤ i < rotary_dim / 2) is columns (2i, 2i + 1) in the [`RopeStyle::Interleaved`]
//! convention (GPT-J, the original RoFormer) and (i, i + rotary_dim / 2) in the
//! [`RopeStyle::HalfSplit`] one (GPT-NeoX, Llama in Hugging Face layout). At position `pos` the
//! pair (x₀, x₁) becomes (x₀·cos θ − x₁·sin θ, x₁·cos θ + x₀·sin θ) with θ = pos · base^(−2i/rotary_dim)
//! ([`Rope::new`], base 10000) or the caller's tables ([`Rope::from_tables`]).
//!
//! The angles live in cos/sin tables [max_positions, rotary_dim / 2] (f32) computed once on the
//! host in f64, so every device rotates with correctly rounded cos and sin whatever its `sin`/`cos`
//! precision. Positions are checked against the tables on the host before any work is recorded.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, kv_write, BoundBuffer};
use crate::tensor::{DType, Tensor};

/// The default base of the rotation frequencies (RoFormer, Llama).
pub const DEFAULT_THETA_BASE: f64 = 10000.0;

/// Which columns form the rotated pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RopeStyle {
    /// Pairs (2i, 2i + 1): GPT-J, RoFormer, `rotate_every_two`.
    Interleaved,
    /// Pairs (i, i + rotary_dim / 2): GPT-NeoX, Hugging Face Llama (`rotate_half`).
    #[default]
    HalfSplit,
}

/// A rotary embedding: a convention, a rotary dim and the cos/sin tables of its positions.
/// Cloning is cheap (the tables are GPU tensors).
#[derive(Debug, Clone)]
pub struct Rope {
    style: RopeStyle,
    rotary_dim: usize,
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    /// θ = pos · 10000^(−2i/rotary_dim) for positions 0 .. `max_positions`.
    pub fn new(ctx: &Context, style: RopeStyle, rotary_dim: usize, max_positions: usize) -> Result<Self> {
        Self::with_theta_base(ctx, style, rotary_dim, max_positions, DEFAULT_THETA_BASE)
    }

    /// θ = pos · base^(−2i/rotary_dim) for positions 0 .. `max_positions`.
    pub fn with_theta_base(
        ctx: &Context,
        style: RopeStyle,
        rotary_dim: usize,
        max_positions: usize,
        theta_base: f64,
    ) -> Result<Self> {
        check_rotary_dim(rotary_dim)?;
        if !(theta_base.is_finite() && theta_base > 0.0) {
            return Err(Error::InvalidOption {
                name: "theta_base",
                value: theta_base,
                why: "must be finite and > 0",
            });
        }
        let half = rotary_dim / 2;
        let n = crate::tensor::checked_numel("rope tables", &[max_positions, half])?;
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for pos in 0..max_positions {
            for i in 0..half {
                let angle = rope_angle(theta_base, rotary_dim, pos, i);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = [max_positions, half];
        Ok(Self {
            style,
            rotary_dim,
            cos: Tensor::from_slice(ctx, &cos, &shape)?,
            sin: Tensor::from_slice(ctx, &sin, &shape)?,
        })
    }

    /// Caller-given tables cos θ and sin θ, each f32 [max_positions, rotary_dim / 2] and
    /// contiguous: row `pos`, column `i` is the angle of pair i at position `pos`.
    pub fn from_tables(style: RopeStyle, cos: Tensor, sin: Tensor) -> Result<Self> {
        for (name, t) in [("rope cos", &cos), ("rope sin", &sin)] {
            crate::tensor::check_operand_axes(name, t, 2..=2, &[0])?;
            if t.dtype() != DType::F32 {
                return Err(Error::DType {
                    name,
                    got: t.dtype(),
                    expected: "f32",
                });
            }
            if !t.is_contiguous() {
                return Err(Error::Strides {
                    name,
                    shape: t.shape().to_vec(),
                    strides: t.strides().to_vec(),
                    why: "must be contiguous",
                });
            }
        }
        if sin.shape() != cos.shape() {
            return Err(Error::ShapeMismatch {
                name: "rope sin",
                expected: cos.shape().to_vec(),
                got: sin.shape().to_vec(),
            });
        }
        Ok(Self {
            style,
            rotary_dim: 2 * cos.shape()[1],
            cos,
            sin,
        })
    }

    /// The pair convention.
    pub fn style(&self) -> RopeStyle {
        self.style
    }
    /// Rotated columns (even); the rest of each head passes through.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }
    /// Positions the tables cover (0 .. this).
    pub fn max_positions(&self) -> usize {
        self.cos.shape()[0]
    }
    /// cos θ [max_positions, rotary_dim / 2].
    pub fn cos(&self) -> &Tensor {
        &self.cos
    }
    /// sin θ [max_positions, rotary_dim / 2].
    pub fn sin(&self) -> &Tensor {
        &self.sin
    }

    /// Checks the rope against a head dim and the last position it will rotate.
    pub(crate) fn check(&self, ctx: &Context, dim: usize, last_position: Option<u64>) -> Result<()> {
        self.cos.check_device("rope cos", ctx)?;
        self.sin.check_device("rope sin", ctx)?;
        if self.rotary_dim > dim {
            return Err(Error::InvalidOption {
                name: "rotary_dim",
                value: self.rotary_dim as f64,
                why: "must not exceed the head dim",
            });
        }
        if let Some(pos) = last_position.filter(|&p| p >= self.max_positions() as u64) {
            return Err(Error::PositionOutOfRange {
                position: pos,
                max_positions: self.max_positions(),
            });
        }
        Ok(())
    }

    /// Fills the rope fields of a `kv_write` uniform; returns the bound cos and sin tables.
    pub(crate) fn bind(&self, ctx: &Context, p: &mut kv_write::WriteParams) -> Result<(BoundBuffer, BoundBuffer)> {
        let (cos, cos_off) = kernels::bind_tensor(ctx, &self.cos, "rope cos")?;
        let (sin, sin_off) = kernels::bind_tensor(ctx, &self.sin, "rope sin")?;
        p.flags |= kv_write::flags::ROPE;
        if self.style == RopeStyle::HalfSplit {
            p.flags |= kv_write::flags::HALF_SPLIT;
        }
        p.rotary_dim = self.rotary_dim as u32;
        p.table_rows = self.max_positions() as u32;
        p.cos_off = cos_off;
        p.sin_off = sin_off;
        Ok((cos, sin))
    }
}

/// θ of pair `i` at `pos`: pos · base^(−2i/rotary_dim), in f64.
pub fn rope_angle(theta_base: f64, rotary_dim: usize, pos: usize, i: usize) -> f64 {
    pos as f64 * theta_base.powf(-2.0 * i as f64 / rotary_dim as f64)
}

fn check_rotary_dim(rotary_dim: usize) -> Result<()> {
    if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
        return Err(Error::InvalidOption {
            name: "rotary_dim",
            value: rotary_dim as f64,
            why: "must be even and at least 2",
        });
    }
    Ok(())
}

/// Rotates X [B, H, L, D] (f32 or f16, any strides with a contiguous last dim): row l of batch b
/// is at position `start_positions[b] + l`. Returns a new contiguous tensor; one submission.
pub fn rope(ctx: &Context, x: &Tensor, start_positions: &[u32], rope: &Rope) -> Result<Tensor> {
    ctx.scoped("rope submit", || {
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        let out = rope_encode(ctx, &mut enc, x, start_positions, rope)?;
        ctx.queue().submit([enc.finish()]);
        Ok(out)
    })
}

/// [`rope()`] recorded into the caller's encoder.
pub fn rope_encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    x: &Tensor,
    start_positions: &[u32],
    rope: &Rope,
) -> Result<Tensor> {
    let b = check_rows_operand(ctx, "x", x)?[0];
    if start_positions.len() != b {
        return Err(Error::ShapeMismatch {
            name: "start_positions",
            expected: vec![b],
            got: vec![start_positions.len()],
        });
    }
    let l = x.shape()[2] as u64;
    let last = start_positions.iter().map(|&s| s as u64 + l).max().filter(|_| l > 0);
    rope.check(ctx, x.shape()[3], last.map(|p| p - 1))?;
    if x.numel() == 0 {
        return Tensor::zeros(ctx, x.shape(), x.dtype());
    }
    let starts = Tensor::from_slice(ctx, start_positions, &[b])?;
    rotate_into_new(ctx, encoder, x, &starts, rope)
}

/// Rotates `x` into a new tensor with positions starts\[b\] + l read on the GPU (the host has
/// checked them against the tables).
pub(crate) fn rotate_into_new(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    x: &Tensor,
    starts: &Tensor,
    rope: &Rope,
) -> Result<Tensor> {
    let out = Tensor::zeros(ctx, x.shape(), x.dtype())?;
    if let Some(step) = rotate_step(ctx, x, &out, starts, rope)? {
        kernels::encode_steps(encoder, &[step], None);
    }
    Ok(out)
}

/// The dispatch rotating `x` into `out` (same shape, contiguous) at positions starts\[b\] + l;
/// `None` when there is nothing to rotate.
pub(crate) fn rotate_step(
    ctx: &Context,
    x: &Tensor,
    out: &Tensor,
    starts: &Tensor,
    rope: &Rope,
) -> Result<Option<kernels::Step>> {
    let s = x.shape();
    if out.numel() == 0 {
        return Ok(None);
    }
    ctx.scoped("rope setup", || {
        let mut p = kv_write::WriteParams {
            batch: s[0] as u32,
            heads: s[1] as u32,
            rows: s[2] as u32,
            dim: s[3] as u32,
            dst_rows: s[2] as u32,
            ..Default::default()
        };
        let (src, src_off) = kernels::bind_tensor(ctx, x, "x")?;
        let (dst, dst_off) = kernels::bind_tensor(ctx, out, "rope out")?;
        let (starts_b, starts_off) = kernels::bind_tensor(ctx, starts, "positions")?;
        p.src = kernels::strides_of(x, src_off);
        p.dst = kernels::strides_of(out, dst_off);
        p.starts_off = starts_off;
        let (cos, sin) = rope.bind(ctx, &mut p)?;
        let unused = kernels::unused_input(ctx);
        kv_write::step(
            ctx,
            x.dtype(),
            &p,
            kv_write::WriteBindings {
                src: &src,
                dst: &dst,
                starts: &starts_b,
                counts: &unused,
                cos: &cos,
                sin: &sin,
                block_table: &unused,
            },
        )
        .map(Some)
    })
}

/// Checks a [B, H, L, D] operand of the row writer (dtype, device, strides, 32-bit indices);
/// returns its shape.
pub(crate) fn check_rows_operand<'a>(ctx: &Context, name: &'static str, t: &'a Tensor) -> Result<&'a [usize]> {
    t.check_device(name, ctx)?;
    crate::tensor::check_operand_axes(name, t, 4..=4, &[0, 2])?;
    if !matches!(t.dtype(), DType::F32 | DType::F16) {
        return Err(Error::DType {
            name,
            got: t.dtype(),
            expected: "f32 or f16",
        });
    }
    if t.dtype() == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 tensors",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    if t.strides()[3] != 1 && t.shape()[3] != 1 {
        return Err(Error::Strides {
            name,
            shape: t.shape().to_vec(),
            strides: t.strides().to_vec(),
            why: "the last dimension must be contiguous (stride 1)",
        });
    }
    crate::tensor::check_strides_fit(name, t)?;
    if t.numel() as u64 > u32::MAX as u64 {
        return Err(Error::Limit {
            what: format!("{name} ({} elements)", t.numel()),
            limit: "2^32 - 1 elements (32-bit element indices)",
            needed: t.numel() as u64,
            max: u32::MAX as u64,
        });
    }
    if !t.buffer().usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::BufferUsage {
            name,
            needed: wgpu::BufferUsages::STORAGE,
            has: t.buffer().usage(),
        });
    }
    Ok(t.shape())
}
