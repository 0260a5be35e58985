//! `wgpu-attention`: device info, calibration ceilings, benchmarks, attention on tensor files and
//! tile tuning. The work lives in `wgpu_attention::bench`; this file only parses arguments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use wgpu_attention::bench::variant::{self, VariantParams};
use wgpu_attention::bench::{self, files, peak, plot, report, tuner, BenchOptions, KernelKind, Variant};
use wgpu_attention::family::mha::MultiHeadAttention;
use wgpu_attention::reference::Comparison;
use wgpu_attention::{Alignment, AttentionOptions, Context, DType, KernelChoice, Problem, Window};

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
    Bench(BenchArgs),
    /// Run attention (any variant of the family) on tensors from .npy or .safetensors files.
    Run(Box<RunArgs>),
    /// Tune the fused kernel's tiles for this adapter and store them in the tuning cache.
    Tune(TuneArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KernelArg {
    Fused,
    Staged,
    Reference,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RunKernelArg {
    Auto,
    Fused,
    Staged,
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
    #[arg(long)]
    preset: Option<String>,
    /// Kernels to run; repeatable (default: fused and staged).
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<KernelArg>,
    /// Storage dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Causal variants to run; repeatable (default: the preset's, else none).
    #[arg(long = "causal", value_enum)]
    causal: Vec<CausalArg>,
    /// Sliding window LEFT,RIGHT (`-` = unbounded), aligned like the causal mask.
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(Option<u32>, Option<u32>)>,
    /// Unmeasured warm-up samples per row.
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Measured samples per row.
    #[arg(long, default_value_t = 10)]
    iters: u32,
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
    /// Attention variant; all but sdpa and dot read --safetensors (see --help for the tensor names).
    #[arg(long, value_name = "VARIANT", default_value = "sdpa", long_help = variant::run_help())]
    variant: Variant,
    /// Q [B, Hq, Lq, Dk] as .npy (f32 or f16).
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
    /// Kernel path.
    #[arg(long, value_enum, default_value = "auto")]
    kernel: RunKernelArg,
    /// Causal mask alignment (`--causal` alone: top-left).
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "top-left")]
    causal: CausalArg,
    /// Sliding window LEFT,RIGHT (`-` = unbounded), aligned like the causal mask.
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    window: Option<(Option<u32>, Option<u32>)>,
    /// Score scale (default 1/sqrt(Dk)).
    #[arg(long, allow_hyphen_values = true)]
    scale: Option<f32>,
    /// Soft cap c: scores become c·tanh(s/c).
    #[arg(long)]
    softcap: Option<f32>,
    /// Write the main output `out` as .npy (O in the dtype of Q; the pooled vectors; the layer output).
    #[arg(long, value_name = "FILE.npy")]
    out: Option<PathBuf>,
    /// Write LSE [B, Hq, Lq] (f32) as .npy.
    #[arg(long, value_name = "FILE.npy")]
    lse: Option<PathBuf>,
    /// Write the weights (f32) as .npy: P (staged path), the pooling weights, mha's weights averaged
    /// over heads, location's a.
    #[arg(long, value_name = "FILE.npy")]
    weights: Option<PathBuf>,
    /// Write the sampled key indices [B, Hq, Lq] (hard) as u32 .npy.
    #[arg(long, value_name = "FILE.npy")]
    indices: Option<PathBuf>,
    /// Window half-width W (local-m, local-p; required there).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    half_width: Option<i64>,
    /// Sampling seed (hard; default 0).
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
    /// Compare the outputs with the CPU reference and print the errors and PASS/FAIL (non-zero
    /// exit on FAIL).
    #[arg(long)]
    check: bool,
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
    /// Heads of the benchmark shape.
    #[arg(long)]
    heads: Option<usize>,
    /// Measured samples per candidate.
    #[arg(long)]
    iters: Option<u32>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
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
        }
        None => println!("adapter:      unknown"),
    }
    println!("features:     {:?}", i.features);
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
        report::write_json(path, &r)?;
    }
    Ok(())
}

fn bench_cmd(a: &BenchArgs) -> Result<()> {
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
                    _ => KernelKind::Reference,
                };
                if !ks.contains(&kind) {
                    ks.push(kind);
                }
            }
            ks
        };
    }
    opts.dtype = a.dtype.dtype();
    opts.window = a.window;
    opts.warmup = a.warmup;
    opts.iters = a.iters.max(1);
    opts.progress = !a.quiet;
    if !a.variants.is_empty() {
        opts.variants = a.variants.clone();
    }
    opts.da = a.da;
    opts.half_width = a.half_width;
    let ctx = context()?;
    let r = bench::run_bench(&ctx, &opts)?;
    print!("{}", report::table(&r));
    if let Some(p) = &a.json {
        report::write_json(p, &r)?;
    }
    if let Some(p) = &a.csv {
        report::write_text(p, &report::csv(&r))?;
    }
    if let Some(p) = &a.plot {
        plot::plot_svg(&r, p)?;
    }
    Ok(())
}

fn run_cmd(a: &RunArgs) -> Result<()> {
    check_run_flags(a)?;
    match a.variant {
        Variant::Sdpa | Variant::Dot => run_sdpa(a),
        _ => run_variant(a),
    }
}

/// Rejects a flag the chosen variant does not use, in one line naming both.
fn check_run_flags(a: &RunArgs) -> Result<()> {
    let v = a.variant;
    let qkv_files = matches!(v, Variant::Sdpa | Variant::Dot);
    let npy = [&a.q, &a.k, &a.v, &a.mask, &a.bias].iter().any(|p| p.is_some());
    let names = a.q_name != "q" || a.k_name != "k" || a.v_name != "v" || a.mask_name.is_some() || a.bias_name.is_some();
    let attention = v.takes_attention_options();
    let rules = [
        ("--q/--k/--v/--mask/--bias", npy, qkv_files),
        ("--q-name/--k-name/--v-name/--mask-name/--bias-name", names, qkv_files),
        (
            "--half-width",
            a.half_width.is_some(),
            matches!(v, Variant::LocalM | Variant::LocalP),
        ),
        ("--seed", a.seed.is_some(), v == Variant::Hard),
        ("--indices", a.indices.is_some(), v == Variant::Hard),
        ("--eps", a.eps.is_some(), v == Variant::FfPool),
        (
            "--heads/--kv-heads",
            a.heads.is_some() || a.kv_heads.is_some(),
            v == Variant::Mha,
        ),
        ("--causal", a.causal != CausalArg::None, attention),
        ("--window", a.window.is_some(), attention && v != Variant::LocalM),
        ("--scale", a.scale.is_some(), attention && v != Variant::Location),
        ("--softcap", a.softcap.is_some(), attention),
        ("--kernel", a.kernel != RunKernelArg::Auto, v.has_kernel_choice()),
    ];
    match rules.iter().find(|(_, given, applies)| *given && !applies) {
        Some((flag, ..)) => bail!("{flag} does not apply to --variant {v}"),
        None => Ok(()),
    }
}

/// The options of §1 the flags set (tensor options come from the files).
fn attention_options(a: &RunArgs) -> AttentionOptions {
    let causal = a.causal.alignment();
    AttentionOptions {
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
        },
        ..Default::default()
    }
}

/// Prints one check line (errors and PASS/FAIL); true when it passed.
fn report_check(output: Option<&str>, c: &Comparison) -> bool {
    let what = output.map_or(String::new(), |o| format!(" {o}"));
    let verdict = if c.ok() { "PASS" } else { "FAIL" };
    println!("check{what} against the CPU reference: {c}: {verdict}");
    c.ok()
}

/// sdpa and dot (scale 1 unless given) on .npy files or named tensors of a .safetensors file.
fn run_sdpa(a: &RunArgs) -> Result<()> {
    let inputs = match &a.safetensors {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            let get = |name: &str| files::read_safetensors_bytes(path, &bytes, name);
            let optional = |name: &Option<String>, default: &str| -> Result<Option<files::HostTensor>> {
                match name {
                    Some(n) => Ok(Some(get(n)?)),
                    None => {
                        let st = files::safetensors_names(path, &bytes)?;
                        Ok(match st.iter().any(|n| n == default) {
                            true => Some(get(default)?),
                            false => None,
                        })
                    }
                }
            };
            files::RunInputs {
                q: get(&a.q_name)?,
                k: get(&a.k_name)?,
                v: get(&a.v_name)?,
                mask: optional(&a.mask_name, "mask")?,
                bias: optional(&a.bias_name, "bias")?,
            }
        }
        None => {
            let need = |p: &Option<PathBuf>, flag: &str| -> Result<PathBuf> {
                p.clone()
                    .ok_or_else(|| anyhow::anyhow!("missing --{flag} (or give --safetensors FILE)"))
            };
            let (q, k, v) = (need(&a.q, "q")?, need(&a.k, "k")?, need(&a.v, "v")?);
            files::RunInputs {
                q: files::read_npy(&q, "q")?,
                k: files::read_npy(&k, "k")?,
                v: files::read_npy(&v, "v")?,
                mask: a.mask.as_deref().map(|p| files::read_npy(p, "mask")).transpose()?,
                bias: a.bias.as_deref().map(|p| files::read_npy(p, "bias")).transpose()?,
            }
        }
    };
    let mut opts = attention_options(a);
    if a.variant == Variant::Dot {
        opts.scale = Some(a.scale.unwrap_or(1.0));
    }
    let ctx = context()?;
    let res = files::run_attention(&ctx, &inputs, &opts, a.check)?;
    println!(
        "O {:?} {} computed with the {:?} kernel",
        res.out.shape,
        res.out.dtype(),
        res.kernel
    );
    let passed = res.check.as_ref().is_none_or(|c| report_check(None, c));
    for (path, t) in [
        (&a.out, Some(&res.out)),
        (&a.lse, res.lse.as_ref()),
        (&a.weights, res.weights.as_ref()),
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

/// Any other variant on the named tensors of a .safetensors file.
fn run_variant(a: &RunArgs) -> Result<()> {
    let v = a.variant;
    let path = a
        .safetensors
        .as_deref()
        .with_context(|| format!("--variant {v} reads its tensors from --safetensors FILE"))?;
    let half_width = match a.half_width {
        Some(w) => u32::try_from(w).map_err(|_| anyhow!("--half-width must be at least 0, got {w}"))?,
        None if matches!(v, Variant::LocalM | Variant::LocalP) => bail!("--variant {v} needs --half-width N"),
        None => 0,
    };
    let defaults = VariantParams::default();
    let params = VariantParams {
        attention: attention_options(a),
        half_width,
        seed: a.seed.unwrap_or(defaults.seed),
        eps: a.eps.unwrap_or(defaults.eps),
    };
    let ctx = context()?;
    let mut inputs = variant::read_inputs(path, v).with_context(|| format!("--variant {v}"))?;
    if v == Variant::Mha {
        let heads = a.heads.context("--variant mha needs --heads N")?;
        let layer = MultiHeadAttention::from_safetensors(&ctx, path, heads, a.kv_heads.unwrap_or(heads))
            .with_context(|| format!("--variant {v}"))?;
        inputs = inputs.with_layer(&ctx, layer)?;
    }
    let res = variant::run_variant(&ctx, &inputs, &params, a.check)?;
    let names: Vec<&str> = res.outputs.iter().map(|(n, _)| *n).collect();
    let targets = [
        (&a.out, "out"),
        (&a.lse, "lse"),
        (&a.weights, "weights"),
        (&a.indices, "indices"),
    ];
    if let Some((_, name)) = targets.iter().find(|(p, n)| p.is_some() && !names.contains(n)) {
        bail!("--variant {v} has no {name} output (it returns {})", names.join(", "));
    }
    let shapes: Vec<String> = res
        .outputs
        .iter()
        .map(|(n, t)| format!("{n} {:?} {}", t.shape, t.dtype()))
        .collect();
    println!("{v}: {}", shapes.join(", "));
    let mut passed = true;
    for (name, c) in &res.checks {
        passed &= report_check(Some(name), c);
    }
    for (path, name) in targets {
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
        let c = r.entry.config;
        let speedup = r.entry.default_ms.map_or(String::new(), |d| {
            format!(" (default {d:.3} ms, {:.2}x)", d / r.entry.median_ms)
        });
        println!(
            "{:<18} wg{:<4} rows{:<2} {:.3} ms{speedup}; {} candidates, {} rejected",
            r.bucket,
            c.workgroup,
            c.rows,
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
