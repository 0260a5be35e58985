//! Every composed shader source the crate can build: checked by naga natively (tests/shaders.rs)
//! and by the browser's WGSL compiler (tests/browser.rs).

use wgpu_attention::pipeline::{compose, compose_variant, Kernel, Variant};
use wgpu_attention::DType;

/// One composed kernel source.
pub struct Source {
    pub kernel: Kernel,
    pub dtype: DType,
    /// `None`: the kernel's default variant ([`compose`]).
    pub variant: Option<Variant>,
    pub wgsl: String,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}/{}", self.kernel, self.dtype)?;
        match &self.variant {
            Some(v) => write!(f, "/{v:?}"),
            None => Ok(()),
        }
    }
}

pub fn all() -> Vec<Source> {
    let mut variants = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        // Every source-level variant of the fused kernel.
        for rows in 1..=8 {
            for vec4_io in [false, true] {
                for subgroup in [0, 4, 8, 32, 64] {
                    for (additive, local) in [(false, false), (true, false), (false, true), (true, true)] {
                        let variant = Variant {
                            rows,
                            vec4_io,
                            subgroup,
                            additive,
                            local,
                            // ALiBi with every other combination, not a full product.
                            alibi: additive == local,
                            ..Variant::default()
                        };
                        variants.push((Kernel::FlashForward, dtype, variant));
                    }
                }
            }
        }
        // The register-blocked GEMM at every row count its host picks (powers of two up to 8).
        for rows in [1, 2, 4, 8] {
            variants.push((
                Kernel::GemmRegister,
                dtype,
                Variant {
                    rows,
                    ..Variant::default()
                },
            ));
        }
        // The decode kernel's row counts, loaders, K/V layouts and ALiBi.
        for rows in 1..=16 {
            for (vec4_io, paged) in [(false, false), (true, false), (false, true), (true, true)] {
                let variant = Variant {
                    rows,
                    vec4_io,
                    paged,
                    alibi: paged != vec4_io,
                    ..Variant::default()
                };
                variants.push((Kernel::FlashDecode, dtype, variant));
            }
        }
        // The decode kernel's lanes design for every subgroup size, row count and layout.
        for subgroup in [4, 8, 16, 32, 64] {
            for rows in [1, 4, 16] {
                for (vec4_io, paged) in [(false, false), (true, true)] {
                    let variant = Variant {
                        rows,
                        vec4_io,
                        paged,
                        alibi: paged,
                        subgroup,
                        ..Variant::default()
                    };
                    variants.push((Kernel::FlashDecodeLanes, dtype, variant));
                }
            }
        }
        // ALiBi in the staged path's softmax.
        let alibi = Variant {
            alibi: true,
            ..Variant::default()
        };
        variants.push((Kernel::MaskedSoftmax, dtype, alibi));
    }
    // Cooperative matrices of 16×16×16 (NVIDIA/AMD) besides the default 8×8×8.
    variants.push((
        Kernel::FlashCoopmat,
        DType::F16,
        Variant {
            coop: 16,
            ..Variant::default()
        },
    ));
    variants.push((
        Kernel::GemmCoopmat,
        DType::F16,
        Variant {
            coop: 16,
            rows: 2,
            ..Variant::default()
        },
    ));
    let defaults = Kernel::ALL.into_iter().flat_map(|kernel| {
        kernel.dtypes().iter().map(move |&dtype| Source {
            kernel,
            dtype,
            variant: None,
            wgsl: compose(kernel, dtype),
        })
    });
    let variants = variants.into_iter().map(|(kernel, dtype, variant)| Source {
        kernel,
        dtype,
        variant: Some(variant),
        wgsl: compose_variant(kernel, dtype, variant),
    });
    defaults.chain(variants).collect()
}
