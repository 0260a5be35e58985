//! CPU twins of [`crate::serving`]: the KV cache, its paged layout, rotary embedding and the
//! merge of partial attention states, naive and in f64.

pub mod kv_cache;
pub mod merge;
pub mod paged;
pub mod rope;

pub use kv_cache::HostKvCache;
pub use merge::merge_states;
pub use paged::gather_pages;
pub use rope::{rope, HostAngles, HostRope};
