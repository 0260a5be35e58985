//! Tensors from and to files for `wgpu-attention run`: `.npy` (f32, f16 or bool, C order; u32 is
//! written too) and named tensors of a `.safetensors` file; plus the `run` operation itself (upload, attention,
//! download, optional check against the reference).
//!
//! Every failure is an [`Error::Io`] naming the file and saying what is wrong in one line.

use std::path::Path;

mod kv_cache;

pub use kv_cache::{run_kv_cache, KvRunInputs, KvRunOutputs};

use crate::attention::Attention;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::options::AttentionOptions;
use crate::reference::{self, Broadcast, Comparison, HostInputs, Tolerance};
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

/// Reads a `.npy` file holding f32 (`<f4`), f16 (`<f2`) or bool (`|b1`) data in C order.
pub fn read_npy(path: &Path, role: &str) -> Result<HostTensor> {
    read_npy_limited(path, role, u64::MAX)
}

/// Like [`read_npy`], refusing data larger than `max_bytes` (e.g. the device's buffer limit)
/// from the header alone, before any data is read. The data goes from the file straight into
/// the returned tensor: one host copy.
pub fn read_npy_limited(path: &Path, role: &str, max_bytes: u64) -> Result<HostTensor> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    // Magic (6), version (2), header length (2 or 4), then the header itself.
    let mut prefix = vec![0u8; 12.min(file_len as usize)];
    file.read_exact(&mut prefix).map_err(io)?;
    let header_end = npy_header_end(&prefix).unwrap_or(prefix.len());
    if header_end > prefix.len() {
        let mut rest = vec![0u8; header_end - prefix.len()];
        file.read_exact(&mut rest).map_err(|_| {
            bad(
                path,
                format!("{role}: not a valid .npy file (header longer than the file)"),
            )
        })?;
        prefix.extend_from_slice(&rest);
    }
    let (header, data_start) = parse_npy_header(path, &prefix, role)?;
    let data_len = file_len - data_start as u64;
    let data = std::io::BufReader::new(file);
    // The header was read whole; skip what `prefix` holds past it (version 1 reads 12 bytes).
    let extra = &prefix[data_start.min(prefix.len())..];
    npy_data(path, role, header, extra.chain(data), data_len, max_bytes)
}

/// Like [`read_npy`] on the bytes of a `.npy` file; `path` only names it in errors.
pub fn read_npy_bytes(path: &Path, bytes: &[u8], role: &str) -> Result<HostTensor> {
    let (header, data_start) = parse_npy_header(path, bytes, role)?;
    let data = &bytes[data_start..];
    npy_data(path, role, header, data, data.len() as u64, u64::MAX)
}

/// Where the header of a `.npy` file ends, from its first 10 or 12 bytes.
fn npy_header_end(prefix: &[u8]) -> Option<usize> {
    match prefix.get(6)? {
        1 => Some(10 + u16::from_le_bytes([*prefix.get(8)?, *prefix.get(9)?]) as usize),
        2 | 3 => Some(12 + u32::from_le_bytes(prefix.get(8..12)?.try_into().ok()?) as usize),
        _ => None,
    }
}

fn parse_npy_header(path: &Path, bytes: &[u8], role: &str) -> Result<(npyz::NpyHeader, usize)> {
    let invalid = |why: String| bad(path, format!("{role}: not a valid .npy file ({why})"));
    check_npy_header(bytes).map_err(|why| invalid(why.to_string()))?;
    let mut rest: &[u8] = bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest).map_err(|e| invalid(e.to_string()))?;
    Ok((header, bytes.len() - rest.len()))
}

/// Checks the header's dtype, order and size, then reads the data from `data` (`data_len` bytes).
fn npy_data(
    path: &Path,
    role: &str,
    header: npyz::NpyHeader,
    data: impl std::io::Read,
    data_len: u64,
    max_bytes: u64,
) -> Result<HostTensor> {
    let npy = npyz::NpyFile::with_header(header, data);
    if npy.order() == npyz::Order::Fortran {
        return Err(bad(
            path,
            format!("{role}: Fortran-order arrays are not supported (save in C order)"),
        ));
    }
    let type_str = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => {
            return Err(bad(
                path,
                format!("{role}: structured dtype {other:?} is not supported"),
            ))
        }
    };
    let shape: Vec<usize> = npy.shape().iter().map(|&n| n as usize).collect();
    let size: usize = match type_str.as_str() {
        "<f4" | ">f4" => 4,
        "<f2" | ">f2" => 2,
        "|b1" => 1,
        other => {
            return Err(bad(
                path,
                format!("{role}: dtype {other} is not supported (expected float32 <f4, float16 <f2 or bool |b1)"),
            ))
        }
    };
    let needed = shape.iter().try_fold(size as u64, |n, &d| n.checked_mul(d as u64));
    match needed {
        Some(n) if n > max_bytes => {
            return Err(bad(
                path,
                format!("{role}: shape {shape:?} of {type_str} is {n} bytes, more than the device's limit of {max_bytes}"),
            ))
        }
        Some(n) if n <= data_len => {}
        _ => {
            return Err(bad(
                path,
                format!("{role}: truncated data: shape {shape:?} of {type_str} needs more than the {data_len} bytes the file has"),
            ))
        }
    }
    let read_err = |e: std::io::Error| bad(path, format!("{role}: {e}"));
    let data = match size {
        4 => HostData::F32(npy.into_vec().map_err(read_err)?),
        2 => HostData::F16(npy.into_vec().map_err(read_err)?),
        _ => HostData::Bool(npy.into_vec().map_err(read_err)?),
    };
    Ok(HostTensor { shape, data })
}

/// Checks the fixed part of a `.npy` header before the dictionary parser sees it: the magic, a
/// header length within the file, and a single flat dictionary (a valid header never nests one;
/// deeply nested braces would make the parser take exponential time).
fn check_npy_header(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err("no .npy magic");
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err("unknown format version"),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .ok_or("header longer than the file")?;
    let braces = |c: u8| header.iter().filter(|&&b| b == c).count();
    if braces(b'{') != 1 || braces(b'}') != 1 || header.len() > 1 << 16 {
        return Err("the header is not one flat dictionary");
    }
    let mut depth = 0usize;
    for &b in header {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > 4 {
            return Err("the header nests too deeply");
        }
    }
    // The parser multiplies the dimensions (and their suffixes for strides) unchecked: refuse
    // shapes whose nonzero dimensions overflow 64 bits before it sees them.
    let text = String::from_utf8_lossy(header);
    if let Some(dims) = text
        .split_once("shape")
        .and_then(|(_, rest)| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(dims, _)| dims)
    {
        let mut product: u64 = 1;
        for dim in dims.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let n: u64 = dim
                .trim_end_matches('L')
                .parse()
                .map_err(|_| "a dimension is not an integer")?;
            product = product
                .checked_mul(n.max(1))
                .ok_or("the shape's element count overflows 64 bits")?;
        }
    }
    Ok(())
}

/// Checks a `.safetensors` file from its header alone, before any tensor data is read: every
/// tensor of a supported dtype (F32, F16, BOOL) must be at most `max_bytes` (e.g. the device's
/// buffer limit) and the file must hold the data its header declares.
pub fn check_safetensors(path: &Path, max_bytes: u64) -> Result<()> {
    use std::io::Read;
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let invalid = |why: String| bad(path, format!("not a valid .safetensors file ({why})"));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| invalid("no header".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > (100 << 20) || 8 + header_len > file_len {
        return Err(invalid(format!(
            "header length {header_len} for a file of {file_len} bytes"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| invalid(e.to_string()))?;
    let mut data_end = 0u64;
    for (name, entry) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        let size = match entry["dtype"].as_str() {
            Some("F32") => 4u64,
            Some("F16") => 2,
            Some("BOOL") => 1,
            _ => continue, // refused with its name when read
        };
        let bytes = entry["shape"]
            .as_array()
            .and_then(|dims| dims.iter().try_fold(size, |n, d| n.checked_mul(d.as_u64()?)))
            .ok_or_else(|| {
                invalid(format!(
                    "tensor {name:?}: shape {} is not a list of sizes",
                    entry["shape"]
                ))
            })?;
        if bytes > max_bytes {
            return Err(bad(
                path,
                format!("tensor {name:?} is {bytes} bytes, more than the device's limit of {max_bytes}"),
            ));
        }
        let end = entry["data_offsets"].get(1).and_then(|e| e.as_u64()).unwrap_or(0);
        data_end = data_end.max(end);
    }
    if 8 + header_len + data_end > file_len {
        return Err(invalid(format!(
            "truncated: the header declares {data_end} bytes of data, the file has {}",
            file_len - 8 - header_len
        )));
    }
    Ok(())
}

/// Sorted tensor names of a `.safetensors` file read from `path`.
pub fn safetensors_names(path: &Path, bytes: &[u8]) -> Result<Vec<String>> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid .safetensors file ({e})")))?;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    Ok(names)
}

/// Reads tensor `name` (F32, F16 or BOOL) of a `.safetensors` file.
pub fn read_safetensors(path: &Path, name: &str) -> Result<HostTensor> {
    let bytes = read_all(path)?;
    read_safetensors_bytes(path, &bytes, name)
}

/// Like [`read_safetensors`] on bytes already read from `path`.
pub fn read_safetensors_bytes(path: &Path, bytes: &[u8], name: &str) -> Result<HostTensor> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid .safetensors file ({e})")))?;
    let view = st.tensor(name).map_err(|_| {
        let mut names = st.names();
        names.sort();
        bad(
            path,
            format!("no tensor named {name:?} (the file has: {})", names.join(", ")),
        )
    })?;
    let shape = view.shape().to_vec();
    let raw = view.data();
    let data = match view.dtype() {
        safetensors::Dtype::F32 => HostData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        safetensors::Dtype::F16 => HostData::F16(
            raw.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        safetensors::Dtype::BOOL => HostData::Bool(raw.iter().map(|&b| b != 0).collect()),
        other => {
            return Err(bad(
                path,
                format!("tensor {name:?}: dtype {other:?} is not supported (expected F32, F16 or BOOL)"),
            ))
        }
    };
    Ok(HostTensor { shape, data })
}

/// The `.npy` encoding of `data` with `shape` (C order, the element's default dtype).
fn npy_bytes<T: npyz::AutoSerialize + Copy>(shape: &[u64], data: &[T]) -> std::io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()?;
    Ok(buf)
}

/// Writes a tensor as `.npy` (C order, little-endian; u32 as `<u4`).
pub fn write_npy(path: &Path, t: &HostTensor) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        source: e,
    };
    let shape: Vec<u64> = t.shape.iter().map(|&n| n as u64).collect();
    let buf = match &t.data {
        HostData::F32(v) => npy_bytes(&shape, v),
        HostData::F16(v) => npy_bytes(&shape, v),
        HostData::Bool(v) => npy_bytes(&shape, v),
        HostData::U32(v) => npy_bytes(&shape, v),
    }
    .map_err(io)?;
    std::fs::write(path, buf).map_err(io)
}

/// Inputs of [`run_attention`]: Q, K, V and optional mask and bias, as read from files.
#[derive(Debug, Clone)]
pub struct RunInputs {
    /// Q [B, Hq, Lq, Dk] (f32 or f16; K, V and the bias are converted to its dtype).
    pub q: HostTensor,
    /// K [B, Hkv, Lk, Dk].
    pub k: HostTensor,
    /// V [B, Hkv, Lk, Dv].
    pub v: HostTensor,
    /// Boolean mask (true = takes part), [B|1, Hq|1, Lq, Lk] or [Lq, Lk].
    pub mask: Option<HostTensor>,
    /// Additive bias, same shapes as the mask.
    pub bias: Option<HostTensor>,
}

/// Outputs of [`run_attention`].
#[derive(Debug, Clone)]
pub struct RunOutputs {
    /// O [B, Hq, Lq, Dv] in Q's dtype.
    pub out: HostTensor,
    /// LSE [B, Hq, Lq] (f32), when requested.
    pub lse: Option<HostTensor>,
    /// P [B, Hq, Lq, Lk] (f32), when requested.
    pub weights: Option<HostTensor>,
    /// The kernel that ran.
    pub kernel: crate::options::KernelChoice,
    /// O against the CPU reference, when requested.
    pub check: Option<Comparison>,
}

fn check_role(t: &HostTensor, role: &'static str, float: bool) -> Result<()> {
    let is_float = t.dtype() != DType::Bool;
    if is_float != float {
        return Err(Error::DType {
            name: role,
            got: t.dtype(),
            expected: if float {
                "f32 or f16"
            } else {
                "bool (true = the key takes part)"
            },
        });
    }
    Ok(())
}

/// Broadcast shape [B|1, H|1, Lq, Lk] of a 2-D or 4-D mask/bias (for the reference).
pub(crate) fn broadcast_shape(shape: &[usize]) -> [usize; 4] {
    match shape {
        [lq, lk] => [1, 1, *lq, *lk],
        [b, h, lq, lk] => [*b, *h, *lq, *lk],
        _ => [0; 4],
    }
}

/// The checked inputs of a `run`: Q, K, V uploaded, the mask and bias (converted to Q's dtype)
/// uploaded into `opts`, and the converted bias for the reference. `extra` float operands (dO)
/// are checked like Q, K and V.
struct Uploaded {
    dtype: DType,
    qkv: [Tensor; 3],
    opts: AttentionOptions,
    bias: Option<HostTensor>,
}

fn upload_run_inputs(
    ctx: &Context,
    inputs: &RunInputs,
    extra: &[(&'static str, &HostTensor)],
    opts: &AttentionOptions,
) -> Result<Uploaded> {
    let operands = [("q", &inputs.q), ("k", &inputs.k), ("v", &inputs.v)];
    for (role, t) in operands.iter().chain(extra) {
        check_role(t, role, true)?;
        if t.shape.len() != 4 {
            return Err(Error::Rank {
                name: role,
                expected: 4,
                shape: t.shape.clone(),
            });
        }
    }
    let dtype = inputs.q.dtype();
    for (role, t) in [("k", &inputs.k), ("v", &inputs.v)] {
        if t.dtype() != dtype {
            return Err(Error::DType {
                name: role,
                got: t.dtype(),
                expected: dtype.name(),
            });
        }
    }
    if let Some(m) = &inputs.mask {
        check_role(m, "mask", false)?;
    }
    let bias = match &inputs.bias {
        Some(b) => {
            check_role(b, "bias", true)?;
            Some(b.converted(dtype))
        }
        None => None,
    };
    Ok(Uploaded {
        dtype,
        qkv: [inputs.q.upload(ctx)?, inputs.k.upload(ctx)?, inputs.v.upload(ctx)?],
        opts: AttentionOptions {
            mask: inputs.mask.as_ref().map(|m| m.upload(ctx)).transpose()?,
            bias: bias.as_ref().map(|b| b.upload(ctx)).transpose()?,
            ..opts.clone()
        },
        bias,
    })
}

/// Runs attention on file inputs: `opts` gives scale, softcap, causal, window, kernel,
/// `return_lse` and `return_weights` (its tensor fields are filled here). With `check`, O is
/// compared with the CPU reference.
pub fn run_attention(ctx: &Context, inputs: &RunInputs, opts: &AttentionOptions, check: bool) -> Result<RunOutputs> {
    let Uploaded {
        dtype,
        qkv: [q, k, v],
        opts: full,
        bias,
    } = upload_run_inputs(ctx, inputs, &[], opts)?;
    let call = Attention::new(ctx, &q, &k, &v, &full)?;
    call.submit()?;
    let res = call.output();
    let out = HostTensor::download(ctx, &res.out)?;
    let lse = res.lse.as_ref().map(|t| HostTensor::download(ctx, t)).transpose()?;
    let weights = res.weights.as_ref().map(|t| HostTensor::download(ctx, t)).transpose()?;
    let check = match check {
        false => None,
        true => {
            let qf = inputs.q.to_f32().unwrap_or_default();
            let kf = inputs.k.to_f32().unwrap_or_default();
            let vf = inputs.v.to_f32().unwrap_or_default();
            let bias_f = bias.as_ref().and_then(|b| b.to_f32());
            let mask_b = match inputs.mask.as_ref().map(|m| &m.data) {
                Some(HostData::Bool(v)) => Some(v.as_slice()),
                _ => None,
            };
            let host = HostInputs {
                problem: *call.problem(),
                q: &qf,
                k: &kf,
                v: &vf,
                bias: bias_f.as_deref().zip(bias.as_ref()).map(|(data, b)| Broadcast {
                    data,
                    shape: broadcast_shape(&b.shape),
                }),
                mask: mask_b.zip(inputs.mask.as_ref()).map(|(data, m)| Broadcast {
                    data,
                    shape: broadcast_shape(&m.shape),
                }),
                key_lengths: None,
                score: Default::default(),
                local: None,
            };
            let expected = reference::sdpa(&host, &full).out;
            let tol = Tolerance::of(dtype);
            Some(reference::compare(&out.to_f32().unwrap_or_default(), &expected, tol))
        }
    };
    Ok(RunOutputs {
        out,
        lse,
        weights,
        kernel: res.kernel,
        check,
    })
}

/// Outputs of [`run_attention_backward`].
#[derive(Debug, Clone)]
pub struct BackwardRunOutputs {
    /// The forward's O [B, Hq, Lq, Dv] in Q's dtype.
    pub out: HostTensor,
    /// The forward's LSE [B, Hq, Lq] (f32).
    pub lse: HostTensor,
    /// `dq`, `dk`, `dv` and, with a bias, `dbias`, in Q's dtype.
    pub grads: Vec<(&'static str, HostTensor)>,
    /// Each gradient against the CPU reference, when requested.
    pub checks: Vec<(&'static str, Comparison)>,
}

/// Runs the forward (for O and LSE) and the backward pass of attention on file inputs and the
/// output gradient `d_out` [B, Hq, Lq, Dv] (converted to Q's dtype); `opts` as for
/// [`run_attention`]. With `check`, every gradient is compared with the CPU reference.
pub fn run_attention_backward(
    ctx: &Context,
    inputs: &RunInputs,
    d_out: &HostTensor,
    opts: &AttentionOptions,
    check: bool,
) -> Result<BackwardRunOutputs> {
    let up = upload_run_inputs(ctx, inputs, &[("d_out", d_out)], opts)?;
    let (dtype, bias) = (up.dtype, up.bias);
    let [q, k, v] = up.qkv;
    let d_out = d_out.converted(dtype);
    let full = AttentionOptions {
        return_lse: true,
        return_weights: false,
        ..up.opts
    };
    let forward = Attention::new(ctx, &q, &k, &v, &full)?;
    let lse_t = forward
        .output()
        .lse
        .clone()
        .ok_or_else(|| Error::Unsupported("the forward returned no LSE".into()))?;
    let out_t = forward.output().out.clone();
    let backward =
        crate::backward::AttentionBackward::new(ctx, &q, &k, &v, &out_t, &d_out.upload(ctx)?, &lse_t, &full)?;
    forward.submit()?;
    let g = backward.run()?;
    let mut grads = vec![
        ("dq", HostTensor::download(ctx, &g.dq)?),
        ("dk", HostTensor::download(ctx, &g.dk)?),
        ("dv", HostTensor::download(ctx, &g.dv)?),
    ];
    if let Some(db) = &g.dbias {
        grads.push(("dbias", HostTensor::download(ctx, db)?));
    }
    let mut checks = Vec::new();
    if check {
        let (qf, kf, vf) = (
            inputs.q.to_f32().unwrap_or_default(),
            inputs.k.to_f32().unwrap_or_default(),
            inputs.v.to_f32().unwrap_or_default(),
        );
        let bias_f = bias.as_ref().and_then(|b| b.to_f32());
        let mask_b = match inputs.mask.as_ref().map(|m| &m.data) {
            Some(HostData::Bool(v)) => Some(v.as_slice()),
            _ => None,
        };
        let problem = crate::attention::validate(ctx, &q, &k, &v, &full)?;
        let host = HostInputs {
            bias: bias_f.as_deref().zip(bias.as_ref()).map(|(data, b)| Broadcast {
                data,
                shape: broadcast_shape(&b.shape),
            }),
            mask: mask_b.zip(inputs.mask.as_ref()).map(|(data, m)| Broadcast {
                data,
                shape: broadcast_shape(&m.shape),
            }),
            ..HostInputs::new(problem, &qf, &kf, &vf)
        };
        let expected = reference::sdpa_backward(&host, &full, &d_out.to_f32().unwrap_or_default())?;
        let tol = Tolerance::of(dtype);
        let mut want: Vec<(&'static str, &[f64])> =
            vec![("dq", &expected.dq), ("dk", &expected.dk), ("dv", &expected.dv)];
        if let Some(db) = &expected.dbias {
            want.push(("dbias", db));
        }
        for ((name, got), (_, want)) in grads.iter().zip(want) {
            checks.push((*name, reference::compare(&got.to_f32().unwrap_or_default(), want, tol)));
        }
    }
    Ok(BackwardRunOutputs {
        out: HostTensor::download(ctx, &out_t)?,
        lse: HostTensor::download(ctx, &lse_t)?,
        grads,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy_with_header(dict: &str) -> Vec<u8> {
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes
    }

    #[test]
    fn npy_headers_found_by_fuzzing_are_refused_quickly() {
        let path = Path::new("x.npy");
        // A shape whose element count overflows 64 bits (the parser multiplies unchecked).
        let overflow =
            npy_with_header("{'descr': '<f2', 'fortran_order': False, 'shape': (14917696395384193024, 3), }");
        let e = read_npy_bytes(path, &overflow, "q").unwrap_err().to_string();
        assert!(e.contains("overflows"), "{e}");
        // Zero-sized leading dimension, huge trailing ones: strides would overflow.
        let strides =
            npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }");
        assert!(read_npy_bytes(path, &strides, "q").is_err());
        // Nested braces made the dictionary parser take exponential time.
        let nested = npy_with_header(&format!("{{'descr': {}'<f4'{}, }}", "{".repeat(30), "}".repeat(30)));
        let started = std::time::Instant::now();
        assert!(read_npy_bytes(path, &nested, "q").is_err());
        assert!(started.elapsed().as_secs() < 1);
        // A header length past the end of the file.
        assert!(read_npy_bytes(path, b"\x93NUMPY\x01\x00\xff\xff{", "q").is_err());
    }

    #[test]
    fn npy_files_are_checked_against_the_limit_before_their_data_is_read() {
        let dir = std::env::temp_dir().join(format!("wgpu-attention-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A header claiming 2^28 f32 (1 GiB) followed by 16 bytes: refused from the header.
        let path = dir.join("big.npy");
        let mut bytes = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (268435456,), }");
        bytes.extend_from_slice(&[0; 16]);
        std::fs::write(&path, &bytes).unwrap();
        let e = read_npy_limited(&path, "q", 1 << 20).unwrap_err().to_string();
        assert!(e.contains("limit of 1048576"), "{e}");
        let e = read_npy(&path, "q").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        // A small file reads the same from disk as from bytes.
        let path = dir.join("small.npy");
        let mut bytes = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }");
        for x in [1.5f32, -2.0, 3.25] {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let t = read_npy_limited(&path, "q", 12).unwrap();
        assert_eq!(t.data, HostData::F32(vec![1.5, -2.0, 3.25]));
        assert_eq!(t, read_npy_bytes(&path, &bytes, "q").unwrap());
        assert!(read_npy_limited(&path, "q", 11).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn safetensors_files_are_checked_from_their_header() {
        let dir = std::env::temp_dir().join(format!("wgpu-attention-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, header: &str, data: usize| {
            let path = dir.join(name);
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(0u8, data));
            std::fs::write(&path, bytes).unwrap();
            path
        };
        // A header declaring 1 GiB with 16 bytes of data: refused by the limit, then as truncated.
        let big = file(
            "big.safetensors",
            r#"{"q":{"dtype":"F32","shape":[268435456],"data_offsets":[0,1073741824]}}"#,
            16,
        );
        let e = check_safetensors(&big, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("\"q\" is 1073741824 bytes"), "{e}");
        let e = check_safetensors(&big, u64::MAX).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let small = file(
            "small.safetensors",
            r#"{"__metadata__":{"a":"b"},"k":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]}}"#,
            12,
        );
        check_safetensors(&small, 12).unwrap();
        assert!(check_safetensors(&small, 11).is_err());
        let overflow = file(
            "overflow.safetensors",
            r#"{"k":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,4]}}"#,
            4,
        );
        assert!(check_safetensors(&overflow, u64::MAX).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn npy_truncated_data_is_an_error() {
        let mut bytes = npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
        bytes.extend_from_slice(&[0; 20]); // 24 needed
        let e = read_npy_bytes(Path::new("x.npy"), &bytes, "q").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        bytes.extend_from_slice(&[0; 4]);
        let t = read_npy_bytes(Path::new("x.npy"), &bytes, "q").unwrap();
        assert_eq!(t.shape, vec![2, 3]);
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

/// Reads an integer tensor (sequence lengths, offsets, a block table) of any rank from a `.npy`
/// file of uint32 (`<u4`), int32 (`<i4`), int64 (`<i8`) or uint64 (`<u8`) values, as u32.
pub fn read_npy_u32(path: &Path, role: &str) -> Result<HostTensor> {
    let bytes = read_all(path)?;
    let (header, data_start) = parse_npy_header(path, &bytes, role)?;
    let npy = npyz::NpyFile::with_header(header, &bytes[data_start..]);
    if npy.order() == npyz::Order::Fortran && npy.shape().len() > 1 {
        return Err(bad(path, format!("{role}: Fortran-order arrays are not supported")));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&n| n as usize).collect();
    let type_str = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => {
            return Err(bad(
                path,
                format!("{role}: structured dtype {other:?} is not supported"),
            ))
        }
    };
    let elems = shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let size = match type_str.as_str() {
        "<u4" | ">u4" | "<i4" | ">i4" => 4,
        "<i8" | ">i8" | "<u8" | ">u8" => 8,
        other => {
            return Err(bad(
                path,
                format!("{role}: dtype {other} is not supported for integers (expected uint32 <u4, int32 <i4, int64 <i8 or uint64 <u8)"),
            ))
        }
    };
    if elems.saturating_mul(size) > (bytes.len() - data_start) as u64 {
        return Err(bad(path, format!("{role}: truncated data for shape {shape:?}")));
    }
    let read_err = |e: std::io::Error| bad(path, format!("{role}: {e}"));
    let data = match &type_str[1..] {
        "u4" => npy.into_vec::<u32>().map_err(read_err)?,
        "i4" => to_u32(path, role, &npy.into_vec::<i32>().map_err(read_err)?)?,
        "i8" => to_u32(path, role, &npy.into_vec::<i64>().map_err(read_err)?)?,
        _ => to_u32(path, role, &npy.into_vec::<u64>().map_err(read_err)?)?,
    };
    Ok(HostTensor {
        shape,
        data: HostData::U32(data),
    })
}

/// Reads the integer tensor `name` (U32, I32, I64 or U64) of any rank from `.safetensors`
/// bytes, as u32.
pub fn read_safetensors_u32(path: &Path, bytes: &[u8], name: &str) -> Result<HostTensor> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid .safetensors file ({e})")))?;
    let view = st.tensor(name).map_err(|_| {
        let mut names = st.names();
        names.sort();
        bad(
            path,
            format!("no tensor named {name:?} (the file has: {})", names.join(", ")),
        )
    })?;
    let (shape, raw) = (view.shape().to_vec(), view.data());
    let role = format!("tensor {name:?}");
    let four = || raw.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
    let eight = || raw.chunks_exact(8).map(|c| <[u8; 8]>::try_from(c).unwrap_or_default());
    let data = match view.dtype() {
        safetensors::Dtype::U32 => four().map(u32::from_le_bytes).collect(),
        safetensors::Dtype::I32 => to_u32(path, &role, &four().map(i32::from_le_bytes).collect::<Vec<_>>())?,
        safetensors::Dtype::I64 => to_u32(path, &role, &eight().map(i64::from_le_bytes).collect::<Vec<_>>())?,
        safetensors::Dtype::U64 => to_u32(path, &role, &eight().map(u64::from_le_bytes).collect::<Vec<_>>())?,
        other => {
            return Err(bad(
                path,
                format!("{role}: dtype {other:?} is not supported for integers (expected U32, I32, I64 or U64)"),
            ))
        }
    };
    Ok(HostTensor {
        shape,
        data: HostData::U32(data),
    })
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

/// Reads sequence offsets (`cu_seqlens`, B + 1 entries) from a 1-D `.npy` file of uint32
/// (`<u4`), int32 (`<i4`), int64 (`<i8`) or uint64 (`<u8`) values.
pub fn read_npy_offsets(path: &Path, role: &str) -> Result<Vec<u32>> {
    offsets(path, role, read_npy_u32(path, role)?)
}

/// Reads sequence offsets (`cu_seqlens`) named `name` from `.safetensors` bytes: a 1-D U32, I32,
/// I64 or U64 tensor.
pub fn read_safetensors_offsets(path: &Path, bytes: &[u8], name: &str) -> Result<Vec<u32>> {
    offsets(
        path,
        &format!("tensor {name:?}"),
        read_safetensors_u32(path, bytes, name)?,
    )
}

/// Inputs of [`run_varlen`]: packed Q [total_q, Hq, Dk] (f32 or f16), K [total_k, Hkv, Dk] and
/// V [total_k, Hkv, Dv] in Q's dtype, and the B + 1 offsets of each side.
#[derive(Debug, Clone)]
pub struct VarlenRunInputs {
    /// Packed queries.
    pub q: HostTensor,
    /// Packed keys.
    pub k: HostTensor,
    /// Packed values.
    pub v: HostTensor,
    /// Query offsets.
    pub cu_seqlens_q: Vec<u32>,
    /// Key offsets.
    pub cu_seqlens_k: Vec<u32>,
}

/// Outputs of [`run_varlen`].
#[derive(Debug, Clone)]
pub struct VarlenRunOutputs {
    /// O [total_q, Hq, Dv] in Q's dtype.
    pub out: HostTensor,
    /// LSE [Hq, total_q] (f32), when requested.
    pub lse: Option<HostTensor>,
    /// O (and LSE when returned) against the CPU reference, when requested.
    pub checks: Vec<(&'static str, Comparison)>,
}

/// Runs variable-length attention ([`crate::attention_varlen()`]) on file inputs: `opts` gives
/// scale, softcap, causal, window, dropout and `return_lse`. With `check`, O and the LSE are
/// compared with [`reference::sdpa_varlen`] (tolerance of Q's dtype).
pub fn run_varlen(
    ctx: &Context,
    inputs: &VarlenRunInputs,
    opts: &AttentionOptions,
    check: bool,
) -> Result<VarlenRunOutputs> {
    let dtype = inputs.q.dtype();
    for (role, t) in [("q", &inputs.q), ("k", &inputs.k), ("v", &inputs.v)] {
        check_role(t, role, true)?;
        if t.dtype() != dtype {
            return Err(Error::DType {
                name: role,
                got: t.dtype(),
                expected: dtype.name(),
            });
        }
    }
    let seqs = crate::attention::Varlen::from_offsets(ctx, &inputs.cu_seqlens_q, &inputs.cu_seqlens_k)?;
    let (q, k, v) = (inputs.q.upload(ctx)?, inputs.k.upload(ctx)?, inputs.v.upload(ctx)?);
    let call = Attention::varlen(ctx, &q, &k, &v, &seqs, opts)?;
    call.submit()?;
    let res = call.output();
    let out = HostTensor::download(ctx, &res.out)?;
    let lse = res.lse.as_ref().map(|t| HostTensor::download(ctx, t)).transpose()?;
    let mut checks = Vec::new();
    if check {
        let f = |t: &HostTensor| t.to_f32().unwrap_or_default();
        let (qf, kf, vf) = (f(&inputs.q), f(&inputs.k), f(&inputs.v));
        let (qs, vs) = (q.shape(), v.shape());
        let expected = reference::sdpa_varlen(
            &reference::VarlenHostInputs {
                hq: qs[1],
                hkv: vs[1],
                dk: qs[2],
                dv: vs[2],
                q: &qf,
                k: &kf,
                v: &vf,
                cu_seqlens_q: &inputs.cu_seqlens_q,
                cu_seqlens_k: &inputs.cu_seqlens_k,
            },
            opts,
        );
        let tol = Tolerance::of(dtype);
        checks.push(("out", reference::compare(&f(&out), &expected.out, tol)));
        if let Some(l) = &lse {
            checks.push(("lse", reference::compare(&f(l), &expected.lse, tol)));
        }
    }
    Ok(VarlenRunOutputs { out, lse, checks })
}
