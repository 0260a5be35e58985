//! The adapter's ceilings, measured with two calibration kernels: FMA throughput
//! (`shaders/peak_fma.wgsl`) and device-memory bandwidth (`shaders/peak_bandwidth.wgsl`).

use super::timer::{Stamps, Timer, TimerKind};
use super::AdapterReport;
use crate::context::Context;
use crate::error::Result;
use crate::kernels;
use crate::pipeline::{self, CompiledKernel, Kernel, Slot};
use crate::tensor::DType;
use std::sync::Arc;

const FMA_SLOTS: &[(u32, Slot)] = &[(0, Slot::ReadWrite)];
const BANDWIDTH_SLOTS: &[(u32, Slot)] = &[(0, Slot::Read), (1, Slot::ReadWrite)];
const FMA_WORKGROUP: u32 = 64;
const FMA_ITERS: u32 = 256;
/// FLOPs per invocation of the FMA kernel: ITERS steps × 8 accumulators × 4 lanes × 2.
const FMA_FLOPS_PER_INVOCATION: f64 = FMA_ITERS as f64 * 8.0 * 4.0 * 2.0;
const BANDWIDTH_WORKGROUP: u32 = 256;

/// The measured ceilings of one adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeakReport {
    /// The adapter measured.
    pub adapter: AdapterReport,
    /// `"gpu-timestamps"` or `"wall-clock"`.
    pub timer: TimerKind,
    /// f32 FMA throughput, GFLOP/s (an FMA counts as 2 FLOPs), from the fastest sample.
    pub fma_f32_gflops: f64,
    /// f16 FMA throughput, GFLOP/s, when `SHADER_F16` was granted.
    pub fma_f16_gflops: Option<f64>,
    /// Stream-copy bandwidth, GB/s (bytes read + bytes written), from the fastest sample.
    pub bandwidth_gbps: f64,
    /// Bytes of each of the two buffers of the bandwidth kernel.
    pub bandwidth_buffer_bytes: u64,
}

impl std::fmt::Display for PeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "adapter:        {}", self.adapter.summary())?;
        writeln!(f, "timer:          {}", self.timer)?;
        writeln!(f, "FMA f32:        {:.1} GFLOP/s", self.fma_f32_gflops)?;
        match self.fma_f16_gflops {
            Some(g) => writeln!(f, "FMA f16:        {g:.1} GFLOP/s")?,
            None => writeln!(f, "FMA f16:        n/a (SHADER_F16 not granted)")?,
        }
        write!(
            f,
            "bandwidth:      {:.1} GB/s (copy of {} MiB)",
            self.bandwidth_gbps,
            self.bandwidth_buffer_bytes >> 20
        )
    }
}

fn storage(ctx: &Context, label: &str, size: u64) -> Result<wgpu::Buffer> {
    ctx.check_buffer_size(label, size)?;
    ctx.scoped("peak buffer", || {
        Ok(ctx.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        }))
    })
}

/// Records one calibration dispatch in its own pass, with timestamps when asked.
fn record_dispatch(
    enc: &mut wgpu::CommandEncoder,
    stamps: Stamps,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    groups: (u32, u32),
) {
    let timestamp_writes = stamps.map(|(set, i)| wgpu::ComputePassTimestampWrites {
        query_set: set,
        beginning_of_pass_write_index: Some(i),
        end_of_pass_write_index: Some(i + 1),
    });
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("wgpu-attention peak"),
        timestamp_writes,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}

/// The cached calibration pipeline (no uniform; storage slots only).
fn calibration(
    ctx: &Context,
    kernel: Kernel,
    dtype: DType,
    slots: &'static [(u32, Slot)],
    constants: &[(&'static str, f64)],
) -> Result<Arc<CompiledKernel>> {
    pipeline::get(ctx, kernel, dtype, Default::default(), slots, constants)
}

fn bind(
    ctx: &Context,
    kernel: &CompiledKernel,
    slots: &[(u32, Slot)],
    buffers: &[&wgpu::Buffer],
) -> Result<wgpu::BindGroup> {
    ctx.scoped("peak bind group", || {
        let entries: Vec<wgpu::BindGroupEntry> = slots
            .iter()
            .zip(buffers)
            .map(|(&(binding, _), b)| wgpu::BindGroupEntry {
                binding,
                resource: b.as_entire_binding(),
            })
            .collect();
        Ok(ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("wgpu-attention peak"),
            layout: &kernel.layout,
            entries: &entries,
        }))
    })
}

/// FMA throughput in GFLOP/s for `dtype` (f32 or f16). The grid grows until one dispatch takes
/// at least two milliseconds, so that large GPUs are filled.
pub fn measure_fma(ctx: &Context, timer: &Timer, dtype: DType, iters: u32) -> Result<f64> {
    let constants = [("WORKGROUP", FMA_WORKGROUP as f64), ("ITERS", FMA_ITERS as f64)];
    let kernel = calibration(ctx, Kernel::PeakFma, dtype, FMA_SLOTS, &constants)?;
    let out = storage(ctx, "wgpu-attention peak fma out", 1 << 20)?;
    let bind_group = bind(ctx, &kernel, FMA_SLOTS, &[&out])?;
    let mut workgroups: u64 = 256;
    loop {
        let groups = kernels::grid(ctx, workgroups, "peak_fma")?;
        let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| {
            record_dispatch(enc, stamps, &kernel.pipeline, &bind_group, groups)
        };
        let probe = timer.sample(1, &mut record)?;
        if probe >= 2e-3 || workgroups >= 1 << 20 {
            let timing = timer.measure(1, iters, &mut record)?;
            let flops = (groups.0 as u64 * groups.1 as u64 * FMA_WORKGROUP as u64) as f64 * FMA_FLOPS_PER_INVOCATION;
            return Ok(flops / timing.min_s() / 1e9);
        }
        workgroups *= 4;
    }
}

/// Copy bandwidth in GB/s (bytes read + written) and the size of each buffer.
pub fn measure_bandwidth(ctx: &Context, timer: &Timer, iters: u32) -> Result<(f64, u64)> {
    let l = ctx.limits();
    let cpu = ctx
        .info()
        .adapter
        .as_ref()
        .is_some_and(|a| a.device_type == wgpu::DeviceType::Cpu);
    let want: u64 = if cpu { 64 << 20 } else { 256 << 20 };
    let granule = 16 * BANDWIDTH_WORKGROUP as u64;
    let bytes = want.min(l.max_storage_buffer_binding_size).min(l.max_buffer_size) / granule * granule;
    let kernel = calibration(
        ctx,
        Kernel::PeakBandwidth,
        DType::F32,
        BANDWIDTH_SLOTS,
        &[("WORKGROUP", BANDWIDTH_WORKGROUP as f64)],
    )?;
    let src = storage(ctx, "wgpu-attention peak src", bytes)?;
    let dst = storage(ctx, "wgpu-attention peak dst", bytes)?;
    let bind_group = bind(ctx, &kernel, BANDWIDTH_SLOTS, &[&src, &dst])?;
    let groups = kernels::grid(ctx, bytes / granule, "peak_bandwidth")?;
    let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| {
        record_dispatch(enc, stamps, &kernel.pipeline, &bind_group, groups)
    };
    let timing = timer.measure(1, iters, &mut record)?;
    Ok((2.0 * bytes as f64 / timing.min_s() / 1e9, bytes))
}

/// Measures every ceiling of the adapter (f16 only when granted).
pub fn measure_peak(ctx: &Context, iters: u32) -> Result<PeakReport> {
    let timer = Timer::new(ctx)?;
    let fma_f32_gflops = measure_fma(ctx, &timer, DType::F32, iters)?;
    let fma_f16_gflops = match ctx.features().contains(wgpu::Features::SHADER_F16) {
        true => Some(measure_fma(ctx, &timer, DType::F16, iters)?),
        false => None,
    };
    let (bandwidth_gbps, bandwidth_buffer_bytes) = measure_bandwidth(ctx, &timer, iters)?;
    Ok(PeakReport {
        adapter: AdapterReport::of(ctx),
        timer: timer.kind(),
        fma_f32_gflops,
        fma_f16_gflops,
        bandwidth_gbps,
        bandwidth_buffer_bytes,
    })
}
