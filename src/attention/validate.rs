//! Host validation of an attention call: shapes, dtypes, broadcasts, strides, options and device
//! features, before any GPU work.

use super::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::options::{AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// Most slopes ([Hq] or [B, Hq]) an ALiBi call may use: `shaders/common/alibi.wgsl` holds them
/// in one uniform array of 1024 vec4.
pub(crate) const MAX_ALIBI_HEADS: usize = crate::options::AlibiSlopes::MAX;

/// Checks Q, K, V and every option against each other and the device; returns the problem sizes.
pub fn validate(ctx: &Context, q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOptions) -> Result<Problem> {
    let tensors = [("q", Some(q)), ("k", Some(k)), ("v", Some(v))].into_iter().chain([
        ("bias", opts.bias.as_ref()),
        ("mask", opts.mask.as_ref()),
        ("key_lengths", opts.key_lengths.as_ref()),
        ("block_table", opts.block_table.as_ref()),
        ("out", opts.out.as_ref()),
    ]);
    for (name, t) in tensors {
        if let Some(t) = t {
            t.check_device(name, ctx)?;
        }
    }
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        check_qkv_operand(name, t)?;
        if !matches!(t.dtype(), DType::F32 | DType::F16) {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: "f32 or f16",
            });
        }
        if t.dtype() != q.dtype() {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: q.dtype().name(),
            });
        }
        check_rows_contiguous(name, t)?;
        if t.shape().iter().any(|&n| n > i32::MAX as usize) {
            return Err(Error::Limit {
                what: format!("{name} dimension"),
                limit: "2^31 - 1 elements per axis",
                needed: *t.shape().iter().max().unwrap_or(&0) as u64,
                max: i32::MAX as u64,
            });
        }
    }
    if q.dtype() == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 attention",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    let p = match &opts.block_table {
        None => dense_problem(q, k, v)?,
        Some(table) => paged_problem(q, k, v, table)?,
    };
    if !p.hq.is_multiple_of(p.hkv) {
        return Err(Error::HeadRatio { hq: p.hq, hkv: p.hkv });
    }
    // The kernels index (b, h) pairs and their query rows with 32-bit integers: refuse what would
    // wrap instead of computing a truncated problem.
    let rows = (p.b as u64)
        .checked_mul(p.hq as u64)
        .and_then(|bh| bh.checked_mul(p.lq.max(1) as u64));
    if rows.is_none_or(|r| r > u32::MAX as u64) {
        return Err(Error::Limit {
            what: format!("B·Hq·Lq = {}·{}·{} query rows", p.b, p.hq, p.lq),
            limit: "2^32 - 1 query rows (32-bit row indices)",
            needed: rows.unwrap_or(u64::MAX),
            max: u32::MAX as u64,
        });
    }
    check_scalar_options(opts)?;
    let target = [p.b, p.hq, p.lq, p.lk];
    if let Some(bias) = &opts.bias {
        check_broadcast("bias", bias, target)?;
        if bias.dtype() != q.dtype() {
            return Err(Error::DType {
                name: "bias",
                got: bias.dtype(),
                expected: q.dtype().name(),
            });
        }
    }
    if let Some(mask) = &opts.mask {
        check_broadcast("mask", mask, target)?;
        if mask.dtype() != DType::Bool {
            return Err(Error::DType {
                name: "mask",
                got: mask.dtype(),
                expected: "bool",
            });
        }
    }
    if let Some(lens) = &opts.key_lengths {
        if lens.shape() != [p.b] {
            return Err(Error::ShapeMismatch {
                name: "key_lengths",
                expected: vec![p.b],
                got: lens.shape().to_vec(),
            });
        }
        if lens.dtype() != DType::U32 {
            return Err(Error::DType {
                name: "key_lengths",
                got: lens.dtype(),
                expected: "u32",
            });
        }
        if !lens.is_contiguous() {
            return Err(Error::Strides {
                name: "key_lengths",
                shape: lens.shape().to_vec(),
                strides: lens.strides().to_vec(),
                why: "must be contiguous",
            });
        }
    }
    check_alibi(opts, p.b, p.hq)?;
    if opts.align_to_key_lengths && opts.key_lengths.is_none() {
        return Err(Error::InvalidOption {
            name: "align_to_key_lengths",
            value: 1.0,
            why: "aligns to the key lengths: give key_lengths too",
        });
    }
    if let Some(out) = &opts.out {
        let inputs = [
            ("q", Some(q)),
            ("k", Some(k)),
            ("v", Some(v)),
            ("bias", opts.bias.as_ref()),
            ("mask", opts.mask.as_ref()),
            ("key_lengths", opts.key_lengths.as_ref()),
            ("block_table", opts.block_table.as_ref()),
        ];
        check_out(out, vec![p.b, p.hq, p.lq, p.dv], q.dtype(), &inputs)?;
    }
    if opts.block_table.is_some() && matches!(opts.kernel, KernelChoice::Fused | KernelChoice::Staged) {
        return Err(Error::Unsupported(
            "paged K/V (block_table) are read by the decode kernel only: use KernelChoice::Decode or Auto".into(),
        ));
    }
    if opts.return_weights && matches!(opts.kernel, KernelChoice::Fused | KernelChoice::Decode) {
        return Err(Error::Unsupported(format!(
            "the {} kernel never materializes the weights; use KernelChoice::Staged (or Auto) with return_weights",
            if opts.kernel == KernelChoice::Fused {
                "fused"
            } else {
                "decode"
            }
        )));
    }
    Ok(p)
}

/// ALiBi slopes: [Hq] or [B, Hq] finite slopes, at most [`MAX_ALIBI_HEADS`] in all.
pub(super) fn check_alibi(opts: &AttentionOptions, batch: usize, hq: usize) -> Result<()> {
    if let Some(slopes) = &opts.alibi_slopes {
        let n = slopes.values().len();
        if slopes.batch().is_some_and(|b| n % b.max(1) != 0 || (b == 0 && n != 0)) {
            return Err(Error::InvalidOption {
                name: "alibi_slopes",
                value: n as f64,
                why: "[B, Hq] slopes need B · Hq values",
            });
        }
        let expected = match slopes.batch() {
            None => vec![hq],
            Some(_) => vec![batch, hq],
        };
        if slopes.shape() != expected {
            return Err(Error::ShapeMismatch {
                name: "alibi_slopes",
                expected,
                got: slopes.shape(),
            });
        }
        if n > MAX_ALIBI_HEADS {
            return Err(Error::Limit {
                what: match slopes.batch() {
                    None => format!("ALiBi slopes for {hq} query heads"),
                    Some(b) => format!("ALiBi slopes for B·Hq = {b}·{hq} (batch, head) pairs"),
                },
                limit: "4096 slopes (one uniform buffer of slopes)",
                needed: n as u64,
                max: MAX_ALIBI_HEADS as u64,
            });
        }
        if let Some(&s) = slopes.values().iter().find(|s| !s.is_finite()) {
            return Err(Error::InvalidOption {
                name: "alibi_slopes",
                value: s as f64,
                why: "every slope must be finite",
            });
        }
    }
    Ok(())
}

/// The sizes of Q [B, Hq, Lq, Dk], K [B, Hkv, Lk, Dk], V [B, Hkv, Lk, Dv].
fn dense_problem(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Problem> {
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    let p = Problem {
        b: qs[0],
        hq: qs[1],
        hkv: ks[1],
        lq: qs[2],
        lk: ks[2],
        dk: qs[3],
        dv: vs[3],
    };
    if ks[0] != p.b || ks[3] != p.dk {
        return Err(Error::ShapeMismatch {
            name: "k",
            expected: vec![p.b, ks[1], ks[2], p.dk],
            got: ks.to_vec(),
        });
    }
    if vs[0] != p.b || vs[1] != p.hkv || vs[2] != p.lk {
        return Err(Error::ShapeMismatch {
            name: "v",
            expected: vec![p.b, p.hkv, p.lk, vs[3]],
            got: vs.to_vec(),
        });
    }
    Ok(p)
}

/// The sizes of Q [B, Hq, Lq, Dk] over pages K [num_pages, P, Hkv, Dk], V [num_pages, P, Hkv, Dv]
/// through a u32 block table [B, pages_per_seq]: Lk = pages_per_seq · P.
fn paged_problem(q: &Tensor, k: &Tensor, v: &Tensor, table: &Tensor) -> Result<Problem> {
    let (qs, ks, vs, ts) = (q.shape(), k.shape(), v.shape(), table.shape());
    if ts.len() != 2 || ts[0] != qs[0] {
        return Err(Error::ShapeMismatch {
            name: "block_table",
            expected: vec![qs[0], ts.get(1).copied().unwrap_or(1)],
            got: ts.to_vec(),
        });
    }
    if table.dtype() != DType::U32 {
        return Err(Error::DType {
            name: "block_table",
            got: table.dtype(),
            expected: "u32",
        });
    }
    check_rows_contiguous("block_table", table)?;
    // Pages, page rows, KV heads and table columns: none may be empty.
    for (name, t, axes) in [("k", k, &[0usize, 1, 2][..]), ("block_table", table, &[1][..])] {
        if let Some(&axis) = axes.iter().find(|&&a| t.shape()[a] == 0) {
            return Err(Error::ZeroDim {
                name,
                axis,
                shape: t.shape().to_vec(),
            });
        }
    }
    let lk = ts[1]
        .checked_mul(ks[1])
        .filter(|&n| n <= i32::MAX as usize)
        .ok_or_else(|| Error::Limit {
            what: format!("paged key length {} pages × {} rows", ts[1], ks[1]),
            limit: "2^31 - 1 keys",
            needed: (ts[1] as u64).saturating_mul(ks[1] as u64),
            max: i32::MAX as u64,
        })?;
    let p = Problem {
        b: qs[0],
        hq: qs[1],
        hkv: ks[2],
        lq: qs[2],
        lk,
        dk: qs[3],
        dv: vs[3],
    };
    if ks[3] != p.dk {
        return Err(Error::ShapeMismatch {
            name: "k",
            expected: vec![ks[0], ks[1], ks[2], p.dk],
            got: ks.to_vec(),
        });
    }
    if vs[..3] != ks[..3] {
        return Err(Error::ShapeMismatch {
            name: "v",
            expected: vec![ks[0], ks[1], ks[2], vs[3]],
            got: vs.to_vec(),
        });
    }
    Ok(p)
}

/// Scale, soft cap and dropout probability: finite and in range.
pub(super) fn check_scalar_options(opts: &AttentionOptions) -> Result<()> {
    if let Some(s) = opts.scale {
        if !s.is_finite() {
            return Err(Error::InvalidOption {
                name: "scale",
                value: s as f64,
                why: "must be finite",
            });
        }
    }
    if let Some(c) = opts.softcap {
        if !(c.is_finite() && c > 0.0) {
            return Err(Error::InvalidOption {
                name: "softcap",
                value: c as f64,
                why: "must be finite and > 0",
            });
        }
    }
    if let Some(d) = &opts.dropout {
        if !(d.p.is_finite() && (0.0..1.0).contains(&d.p)) {
            return Err(Error::InvalidOption {
                name: "dropout.p",
                value: d.p as f64,
                why: "must be in [0, 1)",
            });
        }
    }
    Ok(())
}

/// Q, K and V are rank 4; B and L may be 0 (an empty problem, see [`crate::attention()`]), heads
/// and head dims may not.
fn check_qkv_operand(name: &'static str, t: &Tensor) -> Result<()> {
    crate::tensor::check_operand_axes(name, t, 4..=4, &[0, 2])
}

/// Rejects an empty B, Lq or Lk for the family members that have no meaning on them (e.g. hard
/// attention, which samples one key per query).
pub(crate) fn require_nonempty(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        crate::tensor::check_operand(name, t, 4..=4)?;
    }
    Ok(())
}

/// The caller's `out`: of the `expected` shape and the inputs' `dtype`, rows contiguous, aliasing
/// none of `inputs` (the first one it overlaps is the error).
pub(super) fn check_out(
    out: &Tensor,
    expected: Vec<usize>,
    dtype: DType,
    inputs: &[(&'static str, Option<&Tensor>)],
) -> Result<()> {
    if out.shape() != expected.as_slice() {
        return Err(Error::ShapeMismatch {
            name: "out",
            expected,
            got: out.shape().to_vec(),
        });
    }
    if out.dtype() != dtype {
        return Err(Error::DType {
            name: "out",
            got: out.dtype(),
            expected: dtype.name(),
        });
    }
    check_rows_contiguous("out", out)?;
    if let Some(&(input, _)) = inputs.iter().find(|(_, t)| t.is_some_and(|t| out.overlaps(t))) {
        return Err(Error::Aliasing { output: "out", input });
    }
    Ok(())
}

pub(super) fn check_rows_contiguous(name: &'static str, t: &Tensor) -> Result<()> {
    if t.strides().last() != Some(&1) && t.shape().last() != Some(&1) {
        return Err(Error::Strides {
            name,
            shape: t.shape().to_vec(),
            strides: t.strides().to_vec(),
            why: "the last dimension must be contiguous (stride 1)",
        });
    }
    crate::tensor::check_strides_fit(name, t)
}

fn check_broadcast(name: &'static str, t: &Tensor, target: [usize; 4]) -> Result<()> {
    let s = t.shape();
    let ok = match s.len() {
        2 => s == &target[2..],
        4 => (s[0] == 1 || s[0] == target[0]) && (s[1] == 1 || s[1] == target[1]) && s[2..] == target[2..],
        _ => false,
    };
    if !ok {
        return Err(Error::Broadcast {
            name,
            got: s.to_vec(),
            target,
        });
    }
    check_rows_contiguous(name, t)
}
