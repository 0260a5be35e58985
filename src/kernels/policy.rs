//! The device policy: what the kernels decide per adapter (CPU drivers, llvmpipe's loop budget,
//! cooperative-matrix support) in one place.

use crate::context::Context;
use crate::error::{Error, Result};

/// Whether the adapter is a CPU driver (lavapipe, SwiftShader, WARP).
pub(crate) fn is_cpu(ctx: &Context) -> bool {
    ctx.info()
        .adapter
        .as_ref()
        .is_some_and(|a| a.device_type == wgpu::DeviceType::Cpu)
}

/// Whether the device is an llvmpipe (lavapipe) older than Mesa 25, whose compiled shaders end
/// every loop after 65535 iterations in total, without an error: a kernel whose loops run longer
/// silently skips work. Inner loops NIR does not unroll count too (measured on Mesa 22.3.6: the
/// fused kernel at D = 256 stopped after ~150 keys, at D = 8 after ~10k; Mesa 25.0.7 has no such
/// budget). Kernels bound their per-invocation work on such devices (`flash_forward::fits`,
/// [`super::flash_decode::DecodeConfig::min_splits`]).
pub(crate) fn loop_budget(ctx: &Context) -> bool {
    let Some(a) = ctx.info().adapter.as_ref() else {
        return false;
    };
    if a.device_type != wgpu::DeviceType::Cpu || !a.name.starts_with("llvmpipe") {
        return false;
    }
    // An unreadable version counts as old.
    mesa_major(&a.driver_info).is_none_or(|m| m < 25)
}

/// Mesa's major version in a driver string such as "Mesa 22.3.6 (LLVM 15.0.6)".
pub(crate) fn mesa_major(driver_info: &str) -> Option<u32> {
    driver_info
        .split_whitespace()
        .skip_while(|w| *w != "Mesa")
        .nth(1)
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
}

/// Keys the staged path's kernels may reduce over under an llvmpipe loop budget (the P·V GEMM
/// steps through Lk; measured on Mesa 22.3.6: right at 24000 keys, wrong at 40000).
pub const STAGED_CPU_MAX_KEYS: usize = 16384;

/// The refusal of a staged call (forward or backward) that would outrun an llvmpipe loop budget.
pub(crate) fn staged_over_budget(ctx: &Context, lk: usize) -> Option<Error> {
    (loop_budget(ctx) && lk > STAGED_CPU_MAX_KEYS).then(|| {
        Error::Unsupported(format!(
            "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; the staged path reduces over at most {STAGED_CPU_MAX_KEYS} keys there (Lk = {lk}): use KernelChoice::Auto or Decode"
        ))
    })
}

/// The cooperative-matrix size M (M×M×M, f16 × f16 → f32) of the device's kernels, refused where
/// the device has none or its backend's shader writer cannot express them
/// ([`crate::pipeline::backend_unsupported`]).
pub(crate) fn coopmat_size(ctx: &Context) -> Result<u32> {
    let m = ctx.info().coopmat_f16_size().ok_or_else(|| {
        Error::Unsupported(
            "the device has no f16 → f32 cooperative matrices (needs Features::EXPERIMENTAL_COOPERATIVE_MATRIX and SHADER_F16, and an adapter listing an 8×8×8 or 16×16×16 configuration)".into(),
        )
    })?;
    let switches = crate::pipeline::Switches {
        coop: m,
        ..Default::default()
    };
    match ctx.info().adapter.as_ref().map(|a| a.backend) {
        Some(backend) => match crate::pipeline::backend_unsupported(switches, backend) {
            Some(why) => Err(Error::Unsupported(format!(
                "cooperative matrices on {backend:?}: {why}"
            ))),
            None => Ok(m),
        },
        None => Ok(m),
    }
}
