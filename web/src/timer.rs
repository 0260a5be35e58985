//! The page's clock: WebGPU timestamp queries around the recorded runs where the device has
//! `timestamp-query`, else the time from submission to completion. The same policy as the
//! command line's timer (a warm-up sample estimates a run; runs are batched up to about 1 ms per
//! sample with timestamps, 10 ms with the wall clock; at most 64 per sample), but asynchronous:
//! a browser cannot block.

use wgpu_attention::report::{TimerKind, Timing};
use wgpu_attention::{wgpu, Context, Error, Prepared, Result};

/// Most runs recorded into one measured submission (two timestamps each).
const MAX_RUNS_PER_SAMPLE: u32 = 64;

pub struct Timer {
    ctx: Context,
    /// Query set and its resolve buffer, with timestamps.
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
}

impl Timer {
    pub fn new(ctx: &Context) -> Result<Self> {
        let queries = ctx.features().contains(wgpu::Features::TIMESTAMP_QUERY).then(|| {
            let count = 2 * MAX_RUNS_PER_SAMPLE;
            let set = ctx.device().create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("page timer"),
                ty: wgpu::QueryType::Timestamp,
                count,
            });
            let resolve = ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("page timer resolve"),
                size: count as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve)
        });
        Ok(Self {
            ctx: ctx.clone(),
            queries,
        })
    }

    pub fn kind(&self) -> TimerKind {
        match self.queries {
            Some(_) => TimerKind::GpuTimestamps,
            None => TimerKind::WallClock,
        }
    }

    /// Records `runs` back-to-back runs of `call` in one submission; seconds per run.
    async fn sample<O>(&self, runs: u32, call: &Prepared<O>) -> Result<f64> {
        let ctx = &self.ctx;
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        for r in 0..runs {
            match &self.queries {
                Some((set, _)) => call.encode_timed(&mut enc, set, 2 * r),
                None => call.encode(&mut enc),
            }
        }
        if let Some((set, resolve)) = &self.queries {
            enc.resolve_query_set(set, 0..2 * runs, resolve, 0);
        }
        let start = now_s();
        ctx.queue().submit([enc.finish()]);
        ctx.wait_async().await?;
        let wall = (now_s() - start) / runs as f64;
        let Some((_, resolve)) = &self.queries else {
            return Ok(wall);
        };
        let bytes = ctx.read_buffer_async(resolve, 0, 16 * runs as u64).await?;
        let tick = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        let (first, last) = (tick(0), tick(2 * runs as usize - 1));
        if last <= first {
            return Err(Error::Unsupported(format!(
                "timestamp queries returned a non-increasing interval ({first} .. {last} ticks)"
            )));
        }
        let period_ns = ctx.queue().get_timestamp_period() as f64;
        Ok((last - first) as f64 * period_ns * 1e-9 / runs as f64)
    }

    /// `warmup` unmeasured samples (at least one), then `iters` measured ones.
    pub async fn measure<O>(&self, warmup: u32, iters: u32, call: &Prepared<O>) -> Result<Timing> {
        let mut estimate = f64::INFINITY;
        for _ in 0..warmup.max(1) {
            estimate = estimate.min(self.sample(1, call).await?);
        }
        let target = match self.kind() {
            TimerKind::GpuTimestamps => 1e-3,
            TimerKind::WallClock => 10e-3,
        };
        let runs = match estimate > 0.0 && estimate.is_finite() {
            true => ((target / estimate).ceil() as u32).clamp(1, MAX_RUNS_PER_SAMPLE),
            false => 1,
        };
        let mut per_run_s = Vec::with_capacity(iters.max(1) as usize);
        for _ in 0..iters.max(1) {
            per_run_s.push(self.sample(runs, call).await?);
        }
        Ok(Timing {
            per_run_s,
            runs_per_sample: runs,
        })
    }
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

#[cfg(not(target_arch = "wasm32"))]
fn now_s() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}
