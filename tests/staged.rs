//! The staged path (QKᵀ → masked softmax → P·V): tile variants and the returned weights.

mod common;
use common::*;
use wgpu_attention::reference::{compare, Tolerance};
use wgpu_attention::{Alignment, Attention, AttentionOptions, GemmTile, KernelChoice, Tensor, Tuning, Window};

fn staged(p: wgpu_attention::Problem) -> Case {
    Case::new(p)
        .kernel(KernelChoice::Staged)
        .opts(|o| o.return_weights = true)
}

#[test]
fn plain_shapes() {
    check_all([
        staged(problem(1, 1, 1, 1, 1, 8, 8)),
        staged(problem(1, 2, 2, 17, 17, 16, 16)),
        staged(problem(2, 3, 3, 5, 67, 24, 40)),
        staged(problem(1, 2, 1, 70, 13, 8, 64)),
        staged(problem(1, 8, 8, 64, 64, 64, 64)).opts(|o| o.window = Some(Window::causal_local(7, Alignment::TopLeft))),
    ]);
}

/// Every GEMM tile and softmax width gives the reference result (tiles are override constants).
#[test]
fn tile_variants_match_the_reference() {
    let ctx = ctx();
    let p = problem(1, 2, 1, 37, 45, 24, 40);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(21);
    let [qs, ks, vs] = p.qkv_shapes();
    let (qd, kd, vd) = (
        random(&mut rng, qs.iter().product(), 1.0),
        random(&mut rng, ks.iter().product(), 1.0),
        random(&mut rng, vs.iter().product(), 1.0),
    );
    let (q, k, v) = (
        Tensor::from_slice(ctx, &qd, &qs).unwrap(),
        Tensor::from_slice(ctx, &kd, &ks).unwrap(),
        Tensor::from_slice(ctx, &vd, &vs).unwrap(),
    );
    let opts = AttentionOptions {
        kernel: KernelChoice::Staged,
        causal: Some(Alignment::BottomRight),
        return_weights: true,
        ..Default::default()
    };
    let expected =
        wgpu_attention::reference::sdpa(&wgpu_attention::reference::HostInputs::new(p, &qd, &kd, &vd), &opts);
    let tiles = [(16, 16, 16), (8, 8, 4), (4, 16, 8), (16, 4, 32), (1, 1, 1)];
    for ((wg_x, wg_y, tile_k), softmax) in tiles.into_iter().zip([64, 32, 8, 128, 1]) {
        let tuning = Tuning {
            gemm: Some(GemmTile { wg_x, wg_y, tile_k }),
            softmax_workgroup: Some(softmax),
            ..Default::default()
        };
        let call = Attention::with_tuning(ctx, &q, &k, &v, &opts, &tuning).unwrap();
        call.submit().unwrap();
        let out = call.output().out.to_vec::<f32>(ctx).unwrap();
        let c = compare(&out, &expected.out, Tolerance::F32);
        assert!(c.ok(), "{tuning:?}: {c}");
    }
    // A softmax width that is not a power of two is refused.
    let bad = Tuning {
        softmax_workgroup: Some(48),
        ..Default::default()
    };
    assert!(Attention::with_tuning(ctx, &q, &k, &v, &opts, &bad).is_err());
}

/// Returned weights are a distribution over the visible keys of each row.
#[test]
fn weights_rows_sum_to_one_and_respect_the_mask() {
    let ctx = ctx();
    let (lq, lk) = (9, 14);
    let x = Tensor::from_slice(ctx, &vec![0.25f32; lq * 8], &[1, 1, lq, 8]).unwrap();
    let kv = Tensor::from_slice(
        ctx,
        &(0..lk * 8).map(|i| (i % 5) as f32 * 0.1).collect::<Vec<_>>(),
        &[1, 1, lk, 8],
    )
    .unwrap();
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        return_weights: true,
        ..Default::default()
    };
    let res = wgpu_attention::attention(ctx, &x, &kv, &kv, &opts).unwrap();
    assert_eq!(res.kernel, KernelChoice::Staged, "weights select the staged path");
    let w = res.weights.unwrap().to_vec::<f32>(ctx).unwrap();
    for i in 0..lq {
        let row = &w[i * lk..(i + 1) * lk];
        let visible = i + (lk - lq);
        assert!(row[visible + 1..].iter().all(|&p| p == 0.0), "row {i}: {row:?}");
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "row {i} sums to {sum}");
        let ones = vec![1.0f64];
        assert!(compare(&[sum], &ones, Tolerance::F32).ok());
    }
}
