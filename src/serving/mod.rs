//! Serving: what token-by-token generation needs around the attention kernels.
//!
//! - [`kv_cache`]: the [`KvCache`] (K/V and the length of every sequence on the GPU, in-kernel
//!   appends, attention over the cache);
//! - [`paged`]: its paged layout ([`PagedLayout`], a page pool shared through a block table);
//! - [`mod@rope`]: rotary position embedding ([`Rope`]), of the queries and of the appended keys;
//! - [`mod@merge`]: merging the partial states (O, LSE) of attention over split key ranges.
//!
//! Their CPU twins are in [`crate::reference::serving`].

pub mod kv_cache;
pub mod merge;
pub mod paged;
pub mod rope;

pub use kv_cache::{AppendOptions, KvCache, PreparedAppend, PreparedRope};
pub use merge::merge_attention_states;
pub use paged::{PagedLayout, UNMAPPED_PAGE};
pub use rope::{rope, rope_angle, rope_encode, Rope, RopeStyle, DEFAULT_THETA_BASE};
