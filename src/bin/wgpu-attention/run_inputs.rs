//! What `run` reads before any work: the tensors of sdpa and dot (`.npy` files or named tensors
//! of a `.safetensors` file), a tensor flag's file or name, the attention options the flags set
//! (ALiBi slopes read from their file), and the dtype check of an operand or mask.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use wgpu_attention::bench::variant;
use wgpu_attention::files::{self, HostTensor};
use wgpu_attention::{AlibiSlopes, AttentionOptions, DType, Dropout, Error, Window};

use crate::run::RunArgs;

/// A tensor flag's value: a `.npy` path, or a tensor name of `--safetensors FILE`.
pub fn read_named(a: &RunArgs, value: &str, role: &str, max_bytes: u64) -> Result<files::HostTensor> {
    Ok(match &a.safetensors {
        Some(path) => files::read_safetensors(path, value)?,
        None => files::read_npy_limited(Path::new(value), role, max_bytes)?,
    })
}

/// `--alibi-slopes`: f32 [Hq] or [B, Hq] read from a file.
pub fn alibi_slopes(a: &RunArgs, max_bytes: u64) -> Result<Option<AlibiSlopes>> {
    let Some(v) = &a.alibi_slopes else {
        return Ok(None);
    };
    let t = read_named(a, v, "alibi-slopes", max_bytes)?;
    match (&t.shape[..], t.to_f32()) {
        (&[_], Some(slopes)) => Ok(Some(AlibiSlopes::per_head(slopes))),
        (&[b, _], Some(slopes)) => Ok(Some(AlibiSlopes::per_batch(b, slopes))),
        _ => bail!(
            "--alibi-slopes must be floats [Hq] or [B, Hq], got {:?} {}",
            t.shape,
            t.dtype()
        ),
    }
}

/// The options of §1 the flags of `run` set (tensor options come from the files), ALiBi slopes
/// read from their file (at most `max_bytes`).
pub fn attention_options(a: &RunArgs, max_bytes: u64) -> Result<AttentionOptions> {
    let causal = a.causal.alignment();
    Ok(AttentionOptions {
        scale: a.scale,
        softcap: a.softcap,
        causal,
        window: a.window.map(|(left, right)| Window {
            left,
            right,
            alignment: causal.unwrap_or_default(),
        }),
        return_lse: a.lse.is_some(),
        return_weights: a.weights.is_some(),
        kernel: a.kernel.choice(),
        design: a.design.design(),
        dropout: a.dropout.map(|p| Dropout {
            p,
            seed: a.seed.unwrap_or(0),
        }),
        alibi_slopes: alibi_slopes(a, max_bytes)?,
        ..Default::default()
    })
}

/// Q, K, V (and mask, bias) of `run --variant sdpa|dot`; `.npy` data larger than `max_bytes`
/// (the device's buffer limit) is refused from its header, before it is read; with
/// `--safetensors`, the named tensors of that file.
pub fn sdpa_inputs(a: &RunArgs, dtype: Option<DType>, max_bytes: u64) -> Result<variant::VariantInputs> {
    let mut tensors: Vec<(String, files::HostTensor)> = Vec::new();
    match &a.safetensors {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            let names = files::safetensors_names(path, &bytes)?;
            let get = |name: &str| files::read_safetensors_bytes(path, &bytes, name);
            for (role, name) in [("q", &a.q_name), ("k", &a.k_name), ("v", &a.v_name)] {
                tensors.push((role.into(), get(name)?));
            }
            for (role, name) in [("mask", &a.mask_name), ("bias", &a.bias_name)] {
                match name {
                    Some(n) => tensors.push((role.into(), get(n)?)),
                    None if names.iter().any(|n| n == role) => tensors.push((role.into(), get(role)?)),
                    None => {}
                }
            }
        }
        None => {
            for (role, path) in [("q", &a.q), ("k", &a.k), ("v", &a.v)] {
                let path = path
                    .as_deref()
                    .ok_or_else(|| anyhow!("missing --{role} (or give --safetensors FILE)"))?;
                tensors.push((role.into(), files::read_npy_limited(path, role, max_bytes)?));
            }
            for (role, path) in [("mask", &a.mask), ("bias", &a.bias)] {
                if let Some(path) = path {
                    tensors.push((role.into(), files::read_npy_limited(path, role, max_bytes)?));
                }
            }
        }
    }
    let dtype = dtype.unwrap_or(match tensors[0].1.dtype() {
        DType::F16 => DType::F16,
        _ => DType::F32,
    });
    Ok(variant::VariantInputs::new(a.variant, tensors, dtype))
}

/// Refuses a float operand (`float`) that is not f32 or f16, or a mask that is not bool.
pub fn check_role(t: &HostTensor, role: &'static str, float: bool) -> wgpu_attention::Result<()> {
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
