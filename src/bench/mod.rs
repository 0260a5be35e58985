//! Benchmarks and tools behind the `wgpu-attention` CLI: GPU timing ([`timer`]), the adapter's
//! ceilings ([`peak`]), attention benchmarks checked against the CPU reference ([`runner`]) with
//! table/CSV/JSON reports ([`report`]) and SVG plots ([`plot`]), tensor files for `run`
//! ([`files`]), the attention family's variants with their inputs and references ([`variant`])
//! and the tile tuner ([`tuner`]) that writes the cache the library reads; [`varlen`] compares
//! packed variable-length prefill with the padded dense call.

pub use crate::files;
pub mod decode;
pub mod peak;
pub mod plot;
pub mod report;
pub mod runner;
pub mod timer;
pub mod tuner;
pub mod variant;
pub mod varlen;

pub use crate::tune::{
    adapter_key, cache_path, config_fits, head_dim_bucket, length_bucket, prefer_short_compiles, selected_flash_config,
    BucketDesign, MaskClass, ShapeClass, TuneCache, TuneEntry, TunedConfig, CACHE_ENV, CACHE_VERSION,
    SHORT_COMPILE_MACS,
};
pub use runner::{parse_shape, preset, run_bench, BenchOptions, BenchReport, KernelKind, Row};
pub use timer::{Timer, TimerKind, Timing};
pub use variant::Variant;

use crate::context::Context;

/// The adapter, as written into every report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    /// Adapter name (`"unknown"` for a borrowed device without adapter information).
    pub name: String,
    /// Backend (`Vulkan`, `Metal`, …).
    pub backend: String,
    /// Driver name.
    pub driver: String,
    /// Driver version information.
    pub driver_info: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu`, …
    pub device_type: String,
}

impl AdapterReport {
    /// The adapter of `ctx`.
    pub fn of(ctx: &Context) -> Self {
        match &ctx.info().adapter {
            Some(a) => Self {
                name: a.name.clone(),
                backend: format!("{:?}", a.backend),
                driver: a.driver.clone(),
                driver_info: a.driver_info.clone(),
                device_type: format!("{:?}", a.device_type),
            },
            None => Self {
                name: "unknown".into(),
                backend: "unknown".into(),
                driver: String::new(),
                driver_info: String::new(),
                device_type: "unknown".into(),
            },
        }
    }

    /// `name (backend, device type, driver …)`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}, {}, driver {} {})",
            self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

/// Flattens an error chain into one line (for CLI messages).
pub fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}
