//! f16 storage with f32 accumulation: inputs and O in half precision (half the memory traffic),
//! LSE in f32. Needs the adapter's `SHADER_F16` feature, which `Context::new` requests.
//!
//! `cargo run --example f16`

use half::f16;
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::{attention, wgpu, AttentionOptions, Context, Problem, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());
    if !ctx.features().contains(wgpu::Features::SHADER_F16) {
        println!("this adapter has no SHADER_F16: f16 tensors are refused with Error::MissingFeature");
        return Ok(());
    }
    let p = Problem {
        b: 1,
        hq: 4,
        hkv: 1,
        lq: 50,
        lk: 77,
        dk: 64,
        dv: 64,
    };
    let [qs, ks, vs] = p.qkv_shapes();
    // Round on the host first, so that the reference sees exactly the values the GPU reads.
    let make = |n: usize, phase: f32| -> Vec<f32> {
        (0..n)
            .map(|i| f16::from_f32((i as f32 * 0.61 + phase).cos()).to_f32())
            .collect()
    };
    let (q, k, v) = (
        make(qs.iter().product(), 0.0),
        make(ks.iter().product(), 1.0),
        make(vs.iter().product(), 2.0),
    );
    let halves = |x: &[f32]| -> Vec<f16> { x.iter().map(|&v| f16::from_f32(v)).collect() };

    // A key-padding mask as a bool tensor broadcast over heads: the last 7 keys do not take part.
    let mask: Vec<bool> = (0..p.lq * p.lk).map(|i| i % p.lk < p.lk - 7).collect();
    let opts = AttentionOptions {
        mask: Some(Tensor::from_slice(&ctx, &mask, &[1, 1, p.lq, p.lk])?),
        return_lse: true,
        ..Default::default()
    };
    let res = attention(
        &ctx,
        &Tensor::from_slice(&ctx, &halves(&q), &qs)?,
        &Tensor::from_slice(&ctx, &halves(&k), &ks)?,
        &Tensor::from_slice(&ctx, &halves(&v), &vs)?,
        &opts,
    )?;
    let out: Vec<f32> = res.out.to_vec::<f16>(&ctx)?.iter().map(|x| x.to_f32()).collect();
    let lse: Vec<f32> = res.lse.as_ref().expect("LSE was requested").to_vec(&ctx)?;

    let inputs = HostInputs {
        mask: Some(Broadcast {
            data: &mask,
            shape: [1, 1, p.lq, p.lk],
        }),
        ..HostInputs::new(p, &q, &k, &v)
    };
    let expected = reference::sdpa(&inputs, &opts);
    let out_check = reference::compare(&out, &expected.out, Tolerance::F16);
    let lse_check = reference::compare(&lse, &expected.lse, Tolerance::F16);
    println!("O (f16) {:?}: {out_check}", res.out.shape());
    println!("LSE (f32): {lse_check}");
    if !(out_check.ok() && lse_check.ok()) {
        return Err("GPU result differs from the CPU reference".into());
    }
    Ok(())
}
