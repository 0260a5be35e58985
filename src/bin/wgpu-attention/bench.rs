//! `bench`: attention kernels (any variant of the family) timed over shapes and checked against
//! the CPU reference; `--preset decode` and `--varlen` hand over to [`crate::bench_decode`] and
//! [`crate::bench_varlen`].

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use wgpu_attention::bench::variant::{self, VariantParams};
use wgpu_attention::bench::{self, plot, render, BenchOptions, KernelKind, Variant};
use wgpu_attention::bench_record::{CheckOptions, Verdict};
use wgpu_attention::{Design, Problem};

use crate::args::{parse_register_tile, parse_window, CausalArg, DTypeArg, DesignArg, KernelArg};
use crate::bench_decode::decode_bench_cmd;
use crate::bench_varlen::bench_varlen_cmd;
use crate::call::context_of;
use crate::verdict::verdict;

#[derive(Args)]
pub struct BenchArgs {
    /// Attention variants; repeatable (default: sdpa). See --help for the inputs of each shape.
    #[arg(long = "variant", value_name = "VARIANT", long_help = variant::bench_help())]
    pub variants: Vec<Variant>,
    /// Hidden size Da of additive, local-p and han-pool (default: Dk).
    #[arg(long, value_name = "N")]
    pub da: Option<usize>,
    /// Window half-width W of local-m and local-p.
    #[arg(long, value_name = "N", default_value_t = VariantParams::default().half_width)]
    pub half_width: u32,
    /// Problem shape B,Hq,Hkv,Lq,Lk,Dk,Dv (or B,H,L,D, or B,Hq,Hkv,L,D); repeatable.
    #[arg(long = "shape", value_name = "SHAPE", value_parser = bench::parse_shape)]
    pub shapes: Vec<Problem>,
    /// Named sweep: default, seq, headdim, decode (used when no --shape is given; default: default).
    /// `decode` runs the decode sweep: B ∈ {1, 8}, Hq=32, Hkv=8, D=128, Lq=1, Lk ∈ {1024, 4096,
    /// 16384, 32768}, contiguous and paged caches, split and unsplit, with the K/V read rate, its
    /// share of the copy bandwidth and the host time of one-shot and replayed calls.
    #[arg(long)]
    pub preset: Option<String>,
    /// Rows per page of the paged cache (--preset decode).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub page_size: usize,
    /// Batch sizes of --preset decode, comma-separated (default 1,8).
    #[arg(long, value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Keys per sequence of --preset decode, comma-separated (default 1024,4096,16384,32768).
    #[arg(long, value_delimiter = ',')]
    pub lengths: Vec<usize>,
    /// Kernels to run; repeatable (default: fused and staged).
    #[arg(long = "kernel", value_enum)]
    pub kernels: Vec<KernelArg>,
    /// Designs of the fused kernel, one fused row each; repeatable (default: auto; `all`: every
    /// design, those the adapter lacks noting the fallback that ran).
    #[arg(long = "design", value_enum)]
    pub designs: Vec<DesignArg>,
    /// Storage dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// Causal variants to run; repeatable (default: the preset's, else none).
    #[arg(long = "causal", value_enum)]
    pub causal: Vec<CausalArg>,
    /// Valid keys per batch, comma-separated (one per batch of every shape): uneven sequences.
    #[arg(long, value_delimiter = ',')]
    pub key_lengths: Vec<u32>,
    /// Prefill of packed variable-length sequences of these lengths (comma-separated, queries =
    /// keys) against the padded dense call on the same sequences; heads and head dim from the
    /// first --shape (B,Hq,Hkv,L,D: B and L ignored; default 8 heads of 64), --causal (each
    /// alignment given, per sequence), --dtype, --warmup, --iters.
    #[arg(long, value_delimiter = ',', value_name = "LENGTHS")]
    pub varlen: Vec<u32>,
    /// Run through `Context::from_device` on a device created here, as a downstream crate does,
    /// instead of the crate's own context.
    #[arg(long)]
    pub borrowed_device: bool,
    /// Sliding window LEFT,RIGHT (`-` = unbounded), aligned like the causal mask.
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    pub window: Option<(Option<u32>, Option<u32>)>,
    /// Also time the fused backward pass (dQ, dK, dV) of every sdpa shape: one `backward` row
    /// per shape and causal variant (FLOPs = 2.5 × forward), with the backward/forward time ratio.
    #[arg(long)]
    pub backward: bool,
    /// Unmeasured warm-up samples per row.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Measured samples per row.
    #[arg(long, default_value_t = 10)]
    pub iters: u32,
    /// Do not compare outputs with the CPU reference (the rows say so; the run cannot fail on
    /// wrong output). Without it, bench exits non-zero when any row is outside tolerance.
    #[arg(long)]
    pub no_check: bool,
    /// Multiply every tolerance by X (default 1: the stated tolerances; 0 demands exact results).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub tolerance_scale: f64,
    /// Time the code a first call runs: on CPU adapters the quick code while the fast code is not
    /// compiled (with --warmup 0 --iters 1 in a fresh process: the first call itself). Without
    /// it, bench measures the fast code.
    #[arg(long)]
    pub first_call: bool,
    /// A register-design tile WORKGROUP,ROWS to time; repeatable: one fused row per tile, side
    /// by side (where the register design runs).
    #[arg(long = "register-tile", value_name = "WG,ROWS", value_parser = parse_register_tile)]
    pub register_tiles: Vec<wgpu_attention::FlashConfig>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the rows as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Plot GFLOP/s against sequence length into an SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl BenchArgs {
    pub fn check_options(&self) -> Result<CheckOptions> {
        Ok(CheckOptions {
            enabled: !self.no_check,
            tolerance_scale: self.tolerance_scale,
        }
        .validated()?)
    }
}

pub fn bench_cmd(a: &BenchArgs) -> Result<()> {
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
    let ctx = context_of(a.borrowed_device)?;
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
