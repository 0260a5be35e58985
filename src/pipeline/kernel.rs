//! The kernels of the crate: each one entry file in `shaders/`, its storage types and the switch
//! values it is composed with by default.

use super::Switches;
use crate::tensor::DType;

/// Every kernel of the crate, named by its entry file in `shaders/` (which names its pieces).
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
    /// barriers (the CPU-adapter design); [`Switches::rows`] rows per invocation.
    GemmRegister,
    /// `shaders/gemm_coopmat.wgsl`: the same GEMM on cooperative matrices (f16 storage, f32
    /// accumulation): [`Switches::coop`] is the matrix size, [`Switches::rows`] the fragments per
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
    /// `shaders/flash_backward_q.wgsl` reading dO from its tensor (binding 11).
    FlashBackwardQDirect,
    /// `shaders/flash_backward_kv.wgsl` reading dO from its tensor.
    FlashBackwardKvDirect,
    /// `shaders/flash_backward_bias.wgsl` reading dO from its tensor.
    FlashBackwardBiasDirect,
    /// `shaders/side_gather.wgsl`: a call's small read-only arrays gathered into one side buffer.
    SideGather,
}

impl Kernel {
    /// All kernels, for tests and pre-compilation.
    pub const ALL: [Kernel; 27] = [
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
        Kernel::SideGather,
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
            Kernel::SideGather => "side_gather.wgsl",
        }
    }

    /// The kernel of entry file `stem` (`flash_forward` or `flash_forward.wgsl`), the backward's
    /// dO-reading kernels with `direct`.
    pub fn named(stem: &str, direct: bool) -> Option<Kernel> {
        let file = format!("{}.wgsl", stem.trim_end_matches(".wgsl"));
        Kernel::ALL
            .into_iter()
            .find(|k| k.file() == file && k.direct() == direct)
    }

    /// Whether the kernel reads dO from the caller's tensor (the `direct` switch of the
    /// backward's entry files) rather than from the pre-pass's row records.
    pub fn direct(self) -> bool {
        matches!(
            self,
            Kernel::FlashBackwardQDirect | Kernel::FlashBackwardKvDirect | Kernel::FlashBackwardBiasDirect
        )
    }

    /// The storage element types this kernel can be compiled for.
    pub fn dtypes(self) -> &'static [DType] {
        match self {
            // f16 A/B operands are staged from f16 storage.
            Kernel::FlashCoopmat | Kernel::GemmCoopmat => &[DType::F16],
            // Copies 32-bit words whatever the arrays hold.
            Kernel::SideGather => &[DType::F32],
            _ => &[DType::F32, DType::F16],
        }
    }
}

/// The switches [`fn@super::compose`] builds `kernel` with.
pub fn default_switches(kernel: Kernel) -> Switches {
    match kernel {
        Kernel::FlashForward
        | Kernel::FlashDecode
        | Kernel::FlashBackwardQ
        | Kernel::FlashBackwardKv
        | Kernel::FlashBackwardQDirect
        | Kernel::FlashBackwardKvDirect => Switches {
            rows: 1,
            ..Switches::default()
        },
        Kernel::FlashDecodeLanes => Switches {
            rows: 1,
            subgroup: 8,
            ..Switches::default()
        },
        Kernel::FlashTiled => Switches {
            slots: 4,
            ..Switches::default()
        },
        Kernel::GemmRegister => Switches {
            rows: crate::kernels::gemm_register::DEFAULT_ROWS,
            ..Switches::default()
        },
        Kernel::FlashCoopmat => Switches {
            coop: 8,
            ..Switches::default()
        },
        Kernel::GemmCoopmat => Switches {
            coop: 8,
            rows: 2,
            ..Switches::default()
        },
        _ => Switches::default(),
    }
}
