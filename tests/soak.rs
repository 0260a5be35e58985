mod common;
use common::*;
use std::time::Instant;
use wgpu_attention::*;

#[test]
fn timing_probe() {
    let ctx = ctx();
    let q = Tensor::from_slice(ctx, &[0.5f32; 64], &[1, 2, 4, 8]).unwrap();
    let _ = attention(ctx, &q, &q, &q, &Default::default())
        .unwrap()
        .out
        .to_vec::<f32>(ctx)
        .unwrap();
    let n = 100;
    let t = Instant::now();
    for _ in 0..n {
        let _ = Tensor::from_slice(ctx, &[0.5f32; 64], &[1, 2, 4, 8]).unwrap();
    }
    eprintln!("upload {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let _ = Attention::new(ctx, &q, &q, &q, &Default::default()).unwrap();
    }
    eprintln!("new {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let _ = attention(ctx, &q, &q, &q, &Default::default()).unwrap();
    }
    eprintln!("attention {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        ctx.wait().unwrap();
    }
    eprintln!("wait {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let _ = q.to_vec::<f32>(ctx).unwrap();
    }
    eprintln!("to_vec {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        ctx.check_alive("x").unwrap();
    }
    eprintln!("probe {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        let r = attention(ctx, &q, &q, &q, &Default::default()).unwrap();
        let _ = r.out.to_vec::<f32>(ctx).unwrap();
    }
    eprintln!("attention+read {:?}", t.elapsed() / n);
}
