//! Scaled dot-product attention and the score functions of §2 (dot, general, additive), plus the
//! pieces every variant built on §1 shares: Q/K/V (+ mask, bias) uploads and host copies, named
//! attention outputs and the sdpa reference.

use super::{named, Expected, Flag, Outputs, Spec, Variant, VariantInputs, VariantParams};
use crate::attention::{Attention, AttentionOutput, Problem};
use crate::context::Context;
use crate::error::Result;
use crate::family::score::{additive, dot, general, AdditiveWeights};
use crate::options::AttentionOptions;
use crate::reference::{self, Broadcast, HostInputs, HostScore, ReferenceOutput};
use crate::tensor::Tensor;

/// Q, K, V and the optional mask and bias of §1.
pub(super) const QKV: &[&str] = &["q", "k", "v"];
pub(super) const MASKS: &[&str] = &["mask", "bias"];
/// The outputs of §1.
pub(super) const ATTENTION_OUTPUTS: &[(&str, &str)] = &[
    ("out", "[B,Hq,Lq,Dv] (dtype of q)"),
    ("lse", "[B,Hq,Lq] f32, natural log, -inf for a row with no visible key"),
    ("weights", "[B,Hq,Lq,Lk] f32 (staged path)"),
];
/// The flags of the variants built on §1 with a fused/staged choice.
const SDPA_FLAGS: &[Flag] = &[
    Flag::Scale,
    Flag::Softcap,
    Flag::Causal,
    Flag::Window,
    Flag::Dropout,
    Flag::Kernel,
    Flag::F16,
];

pub(super) static SDPA: Spec = Spec {
    variant: Variant::Sdpa,
    name: "sdpa",
    required: QKV,
    optional: MASKS,
    inputs_doc: "q [B,Hq,Lq,Dk] k [B,Hkv,Lk,Dk] v [B,Hkv,Lk,Dv] [mask (bool) bias: [B|1,Hq|1,Lq,Lk] or \
         [Lq,Lk]], from --safetensors (names changed with --q-name etc.) or the --q/--k/--v/--mask/--bias .npy files",
    outputs: ATTENTION_OUTPUTS,
    flags: SDPA_FLAGS,
    chained: false,
    flags_doc: "--scale defaults to 1/sqrt(Dk)",
    bench_doc: "Q [B,Hq,Lq,Dk], K [B,Hkv,Lk,Dk], V [B,Hkv,Lk,Dv]",
    random: |_, _| Ok(Vec::new()),
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        Ok(named(
            Attention::new(ctx, &q, &k, &v, &o)?.into_prepared("attention"),
            attention_outputs,
        ))
    },
    reference: |inputs, params, _| Ok(sdpa_expected(&QkvHost::load(inputs)?.inputs(), &params.attention)),
};

pub(super) static DOT: Spec = Spec {
    variant: Variant::Dot,
    name: "dot",
    required: QKV,
    optional: MASKS,
    inputs_doc: "as sdpa",
    outputs: ATTENTION_OUTPUTS,
    flags: SDPA_FLAGS,
    chained: false,
    flags_doc: "--scale defaults to 1",
    bench_doc: "as sdpa, scale 1",
    random: |_, _| Ok(Vec::new()),
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        Ok(named(dot(ctx, &q, &k, &v, &o)?, attention_outputs))
    },
    reference: |inputs, params, _| {
        Ok(sdpa_expected(
            &QkvHost::load(inputs)?.inputs(),
            &unit_scale(&params.attention),
        ))
    },
};

pub(super) static GENERAL: Spec = Spec {
    variant: Variant::General,
    name: "general",
    required: &["q", "k", "v", "w"],
    optional: MASKS,
    inputs_doc: "q k v [mask bias] as sdpa (q head dim Dq), w [Dq,Dk]",
    outputs: ATTENTION_OUTPUTS,
    flags: SDPA_FLAGS,
    chained: true,
    flags_doc: "--scale defaults to 1",
    bench_doc: "as sdpa, W [Dk,Dk]",
    random: |p, _| Ok(vec![("w", vec![p.dk, p.dk], p.dk)]),
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        let w = inputs.upload(ctx, "w")?;
        Ok(named(general(ctx, &q, &k, &v, &w, &o)?, attention_outputs))
    },
    reference: |inputs, params, _| {
        let qkv = QkvHost::load(inputs)?;
        let w = inputs.floats("w")?;
        let host = HostInputs {
            score: HostScore::General { w: &w },
            ..qkv.inputs()
        };
        Ok(sdpa_expected(&host, &unit_scale(&params.attention)))
    },
};

pub(super) static ADDITIVE: Spec = Spec {
    variant: Variant::Additive,
    name: "additive",
    required: &["q", "k", "v", "w_q", "w_k", "v_a"],
    optional: &["b", "mask", "bias"],
    inputs_doc: "q k v [mask bias] as sdpa, w_q [Da,Dq] w_k [Da,Dk] v_a [Da] (score vector) [b [Da]]",
    outputs: ATTENTION_OUTPUTS,
    flags: &[
        Flag::Softcap,
        Flag::Causal,
        Flag::Window,
        Flag::Dropout,
        Flag::Kernel,
        Flag::F16,
    ],
    chained: true,
    flags_doc: "scores are not scaled; --kernel staged is the naive f32 baseline",
    bench_doc: "as sdpa, W_q and W_k [Da,Dk], b and v_a [Da] (Da = --da, default Dk)",
    random: |p, da| {
        Ok(vec![
            ("w_q", vec![da, p.dk], p.dk),
            ("w_k", vec![da, p.dk], p.dk),
            ("v_a", vec![da], da),
            ("b", vec![da], p.dk),
        ])
    },
    prepare: |ctx, inputs, params| {
        let ([q, k, v], o) = upload_qkv(ctx, inputs, params)?;
        let w = AdditiveWeights {
            w_q: inputs.upload(ctx, "w_q")?,
            w_k: inputs.upload(ctx, "w_k")?,
            bias: inputs.upload_optional(ctx, "b")?,
            v: inputs.upload(ctx, "v_a")?,
        };
        Ok(named(additive(ctx, &q, &k, &v, &w, &o)?, attention_outputs))
    },
    reference: |inputs, params, _| {
        let qkv = QkvHost::load(inputs)?;
        let (w_q, w_k, v) = (inputs.floats("w_q")?, inputs.floats("w_k")?, inputs.floats("v_a")?);
        let b = inputs.optional_floats("b")?.unwrap_or_else(|| vec![0.0; v.len()]);
        let score = HostScore::Additive {
            w_q: &w_q,
            w_k: &w_k,
            b: &b,
            v: &v,
            dq: qkv.dq,
            dk: qkv.problem.dk,
        };
        Ok(sdpa_expected(&HostInputs { score, ..qkv.inputs() }, &params.attention))
    },
};

/// Uploads Q, K, V and the options of `params` with the inputs' mask and bias.
pub(super) fn upload_qkv(
    ctx: &Context,
    inputs: &VariantInputs,
    params: &VariantParams,
) -> Result<([Tensor; 3], AttentionOptions)> {
    let opts = AttentionOptions {
        mask: inputs.upload_optional(ctx, "mask")?,
        bias: inputs.upload_optional(ctx, "bias")?,
        ..params.attention.clone()
    };
    let up = |name| inputs.upload(ctx, name);
    Ok(([up("q")?, up("k")?, up("v")?], opts))
}

/// `out`, and `lse` and `weights` when returned.
pub(super) fn attention_outputs(o: &AttentionOutput) -> Outputs {
    let mut tensors = vec![("out", o.out.clone())];
    tensors.extend(o.lse.clone().map(|t| ("lse", t)));
    tensors.extend(o.weights.clone().map(|t| ("weights", t)));
    Outputs {
        tensors,
        kernel: Some(o.kernel),
    }
}

/// Host copies of Q, K, V (+ mask and bias) of the variants built on §1.
pub(super) struct QkvHost {
    pub(super) problem: Problem,
    /// Head dim of Q (differs from Dk for the general and additive scores).
    pub(super) dq: usize,
    pub(super) q: Vec<f32>,
    k: Vec<f32>,
    pub(super) v: Vec<f32>,
    mask: Option<(Vec<bool>, [usize; 4])>,
    bias: Option<(Vec<f32>, [usize; 4])>,
}

impl QkvHost {
    pub(super) fn load(inputs: &VariantInputs) -> Result<Self> {
        Self::load_named(inputs, ["q", "k", "v"])
    }

    /// Q, K, V under other names (zero-masked: C, G, G), each [B, H, L, D] or [B, L, D] (one head).
    pub(super) fn load_named(inputs: &VariantInputs, [qn, kn, vn]: [&'static str; 3]) -> Result<Self> {
        let dims = |name| -> Result<[usize; 4]> {
            match inputs.require(name)?.shape.len() {
                3 => inputs.dims::<3>(name).map(|[b, l, d]| [b, 1, l, d]),
                _ => inputs.dims::<4>(name),
            }
        };
        let [b, hq, lq, dq] = dims(qn)?;
        let [_, hkv, lk, dk] = dims(kn)?;
        let [.., dv] = dims(vn)?;
        Ok(Self {
            problem: Problem {
                b,
                hq,
                hkv,
                lq,
                lk,
                dk,
                dv,
            },
            dq,
            q: inputs.floats(qn)?,
            k: inputs.floats(kn)?,
            v: inputs.floats(vn)?,
            mask: inputs.broadcast("mask", |n| inputs.optional_bools(n))?,
            bias: inputs.broadcast("bias", |n| inputs.optional_floats(n))?,
        })
    }

    pub(super) fn inputs(&self) -> HostInputs<'_> {
        HostInputs {
            mask: self
                .mask
                .as_ref()
                .map(|(data, shape)| Broadcast { data, shape: *shape }),
            bias: self
                .bias
                .as_ref()
                .map(|(data, shape)| Broadcast { data, shape: *shape }),
            ..HostInputs::new(self.problem, &self.q, &self.k, &self.v)
        }
    }
}

/// O, and LSE and P where `opts` asks for them.
pub(super) fn attention_expected(r: ReferenceOutput, opts: &AttentionOptions) -> Expected {
    let mut e = vec![("out", r.out)];
    if opts.return_lse {
        e.push(("lse", r.lse));
    }
    if opts.return_weights {
        e.push(("weights", r.weights));
    }
    e
}

pub(super) fn sdpa_expected(host: &HostInputs, opts: &AttentionOptions) -> Expected {
    attention_expected(reference::sdpa(host, opts), opts)
}

/// `opts` with the scale defaulting to 1 (dot and general scores).
fn unit_scale(opts: &AttentionOptions) -> AttentionOptions {
    AttentionOptions {
        scale: Some(opts.scale.unwrap_or(1.0)),
        ..opts.clone()
    }
}
