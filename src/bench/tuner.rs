//! The tile tuner: benchmarks candidate tiles on one shape per bucket (dtype, head dim, Lk, powers
//! of two) and stores the winners in the tuning cache that the library reads (`crate::tune`):
//! the fused kernel's tiles (`FlashConfig::CANDIDATES` × workgroup sizes) for prefill, the decode
//! kernel's workgroups × split counts for decoding (the design `Auto` runs there). A candidate
//! whose output is outside the reference tolerance is rejected, so a wrong tile can never win.

use std::path::Path;

use super::runner::make_inputs;
use crate::attention::{Attention, Problem, Tuning};
use crate::bench_record::{check_plan, gather, reference_subset};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, CoopmatConfig, DecodeConfig, FlashConfig, TiledConfig};
use crate::options::{Alignment, AttentionOptions, Design, KernelChoice};
use crate::reference::{self, Tolerance};
use crate::tensor::DType;
use crate::timer::{Stamps, Timer};
use crate::tune::{
    adapter_key, config_fits, length_bucket, BucketDesign, ShapeClass, TuneCache, TuneEntry, TunedConfig,
};

/// The kinds of call the tuner measures; each is its own [`ShapeClass`] in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TuneKind {
    /// Lq = Lk = L, Hq = Hkv, no mask.
    Prefill,
    /// Lq = Lk = L, Hq = Hkv, causal.
    PrefillCausal,
    /// One query row, Lk = L, four query heads per KV head (GQA decoding) on the decode kernel
    /// (what `KernelChoice::Auto` runs there): workgroup sizes × split counts.
    Decode,
}

impl TuneKind {
    /// Every kind.
    pub const ALL: [TuneKind; 3] = [TuneKind::Prefill, TuneKind::PrefillCausal, TuneKind::Decode];

    /// The benchmark shape of this kind at head dim `d`, length `l`, `heads` KV heads (B = 1).
    pub fn problem(self, d: usize, l: usize, heads: usize) -> Problem {
        let (hq, lq) = match self {
            TuneKind::Decode => (4 * heads, 1),
            _ => (heads, l),
        };
        Problem {
            b: 1,
            hq,
            hkv: heads,
            lq,
            lk: l,
            dk: d,
            dv: d,
        }
    }

    /// The designs this kind tunes on `ctx`: the decode kernel for decoding; for prefill every
    /// fused design the device can run (each is its own bucket, and the library runs the fastest).
    pub fn designs(self, ctx: &Context, dtype: DType) -> Vec<BucketDesign> {
        match self {
            TuneKind::Decode => vec![BucketDesign::Decode],
            _ => {
                let mut designs = vec![BucketDesign::Fused(Design::Register)];
                if kernels::flash_tiled::unsupported(ctx, false).is_none() {
                    designs.push(BucketDesign::Fused(Design::Tiled));
                }
                if kernels::flash_coopmat::device_unsupported(ctx, dtype).is_none() {
                    designs.push(BucketDesign::Fused(Design::Coopmat));
                }
                designs
            }
        }
    }

    /// The options of this kind.
    pub fn options(self) -> AttentionOptions {
        AttentionOptions {
            kernel: match self {
                TuneKind::Decode => KernelChoice::Decode,
                _ => KernelChoice::Fused,
            },
            causal: (self == TuneKind::PrefillCausal).then_some(Alignment::BottomRight),
            ..Default::default()
        }
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            TuneKind::Prefill => "prefill",
            TuneKind::PrefillCausal => "prefill-causal",
            TuneKind::Decode => "decode",
        }
    }
}

/// What to tune.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// Storage dtype.
    pub dtype: DType,
    /// Head dims to tune (each is its own bucket; use powers of two).
    pub head_dims: Vec<usize>,
    /// Key lengths to tune (each is its own bucket; use powers of two); Lq = Lk except decode.
    pub lengths: Vec<usize>,
    /// The kinds of call to tune (each is its own shape class).
    pub kinds: Vec<TuneKind>,
    /// Heads of the benchmark shape (B = 1).
    pub heads: usize,
    /// Workgroup sizes tried with every candidate tile.
    pub workgroups: Vec<u32>,
    /// Try only the first this many tiles of `FlashConfig::CANDIDATES` that fit.
    pub max_tiles: Option<usize>,
    /// Unmeasured warm-up samples per candidate.
    pub warmup: u32,
    /// Measured samples per candidate.
    pub iters: u32,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl TuneOptions {
    /// The default run: f32, D ∈ {64, 128}, L ∈ {256, 1024}, prefill, causal prefill and GQA
    /// decode, 4 KV heads, every tile × {32, 64, 128}.
    pub fn standard() -> Self {
        Self {
            dtype: DType::F32,
            head_dims: vec![64, 128],
            lengths: vec![256, 1024],
            kinds: TuneKind::ALL.to_vec(),
            heads: 4,
            workgroups: vec![32, 64, 128],
            max_tiles: None,
            warmup: 1,
            iters: 5,
            progress: false,
        }
    }

    /// The default run for `ctx`: [`TuneOptions::standard`] on GPUs; on a CPU adapter (lavapipe,
    /// a couple of minutes) 1 head, L ∈ {128, 512} and 3 samples per candidate.
    pub fn for_context(ctx: &Context) -> Self {
        let cpu = crate::kernels::is_cpu(ctx);
        match cpu {
            true => Self {
                lengths: vec![128, 512],
                heads: 1,
                iters: 3,
                ..Self::standard()
            },
            false => Self::standard(),
        }
    }

    /// A quick run (seconds): f32, D = 32, L = 128, prefill only, 2 heads, the first 3 tiles ×
    /// {32, 64}.
    pub fn quick() -> Self {
        Self {
            head_dims: vec![32],
            lengths: vec![128],
            kinds: vec![TuneKind::Prefill],
            heads: 2,
            workgroups: vec![32, 64],
            max_tiles: Some(3),
            warmup: 1,
            iters: 2,
            ..Self::standard()
        }
    }
}

/// The outcome of one bucket.
#[derive(Debug, Clone)]
pub struct BucketResult {
    /// Bucket key (`f32/d64/lk1024`).
    pub bucket: String,
    /// The winner.
    pub entry: TuneEntry,
    /// Candidates measured.
    pub tried: usize,
    /// Candidates rejected (failed to build or outside tolerance), with the reason.
    pub rejected: Vec<String>,
}

/// Every candidate fused tile for head dims `dk`, `dv` that fits the device.
pub fn candidates(ctx: &Context, dk: usize, dv: usize, opts: &TuneOptions) -> Vec<FlashConfig> {
    let mut out: Vec<FlashConfig> = FlashConfig::CANDIDATES
        .iter()
        .map(|&(workgroup, rows)| FlashConfig::new(workgroup, rows))
        .filter(|c| opts.workgroups.is_empty() || opts.workgroups.contains(&c.workgroup))
        .filter(|c| config_fits(ctx, c, dk, dv))
        .collect();
    if let Some(n) = opts.max_tiles {
        out.truncate(n);
    }
    out
}

/// Workgroup sizes the decode tuner tries (those the device allows).
pub const DECODE_WORKGROUPS: [u32; 5] = [8, 16, 32, 64, 128];
/// Split counts the decode tuner tries besides the automatic one (those with ≥ 16 keys a split).
pub const DECODE_SPLITS: [u32; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Every candidate decode tile for `problem`: the built-in default first, then workgroups ×
/// (automatic splits, explicit split counts).
pub fn decode_candidates(ctx: &Context, problem: &Problem, opts: &TuneOptions) -> Result<Vec<DecodeConfig>> {
    let default = crate::tune::built_in_decode_config(ctx, problem)?;
    let mut out = vec![default];
    // Workgroups of the row design, then the lanes design (one subgroup) when the device has it.
    let designs = DECODE_WORKGROUPS
        .into_iter()
        .map(|w| (w, false))
        .chain(DecodeConfig::lanes_for(ctx, problem)?.map(|c| (c.workgroup, true)));
    for (workgroup, lanes) in designs {
        for splits in std::iter::once(0).chain(DECODE_SPLITS.into_iter().filter(|&s| s as usize * 16 <= problem.lk)) {
            let c = DecodeConfig {
                workgroup,
                rows: 0,
                splits,
                lanes,
            };
            if !out.contains(&c) && c.check(ctx, problem.dk as u32, problem.dv as u32).is_ok() {
                out.push(c);
            }
        }
    }
    if let Some(n) = opts.max_tiles {
        out.truncate(n);
    }
    Ok(out)
}

/// Every candidate tile of the tiled design for head dims `dk`, `dv` that fits the device.
pub fn tiled_candidates(ctx: &Context, dk: usize, dv: usize, opts: &TuneOptions) -> Vec<TiledConfig> {
    let mut out = TiledConfig::candidates(ctx, dk as u32, dv as u32);
    if let Some(n) = opts.max_tiles {
        out.truncate(n);
    }
    out
}

/// The candidates of one bucket: tiles of a fused design, or decode tiles.
fn bucket_candidates(ctx: &Context, design: BucketDesign, p: &Problem, opts: &TuneOptions) -> Result<Vec<TunedConfig>> {
    Ok(match design {
        BucketDesign::Fused(Design::Tiled) => tiled_candidates(ctx, p.dk, p.dv, opts)
            .into_iter()
            .map(TunedConfig::Tiled)
            .collect(),
        BucketDesign::Fused(Design::Coopmat) => {
            let mut out = CoopmatConfig::candidates(ctx, p.dk as u32, p.dv as u32);
            if let Some(n) = opts.max_tiles {
                out.truncate(n);
            }
            out.into_iter().map(TunedConfig::Coopmat).collect()
        }
        BucketDesign::Fused(_) => candidates(ctx, p.dk, p.dv, opts)
            .into_iter()
            .map(TunedConfig::Register)
            .collect(),
        BucketDesign::Decode => decode_candidates(ctx, p, opts)?
            .into_iter()
            .map(TunedConfig::Decode)
            .collect(),
    })
}

/// The tile a design runs without a tuning cache.
fn built_in(ctx: &Context, design: BucketDesign, p: &Problem) -> Result<TunedConfig> {
    let (dk, dv) = (p.dk as u32, p.dv as u32);
    Ok(match design {
        BucketDesign::Fused(Design::Tiled) => TunedConfig::Tiled(TiledConfig::default_for(ctx, dk, dv)?),
        BucketDesign::Fused(Design::Coopmat) => TunedConfig::Coopmat(CoopmatConfig::default_for(ctx, dk, dv)?),
        BucketDesign::Fused(_) => TunedConfig::Register(FlashConfig::default_for(ctx, dk, dv)?),
        BucketDesign::Decode => TunedConfig::Decode(crate::tune::built_in_decode_config(ctx, p)?),
    })
}

/// A tile as it appears in progress, rejection messages and the `tune` report.
pub fn label(c: &TunedConfig) -> String {
    match c {
        TunedConfig::Register(c) => format!("register wg{} rows{}", c.workgroup, c.rows),
        TunedConfig::Tiled(c) => format!("tiled q{} k{} lanes{}", c.block_q, c.block_k, c.lanes),
        TunedConfig::Coopmat(c) => format!("coopmat q{} k{} wg{}", c.block_q, c.block_k, c.workgroup),
        TunedConfig::Decode(c) => {
            let design = if c.lanes { "lanes" } else { "rows" };
            match c.splits {
                0 => format!("{design} wg{} splits auto", c.workgroup),
                s => format!("{design} wg{} splits {s}", c.workgroup),
            }
        }
    }
}

/// Tunes every bucket of `opts` on `ctx`; returns the adapter key and one result per bucket.
pub fn run_tune(ctx: &Context, opts: &TuneOptions) -> Result<(String, Vec<BucketResult>)> {
    let info = ctx.info().adapter.as_ref().ok_or_else(|| {
        Error::Unsupported("tuning needs the adapter's name and driver (create the context from an adapter)".into())
    })?;
    let key = adapter_key(info);
    let timer = Timer::new(ctx)?;
    let tol = Tolerance::of(opts.dtype);
    let buckets: Vec<(TuneKind, BucketDesign, usize, usize)> = opts
        .kinds
        .iter()
        .flat_map(|&kind| {
            kind.designs(ctx, opts.dtype)
                .into_iter()
                .map(move |design| (kind, design))
        })
        .flat_map(|(kind, design)| {
            opts.head_dims
                .iter()
                .flat_map(move |&d| opts.lengths.iter().map(move |&l| (kind, design, d, l)))
        })
        .collect();
    let mut total = 0;
    for &(kind, design, d, l) in &buckets {
        total += bucket_candidates(ctx, design, &kind.problem(d, l, opts.heads), opts)?.len();
    }
    let bar = match opts.progress {
        true => indicatif::ProgressBar::new(total as u64),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut results = Vec::new();
    for (bi, &(kind, design, d, l)) in buckets.iter().enumerate() {
        let p = kind.problem(d, l, opts.heads);
        let inputs = make_inputs(ctx, &p, opts.dtype, 0x7u64 << 32 | bi as u64)?;
        let attn = kind.options();
        let plan = check_plan(&p, Alignment::TopLeft);
        let expected = reference_subset(&p, [&inputs.q, &inputs.k, &inputs.v], &attn, None, &plan);
        let default_cfg = built_in(ctx, design, &p)?;
        let mut best: Option<(f64, TunedConfig)> = None;
        let mut default_ms = None;
        let mut rejected = Vec::new();
        let cands = bucket_candidates(ctx, design, &p, opts)?;
        for cfg in &cands {
            bar.set_message(format!("{} D={d} L={l} {}", kind.name(), label(cfg)));
            let measured = (|| -> Result<f64> {
                let [q, k, v] = &inputs.tensors;
                let tuning = match *cfg {
                    TunedConfig::Register(c) => Tuning {
                        flash: Some(c),
                        ..Default::default()
                    },
                    TunedConfig::Tiled(c) => Tuning {
                        tiled: Some(c),
                        ..Default::default()
                    },
                    TunedConfig::Coopmat(c) => Tuning {
                        coopmat: Some(c),
                        ..Default::default()
                    },
                    TunedConfig::Decode(c) => Tuning {
                        decode: Some(c),
                        ..Default::default()
                    },
                };
                let call = Attention::with_tuning(ctx, q, k, v, &attn, &tuning)?;
                let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
                    Some((set, i)) => call.encode_timed(enc, set, i),
                    None => call.encode(enc),
                };
                let timing = timer.measure(opts.warmup, opts.iters, &mut record)?;
                let got = gather(&p, &call.output().out.to_f32_vec(ctx)?, &plan);
                let cmp = reference::compare(&got, &expected, tol);
                if !cmp.ok() {
                    return Err(Error::Unsupported(format!("outside tolerance: {cmp}")));
                }
                Ok(timing.median_s())
            })();
            bar.inc(1);
            match measured {
                Ok(t) => {
                    if *cfg == default_cfg {
                        default_ms = Some(t * 1e3);
                    }
                    if best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, *cfg));
                    }
                }
                Err(e) => rejected.push(format!("{}: {}", label(cfg), super::one_line(&e.to_string()))),
            }
        }
        let Some((t, config)) = best else {
            return Err(Error::Unsupported(format!(
                "no candidate tile ran for {} ({}) D={d}, L={l}: {}",
                kind.name(),
                design.name(),
                rejected.join("; ")
            )));
        };
        results.push(BucketResult {
            bucket: ShapeClass::of(&p, opts.dtype, &attn).key_in(design, length_bucket(l)),
            entry: TuneEntry {
                config,
                median_ms: t * 1e3,
                default_ms,
                problem: p,
                timer: timer.kind().label().into(),
            },
            tried: cands.len(),
            rejected,
        });
    }
    bar.finish_and_clear();
    Ok((key, results))
}

/// Merges `results` into the cache at `path` (creating it) and returns the updated cache.
pub fn store(path: &Path, adapter: &str, results: &[BucketResult]) -> Result<TuneCache> {
    // An unreadable old cache is replaced rather than blocking the new results.
    let mut cache = TuneCache::load_or_default(path).unwrap_or_default();
    for r in results {
        cache.insert(adapter, r.bucket.clone(), r.entry.clone());
    }
    cache.save(path)?;
    Ok(cache)
}
