//! The CPU reference: naive, materializes every score, accumulates in f64, follows
//! `docs/ATTENTION.md` line by line and shares no code with the GPU algorithms. Use it to check any
//! kernel, and [`compare`] to measure the difference.

mod backward;
pub mod cache;
mod compare;
pub mod family;
mod merge;
pub mod philox;
mod sdpa;
mod varlen;

pub use backward::{sdpa_backward, ReferenceGradients};
pub use cache::{gather_pages, HostAngles, HostKvCache, HostRope};
pub use compare::{compare, Comparison, Tolerance};
pub use merge::merge_states;
pub use sdpa::{sdpa, Broadcast, HostInputs, HostScore, ReferenceOutput};
pub use varlen::{sdpa_varlen, VarlenHostInputs};
