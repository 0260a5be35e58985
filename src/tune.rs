//! Tile selection for the fused kernel, and the tuning cache written by `wgpu-attention tune`.
//!
//! The cache is a JSON file (default `$XDG_CACHE_HOME/wgpu-attention/tune.json`, else
//! `~/.cache/wgpu-attention/tune.json`; overridden by `WGPU_ATTENTION_TUNE_CACHE`) mapping
//! adapter → bucket → winning [`FlashConfig`]. A bucket is (dtype, head dim rounded up to a power
//! of two, Lk rounded up to a power of two). The library reads the file once per process; a
//! missing, unreadable or stale entry (one that no longer fits the device limits) falls back to
//! [`FlashConfig::default_for`]. The cache never makes a call fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::attention::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::FlashConfig;
use crate::tensor::DType;

/// Environment variable overriding the cache path.
pub const CACHE_ENV: &str = "WGPU_ATTENTION_TUNE_CACHE";
/// Format version written into the cache; files of another version are ignored.
pub const CACHE_VERSION: u32 = 1;

/// One tuned bucket: the winner and what it was measured against.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TuneEntry {
    /// The winning tile.
    pub config: FlashConfig,
    /// Its median time on the bucket's benchmark shape, ms.
    pub median_ms: f64,
    /// The built-in default's median time on the same shape, ms.
    pub default_ms: Option<f64>,
    /// The shape that was benchmarked.
    pub problem: Problem,
    /// `"gpu-timestamps"` or `"wall-clock"`.
    pub timer: String,
}

/// The tuning cache: adapter key → bucket key → entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TuneCache {
    /// [`CACHE_VERSION`].
    pub version: u32,
    /// Entries per adapter ([`adapter_key`]), then per bucket ([`bucket_key`]).
    pub adapters: BTreeMap<String, BTreeMap<String, TuneEntry>>,
}

impl Default for TuneCache {
    fn default() -> Self {
        Self {
            version: CACHE_VERSION,
            adapters: BTreeMap::new(),
        }
    }
}

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

fn parse_bucket(key: &str) -> Option<(&str, usize, usize)> {
    let mut parts = key.split('/');
    let dtype = parts.next()?;
    let d = parts.next()?.strip_prefix('d')?.parse().ok()?;
    let lk = parts.next()?.strip_prefix("lk")?.parse().ok()?;
    parts.next().is_none().then_some((dtype, d, lk))
}

fn io_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into()),
    }
}

impl TuneCache {
    /// Reads a cache file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let cache: TuneCache =
            serde_json::from_str(&text).map_err(|e| io_error(path, format!("not a tuning cache: {e}")))?;
        if cache.version != CACHE_VERSION {
            return Err(io_error(
                path,
                format!("tuning cache version {} (expected {CACHE_VERSION})", cache.version),
            ));
        }
        Ok(cache)
    }

    /// Reads `path` if it exists, else an empty cache.
    pub fn load_or_default(path: &Path) -> Result<Self> {
        match path.exists() {
            true => Self::load(path),
            false => Ok(Self::default()),
        }
    }

    /// Writes the cache (creating parent directories).
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| io_error(path, e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(io)
    }

    /// Stores `entry` for (adapter, bucket).
    pub fn insert(&mut self, adapter: &str, bucket: String, entry: TuneEntry) {
        self.adapters
            .entry(adapter.to_string())
            .or_default()
            .insert(bucket, entry);
    }

    /// The cached tile for `problem`: the exact bucket, else the bucket of the same dtype and head
    /// dim whose Lk is nearest (in powers of two).
    pub fn lookup(&self, adapter: &str, dtype: DType, problem: &Problem) -> Option<FlashConfig> {
        let entries = self.adapters.get(adapter)?;
        let d = head_dim_bucket(problem.dk, problem.dv);
        let lk = length_bucket(problem.lk);
        if let Some(e) = entries.get(&bucket_key(dtype, d, lk)) {
            return Some(e.config);
        }
        let log = |x: usize| x.max(1).ilog2() as i64;
        entries
            .iter()
            .filter_map(|(key, e)| {
                let (t, bd, blk) = parse_bucket(key)?;
                (t == dtype.name() && bd == d).then_some(((log(blk) - log(lk)).abs(), blk, e.config))
            })
            .min_by_key(|&(dist, blk, _)| (dist, blk))
            .map(|(_, _, c)| c)
    }
}

/// The cache path: `$WGPU_ATTENTION_TUNE_CACHE`, else `<user cache dir>/wgpu-attention/tune.json`.
pub fn cache_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CACHE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    dirs::cache_dir().map(|d| d.join("wgpu-attention").join("tune.json"))
}

/// True when `cfg` is a valid tile for head dims `dk`, `dv` on this device.
pub fn config_fits(ctx: &Context, cfg: &FlashConfig, dk: usize, dv: usize) -> bool {
    cfg.check(ctx, dk as u32, dv as u32).is_ok()
}

/// The process-wide cache, read on first use; `None` when absent or unreadable.
fn process_cache() -> Option<&'static TuneCache> {
    static CACHE: OnceLock<Option<TuneCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| cache_path().and_then(|p| TuneCache::load(&p).ok()))
        .as_ref()
}

static SHORT_COMPILES: AtomicBool = AtomicBool::new(false);

/// Multiply-adds below which [`prefer_short_compiles`] trades the fused kernel's throughput for
/// compile time (2³¹ ≈ 2·10⁹, e.g. 8 heads of L = 1024, D = 64: about 0.3 s of lavapipe work).
pub const SHORT_COMPILE_MACS: f64 = 2147483648.0;

/// Prefer fused tiles that compile quickly on CPU adapters, for processes that run one call and
/// exit (the CLI's `run`). LLVM unrolls the register code of every query row an invocation owns,
/// so lavapipe's first compile of the default 8-row tile at D = 64 takes seconds (more under
/// load), while 2 rows compile 4–8x faster at about half the throughput: with this set, a
/// problem below [`SHORT_COMPILE_MACS`] on a CPU adapter without a tuned tile uses at most 2
/// rows. Off by default: long-lived callers amortize the compile.
pub fn prefer_short_compiles(on: bool) {
    SHORT_COMPILES.store(on, Ordering::Relaxed);
}

/// The tile the fused kernel uses for `problem`: the tuning cache's winner for this adapter and
/// bucket when present and still valid, else the largest built-in candidate that fits (fewer
/// rows for small problems on CPU adapters with [`prefer_short_compiles`]).
pub(crate) fn flash_config(ctx: &Context, problem: &Problem, dtype: DType) -> Result<FlashConfig> {
    let cached = ctx.info().adapter.as_ref().and_then(|info| {
        let cfg = process_cache()?.lookup(&adapter_key(info), dtype, problem)?;
        config_fits(ctx, &cfg, problem.dk, problem.dv).then_some(cfg)
    });
    if let Some(cfg) = cached {
        return Ok(cfg);
    }
    let mut cfg = FlashConfig::default_for(ctx, problem.dk as u32, problem.dv as u32)?;
    let cpu = ctx
        .info()
        .adapter
        .as_ref()
        .is_some_and(|a| a.device_type == wgpu::DeviceType::Cpu);
    let p = problem;
    let macs = (p.b * p.hq) as f64 * p.lq as f64 * p.lk as f64 * (p.dk + p.dv) as f64;
    if cpu && SHORT_COMPILES.load(Ordering::Relaxed) && macs < SHORT_COMPILE_MACS {
        cfg.rows = cfg.rows.min(2);
    }
    Ok(cfg)
}

/// The tile [`crate::attention()`] would use for `problem` (for reports).
pub fn selected_flash_config(ctx: &Context, problem: &Problem, dtype: DType) -> Result<FlashConfig> {
    flash_config(ctx, problem, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(bq: u32) -> TuneEntry {
        TuneEntry {
            config: FlashConfig::new(32, bq),
            median_ms: 1.0,
            default_ms: None,
            problem: Problem {
                b: 1,
                hq: 1,
                hkv: 1,
                lq: 1,
                lk: 1,
                dk: 64,
                dv: 64,
            },
            timer: "wall-clock".into(),
        }
    }

    #[test]
    fn buckets_and_nearest_lookup() {
        assert_eq!(head_dim_bucket(80, 64), 128);
        assert_eq!(length_bucket(1000), 1024);
        assert_eq!(parse_bucket("f16/d64/lk256"), Some(("f16", 64, 256)));
        let mut c = TuneCache::default();
        c.insert("a", bucket_key(DType::F32, 64, 256), entry(8));
        c.insert("a", bucket_key(DType::F32, 64, 4096), entry(16));
        let mut p = entry(4).problem;
        p.lk = 300; // bucket 512: nearest is 256 (distance 1) before 4096 (distance 3)
        assert_eq!(c.lookup("a", DType::F32, &p).map(|c| c.rows), Some(8));
        p.lk = 2048;
        assert_eq!(c.lookup("a", DType::F32, &p).map(|c| c.rows), Some(16));
        assert_eq!(c.lookup("a", DType::F16, &p), None);
        assert_eq!(c.lookup("b", DType::F32, &p), None);
        p.dk = 128;
        assert_eq!(c.lookup("a", DType::F32, &p), None);
    }
}
