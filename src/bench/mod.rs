//! Benchmarks and tools behind the `wgpu-attention` CLI: the adapter's ceilings ([`peak`]),
//! attention benchmarks checked against the CPU reference ([`runner`], timed by
//! [`crate::timer`], recorded as [`crate::bench_record`]) with table/CSV/JSON renderings
//! ([`render`]) and SVG plots ([`plot`]), the attention family's variants with their inputs and
//! references ([`variant`]) and the tile tuner ([`tuner`]) that writes the cache the library
//! reads; [`decode`] sweeps the decode kernel and [`varlen`] compares packed variable-length
//! prefill with the padded dense call.

pub mod decode;
pub mod peak;
pub mod plot;
pub mod render;
pub mod runner;
pub mod tuner;
pub mod variant;
pub mod varlen;

pub use crate::timer::{Timer, TimerKind, Timing};
pub use crate::tune::{
    adapter_key, cache_path, config_fits, head_dim_bucket, length_bucket, selected_flash_config, BucketDesign,
    MaskClass, ShapeClass, TuneCache, TuneEntry, TunedConfig, CACHE_ENV, CACHE_VERSION,
};
pub use runner::{parse_shape, preset, run_bench, BenchOptions, BenchReport, KernelKind, Row};
pub use variant::Variant;

pub use crate::bench_record::AdapterReport;

/// Flattens an error chain into one line (for CLI messages).
pub fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}
