//! 10,000 consecutive calls on one context, cycling through masks, causal alignments, windows,
//! GQA, f16, dropout, LSE, weights and both kernels: process memory, live wgpu buffers and the
//! pipeline cache stay flat. Figures are printed (`cargo test --test soak -- --nocapture`).
#![cfg(target_os = "linux")]

mod common;
use common::skip::Cap;
use common::{problem, random, upload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use wgpu_attention::{
    attention, wgpu, Alignment, AttentionOptions, Context, DType, Dropout, KernelChoice, Problem, Tensor, Window,
};

const WARM_UP: usize = 500;
const CALLS: usize = 10_000;
/// Allowed growth of the resident set over the measured calls.
const RSS_BOUND: u64 = 32 << 20;

/// Resident set size from /proc/self/statm (pages of 4 KiB).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}

/// Buffers wgpu holds for the user (live `wgpu::Buffer` handles of this instance).
fn live_buffers(instance: &wgpu::Instance) -> usize {
    instance
        .generate_report()
        .expect("a wgpu-core backend")
        .hub
        .buffers
        .num_kept_from_user
}

/// Call `i` of the cycle: tiny inputs, options varying with `i`.
fn call(ctx: &Context, i: usize, f16: bool, rng: &mut ChaCha8Rng) {
    let shapes: [Problem; 4] = [
        problem(1, 2, 2, 5, 7, 8, 8),
        problem(2, 4, 2, 3, 9, 16, 8), // GQA
        problem(1, 4, 1, 8, 8, 4, 12), // MQA
        problem(1, 1, 1, 1, 16, 8, 8),
    ];
    let p = shapes[(i / 2) % shapes.len()];
    let kernel = [KernelChoice::Fused, KernelChoice::Staged][i % 2];
    let dtype = if f16 && i % 7 == 3 { DType::F16 } else { DType::F32 };
    let [qs, ks, vs] = p.qkv_shapes();
    let data = |n: usize, rng: &mut ChaCha8Rng| random(rng, n, 1.0);
    let (q, k, v) = (
        upload(ctx, &data(qs.iter().product(), rng), &qs, dtype),
        upload(ctx, &data(ks.iter().product(), rng), &ks, dtype),
        upload(ctx, &data(vs.iter().product(), rng), &vs, dtype),
    );
    let mut opts = AttentionOptions {
        kernel,
        causal: [None, Some(Alignment::TopLeft), Some(Alignment::BottomRight)][i % 3],
        return_lse: !i.is_multiple_of(4),
        return_weights: kernel == KernelChoice::Staged && i % 6 == 1,
        dropout: (i % 11 == 5).then_some(Dropout {
            p: 0.25,
            seed: i as u64,
        }),
        ..Default::default()
    };
    match i % 5 {
        1 => {
            let m: Vec<bool> = (0..p.lq * p.lk).map(|_| rng.gen_bool(0.7)).collect();
            opts.mask = Some(Tensor::from_slice(ctx, &m, &[p.lq, p.lk]).unwrap());
        }
        2 => {
            let lens: Vec<u32> = (0..p.b).map(|_| rng.gen_range(0..=p.lk as u32)).collect();
            opts.key_lengths = Some(Tensor::from_slice(ctx, &lens, &[p.b]).unwrap());
        }
        3 => {
            opts.bias = Some(upload(
                ctx,
                &data(p.hq * p.lq * p.lk, rng),
                &[1, p.hq, p.lq, p.lk],
                dtype,
            ))
        }
        4 => opts.window = Some(Window::symmetric(2)),
        _ => {}
    }
    let res = attention(ctx, &q, &k, &v, &opts).unwrap_or_else(|e| panic!("call {i}: {e}"));
    let o = res.out.to_f32_vec(ctx).unwrap();
    assert!(o.iter().all(|x| x.is_finite()), "call {i}: non-finite output");
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    calls: usize,
    rss: u64,
    buffers: usize,
    pipelines: usize,
}

fn sample(ctx: &Context, instance: &wgpu::Instance, calls: usize) -> Sample {
    ctx.wait().unwrap(); // let wgpu retire everything the finished calls held
    Sample {
        calls,
        rss: rss_bytes(),
        buffers: live_buffers(instance),
        pipelines: ctx.pipelines().len(),
    }
}

#[test]
fn ten_thousand_calls_keep_memory_buffers_and_pipelines_flat() {
    let instance = common::instance();
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let ctx = Context::from_adapter(&adapter).unwrap();
    let f16 = common::skip::has_on(&ctx, Cap::F16, Some("f16 calls"));
    let capacity = ctx.pipelines().capacity();
    // The count sees live handles: a held tensor (and the call's output) are buffers.
    let before = live_buffers(&instance);
    let held = Tensor::zeros(&ctx, &[4], DType::F32).unwrap();
    assert_eq!(live_buffers(&instance), before + 1);
    drop(held);
    let mut rng = ChaCha8Rng::seed_from_u64(2024);

    let t0 = Instant::now();
    for i in 0..WARM_UP {
        call(&ctx, i, f16, &mut rng);
    }
    let warm = t0.elapsed();
    let start = sample(&ctx, &instance, 0);
    let mut samples = vec![start];
    let t0 = Instant::now();
    for n in 1..=CALLS {
        call(&ctx, WARM_UP + n - 1, f16, &mut rng);
        if n % 2_000 == 0 {
            let s = sample(&ctx, &instance, n);
            assert!(
                s.pipelines <= capacity,
                "{s:?}: pipeline cache over its bound {capacity}"
            );
            samples.push(s);
        }
    }
    let elapsed = t0.elapsed();
    let end = *samples.last().unwrap();

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "soak: warm-up {WARM_UP} calls in {:.1} s; {CALLS} calls in {:.1} s ({:.2} ms/call)",
        warm.as_secs_f64(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / CALLS as f64
    );
    for s in &samples {
        eprintln!(
            "soak: after {:>5} calls: RSS {:7.1} MiB, live wgpu buffers {}, cached pipelines {} (bound {capacity})",
            s.calls,
            mib(s.rss),
            s.buffers,
            s.pipelines
        );
    }
    let growth = end.rss.saturating_sub(start.rss);
    eprintln!(
        "soak: RSS {:.1} -> {:.1} MiB (growth {:.1} MiB, bound {:.0}); buffers {} -> {}; pipelines {} -> {}",
        mib(start.rss),
        mib(end.rss),
        mib(growth),
        mib(RSS_BOUND),
        start.buffers,
        end.buffers,
        start.pipelines,
        end.pipelines
    );
    assert!(growth < RSS_BOUND, "RSS grew by {:.1} MiB", mib(growth));
    assert_eq!(end.buffers, start.buffers, "live wgpu buffers leaked");
    assert_eq!(end.pipelines, start.pipelines, "the pipeline cache kept growing");
}

/// The cache bound holds under pressure: with room for two pipelines, three tile shapes evict
/// each other and calls keep working.
#[test]
fn a_small_pipeline_cache_evicts_least_recently_used() {
    use wgpu_attention::{Attention, FlashConfig, Tuning};
    let ctx = Context::new().unwrap();
    ctx.pipelines().set_capacity(2);
    let q = Tensor::from_slice(&ctx, &[0.25f32; 2 * 8 * 8], &[1, 2, 8, 8]).unwrap();
    let opts = AttentionOptions {
        kernel: KernelChoice::Fused,
        ..Default::default()
    };
    let mut outputs = Vec::new();
    for round in 0..2 {
        for rows in [1, 2, 4] {
            let tuning = Tuning {
                flash: Some(FlashConfig::new(16, rows)),
                ..Default::default()
            };
            let call = Attention::with_tuning(&ctx, &q, &q, &q, &opts, &tuning).unwrap();
            call.submit().unwrap();
            outputs.push((round, rows, call.into_output().out.to_vec::<f32>(&ctx).unwrap()));
            assert!(ctx.pipelines().len() <= 2);
        }
    }
    assert!(
        ctx.pipelines().evictions() >= 4,
        "{} evictions",
        ctx.pipelines().evictions()
    );
    // V rows are all 0.25, so every output is 0.25 whatever the tile.
    for (round, rows, o) in outputs {
        assert!(o.iter().all(|&x| (x - 0.25).abs() < 1e-6), "round {round}, rows {rows}");
    }
}
