//! Local attention (§4): local-m (window around i) and local-p (window around a predicted position).

use super::score::{attention_outputs, sdpa_expected, upload_qkv, QkvHost, MASKS, QKV};
use super::{gpu_output, named, Flag, Spec, Variant};
use crate::family::local::{local_m, local_p, LocalPWeights};
use crate::options::{AttentionOptions, Window};
use crate::reference::family as rf;
use crate::reference::HostInputs;

pub(super) static LOCAL_M: Spec = Spec {
    variant: Variant::LocalM,
    name: "local-m",
    required: QKV,
    optional: MASKS,
    inputs_doc: "q k v [mask bias] as sdpa",
    outputs: super::score::ATTENTION_OUTPUTS,
    flags: &[
        Flag::Scale,
        Flag::Softcap,
        Flag::Causal,
        Flag::Dropout,
        Flag::Kernel,
        Flag::HalfWidth,
        Flag::F16,
    ],
    chained: false,
    flags_doc: "--half-width W (required): keys with |j - i| <= W (the window is the variant's own); \
         --scale defaults to 1/sqrt(Dk)",
    bench_doc: "as sdpa, window W = --half-width (default 16)",
    random: |_, _| Ok(Vec::new()),
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        Ok(named(
            local_m(ctx, &q, &k, &v, params.half_width, &o)?,
            attention_outputs,
        ))
    },
    reference: |inputs, params, _| {
        let opts = AttentionOptions {
            window: Some(Window::symmetric(params.half_width)),
            ..params.attention.clone()
        };
        Ok(sdpa_expected(&QkvHost::load(inputs)?.inputs(), &opts))
    },
};

pub(super) static LOCAL_P: Spec = Spec {
    variant: Variant::LocalP,
    name: "local-p",
    required: &["q", "k", "v", "w_p", "v_p"],
    optional: MASKS,
    inputs_doc: "q k v [mask bias] as sdpa, w_p [Dp,Dk] v_p [Dp]; f32",
    outputs: &[
        ("out", "[B,Hq,Lq,Dv]"),
        ("lse", "[B,Hq,Lq] f32, of the windowed softmax"),
        ("weights", "[B,Hq,Lq,Lk] f32 (staged path; Gaussian factor included)"),
        ("positions", "[B,Hq,Lq] f32, the predicted positions p_i in key units"),
    ],
    flags: &[
        Flag::Scale,
        Flag::Softcap,
        Flag::Causal,
        Flag::Window,
        Flag::Dropout,
        Flag::Kernel,
        Flag::HalfWidth,
    ],
    chained: true,
    flags_doc: "--half-width W >= 1 (required): keys with |j - p_i| <= W; --scale defaults to 1/sqrt(Dk)",
    bench_doc: "as sdpa, W_p [Da,Dk], v_p [Da], window W = --half-width (default 16)",
    random: |p, da| Ok(vec![("w_p", vec![da, p.dk], p.dk), ("v_p", vec![da], da)]),
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        let w = LocalPWeights {
            w_p: inputs.upload(ctx, "w_p")?,
            v_p: inputs.upload(ctx, "v_p")?,
        };
        Ok(named(local_p(ctx, &q, &k, &v, &w, params.half_width, &o)?, |o| {
            let mut named = attention_outputs(&o.attention);
            named.tensors.push(("positions", o.positions.clone()));
            named
        }))
    },
    reference: |inputs, params, gpu| {
        let qkv = QkvHost::load(inputs)?;
        let (w_p, v_p) = (inputs.floats("w_p")?, inputs.floats("v_p")?);
        let positions = rf::local_p_positions(&qkv.q, qkv.dq, &w_p, &v_p, qkv.problem.lk);
        // The attention at the GPU's positions (checked themselves below), so that a position
        // rounded across a window edge does not fail the output check.
        let centers = match gpu_output(gpu, "positions").and_then(|t| t.to_f32()) {
            Some(gpu_positions) => gpu_positions,
            None => positions.iter().map(|&x| x as f32).collect(),
        };
        let host = HostInputs {
            local: Some((&centers, params.half_width as f64, true)),
            ..qkv.inputs()
        };
        let mut e = sdpa_expected(&host, &params.attention);
        e.push(("positions", positions));
        Ok(e)
    },
};
