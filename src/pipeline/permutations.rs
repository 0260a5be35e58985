//! The table of every kernel permutation the crate composes: for each kernel, the values each
//! source-level switch of [`Switches`] takes, and its storage types. The runtime composes only
//! what the table lists ([`super::get`] refuses anything else), and the shader tests iterate it
//! (naga, the MSL and HLSL writers, the device's module creation under the validation layer, the
//! browser's WGSL compiler), so a permutation either is in the table and checked, or does not
//! exist. Override constants (head dims, workgroup and tile sizes) are not part of it.

use super::{Kernel, Switches};
use crate::tensor::DType;

/// The values each switch of a kernel's [`Switches`] takes; the kernel's permutations are their
/// product.
#[derive(Debug, Clone, Copy)]
pub struct Axes {
    pub rows: &'static [u32],
    pub vec4_io: &'static [bool],
    pub subgroup: &'static [u32],
    pub additive: &'static [bool],
    pub local: &'static [bool],
    pub alibi: &'static [bool],
    pub paged: &'static [bool],
    pub coop: &'static [u32],
    pub slots: &'static [u32],
    pub compact: &'static [bool],
}

const NO: &[bool] = &[false];
const BOTH: &[bool] = &[false, true];
const NONE: &[u32] = &[0];
/// Rows per invocation of the register design and the backward kernels (1 to their `MAX_ROWS`).
const ROWS_1_TO_8: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8];
/// Packed rows of the decode kernels and fragments of the cooperative-matrix GEMM (1 to 16).
const ROWS_1_TO_16: &[u32] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
/// Fixed subgroup sizes the subgroup paths specialize for (wgpu allows 4 to 128).
const SUBGROUPS: &[u32] = &[4, 8, 16, 32, 64, 128];
/// Cooperative-matrix sizes M (M×M×M) of the devices the crate uses them on.
const COOP_SIZES: &[u32] = &[8, 16];

/// A kernel with no source-level switch: its default switches only.
const FIXED: Axes = Axes {
    rows: NONE,
    vec4_io: NO,
    subgroup: NONE,
    additive: NO,
    local: NO,
    alibi: NO,
    paged: NO,
    coop: NONE,
    slots: NONE,
    compact: NO,
};

/// The switches `kernel`'s host can set, with every value it can give them.
pub fn axes(kernel: Kernel) -> Axes {
    match kernel {
        Kernel::MaskedSoftmax | Kernel::FlashBackwardDs => Axes { alibi: BOTH, ..FIXED },
        // Rows 1 to 8 (FlashConfig::rows), the plain fetch (0) or a subgroup size.
        Kernel::FlashForward => Axes {
            rows: ROWS_1_TO_8,
            vec4_io: BOTH,
            subgroup: &[0, 4, 8, 16, 32, 64],
            additive: BOTH,
            local: BOTH,
            alibi: BOTH,
            ..FIXED
        },
        // O slots: head-dim vec4s per lane, 1 to 64 (TiledConfig::slots); no additive score.
        Kernel::FlashTiled => Axes {
            vec4_io: BOTH,
            local: BOTH,
            alibi: BOTH,
            slots: &[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
                29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54,
                55, 56, 57, 58, 59, 60, 61, 62, 63, 64,
            ],
            ..FIXED
        },
        Kernel::FlashCoopmat => Axes {
            vec4_io: BOTH,
            local: BOTH,
            alibi: BOTH,
            coop: COOP_SIZES,
            ..FIXED
        },
        Kernel::FlashDecode => Axes {
            rows: ROWS_1_TO_16,
            vec4_io: BOTH,
            alibi: BOTH,
            paged: BOTH,
            ..FIXED
        },
        // The lanes design's workgroup is the device's fixed subgroup size.
        Kernel::FlashDecodeLanes => Axes {
            rows: ROWS_1_TO_16,
            vec4_io: BOTH,
            subgroup: SUBGROUPS,
            alibi: BOTH,
            paged: BOTH,
            ..FIXED
        },
        // Rows per invocation follow the output's rows: 1, 2, 4 or 8 (gemm_register::rows_for).
        Kernel::GemmRegister => Axes {
            rows: &[1, 2, 4, 8],
            ..FIXED
        },
        // Accumulator fragments per subgroup: 1 to 16 (gemm_coopmat's MAX_FRAGMENTS).
        Kernel::GemmCoopmat => Axes {
            rows: ROWS_1_TO_16,
            coop: COOP_SIZES,
            ..FIXED
        },
        // Rows 1 to 8 (BackwardConfig::rows); the quick first-call code keeps loops (compact).
        Kernel::FlashBackwardQ
        | Kernel::FlashBackwardKv
        | Kernel::FlashBackwardQDirect
        | Kernel::FlashBackwardKvDirect => Axes {
            rows: ROWS_1_TO_8,
            vec4_io: BOTH,
            alibi: BOTH,
            compact: BOTH,
            ..FIXED
        },
        Kernel::FlashBackwardBias | Kernel::FlashBackwardBiasDirect => Axes {
            vec4_io: BOTH,
            alibi: BOTH,
            ..FIXED
        },
        Kernel::QkScores
        | Kernel::WeightedSum
        | Kernel::PeakFma
        | Kernel::PeakBandwidth
        | Kernel::Gemm
        | Kernel::HardAttention
        | Kernel::AdditiveHidden
        | Kernel::Pool
        | Kernel::KvWrite
        | Kernel::DecodeMerge
        | Kernel::FlashBackwardPre
        | Kernel::SideGather => FIXED,
    }
}

/// Whether (kernel, dtype, switches) is in the table.
pub fn is_permutation(kernel: Kernel, dtype: DType, switches: Switches) -> bool {
    let a = axes(kernel);
    let Switches {
        rows,
        vec4_io,
        subgroup,
        additive,
        local,
        alibi,
        paged,
        coop,
        slots,
        compact,
    } = switches;
    kernel.dtypes().contains(&dtype)
        && a.rows.contains(&rows)
        && a.vec4_io.contains(&vec4_io)
        && a.subgroup.contains(&subgroup)
        && a.additive.contains(&additive)
        && a.local.contains(&local)
        && a.alibi.contains(&alibi)
        && a.paged.contains(&paged)
        && a.coop.contains(&coop)
        && a.slots.contains(&slots)
        && a.compact.contains(&compact)
}

/// Every permutation of `kernel` in `dtype`: the product of its axes.
pub fn permutations_of(kernel: Kernel, dtype: DType) -> Vec<Switches> {
    let a = axes(kernel);
    let mut out = vec![Switches::default()];
    // Expands every switches so far by each value of one axis.
    fn expand<T: Copy>(out: Vec<Switches>, values: &[T], set: impl Fn(&mut Switches, T)) -> Vec<Switches> {
        let mut next = Vec::with_capacity(out.len() * values.len());
        for v in out {
            for &x in values {
                let mut v = v;
                set(&mut v, x);
                next.push(v);
            }
        }
        next
    }
    out = expand(out, a.rows, |v, x| v.rows = x);
    out = expand(out, a.vec4_io, |v, x| v.vec4_io = x);
    out = expand(out, a.subgroup, |v, x| v.subgroup = x);
    out = expand(out, a.additive, |v, x| v.additive = x);
    out = expand(out, a.local, |v, x| v.local = x);
    out = expand(out, a.alibi, |v, x| v.alibi = x);
    out = expand(out, a.paged, |v, x| v.paged = x);
    out = expand(out, a.coop, |v, x| v.coop = x);
    out = expand(out, a.slots, |v, x| v.slots = x);
    out = expand(out, a.compact, |v, x| v.compact = x);
    match kernel.dtypes().contains(&dtype) {
        true => out,
        false => Vec::new(),
    }
}

/// Every permutation of every kernel: (kernel, dtype, switches).
pub fn permutations() -> Vec<(Kernel, DType, Switches)> {
    Kernel::ALL
        .into_iter()
        .flat_map(|kernel| {
            kernel.dtypes().iter().flat_map(move |&dtype| {
                permutations_of(kernel, dtype)
                    .into_iter()
                    .map(move |v| (kernel, dtype, v))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_variant_is_listed_and_every_listed_one_is_found() {
        for kernel in Kernel::ALL {
            for &dtype in kernel.dtypes() {
                let v = super::super::default_switches(kernel);
                assert!(
                    is_permutation(kernel, dtype, v),
                    "{kernel:?} {dtype:?}: default {v:?} not listed"
                );
            }
        }
        let all = permutations();
        assert!(all.iter().all(|&(k, d, v)| is_permutation(k, d, v)));
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "a permutation listed twice");
        // Off the table: a row count past the kernels' limit, a compact forward.
        let forward = Switches {
            rows: 9,
            ..Switches::default()
        };
        assert!(!is_permutation(Kernel::FlashForward, DType::F32, forward));
        let compact = Switches {
            rows: 1,
            compact: true,
            ..Switches::default()
        };
        assert!(!is_permutation(Kernel::FlashForward, DType::F32, compact));
        assert!(!is_permutation(
            Kernel::FlashCoopmat,
            DType::F32,
            super::super::default_switches(Kernel::FlashCoopmat)
        ));
    }
}
