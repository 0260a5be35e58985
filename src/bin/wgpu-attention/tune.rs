//! `tune`: the fused kernel's tiles and the decode kernel's designs and splits measured on this
//! adapter and stored in the tuning cache.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use wgpu_attention::bench::{self, tuner};

use crate::args::DTypeArg;
use crate::call::context;

#[derive(Args)]
pub struct TuneArgs {
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

pub fn tune_cmd(a: &TuneArgs) -> Result<()> {
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
