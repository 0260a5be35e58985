//! Pipelines across processes: the driver's pipeline cache persisted on disk where the device has
//! `Features::PIPELINE_CACHE`, and the hook that tells a front end a pipeline is being compiled.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Environment variable naming the directory of the persisted pipeline caches; empty or `off`
/// disables them (default with the `cache-files` feature: `wgpu-attention/pipelines` under the
/// user cache directory; without it, nothing is written unless this variable names a directory).
pub const PIPELINE_CACHE_ENV: &str = "WGPU_ATTENTION_PIPELINE_CACHE";

/// The directory of the persisted pipeline caches, `None` when disabled or unknown.
pub fn pipeline_cache_dir() -> Option<PathBuf> {
    match std::env::var_os(PIPELINE_CACHE_ENV) {
        Some(p) if p.is_empty() || p == "off" => None,
        Some(p) => Some(PathBuf::from(p)),
        None => default_dir(),
    }
}

#[cfg(feature = "cache-files")]
fn default_dir() -> Option<PathBuf> {
    user_cache_dir().map(|d| d.join("pipelines"))
}

/// `<user cache dir>/wgpu-attention` (none in a browser).
#[cfg(feature = "cache-files")]
pub(crate) fn user_cache_dir() -> Option<PathBuf> {
    #[cfg(not(target_arch = "wasm32"))]
    return dirs::cache_dir().map(|d| d.join("wgpu-attention"));
    #[cfg(target_arch = "wasm32")]
    None
}

/// A library built without `cache-files` writes no file the caller did not ask for.
#[cfg(not(feature = "cache-files"))]
fn default_dir() -> Option<PathBuf> {
    None
}

/// FNV-1a: a hash that stays the same across builds (file names and pipeline keys on disk).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &b in part.iter().chain(&[0xff]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The on-disk key of a pipeline: its full source and override constants.
pub(super) fn key(source: &str, constants: &[(&'static str, u64)]) -> u64 {
    fnv1a(&[source.as_bytes(), format!("{constants:?}").as_bytes()])
}

/// Magic of a pipeline cache file: the hashes of the pipelines it holds, then the driver's data.
const DISK_MAGIC: &[u8; 8] = b"wgpuatt1";

/// The driver's pipeline cache (`wgpu::PipelineCache`) of a context the crate created, loaded
/// from and written back to one file per adapter and driver. The file also lists which pipelines
/// were compiled into it, so the crate can tell a cache hit from a compile (see
/// [`set_compile_hook`]). A file from another driver version is ignored by wgpu and replaced.
pub(crate) struct DiskCache {
    cache: wgpu::PipelineCache,
    path: PathBuf,
    known: Mutex<HashSet<u64>>,
}

impl DiskCache {
    /// The cache of `device` (created from the adapter `info`), when it has
    /// `Features::PIPELINE_CACHE` and persisting is enabled.
    pub(crate) fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo) -> Option<Self> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let key = wgpu::util::pipeline_cache_key(info)?;
        let driver = fnv1a(&[
            info.name.as_bytes(),
            info.driver.as_bytes(),
            info.driver_info.as_bytes(),
        ]);
        let path = pipeline_cache_dir()?.join(format!("{key}_{driver:016x}.bin"));
        let (known, data) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| Self::parse(&bytes))
            .unwrap_or_default();
        // SAFETY: `data` is what `PipelineCache::get_data` returned for an adapter with the same
        // `pipeline_cache_key`, driver name and version (the file name), written whole (temporary
        // file, then rename); wgpu validates its header and falls back to an empty cache.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("wgpu-attention"),
                data: (!data.is_empty()).then_some(data.as_slice()),
                fallback: true,
            })
        };
        Some(Self {
            cache,
            path,
            known: Mutex::new(known),
        })
    }

    fn parse(bytes: &[u8]) -> Option<(HashSet<u64>, Vec<u8>)> {
        let rest = bytes.strip_prefix(DISK_MAGIC)?;
        let count = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let keys = rest.get(4..4 + 8 * count)?;
        let known = keys
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Some((known, rest[4 + 8 * count..].to_vec()))
    }

    pub(super) fn cache(&self) -> &wgpu::PipelineCache {
        &self.cache
    }

    pub(super) fn knows(&self, key: u64) -> bool {
        self.known.lock().is_ok_and(|k| k.contains(&key))
    }

    /// Records `key` and writes the driver's data back (best effort: a cache that cannot be
    /// written only costs the next process a compile). Known keys are not written again.
    pub(super) fn save(&self, key: u64) {
        if self.knows(key) {
            return;
        }
        let Some(data) = self.cache.get_data() else {
            return;
        };
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        known.insert(key);
        let mut bytes = Vec::with_capacity(12 + 8 * known.len() + data.len());
        bytes.extend_from_slice(DISK_MAGIC);
        bytes.extend_from_slice(&(known.len() as u32).to_le_bytes());
        for k in known.iter() {
            bytes.extend_from_slice(&k.to_le_bytes());
        }
        bytes.extend_from_slice(&data);
        // A name no other process or context writes, renamed over the file in one step.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = self.path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let written = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, &bytes))
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// A function told about every pipeline the crate is about to compile (see [`set_compile_hook`]).
pub type CompileHook = Box<dyn Fn(&str) + Send + Sync>;

static COMPILE_HOOK: RwLock<Option<CompileHook>> = RwLock::new(None);

/// Installs (or with `None` removes) a process-wide hook called with a short description of each
/// pipeline (e.g. `flash_forward.wgsl f32`) just before the crate compiles it, when neither this
/// context's pipelines nor the on-disk pipeline cache have it. Driver compiles of large kernels
/// can take seconds to minutes on CPU adapters, so a front end may say what it is waiting for;
/// the library itself never prints.
pub fn set_compile_hook(hook: Option<CompileHook>) {
    *COMPILE_HOOK.write().unwrap_or_else(|e| e.into_inner()) = hook;
}

pub(super) fn notify_compile(what: &str) {
    if let Some(hook) = COMPILE_HOOK.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        hook(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_files_parse_or_are_ignored() {
        let mut bytes = DISK_MAGIC.to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend_from_slice(&7u64.to_le_bytes());
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(b"driver data");
        let (known, data) = DiskCache::parse(&bytes).expect("a valid file");
        assert_eq!(known, HashSet::from([7, 9]));
        assert_eq!(data, b"driver data");
        // Another format, a truncated key list: ignored (an empty cache), never a panic.
        assert!(DiskCache::parse(b"something else").is_none());
        assert!(DiskCache::parse(&bytes[..20]).is_none());
        let mut huge = DISK_MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(DiskCache::parse(&huge).is_none());
    }

    #[test]
    fn keys_depend_on_source_and_constants() {
        let k = key("fn main() {}", &[("WG", 16)]);
        assert_eq!(k, key("fn main() {}", &[("WG", 16)]));
        assert_ne!(k, key("fn main() { }", &[("WG", 16)]));
        assert_ne!(k, key("fn main() {}", &[("WG", 32)]));
    }
}
