//! Prefill of a ragged batch without padding: prompts of different lengths packed row after row,
//! their boundaries in GPU-resident offset tensors (as a tokenizer or scheduler on the GPU would
//! leave them), grouped-query attention with bottom-right causal masks per sequence, checked
//! against the CPU reference.
//!
//! `cargo run --example varlen`

use wgpu_attention::reference::{self, Tolerance, VarlenHostInputs};
use wgpu_attention::{Alignment, Attention, AttentionOptions, Context, Tensor, Varlen};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());

    let (hq, hkv, d) = (8, 2, 32);
    // Five prompts; the second is empty. Their queries and keys are the same tokens (prefill).
    let lengths = [37u32, 0, 5, 130, 1];
    let mut cu = vec![0u32];
    for l in lengths {
        cu.push(cu.last().copied().unwrap_or(0) + l);
    }
    let total = *cu.last().unwrap_or(&0) as usize;
    let q = pseudo_random(total * hq * d, 1);
    let k = pseudo_random(total * hkv * d, 2);
    let v = pseudo_random(total * hkv * d, 3);

    // Offsets as GPU tensors: the call reads them on the GPU, never on the host.
    let cu_gpu = Tensor::from_slice(&ctx, &cu, &[cu.len()])?;
    let longest = lengths.iter().copied().max().unwrap_or(0) as usize;
    let seqs = Varlen::new(cu_gpu.clone(), cu_gpu, longest, longest);

    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        return_lse: true,
        ..Default::default()
    };
    let call = Attention::varlen(
        &ctx,
        &Tensor::from_slice(&ctx, &q, &[total, hq, d])?,
        &Tensor::from_slice(&ctx, &k, &[total, hkv, d])?,
        &Tensor::from_slice(&ctx, &v, &[total, hkv, d])?,
        &seqs,
        &opts,
    )?;
    call.submit()?;
    let res = call.output();
    let out: Vec<f32> = res.out.to_vec(&ctx)?;
    let lse: Vec<f32> = res.lse.as_ref().expect("LSE was requested").to_vec(&ctx)?;

    let expected = reference::sdpa_varlen(
        &VarlenHostInputs {
            hq,
            hkv,
            dk: d,
            dv: d,
            q: &q,
            k: &k,
            v: &v,
            cu_seqlens_q: &cu,
            cu_seqlens_k: &cu,
        },
        &opts,
    );
    let out_check = reference::compare(&out, &expected.out, Tolerance::F32);
    let lse_check = reference::compare(&lse, &expected.lse, Tolerance::F32);
    println!("lengths {lengths:?} packed into {total} rows");
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
