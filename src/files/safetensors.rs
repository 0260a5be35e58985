//! `.safetensors` files: named tensors (F32, F16, BOOL) checked from the header before any data
//! is read, and integer tensors (U32, I32, I64, U64) read as u32.

use std::path::Path;

use super::{bad, offsets, read_all, to_u32, HostData, HostTensor};
use crate::error::{Error, Result};

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

/// Reads sequence offsets (`cu_seqlens`) named `name` from `.safetensors` bytes: a 1-D U32, I32,
/// I64 or U64 tensor.
pub fn read_safetensors_offsets(path: &Path, bytes: &[u8], name: &str) -> Result<Vec<u32>> {
    offsets(
        path,
        &format!("tensor {name:?}"),
        read_safetensors_u32(path, bytes, name)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
