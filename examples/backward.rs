//! A training step's attention: the forward with its LSE, then the backward pass recorded into
//! the same command encoder (one submission), grouped-query heads, a causal mask and dropout; the
//! gradients are checked against the CPU reference.
//!
//! `cargo run --example backward`

use wgpu_attention::reference::{self, HostInputs, Tolerance};
use wgpu_attention::{Alignment, Attention, AttentionBackward, AttentionOptions, Context, Dropout, Problem, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());

    let p = Problem {
        b: 2,
        hq: 4,
        hkv: 2,
        lq: 45,
        lk: 45,
        dk: 32,
        dv: 32,
    };
    let [q_shape, k_shape, v_shape] = p.qkv_shapes();
    let o_shape = [p.b, p.hq, p.lq, p.dv];
    let q = pseudo_random(q_shape.iter().product(), 1);
    let k = pseudo_random(k_shape.iter().product(), 2);
    let v = pseudo_random(v_shape.iter().product(), 3);
    let d_out = pseudo_random(o_shape.iter().product(), 4); // ∂loss/∂O from the layers above

    let opts = AttentionOptions {
        causal: Some(Alignment::TopLeft),
        dropout: Some(Dropout { p: 0.1, seed: 42 }),
        return_lse: true, // the backward's only saved statistic
        ..Default::default()
    };
    let (qt, kt, vt) = (
        Tensor::from_slice(&ctx, &q, &q_shape)?,
        Tensor::from_slice(&ctx, &k, &k_shape)?,
        Tensor::from_slice(&ctx, &v, &v_shape)?,
    );
    let d_out_t = Tensor::from_slice(&ctx, &d_out, &o_shape)?;

    // Prepare both calls, then record them into one encoder: the backward reads the forward's O
    // and LSE, which exist (unwritten) as soon as the forward is prepared.
    let forward = Attention::new(&ctx, &qt, &kt, &vt, &opts)?;
    let fwd = forward.output();
    let lse = fwd.lse.as_ref().ok_or("LSE was requested")?;
    let backward = AttentionBackward::new(&ctx, &qt, &kt, &vt, &fwd.out, &d_out_t, lse, &opts)?;
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    forward.encode(&mut encoder);
    backward.encode(&mut encoder);
    ctx.queue().submit([encoder.finish()]);
    let grads = backward.into_gradients();

    let expected = reference::sdpa_backward(&HostInputs::new(p, &q, &k, &v), &opts, &d_out)?;
    let mut ok = true;
    for (name, t, want) in [
        ("dQ", &grads.dq, &expected.dq),
        ("dK", &grads.dk, &expected.dk),
        ("dV", &grads.dv, &expected.dv),
    ] {
        let c = reference::compare(&t.to_vec::<f32>(&ctx)?, want, Tolerance::F32);
        println!("{name} {:?}: {c}", t.shape());
        ok &= c.ok();
    }
    if !ok {
        return Err("GPU gradients differ from the CPU reference".into());
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
