//! Attention benchmarks: time each (variant, kernel, dtype, shape, causal) on the GPU, count FLOPs
//! and bytes, and check the output against the f64 CPU reference (sdpa: on a subset of heads/rows
//! when the problem is too large for the naive reference; other variants: when it is small enough).

mod backward;
mod shapes;
mod variants;

pub use shapes::{parse_shape, preset, PRESETS};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::peak::measure_fma;
use super::variant::{Variant, VariantParams};
use crate::attention::{Attention, Problem, Tuning};
pub use crate::bench_record::{
    causal_label, BenchReport, CheckOptions, KernelKind, Row, FULL_CHECK_MACS, HEAD_CHECK_MACS,
};
use crate::bench_record::{check_plan, fill_metrics, gather, macs, reference_subset, sdpa_bytes, set_check, CheckPlan};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::FlashConfig;
use crate::options::{Alignment, AttentionOptions, Design, KernelChoice, Window};
use crate::prepared::Prepared;
use crate::reference::{self, HostInputs, Tolerance};
use crate::tensor::{DType, Tensor};
use crate::timer::{time_host, Stamps, Timer, TimerKind, Timing};

/// Multiply-adds up to which the CPU reference is timed as its own `reference` row.
pub const REFERENCE_MACS: u64 = 1 << 31;

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Problem shapes.
    pub shapes: Vec<Problem>,
    /// Implementations.
    pub kernels: Vec<KernelKind>,
    /// Storage dtype (f32 or f16).
    pub dtype: DType,
    /// Causal variants (`None` = not causal); each shape runs once per entry.
    pub causal: Vec<Option<Alignment>>,
    /// Sliding window (left, right), aligned like the causal mask (top-left when not causal).
    pub window: Option<(Option<u32>, Option<u32>)>,
    /// Valid keys per batch (`key_lengths`, one per batch of every sdpa shape); keys past a
    /// sequence's length are skipped like causal blocks, so uneven batches cost their real work.
    pub key_lengths: Option<Vec<u32>>,
    /// Unmeasured warm-up samples.
    pub warmup: u32,
    /// Measured samples.
    pub iters: u32,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Attention variants (default: sdpa only).
    pub variants: Vec<Variant>,
    /// Hidden size Da of additive, local-p and han-pool (`None` = Dk).
    pub da: Option<usize>,
    /// Window half-width of local-m and local-p.
    pub half_width: u32,
    /// Designs of the fused kernel, one fused row each (`None`: the library's choice).
    pub designs: Vec<Option<Design>>,
    /// Also time the fused backward pass of every sdpa shape (a `backward` row after the others;
    /// its note gives the backward/forward time ratio when a fused row ran).
    pub backward: bool,
    /// Whether rows are compared with the reference, and the tolerance scale.
    pub check: CheckOptions,
    /// Register-design tiles to time side by side, one fused row each where the register design
    /// runs (empty: the library's choice).
    pub register_tiles: Vec<FlashConfig>,
    /// Time the code a first call runs (the quick code of
    /// [`crate::pipeline::PipelineCache::set_quick_first_calls`] where the context allows it)
    /// instead of the fast code benchmarks otherwise measure.
    pub first_call: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let (shapes, causal) = preset("default").expect("the default preset exists");
        Self {
            shapes,
            kernels: vec![KernelKind::Fused, KernelKind::Staged],
            dtype: DType::F32,
            causal,
            window: None,
            key_lengths: None,
            warmup: 2,
            iters: 10,
            progress: false,
            variants: vec![Variant::Sdpa],
            da: None,
            half_width: VariantParams::default().half_width,
            designs: vec![None],
            backward: false,
            check: CheckOptions::default(),
            register_tiles: Vec::new(),
            first_call: false,
        }
    }
}

/// The context's first-call policy while a benchmark runs; restored when dropped.
struct QuickFirstCalls<'a> {
    ctx: &'a Context,
    before: bool,
}

impl<'a> QuickFirstCalls<'a> {
    fn set(ctx: &'a Context, on: bool) -> Self {
        let before = ctx.pipelines().quick_first_calls();
        ctx.pipelines().set_quick_first_calls(on);
        Self { ctx, before }
    }
}

impl Drop for QuickFirstCalls<'_> {
    fn drop(&mut self) {
        self.ctx.pipelines().set_quick_first_calls(self.before);
    }
}

/// Seeded inputs of one shape: host copies (rounded to the dtype) and GPU tensors.
pub(super) struct Inputs {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub tensors: [Tensor; 3],
}

pub(super) fn make_inputs(ctx: &Context, p: &Problem, dtype: DType, seed: u64) -> Result<Inputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut gen = |shape: [usize; 4]| -> Vec<f32> {
        let n: usize = shape.iter().product();
        let x = (0..n).map(|_| rng.gen_range(-1.0f32..1.0));
        match dtype {
            DType::F16 => x.map(|v| half::f16::from_f32(v).to_f32()).collect(),
            _ => x.collect(),
        }
    };
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (gen(qs), gen(ks), gen(vs));
    let upload = |data: &[f32], shape: &[usize]| -> Result<Tensor> {
        match dtype {
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                Tensor::from_slice(ctx, &h, shape)
            }
            _ => Tensor::from_slice(ctx, data, shape),
        }
    };
    let tensors = [upload(&q, &qs)?, upload(&k, &ks)?, upload(&v, &vs)?];
    Ok(Inputs { q, k, v, tensors })
}

/// The note of a multi-head attention row: which GEMM design ran its projections and, with phase
/// times, the share of the projections (input and output) against the attention step.
fn gemm_split(ctx: &Context, phases: Option<&[(String, f64)]>) -> String {
    let design = format!("GEMM design: {}", crate::gemm::GemmDesign::Auto.resolve(ctx));
    let Some(phases) = phases else {
        return design;
    };
    let total: f64 = phases.iter().map(|(_, ms)| ms).sum();
    let share = |what: &str| {
        let ms: f64 = phases.iter().filter(|(n, _)| n.contains(what)).map(|(_, ms)| ms).sum();
        (ms, 100.0 * ms / total.max(f64::MIN_POSITIVE))
    };
    let ((proj, proj_pct), (attn, attn_pct)) = (share("projection"), share("attention"));
    format!("{design}; projections {proj:.3} ms ({proj_pct:.0}%), attention {attn:.3} ms ({attn_pct:.0}%)")
}

/// The note of a `first_call` row whose kernel has quick code: the tile shown is the fast one.
const FIRST_CALL_NOTE: &str = "first call: quick code (1 row) unless this tile's fast code was compiled";

/// Appends `text` to the row's note (`; ` between parts).
fn add_note(row: &mut Row, text: &str) {
    let text = super::one_line(text);
    row.note = Some(match row.note.take() {
        Some(note) => format!("{note}; {text}"),
        None => text,
    });
}

fn empty_row(
    variant: Variant,
    kernel: KernelKind,
    p: &Problem,
    dtype: DType,
    causal: Option<Alignment>,
    opts: &BenchOptions,
) -> Row {
    Row {
        window: opts.window.map(|(l, r)| [l, r]),
        ..Row::unmeasured(variant.name(), kernel, dtype, *p, causal)
    }
}

/// The rows of a variant: the requested kernels; for a variant without a fused/staged choice, one
/// `gpu` row (when any GPU kernel is requested) and the reference row (when requested).
fn row_kinds(variant: Variant, kernels: &[KernelKind]) -> Vec<KernelKind> {
    if variant.has_kernel_choice() {
        return kernels.to_vec();
    }
    let gpu = kernels.iter().any(|&k| k != KernelKind::Reference);
    let reference = kernels.contains(&KernelKind::Reference);
    let kinds = [(gpu, KernelKind::Gpu), (reference, KernelKind::Reference)];
    kinds.into_iter().filter(|k| k.0).map(|k| k.1).collect()
}

/// The causal variants a variant runs: all of them where the options of §1 apply, else none.
fn variant_causals(variant: Variant, causals: &[Option<Alignment>]) -> Vec<Option<Alignment>> {
    match variant.takes_attention_options() {
        true => causals.to_vec(),
        false => vec![None],
    }
}

/// Benchmarks every (variant, shape, causal, kernel) of `opts` on `ctx`. A row that cannot run (a
/// limit, a missing feature, an invalid combination) is reported with a note instead of aborting
/// the run.
pub fn run_bench(ctx: &Context, opts: &BenchOptions) -> Result<BenchReport> {
    let dtype = opts.dtype;
    if !matches!(dtype, DType::F32 | DType::F16) {
        return Err(Error::DType {
            name: "bench",
            got: dtype,
            expected: "f32 or f16",
        });
    }
    if dtype == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 benchmarks",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    // The fast code unless first calls are what is measured; the caller's policy comes back after.
    let _policy = QuickFirstCalls::set(ctx, opts.first_call && ctx.pipelines().quick_first_calls());
    let timer = Timer::new(ctx)?;
    let gpu_kernels = opts.kernels.iter().any(|&k| k != KernelKind::Reference);
    let peak = match gpu_kernels {
        true => Some(measure_fma(ctx, &timer, dtype, 3)?.gflops),
        false => None,
    };
    let causals: Vec<Option<Alignment>> = match opts.causal.is_empty() {
        true => vec![None],
        false => opts.causal.clone(),
    };
    let per_shape: usize = opts
        .variants
        .iter()
        .map(|&v| {
            let backward = (opts.backward && v == Variant::Sdpa) as usize;
            variant_causals(v, &causals).len() * (row_kinds(v, &opts.kernels).len() + backward)
        })
        .sum();
    let total = opts.shapes.len() * per_shape;
    let bar = match opts.progress {
        true => indicatif::ProgressBar::new(total as u64),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let check = opts.check.validated()?;
    let tol = check.scale(Tolerance::of(dtype));
    let mut bench = Bench {
        ctx,
        opts,
        timer,
        peak,
        tol,
        causals,
        bar,
        rows: Vec::with_capacity(total),
    };
    for &v in &opts.variants {
        for (si, p) in opts.shapes.iter().enumerate() {
            let seed = 0x5eed_0000 + si as u64;
            match v {
                Variant::Sdpa => bench.sdpa_shape(p, seed),
                _ => bench.variant_shape(v, p, seed),
            }
        }
    }
    bench.bar.finish_and_clear();
    Ok(BenchReport {
        adapter: super::AdapterReport::of(ctx),
        timer: bench.timer.kind().label().into(),
        peak_gflops: peak,
        dtype: dtype.name().into(),
        warmup: opts.warmup,
        iters: opts.iters,
        rows: bench.rows,
    })
}

/// What every row of a run shares, and the rows so far.
struct Bench<'a> {
    ctx: &'a Context,
    opts: &'a BenchOptions,
    timer: Timer,
    peak: Option<f64>,
    tol: Tolerance,
    causals: Vec<Option<Alignment>>,
    bar: indicatif::ProgressBar,
    rows: Vec<Row>,
}

impl Bench<'_> {
    fn push(&mut self, row: Row) {
        self.rows.push(row);
        self.bar.inc(1);
    }

    /// The causal mask and the window of the run, aligned like the causal mask.
    fn attention_options(&self, causal: Option<Alignment>) -> AttentionOptions {
        AttentionOptions {
            causal,
            window: self.opts.window.map(|(left, right)| Window {
                left,
                right,
                alignment: causal.unwrap_or(Alignment::TopLeft),
            }),
            ..Default::default()
        }
    }

    /// Times a prepared call (GPU timestamps when available).
    fn time<O>(&self, call: &Prepared<O>) -> Result<Timing> {
        let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
            Some((set, i)) => call.encode_timed(enc, set, i),
            None => call.encode(enc),
        };
        self.timer.measure(self.opts.warmup, self.opts.iters, &mut record)
    }

    /// Median ms of each phase of a multi-phase call, each phase timed alone after full runs.
    /// `None` for a single phase, and with the wall clock (a phase cannot be recorded alone
    /// without timestamps).
    fn time_phases<O>(&self, call: &Prepared<O>) -> Result<Option<Vec<(String, f64)>>> {
        let phases = call.phases();
        if phases.len() < 2 || self.timer.kind() != TimerKind::GpuTimestamps {
            return Ok(None);
        }
        let mut times = Vec::with_capacity(phases.len());
        for (i, name) in phases.into_iter().enumerate() {
            let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| {
                // A timestamp timer always passes stamps.
                if let Some((set, first)) = stamps {
                    call.encode_phase_timed(enc, i, set, first);
                }
            };
            let timing = self.timer.measure(self.opts.warmup, self.opts.iters, &mut record)?;
            times.push((name.to_string(), timing.median_s() * 1e3));
        }
        Ok(Some(times))
    }

    /// The rows of scaled dot-product attention for one shape (checked on a subset of heads and
    /// rows when the shape is large).
    fn sdpa_shape(&mut self, p: &Problem, seed: u64) {
        let (ctx, opts) = (self.ctx, self.opts);
        let dtype = opts.dtype;
        let inputs = make_inputs(ctx, p, dtype, seed);
        let lengths = match &opts.key_lengths {
            Some(l) if l.len() != p.b => Err(format!(
                "--key-lengths has {} values, the shape has B = {}",
                l.len(),
                p.b
            )),
            Some(l) => Tensor::from_slice(ctx, l, &[p.b]).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        };
        for causal in self.causals.clone() {
            let align = causal.unwrap_or(Alignment::TopLeft);
            let attn_opts = AttentionOptions {
                key_lengths: lengths.clone().unwrap_or(None),
                ..self.attention_options(causal)
            };
            let plan = check_plan(p, align);
            let mut expected: Option<Vec<f64>> = None;
            // The fused kernel once per requested design, and per register tile where asked.
            let runs = opts.kernels.iter().flat_map(|&kernel| match kernel {
                KernelKind::Fused => opts
                    .designs
                    .iter()
                    .flat_map(|&d| {
                        let tiles: Vec<Option<FlashConfig>> = match d {
                            None | Some(Design::Register) if !opts.register_tiles.is_empty() => {
                                opts.register_tiles.iter().copied().map(Some).collect()
                            }
                            _ => vec![None],
                        };
                        tiles.into_iter().map(move |t| (kernel, d, t))
                    })
                    .collect(),
                _ => vec![(kernel, None, None)],
            });
            for (kernel, design, tile) in runs {
                self.bar
                    .set_message(format!("{} {} causal={}", kernel.name(), p, causal_label(causal)));
                let mut row = empty_row(Variant::Sdpa, kernel, p, dtype, causal, opts);
                let inputs = match (&inputs, &lengths) {
                    (Ok(i), Ok(_)) => i,
                    (Err(e), _) => {
                        row.note = Some(super::one_line(&format!("inputs: {e}")));
                        self.push(row);
                        continue;
                    }
                    (_, Err(e)) => {
                        row.note = Some(e.clone());
                        self.push(row);
                        continue;
                    }
                };
                if kernel == KernelKind::Reference {
                    row.timer = "wall-clock".into();
                    if macs(p) <= REFERENCE_MACS {
                        let host = HostInputs {
                            key_lengths: opts.key_lengths.as_deref(),
                            ..HostInputs::new(*p, &inputs.q, &inputs.k, &inputs.v)
                        };
                        let timing = time_host(opts.iters.min(3), || {
                            std::hint::black_box(reference::sdpa(&host, &attn_opts));
                        });
                        fill_metrics(&mut row, p.flops(causal.is_some()), 0, &timing, None);
                        row.gbps = None;
                        row.note = Some("CPU f64 reference, wall clock".into());
                    } else {
                        row.note = Some(format!(
                            "skipped: {} multiply-adds exceed the reference limit of {REFERENCE_MACS}",
                            macs(p)
                        ));
                    }
                } else {
                    let exp = opts.check.enabled.then(|| {
                        expected.get_or_insert_with(|| {
                            reference_subset(
                                p,
                                [&inputs.q, &inputs.k, &inputs.v],
                                &attn_opts,
                                opts.key_lengths.as_deref(),
                                &plan,
                            )
                        })
                    });
                    let attn_opts = AttentionOptions {
                        design,
                        ..attn_opts.clone()
                    };
                    let tuning = Tuning {
                        flash: tile,
                        ..Default::default()
                    };
                    let expected = exp.map(|e| (&plan, e.as_slice()));
                    if let Err(e) = self.sdpa_row(&mut row, p, inputs, &attn_opts, &tuning, expected) {
                        row.note = Some(super::one_line(&e.to_string()));
                    }
                }
                self.push(row);
            }
            if opts.backward {
                // The fused backward, and the staged one when staged rows run (side by side).
                let mut kinds = vec![KernelKind::Backward];
                if opts.kernels.contains(&KernelKind::Staged) {
                    kinds.push(KernelKind::BackwardStaged);
                }
                for kind in kinds {
                    let mut row = empty_row(Variant::Sdpa, kind, p, dtype, causal, opts);
                    self.bar
                        .set_message(format!("{} {} causal={}", kind.name(), p, causal_label(causal)));
                    match &inputs {
                        Ok(inputs) => {
                            if let Err(e) = self.backward_row(&mut row, p, inputs, &attn_opts) {
                                add_note(&mut row, &e.to_string());
                            }
                        }
                        Err(e) => row.note = Some(super::one_line(&format!("inputs: {e}"))),
                    }
                    let same =
                        |r: &&Row, k: KernelKind| r.kernel == k && r.shape == *p && r.causal == causal_label(causal);
                    let forward_kind = match kind {
                        KernelKind::BackwardStaged => KernelKind::Staged,
                        _ => KernelKind::Fused,
                    };
                    let forward = self.rows.iter().rev().find(|r| same(r, forward_kind));
                    if let (Some(f), Some(b)) = (forward.and_then(|r| r.median_ms), row.median_ms) {
                        add_note(&mut row, &format!("backward/forward time {:.2}", b / f));
                    }
                    if kind == KernelKind::BackwardStaged {
                        let fused = self.rows.iter().rev().find(|r| same(r, KernelKind::Backward));
                        if let (Some(f), Some(b)) = (fused.and_then(|r| r.median_ms), row.median_ms) {
                            add_note(&mut row, &format!("fused backward {:.2}x faster", b / f));
                        }
                    }
                    self.push(row);
                }
            }
        }
    }

    fn sdpa_row(
        &self,
        row: &mut Row,
        p: &Problem,
        inputs: &Inputs,
        attn_opts: &AttentionOptions,
        tuning: &Tuning,
        expected: Option<(&CheckPlan, &[f64])>,
    ) -> Result<()> {
        let ctx = self.ctx;
        let choice = match row.kernel {
            KernelKind::Staged => KernelChoice::Staged,
            KernelKind::Decode => KernelChoice::Decode,
            _ => KernelChoice::Fused,
        };
        let dtype = inputs.tensors[0].dtype();
        let opts = AttentionOptions {
            kernel: choice,
            ..attn_opts.clone()
        };
        if choice == KernelChoice::Fused {
            let pick = crate::attention::design::pick(ctx, p, dtype, &opts, &Default::default(), tuning)?;
            row.design = Some(pick.kernel.design().name().into());
            row.tile = Some(pick.kernel.to_string());
            row.note = pick.note;
            if self.opts.first_call && pick.kernel.design() == Design::Register {
                add_note(row, FIRST_CALL_NOTE);
            }
        }
        let [q, k, v] = &inputs.tensors;
        let call = Attention::with_tuning(ctx, q, k, v, &opts, tuning)?;
        if let Some(splits) = call.decode_splits() {
            // The tile (tuned or built-in) and the splits the plan settled on.
            let c = crate::tune::decode_config(ctx, p, dtype, attn_opts)?;
            row.tile = Some(format!("wg{} rows{} splits{splits}", c.workgroup, c.rows_for(p)));
        }
        let call = call.into_prepared("attention");
        row.timer = self.timer.kind().label().into();
        row.alloc_bytes = Some(call.allocated_bytes());
        let timing = self.time(&call)?;
        fill_metrics(row, call.flops(), sdpa_bytes(p, dtype), &timing, self.peak);
        let Some((plan, expected)) = expected else {
            row.checked = CheckOptions::SKIPPED.into();
            return Ok(());
        };
        let out = call.output().out.to_f32_vec(ctx)?;
        let got = gather(p, &out, plan);
        set_check(row, [&reference::compare(&got, expected, self.tol)], plan, self.tol);
        Ok(())
    }
}
