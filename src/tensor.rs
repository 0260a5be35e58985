//! GPU tensors: a buffer, a byte offset into it, a shape, strides (in elements) and a dtype.
//!
//! A [`Tensor`] either owns a buffer the crate allocated ([`Tensor::from_slice`], [`Tensor::zeros`])
//! or wraps a caller's buffer without copying ([`Tensor::from_buffer`]). Cloning is cheap: wgpu
//! buffers are reference counted.

use crate::context::Context;
use crate::error::{Error, Result};

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (storage only; kernels accumulate in f32). Needs `SHADER_F16` on the GPU.
    F16,
    /// 32-bit unsigned integer (key-padding lengths, indices).
    U32,
    /// One byte per element, 0 = false, anything else = true (the layout of a NumPy/PyTorch bool array).
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
            DType::Bool => 1,
        }
    }

    /// Lower-case name, as used by the CLI and reports.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::Bool => "bool",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Host element types that can be uploaded to and downloaded from a [`Tensor`].
pub trait Element: Copy + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Writes the little-endian bytes of `self` into exactly `DTYPE.size()` bytes.
    fn write_le(self, out: &mut [u8]);
    /// Reads one element from exactly `DTYPE.size()` bytes.
    fn read_bytes(bytes: &[u8]) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn read_bytes(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn read_bytes(b: &[u8]) -> Self {
        half::f16::from_le_bytes([b[0], b[1]])
    }
}

impl Element for u32 {
    const DTYPE: DType = DType::U32;
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes());
    }
    fn read_bytes(b: &[u8]) -> Self {
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn write_le(self, out: &mut [u8]) {
        out[0] = self as u8;
    }
    fn read_bytes(b: &[u8]) -> Self {
        b[0] != 0
    }
}

/// Row-major (C-order) strides, in elements, for `shape` (saturating at `usize::MAX`: such a
/// shape is refused by every constructor with [`Error::SizeOverflow`]).
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// A tensor living in a wgpu buffer.
#[derive(Debug, Clone)]
pub struct Tensor {
    buffer: wgpu::Buffer,
    /// The device the buffer was created on, when the crate created it (a caller's buffer
    /// wrapped with [`Tensor::from_buffer`] has none: wgpu itself refuses it on another device).
    device: Option<wgpu::Device>,
    offset: u64,
    shape: Vec<usize>,
    strides: Vec<usize>,
    dtype: DType,
}

/// Usages every buffer the crate allocates gets, so results can be reused, copied and read back.
pub(crate) const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// Uploads a host slice as a new contiguous tensor of `shape` (written straight into the
    /// mapped buffer: no intermediate host copy).
    pub fn from_slice<T: Element>(ctx: &Context, data: &[T], shape: &[usize]) -> Result<Self> {
        let count = checked_numel("host data", shape)?;
        if data.len() != count {
            return Err(Error::ShapeMismatch {
                name: "host data",
                expected: shape.to_vec(),
                got: vec![data.len()],
            });
        }
        let size = T::DTYPE.size();
        Self::upload_with(ctx, shape, T::DTYPE, |mut dst| {
            // Through a small staging block: mapped memory is write-only.
            let mut staging = [0u8; 16 * 1024];
            for block in data.chunks(staging.len() / size) {
                let bytes = &mut staging[..block.len() * size];
                for (x, out) in block.iter().zip(bytes.chunks_exact_mut(size)) {
                    x.write_le(out);
                }
                let (mut head, rest) = dst.split_at(bytes.len());
                head.copy_from_slice(bytes);
                dst = rest;
            }
            Ok(())
        })
    }

    /// Uploads raw little-endian bytes as a new contiguous tensor.
    pub fn from_bytes(ctx: &Context, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Self> {
        let needed = checked_bytes("host bytes", shape, dtype)?;
        if bytes.len() as u64 != needed {
            return Err(Error::BufferTooSmall {
                name: "host bytes",
                needed,
                offset: 0,
                available: bytes.len() as u64,
            });
        }
        Self::upload_with(ctx, shape, dtype, |mut dst| {
            dst.copy_from_slice(bytes);
            Ok(())
        })
    }

    /// Creates a contiguous tensor and lets `fill` write its little-endian bytes (exactly
    /// numel · size bytes, zero-initialised) directly into the mapped buffer, so data can be
    /// streamed into the GPU without a full host copy. The size is checked against the device's
    /// limits before `fill` runs; an error from `fill` is returned as it is.
    pub fn upload_with(
        ctx: &Context,
        shape: &[usize],
        dtype: DType,
        fill: impl FnOnce(wgpu::WriteOnly<'_, [u8]>) -> Result<()>,
    ) -> Result<Self> {
        let needed = checked_bytes("tensor upload", shape, dtype)?;
        let size = padded_size(needed);
        ctx.check_buffer_size("tensor upload", size)?;
        let buffer = ctx.scoped("tensor upload", || {
            let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention tensor"),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: true,
            });
            let filled = fill(buffer.slice(..).get_mapped_range_mut()?.slice(..needed as usize));
            buffer.unmap();
            filled.map(|()| buffer)
        })?;
        Ok(Self {
            buffer,
            device: Some(ctx.device().clone()),
            offset: 0,
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A new zero-filled contiguous tensor.
    pub fn zeros(ctx: &Context, shape: &[usize], dtype: DType) -> Result<Self> {
        let size = padded_size(checked_bytes("tensor allocation", shape, dtype)?);
        ctx.check_buffer_size("tensor allocation", size)?;
        // Out of memory or a lost device is an error here, not an unusable tensor later.
        let buffer = ctx.scoped("tensor allocation", || {
            Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention tensor"),
                size,
                usage: TENSOR_USAGE,
                mapped_at_creation: false,
            }))
        })?;
        Ok(Self {
            buffer,
            device: Some(ctx.device().clone()),
            offset: 0,
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Wraps a caller's buffer (no copy): contiguous `shape` of `dtype` starting at byte `offset`.
    ///
    /// The buffer needs `STORAGE` usage to be read by kernels (and `COPY_SRC` to be read back).
    /// Use [`Tensor::with_strides`] for non-contiguous layouts such as [B, L, H, D]. The buffer
    /// must belong to the device of the context it is used with: the crate records the device of
    /// the tensors it creates and refuses them elsewhere ([`Error::DeviceMismatch`]), but it cannot
    /// see which device a caller's buffer was made on.
    pub fn from_buffer(buffer: &wgpu::Buffer, offset: u64, shape: &[usize], dtype: DType) -> Result<Self> {
        let t = Self {
            buffer: buffer.clone(),
            device: None,
            offset,
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            dtype,
        };
        t.check_fits("tensor")?;
        Ok(t)
    }

    /// The same data viewed with other strides (in elements). The buffer must hold every element
    /// the strides can reach.
    pub fn with_strides(mut self, strides: &[usize]) -> Result<Self> {
        if strides.len() != self.shape.len() {
            return Err(Error::Strides {
                name: "tensor",
                shape: self.shape.clone(),
                strides: strides.to_vec(),
                why: "one stride per dimension is needed",
            });
        }
        self.strides = strides.to_vec();
        self.check_fits("tensor")?;
        Ok(self)
    }

    /// A view of the same buffer starting `offset` elements past this tensor's first element, with
    /// any shape and strides (in elements): sub-matrices, broadcasts (stride 0), head splits.
    pub fn view(&self, offset: usize, shape: &[usize], strides: &[usize]) -> Result<Self> {
        if strides.len() != shape.len() {
            return Err(Error::Strides {
                name: "view",
                shape: shape.to_vec(),
                strides: strides.to_vec(),
                why: "one stride per dimension is needed",
            });
        }
        let overflow = || Error::SizeOverflow {
            name: "view",
            shape: shape.to_vec(),
            strides: strides.to_vec(),
            offset: self.offset,
        };
        let offset = (offset as u64)
            .checked_mul(self.dtype.size() as u64)
            .and_then(|bytes| bytes.checked_add(self.offset))
            .ok_or_else(overflow)?;
        let t = Self {
            buffer: self.buffer.clone(),
            device: self.device.clone(),
            offset,
            strides: strides.to_vec(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        };
        t.check_fits("view")?;
        Ok(t)
    }

    /// The same buffer viewed with another shape (contiguous strides); the element count must match.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        if !self.is_contiguous() || checked_numel("reshape", shape)? != self.numel() {
            return Err(Error::ShapeMismatch {
                name: "reshape",
                expected: self.shape.clone(),
                got: shape.to_vec(),
            });
        }
        Ok(Self {
            buffer: self.buffer.clone(),
            device: self.device.clone(),
            offset: self.offset,
            strides: contiguous_strides(shape),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// Views a [B, L, H, D] buffer as the logical [B, H, L, D] tensor the kernels expect
    /// (FlashAttention / candle-flash-attn layout), without copying.
    pub fn from_blhd(buffer: &wgpu::Buffer, offset: u64, blhd: [usize; 4], dtype: DType) -> Result<Self> {
        let [b, l, h, d] = blhd;
        let t = Self::from_buffer(buffer, offset, &[b, l, h, d], dtype)?;
        let s = t.strides.clone();
        Self {
            shape: vec![b, h, l, d],
            ..t
        }
        .with_strides(&[s[0], s[2], s[1], s[3]])
    }

    /// Checks that the tensor can be used on `ctx`'s device: [`Error::DeviceMismatch`] when the
    /// crate created it on another device (contexts sharing one device share tensors).
    pub fn check_device(&self, name: &'static str, ctx: &Context) -> Result<()> {
        match &self.device {
            Some(device) if device != ctx.device() => Err(Error::DeviceMismatch { name }),
            _ => Ok(()),
        }
    }

    /// The wgpu buffer holding the data.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Byte offset of element 0 inside [`Tensor::buffer`].
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Strides in elements, one per dimension.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// True when both tensors live in the same buffer and their byte spans (first to one past
    /// the last reachable element) intersect. Empty tensors overlap nothing.
    pub fn overlaps(&self, other: &Tensor) -> bool {
        let span = |t: &Tensor| (t.offset, t.end_byte());
        let ((a0, a1), (b0, b1)) = (span(self), span(other));
        self.buffer == other.buffer && a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1
    }

    /// True when the strides are row-major for the shape.
    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(&self.shape)
    }

    /// Bytes from the buffer start to one past the last reachable element (`None` on overflow;
    /// every constructor checks it, so a constructed tensor always has one).
    pub(crate) fn checked_end_byte(&self) -> Option<u64> {
        if self.shape.contains(&0) {
            return Some(self.offset);
        }
        let mut last: u64 = 0;
        for (&n, &s) in self.shape.iter().zip(&self.strides) {
            last = last.checked_add((n as u64 - 1).checked_mul(s as u64)?)?;
        }
        last.checked_add(1)?
            .checked_mul(self.dtype.size() as u64)?
            .checked_add(self.offset)
    }

    /// Bytes from the buffer start to one past the last reachable element.
    pub(crate) fn end_byte(&self) -> u64 {
        self.checked_end_byte()
            .expect("tensor extents are checked at construction")
    }

    pub(crate) fn check_fits(&self, name: &'static str) -> Result<()> {
        if !self.offset.is_multiple_of(self.dtype.size() as u64) {
            return Err(Error::Misaligned {
                name,
                offset: self.offset,
                align: self.dtype.size() as u64,
            });
        }
        let end = self.checked_end_byte().ok_or_else(|| Error::SizeOverflow {
            name,
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
        })?;
        checked_numel(name, &self.shape)?;
        if end > self.buffer.size() {
            return Err(Error::BufferTooSmall {
                name,
                needed: end - self.offset,
                offset: self.offset,
                available: self.buffer.size(),
            });
        }
        Ok(())
    }

    /// Copies the tensor back to the host in logical row-major order.
    ///
    /// `T` must match the dtype; use [`Tensor::to_f32_vec`] to widen f16. Native only: in the
    /// browser use [`Tensor::to_vec_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_vec<T: Element>(&self, ctx: &Context) -> Result<Vec<T>> {
        pollster::block_on(self.to_vec_async(ctx))
    }

    /// [`Tensor::to_vec`] as a future: resolves once the GPU work before it is done and the data
    /// is mapped (in the browser, yielding to the event loop meanwhile; on native it polls the
    /// device). In the browser it also reports a wgpu error captured in an earlier call (see
    /// [`Context::wait_async`]).
    pub async fn to_vec_async<T: Element>(&self, ctx: &Context) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::DType {
                name: "download",
                got: self.dtype,
                expected: T::DTYPE.name(),
            });
        }
        let bytes = self.read_span(ctx).await?;
        let es = self.dtype.size();
        let mut out = Vec::with_capacity(self.numel());
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..self.numel() {
            let e: usize = index.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
            out.push(T::read_bytes(&bytes[e * es..(e + 1) * es]));
            for ax in (0..index.len()).rev() {
                index[ax] += 1;
                if index[ax] < self.shape[ax] {
                    break;
                }
                index[ax] = 0;
            }
        }
        Ok(out)
    }

    /// Downloads a float tensor (f32 or f16) as f32. Native only: in the browser use
    /// [`Tensor::to_f32_vec_async`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn to_f32_vec(&self, ctx: &Context) -> Result<Vec<f32>> {
        pollster::block_on(self.to_f32_vec_async(ctx))
    }

    /// [`Tensor::to_f32_vec`] as a future (see [`Tensor::to_vec_async`]).
    pub async fn to_f32_vec_async(&self, ctx: &Context) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => self.to_vec_async::<f32>(ctx).await,
            DType::F16 => Ok(self
                .to_vec_async::<half::f16>(ctx)
                .await?
                .into_iter()
                .map(f32::from)
                .collect()),
            other => Err(Error::DType {
                name: "download",
                got: other,
                expected: "f32 or f16",
            }),
        }
    }

    /// Reads the bytes covering every reachable element, starting at element 0.
    async fn read_span(&self, ctx: &Context) -> Result<Vec<u8>> {
        self.check_device("download", ctx)?;
        if !self.buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
            return Err(Error::BufferUsage {
                name: "download",
                needed: wgpu::BufferUsages::COPY_SRC,
                has: self.buffer.usage(),
            });
        }
        let start = self.offset & !(wgpu::COPY_BUFFER_ALIGNMENT - 1);
        let end = padded_size(self.end_byte()).min(self.buffer.size());
        let end = end.max(start + 4);
        let bytes = ctx.read_buffer_async(&self.buffer, start, end - start).await?;
        let skip = (self.offset - start) as usize;
        Ok(bytes[skip..].to_vec())
    }
}

/// The element count of `shape`, or [`Error::SizeOverflow`].
pub(crate) fn checked_numel(name: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::SizeOverflow {
            name,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        })
}

/// The byte size of a contiguous `shape` of `dtype`, or [`Error::SizeOverflow`].
pub(crate) fn checked_bytes(name: &'static str, shape: &[usize], dtype: DType) -> Result<u64> {
    (checked_numel(name, shape)? as u64)
        .checked_mul(dtype.size() as u64)
        .ok_or_else(|| Error::SizeOverflow {
            name,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        })
}

/// Rounds a byte size up to wgpu's copy alignment (and at least 4 bytes).
pub(crate) fn padded_size(bytes: u64) -> u64 {
    bytes
        .max(4)
        .div_ceil(wgpu::COPY_BUFFER_ALIGNMENT)
        .saturating_mul(wgpu::COPY_BUFFER_ALIGNMENT)
}

/// Checks that an input has a rank in `ranks` and no zero-sized axis.
pub(crate) fn check_operand(name: &'static str, t: &Tensor, ranks: std::ops::RangeInclusive<usize>) -> Result<()> {
    check_operand_axes(name, t, ranks, &[])
}

/// Checks that an input has a rank in `ranks` and no zero-sized axis except those in `may_be_empty`.
pub(crate) fn check_operand_axes(
    name: &'static str,
    t: &Tensor,
    ranks: std::ops::RangeInclusive<usize>,
    may_be_empty: &[usize],
) -> Result<()> {
    if !ranks.contains(&t.shape().len()) {
        return Err(Error::Rank {
            name,
            expected: *ranks.start(),
            shape: t.shape().to_vec(),
        });
    }
    if let Some(axis) = (0..t.shape().len()).find(|&a| t.shape()[a] == 0 && !may_be_empty.contains(&a)) {
        return Err(Error::ZeroDim {
            name,
            axis,
            shape: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// Checks that every stride fits the kernels' 32-bit index arithmetic.
pub(crate) fn check_strides_fit(name: &'static str, t: &Tensor) -> Result<()> {
    if t.strides().iter().any(|&s| s > u32::MAX as usize) {
        return Err(Error::Strides {
            name,
            shape: t.shape().to_vec(),
            strides: t.strides().to_vec(),
            why: "strides must fit in 32 bits",
        });
    }
    Ok(())
}
