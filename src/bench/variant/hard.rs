//! Hard (stochastic) attention (§5): one sampled key per query.

use super::score::{upload_qkv, QkvHost, MASKS, QKV};
use super::{gpu_output, named, Expected, Flag, HostOutputs, Outputs, Spec, Variant};
use crate::family::hard::hard;
use crate::options::AttentionOptions;
use crate::reference::family as rf;
use crate::reference::HostInputs;

use crate::files::HostData;

pub(super) static HARD: Spec = Spec {
    variant: Variant::Hard,
    name: "hard",
    required: QKV,
    optional: MASKS,
    inputs_doc: "q k v [mask bias] as sdpa",
    outputs: &[
        (
            "out",
            "[B,Hq,Lq,Dv] (dtype of q): the sampled rows of v, 0 for a row with no visible key",
        ),
        (
            "indices",
            "[B,Hq,Lq] u32: the sampled keys, 4294967295 (u32::MAX) for a row with no visible key",
        ),
    ],
    flags: &[
        Flag::Scale,
        Flag::Softcap,
        Flag::Causal,
        Flag::Window,
        Flag::Seed,
        Flag::F16,
    ],
    chained: false,
    flags_doc: "--seed S is the sampling seed (default 0); --scale defaults to 1/sqrt(Dk)",
    bench_doc: "as sdpa, seed 0",
    random: |_, _| Ok(Vec::new()),
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        Ok(named(hard(ctx, &q, &k, &v, params.seed, &o)?, |o| Outputs {
            tensors: vec![("out", o.out.clone()), ("indices", o.indices.clone())],
            kernel: None,
        }))
    },
    reference: |inputs, params, gpu| {
        Ok(hard_expected(
            &QkvHost::load(inputs)?.inputs(),
            &params.attention,
            params.seed,
            gpu,
        ))
    },
};

/// Hard attention rows whose best and second-best perturbed scores differ by less than this are
/// near ties the GPU's f32 rounding may break the other way.
const HARD_TIE: f64 = 1e-4;

/// Hard attention's expected rows and indices; with the GPU's indices, near ties it broke the other
/// way expect its pick.
fn hard_expected(host: &HostInputs, opts: &AttentionOptions, seed: u64, gpu: Option<&HostOutputs>) -> Expected {
    let p = host.problem;
    let mut r = rf::hard(host, opts, seed);
    if let Some(HostData::U32(picked)) = gpu_output(gpu, "indices").map(|t| &t.data) {
        for (row, &j) in picked.iter().enumerate().take(r.indices.len()) {
            if j == r.indices[row] || r.margins[row] >= HARD_TIE || j as usize >= p.lk {
                continue;
            }
            r.indices[row] = j;
            let (b, h) = (row / p.lq / p.hq, row / p.lq % p.hq);
            let v_row = ((b * p.hkv + h / (p.hq / p.hkv)) * p.lk + j as usize) * p.dv;
            for d in 0..p.dv {
                r.out[row * p.dv + d] = host.v[v_row + d] as f64;
            }
        }
    }
    // Indices are compared as the f32 values the comparison reads.
    let indices = r.indices.iter().map(|&i| i as f32 as f64).collect();
    vec![("out", r.out), ("indices", indices)]
}
