//! Grouped-query attention on tensors in the [B, L, H, D] layout that projections produce, with
//! no copies: Q, K and V are strided views of [B, L, H·D] buffers, and O is written straight into
//! a [B, L, Hq·D] buffer (heads already concatenated for an output projection).
//!
//! `cargo run --example gqa_blhd`

use wgpu_attention::reference::{self, HostInputs, Tolerance};
use wgpu_attention::{attention, wgpu, Alignment, AttentionOptions, Context, DType, Problem, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());
    // 8 query heads share 2 KV heads (4 query heads per group); bottom-right causal, as when
    // a chunk of 5 new queries attends to a cache of 23 keys.
    let (b, hq, hkv, lq, lk, d) = (2, 8, 2, 5, 23, 16);
    let p = Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk: d,
        dv: d,
    };

    let q_blhd = values(b * lq * hq * d, 0.37);
    let k_blhd = values(b * lk * hkv * d, 0.53);
    let v_blhd = values(b * lk * hkv * d, 0.71);
    let buffer = |data: &[f32]| -> Result<wgpu::Buffer, wgpu_attention::Error> {
        Ok(Tensor::from_slice(&ctx, data, &[data.len()])?.buffer().clone())
    };
    let (qb, kb, vb) = (buffer(&q_blhd)?, buffer(&k_blhd)?, buffer(&v_blhd)?);
    let q = Tensor::from_blhd(&qb, 0, [b, lq, hq, d], DType::F32)?; // a [B, Hq, Lq, D] view
    let k = Tensor::from_blhd(&kb, 0, [b, lk, hkv, d], DType::F32)?;
    let v = Tensor::from_blhd(&vb, 0, [b, lk, hkv, d], DType::F32)?;
    let ob = buffer(&vec![0.0; b * lq * hq * d])?;
    let out = Tensor::from_blhd(&ob, 0, [b, lq, hq, d], DType::F32)?;

    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        out: Some(out),
        ..Default::default()
    };
    attention(&ctx, &q, &k, &v, &opts)?;
    let o_blhd: Vec<f32> = Tensor::from_buffer(&ob, 0, &[b, lq, hq * d], DType::F32)?.to_vec(&ctx)?;

    // The reference takes row-major [B, H, L, D]: permute on the host.
    let expected = reference::sdpa(
        &HostInputs::new(
            p,
            &to_bhld(&q_blhd, b, lq, hq, d),
            &to_bhld(&k_blhd, b, lk, hkv, d),
            &to_bhld(&v_blhd, b, lk, hkv, d),
        ),
        &opts,
    );
    let got = to_bhld(&o_blhd, b, lq, hq, d);
    let check = reference::compare(&got, &expected.out, Tolerance::F32);
    println!("O [B, Lq, Hq·D] = [{b}, {lq}, {}]: {check}", hq * d);
    if !check.ok() {
        return Err("GPU result differs from the CPU reference".into());
    }
    Ok(())
}

fn values(n: usize, step: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * step).sin()).collect()
}

/// [B, L, H, D] → [B, H, L, D], row-major.
fn to_bhld(x: &[f32], b: usize, l: usize, h: usize, d: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for bi in 0..b {
        for li in 0..l {
            for hi in 0..h {
                let src = ((bi * l + li) * h + hi) * d;
                let dst = ((bi * h + hi) * l + li) * d;
                y[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    y
}
