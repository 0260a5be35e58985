//! Multi-head attention (§8): the layer's projections around §1.

use super::inputs::VariantInputs;
use super::{named, Expected, Flag, Outputs, Spec, Variant};
use crate::attention::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::mha::{Linear, MhaOptions, MhaWeights, MultiHeadAttention};
use crate::files::{HostData, HostTensor};
use crate::options::{AttentionOptions, KernelChoice};
use crate::reference::family::{self as rf, HostLinear};

/// Names of the multi-head attention weights (weight, bias) as `run` documents them and as
/// [`VariantInputs::with_layer`] stores their host copies.
pub(super) const WEIGHTS: [(&str, &str); 4] = [
    ("q_proj.weight", "q_proj.bias"),
    ("k_proj.weight", "k_proj.bias"),
    ("v_proj.weight", "v_proj.bias"),
    ("out_proj.weight", "out_proj.bias"),
];

pub(super) static MHA: Spec = Spec {
    variant: Variant::Mha,
    name: "mha",
    required: &["x_q"],
    optional: &["x_kv", "key_padding_mask"],
    inputs_doc: "x_q [B,Lq,E] [x_kv [B,Lk,Ekv] (default x_q), key_padding_mask [B,Lk] bool, true = the key \
         takes part] and q_proj.weight [Hq*Dh,E] k_proj.weight v_proj.weight [Hkv*Dh,Ekv] out_proj.weight \
         [E_out,Hq*Dh] (each with an optional .bias), or in_proj_weight [3E,E] [in_proj_bias] + out_proj.*",
    outputs: &[
        ("out", "[B,Lq,E_out] (dtype of x_q)"),
        ("weights", "[B,Lq,Lk] f32, averaged over heads (staged path)"),
    ],
    flags: &[
        Flag::Scale,
        Flag::Softcap,
        Flag::Causal,
        Flag::Window,
        Flag::Dropout,
        Flag::Kernel,
        Flag::Heads,
        Flag::F16,
    ],
    chained: true,
    flags_doc: "--heads N (required) must divide q_proj.weight's rows (Hq*Dh), --kv-heads (default --heads) \
         must divide --heads; --scale defaults to 1/sqrt(Dh)",
    bench_doc: "X_q [B,Lq,E], X_kv [B,Lk,E], E = Hq*Dk, Hq and Hkv heads of dim Dk (needs Dk = Dv)",
    random: |p, _| {
        if p.dk != p.dv {
            return Err(Error::Unsupported(format!(
                "mha benchmarks use Dk as the head dim and need Dk = Dv (got {} and {})",
                p.dk, p.dv
            )));
        }
        // E = Hq·Dk: the query projection keeps the width, K and V project to Hkv·Dk.
        let (e, ekv) = (p.hq * p.dk, p.hkv * p.dk);
        let [(qw, qb), (kw, kb), (vw, vb), (ow, ob)] = WEIGHTS;
        Ok(vec![
            ("x_q", vec![p.b, p.lq, e], 1),
            ("x_kv", vec![p.b, p.lk, e], 1),
            (qw, vec![e, e], e),
            (qb, vec![e], e),
            (kw, vec![ekv, e], e),
            (kb, vec![ekv], e),
            (vw, vec![ekv, e], e),
            (vb, vec![ekv], e),
            (ow, vec![e, e], e),
            (ob, vec![e], e),
        ])
    },
    prepare: |ctx, inputs, params| {
        let x_q = inputs.upload(ctx, "x_q")?;
        let x_kv = inputs.upload_optional(ctx, "x_kv")?.unwrap_or_else(|| x_q.clone());
        let a = &params.attention;
        let o = MhaOptions {
            attention: AttentionOptions {
                return_weights: false,
                return_lse: false,
                ..a.clone()
            },
            key_padding_mask: inputs.upload_optional(ctx, "key_padding_mask")?,
            average_weights: a.return_weights,
        };
        Ok(named(inputs.layer()?.forward(ctx, &x_q, &x_kv, &o)?, |o| {
            let mut tensors = vec![("out", o.out.clone())];
            tensors.extend(o.weights.clone().map(|w| ("weights", w)));
            // The layer runs the staged path exactly when it averages the weights (or when asked).
            let kernel = match a.kernel {
                KernelChoice::Auto if a.return_weights => KernelChoice::Staged,
                KernelChoice::Auto => KernelChoice::Fused,
                k => k,
            };
            Outputs {
                tensors,
                kernel: Some(kernel),
            }
        }))
    },
    reference: |inputs, params, _| mha_expected(inputs, &params.attention),
};

/// Every weight name of the layer a `.safetensors` file may hold: [`WEIGHTS`] or PyTorch's packed
/// `in_proj_weight` [3E, E] / `in_proj_bias` [3E] with `out_proj.*`.
pub(super) const FILE_WEIGHTS: [&str; 10] = [
    "q_proj.weight",
    "q_proj.bias",
    "k_proj.weight",
    "k_proj.bias",
    "v_proj.weight",
    "v_proj.bias",
    "out_proj.weight",
    "out_proj.bias",
    "in_proj_weight",
    "in_proj_bias",
];

/// Rows [start, start + count) of a float tensor (the first axis).
fn rows(t: &HostTensor, start: usize, count: usize) -> HostTensor {
    let width: usize = t.shape[1..].iter().product();
    let (a, b) = (start * width, (start + count) * width);
    let data = match &t.data {
        HostData::F32(v) => HostData::F32(v[a..b].to_vec()),
        HostData::F16(v) => HostData::F16(v[a..b].to_vec()),
        HostData::Bool(v) => HostData::Bool(v[a..b].to_vec()),
        HostData::U32(v) => HostData::U32(v[a..b].to_vec()),
    };
    let mut shape = t.shape.clone();
    shape[0] = count;
    HostTensor { shape, data }
}

/// Adds the layer of `heads` query and `kv_heads` key/value heads built from the weights among
/// `inputs` (`q_proj.weight`/`.bias` … `out_proj.*`, or the packed `in_proj_weight`/`in_proj_bias`,
/// already in the inputs' dtype), so `--dtype` applies to
/// the weights too.
pub fn with_layer_from_inputs(
    ctx: &Context,
    inputs: VariantInputs,
    heads: usize,
    kv_heads: usize,
) -> Result<VariantInputs> {
    let host = |name: &'static str| inputs.require(name).cloned();
    let optional = |name: &str| inputs.get(name).cloned();
    let [(qw, qb), (kw, kb), (vw, vb), (ow, ob)] = WEIGHTS;
    let (q, k, v) = match inputs.get("in_proj_weight") {
        Some(w) => {
            if w.shape.len() != 2 || w.shape[0] % 3 != 0 {
                return Err(Error::ShapeMismatch {
                    name: "in_proj_weight",
                    expected: vec![
                        3 * w.shape.last().copied().unwrap_or(0),
                        w.shape.last().copied().unwrap_or(0),
                    ],
                    got: w.shape.clone(),
                });
            }
            let n = w.shape[0] / 3;
            let b = optional("in_proj_bias");
            let part = |i: usize| (rows(w, i * n, n), b.as_ref().map(|b| rows(b, i * n, n)));
            (part(0), part(1), part(2))
        }
        None => (
            (host(qw)?, optional(qb)),
            (host(kw)?, optional(kb)),
            (host(vw)?, optional(vb)),
        ),
    };
    let linear = |(w, b): (HostTensor, Option<HostTensor>)| -> Result<Linear> {
        Ok(Linear {
            weight: w.upload(ctx)?,
            bias: b.map(|b| b.upload(ctx)).transpose()?,
        })
    };
    let weights = MhaWeights {
        q: linear(q)?,
        k: linear(k)?,
        v: linear(v)?,
        out: linear((host(ow)?, optional(ob)))?,
    };
    let layer = MultiHeadAttention::new(weights, heads, kv_heads)?;
    inputs.with_layer(ctx, layer)
}

/// The layer of a benchmark shape, from the seeded weights of `inputs`.
pub(super) fn with_random_layer(ctx: &Context, inputs: VariantInputs, p: &Problem) -> Result<VariantInputs> {
    let linear = |(weight, bias): (&'static str, &'static str)| -> Result<Linear> {
        Ok(Linear {
            weight: inputs.upload(ctx, weight)?,
            bias: inputs.upload_optional(ctx, bias)?,
        })
    };
    let [q, k, v, out] = WEIGHTS;
    let weights = MhaWeights {
        q: linear(q)?,
        k: linear(k)?,
        v: linear(v)?,
        out: linear(out)?,
    };
    let layer = MultiHeadAttention::new(weights, p.hq, p.hkv)?;
    inputs.with_layer(ctx, layer)
}

fn mha_expected(inputs: &VariantInputs, opts: &AttentionOptions) -> Result<Expected> {
    let (hq, hkv, dh) = inputs.layer()?.heads();
    let [b, lq, e] = inputs.dims("x_q")?;
    let x_q = inputs.floats("x_q")?;
    let (x_kv, [_, lk, e_kv]) = match inputs.get("x_kv") {
        Some(_) => (inputs.floats("x_kv")?, inputs.dims("x_kv")?),
        None => (x_q.clone(), [b, lq, e]),
    };
    let weights = WEIGHTS
        .into_iter()
        .map(|(w, b)| Ok((inputs.floats(w)?, inputs.optional_floats(b)?)))
        .collect::<Result<Vec<_>>>()?;
    let linear = |i: usize| HostLinear {
        w: &weights[i].0,
        b: weights[i].1.as_deref(),
    };
    let r = rf::mha(
        &x_q,
        &x_kv,
        (b, lq, lk, e, e_kv),
        (hq, hkv, dh),
        [linear(0), linear(1), linear(2), linear(3)],
        inputs.optional_bools("key_padding_mask")?.as_deref(),
        opts,
    );
    let mut expected = vec![("out", r.out)];
    if opts.return_weights {
        expected.push(("weights", r.weights));
    }
    Ok(expected)
}
