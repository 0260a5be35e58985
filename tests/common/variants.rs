//! Every composed shader source the crate can build (its permutation table): checked by naga
//! natively (tests/shaders.rs) and by the browser's WGSL compiler (tests/browser.rs).

use wgpu_attention::pipeline::{compose_switches, permutations, Kernel, Switches};
use wgpu_attention::DType;

/// One composed kernel source.
pub struct Source {
    pub kernel: Kernel,
    pub dtype: DType,
    pub switches: Switches,
    pub wgsl: String,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{}/{:?}", self.kernel, self.dtype, self.switches)
    }
}

/// Every permutation of the crate's table (`pipeline::permutations`), composed.
pub fn all() -> Vec<Source> {
    permutations()
        .into_iter()
        .map(|(kernel, dtype, switches)| Source {
            kernel,
            dtype,
            switches,
            wgsl: compose_switches(kernel, dtype, switches).unwrap_or_else(|e| panic!("{e}")),
        })
        .collect()
}
