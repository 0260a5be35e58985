//! NeurJudge attentions (§6): zero-score masked and code-wise.

use super::score::{sdpa_expected, QkvHost, MASKS};
use super::{named, Flag, Outputs, Spec, Variant};
use crate::family::neurjudge::{codewise, zero_masked};
use crate::options::AttentionOptions;
use crate::reference::family as rf;

/// C [B·Hq, Lq, Dk] and G [B·Hq, Lk, Dk] of a benchmark shape.
fn context_and_guide(p: &crate::attention::Problem) -> Vec<super::inputs::RandomTensor> {
    let n = p.b * p.hq;
    vec![("c", vec![n, p.lq, p.dk], 1), ("g", vec![n, p.lk, p.dk], 1)]
}

pub(super) static ZERO_MASKED: Spec = Spec {
    variant: Variant::ZeroMasked,
    name: "zero-masked",
    required: &["c", "g"],
    optional: MASKS,
    inputs_doc: "c [B,Lc,H] g [B,Lg,H] [mask (bool) bias: [B|1,1,Lc,Lg] or [Lc,Lg]]; scores exactly 0 are masked",
    outputs: &[
        ("out", "[B,Lc,H] (dtype of c)"),
        ("lse", "[B,Lc] f32, -inf for a row with no visible key"),
        ("weights", "[B,Lc,Lg] f32 (staged path)"),
    ],
    flags: &[
        Flag::Softcap,
        Flag::Causal,
        Flag::Window,
        Flag::Dropout,
        Flag::Kernel,
        Flag::F16,
    ],
    chained: false,
    flags_doc: "scores are not scaled",
    bench_doc: "C [B*Hq,Lq,Dk], G [B*Hq,Lk,Dk]",
    random: |p, _| Ok(context_and_guide(p)),
    prepare: |ctx, inputs, params| {
        let opts = AttentionOptions {
            mask: inputs.upload_optional(ctx, "mask")?,
            bias: inputs.upload_optional(ctx, "bias")?,
            ..params.attention.clone()
        };
        let (c, g) = (inputs.upload(ctx, "c")?, inputs.upload(ctx, "g")?);
        Ok(named(zero_masked(ctx, &c, &g, &opts)?, super::score::attention_outputs))
    },
    reference: |inputs, params, _| {
        let host = QkvHost::load_named(inputs, ["c", "g", "g"])?;
        let opts = AttentionOptions {
            scale: Some(1.0),
            zero_score_mask: true,
            ..params.attention.clone()
        };
        Ok(sdpa_expected(&host.inputs(), &opts))
    },
};

pub(super) static CODEWISE: Spec = Spec {
    variant: Variant::Codewise,
    name: "codewise",
    required: &["c", "g"],
    optional: &[],
    inputs_doc: "c [B,Lc,H] g [B,Lg,H]",
    outputs: &[
        ("out", "[B,1,H] (dtype of c)"),
        ("weights", "[B,Lc] f32, the softmax over i of max_j (C G^T)_ij"),
    ],
    flags: &[Flag::F16],
    chained: true,
    flags_doc: "",
    bench_doc: "C [B*Hq,Lq,Dk], G [B*Hq,Lk,Dk]",
    random: |p, _| Ok(context_and_guide(p)),
    prepare: |ctx, inputs, _| {
        let (c, g) = (inputs.upload(ctx, "c")?, inputs.upload(ctx, "g")?);
        Ok(named(codewise(ctx, &c, &g)?, |o| Outputs {
            tensors: vec![("out", o.out.clone()), ("weights", o.weights.clone())],
            kernel: None,
        }))
    },
    reference: |inputs, _, _| {
        let [b, lc, h] = inputs.dims("c")?;
        let [_, lg, _] = inputs.dims("g")?;
        let r = rf::codewise(&inputs.floats("c")?, &inputs.floats("g")?, (b, lc, lg, h));
        Ok(vec![("out", r.out), ("weights", r.weights)])
    },
};
