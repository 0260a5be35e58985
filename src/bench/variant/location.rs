//! Location-based attention (§3): weights from the query alone.

use super::{named, Flag, Outputs, Spec, Variant};
use crate::family::location::{location, LocationWeights};
use crate::reference::family::{self as rf, HostLocationWeights};

pub(super) static LOCATION: Spec = Spec {
    variant: Variant::Location,
    name: "location",
    required: &["q", "h", "v", "w_a", "b_a", "w_c", "b_c"],
    optional: &[],
    inputs_doc: "q [B,Lq,Dq] h [B,Lq,Dh] v [B,Lk,Dv] w_a [Lk,Dq+Dh] b_a [Lk] w_c [Do,Dq+Dv] b_c [Do]; f32",
    outputs: &[
        ("out", "[B,Lq,Do]: W_c [q; context] + b_c"),
        ("context", "[B,Lq,Dv]: a v"),
        ("weights", "[B,Lq,Lk] f32: a"),
    ],
    flags: &[Flag::Softcap, Flag::Causal, Flag::Window, Flag::Dropout],
    chained: true,
    flags_doc: "the options apply to the location scores W_a [q; h] + b_a, which are not scaled",
    bench_doc: "q and h [B*Hq,Lq,Dk], v [B*Hq,Lk,Dv], W_a [Lk,2Dk], W_c [Dv,Dk+Dv]",
    random: |p, _| {
        let (n, dk, dv) = (p.b * p.hq, p.dk, p.dv);
        Ok(vec![
            ("q", vec![n, p.lq, dk], 1),
            ("h", vec![n, p.lq, dk], 1),
            ("v", vec![n, p.lk, dv], 1),
            ("w_a", vec![p.lk, 2 * dk], 2 * dk),
            ("b_a", vec![p.lk], 2 * dk),
            ("w_c", vec![dv, dk + dv], dk + dv),
            ("b_c", vec![dv], dk + dv),
        ])
    },
    prepare: |ctx, inputs, params| {
        let up = |name| inputs.upload(ctx, name);
        let w = LocationWeights {
            w_a: up("w_a")?,
            b_a: up("b_a")?,
            w_c: up("w_c")?,
            b_c: up("b_c")?,
        };
        let call = location(ctx, &up("q")?, &up("h")?, &up("v")?, &w, &params.attention)?;
        Ok(named(call, |o| Outputs {
            tensors: vec![
                ("out", o.out.clone()),
                ("context", o.context.clone()),
                ("weights", o.weights.clone()),
            ],
            kernel: None,
        }))
    },
    reference: |inputs, params, _| {
        let [b, lq, dq] = inputs.dims("q")?;
        let [.., dh] = inputs.dims::<3>("h")?;
        let [_, lk, dv] = inputs.dims("v")?;
        let (w_a, b_a) = (inputs.floats("w_a")?, inputs.floats("b_a")?);
        let (w_c, b_c) = (inputs.floats("w_c")?, inputs.floats("b_c")?);
        let r = rf::location(
            &inputs.floats("q")?,
            &inputs.floats("h")?,
            &inputs.floats("v")?,
            (b, lq, dq, dh, lk, dv),
            HostLocationWeights {
                w_a: &w_a,
                b_a: &b_a,
                w_c: &w_c,
                b_c: &b_c,
            },
            None,
            &params.attention,
        );
        Ok(vec![("out", r.out), ("context", r.context), ("weights", r.weights)])
    },
};
