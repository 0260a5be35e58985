//! GEMM throughput of each design at one shape (default: the 1024×512×512 projection of a
//! multi-head layer, `x Wᵀ` with a bias): GPU time per call (timestamp queries where the device
//! has them, else wall clock around submit and wait), median and fastest of the samples after a
//! warm-up, each design's output checked against the CPU reference first. Exits non-zero when
//! an output is outside tolerance.
//!
//! `cargo run --release --example gemm_throughput [M N K [SAMPLES]] [f16] [DESIGN…] [--json FILE]`
//!
//! `f16` stores the operands in half precision (inputs rounded to f16; needs `SHADER_F16`);
//! DESIGN (`tiled`, `register`, `coopmat`) picks designs, default every design that runs here for
//! that storage type (`coopmat`: f16 on devices with cooperative matrices). `--json FILE` writes
//! the rows (scripts/record.sh records them).

use wgpu_attention::gemm::{self, GemmDesign};
use wgpu_attention::reference::{compare, family as rf, Tolerance};
use wgpu_attention::timer::{Stamps, Timer};
use wgpu_attention::{Activation, Context, DType, GemmOptions, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sizes = Vec::new();
    let mut dtype = DType::F32;
    let mut designs = Vec::new();
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "f16" => dtype = DType::F16,
            "f32" => dtype = DType::F32,
            "tiled" => designs.push(GemmDesign::Tiled),
            "register" => designs.push(GemmDesign::Register),
            "coopmat" => designs.push(GemmDesign::Coopmat),
            "--json" => json = Some(args.next().ok_or("--json needs a file")?),
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
    let timer = Timer::new(&ctx)?;
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for design in designs {
        let opts = GemmOptions {
            trans_b: true,
            bias: Some(tbias.clone()),
            design,
            ..Default::default()
        };
        let call = gemm::prepare(&ctx, &ta, &tw, &opts)?;
        call.submit()?; // pipeline creation and first touch, then the check
        let check = compare(&call.output().to_f32_vec(&ctx)?, &expected, tolerance);
        let mut record = |enc: &mut wgpu_attention::wgpu::CommandEncoder, stamps: Stamps| match stamps {
            Some((set, i)) => call.encode_timed(enc, set, i),
            None => call.encode(enc),
        };
        let timing = timer.measure(2, samples as u32, &mut record)?;
        let (median, fastest) = (timing.median_s(), timing.min_s());
        println!(
            "{m}x{n}x{k} {} {design:<8} median {:8.2} ms (min {:8.2}) {:7.2} GFLOP/s  {}",
            dtype.name(),
            median * 1e3,
            fastest * 1e3,
            flops / median / 1e9,
            if check.ok() {
                "ok".to_string()
            } else {
                format!("OUTSIDE TOLERANCE {check}")
            }
        );
        if !check.ok() {
            wrong.push(design.to_string());
        }
        rows.push(format!(
            "{{\"design\": \"{design}\", \"dtype\": \"{}\", \"m\": {m}, \"n\": {n}, \"k\": {k}, \"median_ms\": {}, \"min_ms\": {}, \"gflops\": {}, \"max_abs_err\": {}, \"tolerance\": [{}, {}], \"within_tolerance\": {}}}",
            dtype.name(),
            median * 1e3,
            fastest * 1e3,
            flops / median / 1e9,
            check.max_abs,
            tolerance.abs,
            tolerance.rel,
            check.ok()
        ));
    }
    println!("timer: {}", timer.kind().label());
    if let Some(path) = json {
        let adapter = format!("{:?}", ctx.info().summary());
        let text = format!(
            "{{\"kind\": \"gemm\", \"adapter\": {adapter}, \"timer\": \"{}\", \"samples\": {samples}, \"rows\": [\n  {}\n]}}\n",
            timer.kind().label(),
            rows.join(",\n  ")
        );
        std::fs::write(&path, text)?;
    }
    if !wrong.is_empty() {
        return Err(format!("outside tolerance: {}", wrong.join(", ")).into());
    }
    Ok(())
}
