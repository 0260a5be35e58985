//! The simplest path: the crate creates its own device, uploads host data, runs fused causal
//! attention and checks the result against the CPU reference.
//!
//! `cargo run --example owned`

use wgpu_attention::reference::{self, HostInputs, Tolerance};
use wgpu_attention::{attention, Alignment, AttentionOptions, Context, Problem, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?; // honours WGPU_BACKEND, WGPU_ADAPTER_NAME, WGPU_POWER_PREF
    println!("adapter: {}", ctx.info().summary());

    let p = Problem {
        b: 2,
        hq: 4,
        hkv: 4,
        lq: 37,
        lk: 37,
        dk: 32,
        dv: 32,
    };
    let [q_shape, k_shape, v_shape] = p.qkv_shapes();
    let q = pseudo_random(q_shape.iter().product(), 1);
    let k = pseudo_random(k_shape.iter().product(), 2);
    let v = pseudo_random(v_shape.iter().product(), 3);

    let opts = AttentionOptions {
        causal: Some(Alignment::TopLeft),
        return_lse: true,
        ..Default::default()
    };
    let res = attention(
        &ctx,
        &Tensor::from_slice(&ctx, &q, &q_shape)?,
        &Tensor::from_slice(&ctx, &k, &k_shape)?,
        &Tensor::from_slice(&ctx, &v, &v_shape)?,
        &opts,
    )?;
    let out: Vec<f32> = res.out.to_vec(&ctx)?;
    let lse: Vec<f32> = res.lse.as_ref().expect("LSE was requested").to_vec(&ctx)?;

    let expected = reference::sdpa(&HostInputs::new(p, &q, &k, &v), &opts);
    let out_check = reference::compare(&out, &expected.out, Tolerance::F32);
    let lse_check = reference::compare(&lse, &expected.lse, Tolerance::F32);
    println!("O   {:?}: {out_check}", res.out.shape());
    println!("LSE {:?}: {lse_check}", res.lse.as_ref().map(|t| t.shape()));
    if !(out_check.ok() && lse_check.ok()) {
        return Err("GPU result differs from the CPU reference".into());
    }
    Ok(())
}

/// Deterministic values in [-1, 1) (a small LCG, so the example needs no RNG crate).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
