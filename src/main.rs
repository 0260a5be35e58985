//! `wgpu-attention`: device info, calibration ceilings, benchmarks, attention on tensor files and
//! tile tuning. The work lives in `wgpu_attention::bench`; this file only parses arguments.

#[cfg(target_arch = "wasm32")]
compile_error!("the wgpu-attention command line is native-only; in a browser use the library (or web/)");

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use wgpu_attention::bench::variant::{self, Flag, VariantParams};
use wgpu_attention::bench::{self, peak, plot, render, tuner, BenchOptions, KernelKind, Variant};
use wgpu_attention::bench_record::{CheckOptions, Verdict};
use wgpu_attention::files;
use wgpu_attention::reference::Comparison;
use wgpu_attention::{
    AlibiSlopes, Alignment, AttentionOptions, Context, DType, Design, Dropout, KernelChoice, Problem, Window,
};

mod cli_backward;
use cli_backward::{backward_cmd, check_backward_flags};

#[derive(Parser)]
#[command(
    name = "wgpu-attention",
    version,
    about = "Portable GPU attention kernels (WGSL on wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Adapter, backend, driver, granted features and key limits.
    Info,
    /// Measure the adapter's FMA throughput and memory bandwidth.
    Peak {
        /// Measured samples per ceiling.
        #[arg(long, default_value_t = 5)]
        iters: u32,
        /// Write the results as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Benchmark attention kernels (any variant of the family) over shapes and check them against
    /// the CPU reference.
    Bench(Box<BenchArgs>),
    /// Run attention (any variant of the family) on tensors from .npy or .safetensors files.
    Run(Box<RunArgs>),
    /// Tune the fused kernel's tiles and the decode kernel's designs and splits for this adapter
    /// and store them in the tuning cache.
    Tune(TuneArgs),
    /// Compile the pipelines of call shapes ahead of their first use (later processes start warm
    /// where the device has PIPELINE_CACHE or the driver caches compiled shaders on disk).
    WarmUp(WarmUpArgs),
}

#[derive(Args)]
struct WarmUpArgs {
    /// Problem shape B,Hq,Hkv,Lq,Lk,Dk,Dv (or B,H,L,D, or B,Hq,Hkv,L,D); repeatable.
    #[arg(long = "shape", value_name = "SHAPE", value_parser = bench::parse_shape, required = true)]
    shapes: Vec<Problem>,
    /// Storage dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Causal variants; repeatable (default: none).
    #[arg(long = "causal", value_enum)]
    causal: Vec<CausalArg>,
    /// Kernel paths; repeatable (default: auto, the fused kernel).
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<RunKernelArg>,
    /// Design of the fused kernel (default: the library's choice for the adapter).
    #[arg(long, value_enum, default_value = "auto")]
    design: DesignArg,
    /// Also compile the backward kernels of each call (the fast code of the default tile; on
    /// lavapipe minutes cold, which first calls otherwise avoid with quick code).
    #[arg(long)]
    backward: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelArg {
    Fused,
    Staged,
    Decode,
    Reference,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DesignArg {
    /// The library's choice for the adapter (tuning cache, else by device).
    Auto,
    /// Rows in registers (CPU drivers).
    Register,
    /// Workgroup tiles (GPUs).
    Tiled,
    /// Cooperative matrices (GPUs with tensor cores, f16).
    Coopmat,
    /// Every design, one row each (bench only).
    All,
}

impl DesignArg {
    fn design(self) -> Option<Design> {
        match self {
            DesignArg::Register => Some(Design::Register),
            DesignArg::Tiled => Some(Design::Tiled),
            DesignArg::Coopmat => Some(Design::Coopmat),
            DesignArg::Auto | DesignArg::All => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunKernelArg {
    Auto,
    Fused,
    Staged,
    Decode,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DTypeArg {
    F32,
    F16,
}

impl DTypeArg {
    fn dtype(self) -> DType {
        match self {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CausalArg {
    None,
    TopLeft,
    BottomRight,
}

impl CausalArg {
    fn alignment(self) -> Option<Alignment> {
        match self {
            CausalArg::None => None,
            CausalArg::TopLeft => Some(Alignment::TopLeft),
            CausalArg::BottomRight => Some(Alignment::BottomRight),
        }
    }
}

/// `L,R` with `-` or `inf` for an unbounded side.
fn parse_window(s: &str) -> std::result::Result<(Option<u32>, Option<u32>), String> {
    let side = |x: &str| -> std::result::Result<Option<u32>, String> {
        match x.trim() {
            "-" | "inf" | "" => Ok(None),
            v => v.parse().map(Some).map_err(|e| format!("window side {v:?}: {e}")),
        }
    };
    match s.split_once(',') {
        Some((l, r)) => Ok((side(l)?, side(r)?)),
        None => Err(format!("window {s:?}: expected LEFT,RIGHT (use - for unbounded)")),
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Attention variants; repeatable (default: sdpa). See --help for the inputs of each shape.
    #[arg(long = "variant", value_name = "VARIANT", long_help = variant::bench_help())]
    variants: Vec<Variant>,
    /// Hidden size Da of additive, local-p and han-pool (default: Dk).
    #[arg(long, value_name = "N")]
    da: Option<usize>,
    /// Window half-width W of local-m and local-p.
    #[arg(long, value_name = "N", default_value_t = VariantParams::default().half_width)]
    half_width: u32,
    /// Problem shape B,Hq,Hkv,Lq,Lk,Dk,Dv (or B,H,L,D, or B,Hq,Hkv,L,D); repeatable.
    #[arg(long = "shape", value_name = "SHAPE", value_parser = bench::parse_shape)]
    shapes: Vec<Problem>,
    /// Named sweep: default, seq, headdim, decode (used when no --shape is given; default: default).
    /// `decode` runs the decode sweep: B ∈ {1, 8}, Hq=32, Hkv=8, D=128, Lq=1, Lk ∈ {1024, 4096,
    /// 16384, 32768}, contiguous and paged caches, split and unsplit, with the K/V read rate, its
    /// share of the copy bandwidth and the host time of one-shot and replayed calls.
    #[arg(long)]
    preset: Option<String>,
    /// Rows per page of the paged cache (--preset decode).
    #[arg(long, value_name = "N", default_value_t = 16)]
    page_size: usize,
    /// Batch sizes of --preset decode, comma-separated (default 1,8).
    #[arg(long, value_delimiter = ',')]
    batches: Vec<usize>,
    /// Keys per sequence of --preset decode, comma-separated (default 1024,4096,16384,32768).
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Kernels to run; repeatable (default: fused and staged).
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<KernelArg>,
    /// Designs of the fused kernel, one fused row each; repeatable (default: auto; `all`: every
    /// design, those the adapter lacks noting the fallback that ran).
    #[arg(long = "design", value_enum)]
    designs: Vec<DesignArg>,
    /// Storage dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Causal variants to run; repeatable (default: the preset's, else none).
    #[arg(long = "causal", value_enum)]
    causal: Vec<CausalArg>,
    /// Valid keys per batch, comma-separated (one per batch of every shape): uneven sequences.
    #[arg(long, value_delimiter = ',')]
    key_lengths: Vec<u32>,
    /// Prefill of packed variable-length sequences of these lengths (comma-separated, queries =
    /// keys) against the padded dense call on the same sequences; heads and head dim from the
    /// first --shape (B,Hq,Hkv,L,D: B and L ignored; default 8 heads of 64), --causal (each
    /// alignment given, per sequence), --dtype, --warmup, --iters.
    #[arg(long, value_delimiter = ',', value_name = "LENGTHS")]
    varlen: Vec<u32>,
    /// Run through `Context::from_device` on a device created here, as a downstream crate does,
    /// instead of the crate's own context.
    #[arg(long)]
    borrowed_device: bool,
    /// Sliding window LEFT,RIGHT (`-` = unbounded), aligned like the causal mask.
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(Option<u32>, Option<u32>)>,
    /// Also time the fused backward pass (dQ, dK, dV) of every sdpa shape: one `backward` row
    /// per shape and causal variant (FLOPs = 2.5 × forward), with the backward/forward time ratio.
    #[arg(long)]
    backward: bool,
    /// Unmeasured warm-up samples per row.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Measured samples per row.
    #[arg(long, default_value_t = 10)]
    iters: u32,
    /// Do not compare outputs with the CPU reference (the rows say so; the run cannot fail on
    /// wrong output). Without it, bench exits non-zero when any row is outside tolerance.
    #[arg(long)]
    no_check: bool,
    /// Multiply every tolerance by X (default 1: the stated tolerances; 0 demands exact results).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    tolerance_scale: f64,
    /// Time the code a first call runs: on CPU adapters the quick code while the fast code is not
    /// compiled (with --warmup 0 --iters 1 in a fresh process: the first call itself). Without
    /// it, bench measures the fast code.
    #[arg(long)]
    first_call: bool,
    /// A register-design tile WORKGROUP,ROWS to time; repeatable: one fused row per tile, side
    /// by side (where the register design runs).
    #[arg(long = "register-tile", value_name = "WG,ROWS", value_parser = parse_register_tile)]
    register_tiles: Vec<wgpu_attention::FlashConfig>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the rows as CSV.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Plot GFLOP/s against sequence length into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Attention variant; all but sdpa and dot read --safetensors (see --help for the tensor names,
    /// the output shapes and the flags of each).
    #[arg(long, value_name = "VARIANT", default_value = "sdpa", long_help = variant::run_help())]
    variant: Variant,
    /// Q [B, Hq, Lq, Dk] as .npy (f32 or f16; sdpa and dot).
    #[arg(long, value_name = "FILE.npy")]
    q: Option<PathBuf>,
    /// K [B, Hkv, Lk, Dk] as .npy.
    #[arg(long, value_name = "FILE.npy")]
    k: Option<PathBuf>,
    /// V [B, Hkv, Lk, Dv] as .npy.
    #[arg(long, value_name = "FILE.npy")]
    v: Option<PathBuf>,
    /// Boolean mask as .npy (true = the key takes part), [B|1, Hq|1, Lq, Lk] or [Lq, Lk].
    #[arg(long, value_name = "FILE.npy")]
    mask: Option<PathBuf>,
    /// Additive bias as .npy, same shapes as the mask.
    #[arg(long, value_name = "FILE.npy")]
    bias: Option<PathBuf>,
    /// Read the tensors from a .safetensors file instead (sdpa and dot: names --q-name etc.; other
    /// variants: the names of --variant's help).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["q", "k", "v", "mask", "bias"])]
    safetensors: Option<PathBuf>,
    #[arg(long, default_value = "q")]
    q_name: String,
    #[arg(long, default_value = "k")]
    k_name: String,
    #[arg(long, default_value = "v")]
    v_name: String,
    /// Name of the mask tensor in the .safetensors file (used when present, or required when given).
    #[arg(long)]
    mask_name: Option<String>,
    /// Name of the bias tensor in the .safetensors file (used when present, or required when given).
    #[arg(long)]
    bias_name: Option<String>,
    /// Packed variable-length sequences (sdpa and dot): query offsets [B+1] as a 1-D .npy of
    /// uint32, int32 or int64 (first 0, nondecreasing). Q, K, V are then packed [total, H, D]
    /// tensors; out is [total_q, Hq, Dv], lse [Hq, total_q]; causal and windows align per sequence.
    #[arg(
        long,
        value_name = "FILE.npy",
        requires = "cu_seqlens_k",
        conflicts_with = "safetensors"
    )]
    cu_seqlens_q: Option<PathBuf>,
    /// Key offsets [B+1] of packed sequences, as --cu-seqlens-q.
    #[arg(
        long,
        value_name = "FILE.npy",
        requires = "cu_seqlens_q",
        conflicts_with = "safetensors"
    )]
    cu_seqlens_k: Option<PathBuf>,
    /// Name of the query offsets in the .safetensors file (packed sequences; U32, I32 or I64).
    #[arg(long, requires_all = ["cu_seqlens_k_name", "safetensors"])]
    cu_seqlens_q_name: Option<String>,
    /// Name of the key offsets in the .safetensors file (packed sequences).
    #[arg(long, requires_all = ["cu_seqlens_q_name", "safetensors"])]
    cu_seqlens_k_name: Option<String>,
    /// Storage dtype the float inputs are converted to (default: the dtype of the first input).
    #[arg(long, value_enum)]
    dtype: Option<DTypeArg>,
    /// Kernel path (variants with a fused/staged choice).
    #[arg(long, value_enum, default_value = "auto")]
    kernel: RunKernelArg,
    /// Design of the fused kernel.
    #[arg(long, value_enum, default_value = "auto")]
    design: DesignArg,
    /// Causal mask alignment (`--causal` alone: top-left).
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "top-left")]
    causal: CausalArg,
    /// Sliding window LEFT,RIGHT (`-` = unbounded), aligned like the causal mask.
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(Option<u32>, Option<u32>)>,
    /// Score scale (default 1/sqrt(Dk); dot and general: 1).
    #[arg(long, allow_hyphen_values = true)]
    scale: Option<f32>,
    /// Soft cap c > 0: scores become c·tanh(s/c).
    #[arg(long, allow_hyphen_values = true)]
    softcap: Option<f32>,
    /// Dropout on the attention weights: each is kept with probability 1 - P and scaled by
    /// 1/(1 - P), P in [0, 1); the mask comes from --seed (default 0), reproduced by --check.
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    dropout: Option<f32>,
    /// Write the main output `out` as .npy (shapes in --variant's help).
    #[arg(long, value_name = "FILE.npy")]
    out: Option<PathBuf>,
    /// Write the LSE (f32) as .npy.
    #[arg(long, value_name = "FILE.npy")]
    lse: Option<PathBuf>,
    /// Write the weights (f32) as .npy: P (staged path), the pooling weights, mha's weights averaged
    /// over heads, location's a.
    #[arg(long, value_name = "FILE.npy")]
    weights: Option<PathBuf>,
    /// Write the sampled key indices (hard) as u32 .npy; 4294967295 (u32::MAX) marks a row with no
    /// visible key.
    #[arg(long, value_name = "FILE.npy")]
    indices: Option<PathBuf>,
    /// Write the predicted positions p_i [B, Hq, Lq] (local-p) as f32 .npy.
    #[arg(long, value_name = "FILE.npy")]
    positions: Option<PathBuf>,
    /// Write the context a·v [B, Lq, Dv] (location) as .npy.
    #[arg(long, value_name = "FILE.npy")]
    context: Option<PathBuf>,
    /// Window half-width W (local-m, local-p; required there).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    half_width: Option<i64>,
    /// Sampling seed (hard), or the dropout seed with --dropout (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// ε of the normalization (ff-pool; default 1e-7, must be > 0).
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f32>,
    /// Query heads (mha; required there).
    #[arg(long, value_name = "N")]
    heads: Option<usize>,
    /// Key/value heads (mha; default: --heads).
    #[arg(long, value_name = "N")]
    kv_heads: Option<usize>,
    /// ALiBi slopes, f32 [Hq] or [B, Hq] (.npy, or a tensor name with --safetensors; sdpa and
    /// dot; every path: fused designs, staged, decode, KV cache, varlen, backward).
    #[arg(long, value_name = "FILE|NAME")]
    alibi_slopes: Option<String>,
    /// KV-cache mode (sdpa; FlashAttention's flash_attn_with_kvcache): rows already in each
    /// sequence, u32 [B] (.npy or a tensor name with --safetensors; int32/int64 accepted). --k and
    /// --v are then the cache, [B, Hkv, C, D] or pages [N, P, Hkv, D] with --block-table.
    /// Default with the other cache flags: every sequence full.
    #[arg(long, value_name = "FILE|NAME")]
    cache_seqlens: Option<String>,
    /// KV-cache mode: the page ids of every sequence, u32 [B, pages_per_seq]; --k/--v are pages.
    #[arg(long, value_name = "FILE|NAME")]
    block_table: Option<String>,
    /// KV-cache mode: rows per page (checked against the pages' shape).
    #[arg(long, value_name = "N")]
    page_size: Option<usize>,
    /// KV-cache mode: new keys [B, Hkv, Lnew, Dk] appended at each sequence's length first.
    #[arg(long, value_name = "FILE|NAME")]
    k_new: Option<String>,
    /// KV-cache mode: new values [B, Hkv, Lnew, Dv] (with --k-new).
    #[arg(long, value_name = "FILE|NAME")]
    v_new: Option<String>,
    /// KV-cache mode: write K of the cache after the append as .npy, in the layout and dtype of
    /// --k ([B, Hkv, C, D], or pages [N, P, Hkv, D]): the --k of the next step.
    #[arg(long, value_name = "FILE.npy")]
    out_k_cache: Option<PathBuf>,
    /// KV-cache mode: write V of the cache after the append, like --out-k-cache.
    #[arg(long, value_name = "FILE.npy")]
    out_v_cache: Option<PathBuf>,
    /// KV-cache mode: write the sequence lengths after the append, u32 [B] (the next step's
    /// --cache-seqlens).
    #[arg(long, value_name = "FILE.npy")]
    out_cache_seqlens: Option<PathBuf>,
    /// KV-cache mode: rotary table cos θ, f32 [max_positions, rotary_dim / 2]; Q row i and new key
    /// row r of sequence b are rotated at positions len_b + i and len_b + r.
    #[arg(long, value_name = "FILE|NAME")]
    rotary_cos: Option<String>,
    /// KV-cache mode: rotary table sin θ (with --rotary-cos).
    #[arg(long, value_name = "FILE|NAME")]
    rotary_sin: Option<String>,
    /// Rotary pairs (2i, 2i + 1) (GPT-J) instead of (i, i + rotary_dim / 2) (GPT-NeoX, Llama).
    #[arg(long)]
    rotary_interleaved: bool,
    /// Compare the outputs with the CPU reference and print the errors and PASS/FAIL (non-zero
    /// exit on FAIL).
    #[arg(long)]
    check: bool,
    /// Run the backward pass after the forward (sdpa): reads --d-out, writes --out-dq, --out-dk,
    /// --out-dv (and --out-dbias with a bias); --check compares every gradient with the reference.
    #[arg(long)]
    backward: bool,
    /// dO [B, Hq, Lq, Dv] as .npy, the gradient of the loss with respect to the output (--backward).
    #[arg(long, value_name = "FILE.npy")]
    d_out: Option<PathBuf>,
    /// Write dQ [B, Hq, Lq, Dk] as .npy (--backward).
    #[arg(long, value_name = "FILE.npy")]
    out_dq: Option<PathBuf>,
    /// Write dK [B, Hkv, Lk, Dk] as .npy (--backward).
    #[arg(long, value_name = "FILE.npy")]
    out_dk: Option<PathBuf>,
    /// Write dV [B, Hkv, Lk, Dv] as .npy (--backward).
    #[arg(long, value_name = "FILE.npy")]
    out_dv: Option<PathBuf>,
    /// Write dBias (the bias's shape) as .npy (--backward with --bias).
    #[arg(long, value_name = "FILE.npy")]
    out_dbias: Option<PathBuf>,
}

impl RunArgs {
    /// Whether a KV-cache flag is given.
    fn kv_cache_mode(&self) -> bool {
        [
            &self.cache_seqlens,
            &self.block_table,
            &self.k_new,
            &self.v_new,
            &self.rotary_cos,
            &self.rotary_sin,
        ]
        .iter()
        .any(|f| f.is_some())
            || [&self.out_k_cache, &self.out_v_cache, &self.out_cache_seqlens]
                .iter()
                .any(|f| f.is_some())
            || self.page_size.is_some()
            || self.rotary_interleaved
    }
}

#[derive(Args)]
struct TuneArgs {
    /// A quick run (one small bucket, few candidates): seconds instead of minutes.
    #[arg(long)]
    quick: bool,
    /// Tuning cache file (default: $WGPU_ATTENTION_TUNE_CACHE, else the user cache directory).
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Storage dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Head dims to tune, comma-separated (default 64,128; quick: 32).
    #[arg(long, value_delimiter = ',')]
    head_dims: Vec<usize>,
    /// Sequence lengths to tune, comma-separated (default 256,1024 on GPUs, 128,512 on CPU adapters; quick: 128).
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Kinds of call to tune, comma-separated: prefill, prefill-causal (the fused kernel's tiles),
    /// decode (one query row, 4 query heads per KV head: the decode kernel's workgroups × split
    /// counts, what `Auto` runs there); each is its own cache class (default: all; quick: prefill).
    #[arg(long, value_delimiter = ',', value_enum)]
    kinds: Vec<TuneKindArg>,
    /// KV heads of the benchmark shape (decode uses 4 query heads per KV head).
    #[arg(long)]
    heads: Option<usize>,
    /// Measured samples per candidate.
    #[arg(long)]
    iters: Option<u32>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TuneKindArg {
    Prefill,
    PrefillCausal,
    Decode,
}

impl TuneKindArg {
    fn kind(self) -> tuner::TuneKind {
        match self {
            TuneKindArg::Prefill => tuner::TuneKind::Prefill,
            TuneKindArg::PrefillCausal => tuner::TuneKind::PrefillCausal,
            TuneKindArg::Decode => tuner::TuneKind::Decode,
        }
    }
}

/// A device made the way a downstream crate makes its own (default adapter, the features the
/// crate's fast paths use, full limits), lent to `Context::from_device`.
fn borrowed_context() -> Result<Context> {
    use wgpu_attention::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::from_env().unwrap_or(wgpu_attention::context::DEFAULT_BACKENDS),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).context("no adapter")?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("borrowed"),
        required_features: adapter.features() & wgpu_attention::context::WANTED_FEATURES,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .context("requesting a device")?;
    Ok(Context::from_device(&device, &queue))
}

fn context() -> Result<Context> {
    Context::new().context("creating the GPU context")
}

fn info() -> Result<()> {
    let ctx = context()?;
    let i = ctx.info();
    match &i.adapter {
        Some(a) => {
            println!("adapter:      {}", a.name);
            println!("backend:      {:?}", a.backend);
            println!("device type:  {:?}", a.device_type);
            println!("driver:       {} {}", a.driver, a.driver_info);
            println!("vendor/device: {:#06x}/{:#06x}", a.vendor, a.device);
            println!(
                "subgroups:    {}..{} invocations",
                a.subgroup_min_size, a.subgroup_max_size
            );
        }
        None => println!("adapter:      unknown"),
    }
    println!("features:     {:?}", i.features);
    // M×N×K, A/B type → C type; wgpu lists subgroup-scope configurations only.
    if i.cooperative_matrices.is_empty() {
        println!("cooperative matrices: none");
    } else {
        println!("cooperative matrices (subgroup scope):");
        for c in &i.cooperative_matrices {
            println!(
                "  {}x{}x{}  A/B {:?} -> C {:?}{}",
                c.m_size,
                c.n_size,
                c.k_size,
                c.ab_type,
                c.cr_type,
                if c.saturating_accumulation { " (saturating)" } else { "" }
            );
        }
    }
    match i.coopmat_f16_size() {
        Some(m) => println!("coopmat design: {m}x{m}x{m} f16 -> f32"),
        None => println!("coopmat design: unavailable (needs f16 -> f32 cooperative matrices)"),
    }
    let l = &i.limits;
    println!("limits:");
    println!("  max_buffer_size                       {}", l.max_buffer_size);
    println!(
        "  max_storage_buffer_binding_size       {}",
        l.max_storage_buffer_binding_size
    );
    println!(
        "  max_storage_buffers_per_shader_stage  {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage_size    {}",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_size            {}x{}x{}",
        l.max_compute_workgroup_size_x, l.max_compute_workgroup_size_y, l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_workgroups_per_dimension  {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "  min_storage_buffer_offset_alignment   {}",
        l.min_storage_buffer_offset_alignment
    );
    Ok(())
}

fn peak_cmd(iters: u32, json: Option<&Path>) -> Result<()> {
    let ctx = context()?;
    let r = peak::measure_peak(&ctx, iters)?;
    println!("{r}");
    if let Some(path) = json {
        render::write_json(path, &r)?;
    }
    Ok(())
}

fn bench_cmd(a: &BenchArgs) -> Result<()> {
    if !a.varlen.is_empty() {
        return bench_varlen_cmd(a);
    }
    if a.preset.as_deref() == Some("decode") && a.shapes.is_empty() {
        return decode_bench_cmd(a);
    }
    let mut opts = BenchOptions::default();
    if !a.shapes.is_empty() {
        if a.preset.is_some() {
            bail!("give either --shape or --preset, not both");
        }
        opts.shapes = a.shapes.clone();
        opts.causal = vec![None];
    } else if let Some(name) = &a.preset {
        let (shapes, causal) = bench::preset(name).map_err(anyhow::Error::msg)?;
        opts.shapes = shapes;
        opts.causal = causal;
    }
    if !a.causal.is_empty() {
        opts.causal = a.causal.iter().map(|c| c.alignment()).collect();
    }
    if !a.kernels.is_empty() {
        opts.kernels = if a.kernels.contains(&KernelArg::All) {
            KernelKind::ALL.to_vec()
        } else {
            let mut ks: Vec<KernelKind> = Vec::new();
            for k in &a.kernels {
                let kind = match k {
                    KernelArg::Fused => KernelKind::Fused,
                    KernelArg::Staged => KernelKind::Staged,
                    KernelArg::Decode => KernelKind::Decode,
                    _ => KernelKind::Reference,
                };
                if !ks.contains(&kind) {
                    ks.push(kind);
                }
            }
            ks
        };
    }
    if !a.designs.is_empty() {
        opts.designs = match a.designs.contains(&DesignArg::All) {
            true => Design::ALL.into_iter().map(Some).collect(),
            false => a.designs.iter().map(|d| d.design()).collect(),
        };
        opts.designs.dedup();
    }
    opts.dtype = a.dtype.dtype();
    opts.window = a.window;
    opts.key_lengths = (!a.key_lengths.is_empty()).then(|| a.key_lengths.clone());
    opts.warmup = a.warmup;
    opts.iters = a.iters.max(1);
    opts.progress = !a.quiet;
    if !a.variants.is_empty() {
        opts.variants = a.variants.clone();
    }
    if !a.batches.is_empty() || !a.lengths.is_empty() {
        bail!("--batches and --lengths belong to --preset decode (other sweeps take --shape)");
    }
    opts.da = a.da;
    opts.half_width = a.half_width;
    opts.backward = a.backward;
    opts.check = a.check_options()?;
    opts.first_call = a.first_call;
    opts.register_tiles = a.register_tiles.clone();
    let ctx = match a.borrowed_device {
        true => borrowed_context()?,
        false => context()?,
    };
    let r = bench::run_bench(&ctx, &opts)?;
    print!("{}", render::table(&r));
    if let Some(p) = &a.json {
        render::write_json(p, &r)?;
    }
    if let Some(p) = &a.csv {
        render::write_text(p, &render::csv(&r))?;
    }
    if let Some(p) = &a.plot {
        plot::plot_svg(&r, p)?;
    }
    verdict(Verdict::of_rows(&r.rows, &opts.check))
}

/// `--register-tile WG,ROWS`.
fn parse_register_tile(s: &str) -> std::result::Result<wgpu_attention::FlashConfig, String> {
    let parsed: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("{s}: {e}"))?;
    match parsed[..] {
        [workgroup, rows] => Ok(wgpu_attention::FlashConfig::new(workgroup, rows)),
        _ => Err(format!("{s}: expected WORKGROUP,ROWS (e.g. 16,2)")),
    }
}

/// Prints the verdict's line, or fails with it when a row is outside tolerance (after every
/// table and file has been written).
fn verdict(v: Verdict) -> Result<()> {
    match v.passed() {
        true => {
            println!("{}", v.line());
            Ok(())
        }
        false => bail!("{}", v.line()),
    }
}

impl BenchArgs {
    fn check_options(&self) -> Result<CheckOptions> {
        Ok(CheckOptions {
            enabled: !self.no_check,
            tolerance_scale: self.tolerance_scale,
        }
        .validated()?)
    }
}

/// `bench --preset decode`: the decode sweep of `bench::decode`.
fn decode_bench_cmd(a: &BenchArgs) -> Result<()> {
    let refused = [
        ("--variant", !a.variants.is_empty()),
        ("--kernel", !a.kernels.is_empty()),
        ("--causal", !a.causal.is_empty()),
        ("--window", a.window.is_some()),
        ("--key-lengths", !a.key_lengths.is_empty()),
        ("--csv", a.csv.is_some()),
        ("--plot", a.plot.is_some()),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        bail!("{flag} does not apply to --preset decode (it sweeps the decode kernel's layouts and splits; use --shape B,Hq,Hkv,1,Lk,D,D with {flag} for other runs)");
    }
    let mut opts = bench::decode::DecodeBenchOptions {
        dtype: a.dtype.dtype(),
        page_size: a.page_size,
        warmup: a.warmup,
        iters: a.iters.max(1),
        check: a.check_options()?,
        ..Default::default()
    };
    if !a.batches.is_empty() {
        opts.batches = a.batches.clone();
    }
    if !a.lengths.is_empty() {
        opts.lengths_checked(&a.lengths)?;
    }
    let ctx = match a.borrowed_device {
        true => borrowed_context()?,
        false => context()?,
    };
    let r = bench::decode::run_decode_bench(&ctx, &opts)?;
    print!("{}", bench::decode::decode_table(&r));
    if let Some(p) = &a.json {
        render::write_json(p, &r)?;
    }
    verdict(r.verdict(&opts.check))
}

/// A tensor flag's value: a `.npy` path, or a tensor name of `--safetensors FILE`.
fn read_named(a: &RunArgs, value: &str, role: &str, max_bytes: u64) -> Result<files::HostTensor> {
    Ok(match &a.safetensors {
        Some(path) => files::read_safetensors(path, value)?,
        None => files::read_npy_limited(Path::new(value), role, max_bytes)?,
    })
}

/// `run` in KV-cache mode: the cache from --k/--v, lengths, block table, new rows and rotary
/// tables, then attention over it (`files::run_kv_cache`).
fn run_kv_cache_cmd(a: &RunArgs) -> Result<()> {
    if a.variant != Variant::Sdpa {
        bail!("the KV-cache flags (--cache-seqlens, --block-table, --k-new, ...) apply to --variant sdpa");
    }
    for (flag, given) in [
        ("--mask", a.mask.is_some() || a.mask_name.is_some()),
        ("--bias", a.bias.is_some() || a.bias_name.is_some()),
        ("--weights", a.weights.is_some()),
    ] {
        if given {
            bail!("{flag} does not apply with a KV cache (it returns O and the LSE)");
        }
    }
    if a.k_new.is_some() != a.v_new.is_some() {
        bail!("--k-new and --v-new go together");
    }
    if a.rotary_cos.is_some() != a.rotary_sin.is_some() {
        bail!("--rotary-cos and --rotary-sin go together");
    }
    if a.rotary_interleaved && a.rotary_cos.is_none() {
        bail!("--rotary-interleaved needs --rotary-cos and --rotary-sin");
    }
    if a.page_size.is_some() && a.block_table.is_none() {
        bail!("--page-size needs --block-table (the cache is contiguous without one)");
    }
    let ctx = context()?;
    let max = ctx.limits().max_buffer_size;
    let opt = |v: &Option<String>, role: &str| v.as_deref().map(|v| read_named(a, v, role, max)).transpose();
    // Lengths and page ids: any integer dtype within u32.
    let ints = |v: &Option<String>, role: &str| -> Result<Option<files::HostTensor>> {
        Ok(match (v, &a.safetensors) {
            (None, _) => None,
            (Some(name), Some(path)) => Some(files::read_safetensors_u32(path, &std::fs::read(path)?, name)?),
            (Some(file), None) => Some(files::read_npy_u32(Path::new(file), role)?),
        })
    };
    let qkv = |flag: &Option<PathBuf>, name: &str, role: &str| -> Result<files::HostTensor> {
        match (&a.safetensors, flag) {
            (Some(path), _) => Ok(files::read_safetensors(path, name)?),
            (None, Some(p)) => Ok(files::read_npy_limited(p, role, max)?),
            (None, None) => bail!("missing --{role} (or give --safetensors FILE)"),
        }
    };
    let dtype = a.dtype.map(DTypeArg::dtype);
    let q = qkv(&a.q, &a.q_name, "q")?;
    let dtype = dtype.unwrap_or(q.dtype());
    let inputs = files::KvRunInputs {
        q: q.converted(dtype),
        k_cache: qkv(&a.k, &a.k_name, "k")?,
        v_cache: qkv(&a.v, &a.v_name, "v")?,
        cache_seqlens: ints(&a.cache_seqlens, "cache-seqlens")?,
        block_table: ints(&a.block_table, "block-table")?,
        page_size: a.page_size,
        k_new: opt(&a.k_new, "k-new")?,
        v_new: opt(&a.v_new, "v-new")?,
        rotary: opt(&a.rotary_cos, "rotary-cos")?.zip(opt(&a.rotary_sin, "rotary-sin")?),
        rotary_style: match a.rotary_interleaved {
            true => wgpu_attention::RopeStyle::Interleaved,
            false => wgpu_attention::RopeStyle::HalfSplit,
        },
        read_back_cache: a.out_k_cache.is_some() || a.out_v_cache.is_some(),
    };
    let opts = attention_options(a, max)?;
    let notice = pipeline_notice();
    let res = files::run_kv_cache(&ctx, &inputs, &opts, a.check).map_err(cli_error);
    drop(notice);
    let res = res?;
    let kernel = match res.kernel {
        KernelChoice::Staged => "staged",
        KernelChoice::Decode => "decode",
        _ => "fused",
    };
    let mut shapes = vec![format!("out {:?} {}", res.out.shape, res.out.dtype())];
    shapes.extend(res.lse.as_ref().map(|l| format!("lse {:?} f32", l.shape)));
    println!(
        "sdpa over a KV cache ({kernel} kernel): {}; lengths {:?}",
        shapes.join(", "),
        res.lengths
    );
    let mut passed = true;
    for (name, c) in &res.checks {
        passed &= report_check(name, c);
    }
    let lengths = files::HostTensor {
        shape: vec![res.lengths.len()],
        data: files::HostData::U32(res.lengths.clone()),
    };
    for (path, t) in [
        (&a.out, Some(&res.out)),
        (&a.lse, res.lse.as_ref()),
        (&a.out_k_cache, res.k_cache.as_ref()),
        (&a.out_v_cache, res.v_cache.as_ref()),
        (&a.out_cache_seqlens, Some(&lengths)),
    ] {
        if let (Some(path), Some(t)) = (path, t) {
            files::write_npy(path, t)?;
            println!("wrote {}", path.display());
        }
    }
    if !passed {
        bail!("output outside the reference tolerance");
    }
    Ok(())
}

/// `--alibi-slopes`: f32 [Hq] or [B, Hq] read from a file.
fn alibi_slopes(a: &RunArgs, max_bytes: u64) -> Result<Option<AlibiSlopes>> {
    let Some(v) = &a.alibi_slopes else {
        return Ok(None);
    };
    let t = read_named(a, v, "alibi-slopes", max_bytes)?;
    match (&t.shape[..], t.to_f32()) {
        (&[_], Some(slopes)) => Ok(Some(AlibiSlopes::per_head(slopes))),
        (&[b, _], Some(slopes)) => Ok(Some(AlibiSlopes::per_batch(b, slopes))),
        _ => bail!(
            "--alibi-slopes must be floats [Hq] or [B, Hq], got {:?} {}",
            t.shape,
            t.dtype()
        ),
    }
}

/// `bench --varlen LENGTHS`: packed sequences against the padded dense call.
fn bench_varlen_cmd(a: &BenchArgs) -> Result<()> {
    use wgpu_attention::bench::varlen::{bench_varlen, VarlenBenchOptions};
    if a.preset.is_some() || a.shapes.len() > 1 || !a.key_lengths.is_empty() || a.window.is_some() {
        bail!("--varlen takes at most one --shape (its heads and head dim) and no --preset, --key-lengths or --window");
    }
    if a.varlen.iter().all(|&l| l == 0) {
        bail!("--varlen needs at least one sequence longer than 0");
    }
    let p = a.shapes.first().copied().unwrap_or(Problem {
        b: 1,
        hq: 8,
        hkv: 8,
        lq: 1,
        lk: 1,
        dk: 64,
        dv: 64,
    });
    if p.dk != p.dv {
        bail!("--varlen measures Dk = Dv: give a shape B,Hq,Hkv,L,D");
    }
    let ctx = match a.borrowed_device {
        true => borrowed_context()?,
        false => context()?,
    };
    let causal: Vec<Option<Alignment>> = match a.causal.is_empty() {
        true => vec![None],
        false => a.causal.iter().map(|c| c.alignment()).collect(),
    };
    println!("adapter: {}", wgpu_attention::bench::AdapterReport::of(&ctx).summary());
    println!(
        "lengths {:?}, Hq={} Hkv={} D={} {}",
        a.varlen,
        p.hq,
        p.hkv,
        p.dk,
        a.dtype.dtype().name()
    );
    println!("path         causal        median_ms     min_ms  GFLOP/s  time/varlen  max_abs_err  checked");
    let check = a.check_options()?;
    let mut verdict_rows = Verdict {
        checks_off: !check.enabled,
        ..Default::default()
    };
    let mut reports = Vec::new();
    for c in causal {
        let opts = VarlenBenchOptions {
            lengths: a.varlen.clone(),
            hq: p.hq,
            hkv: p.hkv,
            d: p.dk,
            causal: c,
            dtype: a.dtype.dtype(),
            warmup: a.warmup,
            iters: a.iters.max(1),
            check,
        };
        let r = bench_varlen(&ctx, &opts).map_err(cli_error)?;
        let name = wgpu_attention::bench_record::causal_label(c);
        for row in &r.rows {
            let mut checked = row.checked.clone();
            if row.within_tolerance == Some(false) {
                checked = format!("OUTSIDE TOLERANCE ({checked})");
            }
            println!(
                "{:<12} {:<12} {:>10.3} {:>10.3} {:>8.2} {:>11.3}x {:>12}  {checked}",
                row.path,
                name,
                row.median_ms,
                row.min_ms,
                row.gflops,
                row.median_ms / r.rows[0].median_ms,
                row.max_abs_err.map_or("-".into(), |e| format!("{e:.1e}")),
            );
        }
        println!(
            "varlen / padded (same [B, L, H, D] layout) median time: {:.3}",
            r.ratio()
        );
        r.add_to(&mut verdict_rows, p.hq, p.hkv, p.dk, name);
        reports.push(r);
    }
    if let Some(r) = reports.first() {
        println!("timer: {}", r.timer);
    }
    if let Some(path) = &a.json {
        render::write_json(path, &reports)?;
    }
    verdict(verdict_rows)
}

fn run_cmd(a: &RunArgs) -> Result<()> {
    if a.design == DesignArg::All {
        bail!("--design all applies to bench (one row per design); run takes one design");
    }
    check_backward_flags(a)?;
    if a.kv_cache_mode() {
        return run_kv_cache_cmd(a);
    }
    check_run_flags(a)?;
    if a.backward {
        return backward_cmd(a);
    }
    let v = a.variant;
    let dtype = a.dtype.map(DTypeArg::dtype);
    let ctx = context()?;
    if let Some(path) = &a.safetensors {
        // Tensors larger than the device can hold are refused from the header, before reading.
        files::check_safetensors(path, ctx.limits().max_buffer_size)?;
    }
    if a.cu_seqlens_q.is_some() || a.cu_seqlens_q_name.is_some() {
        return run_varlen_cmd(a, &ctx, dtype);
    }
    let mut inputs = match v {
        Variant::Sdpa | Variant::Dot => sdpa_inputs(a, dtype, ctx.limits().max_buffer_size)?,
        _ => {
            let path = a
                .safetensors
                .as_deref()
                .with_context(|| format!("--variant {v} reads its tensors from --safetensors FILE"))?;
            let inputs = variant::read_inputs(path, v, dtype).with_context(|| format!("--variant {v}"))?;
            note_unused_tensors(path, v)?;
            inputs
        }
    };
    if inputs.dtype() == DType::F16 && !v.accepts(Flag::F16) {
        bail!("--variant {v} is f32 only, the inputs are f16: pass --dtype f32 to convert them");
    }
    let defaults = VariantParams::default();
    let attention = attention_options(a, ctx.limits().max_buffer_size)?;
    let params = VariantParams {
        attention,
        half_width: a.half_width.map_or(0, |w| w as u32),
        seed: a.seed.unwrap_or(defaults.seed),
        eps: a.eps.unwrap_or(defaults.eps),
    };
    if v == Variant::Mha {
        let path = a
            .safetensors
            .as_deref()
            .context("--variant mha reads --safetensors FILE")?;
        let (heads, kv_heads) = mha_heads(a, path)?;
        inputs = variant::with_layer_from_inputs(&ctx, inputs, heads, kv_heads)
            .map_err(cli_error)
            .with_context(|| format!("--variant {v}"))?;
    }
    let notice = pipeline_notice();
    let res = variant::run_variant(&ctx, &inputs, &params, a.check).map_err(cli_error);
    drop(notice);
    let res = res?;
    let shapes: Vec<String> = res
        .outputs
        .iter()
        .map(|(n, t)| format!("{n} {:?} {}", t.shape, t.dtype()))
        .collect();
    let kernel = match res.kernel {
        Some(KernelChoice::Staged) => " (staged kernel)",
        Some(KernelChoice::Decode) => " (decode kernel)",
        Some(_) => " (fused kernel)",
        None => "",
    };
    println!("{v}{kernel}: {}", shapes.join(", "));
    let mut passed = true;
    for (name, c) in &res.checks {
        passed &= report_check(name, c);
    }
    for (path, name) in output_files(a) {
        if let (Some(path), Some((_, t))) = (path, res.outputs.iter().find(|(n, _)| *n == name)) {
            files::write_npy(path, t)?;
            println!("wrote {}", path.display());
        }
    }
    if !passed {
        bail!("output outside the reference tolerance");
    }
    Ok(())
}

/// `run` on packed variable-length sequences (`--cu-seqlens-q/-k`): sdpa or dot, no mask, bias
/// or weights, on the fused kernel.
fn run_varlen_cmd(a: &RunArgs, ctx: &Context, dtype: Option<DType>) -> Result<()> {
    let v = a.variant;
    if !matches!(v, Variant::Sdpa | Variant::Dot) {
        bail!("--cu-seqlens-q/--cu-seqlens-k apply to --variant sdpa and dot only, not {v}");
    }
    let masks = a.mask.is_some() || a.bias.is_some() || a.mask_name.is_some() || a.bias_name.is_some();
    if masks {
        bail!("--mask and --bias do not apply to packed sequences (--cu-seqlens-q): mask with --causal, --window or the offsets");
    }
    if a.weights.is_some() || matches!(a.kernel, RunKernelArg::Staged | RunKernelArg::Decode) {
        bail!("packed sequences (--cu-seqlens-q) run on the fused kernel: no --weights, --kernel auto or fused");
    }
    let (cu_q, cu_k) = match (&a.safetensors, &a.cu_seqlens_q_name, &a.cu_seqlens_k_name) {
        (Some(path), Some(nq), Some(nk)) => {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            (
                files::read_safetensors_offsets(path, &bytes, nq)?,
                files::read_safetensors_offsets(path, &bytes, nk)?,
            )
        }
        _ => match (&a.cu_seqlens_q, &a.cu_seqlens_k) {
            (Some(q), Some(k)) => (
                files::read_npy_offsets(q, "cu-seqlens-q")?,
                files::read_npy_offsets(k, "cu-seqlens-k")?,
            ),
            _ => bail!("give both --cu-seqlens-q and --cu-seqlens-k (or both names with --safetensors)"),
        },
    };
    let inputs = sdpa_inputs(a, dtype, ctx.limits().max_buffer_size)?;
    if let Some(name) = ["mask", "bias"].into_iter().find(|n| inputs.get(n).is_some()) {
        bail!("the file's {name} tensor does not apply to packed sequences (--cu-seqlens-q-name): mask with --causal, --window or the offsets");
    }
    let get = |name: &str| inputs.get(name).cloned().context(format!("missing {name}"));
    let run_inputs = files::VarlenRunInputs {
        q: get("q")?,
        k: get("k")?,
        v: get("v")?,
        cu_seqlens_q: cu_q,
        cu_seqlens_k: cu_k,
    };
    let mut opts = attention_options(a, ctx.limits().max_buffer_size)?;
    if v == Variant::Dot {
        opts.scale = Some(a.scale.unwrap_or(1.0));
    }
    let notice = pipeline_notice();
    let res = files::run_varlen(ctx, &run_inputs, &opts, a.check).map_err(cli_error);
    drop(notice);
    let res = res?;
    let mut shapes = vec![format!("out {:?} {}", res.out.shape, res.out.dtype())];
    shapes.extend(res.lse.as_ref().map(|l| format!("lse {:?} {}", l.shape, l.dtype())));
    println!("{v} (fused kernel, packed sequences): {}", shapes.join(", "));
    let mut passed = true;
    for (name, c) in &res.checks {
        passed &= report_check(name, c);
    }
    for (path, t) in [(&a.out, Some(&res.out)), (&a.lse, res.lse.as_ref())] {
        if let (Some(path), Some(t)) = (path, t) {
            files::write_npy(path, t)?;
            println!("wrote {}", path.display());
        }
    }
    if !passed {
        bail!("output outside the reference tolerance");
    }
    Ok(())
}

/// Every output file flag with the output it writes.
fn output_files(a: &RunArgs) -> [(&Option<PathBuf>, &'static str); 6] {
    [
        (&a.out, "out"),
        (&a.lse, "lse"),
        (&a.weights, "weights"),
        (&a.indices, "indices"),
        (&a.positions, "positions"),
        (&a.context, "context"),
    ]
}

/// Refuses a flag the chosen variant does not apply, or a value outside its range, in one line
/// naming the flag (before any file is read or any device is created).
fn check_run_flags(a: &RunArgs) -> Result<()> {
    let v = a.variant;
    let qkv_files = matches!(v, Variant::Sdpa | Variant::Dot);
    let npy = [&a.q, &a.k, &a.v, &a.mask, &a.bias].iter().any(|p| p.is_some());
    let names = a.q_name != "q" || a.k_name != "k" || a.v_name != "v" || a.mask_name.is_some() || a.bias_name.is_some();
    if npy && !qkv_files {
        bail!("--q/--k/--v/--mask/--bias do not apply to --variant {v} (it reads --safetensors FILE)");
    }
    if names && !qkv_files {
        bail!("--q-name/--k-name/--v-name/--mask-name/--bias-name do not apply to --variant {v}");
    }
    if a.alibi_slopes.is_some() && !qkv_files {
        bail!("--alibi-slopes does not apply to --variant {v} (sdpa and dot take it)");
    }
    let given = [
        (Flag::Scale, a.scale.is_some()),
        (Flag::Softcap, a.softcap.is_some()),
        (Flag::Causal, a.causal != CausalArg::None),
        (Flag::Window, a.window.is_some()),
        (Flag::Dropout, a.dropout.is_some()),
        (Flag::Kernel, a.kernel != RunKernelArg::Auto),
        (Flag::HalfWidth, a.half_width.is_some()),
        (Flag::Eps, a.eps.is_some()),
        (Flag::Heads, a.heads.is_some() || a.kv_heads.is_some()),
        (Flag::F16, a.dtype == Some(DTypeArg::F16)),
    ];
    if let Some((flag, _)) = given.iter().find(|(flag, given)| *given && !v.accepts(*flag)) {
        bail!(
            "{} does not apply to --variant {v}{}",
            flag.cli(),
            refusal_reason(v, *flag)
        );
    }
    if a.seed.is_some() && !v.accepts(Flag::Seed) {
        match v.accepts(Flag::Dropout) {
            true if a.dropout.is_none() => {
                bail!("--seed is the dropout seed of --variant {v}: give --dropout P too")
            }
            true => {}
            false => bail!("--seed does not apply to --variant {v}"),
        }
    }
    let outputs: Vec<&str> = v.outputs().iter().map(|(n, _)| *n).collect();
    for (path, name) in output_files(a) {
        if path.is_some() && !v.has_output(name) {
            bail!(
                "--{name} does not apply to --variant {v}: it returns {}",
                outputs.join(", ")
            );
        }
    }
    if a.weights.is_some() && matches!(a.kernel, RunKernelArg::Fused | RunKernelArg::Decode) {
        let k = if a.kernel == RunKernelArg::Fused {
            "fused"
        } else {
            "decode"
        };
        bail!("--weights needs the staged path: use --kernel staged (or auto); the {k} kernel never materializes the weights");
    }
    // Values, in the CLI's words (the library would name its option fields).
    if let Some(s) = a.scale.filter(|s| !s.is_finite()) {
        bail!("--scale must be finite, got {s}");
    }
    if let Some(c) = a.softcap.filter(|c| !(c.is_finite() && *c > 0.0)) {
        bail!("--softcap must be finite and > 0, got {c}");
    }
    if let Some(p) = a.dropout.filter(|p| !(p.is_finite() && (0.0..1.0).contains(p))) {
        bail!("--dropout must be in [0, 1), got {p}");
    }
    if let Some(e) = a.eps.filter(|e| !(e.is_finite() && *e > 0.0)) {
        bail!("--eps must be finite and > 0, got {e}");
    }
    if v.accepts(Flag::HalfWidth) {
        let min = if v == Variant::LocalP { 1 } else { 0 };
        match a.half_width {
            None => bail!("--variant {v} needs --half-width N"),
            Some(w) if w < min => bail!("--half-width must be at least {min} for --variant {v}, got {w}"),
            Some(w) if w > u32::MAX as i64 => bail!("--half-width must be at most {}, got {w}", u32::MAX),
            Some(_) => {}
        }
    }
    if v.accepts(Flag::Heads) {
        let heads = a.heads.context("--variant mha needs --heads N")?;
        let kv_heads = a.kv_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 {
            bail!("--heads and --kv-heads must be at least 1");
        }
        if !heads.is_multiple_of(kv_heads) {
            bail!("--heads {heads} must be a multiple of --kv-heads {kv_heads}");
        }
    }
    Ok(())
}

/// Why a variant refuses a flag, when the reason is not just "it has no such option".
fn refusal_reason(v: Variant, flag: Flag) -> &'static str {
    match (v, flag) {
        (Variant::Additive | Variant::ZeroMasked, Flag::Scale) => " (its scores are not scaled)",
        (Variant::Location, Flag::Scale) => " (the location scores W_a [q; h] + b_a are not scaled)",
        (Variant::LocalM, Flag::Window) => " (its window is --half-width)",
        (Variant::Hard, Flag::Dropout) => " (it samples one key per row)",
        (_, Flag::F16) => " (f32 only)",
        (_, Flag::Kernel) => " (it has one GPU path)",
        _ => "",
    }
}

/// The heads of `--variant mha`, checked against the weights' rows in the CLI's words.
fn mha_heads(a: &RunArgs, path: &Path) -> Result<(usize, usize)> {
    let heads = a.heads.context("--variant mha needs --heads N")?;
    let kv_heads = a.kv_heads.unwrap_or(heads);
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let names = files::safetensors_names(path, &bytes)?;
    let rows = |name: &str| -> Result<Option<usize>> {
        match names.iter().any(|n| n == name) {
            true => Ok(files::read_safetensors_bytes(path, &bytes, name)?
                .shape
                .first()
                .copied()),
            false => Ok(None),
        }
    };
    let (q_rows, k_rows, q_name) = match rows("in_proj_weight")? {
        Some(r) => (r / 3, r / 3, "in_proj_weight's query block"),
        None => match (rows("q_proj.weight")?, rows("k_proj.weight")?) {
            (Some(q), Some(k)) => (q, k, "q_proj.weight"),
            // Missing weights: the layer's loader names them.
            _ => return Ok((heads, kv_heads)),
        },
    };
    let divisors = |n: usize| -> String {
        let d: Vec<String> = (1..=n)
            .filter(|d| n.is_multiple_of(*d))
            .map(|d| d.to_string())
            .collect();
        d.join(", ")
    };
    if !q_rows.is_multiple_of(heads) {
        bail!(
            "--heads {heads} does not divide the {q_rows} rows of {q_name} (rows = heads x head dim): \
             use one of {}",
            divisors(q_rows)
        );
    }
    let dh = q_rows / heads;
    if k_rows != kv_heads * dh {
        let hint = match k_rows.is_multiple_of(dh) {
            true => format!(": use --kv-heads {}", k_rows / dh),
            false => String::new(),
        };
        bail!(
            "--kv-heads {kv_heads} of head dim {dh} ({q_rows} rows of {q_name} / --heads {heads}) needs \
             {} rows in the key projection, it has {k_rows}{hint}",
            kv_heads * dh
        );
    }
    Ok((heads, kv_heads))
}

/// Library messages name the Rust API; the CLI names its flags instead.
fn cli_error(e: wgpu_attention::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    for (api, flag) in [
        ("KernelChoice::Staged (or Auto)", "--kernel staged (or auto)"),
        ("KernelChoice::Staged", "--kernel staged"),
        ("KernelChoice::Fused", "--kernel fused"),
        ("with return_weights", "with --weights"),
        ("option `half_width`", "--half-width"),
        ("option `eps`", "--eps"),
        ("option `softcap`", "--softcap"),
        ("option `scale`", "--scale"),
        ("option `dropout.p`", "--dropout"),
        ("option `heads_q`", "--heads"),
        ("use the fused path for f16", "use --kernel fused (or auto) for f16"),
    ] {
        msg = msg.replace(api, flag);
    }
    anyhow!(msg)
}

/// Prints a one-line notice on stderr while the library compiles a pipeline no cache holds.
fn pipeline_notice() -> impl Drop {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            wgpu_attention::pipeline::set_compile_hook(None);
        }
    }
    wgpu_attention::pipeline::set_compile_hook(Some(Box::new(|what: &str| {
        eprintln!("compiling the {what} pipeline (first use; can take a while on a CPU adapter)…");
    })));
    Reset
}

/// Tensors of the file that another variant would read but this one ignores: a one-line note on
/// stderr, so that a mask meant for another variant is not silently dropped.
fn note_unused_tensors(path: &Path, v: Variant) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let used: Vec<&str> = v
        .required_tensors()
        .iter()
        .chain(v.optional_tensors())
        .copied()
        .collect();
    let known = |n: &str| {
        Variant::ALL
            .iter()
            .any(|o| o.required_tensors().contains(&n) || o.optional_tensors().contains(&n))
    };
    let unused: Vec<String> = files::safetensors_names(path, &bytes)?
        .into_iter()
        .filter(|n| known(n) && !used.contains(&n.as_str()))
        .collect();
    if !unused.is_empty() {
        eprintln!(
            "note: --variant {v} does not read the tensors {} of {}",
            unused.join(", "),
            path.display()
        );
    }
    Ok(())
}

/// The options of §1 the flags set (tensor options come from the files).
/// The options of `run`, ALiBi slopes read from their file (at most `max_bytes`).
fn attention_options(a: &RunArgs, max_bytes: u64) -> Result<AttentionOptions> {
    let causal = a.causal.alignment();
    Ok(AttentionOptions {
        scale: a.scale,
        softcap: a.softcap,
        causal,
        window: a.window.map(|(left, right)| Window {
            left,
            right,
            alignment: causal.unwrap_or_default(),
        }),
        return_lse: a.lse.is_some(),
        return_weights: a.weights.is_some(),
        kernel: match a.kernel {
            RunKernelArg::Auto => KernelChoice::Auto,
            RunKernelArg::Fused => KernelChoice::Fused,
            RunKernelArg::Staged => KernelChoice::Staged,
            RunKernelArg::Decode => KernelChoice::Decode,
        },
        design: a.design.design(),
        dropout: a.dropout.map(|p| Dropout {
            p,
            seed: a.seed.unwrap_or(0),
        }),
        alibi_slopes: alibi_slopes(a, max_bytes)?,
        ..Default::default()
    })
}

/// Prints one check line (errors and PASS/FAIL); true when it passed.
fn report_check(output: &str, c: &Comparison) -> bool {
    let verdict = if c.ok() { "PASS" } else { "FAIL" };
    println!("check {output} against the CPU reference: {c}: {verdict}");
    c.ok()
}

/// The inputs of sdpa and dot: .npy files, or named tensors of a .safetensors file.
/// Q, K, V (and mask, bias) of `run --variant sdpa|dot`; `.npy` data larger than `max_bytes`
/// (the device's buffer limit) is refused from its header, before it is read.
fn sdpa_inputs(a: &RunArgs, dtype: Option<DType>, max_bytes: u64) -> Result<variant::VariantInputs> {
    let mut tensors: Vec<(String, files::HostTensor)> = Vec::new();
    match &a.safetensors {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            let names = files::safetensors_names(path, &bytes)?;
            let get = |name: &str| files::read_safetensors_bytes(path, &bytes, name);
            for (role, name) in [("q", &a.q_name), ("k", &a.k_name), ("v", &a.v_name)] {
                tensors.push((role.into(), get(name)?));
            }
            for (role, name) in [("mask", &a.mask_name), ("bias", &a.bias_name)] {
                match name {
                    Some(n) => tensors.push((role.into(), get(n)?)),
                    None if names.iter().any(|n| n == role) => tensors.push((role.into(), get(role)?)),
                    None => {}
                }
            }
        }
        None => {
            for (role, path) in [("q", &a.q), ("k", &a.k), ("v", &a.v)] {
                let path = path
                    .as_deref()
                    .ok_or_else(|| anyhow!("missing --{role} (or give --safetensors FILE)"))?;
                tensors.push((role.into(), files::read_npy_limited(path, role, max_bytes)?));
            }
            for (role, path) in [("mask", &a.mask), ("bias", &a.bias)] {
                if let Some(path) = path {
                    tensors.push((role.into(), files::read_npy_limited(path, role, max_bytes)?));
                }
            }
        }
    }
    let dtype = dtype.unwrap_or(match tensors[0].1.dtype() {
        DType::F16 => DType::F16,
        _ => DType::F32,
    });
    Ok(variant::VariantInputs::new(a.variant, tensors, dtype))
}

fn warm_up_cmd(a: &WarmUpArgs) -> Result<()> {
    if a.design == DesignArg::All {
        bail!("--design all applies to bench (one row per design); warm-up takes one design");
    }
    let ctx = context()?;
    let causal = if a.causal.is_empty() {
        vec![CausalArg::None]
    } else {
        a.causal.clone()
    };
    let kernels = if a.kernels.is_empty() {
        vec![RunKernelArg::Auto]
    } else {
        a.kernels.clone()
    };
    for p in &a.shapes {
        for &c in &causal {
            for &k in &kernels {
                let opts = AttentionOptions {
                    causal: c.alignment(),
                    kernel: match k {
                        RunKernelArg::Auto => KernelChoice::Auto,
                        RunKernelArg::Fused => KernelChoice::Fused,
                        RunKernelArg::Staged => KernelChoice::Staged,
                        RunKernelArg::Decode => KernelChoice::Decode,
                    },
                    design: a.design.design(),
                    ..Default::default()
                };
                let started = std::time::Instant::now();
                wgpu_attention::Attention::warm_up(&ctx, p, a.dtype.dtype(), &opts)?;
                if a.backward {
                    let bopts = wgpu_attention::BackwardOptions::default();
                    wgpu_attention::AttentionBackward::warm_up(&ctx, p, a.dtype.dtype(), &opts, &bopts)?;
                }
                println!(
                    "{p} {} causal={} kernel={}{}: ready in {:.2} s",
                    a.dtype.dtype().name(),
                    c.to_possible_value().map_or("?".into(), |v| v.get_name().to_string()),
                    k.to_possible_value().map_or("?".into(), |v| v.get_name().to_string()),
                    if a.backward { " with backward" } else { "" },
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(())
}

fn tune_cmd(a: &TuneArgs) -> Result<()> {
    let ctx = context()?;
    let mut opts = if a.quick {
        tuner::TuneOptions::quick()
    } else {
        tuner::TuneOptions::for_context(&ctx)
    };
    opts.dtype = a.dtype.dtype();
    if !a.head_dims.is_empty() {
        opts.head_dims = a.head_dims.clone();
    }
    if !a.lengths.is_empty() {
        opts.lengths = a.lengths.clone();
    }
    if !a.kinds.is_empty() {
        opts.kinds = a.kinds.iter().map(|k| k.kind()).collect();
    }
    if let Some(h) = a.heads {
        opts.heads = h;
    }
    if let Some(i) = a.iters {
        opts.iters = i.max(1);
    }
    opts.progress = !a.quiet;
    let path = match &a.cache {
        Some(p) => p.clone(),
        None => bench::cache_path().context("no cache directory: pass --cache FILE")?,
    };
    let (adapter, results) = tuner::run_tune(&ctx, &opts)?;
    println!("adapter: {adapter}");
    for r in &results {
        let speedup = r.entry.default_ms.map_or(String::new(), |d| {
            format!(" (default {d:.3} ms, {:.2}x)", d / r.entry.median_ms)
        });
        let tile = tuner::label(&r.entry.config);
        println!(
            "{:<40} {tile:<26} {:.3} ms{speedup}; {} candidates, {} rejected",
            r.bucket,
            r.entry.median_ms,
            r.tried,
            r.rejected.len()
        );
    }
    tuner::store(&path, &adapter, &results)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info => info(),
        Command::Peak { iters, json } => peak_cmd(*iters, json.as_deref()),
        Command::Bench(a) => bench_cmd(a),
        Command::Run(a) => run_cmd(a),
        Command::Tune(a) => tune_cmd(a),
        Command::WarmUp(a) => warm_up_cmd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the message, then each cause not already contained in it.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            eprintln!("error: {}", bench::one_line(&msg));
            ExitCode::FAILURE
        }
    }
}
