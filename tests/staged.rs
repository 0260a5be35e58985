//! The staged path (QKᵀ → masked softmax → P·V) against the CPU reference.

mod common;
use common::*;
use wgpu_attention::{Alignment, KernelChoice, Window};

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
        staged(problem(1, 8, 8, 64, 64, 64, 64)),
    ]);
}
