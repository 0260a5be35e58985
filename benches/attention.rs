//! Criterion benchmarks of the fused and staged kernels, timed on the GPU (timestamp queries when
//! the device has them, else wall clock around submit + wait) through `iter_custom`.
//! Throughput is in score elements (B·Hq·Lq·Lk) per second; FLOPs are in `wgpu-attention bench`.
//! Shapes are small so that `cargo bench` finishes in a few minutes on lavapipe. Every call's
//! output is compared once with the f64 CPU reference before it is timed: a kernel that returns
//! wrong numbers stops the run instead of being timed.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wgpu_attention::reference::{self, HostInputs, Tolerance};
use wgpu_attention::timer::{Stamps, Timer, MAX_RUNS_PER_SAMPLE};
use wgpu_attention::{Alignment, Attention, AttentionOptions, Context, DType, KernelChoice, Problem, Tensor};

struct Setup {
    ctx: Context,
    timer: Timer,
}

fn setup() -> Setup {
    let ctx = Context::new().expect("no GPU adapter: install lavapipe (apt-get install -y mesa-vulkan-drivers)");
    let timer = Timer::new(&ctx).expect("timer");
    eprintln!("adapter: {} (timer: {})", ctx.info().summary(), timer.kind());
    Setup { ctx, timer }
}

fn square(l: usize, d: usize) -> Problem {
    Problem {
        b: 1,
        hq: 2,
        hkv: 2,
        lq: l,
        lk: l,
        dk: d,
        dv: d,
    }
}

/// Q, K and V on the GPU, with the host values the GPU holds (rounded to the dtype).
fn upload(ctx: &Context, p: &Problem, dtype: DType) -> [(Tensor, Vec<f32>); 3] {
    p.qkv_shapes().map(|shape| {
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
        match dtype {
            DType::F16 => {
                let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
                let t = Tensor::from_slice(ctx, &h, &shape).expect("upload");
                (t, h.iter().map(|v| v.to_f32()).collect())
            }
            _ => (Tensor::from_slice(ctx, &x, &shape).expect("upload"), x),
        }
    })
}

/// Benchmarks one (kernel, problem, options) with GPU time as the measurement.
fn bench_one(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    s: &Setup,
    id: BenchmarkId,
    p: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
) {
    let [(q, hq), (k, hk), (v, hv)] = upload(&s.ctx, p, dtype);
    let call = Attention::new(&s.ctx, &q, &k, &v, opts).expect("attention setup");
    call.submit().expect("attention run");
    let got = call.output().out.to_f32_vec(&s.ctx).expect("read back O");
    let expected = reference::sdpa(&HostInputs::new(*p, &hq, &hk, &hv), opts).out;
    let check = reference::compare(&got, &expected, Tolerance::of(dtype));
    assert!(
        check.ok(),
        "{:?} {p}: output outside tolerance before timing: {check}",
        opts.kernel
    );
    c.throughput(Throughput::Elements((p.b * p.hq * p.lq * p.lk) as u64));
    c.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut record = |enc: &mut wgpu_attention::wgpu::CommandEncoder, stamps: Stamps| match stamps {
                Some((set, i)) => call.encode_timed(enc, set, i),
                None => call.encode(enc),
            };
            let mut total = 0.0;
            let mut left = iters;
            while left > 0 {
                let runs = left.min(MAX_RUNS_PER_SAMPLE as u64) as u32;
                total += s.timer.sample(runs, &mut record).expect("timed run") * runs as f64;
                left -= runs as u64;
            }
            Duration::from_secs_f64(total)
        })
    });
}

const KERNELS: [(&str, KernelChoice); 2] = [("fused", KernelChoice::Fused), ("staged", KernelChoice::Staged)];

fn group<'a>(c: &'a mut Criterion, name: &str) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g
}

fn attention(c: &mut Criterion) {
    let s = setup();
    let mut g = group(c, "seq_len");
    for l in [64, 128, 256] {
        for (name, kernel) in KERNELS {
            let opts = AttentionOptions {
                kernel,
                ..Default::default()
            };
            bench_one(&mut g, &s, BenchmarkId::new(name, l), &square(l, 32), DType::F32, &opts);
        }
    }
    g.finish();

    let mut g = group(c, "head_dim");
    for d in [16, 64, 128] {
        for (name, kernel) in KERNELS {
            let opts = AttentionOptions {
                kernel,
                ..Default::default()
            };
            bench_one(
                &mut g,
                &s,
                BenchmarkId::new(name, d),
                &square(128, d),
                DType::F32,
                &opts,
            );
        }
    }
    g.finish();

    let mut g = group(c, "causal");
    for (name, kernel) in KERNELS {
        let opts = AttentionOptions {
            kernel,
            causal: Some(Alignment::TopLeft),
            ..Default::default()
        };
        bench_one(
            &mut g,
            &s,
            BenchmarkId::new(name, 256),
            &square(256, 32),
            DType::F32,
            &opts,
        );
    }
    g.finish();

    if s.ctx.features().contains(wgpu_attention::wgpu::Features::SHADER_F16) {
        let mut g = group(c, "f16");
        for (name, kernel) in KERNELS {
            let opts = AttentionOptions {
                kernel,
                ..Default::default()
            };
            bench_one(
                &mut g,
                &s,
                BenchmarkId::new(name, 128),
                &square(128, 64),
                DType::F16,
                &opts,
            );
        }
        g.finish();
    } else {
        eprintln!("f16 group skipped: SHADER_F16 not granted");
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
