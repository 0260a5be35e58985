//! The pipelines created on one device, bounded: a least-recently-used map keyed by kernel,
//! storage type, switches and override constants.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{CompiledKernel, Key};

/// Default bound of a context's pipeline cache ([`crate::ContextOptions::pipeline_cache_capacity`]).
pub const DEFAULT_CACHE_CAPACITY: usize = 256;

/// Pipelines created so far on one device, at most [`PipelineCache::capacity`] of them: when a new
/// one would exceed it, the least recently used is dropped (calls prepared with it keep it alive).
pub struct PipelineCache {
    lru: Mutex<Lru<Key, Arc<CompiledKernel>>>,
    quick_first_calls: AtomicBool,
}

impl Default for PipelineCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CACHE_CAPACITY)
    }
}

impl std::fmt::Debug for PipelineCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl PipelineCache {
    /// An empty cache holding at most `capacity` pipelines (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            lru: Mutex::new(Lru::new(capacity)),
            quick_first_calls: AtomicBool::new(true),
        }
    }
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Key, Arc<CompiledKernel>>> {
        // The lock is never held across code that can panic; a poisoned map is still consistent.
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Number of cached pipelines.
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    /// True when nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The most pipelines kept.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }
    /// Changes the bound, dropping the least recently used pipelines beyond it.
    pub fn set_capacity(&self, capacity: usize) {
        self.lock().set_capacity(capacity);
    }
    /// Pipelines dropped so far to stay within the bound.
    pub fn evictions(&self) -> u64 {
        self.lock().evicted
    }
    /// Whether first calls on a CPU adapter may run quick-compiling code (default: yes). The fast
    /// code of the register design and of the backward's dQ and dK/dV kernels unrolls every
    /// head-dim loop for each row an invocation owns, which lavapipe compiles in seconds to
    /// minutes (the backward's default tile: 7 minutes cold). While that code is not compiled (in
    /// this process or in the persisted pipeline cache), a call without an explicit tile and of at
    /// most [`super::QUICK_MACS`] multiply-adds runs quick code instead, compiled in seconds: the
    /// forward with one row per invocation (15–20% slower than the fast tile on lavapipe), the
    /// backward with one row and head-dim loops kept as loops (about 5× slower).
    /// [`crate::Attention::warm_up`], [`crate::AttentionBackward::warm_up`], `wgpu-attention
    /// warm-up` and explicit tiles compile the fast code, which every later call then uses. Off:
    /// every call compiles the fast code (what `bench` and `tune` measure). Results agree within
    /// the kernels' stated tolerances either way.
    pub fn set_quick_first_calls(&self, on: bool) {
        self.quick_first_calls.store(on, Ordering::Relaxed);
    }
    /// See [`PipelineCache::set_quick_first_calls`].
    pub fn quick_first_calls(&self) -> bool {
        self.quick_first_calls.load(Ordering::Relaxed)
    }
    pub(super) fn contains(&self, key: &Key) -> bool {
        self.lock().map.contains_key(key)
    }
}

/// A map bounded to `capacity` entries that drops the least recently used one on overflow.
/// Lookups and inserts stamp entries with a counter; eviction scans for the oldest stamp, which is
/// cheap next to what a miss costs here (compiling a pipeline).
#[derive(Debug)]
pub(super) struct Lru<K, V> {
    pub(super) map: HashMap<K, (V, u64)>,
    clock: u64,
    pub(super) capacity: usize,
    pub(super) evicted: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
            evicted: 0,
        }
    }
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        let now = self.tick();
        self.map.get_mut(key).map(|(v, used)| {
            *used = now;
            v.clone()
        })
    }
    pub(super) fn insert(&mut self, key: K, value: V) {
        let now = self.tick();
        self.map.insert(key, (value, now));
        self.shrink();
    }
    pub(super) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.shrink();
    }
    fn shrink(&mut self) {
        while self.map.len() > self.capacity {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
                .expect("an over-full map has entries");
            self.map.remove(&oldest);
            self.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn lru_keeps_the_most_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.get(&"a"), Some(1)); // b is now the oldest
        lru.insert("c", 3);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.get(&"b"), None);
        assert_eq!((lru.get(&"a"), lru.get(&"c")), (Some(1), Some(3)));
        assert_eq!(lru.evicted, 1);
        lru.set_capacity(1);
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get(&"c"), Some(3));
        lru.set_capacity(0); // at least one entry
        assert_eq!(lru.len(), 1);
    }
}
