//! Tile selection for the fused kernel, and the tuning cache written by `wgpu-attention tune`.
//!
//! The cache is a JSON file (default `$XDG_CACHE_HOME/wgpu-attention/tune.json`, else
//! `~/.cache/wgpu-attention/tune.json`; overridden by `WGPU_ATTENTION_TUNE_CACHE`) mapping
//! adapter → bucket → winning [`FlashConfig`]. A bucket is (dtype, head dim rounded up to a power
//! of two, Lk rounded up to a power of two). The library reads the file once per process; a
//! missing, unreadable or stale entry (one that no longer fits the device limits) falls back to
//! [`FlashConfig::default_for`]. The cache never makes a call fail. Without the `tuning-cache`
//! feature the library always takes the built-in defaults.

#[cfg(feature = "tuning-cache")]
mod cache;

#[cfg(feature = "tuning-cache")]
pub use cache::{cache_path, TuneCache, TuneEntry, CACHE_ENV, CACHE_VERSION};

use crate::attention::Problem;
use crate::context::Context;
use crate::error::Result;
use crate::kernels::FlashConfig;
use crate::tensor::DType;

/// The cache key of an adapter: its name and driver (with the driver's version information).
pub fn adapter_key(info: &wgpu::AdapterInfo) -> String {
    let driver = format!("{} {}", info.driver, info.driver_info);
    format!("{} | {}", info.name, driver.trim())
}

/// Head-dim bucket: max(Dk, Dv) rounded up to a power of two.
pub fn head_dim_bucket(dk: usize, dv: usize) -> usize {
    dk.max(dv).max(1).next_power_of_two()
}

/// Key-length bucket: Lk rounded up to a power of two.
pub fn length_bucket(lk: usize) -> usize {
    lk.max(1).next_power_of_two()
}

/// The bucket key of a (dtype, head dim bucket, Lk bucket): e.g. `f32/d64/lk1024`.
pub fn bucket_key(dtype: DType, d_bucket: usize, lk_bucket: usize) -> String {
    format!("{}/d{d_bucket}/lk{lk_bucket}", dtype.name())
}

/// True when `cfg` is a valid tile for head dims `dk`, `dv` on this device.
pub fn config_fits(ctx: &Context, cfg: &FlashConfig, dk: usize, dv: usize) -> bool {
    cfg.check(ctx, dk as u32, dv as u32).is_ok()
}

/// The tile the fused kernel uses for `problem`: the tuning cache's winner for this adapter and
/// bucket when present and still valid, else the largest built-in candidate that fits.
pub(crate) fn flash_config(ctx: &Context, problem: &Problem, dtype: DType) -> Result<FlashConfig> {
    match cached_config(ctx, problem, dtype) {
        Some(cfg) => Ok(cfg),
        None => FlashConfig::default_for(ctx, problem.dk as u32, problem.dv as u32),
    }
}

#[cfg(feature = "tuning-cache")]
fn cached_config(ctx: &Context, problem: &Problem, dtype: DType) -> Option<FlashConfig> {
    let info = ctx.info().adapter.as_ref()?;
    let cfg = cache::process_cache()?.lookup(&adapter_key(info), dtype, problem)?;
    config_fits(ctx, &cfg, problem.dk, problem.dv).then_some(cfg)
}

/// Without the `tuning-cache` feature every call takes the built-in defaults.
#[cfg(not(feature = "tuning-cache"))]
fn cached_config(_: &Context, _: &Problem, _: DType) -> Option<FlashConfig> {
    None
}

/// The tile [`crate::attention()`] would use for `problem` (for reports).
pub fn selected_flash_config(ctx: &Context, problem: &Problem, dtype: DType) -> Result<FlashConfig> {
    flash_config(ctx, problem, dtype)
}
