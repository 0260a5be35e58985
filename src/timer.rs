//! GPU timing: timestamp queries around the recorded work when the device has `TIMESTAMP_QUERY`,
//! wall clock around submit + wait otherwise; reports say which one was used. Async at its core
//! (a browser cannot block: the benchmark page uses [`Timer::measure_async`]); the blocking
//! [`Timer::measure`] of the command line is the same code on `pollster`.
//!
//! ```no_run
//! # fn main() -> wgpu_attention::Result<()> {
//! use wgpu_attention::timer::Timer;
//! use wgpu_attention::{Attention, AttentionOptions, Context, Tensor};
//! let ctx = Context::new()?;
//! let q = Tensor::from_slice(&ctx, &vec![0.5f32; 8 * 64 * 32], &[1, 8, 64, 32])?;
//! let call = Attention::new(&ctx, &q, &q, &q, &AttentionOptions::default())?;
//! let timer = Timer::new(&ctx)?; // timestamps where the device granted TIMESTAMP_QUERY
//! let timing = timer.measure(2, 10, &mut |enc, stamps| match stamps {
//!     Some((set, first)) => call.encode_timed(enc, set, first),
//!     None => call.encode(enc),
//! })?;
//! println!("{} ms ({})", timing.median_s() * 1e3, timer.kind());
//! # Ok(()) }
//! ```

use crate::context::Context;
use crate::error::{Error, Result};

/// How times were measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// Timestamp queries written at the start of the first and the end of the last compute pass.
    GpuTimestamps,
    /// Host wall clock around `queue.submit` and waiting for the device (includes submission overhead).
    WallClock,
}

impl TimerKind {
    /// `"gpu-timestamps"` or `"wall-clock"`, as used in every report.
    pub fn label(self) -> &'static str {
        match self {
            TimerKind::GpuTimestamps => "gpu-timestamps",
            TimerKind::WallClock => "wall-clock",
        }
    }
}

impl std::fmt::Display for TimerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for TimerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// Per-run times of one measurement, warm-up excluded.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Seconds per run, one value per sample (a sample averages `runs_per_sample` back-to-back runs).
    pub per_run_s: Vec<f64>,
    /// Runs recorded into each measured submission.
    pub runs_per_sample: u32,
}

impl Timing {
    /// Median seconds per run.
    pub fn median_s(&self) -> f64 {
        let mut v = self.per_run_s.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if !n.is_multiple_of(2) => v[n / 2],
            n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
        }
    }
    /// Fastest seconds per run.
    pub fn min_s(&self) -> f64 {
        self.per_run_s.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Most runs recorded into one measured submission (two timestamps each).
pub const MAX_RUNS_PER_SAMPLE: u32 = 64;

/// Where a recorded run writes its timestamps: `(query set, first index)`; the run writes `first`
/// at the start of its first pass and `first + 1` at the end of its last.
pub type Stamps<'a> = Option<(&'a wgpu::QuerySet, u32)>;

/// Measures recorded GPU work.
#[derive(Debug)]
pub struct Timer {
    ctx: Context,
    queries: Option<wgpu::QuerySet>,
    resolve: Option<wgpu::Buffer>,
}

impl Timer {
    /// A timer using timestamp queries when the device granted `TIMESTAMP_QUERY`.
    pub fn new(ctx: &Context) -> Result<Self> {
        Self::with_kind(ctx, false)
    }

    /// Like [`Timer::new`]; `force_wall_clock` ignores timestamp support.
    pub fn with_kind(ctx: &Context, force_wall_clock: bool) -> Result<Self> {
        if force_wall_clock || !ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Ok(Self {
                ctx: ctx.clone(),
                queries: None,
                resolve: None,
            });
        }
        let count = 2 * MAX_RUNS_PER_SAMPLE;
        let (queries, resolve) = ctx.scoped("timer setup", || {
            let queries = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("wgpu-attention timer"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let resolve = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("wgpu-attention timer resolve"),
                size: count as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            Ok((queries, resolve))
        })?;
        Ok(Self {
            ctx: ctx.clone(),
            queries: Some(queries),
            resolve: Some(resolve),
        })
    }

    /// Which clock this timer reads.
    pub fn kind(&self) -> TimerKind {
        match self.queries {
            Some(_) => TimerKind::GpuTimestamps,
            None => TimerKind::WallClock,
        }
    }

    /// Records `runs` back-to-back runs of `record` into one encoder, submits and waits. Returns
    /// seconds per run: (end of the last run − start of the first) / runs.
    pub async fn sample_async(
        &self,
        runs: u32,
        record: &mut dyn FnMut(&mut wgpu::CommandEncoder, Stamps),
    ) -> Result<f64> {
        let runs = runs.clamp(1, MAX_RUNS_PER_SAMPLE);
        let ctx = &self.ctx;
        let mut enc = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-attention timed runs"),
        });
        for r in 0..runs {
            record(&mut enc, self.queries.as_ref().map(|q| (q, 2 * r)));
        }
        if let (Some(q), Some(resolve)) = (&self.queries, &self.resolve) {
            enc.resolve_query_set(q, 0..2 * runs, resolve, 0);
        }
        let start = now_s();
        ctx.scoped("timed submission", || {
            ctx.queue().submit([enc.finish()]);
            Ok(())
        })?;
        ctx.wait_async().await?;
        let wall = (now_s() - start) / runs as f64;
        let Some(resolve) = &self.resolve else {
            return Ok(wall);
        };
        let bytes = ctx.read_buffer_async(resolve, 0, 2 * runs as u64 * 8).await?;
        let tick = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap_or([0; 8]));
        let (first, last) = (tick(0), tick(2 * runs as usize - 1));
        if last <= first {
            return Err(Error::Unsupported(format!(
                "timestamp queries returned a non-increasing interval ({first} .. {last} ticks); rerun with wall clock"
            )));
        }
        let period_ns = ctx.queue().get_timestamp_period() as f64;
        Ok((last - first) as f64 * period_ns * 1e-9 / runs as f64)
    }

    /// [`Timer::sample_async`], blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn sample(&self, runs: u32, record: &mut dyn FnMut(&mut wgpu::CommandEncoder, Stamps)) -> Result<f64> {
        pollster::block_on(self.sample_async(runs, record))
    }

    /// Runs `warmup` unmeasured samples (at least one, which also estimates a run's length), then
    /// `iters` measured samples. Runs shorter than about a millisecond (ten for wall clock) are
    /// batched several to a submission.
    pub async fn measure_async(
        &self,
        warmup: u32,
        iters: u32,
        record: &mut dyn FnMut(&mut wgpu::CommandEncoder, Stamps),
    ) -> Result<Timing> {
        let mut estimate = f64::INFINITY;
        for _ in 0..warmup.max(1) {
            estimate = estimate.min(self.sample_async(1, record).await?);
        }
        let target = match self.kind() {
            TimerKind::GpuTimestamps => 1e-3,
            TimerKind::WallClock => 10e-3,
        };
        let runs = if estimate > 0.0 && estimate.is_finite() {
            ((target / estimate).ceil() as u32).clamp(1, MAX_RUNS_PER_SAMPLE)
        } else {
            1
        };
        let mut per_run_s = Vec::with_capacity(iters.max(1) as usize);
        for _ in 0..iters.max(1) {
            per_run_s.push(self.sample_async(runs, record).await?);
        }
        Ok(Timing {
            per_run_s,
            runs_per_sample: runs,
        })
    }

    /// [`Timer::measure_async`], blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn measure(
        &self,
        warmup: u32,
        iters: u32,
        record: &mut dyn FnMut(&mut wgpu::CommandEncoder, Stamps),
    ) -> Result<Timing> {
        pollster::block_on(self.measure_async(warmup, iters, record))
    }
}

/// Times a host closure with the wall clock: `iters` runs, no warm-up (for the CPU reference).
pub fn time_host(iters: u32, mut f: impl FnMut()) -> Timing {
    let per_run_s = (0..iters.max(1))
        .map(|_| {
            let t = now_s();
            f();
            now_s() - t
        })
        .collect();
    Timing {
        per_run_s,
        runs_per_sample: 1,
    }
}

/// Seconds on a monotonic clock (from an arbitrary start).
#[cfg(not(target_arch = "wasm32"))]
fn now_s() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// Seconds on a monotonic clock: `performance.now()` in a browser (page or worker), else the
/// coarser `Date.now()`.
#[cfg(target_arch = "wasm32")]
fn now_s() -> f64 {
    use wasm_bindgen::JsCast;
    let performance = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
    let ms = performance
        .and_then(|perf| {
            let now = js_sys::Reflect::get(&perf, &"now".into()).ok()?;
            now.dyn_into::<js_sys::Function>().ok()?.call0(&perf).ok()?.as_f64()
        })
        .unwrap_or_else(js_sys::Date::now);
    ms * 1e-3
}
