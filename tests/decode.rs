//! The split-KV decode kernel (GQA packing + flash-decoding merge) against the CPU reference.

mod common;
use common::*;
use wgpu_attention::{Alignment, DType, DecodeConfig, Dropout, KernelChoice, Window};

fn decode(p: wgpu_attention::Problem) -> Case {
    Case::new(p).kernel(KernelChoice::Decode)
}

/// A decode tile with an explicit split count (keys per split = ⌈Lk / splits⌉).
fn splits(n: u32) -> DecodeConfig {
    DecodeConfig {
        workgroup: 8,
        rows: 0,
        splits: n,
    }
}

#[test]
fn shapes_and_split_counts() {
    check_all([
        decode(problem(1, 1, 1, 1, 1, 8, 8)),
        decode(problem(1, 4, 1, 1, 1, 8, 8)).decode(splits(7)), // Lk < splits
        decode(problem(1, 8, 2, 1, 37, 16, 16)).decode(splits(5)), // prime Lk, uneven splits
        decode(problem(2, 8, 8, 1, 67, 32, 32)).decode(splits(3)), // GQA ratio 1
        decode(problem(2, 4, 2, 2, 61, 24, 40)).decode(splits(4)), // ratio 2, Dk ≠ Dv, Lq = 2
        decode(problem(1, 8, 1, 5, 53, 20, 12)).decode(splits(6)), // MQA, ratio 8, Lq = 5
        decode(problem(1, 32, 8, 1, 300, 64, 64)), // default splits
        decode(problem(1, 4, 1, 3, 129, 3, 5)).decode(splits(2)), // odd head dims (scalar loads)
    ]);
}
