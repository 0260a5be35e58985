//! The adapter's ceilings, measured with two calibration kernels: FMA throughput
//! (`shaders/peak_fma.wgsl`) and device-memory bandwidth (`shaders/peak_bandwidth.wgsl`).

use super::AdapterReport;
use crate::context::Context;
use crate::error::Result;
use crate::kernels;
use crate::pipeline::{self, CompiledKernel, Kernel};
use crate::tensor::DType;
use crate::timer::{Stamps, Timer, TimerKind};
use std::sync::Arc;

const FMA_ITERS: u32 = 256;
/// The calibration shapes tried: independent vec4 chains per invocation × workgroup sizes. Few
/// chains in big workgroups suit GPUs; a CPU driver runs each invocation as a SIMD lane and
/// needs many FMAs per loop step (16 chains = eight vec8 chains) to hide its loop overhead.
const FMA_CHAINS: [u32; 4] = [2, 4, 8, 16];
const FMA_WORKGROUPS: [u32; 3] = [8, 64, 256];
const BANDWIDTH_WORKGROUP: u32 = 256;

/// One calibration shape of the FMA kernel and its measured throughput.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FmaVariant {
    /// Independent vec4 accumulator chains per invocation (16 = eight vec8 chains).
    pub chains: u32,
    /// Invocations per workgroup.
    pub workgroup: u32,
    /// Throughput, GFLOP/s, from the fastest sample.
    pub gflops: f64,
}

impl FmaVariant {
    /// FLOPs of one invocation: ITERS steps × chains × 4 lanes × 2 (an FMA counts as 2).
    fn flops_per_invocation(chains: u32) -> f64 {
        FMA_ITERS as f64 * chains as f64 * 4.0 * 2.0
    }
}

/// The FMA ceiling: the fastest of the calibration shapes tried, and each of them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FmaPeak {
    /// The fastest shape's throughput, GFLOP/s.
    pub gflops: f64,
    /// The fastest shape.
    pub best: FmaVariant,
    /// Every shape tried, in the order tried.
    pub variants: Vec<FmaVariant>,
}

/// A CPU adapter's theoretical FMA rate, computed from what the host reports (an estimate: the
/// clock is whatever `/proc/cpuinfo` or cpufreq says, not a measured sustained frequency).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CpuEstimate {
    /// Threads the driver runs shaders on: `LP_NUM_THREADS` when set (llvmpipe), else the
    /// available parallelism.
    pub cores: u32,
    /// Where `cores` came from.
    pub cores_source: String,
    /// Clock, MHz.
    pub mhz: f64,
    /// Where `mhz` came from.
    pub mhz_source: String,
    /// SIMD width the driver compiles for, bits (from the adapter name, e.g. "256 bits").
    pub vector_bits: u32,
    /// FMA units per core assumed (2 for x86-64 with AVX2/FMA or AVX-512, else 1).
    pub fma_units: u32,
    /// Why `fma_units` has that value (the CPU flags seen).
    pub fma_units_source: String,
    /// cores × MHz × (vector bits / 32) × 2 (FMA) × FMA units, in GFLOP/s (f32).
    pub gflops: f64,
}

impl std::fmt::Display for CpuEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} GFLOP/s f32 (estimate) = {} cores × {:.0} MHz × {} lanes ({} bits / 32) × 2 (FMA) × {} FMA units; \
             cores: {}; clock: {}; FMA units: {}",
            self.gflops,
            self.cores,
            self.mhz,
            self.vector_bits / 32,
            self.vector_bits,
            self.fma_units,
            self.cores_source,
            self.mhz_source,
            self.fma_units_source
        )
    }
}

/// The SIMD width in an llvmpipe adapter name such as "llvmpipe (LLVM 15.0.6, 256 bits)".
pub fn vector_bits_from_name(name: &str) -> Option<u32> {
    let i = name.find(" bits")?;
    let digits = name[..i].rsplit(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok().filter(|&b| b >= 32)
}

/// Clock in MHz from `/proc/cpuinfo`'s "cpu MHz" lines (the highest), or cpufreq's maximum.
fn cpu_mhz(cpuinfo: &str) -> Option<(f64, String)> {
    let from_cpuinfo = cpuinfo
        .lines()
        .filter(|l| l.starts_with("cpu MHz"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .fold(None, |best: Option<f64>, x| Some(best.map_or(x, |b| b.max(x))));
    if let Some(mhz) = from_cpuinfo.filter(|&m| m > 0.0) {
        return Some((mhz, "/proc/cpuinfo \"cpu MHz\" (current clock, highest core)".into()));
    }
    let khz = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").ok()?;
    let mhz = khz.trim().parse::<f64>().ok()? / 1000.0;
    (mhz > 0.0).then(|| (mhz, "cpufreq cpuinfo_max_freq (maximum clock)".into()))
}

/// FMA units per core from the CPU flags of `/proc/cpuinfo`.
fn fma_units(cpuinfo: &str) -> (u32, String) {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split(':').nth(1))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let has = |f: &str| flags.contains(&f);
    match (has("fma"), has("avx2"), has("avx512f")) {
        (true, _, true) => (2, "2 assumed: x86-64 with fma and avx512f".into()),
        (true, true, _) => (2, "2 assumed: x86-64 with fma and avx2".into()),
        (true, false, _) => (1, "1 assumed: fma without avx2".into()),
        _ if flags.is_empty() => (1, "1 assumed: no CPU flags readable".into()),
        _ => (1, "1 assumed: no fma flag (FMA counted as 2 FLOPs all the same)".into()),
    }
}

/// The theoretical FMA rate of a CPU adapter, when the adapter is a CPU and its vector width
/// and the clock can be read; `None` otherwise.
pub fn cpu_estimate(ctx: &Context) -> Option<CpuEstimate> {
    let a = ctx.info().adapter.as_ref()?;
    if a.device_type != wgpu::DeviceType::Cpu {
        return None;
    }
    let vector_bits = vector_bits_from_name(&a.name)?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (mhz, mhz_source) = cpu_mhz(&cpuinfo)?;
    let threads = std::env::var("LP_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let (cores, cores_source) = match threads.filter(|&t| t > 0) {
        Some(t) => (t, "LP_NUM_THREADS".to_string()),
        None => (
            std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            "std::thread::available_parallelism".to_string(),
        ),
    };
    let (fma_units, fma_units_source) = fma_units(&cpuinfo);
    let gflops = cores as f64 * mhz * 1e-3 * (vector_bits / 32) as f64 * 2.0 * fma_units as f64;
    Some(CpuEstimate {
        cores,
        cores_source,
        mhz,
        mhz_source,
        vector_bits,
        fma_units,
        fma_units_source,
        gflops,
    })
}

/// The measured ceilings of one adapter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeakReport {
    /// The adapter measured.
    pub adapter: AdapterReport,
    /// `"gpu-timestamps"` or `"wall-clock"`.
    pub timer: TimerKind,
    /// f32 FMA throughput, GFLOP/s (an FMA counts as 2 FLOPs): the fastest calibration shape's
    /// fastest sample.
    pub fma_f32_gflops: f64,
    /// Every f32 calibration shape tried, with the fastest.
    pub fma_f32: FmaPeak,
    /// f16 FMA throughput, GFLOP/s, when `SHADER_F16` was granted (every shape tried as well).
    pub fma_f16_gflops: Option<f64>,
    /// The f16 calibration shapes, when `SHADER_F16` was granted.
    pub fma_f16: Option<FmaPeak>,
    /// The theoretical f32 FMA rate of a CPU adapter (an estimate with its inputs), when known.
    pub cpu_estimate: Option<CpuEstimate>,
    /// Stream-copy bandwidth, GB/s (bytes read + bytes written), from the fastest sample.
    pub bandwidth_gbps: f64,
    /// Bytes of each of the two buffers of the bandwidth kernel.
    pub bandwidth_buffer_bytes: u64,
}

impl std::fmt::Display for PeakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "adapter:        {}", self.adapter.summary())?;
        writeln!(f, "timer:          {}", self.timer)?;
        let best = |p: &FmaPeak| {
            format!(
                "{:.1} GFLOP/s (best of {} shapes: {} chains × vec4, workgroup {})",
                p.gflops,
                p.variants.len(),
                p.best.chains,
                p.best.workgroup
            )
        };
        writeln!(f, "FMA f32:        {}", best(&self.fma_f32))?;
        match &self.fma_f16 {
            Some(p) => writeln!(f, "FMA f16:        {}", best(p))?,
            None => writeln!(f, "FMA f16:        n/a (SHADER_F16 not granted)")?,
        }
        match &self.cpu_estimate {
            Some(e) => {
                writeln!(f, "CPU theoretical: {e}")?;
                writeln!(
                    f,
                    "                measured f32 best = {:.1}% of the estimate",
                    100.0 * self.fma_f32.gflops / e.gflops
                )?;
            }
            None => writeln!(
                f,
                "CPU theoretical: n/a (not a CPU adapter, or its vector width or clock unknown)"
            )?,
        }
        writeln!(f, "FMA shapes tried (chains × vec4, workgroup: GFLOP/s):")?;
        for (dtype, p) in [("f32", Some(&self.fma_f32)), ("f16", self.fma_f16.as_ref())] {
            for v in p.into_iter().flat_map(|p| &p.variants) {
                writeln!(
                    f,
                    "  {dtype} {:>2} chains  wg {:>3}: {:8.1}",
                    v.chains, v.workgroup, v.gflops
                )?;
            }
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

/// The cached calibration pipeline (no uniform; storage bindings only).
fn calibration(
    ctx: &Context,
    kernel: Kernel,
    dtype: DType,
    constants: &[(&'static str, f64)],
) -> Result<Arc<CompiledKernel>> {
    pipeline::get(ctx, kernel, dtype, Default::default(), constants)
}

/// A bind group of `buffers`, in the kernel's binding order.
fn bind(ctx: &Context, kernel: &CompiledKernel, buffers: &[&wgpu::Buffer]) -> Result<wgpu::BindGroup> {
    ctx.scoped("peak bind group", || {
        let entries: Vec<wgpu::BindGroupEntry> = kernel
            .bindings
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

/// FMA throughput in GFLOP/s for `dtype` (f32 or f16): every calibration shape of
/// 2, 4, 8 or 16 vec4 chains × workgroups of 8, 64 or 256 (those the device allows), the fastest
/// reported.
pub fn measure_fma(ctx: &Context, timer: &Timer, dtype: DType, iters: u32) -> Result<FmaPeak> {
    let max_wg = ctx
        .limits()
        .max_compute_workgroup_size_x
        .min(ctx.limits().max_compute_invocations_per_workgroup);
    let mut variants = Vec::new();
    for chains in FMA_CHAINS {
        for workgroup in FMA_WORKGROUPS.into_iter().filter(|&w| w <= max_wg) {
            let gflops = measure_fma_shape(ctx, timer, dtype, iters, chains, workgroup)?;
            variants.push(FmaVariant {
                chains,
                workgroup,
                gflops,
            });
        }
    }
    let best = variants
        .iter()
        .copied()
        .max_by(|a, b| a.gflops.total_cmp(&b.gflops))
        .ok_or_else(|| crate::error::Error::Unsupported("no FMA calibration shape fits this device".into()))?;
    Ok(FmaPeak {
        gflops: best.gflops,
        best,
        variants,
    })
}

/// FMA throughput in GFLOP/s of one calibration shape. The grid grows until one dispatch takes at
/// least two milliseconds, so that large GPUs are filled.
fn measure_fma_shape(
    ctx: &Context,
    timer: &Timer,
    dtype: DType,
    iters: u32,
    chains: u32,
    workgroup: u32,
) -> Result<f64> {
    let constants = [
        ("WORKGROUP", workgroup as f64),
        ("ITERS", FMA_ITERS as f64),
        ("CHAINS", chains as f64),
    ];
    let kernel = calibration(ctx, Kernel::PeakFma, dtype, &constants)?;
    let out = storage(ctx, "wgpu-attention peak fma out", 1 << 20)?;
    let bind_group = bind(ctx, &kernel, &[&out])?;
    // The same number of invocations to start with whatever the workgroup size.
    let mut workgroups: u64 = (16384 / workgroup as u64).max(1);
    loop {
        let groups = kernels::grid(ctx, workgroups, "peak_fma")?;
        let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| {
            record_dispatch(enc, stamps, &kernel.pipeline, &bind_group, groups)
        };
        let probe = timer.sample(1, &mut record)?;
        if probe >= 2e-3 || workgroups >= 1 << 20 {
            let timing = timer.measure(1, iters, &mut record)?;
            let invocations = groups.0 as u64 * groups.1 as u64 * workgroup as u64;
            let flops = invocations as f64 * FmaVariant::flops_per_invocation(chains);
            return Ok(flops / timing.min_s() / 1e9);
        }
        workgroups *= 4;
    }
}

/// Copy bandwidth in GB/s (bytes read + written) and the size of each buffer.
pub fn measure_bandwidth(ctx: &Context, timer: &Timer, iters: u32) -> Result<(f64, u64)> {
    let l = ctx.limits();
    let cpu = crate::kernels::is_cpu(ctx);
    let want: u64 = if cpu { 64 << 20 } else { 256 << 20 };
    let granule = 16 * BANDWIDTH_WORKGROUP as u64;
    let bytes = want.min(l.max_storage_buffer_binding_size).min(l.max_buffer_size) / granule * granule;
    let kernel = calibration(
        ctx,
        Kernel::PeakBandwidth,
        DType::F32,
        &[("WORKGROUP", BANDWIDTH_WORKGROUP as f64)],
    )?;
    let src = storage(ctx, "wgpu-attention peak src", bytes)?;
    let dst = storage(ctx, "wgpu-attention peak dst", bytes)?;
    let bind_group = bind(ctx, &kernel, &[&src, &dst])?;
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
    let fma_f32 = measure_fma(ctx, &timer, DType::F32, iters)?;
    let fma_f16 = match ctx.features().contains(wgpu::Features::SHADER_F16) {
        true => Some(measure_fma(ctx, &timer, DType::F16, iters)?),
        false => None,
    };
    let (bandwidth_gbps, bandwidth_buffer_bytes) = measure_bandwidth(ctx, &timer, iters)?;
    Ok(PeakReport {
        adapter: AdapterReport::of(ctx),
        timer: timer.kind(),
        fma_f32_gflops: fma_f32.gflops,
        fma_f16_gflops: fma_f16.as_ref().map(|p| p.gflops),
        fma_f32,
        fma_f16,
        cpu_estimate: cpu_estimate(ctx),
        bandwidth_gbps,
        bandwidth_buffer_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::{cpu_mhz, fma_units, vector_bits_from_name};

    #[test]
    fn vector_width_from_llvmpipe_names() {
        assert_eq!(vector_bits_from_name("llvmpipe (LLVM 15.0.6, 256 bits)"), Some(256));
        assert_eq!(vector_bits_from_name("llvmpipe (LLVM 19.1.7, 512 bits)"), Some(512));
        assert_eq!(vector_bits_from_name("llvmpipe (LLVM 15.0.6, 128 bits)"), Some(128));
        assert_eq!(vector_bits_from_name("SwiftShader Device (Subzero)"), None);
    }

    #[test]
    fn clock_and_fma_units_from_cpuinfo() {
        let info = "processor\t: 0\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu sse avx fma avx2\n\n\
                    processor\t: 1\ncpu MHz\t\t: 2900.5\nflags\t\t: fpu sse avx fma avx2\n";
        assert_eq!(cpu_mhz(info).map(|(m, _)| m), Some(2900.5));
        assert_eq!(fma_units(info).0, 2);
        assert_eq!(fma_units("flags\t: fpu sse2\n").0, 1);
    }
}
