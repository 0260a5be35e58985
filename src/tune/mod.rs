//! Tile selection for the fused kernel, and the tuning cache written by `wgpu-attention tune`.
//!
//! The cache is a JSON file (default `$XDG_CACHE_HOME/wgpu-attention/tune.json`, else
//! `~/.cache/wgpu-attention/tune.json`; overridden by `WGPU_ATTENTION_TUNE_CACHE`) mapping
//! adapter → bucket → winning [`FlashConfig`]. A bucket is a [`ShapeClass`] (dtype, head dim,
//! Lq class, GQA ratio, mask class, kernel design) plus Lk rounded up to a power of two; a call is
//! served the entry of its own class only (the nearest Lk within it), never another class's. The
//! library reads the file once per process; a
//! missing, unreadable or stale entry (one that no longer fits the device limits) falls back to
//! [`FlashConfig::default_for`]. The cache never makes a call fail. Without the `cache-files`
//! feature the library always takes the built-in defaults.

#[cfg(feature = "cache-files")]
mod tile_table;

#[cfg(feature = "cache-files")]
pub use tile_table::{cache_path, TuneCache, TuneEntry, TunedConfig, CACHE_ENV, CACHE_VERSION};

use crate::attention::Problem;
use crate::context::Context;
use crate::error::Result;
use crate::kernels::{CoopmatConfig, DecodeConfig, FlashConfig, TiledConfig};
use crate::options::{AttentionOptions, Design};
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

/// Which masks a call applies, as far as tiles care: none, causal only (block skipping), or any
/// other (per-element tests: mask, bias, key lengths, window, local-p, zero-score).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskClass {
    /// Every key of every row.
    None,
    /// Causal and nothing else.
    Causal,
    /// Any other mask or bias.
    Masked,
}

impl MaskClass {
    /// The class of `opts`.
    pub fn of(opts: &AttentionOptions) -> Self {
        let masked = opts.mask.is_some()
            || opts.bias.is_some()
            || opts.key_lengths.is_some()
            || opts.window.is_some()
            || opts.zero_score_mask;
        match (masked, opts.causal.is_some()) {
            (true, _) => Self::Masked,
            (false, true) => Self::Causal,
            (false, false) => Self::None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Causal => "causal",
            Self::Masked => "masked",
        }
    }
}

/// Everything besides Lk that decides which tile is fastest: calls of one class share tuned
/// tiles, and a class is never served another's (a decode call never gets a prefill tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShapeClass {
    /// Storage dtype.
    pub dtype: DType,
    /// max(Dk, Dv) rounded up to a power of two.
    pub head_dim: usize,
    /// Lq rounded up to a power of two, capped at [`ShapeClass::LQ_CAP`] (every longer query
    /// block fills a tile the same way).
    pub lq: usize,
    /// Hq / Hkv rounded up to a power of two.
    pub group: usize,
    /// Mask class.
    pub masks: MaskClass,
}

/// What a bucket tunes: a design of the fused kernel, or the decode kernel. Each has its own
/// entries (`register/…`, `tiled/…`, `coopmat/…`, `decode/…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketDesign {
    /// A design of the fused kernel.
    Fused(Design),
    /// The split-KV decode kernel.
    Decode,
}

impl BucketDesign {
    /// Its name in bucket keys.
    pub fn name(self) -> &'static str {
        match self {
            BucketDesign::Fused(d) => d.name(),
            BucketDesign::Decode => "decode",
        }
    }
}

impl ShapeClass {
    /// Query lengths at or above this are one class.
    pub const LQ_CAP: usize = 64;

    /// The class of a call.
    pub fn of(problem: &Problem, dtype: DType, opts: &AttentionOptions) -> Self {
        let p = problem;
        Self {
            dtype,
            head_dim: head_dim_bucket(p.dk, p.dv),
            lq: p.lq.max(1).next_power_of_two().min(Self::LQ_CAP),
            group: (p.hq / p.hkv.max(1)).max(1).next_power_of_two(),
            masks: MaskClass::of(opts),
        }
    }

    /// The fused design's bucket key of this class at Lk bucket `lk_bucket`, e.g.
    /// `register/f32/d128/lq1/g4/none/lk4096`.
    pub fn key(&self, lk_bucket: usize) -> String {
        self.key_in(BucketDesign::Fused(Design::Register), lk_bucket)
    }

    /// The fused design's key without its Lk part.
    pub fn prefix(&self) -> String {
        self.prefix_in(BucketDesign::Fused(Design::Register))
    }

    /// The bucket key of `design` for this class, e.g. `decode/f32/d128/lq1/g4/none/lk4096`.
    pub fn key_in(&self, design: BucketDesign, lk_bucket: usize) -> String {
        format!("{}/lk{lk_bucket}", self.prefix_in(design))
    }

    /// The key without its Lk part: entries with this prefix belong to the class and design.
    pub fn prefix_in(&self, design: BucketDesign) -> String {
        format!(
            "{}/{}/d{}/lq{}/g{}/{}",
            design.name(),
            self.dtype.name(),
            self.head_dim,
            self.lq,
            self.group,
            self.masks.name()
        )
    }
}

/// True when `cfg` is a valid tile for head dims `dk`, `dv` on this device.
pub fn config_fits(ctx: &Context, cfg: &FlashConfig, dk: usize, dv: usize) -> bool {
    cfg.check(ctx, dk as u32, dv as u32).is_ok()
}

/// The tile the fused kernel uses for `problem`: the tuning cache's winner for this adapter and
/// bucket when present and still valid, else [`FlashConfig::default_for`].
pub(crate) fn flash_config(
    ctx: &Context,
    problem: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
) -> Result<FlashConfig> {
    if let Some(cfg) = cached_config(ctx, problem, &ShapeClass::of(problem, dtype, opts)) {
        return Ok(cfg);
    }
    FlashConfig::default_for(ctx, problem.dk as u32, problem.dv as u32)
}

#[cfg(feature = "cache-files")]
fn cached_config(ctx: &Context, problem: &Problem, class: &ShapeClass) -> Option<FlashConfig> {
    let info = ctx.info().adapter.as_ref()?;
    let cfg = tile_table::process_table()?.lookup(&adapter_key(info), class, problem.lk)?;
    config_fits(ctx, &cfg, problem.dk, problem.dv).then_some(cfg)
}

/// Without the `cache-files` feature every call takes the built-in defaults.
#[cfg(not(feature = "cache-files"))]
fn cached_config(_: &Context, _: &Problem, _: &ShapeClass) -> Option<FlashConfig> {
    None
}

/// The tiled design's tile for `problem`: the tuning cache's winner for this adapter and bucket
/// when present and still valid, else [`TiledConfig::default_for`].
pub(crate) fn tiled_config(
    ctx: &Context,
    problem: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
) -> Result<TiledConfig> {
    let (dk, dv) = (problem.dk as u32, problem.dv as u32);
    match cached_tiled(ctx, problem, &ShapeClass::of(problem, dtype, opts)) {
        Some(c) if c.check(ctx, dk, dv).is_ok() => Ok(c),
        _ => TiledConfig::default_for(ctx, dk, dv),
    }
}

/// The cooperative-matrix design's tile for `problem`: the tuning cache's winner for this adapter
/// and bucket when present and still valid, else [`CoopmatConfig::default_for`].
pub(crate) fn coopmat_config(
    ctx: &Context,
    problem: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
) -> Result<CoopmatConfig> {
    let (dk, dv) = (problem.dk as u32, problem.dv as u32);
    match cached_coopmat(ctx, problem, &ShapeClass::of(problem, dtype, opts)) {
        Some(c) if c.check(ctx, dk, dv).is_ok() => Ok(c),
        _ => CoopmatConfig::default_for(ctx, dk, dv),
    }
}

#[cfg(feature = "cache-files")]
fn cached_coopmat(ctx: &Context, problem: &Problem, class: &ShapeClass) -> Option<CoopmatConfig> {
    let info = ctx.info().adapter.as_ref()?;
    let design = BucketDesign::Fused(Design::Coopmat);
    match tile_table::process_table()?.lookup_entry(&adapter_key(info), class, design, problem.lk)? {
        TunedConfig::Coopmat(c) => Some(c),
        _ => None,
    }
}

#[cfg(not(feature = "cache-files"))]
fn cached_coopmat(_: &Context, _: &Problem, _: &ShapeClass) -> Option<CoopmatConfig> {
    None
}

/// The design the tuning cache measured fastest for `problem`'s class on this adapter (among
/// `designs`), or `None` without entries.
pub(crate) fn fastest_design(
    ctx: &Context,
    problem: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
    designs: &[Design],
) -> Option<Design> {
    fastest_cached(ctx, problem, &ShapeClass::of(problem, dtype, opts), designs)
}

#[cfg(feature = "cache-files")]
fn cached_tiled(ctx: &Context, problem: &Problem, class: &ShapeClass) -> Option<TiledConfig> {
    let info = ctx.info().adapter.as_ref()?;
    let design = BucketDesign::Fused(Design::Tiled);
    match tile_table::process_table()?.lookup_entry(&adapter_key(info), class, design, problem.lk)? {
        TunedConfig::Tiled(c) => Some(c),
        _ => None,
    }
}

#[cfg(feature = "cache-files")]
fn fastest_cached(ctx: &Context, problem: &Problem, class: &ShapeClass, designs: &[Design]) -> Option<Design> {
    let info = ctx.info().adapter.as_ref()?;
    tile_table::process_table()?.fastest_design(&adapter_key(info), class, designs, problem.lk)
}

#[cfg(not(feature = "cache-files"))]
fn cached_tiled(_: &Context, _: &Problem, _: &ShapeClass) -> Option<TiledConfig> {
    None
}

#[cfg(not(feature = "cache-files"))]
fn fastest_cached(_: &Context, _: &Problem, _: &ShapeClass, _: &[Design]) -> Option<Design> {
    None
}

/// The decode kernel's tile for `problem`: the tuning cache's winner for this adapter and
/// bucket when present and still valid, else [`DecodeConfig::built_in`].
pub(crate) fn decode_config(
    ctx: &Context,
    problem: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
) -> Result<DecodeConfig> {
    let class = ShapeClass::of(problem, dtype, opts);
    match cached_decode_config(ctx, problem, &class) {
        Some(cfg) => Ok(cfg),
        None => built_in_decode_config(ctx, problem),
    }
}

/// The decode tile without a tuning cache ([`DecodeConfig::built_in`]).
pub fn built_in_decode_config(ctx: &Context, problem: &Problem) -> Result<DecodeConfig> {
    DecodeConfig::built_in(ctx, problem)
}

#[cfg(feature = "cache-files")]
fn cached_decode_config(ctx: &Context, problem: &Problem, class: &ShapeClass) -> Option<DecodeConfig> {
    let info = ctx.info().adapter.as_ref()?;
    let cfg = tile_table::process_table()?.lookup_decode(&adapter_key(info), class, problem.lk)?;
    cfg.check(ctx, problem.dk as u32, problem.dv as u32)
        .is_ok()
        .then_some(cfg)
}

#[cfg(not(feature = "cache-files"))]
fn cached_decode_config(_: &Context, _: &Problem, _: &ShapeClass) -> Option<DecodeConfig> {
    None
}

/// The tile [`crate::attention()`] would use for `problem` (for reports).
pub fn selected_flash_config(
    ctx: &Context,
    problem: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
) -> Result<FlashConfig> {
    flash_config(ctx, problem, dtype, opts)
}
