//! Attention pooling (§7): hierarchical, feed-forward and the self-attention sum.

use super::{named, Flag, Outputs, Spec, Variant};
use crate::family::pooling::{
    feed_forward, han, self_sum, FeedForwardOptions, FeedForwardWeights, HanWeights, PoolOutput,
};
use crate::reference::family::{self as rf, PoolReference};

fn pool_outputs(o: &PoolOutput) -> Outputs {
    Outputs {
        tensors: vec![("out", o.out.clone()), ("weights", o.weights.clone())],
        kernel: None,
    }
}

fn pool_expected(r: PoolReference) -> super::Expected {
    vec![("out", r.out), ("weights", r.weights)]
}

/// X [B·Hq, Lq, Dk] of a benchmark shape.
fn sequence(p: &crate::attention::Problem) -> super::inputs::RandomTensor {
    ("x", vec![p.b * p.hq, p.lq, p.dk], 1)
}

pub(super) static HAN_POOL: Spec = Spec {
    variant: Variant::HanPool,
    name: "han-pool",
    required: &["x", "w", "b", "u"],
    optional: &["mask"],
    inputs_doc: "x [B,L,D] w [D,Da] b [Da] u [Da] [mask [B,L] bool, true = the step takes part]",
    outputs: &[
        ("out", "[B,D] (dtype of x)"),
        ("weights", "[B,L] f32, the softmax weights"),
    ],
    flags: &[Flag::F16],
    chained: true,
    flags_doc: "",
    bench_doc: "X [B*Hq,Lq,Dk], W [Dk,Da], b and u [Da]",
    random: |p, da| {
        Ok(vec![
            sequence(p),
            ("w", vec![p.dk, da], p.dk),
            ("b", vec![da], p.dk),
            ("u", vec![da], da),
        ])
    },
    prepare: |ctx, inputs, _| {
        let w = HanWeights {
            w: inputs.upload(ctx, "w")?,
            b: inputs.upload(ctx, "b")?,
            u: inputs.upload(ctx, "u")?,
        };
        let mask = inputs.upload_optional(ctx, "mask")?;
        Ok(named(
            han(ctx, &inputs.upload(ctx, "x")?, &w, mask.as_ref())?,
            pool_outputs,
        ))
    },
    reference: |inputs, _, _| {
        Ok(pool_expected(rf::han(
            &inputs.floats("x")?,
            inputs.dims("x")?.into(),
            &inputs.floats("w")?,
            &inputs.floats("b")?,
            &inputs.floats("u")?,
            inputs.optional_bools("mask")?.as_deref(),
        )))
    },
};

pub(super) static FF_POOL: Spec = Spec {
    variant: Variant::FfPool,
    name: "ff-pool",
    required: &["x", "w"],
    optional: &["b", "mask"],
    inputs_doc: "x [B,L,D] w [D] [b [L] mask [B,L] bool]",
    outputs: &[
        ("out", "[B,D] (dtype of x)"),
        ("weights", "[B,L] f32, a_t / (sum a + eps)"),
    ],
    flags: &[Flag::Eps, Flag::F16],
    chained: true,
    flags_doc: "--eps defaults to 1e-7 and must be > 0",
    bench_doc: "X [B*Hq,Lq,Dk], w [Dk], b [Lq]",
    random: |p, _| Ok(vec![sequence(p), ("w", vec![p.dk], p.dk), ("b", vec![p.lq], 1)]),
    prepare: |ctx, inputs, params| {
        let w = FeedForwardWeights {
            w: inputs.upload(ctx, "w")?,
            b: inputs.upload_optional(ctx, "b")?,
        };
        let o = FeedForwardOptions {
            mask: inputs.upload_optional(ctx, "mask")?,
            eps: params.eps,
        };
        Ok(named(
            feed_forward(ctx, &inputs.upload(ctx, "x")?, &w, &o)?,
            pool_outputs,
        ))
    },
    reference: |inputs, params, _| {
        Ok(pool_expected(rf::feed_forward(
            &inputs.floats("x")?,
            inputs.dims("x")?.into(),
            &inputs.floats("w")?,
            inputs.optional_floats("b")?.as_deref(),
            inputs.optional_bools("mask")?.as_deref(),
            params.eps as f64,
        )))
    },
};

pub(super) static SELF_SUM: Spec = Spec {
    variant: Variant::SelfSum,
    name: "self-sum",
    required: &["x"],
    optional: &[],
    inputs_doc: "x [B,L,D]",
    outputs: &[("out", "[B,D] (dtype of x)")],
    flags: &[Flag::F16],
    chained: true,
    flags_doc: "",
    bench_doc: "X [B*Hq,Lq,Dk]",
    random: |p, _| Ok(vec![sequence(p)]),
    prepare: |ctx, inputs, _| {
        Ok(named(self_sum(ctx, &inputs.upload(ctx, "x")?)?, |o| Outputs {
            tensors: vec![("out", o.out.clone())],
            kernel: None,
        }))
    },
    reference: |inputs, _, _| {
        Ok(vec![(
            "out",
            rf::self_sum(&inputs.floats("x")?, inputs.dims("x")?.into()),
        )])
    },
};
