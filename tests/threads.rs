//! One `Context` shared by many threads: concurrent calls (and concurrent pipeline creation on a
//! fresh cache) give bit-for-bit the results of the same calls run one after another.

mod common;
use common::skip::Cap;
use common::{problem, random, upload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;
use wgpu_attention::{attention, Alignment, AttentionOptions, Context, DType, KernelChoice, Problem, Tensor};

const THREADS: usize = 8;
const CALLS: usize = 50;

/// One call of the mix: shape, kernel, dtype and options all vary with the index.
#[derive(Debug, Clone, Copy)]
struct Spec {
    p: Problem,
    kernel: KernelChoice,
    dtype: DType,
    causal: Option<Alignment>,
    mask: bool,
    lse: bool,
    seed: u64,
}

fn spec(i: usize, f16: bool) -> Spec {
    let shapes = [
        problem(1, 2, 2, 7, 9, 8, 8),
        problem(2, 4, 2, 5, 5, 16, 8),
        problem(1, 1, 1, 1, 13, 4, 4),
        problem(1, 2, 1, 16, 16, 32, 32),
        problem(1, 4, 4, 3, 11, 12, 20),
        problem(2, 2, 2, 6, 0, 8, 8),
    ];
    Spec {
        p: shapes[i % shapes.len()],
        kernel: [KernelChoice::Fused, KernelChoice::Staged][(i / 2) % 2],
        dtype: if f16 && i % 5 == 4 { DType::F16 } else { DType::F32 },
        causal: [None, Some(Alignment::TopLeft), Some(Alignment::BottomRight)][i % 3],
        mask: i % 4 == 1,
        lse: i % 3 != 2,
        seed: i as u64,
    }
}

/// The bits of O and of LSE (empty when not requested).
type Output = (Vec<u32>, Vec<u32>);

/// Runs `s` on `ctx`.
fn run(ctx: &Context, s: &Spec) -> Output {
    let p = s.p;
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let [qs, ks, vs] = p.qkv_shapes();
    let q = random(&mut rng, qs.iter().product(), 1.0);
    let k = random(&mut rng, ks.iter().product(), 1.0);
    let v = random(&mut rng, vs.iter().product(), 1.0);
    let mask: Vec<bool> = (0..p.lq * p.lk).map(|_| rng.gen_bool(0.7)).collect();
    let opts = AttentionOptions {
        kernel: s.kernel,
        causal: s.causal,
        return_lse: s.lse,
        mask: s.mask.then(|| Tensor::from_slice(ctx, &mask, &[p.lq, p.lk]).unwrap()),
        ..Default::default()
    };
    let res = attention(
        ctx,
        &upload(ctx, &q, &qs, s.dtype),
        &upload(ctx, &k, &ks, s.dtype),
        &upload(ctx, &v, &vs, s.dtype),
        &opts,
    )
    .unwrap_or_else(|e| panic!("{s:?}: {e}"));
    let o = res.out.to_f32_vec(ctx).unwrap().iter().map(|x| x.to_bits()).collect();
    let lse = match res.lse {
        Some(l) => l.to_vec::<f32>(ctx).unwrap().iter().map(|x| x.to_bits()).collect(),
        None => Vec::new(),
    };
    (o, lse)
}

#[test]
fn concurrent_calls_match_a_single_threaded_run_bit_for_bit() {
    // A fresh context, so the threads also race to create the same pipelines.
    let shared = Context::new().unwrap();
    let f16 = common::skip::has_on(&shared, Cap::F16, Some("f16 calls"));
    let specs: Vec<Spec> = (0..THREADS * CALLS).map(|i| spec(i, f16)).collect();
    let t0 = Instant::now();
    let per_thread: Vec<Vec<(usize, Output)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (shared, specs) = (&shared, &specs);
                // Thread t runs calls t, t + THREADS, …: neighbours run different shapes at once.
                scope.spawn(move || {
                    (0..CALLS)
                        .map(|c| c * THREADS + t)
                        .map(|i| (i, run(shared, &specs[i])))
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let threaded = t0.elapsed();

    // The same calls one after another (the pipelines now exist).
    let t0 = Instant::now();
    let expected: Vec<Output> = specs.iter().map(|s| run(&shared, s)).collect();
    let single = t0.elapsed();
    for (t, results) in per_thread.iter().enumerate() {
        for (i, got) in results {
            assert!(*got == expected[*i], "thread {t}, call {i}: {:?} differs", specs[*i]);
        }
    }
    eprintln!(
        "threads: {THREADS} threads x {CALLS} calls in {:.2} s (pipelines created on the way: {}); \
         the same {} calls single-threaded in {:.2} s",
        threaded.as_secs_f64(),
        shared.pipelines().len(),
        specs.len(),
        single.as_secs_f64(),
    );
}
