//! The crate's error type: every failure is reported here, before or after dispatch, never as a panic.

use crate::tensor::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in wgpu-attention.
///
/// Variants carry the values involved so that a message alone is enough to fix the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (environment variables or defaults).
    #[error("no GPU adapter found{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    NoAdapter(String),

    /// The adapter refused to create a device.
    #[error("device request failed: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),

    /// A tensor does not have the expected rank.
    #[error("{name}: expected rank {expected}, got shape {shape:?}")]
    Rank {
        name: &'static str,
        expected: usize,
        shape: Vec<usize>,
    },

    /// Two tensors (or a tensor and the problem) disagree on a dimension.
    #[error("{name}: shape {got:?} does not match the expected {expected:?}")]
    ShapeMismatch {
        name: &'static str,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    /// A dimension that must be at least 1 is zero (attention heads and head dims, GEMM and
    /// family operands; an empty B, Lq or Lk is valid attention, see [`crate::attention()`]).
    #[error("{name}: dimension {axis} is zero (shape {shape:?})")]
    ZeroDim {
        name: &'static str,
        axis: usize,
        shape: Vec<usize>,
    },

    /// The number of query heads is not a multiple of the number of key/value heads.
    #[error("query heads ({hq}) must be a multiple of key/value heads ({hkv})")]
    HeadRatio { hq: usize, hkv: usize },

    /// A mask or bias cannot be broadcast to [B, Hq, Lq, Lk].
    #[error(
        "{name}: shape {got:?} cannot broadcast to [B, Hq, Lq, Lk] = {target:?} (each leading dim must be 1 or equal)"
    )]
    Broadcast {
        name: &'static str,
        got: Vec<usize>,
        target: [usize; 4],
    },

    /// A tensor has the wrong element type for its role.
    #[error("{name}: dtype {got:?} is not accepted here (expected {expected})")]
    DType {
        name: &'static str,
        got: DType,
        expected: &'static str,
    },

    /// A scalar option is outside its valid range.
    #[error("option `{name}` = {value} is invalid: {why}")]
    InvalidOption {
        name: &'static str,
        value: f64,
        why: &'static str,
    },

    /// A tensor's strides are not supported (the last dimension must be contiguous).
    #[error("{name}: strides {strides:?} for shape {shape:?} are not supported ({why})")]
    Strides {
        name: &'static str,
        shape: Vec<usize>,
        strides: Vec<usize>,
        why: &'static str,
    },

    /// A host slice or buffer is too small for the shape it is said to hold.
    #[error("{name}: {needed} bytes needed from offset {offset}, buffer holds {available}")]
    BufferTooSmall {
        name: &'static str,
        needed: u64,
        offset: u64,
        available: u64,
    },

    /// A size computed from a shape, strides or offset does not fit in 64 bits.
    #[error(
        "{name}: shape {shape:?} with strides {strides:?} at byte offset {offset} overflows 64-bit byte arithmetic"
    )]
    SizeOverflow {
        name: &'static str,
        shape: Vec<usize>,
        strides: Vec<usize>,
        offset: u64,
    },

    /// A tensor created on one device was passed to a call on another.
    #[error(
        "{name} belongs to another device than the context's (tensors move between devices only through the host)"
    )]
    DeviceMismatch { name: &'static str },

    /// An output would overwrite an input while the kernel still reads it.
    #[error("{output} overlaps {input}: an output must not share bytes with an input of the same call")]
    Aliasing { output: &'static str, input: &'static str },

    /// A buffer offset is not aligned as the element type or the device requires.
    #[error("{name}: byte offset {offset} is not a multiple of {align}")]
    Misaligned {
        name: &'static str,
        offset: u64,
        align: u64,
    },

    /// A buffer lacks a usage flag the operation needs.
    #[error("{name}: buffer lacks usage {needed:?} (has {has:?})")]
    BufferUsage {
        name: &'static str,
        needed: wgpu::BufferUsages,
        has: wgpu::BufferUsages,
    },

    /// A device limit would be exceeded; the message names the limit.
    #[error("{what} needs {needed}, but the device limit `{limit}` is {max}")]
    Limit {
        what: String,
        limit: &'static str,
        needed: u64,
        max: u64,
    },

    /// A device feature the operation needs was not granted.
    #[error("{what} needs the device feature {feature:?}, which was not granted")]
    MissingFeature {
        what: &'static str,
        feature: wgpu::Features,
    },

    /// An append would take a KV-cache sequence past the cache's capacity (nothing was written).
    #[error(
        "KV cache sequence {batch}: {length} rows + {appended} appended exceed the capacity of {capacity} rows (nothing was written)"
    )]
    CacheFull {
        batch: usize,
        length: u32,
        appended: u32,
        capacity: usize,
    },

    /// A paged KV-cache position maps to no page of the pool (nothing was recorded).
    #[error(
        "KV cache sequence {batch}: position {position} maps to page {page}, outside the {pages} pages of the pool (map it with set_block_table; nothing was recorded)"
    )]
    PageUnmapped {
        batch: usize,
        position: u64,
        page: u32,
        pages: usize,
    },

    /// A rotary-embedding position lies beyond the rope's cos/sin tables.
    #[error("rotary position {position} is beyond the rope tables ({max_positions} positions)")]
    PositionOutOfRange { position: u64, max_positions: usize },

    /// The offsets of packed sequences (`cu_seqlens`, see [`crate::attention_varlen()`]) disagree
    /// with each other or with the packed tensors.
    #[error("{name}: {why}")]
    SeqOffsets { name: &'static str, why: String },

    /// A shader did not compose or compile: each message placed at `shaders/FILE:LINE[:COLUMN]`
    /// of the piece it comes from.
    #[error("shader {module} failed: {}", .messages.join("; "))]
    Shader { module: String, messages: Vec<String> },

    /// The operation or combination of options is not supported by the selected kernel.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// wgpu reported a validation or out-of-memory error inside one of our error scopes.
    #[error("wgpu error during {during}: {source}")]
    Wgpu {
        during: &'static str,
        #[source]
        source: wgpu::Error,
    },

    /// The device was lost or destroyed (`Device::destroy`, a driver reset, ...): no further work
    /// can run on it. Create a new [`crate::Context`].
    #[error("the device is lost or destroyed (during {during})")]
    DeviceLost { during: &'static str },

    /// Mapping a buffer for readback failed.
    #[error("buffer readback failed: {0}")]
    Map(#[from] wgpu::BufferAsyncError),

    /// Accessing a mapped buffer range failed.
    #[error("mapped range: {0}")]
    MapRange(#[from] wgpu::MapRangeError),

    /// Waiting on the device failed (device lost or timeout).
    #[error("device poll failed: {0}")]
    Poll(#[from] wgpu::PollError),

    /// Any I/O failure (files read or written by the CLI and tuner).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
