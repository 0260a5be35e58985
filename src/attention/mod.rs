//! Scaled dot-product attention (docs/ATTENTION.md §1), as a pipeline of host steps:
//!
//! 1. [`validate`] (`validate.rs`): shapes, dtypes, masks, options and device limits, on the host,
//!    before any GPU work;
//! 2. planning (`plan.rs`): the kernel path, the outputs, and the problems with an empty axis
//!    (`empty.rs`), then the recording of one of
//!    - `fused.rs`: the single-pass kernel over chunks of (b, h) pairs that fit a storage binding,
//!    - `staged.rs`: QKᵀ → masked softmax → P·V over chunks of the score matrix, with the naive
//!      additive scores of `naive_additive.rs`;
//! 3. recording ([`Attention::encode`]) into any command encoder, as often as wanted.
//!
//! `varlen.rs` plans packed variable-length sequences ([`attention_varlen`]) on the fused kernel
//! with its own validation (packed shapes, sequence offsets).
//!
//! `params.rs` fills the uniform every attention kernel reads from the options.

mod decode;
pub(crate) mod design;
mod empty;
mod fused;
mod naive_additive;
mod params;
mod plan;
mod side;
mod staged;
mod validate;
mod varlen;
pub(crate) mod warm;

pub use design::available_designs;
pub(crate) use params::base_params;
pub(crate) use plan::{Extras, LocalWindows};
pub(crate) use validate::require_nonempty;
pub use validate::validate;
pub use varlen::{attention_varlen, attention_varlen_encode, validate_varlen, Varlen};

use crate::context::Context;
use crate::error::Result;
use crate::kernels::{self, CoopmatConfig, DecodeConfig, FlashConfig, GemmTile, Step, TiledConfig};
use crate::options::{AttentionOptions, Design, KernelChoice};
use crate::tensor::Tensor;

/// The sizes of one attention problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Problem {
    /// Batch size B.
    pub b: usize,
    /// Query heads Hq.
    pub hq: usize,
    /// Key/value heads Hkv (Hq is a multiple of it).
    pub hkv: usize,
    /// Query length Lq.
    pub lq: usize,
    /// Key length Lk.
    pub lk: usize,
    /// Query/key head dim Dk.
    pub dk: usize,
    /// Value head dim Dv.
    pub dv: usize,
}

impl Problem {
    /// Forward FLOPs by the FlashAttention convention: 2·B·Hq·Lq·Lk·(Dk + Dv) (= 4·B·H·Lq·Lk·D
    /// when Dk = Dv), halved for causal.
    pub fn flops(&self, causal: bool) -> f64 {
        let f = 2.0 * (self.b * self.hq) as f64 * self.lq as f64 * self.lk as f64 * (self.dk + self.dv) as f64;
        if causal {
            f / 2.0
        } else {
            f
        }
    }

    /// Shapes of Q, K, V in the default [B, H, L, D] layout.
    pub fn qkv_shapes(&self) -> [[usize; 4]; 3] {
        [
            [self.b, self.hq, self.lq, self.dk],
            [self.b, self.hkv, self.lk, self.dk],
            [self.b, self.hkv, self.lk, self.dv],
        ]
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "B={} Hq={} Hkv={} Lq={} Lk={} Dk={} Dv={}",
            self.b, self.hq, self.hkv, self.lq, self.lk, self.dk, self.dv
        )
    }
}

/// Results of an attention call. Tensors stay on the GPU; download with [`Tensor::to_vec`].
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// O [B, Hq, Lq, Dv], dtype of Q.
    pub out: Tensor,
    /// LSE [B, Hq, Lq] (f32), when requested.
    pub lse: Option<Tensor>,
    /// Attention weights P [B, Hq, Lq, Lk] (f32), when requested (staged path).
    pub weights: Option<Tensor>,
    /// The kernel path that ran.
    pub kernel: KernelChoice,
    /// The fused kernel's design that ran (fused path only).
    pub design: Option<Design>,
    /// Why the requested (or preferred) design could not serve the call, when `design` is a
    /// fallback.
    pub design_note: Option<String>,
}

/// Kernel tile settings; `None` fields use the built-in defaults (or the tuning cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// Tile of the fused kernel's register design (set alone, it selects that design).
    pub flash: Option<FlashConfig>,
    /// Tile of the fused kernel's tiled design (set alone, it selects that design).
    pub tiled: Option<TiledConfig>,
    /// Tile of the fused kernel's cooperative-matrix design (set alone, it selects that design).
    pub coopmat: Option<CoopmatConfig>,
    /// GEMM tile of the staged QKᵀ and P·V kernels.
    pub gemm: Option<GemmTile>,
    /// Invocations per row of the staged softmax.
    pub softmax_workgroup: Option<u32>,
    /// Decode-kernel tile and split count.
    pub decode: Option<DecodeConfig>,
}

/// A validated, fully prepared attention call that can be recorded any number of times.
#[derive(Debug)]
pub struct Attention {
    ctx: Context,
    problem: Problem,
    steps: Vec<Step>,
    output: AttentionOutput,
    causal: bool,
    /// Bytes the call allocates on the device (outputs, scratch, uniforms).
    allocated: u64,
    /// Key splits of the decode path (per dispatch).
    splits: Option<u32>,
}

/// Runs attention and returns O (and LSE / P on request). One submission; returns without
/// waiting for the GPU (downloading a result waits).
///
/// Edge cases:
/// - **B = 0 or Lq = 0**: an empty output (O, LSE and P with their logical shapes, zero
///   elements); nothing is dispatched.
/// - **Lk = 0**: every key is masked, as for a fully masked row: O = 0, LSE = −∞, P has shape
///   [B, Hq, Lq, 0]. Masks and bias are then given with their matching 0-length last axis.
/// - Heads and head dims (Hq, Hkv, Dk, Dv) must be at least 1 ([`crate::Error::ZeroDim`]).
/// - An allocation beyond the device's limits returns [`crate::Error::Limit`] (or
///   [`crate::Error::Wgpu`] when the device runs out of memory), and a lost or destroyed device
///   returns [`crate::Error::DeviceLost`]; neither panics nor hangs.
///
/// ```
/// # fn main() -> Result<(), wgpu_attention::Error> {
/// use wgpu_attention::{attention, AttentionOptions, Context, Tensor};
/// let ctx = Context::new()?;
/// let (b, h, l, d) = (1, 2, 16, 8);
/// let x: Vec<f32> = (0..b * h * l * d).map(|i| (i as f32 * 0.01).sin()).collect();
/// let q = Tensor::from_slice(&ctx, &x, &[b, h, l, d])?;
/// let out = attention(&ctx, &q, &q, &q, &AttentionOptions::default())?;
/// let o: Vec<f32> = out.out.to_vec(&ctx)?;
/// # let _ = o; Ok(()) }
/// ```
pub fn attention(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let call = Attention::new(ctx, q, k, v, opts)?;
    call.submit()?;
    Ok(call.into_output())
}

/// Records attention into the caller's encoder; the caller submits it. Outputs are allocated here
/// and valid once the caller's submission has run.
pub fn attention_encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let call = Attention::new(ctx, q, k, v, opts)?;
    call.encode(encoder);
    Ok(call.into_output())
}

impl Attention {
    /// Records the call into `encoder`.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        kernels::encode_steps(encoder, &self.steps, None);
    }

    /// Records the call with timestamps: `first` at the start of its first compute pass and
    /// `first + 1` at the end of its last (the query set needs `TIMESTAMP_QUERY`).
    pub fn encode_timed(&self, encoder: &mut wgpu::CommandEncoder, queries: &wgpu::QuerySet, first: u32) {
        kernels::encode_steps(encoder, &self.steps, Some((queries, first)));
    }

    /// Records and submits the call in one submission, capturing wgpu errors.
    pub fn submit(&self) -> Result<()> {
        self.ctx.scoped("attention submit", || {
            let mut enc = self.ctx.device().create_command_encoder(&Default::default());
            self.encode(&mut enc);
            self.ctx.queue().submit([enc.finish()]);
            Ok(())
        })
    }

    /// The problem sizes.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
    /// Whether a causal mask is applied (for FLOP counting).
    pub fn is_causal(&self) -> bool {
        self.causal
    }
    /// The outputs (valid after a submission has run).
    pub fn output(&self) -> &AttentionOutput {
        &self.output
    }
    /// Consumes the call, keeping its outputs.
    pub fn into_output(self) -> AttentionOutput {
        self.output
    }
    /// Bytes of device memory this call allocated (outputs, scratch, uniforms), not counting inputs.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated
    }
    /// Splits of every sequence's keys on the decode path (`None` on the other paths).
    pub fn decode_splits(&self) -> Option<u32> {
        self.splits
    }
    /// Number of compute dispatches per run.
    pub fn dispatch_count(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Dispatch { .. })).count()
    }

    /// The call as a one-phase [`crate::Prepared`] named `phase`.
    pub fn into_prepared(self, phase: &'static str) -> crate::Prepared<AttentionOutput> {
        let flops = self.problem.flops(self.causal);
        let mut prepared = crate::Prepared::new(&self.ctx, self.output);
        prepared.push(phase, self.steps, self.allocated, flops);
        prepared
    }
}
