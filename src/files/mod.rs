//! Tensors from and to files: `.npy` ([`npy`]: f32, f16 or bool in C order; u32 is written too;
//! integer tensors of lengths, offsets or page ids read as u32) and named tensors of a
//! `.safetensors` file ([`safetensors`](mod@safetensors)), each checked from its header before its data is read.
//! The `wgpu-attention` command line reads its `run` inputs and writes its outputs with these;
//! the benchmark harness reads the family's inputs.
//!
//! Every failure is an [`Error::Io`] naming the file and saying what is wrong in one line.

use std::path::Path;

pub mod npy;
pub mod safetensors;

pub use self::safetensors::{
    check_safetensors, read_safetensors, read_safetensors_bytes, read_safetensors_offsets, read_safetensors_u32,
    safetensors_names,
};
pub use npy::{read_npy, read_npy_bytes, read_npy_limited, read_npy_offsets, read_npy_u32, write_npy};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// Host data of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 16-bit floats.
    F16(Vec<half::f16>),
    /// Booleans (one byte each on disk and on the GPU).
    Bool(Vec<bool>),
    /// 32-bit unsigned integers (sampled indices of hard attention).
    U32(Vec<u32>),
}

/// A tensor read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: HostData,
}

impl HostTensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::Bool(_) => DType::Bool,
            HostData::U32(_) => DType::U32,
        }
    }

    /// Float data widened to f32 (`None` for bool and u32).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match &self.data {
            HostData::F32(v) => Some(v.clone()),
            HostData::F16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            HostData::Bool(_) | HostData::U32(_) => None,
        }
    }

    /// Float data converted to `dtype` (f32 or f16); bool and u32 data are returned unchanged.
    pub fn converted(&self, dtype: DType) -> HostTensor {
        let data = match (&self.data, dtype) {
            (HostData::F16(v), DType::F32) => HostData::F32(v.iter().map(|x| x.to_f32()).collect()),
            (HostData::F32(v), DType::F16) => HostData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
            (d, _) => d.clone(),
        };
        HostTensor {
            shape: self.shape.clone(),
            data,
        }
    }

    /// Uploads the tensor.
    pub fn upload(&self, ctx: &Context) -> Result<Tensor> {
        match &self.data {
            HostData::F32(v) => Tensor::from_slice(ctx, v, &self.shape),
            HostData::F16(v) => Tensor::from_slice(ctx, v, &self.shape),
            HostData::Bool(v) => Tensor::from_slice(ctx, v, &self.shape),
            HostData::U32(v) => Tensor::from_slice(ctx, v, &self.shape),
        }
    }

    /// Downloads a tensor (any dtype).
    pub fn download(ctx: &Context, t: &Tensor) -> Result<HostTensor> {
        let data = match t.dtype() {
            DType::F32 => HostData::F32(t.to_vec(ctx)?),
            DType::F16 => HostData::F16(t.to_vec(ctx)?),
            DType::Bool => HostData::Bool(t.to_vec(ctx)?),
            DType::U32 => HostData::U32(t.to_vec(ctx)?),
        };
        Ok(HostTensor {
            shape: t.shape().to_vec(),
            data,
        })
    }
}

pub(crate) fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into()),
    }
}

pub(crate) fn read_all(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Broadcast shape [B|1, H|1, Lq, Lk] of a 2-D or 4-D mask or bias (for the CPU reference's
/// [`Broadcast`](crate::reference::Broadcast)); zeros for any other rank.
pub fn broadcast_shape(shape: &[usize]) -> [usize; 4] {
    match shape {
        [lq, lk] => [1, 1, *lq, *lk],
        [b, h, lq, lk] => [*b, *h, *lq, *lk],
        _ => [0; 4],
    }
}

/// Integers (lengths, offsets, page ids) as u32: u32 values, or i32 / i64 / u64 values within
/// 0 ..= u32::MAX.
fn to_u32<T: Copy + TryInto<u32> + std::fmt::Display>(path: &Path, role: &str, values: &[T]) -> Result<Vec<u32>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            x.try_into()
                .map_err(|_| bad(path, format!("{role}: value {x} at entry {i} is not in 0 ..= 2^32 - 1")))
        })
        .collect()
}

/// Sequence offsets (`cu_seqlens`, B + 1 entries): a 1-D integer tensor.
fn offsets(path: &Path, role: &str, t: HostTensor) -> Result<Vec<u32>> {
    match (t.shape.len(), t.data) {
        (1, HostData::U32(v)) => Ok(v),
        _ => Err(bad(
            path,
            format!(
                "{role}: offsets must be a 1-D array of B + 1 entries, got shape {:?}",
                t.shape
            ),
        )),
    }
}
