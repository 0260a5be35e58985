//! `.npy` files: f32 (`<f4`), f16 (`<f2`) and bool (`|b1`) tensors in C order read (checked
//! from the header first) and written (u32 as `<u4` too), and integer tensors of any width read
//! as u32.

use std::path::Path;

use super::{bad, offsets, read_all, to_u32, HostData, HostTensor};
use crate::error::{Error, Result};

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

/// Reads sequence offsets (`cu_seqlens`, B + 1 entries) from a 1-D `.npy` file of uint32
/// (`<u4`), int32 (`<i4`), int64 (`<i8`) or uint64 (`<u8`) values.
pub fn read_npy_offsets(path: &Path, role: &str) -> Result<Vec<u32>> {
    offsets(path, role, read_npy_u32(path, role)?)
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
