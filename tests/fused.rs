//! The fused single-pass kernel against the CPU reference.

mod common;
use common::*;
use wgpu_attention::{Alignment, KernelChoice};

fn fused(p: wgpu_attention::Problem) -> Case {
    Case::new(p).kernel(KernelChoice::Fused)
}

#[test]
fn plain_shapes() {
    check_all([
        fused(problem(1, 1, 1, 1, 1, 8, 8)),
        fused(problem(1, 2, 2, 17, 17, 16, 16)),
        fused(problem(2, 3, 3, 5, 67, 24, 40)),
        fused(problem(1, 2, 1, 70, 13, 8, 64)),
        fused(problem(1, 8, 8, 64, 64, 64, 64)),
    ]);
}

#[test]
fn causal() {
    check_all([
        fused(problem(1, 2, 2, 37, 37, 16, 16)).opts(|o| o.causal = Some(Alignment::TopLeft)),
        fused(problem(1, 2, 2, 13, 70, 16, 16)).opts(|o| o.causal = Some(Alignment::BottomRight)),
        fused(problem(1, 2, 2, 70, 13, 16, 16)).opts(|o| o.causal = Some(Alignment::BottomRight)),
        fused(problem(1, 2, 2, 70, 13, 16, 16)).opts(|o| o.causal = Some(Alignment::TopLeft)),
    ]);
}
