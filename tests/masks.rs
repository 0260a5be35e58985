//! Every mask kind and combination, on both kernel paths, against the CPU reference.

mod common;
use common::*;
use wgpu_attention::{Alignment, DType, KernelChoice, Problem, Window};

fn both(case: Case) -> [Case; 2] {
    [
        case.clone()
            .kernel(KernelChoice::Staged)
            .opts(|o| o.return_weights = true),
        case.kernel(KernelChoice::Fused),
    ]
}

/// Key lengths from Lk down, one of them 0 when B > 2.
fn uneven(b: usize, lk: usize) -> Vec<u32> {
    (0..b)
        .map(|i| (lk - lk * i / b.max(2)) as u32 * (i != 2) as u32)
        .collect()
}

fn cases(p: Problem) -> Vec<Case> {
    let [b, hq, lq, lk] = [p.b, p.hq, p.lq, p.lk];
    let c = || Case::new(p);
    let mut v = vec![
        c(),
        c().opts(|o| o.scale = Some(0.37)),
        c().magnitude(3.0).opts(|o| o.softcap = Some(5.0)),
        c().bias([b, hq, lq, lk]),
        c().bias([1, 1, lq, lk]),
        c().bias([b, 1, lq, lk]),
        c().mask(MaskKind::Random { shape: [b, hq, lq, lk] }),
        c().mask(MaskKind::Random { shape: [1, hq, lq, lk] }),
        c().mask(MaskKind::WithEmptyRow { shape: [b, 1, lq, lk] }),
        c().key_lengths(
            (0..b as u32)
                .map(|i| (lk as u32 * (i + 1) / (b as u32 + 1)).max(1))
                .collect(),
        ),
        c().key_lengths(vec![0; b]), // every row fully masked
        c().opts(|o| o.causal = Some(Alignment::TopLeft)),
        c().opts(|o| o.causal = Some(Alignment::BottomRight)),
        c().opts(|o| o.window = Some(Window::symmetric(3))),
        c().opts(|o| {
            o.window = Some(Window {
                left: Some(9),
                right: None,
                alignment: Alignment::BottomRight,
            })
        }),
        c().opts(|o| {
            o.window = Some(Window {
                left: None,
                right: Some(2),
                alignment: Alignment::TopLeft,
            })
        }),
        // Combinations.
        c().opts(|o| {
            o.causal = Some(Alignment::BottomRight);
            o.window = Some(Window::causal_local(5, Alignment::BottomRight));
        })
        .bias([1, hq, lq, lk])
        .mask(MaskKind::Random { shape: [b, hq, lq, lk] }),
        c().opts(|o| {
            o.causal = Some(Alignment::TopLeft);
            o.softcap = Some(2.0);
        })
        .key_lengths(vec![(lk as u32 / 2).max(1); b])
        .bias([b, hq, lq, lk]),
        c().mask(MaskKind::WithEmptyRow { shape: [b, hq, lq, lk] })
            .opts(|o| o.causal = Some(Alignment::TopLeft)),
        // Bottom-right aligned per sequence to its key length (KV caches, chunked prefill).
        c().key_lengths(uneven(b, lk)).opts(|o| {
            o.causal = Some(Alignment::BottomRight);
            o.align_to_key_lengths = true;
        }),
        c().key_lengths(uneven(b, lk)).opts(|o| {
            o.causal = Some(Alignment::BottomRight);
            o.window = Some(Window::causal_local(4, Alignment::BottomRight));
            o.align_to_key_lengths = true;
        }),
    ];
    for (i, case) in v.iter_mut().enumerate() {
        case.seed = 100 + i as u64;
    }
    v
}

#[test]
fn masks_square() {
    check_all(cases(problem(2, 2, 2, 19, 19, 16, 16)).into_iter().flat_map(both));
}

#[test]
fn masks_lq_lt_lk_gqa() {
    check_all(cases(problem(1, 4, 2, 7, 45, 8, 24)).into_iter().flat_map(both));
}

#[test]
fn masks_lq_gt_lk() {
    check_all(cases(problem(2, 2, 1, 41, 11, 24, 8)).into_iter().flat_map(both));
}

#[test]
fn masks_f16_fused() {
    check_all(
        cases(problem(1, 2, 2, 23, 37, 16, 16))
            .into_iter()
            .map(|c| c.dtype(DType::F16).kernel(KernelChoice::Fused)),
    );
}
