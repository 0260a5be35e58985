//! The tuning cache file (feature `cache-files`): JSON, adapter → bucket → winning tile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{bucket_key, head_dim_bucket, length_bucket};
use crate::attention::Problem;
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
    /// Entries per adapter ([`super::adapter_key`]), then per bucket ([`super::bucket_key`]).
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

/// The process-wide cache, read on first use; `None` when absent or unreadable.
pub(super) fn process_cache() -> Option<&'static TuneCache> {
    static CACHE: OnceLock<Option<TuneCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| cache_path().and_then(|p| TuneCache::load(&p).ok()))
        .as_ref()
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
