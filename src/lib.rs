//! # wgpu-attention
//!
//! GPU attention kernels written in WGSL and run through \[wgpu\] on any Vulkan, Metal or DX12
//! device (and on Mesa's lavapipe CPU driver), with a naive f64 CPU reference for every kernel.
//!
//! Two paths compute scaled dot-product attention (`docs/ATTENTION.md` §1):
//! - **fused**: one pass with online softmax, O(B·H·Lq) extra memory, masked key blocks skipped,
//!   f32 or f16 storage, in one of several [`Design`]s chosen per adapter
//!   ([`AttentionOptions::design`]): rows in registers (`shaders/flash_forward.wgsl`, CPU drivers),
//!   workgroup tiles (`shaders/flash_tiled.wgsl`, GPUs), cooperative matrices
//!   (`shaders/flash_coopmat.wgsl`, tensor cores, f16);
//! - **staged** (`qk_scores` → `masked_softmax` → `weighted_sum`): materializes the scores and can
//!   return the attention weights P.
//!
//! For training, [`attention_backward`] (prepared form [`AttentionBackward`]) computes dQ, dK, dV
//! and dBias from the forward's output and LSE (`docs/ATTENTION.md` §10): FlashAttention-2
//! recomputation in fused kernels, deterministic (no atomics), with every mask, the soft cap,
//! dropout (the forward's mask replayed), GQA and f16 storage; [`reference::sdpa_backward`] is
//! its f64 CPU twin.
//!
//! The attention family of `docs/ATTENTION.md` §2–§8 (score functions incl. a fused additive kernel,
//! location-based, local-m/p, hard, NeurJudge, pooling, multi-head) lives in [`family`], built on
//! the same kernels plus a batched [`gemm`]; dropout on P is [`AttentionOptions::dropout`].
//!
//! Ragged batches run packed, without padding: [`attention_varlen`] takes Q [total_q, Hq, Dk],
//! K/V [total_k, Hkv, ·] and GPU-resident sequence offsets ([`Varlen`], FlashAttention's
//! `cu_seqlens`), with causal masks and windows aligned per sequence (`docs/ATTENTION.md` §1c).
//!
//! For token-by-token generation, [`KvCache`] keeps K/V per sequence with GPU-held lengths: an
//! in-kernel append (optionally rotating the keys with a [`Rope`]), [`KvCache::rope_q`] for the
//! queries, and [`KvCache::attend`], attention with per-sequence bottom-right alignment
//! (`docs/ATTENTION.md` §9; `examples/decode.rs` is a full loop).
//!
//! ## Conventions
//! - Layout: Q [B, Hq, Lq, Dk], K [B, Hkv, Lk, Dk], V [B, Hkv, Lk, Dv], O [B, Hq, Lq, Dv], row-major
//!   by default; any strides with a contiguous last dim are accepted ([`Tensor::from_blhd`] views a
//!   [B, L, H, D] buffer). Hq must be a multiple of Hkv (GQA/MQA; K and V are never copied).
//! - Boolean masks: **true = the key takes part** (PyTorch polarity). Additive bias: −∞ masks.
//! - Causal alignment is explicit: [`Alignment::TopLeft`] keeps j ≤ i (PyTorch `is_causal`),
//!   [`Alignment::BottomRight`] keeps j ≤ i + Lk − Lq (FlashAttention, KV-cache decoding), or
//!   j ≤ i + min(len_b, Lk) − Lq per sequence with [`AttentionOptions::align_to_key_lengths`].
//! - A row whose keys are all masked yields O = 0 and LSE = −∞, never NaN.
//! - Numbers at the edges follow one policy on every kernel (docs/ATTENTION.md): a NaN a row
//!   sees makes that row NaN and nothing else; a finite bias (even `f32::MIN`) is a number, only
//!   −∞ masks; a +∞ score (f32 overflow) makes its row NaN, as PyTorch's softmax; a soft cap maps
//!   ±∞ to ±c; keys of weight 0 never reach O; key lengths are unsigned (≥ Lk means Lk).
//! - Empty axes: B = 0 or Lq = 0 gives empty outputs; Lk = 0 masks every key (O = 0, LSE = −∞).
//! - A lost or destroyed device gives [`Error::DeviceLost`]; limits give [`Error::Limit`].
//! - Dropout is counter-based (Philox-4x32-10 keyed by (seed, b, h, i, j)): the same seed gives the
//!   same mask on both paths and in [`mod@reference`]; it weights P in the sum, not the LSE.
//! - Every input is validated on the host before any GPU work; wgpu errors are captured with
//!   error scopes and returned as [`Error`]. Nothing global is installed on a borrowed device.
//!
//! ## Example: owned context
//! ```
//! use wgpu_attention::{attention, Alignment, AttentionOptions, Context, Tensor};
//! # fn main() -> Result<(), wgpu_attention::Error> {
//! let ctx = Context::new()?; // honours WGPU_BACKEND / WGPU_ADAPTER_NAME / WGPU_POWER_PREF
//! let (b, h, l, d) = (1, 4, 64, 32);
//! let data: Vec<f32> = (0..b * h * l * d).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
//! let q = Tensor::from_slice(&ctx, &data, &[b, h, l, d])?;
//! let opts = AttentionOptions { causal: Some(Alignment::TopLeft), return_lse: true, ..Default::default() };
//! let res = attention(&ctx, &q, &q, &q, &opts)?;
//! let o: Vec<f32> = res.out.to_vec(&ctx)?;
//! assert_eq!(o.len(), b * h * l * d);
//! // Causal top-left: query 0 sees only key 0, so its output is V[0].
//! assert!((o[0] - data[0]).abs() < 1e-6);
//! # Ok(()) }
//! ```
//!
//! ## Example: your own device, buffers and encoder
//! ```
//! use wgpu_attention::{attention_encode, wgpu, AttentionOptions, Context, DType, Tensor};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Your program's device (here created on the first Vulkan/Metal/DX12 adapter).
//! let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
//!     backends: wgpu::Backends::PRIMARY,
//!     ..wgpu::InstanceDescriptor::new_without_display_handle()
//! });
//! let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
//! let (device, queue) = pollster::block_on(adapter.request_device(&Default::default()))?;
//!
//! let ctx = Context::from_device(&device, &queue); // borrows; installs nothing on the device
//! let (b, h, l, d) = (2, 4, 16, 8);
//! let n = b * h * l * d;
//! // Q, K and V packed one after another in one of your buffers (STORAGE usage).
//! let qkv = device.create_buffer(&wgpu::BufferDescriptor {
//!     label: Some("qkv"),
//!     size: (3 * n * 4) as u64,
//!     usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
//!     mapped_at_creation: false,
//! });
//! let host: Vec<f32> = (0..3 * n).map(|i| (i % 13) as f32 * 0.1).collect();
//! queue.write_buffer(&qkv, 0, bytemuck::cast_slice(&host));
//! let bytes = (n * 4) as u64;
//! let q = Tensor::from_buffer(&qkv, 0, &[b, h, l, d], DType::F32)?;
//! let k = Tensor::from_buffer(&qkv, bytes, &[b, h, l, d], DType::F32)?;
//! let v = Tensor::from_buffer(&qkv, 2 * bytes, &[b, h, l, d], DType::F32)?;
//!
//! let mut encoder = device.create_command_encoder(&Default::default());
//! let res = attention_encode(&ctx, &mut encoder, &q, &k, &v, &AttentionOptions::default())?;
//! queue.submit([encoder.finish()]);
//! let o: Vec<f32> = res.out.to_vec(&ctx)?; // O stays on the GPU until you read it
//! assert_eq!(o.len(), n);
//! # Ok(()) }
//! ```

pub mod attention;
pub mod backward;
// Files, the command line and the benchmark harness need a file system, threads and blocking
// calls: on wasm32 their features enable nothing and the build is the library alone.
#[cfg(all(feature = "cli", not(target_arch = "wasm32")))]
pub mod bench;
#[cfg(feature = "serde")]
pub mod bench_record;
mod chunks;
pub mod context;
pub mod error;
pub mod family;
#[cfg(all(feature = "files", not(target_arch = "wasm32")))]
pub mod files;
pub mod gemm;
pub mod kernels;
pub mod options;
pub mod pipeline;
mod prepared;
pub mod reference;
pub mod serving;
pub mod tensor;
pub mod timer;
pub mod tune;

pub use attention::{
    attention, attention_encode, attention_varlen, attention_varlen_encode, available_designs, validate, Attention,
    AttentionOutput, Problem, Tuning, Varlen,
};
pub use backward::{attention_backward, AttentionBackward, BackwardOptions, Gradients};
pub use context::{Context, ContextOptions, DeviceInfo};
pub use error::{Error, Result};
pub use gemm::{Activation, GemmDesign, GemmOptions};
pub use kernels::{BackwardConfig, CoopmatConfig, DecodeConfig, FlashConfig, GemmTile, TiledConfig};
pub use options::{alibi_slopes, AlibiSlopes, Alignment, AttentionOptions, Design, Dropout, KernelChoice, Window};
pub use prepared::Prepared;
pub use serving::rope::{rope, rope_encode, Rope, RopeStyle};
pub use serving::{
    merge_attention_states, AppendOptions, KvCache, PagedLayout, PreparedAppend, PreparedRope, UNMAPPED_PAGE,
};
pub use tensor::{DType, Element, Tensor};
pub use wgpu;

/// Moved to [`serving`] ([`serving::kv_cache`] and [`serving::paged`]); this alias goes in the next
/// release.
#[doc(hidden)]
pub mod cache {
    pub use crate::serving::kv_cache::{AppendOptions, KvCache, PreparedAppend, PreparedRope};
    pub use crate::serving::paged::{PagedLayout, UNMAPPED_PAGE};
}

/// Moved to [`serving::merge`]; this alias goes in the next release.
#[doc(hidden)]
pub mod merge {
    pub use crate::serving::merge::*;
}

/// Moved to [`mod@serving::rope`]; this alias goes in the next release.
#[doc(hidden)]
pub mod rope {
    pub use crate::serving::rope::*;
}

// The handles downstream crates share across threads: one `Context` (and its pipeline cache)
// serves concurrent calls; tensors, prepared calls and their outputs move and share freely.
// (In the browser wgpu's handles are JavaScript objects, bound to their thread.)
#[cfg(not(target_arch = "wasm32"))]
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Context>();
    assert_send_sync::<pipeline::PipelineCache>();
    assert_send_sync::<Tensor>();
    assert_send_sync::<Attention>();
    assert_send_sync::<AttentionBackward>();
    assert_send_sync::<Gradients>();
    assert_send_sync::<AttentionOutput>();
    assert_send_sync::<Prepared<AttentionOutput>>();
    assert_send_sync::<Error>();
    assert_send_sync::<KvCache>();
    assert_send_sync::<Rope>();
};
