//! The CPU reference: naive, materializes every score, accumulates in f64, follows
//! `docs/ATTENTION.md` line by line and shares no code with the GPU algorithms. Use it to check any
//! kernel, and [`compare`] to measure the difference.

mod backward;
mod compare;
pub mod family;
pub mod philox;
mod sdpa;
pub mod serving;
mod varlen;

/// Moved to [`crate::reference::serving`] (`kv_cache`, `paged`, `rope`); this alias goes in the
/// next release.
#[doc(hidden)]
pub mod cache {
    pub use super::serving::kv_cache::HostKvCache;
    pub use super::serving::paged::gather_pages;
    pub use super::serving::rope::{rope, HostAngles, HostRope};
}

pub use backward::{sdpa_backward, ReferenceGradients};
pub use compare::{compare, Comparison, Tolerance};
pub use sdpa::{sdpa, Broadcast, HostInputs, HostScore, ReferenceOutput};
pub use serving::{gather_pages, merge_states, HostAngles, HostKvCache, HostRope};
pub use varlen::{sdpa_varlen, VarlenHostInputs};
