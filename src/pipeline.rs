//! Shader composition and the pipeline cache.
//!
//! Each kernel is one WGSL file in `shaders/` with one entry point `main`. Shared pieces from
//! `shaders/common/` are concatenated in front of it, after a generated prelude that fixes the
//! storage element type (`alias elem = f32;` or `f16`). Tile and workgroup sizes are WGSL
//! `override` constants set at pipeline creation; shapes travel in a uniform buffer, so one
//! pipeline serves every shape. Pipelines are cached by (kernel, dtype, variant, constants), in a
//! bounded least-recently-used cache per context, and, where the device has
//! `Features::PIPELINE_CACHE`, the driver's compiled code is persisted across processes (see
//! [`PIPELINE_CACHE_ENV`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::DType;

mod driver_cache;
mod permutations;
use driver_cache as persist;
#[cfg(not(target_arch = "wasm32"))]
mod spirv;

pub use permutations::{axes, is_permutation, permutations, permutations_of, Axes};
#[cfg(feature = "cache-files")]
pub(crate) use persist::user_cache_dir;
pub(crate) use persist::DiskCache;
pub use persist::{pipeline_cache_dir, set_compile_hook, CompileHook, PIPELINE_CACHE_ENV};

/// The shared WGSL pieces, by file name.
pub mod common {
    /// The `Params` uniform, flags and small helpers.
    pub const PARAMS: &str = include_str!("../shaders/common/params.wgsl");
    /// `linear_workgroup`: large grids spread over x and y.
    pub const GRID: &str = include_str!("../shaders/common/grid.wgsl");
    /// Philox-4x32-10 counter-based random words keyed by (seed, b, h, i, j).
    pub const PHILOX: &str = include_str!("../shaders/common/philox.wgsl");
    /// Dot-product score term of the fused kernel.
    pub const SCORE_DOT: &str = include_str!("../shaders/common/score_dot.wgsl");
    /// Local-p positions binding and `row_center`.
    pub const CENTERS: &str = include_str!("../shaders/common/centers.wgsl");
    /// `row_center` without a binding (kernels compiled without local-p).
    pub const NO_CENTERS: &str = include_str!("../shaders/common/no_centers.wgsl");
    /// Additive (Bahdanau) score term of the fused kernel.
    pub const SCORE_ADDITIVE: &str = include_str!("../shaders/common/score_additive.wgsl");
    /// ALiBi slopes uniform and `alibi_slope`.
    pub const ALIBI: &str = include_str!("../shaders/common/alibi.wgsl");
    /// `alibi_slope` without a binding (kernels compiled without ALiBi).
    pub const NO_ALIBI: &str = include_str!("../shaders/common/no_alibi.wgsl");
    /// The decode kernels' split layout, partial states, key ranges and row scores.
    pub const DECODE_PARTS: &str = include_str!("../shaders/common/decode_parts.wgsl");
    /// K/V row addresses of a contiguous [B, Hkv, L, D] layout (any strides).
    pub const KV_CONTIGUOUS: &str = include_str!("../shaders/common/kv_contiguous.wgsl");
    /// K/V row addresses through a block table (paged KV cache).
    pub const KV_PAGED: &str = include_str!("../shaders/common/kv_paged.wgsl");
    /// Bias, boolean mask, key padding, causal, window, zero-score and local-p predicates
    /// (`finish_score`) and the post-softmax dropout / Gaussian factor (`value_weight`).
    pub const MASK: &str = include_str!("../shaders/common/mask.wgsl");
    /// The fused designs' query-row block: its (b, h), rows, lengths and key range.
    pub const ROW_BLOCK: &str = include_str!("../shaders/common/row_block.wgsl");
    /// The GEMM kernels' uniform, bindings, edge-aware loads and epilogue (`store_c`).
    pub const GEMM_IO: &str = include_str!("../shaders/common/gemm_io.wgsl");
    /// The register-tiled GEMM tile loop shared by QKᵀ and P·V.
    pub const GEMM_TILE: &str = include_str!("../shaders/common/gemm_tile.wgsl");
    /// Q/K/V/O bindings with vec4 loads (aligned operands).
    pub const LOAD_VEC4: &str = include_str!("../shaders/common/load_vec4.wgsl");
    /// Q/K/V/O bindings with scalar loads (any head dim, offset and stride).
    pub const LOAD_SCALAR: &str = include_str!("../shaders/common/load_scalar.wgsl");
    /// K/V rows fetched by each invocation (no subgroup support needed).
    pub const FETCH_PLAIN: &str = include_str!("../shaders/common/fetch_plain.wgsl");
    /// K/V rows fetched cooperatively by a subgroup and shared with subgroupBroadcast.
    pub const FETCH_SUBGROUP: &str = include_str!("../shaders/common/fetch_subgroup.wgsl");
    /// The backward kernels' uniform, per-row records (dO, LSE, D) and gradient output.
    pub const GRAD_IO: &str = include_str!("../shaders/common/grad_io.wgsl");
    /// dO read from the backward's row records (8 storage bindings).
    pub const GRAD_DO_RECORDS: &str = include_str!("../shaders/common/grad_do_records.wgsl");
    /// dO read from the caller's tensor (a 9th storage binding).
    pub const GRAD_DO_DIRECT: &str = include_str!("../shaders/common/grad_do_direct.wgsl");
    /// dO read from the caller's tensor with vec4 loads (aligned operands).
    pub const GRAD_DO_DIRECT_VEC4: &str = include_str!("../shaders/common/grad_do_direct_vec4.wgsl");
    /// Head-dim loop trip counts from the override constants (unrolled: the fast code).
    pub const LOOPS_UNROLLED: &str = include_str!("../shaders/common/loops_unrolled.wgsl");
    /// Head-dim loop trip counts from the uniform (kept as loops: the compact code).
    pub const LOOPS_COMPACT: &str = include_str!("../shaders/common/loops_compact.wgsl");
    /// The backward kernels' recomputed probability with its dropout and soft-cap factors.
    pub const GRAD_PROB: &str = include_str!("../shaders/common/grad_prob.wgsl");
}

/// Source-level specialization that override constants cannot express (WGSL needs constant sizes
/// for per-invocation arrays and fixed binding types). Part of the pipeline cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Variant {
    /// Query rows per invocation: `//@each_row` blocks are repeated this many times (0 = none).
    pub rows: u32,
    /// Use `common/load_vec4.wgsl` instead of `common/load_scalar.wgsl`.
    pub vec4_io: bool,
    /// Subgroup size for `common/fetch_subgroup.wgsl` (`//@each_lane` blocks); 0 = `fetch_plain`.
    pub subgroup: u32,
    /// Additive (Bahdanau) score instead of the dot product (`common/score_additive.wgsl`).
    pub additive: bool,
    /// Local-p positions binding (`common/centers.wgsl`; otherwise `common/no_centers.wgsl`).
    pub local: bool,
    /// ALiBi slopes binding (`common/alibi.wgsl`; otherwise `common/no_alibi.wgsl`).
    pub alibi: bool,
    /// K/V rows read through a block table (`common/kv_paged.wgsl`; otherwise
    /// `common/kv_contiguous.wgsl`).
    pub paged: bool,
    /// Cooperative-matrix size M (M×M×M, f16 × f16 → f32): the prelude enables
    /// `wgpu_cooperative_matrix` and defines `CM` and the `coop_a`/`coop_b`/`coop_c` types
    /// (0 = none).
    pub coop: u32,
    /// Per-invocation accumulator vec4s of the tiled design (`const SLOTS`; 0 = none).
    pub slots: u32,
    /// Head-dim loops bounded by the uniform (`common/loops_compact.wgsl`) instead of the
    /// override constants (`common/loops_unrolled.wgsl`): the backward's dQ and dK/dV quick code
    /// for first calls on CPU drivers (see [`PipelineCache::set_quick_first_calls`]).
    pub compact: bool,
}

/// Every kernel of the crate: its shader file and the common pieces it is composed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// `shaders/qk_scores.wgsl`: S = scale · Q Kᵀ.
    QkScores,
    /// `shaders/masked_softmax.wgsl`: cap, bias, masks, softmax, LSE.
    MaskedSoftmax,
    /// `shaders/weighted_sum.wgsl`: O = P V.
    WeightedSum,
    /// `shaders/flash_forward.wgsl`: the fused single-pass kernel (register design).
    FlashForward,
    /// `shaders/flash_coopmat.wgsl`: the fused kernel on cooperative matrices (f16 storage).
    FlashCoopmat,
    /// `shaders/flash_tiled.wgsl`: the fused kernel with Q, K and V tiles in workgroup memory
    /// (tiled design).
    FlashTiled,
    /// `shaders/peak_fma.wgsl`: calibration kernel, dependent FMA chains (arithmetic ceiling).
    PeakFma,
    /// `shaders/peak_bandwidth.wgsl`: calibration kernel, vec4 stream copy (memory ceiling).
    PeakBandwidth,
    /// `shaders/gemm.wgsl`: batched GEMM with bias, accumulation and tanh (projections), tiled
    /// through workgroup memory (the GPU design).
    Gemm,
    /// `shaders/gemm_register.wgsl`: the same GEMM register-blocked, without workgroup memory or
    /// barriers (the CPU-adapter design); [`Variant::rows`] rows per invocation.
    GemmRegister,
    /// `shaders/gemm_coopmat.wgsl`: the same GEMM on cooperative matrices (f16 storage, f32
    /// accumulation): [`Variant::coop`] is the matrix size, [`Variant::rows`] the fragments per
    /// subgroup.
    GemmCoopmat,
    /// `shaders/hard_attention.wgsl`: one sampled key per query (Gumbel-max over Philox words).
    HardAttention,
    /// `shaders/additive_hidden.wgsl`: the naive additive path's [Lq, Lk, Da] tanh tensor.
    AdditiveHidden,
    /// `shaders/pool.wgsl`: sequence pooling (softmax, feed-forward or sum weights).
    Pool,
    /// `shaders/kv_write.wgsl`: KV-cache append (rows at each sequence's length, lengths advanced)
    /// and rotary embedding.
    KvWrite,
    /// `shaders/flash_decode.wgsl`: split-KV decode kernel with GQA packing (partial states).
    FlashDecode,
    /// `shaders/decode_merge.wgsl`: merge of partial attention states (O, LSE).
    DecodeMerge,
    /// `shaders/flash_decode_lanes.wgsl`: the decode kernel with the head dim spread over the
    /// lanes of a subgroup.
    FlashDecodeLanes,
    /// `shaders/flash_backward_pre.wgsl`: backward pre-pass, D = rowsum(dO ∘ O) and row records.
    FlashBackwardPre,
    /// `shaders/flash_backward_q.wgsl`: backward dQ over query blocks.
    FlashBackwardQ,
    /// `shaders/flash_backward_kv.wgsl`: backward dK and dV over key blocks.
    FlashBackwardKv,
    /// `shaders/flash_backward_bias.wgsl`: backward dBias, reduced over broadcast axes.
    FlashBackwardBias,
    /// `shaders/flash_backward_ds.wgsl`: the staged backward's element-wise P and dS.
    FlashBackwardDs,
    /// `shaders/flash_backward_q.wgsl` reading dO from its tensor (a 9th storage binding).
    FlashBackwardQDirect,
    /// `shaders/flash_backward_kv.wgsl` reading dO from its tensor.
    FlashBackwardKvDirect,
    /// `shaders/flash_backward_bias.wgsl` reading dO from its tensor.
    FlashBackwardBiasDirect,
}

impl Kernel {
    /// All kernels, for tests and pre-compilation.
    pub const ALL: [Kernel; 26] = [
        Kernel::QkScores,
        Kernel::MaskedSoftmax,
        Kernel::WeightedSum,
        Kernel::FlashForward,
        Kernel::FlashCoopmat,
        Kernel::FlashTiled,
        Kernel::PeakFma,
        Kernel::PeakBandwidth,
        Kernel::Gemm,
        Kernel::GemmRegister,
        Kernel::GemmCoopmat,
        Kernel::HardAttention,
        Kernel::AdditiveHidden,
        Kernel::Pool,
        Kernel::KvWrite,
        Kernel::FlashDecode,
        Kernel::DecodeMerge,
        Kernel::FlashDecodeLanes,
        Kernel::FlashBackwardPre,
        Kernel::FlashBackwardQ,
        Kernel::FlashBackwardKv,
        Kernel::FlashBackwardBias,
        Kernel::FlashBackwardDs,
        Kernel::FlashBackwardQDirect,
        Kernel::FlashBackwardKvDirect,
        Kernel::FlashBackwardBiasDirect,
    ];

    /// Shader file name (without directory).
    pub fn file(self) -> &'static str {
        match self {
            Kernel::QkScores => "qk_scores.wgsl",
            Kernel::MaskedSoftmax => "masked_softmax.wgsl",
            Kernel::WeightedSum => "weighted_sum.wgsl",
            Kernel::FlashForward => "flash_forward.wgsl",
            Kernel::FlashCoopmat => "flash_coopmat.wgsl",
            Kernel::FlashTiled => "flash_tiled.wgsl",
            Kernel::PeakFma => "peak_fma.wgsl",
            Kernel::PeakBandwidth => "peak_bandwidth.wgsl",
            Kernel::Gemm => "gemm.wgsl",
            Kernel::GemmRegister => "gemm_register.wgsl",
            Kernel::GemmCoopmat => "gemm_coopmat.wgsl",
            Kernel::HardAttention => "hard_attention.wgsl",
            Kernel::AdditiveHidden => "additive_hidden.wgsl",
            Kernel::Pool => "pool.wgsl",
            Kernel::KvWrite => "kv_write.wgsl",
            Kernel::FlashDecode => "flash_decode.wgsl",
            Kernel::DecodeMerge => "decode_merge.wgsl",
            Kernel::FlashDecodeLanes => "flash_decode_lanes.wgsl",
            Kernel::FlashBackwardPre => "flash_backward_pre.wgsl",
            Kernel::FlashBackwardQ | Kernel::FlashBackwardQDirect => "flash_backward_q.wgsl",
            Kernel::FlashBackwardKv | Kernel::FlashBackwardKvDirect => "flash_backward_kv.wgsl",
            Kernel::FlashBackwardBias | Kernel::FlashBackwardBiasDirect => "flash_backward_bias.wgsl",
            Kernel::FlashBackwardDs => "flash_backward_ds.wgsl",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Kernel::QkScores => include_str!("../shaders/qk_scores.wgsl"),
            Kernel::MaskedSoftmax => include_str!("../shaders/masked_softmax.wgsl"),
            Kernel::WeightedSum => include_str!("../shaders/weighted_sum.wgsl"),
            Kernel::FlashForward => include_str!("../shaders/flash_forward.wgsl"),
            Kernel::FlashCoopmat => include_str!("../shaders/flash_coopmat.wgsl"),
            Kernel::FlashTiled => include_str!("../shaders/flash_tiled.wgsl"),
            Kernel::PeakFma => include_str!("../shaders/peak_fma.wgsl"),
            Kernel::PeakBandwidth => include_str!("../shaders/peak_bandwidth.wgsl"),
            Kernel::Gemm => include_str!("../shaders/gemm.wgsl"),
            Kernel::GemmRegister => include_str!("../shaders/gemm_register.wgsl"),
            Kernel::GemmCoopmat => include_str!("../shaders/gemm_coopmat.wgsl"),
            Kernel::HardAttention => include_str!("../shaders/hard_attention.wgsl"),
            Kernel::AdditiveHidden => include_str!("../shaders/additive_hidden.wgsl"),
            Kernel::Pool => include_str!("../shaders/pool.wgsl"),
            Kernel::KvWrite => include_str!("../shaders/kv_write.wgsl"),
            Kernel::FlashDecode => include_str!("../shaders/flash_decode.wgsl"),
            Kernel::DecodeMerge => include_str!("../shaders/decode_merge.wgsl"),
            Kernel::FlashDecodeLanes => include_str!("../shaders/flash_decode_lanes.wgsl"),
            Kernel::FlashBackwardPre => include_str!("../shaders/flash_backward_pre.wgsl"),
            Kernel::FlashBackwardQ | Kernel::FlashBackwardQDirect => include_str!("../shaders/flash_backward_q.wgsl"),
            Kernel::FlashBackwardKv | Kernel::FlashBackwardKvDirect => {
                include_str!("../shaders/flash_backward_kv.wgsl")
            }
            Kernel::FlashBackwardBias | Kernel::FlashBackwardBiasDirect => {
                include_str!("../shaders/flash_backward_bias.wgsl")
            }
            Kernel::FlashBackwardDs => include_str!("../shaders/flash_backward_ds.wgsl"),
        }
    }

    fn pieces(self, variant: Variant) -> Vec<&'static str> {
        let alibi = if variant.alibi { common::ALIBI } else { common::NO_ALIBI };
        let io = if variant.vec4_io {
            common::LOAD_VEC4
        } else {
            common::LOAD_SCALAR
        };
        let loops = if variant.compact {
            common::LOOPS_COMPACT
        } else {
            common::LOOPS_UNROLLED
        };
        let centers = if variant.local {
            common::CENTERS
        } else {
            common::NO_CENTERS
        };
        // Every fused design: the uniform, masks and row block, then the Q/K/V/O loader.
        let fused = vec![
            common::PARAMS,
            common::GRID,
            common::PHILOX,
            centers,
            alibi,
            common::MASK,
            common::ROW_BLOCK,
            io,
        ];
        match self {
            Kernel::QkScores | Kernel::WeightedSum => vec![common::PARAMS, common::GRID, common::GEMM_TILE],
            Kernel::MaskedSoftmax => vec![
                common::PARAMS,
                common::GRID,
                common::PHILOX,
                common::CENTERS,
                alibi,
                common::MASK,
            ],
            Kernel::Gemm => vec![common::GRID, common::GEMM_IO, common::GEMM_TILE],
            Kernel::GemmRegister | Kernel::GemmCoopmat => vec![common::GRID, common::GEMM_IO],
            Kernel::HardAttention => vec![
                common::PARAMS,
                common::GRID,
                common::PHILOX,
                common::NO_CENTERS,
                alibi,
                common::MASK,
                common::LOAD_SCALAR,
            ],
            Kernel::AdditiveHidden => vec![common::PARAMS, common::GRID],
            Kernel::Pool | Kernel::KvWrite | Kernel::DecodeMerge => vec![common::GRID],
            Kernel::FlashDecode | Kernel::FlashDecodeLanes => {
                let rows = if variant.paged {
                    common::KV_PAGED
                } else {
                    common::KV_CONTIGUOUS
                };
                let mut pieces = vec![
                    common::PARAMS,
                    common::GRID,
                    common::PHILOX,
                    common::NO_CENTERS,
                    alibi,
                    common::MASK,
                    io,
                ];
                if self == Kernel::FlashDecode {
                    pieces.extend([common::LOOPS_UNROLLED, common::FETCH_PLAIN]);
                }
                pieces.extend([common::SCORE_DOT, rows, common::DECODE_PARTS]);
                pieces
            }
            Kernel::FlashForward => {
                let fetch = if variant.subgroup > 0 {
                    common::FETCH_SUBGROUP
                } else {
                    common::FETCH_PLAIN
                };
                let score = if variant.additive {
                    common::SCORE_ADDITIVE
                } else {
                    common::SCORE_DOT
                };
                let mut pieces = fused;
                pieces.extend([loops, fetch, score]);
                pieces
            }
            // The tiled designs read their tiles through the loader piece; coopmat's products
            // are cooperative matrices.
            Kernel::FlashTiled | Kernel::FlashCoopmat => fused,
            Kernel::FlashBackwardPre => vec![common::PARAMS, common::GRID, common::GRAD_IO],
            Kernel::FlashBackwardDs => vec![
                common::PARAMS,
                common::GRID,
                common::PHILOX,
                common::NO_CENTERS,
                alibi,
                common::MASK,
                common::GRAD_IO,
                common::GRAD_DO_RECORDS,
                common::GRAD_PROB,
            ],
            Kernel::FlashBackwardQ
            | Kernel::FlashBackwardKv
            | Kernel::FlashBackwardBias
            | Kernel::FlashBackwardQDirect
            | Kernel::FlashBackwardKvDirect
            | Kernel::FlashBackwardBiasDirect => {
                let d_out = match self {
                    Kernel::FlashBackwardQ | Kernel::FlashBackwardKv | Kernel::FlashBackwardBias => {
                        common::GRAD_DO_RECORDS
                    }
                    _ if variant.vec4_io => common::GRAD_DO_DIRECT_VEC4,
                    _ => common::GRAD_DO_DIRECT,
                };
                vec![
                    common::PARAMS,
                    common::GRID,
                    common::PHILOX,
                    common::NO_CENTERS,
                    alibi,
                    common::MASK,
                    io,
                    common::GRAD_IO,
                    d_out,
                    common::GRAD_PROB,
                    loops,
                ]
            }
            // Calibration kernels are self-contained.
            Kernel::PeakFma | Kernel::PeakBandwidth => vec![],
        }
    }

    /// The storage element types this kernel can be compiled for.
    pub fn dtypes(self) -> &'static [DType] {
        match self {
            // f16 A/B operands are staged from f16 storage.
            Kernel::FlashCoopmat | Kernel::GemmCoopmat => &[DType::F16],
            _ => &[DType::F32, DType::F16],
        }
    }
}

/// The full WGSL source of `kernel` for storage type `dtype` with its [`default_variant`].
pub fn compose(kernel: Kernel, dtype: DType) -> String {
    compose_variant(kernel, dtype, default_variant(kernel))
}

/// The variant [`compose`] builds for `kernel`.
pub fn default_variant(kernel: Kernel) -> Variant {
    match kernel {
        Kernel::FlashForward
        | Kernel::FlashDecode
        | Kernel::FlashBackwardQ
        | Kernel::FlashBackwardKv
        | Kernel::FlashBackwardQDirect
        | Kernel::FlashBackwardKvDirect => Variant {
            rows: 1,
            ..Variant::default()
        },
        Kernel::FlashDecodeLanes => Variant {
            rows: 1,
            subgroup: 8,
            ..Variant::default()
        },
        Kernel::FlashTiled => Variant {
            slots: 4,
            ..Variant::default()
        },
        Kernel::GemmRegister => Variant {
            rows: crate::kernels::gemm_register::DEFAULT_ROWS,
            ..Variant::default()
        },
        Kernel::FlashCoopmat => Variant {
            coop: 8,
            ..Variant::default()
        },
        Kernel::GemmCoopmat => Variant {
            coop: 8,
            rows: 2,
            ..Variant::default()
        },
        _ => Variant::default(),
    }
}

/// The full WGSL source: prelude (element type, row count), common pieces, then the kernel with
/// its `//@each_row` blocks expanded.
pub fn compose_variant(kernel: Kernel, dtype: DType, variant: Variant) -> String {
    let mut src = String::new();
    match dtype {
        DType::F16 => src.push_str("enable f16;\nalias elem = f16;\n"),
        _ => src.push_str("alias elem = f32;\n"),
    }
    if variant.coop > 0 {
        // Directives come before declarations; the matrix operands are f16 whatever the storage.
        let m = variant.coop;
        let enable = if dtype == DType::F16 { "" } else { "enable f16;\n" };
        src.insert_str(0, &format!("{enable}enable wgpu_cooperative_matrix;\n"));
        src.push_str(&format!(
            "const CM: u32 = {m}u;\nalias coop_a = coop_mat{m}x{m}<f16, A>;\nalias coop_b = coop_mat{m}x{m}<f16, B>;\nalias coop_c = coop_mat{m}x{m}<f32, C>;\n"
        ));
    }
    if variant.subgroup > 0 {
        src.push_str(&format!("const SUBGROUP: u32 = {}u;\n", variant.subgroup));
    }
    if variant.rows > 0 {
        src.push_str(&format!("const ROWS: u32 = {}u;\n", variant.rows));
    }
    if variant.slots > 0 {
        src.push_str(&format!("const SLOTS: u32 = {}u;\n", variant.slots));
    }
    for piece in kernel.pieces(variant) {
        src.push_str(piece);
        src.push('\n');
    }
    src.push_str(kernel.body());
    let src = expand(&src, "row", "{r}", variant.rows);
    expand(&src, "lane", "{l}", variant.subgroup)
}

/// Repeats every `//@each_NAME` … `//@end_NAME` block `count` times with `var` replaced by 0, 1, ….
fn expand(body: &str, name: &str, var: &str, count: u32) -> String {
    let (open, close) = (format!("//@each_{name}"), format!("//@end_{name}"));
    let mut out = String::with_capacity(body.len() * 2);
    let mut block: Option<Vec<&str>> = None;
    for line in body.lines() {
        match (line.trim(), &mut block) {
            (m, None) if m == open => block = Some(Vec::new()),
            (m, Some(lines)) if m == close => {
                for r in 0..count {
                    for l in lines.iter() {
                        out.push_str(&l.replace(var, &r.to_string()));
                        out.push('\n');
                    }
                }
                block = None;
            }
            (_, Some(lines)) => lines.push(line),
            (_, None) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// How a kernel's binding is used; turned into an explicit bind group layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The `Params` uniform.
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// Cache key: kernel, element type, override constants (name, value bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kernel: Kernel,
    dtype: DType,
    variant: Variant,
    constants: Vec<(&'static str, u64)>,
}

impl Key {
    fn new(kernel: Kernel, dtype: DType, variant: Variant, constants: &[(&'static str, f64)]) -> Self {
        let constants = constants.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        Self {
            kernel,
            dtype,
            variant,
            constants,
        }
    }
}

/// A compiled kernel with its bind group layout.
#[derive(Debug)]
pub struct CompiledKernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) slots: Vec<(u32, Slot)>,
    pub(crate) pipeline_label: &'static str,
}

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
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Key, Arc<CompiledKernel>>> {
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
    /// most [`QUICK_MACS`] multiply-adds runs quick code instead, compiled in seconds: the
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
    fn contains(&self, key: &Key) -> bool {
        self.lock().map.contains_key(key)
    }
}

/// Multiply-adds (Q·Kᵀ and P·V; the backward counts 2.5 times the forward's) up to which a first
/// call may run quick code (see [`PipelineCache::set_quick_first_calls`]): 2³³ ≈ 8.6·10⁹, a few
/// seconds of the backward's compact code on lavapipe; beyond it the fast code's compile is the
/// smaller cost.
pub const QUICK_MACS: f64 = 8589934592.0;

/// Refuses a (kernel, dtype, variant) the permutation table does not list: nothing is composed
/// that the shader tests did not check.
fn check_permutation(kernel: Kernel, dtype: DType, variant: Variant) -> Result<()> {
    match is_permutation(kernel, dtype, variant) {
        true => Ok(()),
        false => Err(Error::Unsupported(format!(
            "{} in {}: {variant:?} is not in the kernel permutation table (pipeline::permutations)",
            kernel.file(),
            dtype.name()
        ))),
    }
}

/// Whether a call of `macs` multiply-adds without an explicit tile runs the quick code of a
/// kernel whose fast code is (kernel, dtype, variant, constants): on CPU adapters, with the
/// context's policy on, while that code is neither compiled here nor in the persisted cache.
pub(crate) fn runs_quick(
    ctx: &Context,
    macs: f64,
    kernel: Kernel,
    dtype: DType,
    variant: Variant,
    constants: &[(&'static str, f64)],
) -> bool {
    let cpu = crate::kernels::is_cpu(ctx);
    if !cpu || !ctx.pipelines().quick_first_calls() || macs > QUICK_MACS {
        return false;
    }
    let key = Key::new(kernel, dtype, variant, constants);
    if ctx.pipelines().contains(&key) {
        return false;
    }
    let known = ctx
        .disk_cache()
        .is_some_and(|d| d.knows(persist::key(&compose_variant(kernel, dtype, variant), &key.constants)));
    !known
}

/// A map bounded to `capacity` entries that drops the least recently used one on overflow.
/// Lookups and inserts stamp entries with a counter; eviction scans for the oldest stamp, which is
/// cheap next to what a miss costs here (compiling a pipeline).
#[derive(Debug)]
struct Lru<K, V> {
    map: HashMap<K, (V, u64)>,
    clock: u64,
    capacity: usize,
    evicted: u64,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Lru<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            clock: 0,
            capacity: capacity.max(1),
            evicted: 0,
        }
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
    fn get(&mut self, key: &K) -> Option<V> {
        let now = self.tick();
        self.map.get_mut(key).map(|(v, used)| {
            *used = now;
            v.clone()
        })
    }
    fn insert(&mut self, key: K, value: V) {
        let now = self.tick();
        self.map.insert(key, (value, now));
        self.shrink();
    }
    fn set_capacity(&mut self, capacity: usize) {
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

/// Returns the cached pipeline of `kernel` for (dtype, constants), creating it on first use
/// inside an error scope.
pub(crate) fn get(
    ctx: &Context,
    kernel: Kernel,
    dtype: DType,
    variant: Variant,
    slots: &[(u32, Slot)],
    constants: &[(&'static str, f64)],
) -> Result<Arc<CompiledKernel>> {
    let key = Key::new(kernel, dtype, variant, constants);
    if let Some(hit) = ctx.pipelines().lock().get(&key) {
        return Ok(hit);
    }
    check_permutation(kernel, dtype, variant)?;
    if dtype == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 storage",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    let storage = slots.iter().filter(|(_, s)| *s != Slot::Uniform).count() as u32;
    let max_storage = ctx.limits().max_storage_buffers_per_shader_stage;
    if storage > max_storage {
        return Err(Error::Limit {
            what: format!("{} storage bindings", kernel.file()),
            limit: "max_storage_buffers_per_shader_stage",
            needed: storage as u64,
            max: max_storage as u64,
        });
    }
    let source = compose_variant(kernel, dtype, variant);
    let disk = ctx.disk_cache();
    let disk_key = persist::key(&source, &key.constants);
    if !disk.is_some_and(|d| d.knows(disk_key)) {
        persist::notify_compile(&format!("{} {}", kernel.file(), dtype.name()));
    }
    let own_spirv = own_spirv(ctx, kernel, &source, slots, constants);
    let compiled = ctx.scoped("pipeline creation", || {
        let device = ctx.device();
        let module = match &own_spirv {
            #[cfg(not(target_arch = "wasm32"))]
            Some((words, workgroup)) => spirv::create_module(device, kernel.file(), words, *workgroup),
            _ => device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.file()),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            }),
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .map(|&(binding, slot)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match slot {
                        Slot::Uniform => wgpu::BufferBindingType::Uniform,
                        Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    // Storage element types differ per variant (scalar or vec4) and uniforms per
                    // kernel; wgpu checks bound sizes against the shader at dispatch.
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(kernel.file()),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.file()),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.file()),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                // The crate's own SPIR-V has the constants applied already.
                constants: if own_spirv.is_some() { &[] } else { constants },
                // Every workgroup array is written before it is read.
                zero_initialize_workgroup_memory: false,
            },
            cache: disk.map(DiskCache::cache),
        });
        if let Some(d) = disk {
            d.save(disk_key);
        }
        Ok(Arc::new(CompiledKernel {
            pipeline,
            layout,
            slots: slots.to_vec(),
            pipeline_label: kernel.file(),
        }))
    })?;
    ctx.pipelines().lock().insert(key, compiled.clone());
    Ok(compiled)
}

/// The bindings of a composed kernel as naga reflects them from its WGSL: each global of bind
/// group 0 with its [`Slot`] (uniform, read-only or read-write storage), sorted by binding. The
/// host modules' binding tables must agree with it (tests/shaders.rs checks every kernel).
#[cfg(not(target_arch = "wasm32"))]
pub fn reflect_slots(wgsl: &str) -> std::result::Result<Vec<(u32, Slot)>, String> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
    let mut slots = Vec::new();
    for (_, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else { continue };
        if binding.group != 0 {
            return Err(format!(
                "binding group {} (the kernels use group 0 only)",
                binding.group
            ));
        }
        let slot = match var.space {
            naga::AddressSpace::Uniform => Slot::Uniform,
            naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => Slot::ReadWrite,
            naga::AddressSpace::Storage { .. } => Slot::Read,
            other => return Err(format!("binding {} in {other:?} memory", binding.binding)),
        };
        slots.push((binding.binding, slot));
    }
    slots.sort_unstable_by_key(|&(binding, _)| binding);
    Ok(slots)
}

/// Creates the shader module of any kernel variant as a pipeline of it would (the crate's own
/// SPIR-V where the device takes it, else wgpu's path), without compiling a pipeline: a
/// driver or validation layer checks the module when it is created, so every permutation can be
/// checked on a device in seconds. Returns whether the crate's own SPIR-V was used.
#[cfg(not(target_arch = "wasm32"))]
pub fn create_module(ctx: &Context, kernel: Kernel, dtype: DType, variant: Variant) -> Result<bool> {
    check_permutation(kernel, dtype, variant)?;
    let source = compose_variant(kernel, dtype, variant);
    let slots = reflect_slots(&source).map_err(Error::Unsupported)?;
    let own = own_spirv(ctx, kernel, &source, &slots, &[]);
    ctx.scoped("shader module creation", || {
        let _module = match &own {
            Some((words, workgroup)) => spirv::create_module(ctx.device(), kernel.file(), words, *workgroup),
            None => ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.file()),
                source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
            }),
        };
        Ok(own.is_some())
    })
}

/// Why a kernel variant cannot run on `backend` through naga (so the runtime refuses it there
/// instead of failing inside wgpu or the driver), or `None`. tests/shaders.rs writes every other
/// composed kernel through naga's SPIR-V, MSL and HLSL writers.
pub fn backend_unsupported(variant: Variant, backend: wgpu::Backend) -> Option<&'static str> {
    match (backend, variant.coop) {
        (_, 0) => None,
        (wgpu::Backend::Dx12, _) => Some("naga's HLSL writer has no cooperative matrices"),
        (wgpu::Backend::Metal, m) if m != 8 => {
            Some("Metal's simdgroup matrices are 8×8 only (naga would write a simdgroup type Metal lacks)")
        }
        (wgpu::Backend::Gl, _) => Some("naga's GLSL writer has no cooperative matrices"),
        _ => None,
    }
}

/// Environment variable choosing who writes the Vulkan SPIR-V of the kernels: `wgpu` forces
/// wgpu's own writer (with the layout decorations Vulkan forbids outside buffer memory), for
/// comparisons; anything else, or unset, lets the crate write it where the device allows.
pub const SPIRV_ENV: &str = "WGPU_ATTENTION_SPIRV";

/// The SPIR-V of `source` written by the crate ([`spirv`]: no layout decorations outside buffer
/// memory) where the device takes it: Vulkan with `PASSTHROUGH_SHADERS`, kernels without
/// cooperative matrices. `None` sends the kernel down wgpu's own WGSL path.
#[cfg(not(target_arch = "wasm32"))]
fn own_spirv(
    ctx: &Context,
    kernel: Kernel,
    source: &str,
    slots: &[(u32, Slot)],
    constants: &[(&'static str, f64)],
) -> Option<(Vec<u32>, [u32; 3])> {
    if !ctx.features().contains(wgpu::Features::PASSTHROUGH_SHADERS)
        || matches!(kernel, Kernel::FlashCoopmat | Kernel::GemmCoopmat)
        || std::env::var(SPIRV_ENV).is_ok_and(|v| v == "wgpu")
    {
        return None;
    }
    let facts = spirv::VulkanFacts::of(ctx.device())?;
    let bindings: Vec<u32> = slots.iter().map(|&(binding, _)| binding).collect();
    // A module the writer refuses takes wgpu's path, which reports any error of the WGSL itself.
    spirv::write(source, constants, &bindings, ctx.features(), facts).ok()
}

#[cfg(target_arch = "wasm32")]
fn own_spirv(
    _: &Context,
    _: Kernel,
    _: &str,
    _: &[(u32, Slot)],
    _: &[(&'static str, f64)],
) -> Option<(Vec<u32>, [u32; 3])> {
    None
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
