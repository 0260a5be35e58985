//! GPU timing: timestamp queries around the recorded work when the device has `TIMESTAMP_QUERY`,
//! wall clock around submit + wait otherwise. Reports say which one was used.

use std::time::Instant;

use crate::context::Context;
use crate::error::{Error, Result};
pub use crate::report::{TimerKind, Timing};

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
    pub fn sample(&self, runs: u32, record: &mut dyn FnMut(&mut wgpu::CommandEncoder, Stamps)) -> Result<f64> {
        let runs = runs.clamp(1, MAX_RUNS_PER_SAMPLE);
        let ctx = &self.ctx;
        let mut enc = ctx.device().create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgpu-attention timed runs"),
        });
        let readback = match (&self.queries, &self.resolve) {
            (Some(q), Some(resolve)) => {
                for r in 0..runs {
                    record(&mut enc, Some((q, 2 * r)));
                }
                let bytes = 2 * runs as u64 * 8;
                let readback = ctx.scoped("timer readback setup", || {
                    Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some("wgpu-attention timer readback"),
                        size: bytes,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    }))
                })?;
                enc.resolve_query_set(q, 0..2 * runs, resolve, 0);
                enc.copy_buffer_to_buffer(resolve, 0, &readback, 0, bytes);
                Some(readback)
            }
            _ => {
                for _ in 0..runs {
                    record(&mut enc, None);
                }
                None
            }
        };
        let start = Instant::now();
        ctx.scoped("timed submission", || {
            ctx.queue().submit([enc.finish()]);
            Ok(())
        })?;
        ctx.wait()?;
        let wall = start.elapsed().as_secs_f64() / runs as f64;
        let Some(readback) = readback else {
            return Ok(wall);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.wait()?;
        rx.recv()
            .map_err(|_| Error::Unsupported("timestamp readback: map callback dropped".into()))??;
        let ticks: Vec<u64> = readback
            .slice(..)
            .get_mapped_range()?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        readback.unmap();
        let first = ticks[0];
        let last = ticks[ticks.len() - 1];
        if last <= first {
            return Err(Error::Unsupported(format!(
                "timestamp queries returned a non-increasing interval ({first} .. {last} ticks); rerun with wall clock"
            )));
        }
        let period_ns = ctx.queue().get_timestamp_period() as f64;
        Ok((last - first) as f64 * period_ns * 1e-9 / runs as f64)
    }

    /// Runs `warmup` unmeasured samples (at least one, which also estimates a run's length), then
    /// `iters` measured samples. Runs shorter than about a millisecond (ten for wall clock) are
    /// batched several to a submission.
    pub fn measure(
        &self,
        warmup: u32,
        iters: u32,
        record: &mut dyn FnMut(&mut wgpu::CommandEncoder, Stamps),
    ) -> Result<Timing> {
        let mut estimate = f64::INFINITY;
        for _ in 0..warmup.max(1) {
            estimate = estimate.min(self.sample(1, record)?);
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
            per_run_s.push(self.sample(runs, record)?);
        }
        Ok(Timing {
            per_run_s,
            runs_per_sample: runs,
        })
    }
}

/// Times a host closure with the wall clock: `iters` runs, no warm-up (for the CPU reference).
pub fn time_host(iters: u32, mut f: impl FnMut()) -> Timing {
    let per_run_s = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    Timing {
        per_run_s,
        runs_per_sample: 1,
    }
}
