//! GEMM throughput of each design at one shape (default: the 1024×512×512 projection of a
//! multi-head layer, `x Wᵀ` with a bias), wall clock per submission, best of the samples, checked
//! once against the CPU reference.
//!
//! `cargo run --release --example gemm_throughput [M N K [SAMPLES]]`

use std::time::Instant;
use wgpu_attention::gemm::{self, GemmDesign};
use wgpu_attention::reference::{compare, family as rf, Tolerance};
use wgpu_attention::{Activation, Context, GemmOptions, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (m, n, k) = match args[..] {
        [m, n, k, ..] => (m, n, k),
        _ => (1024, 512, 512),
    };
    let samples = args.get(3).copied().unwrap_or(5);
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());
    let fill = |len: usize, phase: f32| -> Vec<f32> { (0..len).map(|i| (i as f32 * 0.37 + phase).sin()).collect() };
    let (a, w, bias) = (fill(m * k, 0.0), fill(n * k, 1.0), fill(n, 2.0));
    let (ta, tw) = (
        Tensor::from_slice(&ctx, &a, &[m, k])?,
        Tensor::from_slice(&ctx, &w, &[n, k])?,
    );
    let tbias = Tensor::from_slice(&ctx, &bias, &[n])?;
    let expected = rf::gemm(
        rf::HostMatrix {
            data: &a,
            batch: 1,
            rows: m,
            cols: k,
            trans: false,
        },
        rf::HostMatrix {
            data: &w,
            batch: 1,
            rows: n,
            cols: k,
            trans: true,
        },
        1.0,
        Some(&bias),
        None,
        Activation::None,
        1.0,
    );
    let flops = 2.0 * (m * n * k) as f64;
    for design in [GemmDesign::Tiled, GemmDesign::Register] {
        let opts = GemmOptions {
            trans_b: true,
            bias: Some(tbias.clone()),
            design,
            ..Default::default()
        };
        let call = gemm::prepare(&ctx, &ta, &tw, &opts)?;
        call.submit()?; // warm-up: pipeline creation and first touch
        ctx.wait()?;
        let mut best = f64::INFINITY;
        for _ in 0..samples {
            let t = Instant::now();
            call.submit()?;
            ctx.wait()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let check = compare(&call.output().to_f32_vec(&ctx)?, &expected, Tolerance::F32);
        println!(
            "{m}x{n}x{k} {design:<8} {:8.2} ms {:7.2} GFLOP/s  {}",
            best * 1e3,
            flops / best / 1e9,
            if check.ok() {
                "ok".to_string()
            } else {
                format!("WRONG {check}")
            }
        );
    }
    Ok(())
}
