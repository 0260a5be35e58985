//! GEMM throughput of each design at one shape (default: the 1024×512×512 projection of a
//! multi-head layer, `x Wᵀ` with a bias), wall clock per submission, best of the samples, checked
//! once against the CPU reference.
//!
//! `cargo run --release --example gemm_throughput [M N K [SAMPLES]] [f16] [DESIGN…]`
//!
//! `f16` stores the operands in half precision (inputs rounded to f16; needs `SHADER_F16`);
//! DESIGN (`tiled`, `register`, `coopmat`) picks designs, default every design that runs here for
//! that storage type (`coopmat`: f16 on devices with cooperative matrices).

use std::time::Instant;
use wgpu_attention::gemm::{self, GemmDesign};
use wgpu_attention::reference::{compare, family as rf, Tolerance};
use wgpu_attention::{Activation, Context, DType, GemmOptions, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sizes = Vec::new();
    let mut dtype = DType::F32;
    let mut designs = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "f16" => dtype = DType::F16,
            "f32" => dtype = DType::F32,
            "tiled" => designs.push(GemmDesign::Tiled),
            "register" => designs.push(GemmDesign::Register),
            "coopmat" => designs.push(GemmDesign::Coopmat),
            n => sizes.push(n.parse::<usize>()?),
        }
    }
    let (m, n, k) = match sizes[..] {
        [m, n, k, ..] => (m, n, k),
        _ => (1024, 512, 512),
    };
    let samples = sizes.get(3).copied().unwrap_or(5);
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());
    if designs.is_empty() {
        designs = [GemmDesign::Tiled, GemmDesign::Register, GemmDesign::Coopmat]
            .into_iter()
            .filter(|d| d.unsupported(&ctx, dtype).is_none())
            .collect();
    }
    let round = |x: f32| match dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        _ => x,
    };
    let fill =
        |len: usize, phase: f32| -> Vec<f32> { (0..len).map(|i| round((i as f32 * 0.37 + phase).sin())).collect() };
    let upload = |data: &[f32], shape: &[usize]| -> Result<Tensor, wgpu_attention::Error> {
        match dtype {
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                Tensor::from_slice(&ctx, &h, shape)
            }
            _ => Tensor::from_slice(&ctx, data, shape),
        }
    };
    let (a, w, bias) = (fill(m * k, 0.0), fill(n * k, 1.0), fill(n, 2.0));
    let (ta, tw, tbias) = (upload(&a, &[m, k])?, upload(&w, &[n, k])?, upload(&bias, &[n])?);
    let tolerance = match dtype {
        // f16 output: half an ulp of values up to ~|K|/2.
        DType::F16 => Tolerance { abs: 2e-2, rel: 4e-3 },
        _ => Tolerance::F32,
    };
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
    for design in designs {
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
        let check = compare(&call.output().to_f32_vec(&ctx)?, &expected, tolerance);
        println!(
            "{m}x{n}x{k} {} {design:<8} {:8.2} ms {:7.2} GFLOP/s  {}",
            dtype.name(),
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
