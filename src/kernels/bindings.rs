//! The binding table of every kernel permutation, from the host modules' tables: what
//! the pipeline layer (`pipeline::get`) builds a kernel's bind group layout from, and what tests/shaders.rs
//! checks against naga's reflection of every permutation's WGSL.

use super::{
    additive_hidden, flash_backward, flash_decode, flash_forward, gemm, hard_attention, kv_write, masked_softmax, pool,
    qk_scores, side_gather, weighted_sum,
};
use crate::pipeline::{BindingKind, Kernel, Switches};

/// `shaders/peak_fma.wgsl`: the sink its chains are stored into.
const PEAK_FMA: &[(u32, BindingKind)] = &[(0, BindingKind::ReadWrite)];
/// `shaders/peak_bandwidth.wgsl`: source and destination of the copy.
const PEAK_BANDWIDTH: &[(u32, BindingKind)] = &[(0, BindingKind::Read), (1, BindingKind::ReadWrite)];

/// Most storage buffers a kernel binds: what WebGPU guarantees every device
/// (`maxStorageBuffersPerShaderStage`).
pub const STORAGE_BUDGET: u32 = 8;

/// (binding, kind) of every binding of `kernel` composed with `switches`, in binding order: the
/// order in which its dispatch passes buffers.
pub fn bindings(kernel: Kernel, switches: Switches) -> Vec<(u32, BindingKind)> {
    match kernel {
        Kernel::QkScores => qk_scores::BINDINGS.to_vec(),
        Kernel::WeightedSum => weighted_sum::BINDINGS.to_vec(),
        Kernel::MaskedSoftmax => masked_softmax::bindings(switches),
        // The three fused designs share their bindings and uniform.
        Kernel::FlashForward | Kernel::FlashTiled | Kernel::FlashCoopmat => flash_forward::bindings(switches),
        Kernel::PeakFma => PEAK_FMA.to_vec(),
        Kernel::PeakBandwidth => PEAK_BANDWIDTH.to_vec(),
        // The GEMM designs share their bindings and uniform.
        Kernel::Gemm | Kernel::GemmRegister | Kernel::GemmCoopmat => gemm::BINDINGS.to_vec(),
        Kernel::HardAttention => hard_attention::BINDINGS.to_vec(),
        Kernel::AdditiveHidden => additive_hidden::BINDINGS.to_vec(),
        Kernel::Pool => pool::BINDINGS.to_vec(),
        Kernel::KvWrite => kv_write::BINDINGS.to_vec(),
        Kernel::FlashDecode | Kernel::FlashDecodeLanes => flash_decode::decode_bindings(switches),
        Kernel::DecodeMerge => flash_decode::MERGE_BINDINGS.to_vec(),
        Kernel::FlashBackwardPre => flash_backward::PRE_BINDINGS.to_vec(),
        Kernel::FlashBackwardQ
        | Kernel::FlashBackwardKv
        | Kernel::FlashBackwardBias
        | Kernel::FlashBackwardQDirect
        | Kernel::FlashBackwardKvDirect
        | Kernel::FlashBackwardBiasDirect => flash_backward::grad_bindings(kernel.direct(), switches),
        Kernel::FlashBackwardDs => flash_backward::ds_bindings(switches),
        Kernel::SideGather => side_gather::BINDINGS.to_vec(),
    }
}

/// How many storage buffers a binding table uses.
pub fn storage_count(bindings: &[(u32, BindingKind)]) -> u32 {
    bindings.iter().filter(|(_, k)| *k != BindingKind::Uniform).count() as u32
}
