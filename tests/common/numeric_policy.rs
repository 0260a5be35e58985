//! The numeric policy (docs/ATTENTION.md, "Numbers at the edges") as cases and an oracle, shared
//! by the native kernels' test (tests/numerics.rs) and the browser suite (tests/browser.rs): for
//! each case the oracle states what every row must be (NaN, empty, the uniform average, or an
//! ordinary finite row); the reference must meet it, and every kernel must match the reference
//! element by element (NaN only matches NaN, ±∞ only itself).

use wgpu_attention::reference::{self, Broadcast, HostInputs, ReferenceOutput, Tolerance};
use wgpu_attention::{Alignment, AttentionOptions, DType, Problem};

pub const P: Problem = Problem {
    b: 1,
    hq: 2,
    hkv: 1,
    lq: 4,
    lk: 6,
    dk: 8,
    dv: 8,
};

/// What the policy says one row (b, h, i) must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Row {
    /// Every element finite; LSE finite.
    Finite,
    /// O all NaN, LSE NaN (a NaN the row can see).
    Nan,
    /// O all NaN, LSE NaN or +∞ (a +∞ score).
    Overflow,
    /// No key takes part: O = 0, LSE = −∞.
    Empty,
    /// Every key takes part with an equal score: O = the mean of the V rows; LSE finite.
    Uniform,
    /// O non-finite in the columns where a visible V row is ±∞ or NaN, finite elsewhere; LSE finite.
    NonFiniteColumns,
}

#[derive(Clone)]
pub struct Inputs {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// [1, 1, Lq, Lk].
    pub bias: Option<Vec<f32>>,
    /// [1, 1, Lq, Lk].
    pub mask: Option<Vec<bool>>,
    pub key_lengths: Option<Vec<u32>>,
}

pub struct Case {
    pub name: &'static str,
    pub edit: fn(&mut Inputs),
    pub opts: fn(&mut AttentionOptions),
    /// Options of the reference when they differ from the kernels' (`None`: the same).
    pub reference_opts: Option<fn(&mut AttentionOptions)>,
    pub rows: fn(usize, usize) -> Row,
    /// False where the special values do not exist in half precision (e.g. 3e38).
    pub f16: bool,
}

fn q_at(h: usize, i: usize, d: usize) -> usize {
    (h * P.lq + i) * P.dk + d
}
fn kv_at(j: usize, d: usize) -> usize {
    j * P.dk + d
}
fn bias_at(i: usize, j: usize) -> usize {
    i * P.lk + j
}
fn no_opts(_: &mut AttentionOptions) {}
fn causal(o: &mut AttentionOptions) {
    o.causal = Some(Alignment::TopLeft);
}
fn zero_bias() -> Option<Vec<f32>> {
    Some(vec![0.0; P.lq * P.lk])
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "NaN in one K row, every row sees it",
            edit: |x| x.k[kv_at(2, 3)] = f32::NAN,
            opts: no_opts,
            reference_opts: None,
            rows: |_, _| Row::Nan,
            f16: true,
        },
        Case {
            name: "NaN in K row 2, causal: rows before it unaffected",
            edit: |x| x.k[kv_at(2, 0)] = f32::NAN,
            opts: causal,
            reference_opts: None,
            rows: |_, i| if i < 2 { Row::Finite } else { Row::Nan },
            f16: true,
        },
        Case {
            name: "NaN in one K row with a soft cap",
            edit: |x| x.k[kv_at(2, 3)] = f32::NAN,
            opts: |o| o.softcap = Some(30.0),
            reference_opts: None,
            rows: |_, _| Row::Nan,
            f16: true,
        },
        Case {
            name: "NaN in one Q row",
            edit: |x| x.q[q_at(0, 1, 3)] = f32::NAN,
            opts: no_opts,
            reference_opts: None,
            rows: |h, i| if (h, i) == (0, 1) { Row::Nan } else { Row::Finite },
            f16: true,
        },
        Case {
            name: "NaN in V row 2, causal: O NaN in that column from row 2, LSE finite",
            edit: |x| x.v[kv_at(2, 5)] = f32::NAN,
            opts: causal,
            reference_opts: None,
            rows: |_, i| if i < 2 { Row::Finite } else { Row::NonFiniteColumns },
            f16: true,
        },
        Case {
            name: "NaN in V row 4, masked for every row by key lengths",
            edit: |x| {
                x.v[kv_at(4, 1)] = f32::NAN;
                x.key_lengths = Some(vec![4]);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, _| Row::Finite,
            f16: true,
        },
        Case {
            name: "NaN in the bias of row 1",
            edit: |x| {
                x.bias = zero_bias();
                x.bias.as_mut().unwrap()[bias_at(1, 3)] = f32::NAN;
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, i| if i == 1 { Row::Nan } else { Row::Finite },
            f16: true,
        },
        Case {
            name: "NaN in the bias at a masked key",
            edit: |x| {
                x.bias = zero_bias();
                x.bias.as_mut().unwrap()[bias_at(1, 3)] = f32::NAN;
                let mut mask = vec![true; P.lq * P.lk];
                mask[bias_at(1, 3)] = false;
                x.mask = Some(mask);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, _| Row::Finite,
            f16: true,
        },
        Case {
            name: "every score overflows f32 (Q, K ~ 1e30)",
            edit: |x| {
                x.q.iter_mut().for_each(|e| *e = (e.abs() + 1.0) * 1e30);
                x.k.iter_mut().for_each(|e| *e = (e.abs() + 1.0) * 1e30);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, _| Row::Overflow,
            f16: false,
        },
        Case {
            name: "one row's scores overflow",
            edit: |x| {
                x.k.iter_mut().for_each(|e| *e = e.abs() + 1.0);
                (0..P.dk).for_each(|d| x.q[q_at(1, 2, d)] = 3e38);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |h, i| if (h, i) == (1, 2) { Row::Overflow } else { Row::Finite },
            f16: false,
        },
        Case {
            name: "overflowing scores under a soft cap are capped to +c",
            edit: |x| {
                x.q.iter_mut().for_each(|e| *e = (e.abs() + 1.0) * 1e30);
                x.k.iter_mut().for_each(|e| *e = (e.abs() + 1.0) * 1e30);
            },
            opts: |o| o.softcap = Some(20.0),
            reference_opts: None,
            rows: |_, _| Row::Uniform,
            f16: false,
        },
        Case {
            name: "a +inf bias makes its row NaN",
            edit: |x| {
                x.bias = zero_bias();
                x.bias.as_mut().unwrap()[bias_at(2, 4)] = f32::INFINITY;
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, i| if i == 2 { Row::Overflow } else { Row::Finite },
            f16: true,
        },
        Case {
            name: "a bias of f32::MIN on every key of row 1 is a number: the uniform average",
            edit: |x| {
                x.bias = zero_bias();
                (0..P.lk).for_each(|j| x.bias.as_mut().unwrap()[bias_at(1, j)] = f32::MIN);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, i| if i == 1 { Row::Uniform } else { Row::Finite },
            f16: false,
        },
        Case {
            name: "a bias of f16::MIN on every key of row 1 is a number: the uniform average",
            edit: |x| {
                x.bias = zero_bias();
                (0..P.lk).for_each(|j| x.bias.as_mut().unwrap()[bias_at(1, j)] = -65504.0);
                // Scores far smaller than the bias, so that every biased score rounds to it.
                x.q.iter_mut().for_each(|e| *e *= 1e-3);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, i| if i == 1 { Row::Uniform } else { Row::Finite },
            f16: true,
        },
        Case {
            name: "a -inf bias on every key of row 1 masks it",
            edit: |x| {
                x.bias = zero_bias();
                (0..P.lk).for_each(|j| x.bias.as_mut().unwrap()[bias_at(1, j)] = f32::NEG_INFINITY);
            },
            opts: no_opts,
            reference_opts: None,
            rows: |_, i| if i == 1 { Row::Empty } else { Row::Finite },
            f16: true,
        },
        Case {
            name: "+inf in V row 1, causal: O +inf in that column from row 1",
            edit: |x| x.v[kv_at(1, 0)] = f32::INFINITY,
            opts: causal,
            reference_opts: None,
            rows: |_, i| if i < 1 { Row::Finite } else { Row::NonFiniteColumns },
            f16: true,
        },
        Case {
            name: "soft cap 1e6 equals no cap",
            edit: |_| {},
            opts: |o| o.softcap = Some(1e6),
            reference_opts: Some(|o| o.softcap = None),
            rows: |_, _| Row::Finite,
            f16: true,
        },
        Case {
            name: "soft cap 1e-3 (every score saturates) is accurate",
            edit: |x| x.q.iter_mut().for_each(|e| *e *= 100.0),
            opts: |o| o.softcap = Some(1e-3),
            reference_opts: None,
            rows: |_, _| Row::Finite,
            f16: true,
        },
        Case {
            name: "key length 2^31 + 5 means every key",
            edit: |x| x.key_lengths = Some(vec![(1 << 31) + 5]),
            opts: no_opts,
            reference_opts: None,
            rows: |_, _| Row::Finite,
            f16: true,
        },
        Case {
            name: "key length u32::MAX means every key",
            edit: |x| x.key_lengths = Some(vec![u32::MAX]),
            opts: no_opts,
            reference_opts: None,
            rows: |_, _| Row::Finite,
            f16: true,
        },
        Case {
            name: "a NaN row next to an empty row (mask), causal bottom-right",
            edit: |x| {
                x.q[q_at(1, 3, 0)] = f32::NAN;
                let mut mask = vec![true; P.lq * P.lk];
                (0..P.lk).for_each(|j| mask[bias_at(0, j)] = false);
                x.mask = Some(mask);
            },
            opts: |o| o.causal = Some(Alignment::BottomRight),
            reference_opts: None,
            rows: |h, i| match (h, i) {
                (_, 0) => Row::Empty,
                (1, 3) => Row::Nan,
                _ => Row::Finite,
            },
            f16: true,
        },
    ]
}

fn base_inputs() -> Inputs {
    // Deterministic values in [-1, 1).
    let gen = |n: usize, phase: f32| {
        (0..n)
            .map(|i| ((i as f32 * 0.618 + phase) * 2.3).sin())
            .collect::<Vec<_>>()
    };
    let [qs, ks, vs] = P.qkv_shapes();
    Inputs {
        q: gen(qs.iter().product(), 0.1),
        k: gen(ks.iter().product(), 0.7),
        v: gen(vs.iter().product(), 1.9),
        bias: None,
        mask: None,
        key_lengths: None,
    }
}

fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// Which keys row (h, i) sees under the case's structural masks and −∞ biases.
fn visible(x: &Inputs, opts: &AttentionOptions, i: usize, j: usize) -> bool {
    let by_mask = x.mask.as_ref().is_none_or(|m| m[bias_at(i, j)]);
    let by_length = x.key_lengths.as_ref().is_none_or(|l| (j as u64) < l[0] as u64);
    let by_causal = opts.causal.is_none_or(|a| j as i64 <= i as i64 + a.offset(P.lq, P.lk));
    let by_bias = x.bias.as_ref().is_none_or(|b| b[bias_at(i, j)] != f32::NEG_INFINITY);
    by_mask && by_length && by_causal && by_bias
}

/// Checks the reference against the policy's statement for every row.
fn check_oracle(case: &Case, x: &Inputs, opts: &AttentionOptions, out: &[f64], lse: &[f64]) -> Vec<String> {
    let mut failures = Vec::new();
    for h in 0..P.hq {
        for i in 0..P.lq {
            let row = h * P.lq + i;
            let o = &out[row * P.dv..(row + 1) * P.dv];
            let l = lse[row];
            let expected = (case.rows)(h, i);
            let ok = match expected {
                Row::Finite => o.iter().all(|v| v.is_finite()) && l.is_finite(),
                Row::Nan => o.iter().all(|v| v.is_nan()) && l.is_nan(),
                Row::Overflow => o.iter().all(|v| v.is_nan()) && (l.is_nan() || l == f64::INFINITY),
                Row::Empty => o.iter().all(|&v| v == 0.0) && l == f64::NEG_INFINITY,
                Row::Uniform => {
                    let keys: Vec<usize> = (0..P.lk).filter(|&j| visible(x, opts, i, j)).collect();
                    l.is_finite()
                        && (0..P.dv).all(|d| {
                            let mean = keys.iter().map(|&j| x.v[kv_at(j, d)] as f64).sum::<f64>() / keys.len() as f64;
                            (o[d] - mean).abs() <= 1e-6
                        })
                }
                Row::NonFiniteColumns => {
                    l.is_finite()
                        && (0..P.dv).all(|d| {
                            let special = (0..P.lk).any(|j| visible(x, opts, i, j) && !x.v[kv_at(j, d)].is_finite());
                            special != o[d].is_finite()
                        })
                }
            };
            if !ok {
                failures.push(format!(
                    "{}: reference row (h={h}, i={i}) should be {expected:?}: O {o:?}, LSE {l}",
                    case.name
                ));
            }
        }
    }
    failures
}

/// The bias and mask shape of every case.
pub const BIAS_SHAPE: [usize; 4] = [1, 1, P.lq, P.lk];

/// One case made ready for the kernels: its host inputs (rounded to f16 for f16 runs), the
/// kernels' options (without tensors), the reference output, and where the reference breaks the
/// policy.
pub struct Prepared {
    pub x: Inputs,
    pub opts: AttentionOptions,
    pub expected: ReferenceOutput,
    pub failures: Vec<String>,
}

pub fn prepare(case: &Case, dtype: DType) -> Prepared {
    let mut x = base_inputs();
    (case.edit)(&mut x);
    if dtype == DType::F16 {
        x.q = round_f16(&x.q);
        x.k = round_f16(&x.k);
        x.v = round_f16(&x.v);
        x.bias = x.bias.map(|b| round_f16(&b));
    }
    let mut opts = AttentionOptions {
        return_lse: true,
        ..Default::default()
    };
    (case.opts)(&mut opts);
    let mut ref_opts = opts.clone();
    if let Some(f) = case.reference_opts {
        f(&mut ref_opts);
    }
    let expected = reference::sdpa(
        &HostInputs {
            bias: x.bias.as_ref().map(|b| Broadcast {
                data: b,
                shape: BIAS_SHAPE,
            }),
            mask: x.mask.as_ref().map(|m| Broadcast {
                data: m,
                shape: BIAS_SHAPE,
            }),
            key_lengths: x.key_lengths.as_deref(),
            ..HostInputs::new(P, &x.q, &x.k, &x.v)
        },
        &ref_opts,
    );
    let failures = check_oracle(case, &x, &opts, &expected.out, &expected.lse);
    Prepared {
        x,
        opts,
        expected,
        failures,
    }
}

/// One kernel's O and LSE against the reference; `label` names the case and the kernel.
pub fn compare_kernel(label: &str, out: &[f32], lse: &[f32], expected: &ReferenceOutput, dtype: DType) -> Vec<String> {
    let tol = match dtype {
        DType::F16 => Tolerance::F16,
        _ => Tolerance::F32,
    };
    let mut failures = Vec::new();
    let c = reference::compare(out, &expected.out, tol);
    if !c.ok() {
        failures.push(format!("{label}: O {c}"));
    }
    // A +∞ score may give LSE +∞ (one such key) or NaN (∞ − ∞): both are the policy's.
    let lse: Vec<f32> = lse
        .iter()
        .zip(&expected.lse)
        .map(|(&g, &e)| if e.is_nan() && g == f32::INFINITY { f32::NAN } else { g })
        .collect();
    let c = reference::compare(
        &lse,
        &expected.lse,
        Tolerance {
            abs: 1e-4,
            rel: tol.rel,
        },
    );
    if !c.ok() {
        failures.push(format!("{label}: LSE {c}"));
    }
    failures
}
