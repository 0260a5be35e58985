//! The table of measured best tiles, per adapter (the tuning cache file written by
//! `wgpu-attention tune`, feature `cache-files`): JSON, adapter → bucket → winning tile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{length_bucket, BucketDesign, ShapeClass};
use crate::attention::Problem;
use crate::error::{Error, Result};
use crate::kernels::{CoopmatConfig, DecodeConfig, FlashConfig, TiledConfig};
use crate::options::Design;

/// Environment variable overriding the cache path.
pub const CACHE_ENV: &str = "WGPU_ATTENTION_TUNE_CACHE";
/// Format version written into the cache; files of another version are ignored.
pub const CACHE_VERSION: u32 = 3;

/// A tuned winner: a tile of a fused design or of the decode kernel. The bucket key names the
/// design too (`register/…`, `tiled/…`, `coopmat/…`, `decode/…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunedConfig {
    /// The register design's tile.
    Register(FlashConfig),
    /// The tiled design's tile.
    Tiled(TiledConfig),
    /// The cooperative-matrix design's tile.
    Coopmat(CoopmatConfig),
    /// The decode kernel's tile and splits.
    Decode(DecodeConfig),
}

/// One tuned bucket: the winner and what it was measured against.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TuneEntry {
    /// The winning tile.
    pub config: TunedConfig,
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
    /// Entries per adapter ([`super::adapter_key`]), then per bucket ([`ShapeClass::key`]).
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

/// The Lk bucket of a key of `class`, `None` for another class's key.
fn lk_of(key: &str, class_prefix: &str) -> Option<usize> {
    key.strip_prefix(class_prefix)?.strip_prefix("/lk")?.parse().ok()
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

    /// The cached fused tile for a call of `class` with `lk` keys: the exact bucket, else the
    /// bucket of the same class whose Lk is nearest (in powers of two). Another class's entry
    /// never serves.
    pub fn lookup(&self, adapter: &str, class: &ShapeClass, lk: usize) -> Option<FlashConfig> {
        match self.lookup_entry(adapter, class, BucketDesign::Fused(Design::Register), lk)? {
            TunedConfig::Register(c) => Some(c),
            _ => None,
        }
    }

    /// The cached decode tile for a call of `class` with `lk` keys (as [`TuneCache::lookup`]).
    pub fn lookup_decode(&self, adapter: &str, class: &ShapeClass, lk: usize) -> Option<DecodeConfig> {
        match self.lookup_entry(adapter, class, BucketDesign::Decode, lk)? {
            TunedConfig::Decode(c) => Some(c),
            _ => None,
        }
    }

    /// The cached winner of `design` for a call of `class` with `lk` keys (as
    /// [`TuneCache::lookup`]).
    pub fn lookup_entry(
        &self,
        adapter: &str,
        class: &ShapeClass,
        design: BucketDesign,
        lk: usize,
    ) -> Option<TunedConfig> {
        self.nearest(adapter, class, design, lk).map(|(_, e)| e.config)
    }

    /// Among `designs`, the one whose entry for (`class`, `lk`) measured fastest: entries at the
    /// nearest Lk bucket compete on their median time.
    pub fn fastest_design(&self, adapter: &str, class: &ShapeClass, designs: &[Design], lk: usize) -> Option<Design> {
        designs
            .iter()
            .filter_map(|&d| {
                let (dist, e) = self.nearest(adapter, class, BucketDesign::Fused(d), lk)?;
                Some((dist, e.median_ms, d))
            })
            .min_by(|a, b| (a.0, a.1).partial_cmp(&(b.0, b.1)).unwrap_or(std::cmp::Ordering::Equal))
            .map(|(_, _, d)| d)
    }

    /// The entry of `design` at the Lk bucket nearest `lk` (in powers of two), with that distance.
    fn nearest(&self, adapter: &str, class: &ShapeClass, design: BucketDesign, lk: usize) -> Option<(i64, &TuneEntry)> {
        let entries = self.adapters.get(adapter)?;
        let lk = length_bucket(lk);
        if let Some(e) = entries.get(&class.key_in(design, lk)) {
            return Some((0, e));
        }
        let prefix = class.prefix_in(design);
        let log = |x: usize| x.max(1).ilog2() as i64;
        entries
            .iter()
            .filter_map(|(key, e)| lk_of(key, &prefix).map(|blk| ((log(blk) - log(lk)).abs(), blk, e)))
            .min_by_key(|&(dist, blk, _)| (dist, blk))
            .map(|(dist, _, e)| (dist, e))
    }
}

/// The cache path: `$WGPU_ATTENTION_TUNE_CACHE`, else `<user cache dir>/wgpu-attention/tune.json`.
pub fn cache_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(CACHE_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    crate::pipeline::user_cache_dir().map(|d| d.join("tune.json"))
}

/// The process-wide cache, read on first use; `None` when absent or unreadable.
pub(super) fn process_table() -> Option<&'static TuneCache> {
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
            config: TunedConfig::Register(FlashConfig::new(32, bq)),
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

    fn class(p: &Problem, dtype: crate::tensor::DType, opts: &crate::options::AttentionOptions) -> ShapeClass {
        ShapeClass::of(p, dtype, opts)
    }

    #[test]
    fn buckets_and_nearest_lookup_within_a_class() {
        use crate::options::{Alignment, AttentionOptions};
        use crate::tensor::DType;
        assert_eq!(super::super::head_dim_bucket(80, 64), 128);
        assert_eq!(length_bucket(1000), 1024);
        let plain = AttentionOptions::default();
        let prefill = Problem {
            b: 1,
            hq: 4,
            hkv: 4,
            lq: 256,
            lk: 256,
            dk: 64,
            dv: 64,
        };
        let c256 = class(&prefill, DType::F32, &plain);
        assert_eq!(c256.key(256), "register/f32/d64/lq64/g1/none/lk256");
        assert_eq!(lk_of("register/f32/d64/lq64/g1/none/lk256", &c256.prefix()), Some(256));
        let mut c = TuneCache::default();
        c.insert("a", c256.key(256), entry(8));
        c.insert("a", c256.key(4096), entry(16));
        // Nearest Lk within the class: 300 → bucket 512, nearest 256 (distance 1) before 4096.
        assert_eq!(c.lookup("a", &c256, 300).map(|c| c.rows), Some(8));
        assert_eq!(c.lookup("a", &c256, 2048).map(|c| c.rows), Some(16));
        assert_eq!(c.lookup("b", &c256, 2048), None);
        // Every other class is served nothing: dtype, head dim, Lq class, GQA ratio, masks.
        let decode = Problem {
            lq: 1,
            hq: 16,
            ..prefill
        };
        let causal = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            ..Default::default()
        };
        for other in [
            class(&prefill, DType::F16, &plain),
            class(
                &Problem {
                    dk: 128,
                    dv: 128,
                    ..prefill
                },
                DType::F32,
                &plain,
            ),
            class(&Problem { lq: 1, ..prefill }, DType::F32, &plain),
            class(&Problem { hq: 16, ..prefill }, DType::F32, &plain),
            class(&decode, DType::F32, &plain),
            class(&prefill, DType::F32, &causal),
        ] {
            assert_ne!(other, c256);
            assert_eq!(c.lookup("a", &other, 256), None, "{}", other.prefix());
        }
        // Lq ≥ 64 is one class: a 1024-row prefill shares the 256-row entries.
        assert_eq!(class(&Problem { lq: 1024, ..prefill }, DType::F32, &plain), c256);
        // Designs are separate: a decode entry serves decode lookups only.
        let d = class(&decode, DType::F32, &plain);
        let tile = DecodeConfig {
            workgroup: 16,
            rows: 0,
            splits: 8,
            lanes: false,
        };
        c.insert(
            "a",
            d.key_in(BucketDesign::Decode, 4096),
            TuneEntry {
                config: TunedConfig::Decode(tile),
                ..entry(1)
            },
        );
        assert_eq!(
            d.key_in(BucketDesign::Decode, 4096),
            "decode/f32/d64/lq1/g4/none/lk4096"
        );
        assert_eq!(c.lookup_decode("a", &d, 3000), Some(tile));
        assert_eq!(c.lookup("a", &d, 4096), None);
        assert_eq!(c.lookup_decode("a", &c256, 256), None);
    }
}
