//! The attention family behind `wgpu-attention run --variant` and `bench --variant`: every
//! variant's name and input tensors, its GPU call ([`prepare`]) and its CPU reference
//! ([`reference()`]) on named host tensors, read from a `.safetensors` file ([`read_inputs`]) or
//! seeded at random for a benchmark shape ([`random_inputs`]).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::files::{self, HostData, HostTensor};
use crate::attention::{Attention, AttentionOutput, Problem};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::hard::hard;
use crate::family::local::{local_m, local_p, LocalPWeights};
use crate::family::location::{location, LocationWeights};
use crate::family::mha::{Linear, MhaOptions, MhaWeights, MultiHeadAttention};
use crate::family::neurjudge::{codewise, zero_masked};
use crate::family::pooling::{
    feed_forward, han, self_sum, FeedForwardOptions, FeedForwardWeights, HanWeights, PoolOutput,
};
use crate::family::score::{additive, dot, general, AdditiveWeights};
use crate::options::{AttentionOptions, Window};
use crate::prepared::Prepared;
use crate::reference::family::{self as rf, HostLinear, HostLocationWeights, PoolReference};
use crate::reference::{self, Broadcast, Comparison, HostInputs, HostScore, ReferenceOutput, Tolerance};
use crate::tensor::{DType, Tensor};

/// A member of the attention family (ATTENTION.md §1–§8), as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Scaled dot-product attention (§1).
    Sdpa,
    /// Dot score qᵀk, scale 1 unless given (§2).
    Dot,
    /// General (bilinear) score qᵀ W k (§2).
    General,
    /// Additive (Bahdanau) score vᵀ tanh(W_q q + W_k k + b) (§2).
    Additive,
    /// Local attention with monotonic alignment (§4).
    LocalM,
    /// Local attention with predictive alignment (§4).
    LocalP,
    /// Hard (stochastic) attention (§5).
    Hard,
    /// NeurJudge zero-score masked attention (§6).
    ZeroMasked,
    /// NeurJudge code-wise attention (§6).
    Codewise,
    /// Hierarchical attention pooling (§7).
    HanPool,
    /// Feed-forward attention pooling (§7).
    FfPool,
    /// Self-attention sum (§7).
    SelfSum,
    /// Multi-head attention layer (§8).
    Mha,
    /// Location-based attention (§3).
    Location,
}

/// What the CLI knows about a variant.
struct Spec {
    name: &'static str,
    /// Tensors `run` reads from the `.safetensors` file, and those it reads when present.
    required: &'static [&'static str],
    optional: &'static [&'static str],
    /// Shapes and flags of `run`, for the help text.
    run_doc: &'static str,
    /// How a benchmark shape B,Hq,Hkv,Lq,Lk,Dk,Dv maps to the inputs, for the help text.
    bench_doc: &'static str,
}

const QKV: &[&str] = &["q", "k", "v"];
const MASKS: &[&str] = &["mask", "bias"];

/// Names of the multi-head attention weights (weight, bias) as `run` documents them and as
/// [`VariantInputs::with_layer`] stores their host copies.
const MHA_WEIGHTS: [(&str, &str); 4] = [
    ("q_proj.weight", "q_proj.bias"),
    ("k_proj.weight", "k_proj.bias"),
    ("v_proj.weight", "v_proj.bias"),
    ("out_proj.weight", "out_proj.bias"),
];

impl Variant {
    /// Every variant, in help-text order.
    pub const ALL: [Variant; 14] = [
        Variant::Sdpa,
        Variant::Dot,
        Variant::General,
        Variant::Additive,
        Variant::LocalM,
        Variant::LocalP,
        Variant::Hard,
        Variant::ZeroMasked,
        Variant::Codewise,
        Variant::HanPool,
        Variant::FfPool,
        Variant::SelfSum,
        Variant::Mha,
        Variant::Location,
    ];

    fn spec(self) -> Spec {
        type Names = &'static [&'static str];
        let (name, required, optional, run_doc, bench_doc): (_, Names, Names, _, _) = match self {
            Variant::Sdpa => (
                "sdpa",
                QKV,
                MASKS,
                "q [B,Hq,Lq,Dk] k [B,Hkv,Lk,Dk] v [B,Hkv,Lk,Dv] [mask bias], or the --q/--k/--v .npy files",
                "Q [B,Hq,Lq,Dk], K [B,Hkv,Lk,Dk], V [B,Hkv,Lk,Dv]",
            ),
            Variant::Dot => ("dot", QKV, MASKS, "as sdpa; --scale defaults to 1", "as sdpa, scale 1"),
            Variant::General => (
                "general",
                &["q", "k", "v", "w"],
                MASKS,
                "q k v [mask bias] as sdpa (q head dim Dq), w [Dq,Dk]; --scale defaults to 1",
                "as sdpa, W [Dk,Dk]",
            ),
            Variant::Additive => (
                "additive",
                &["q", "k", "v", "w_q", "w_k", "v_a"],
                &["b", "mask", "bias"],
                "q k v [mask bias] as sdpa, w_q [Da,Dq] w_k [Da,Dk] v_a [Da] (score vector) [b [Da]]; no --scale",
                "as sdpa, W_q and W_k [Da,Dk], b and v_a [Da] (Da = --da, default Dk)",
            ),
            Variant::LocalM => (
                "local-m",
                QKV,
                MASKS,
                "q k v [mask bias] as sdpa; --half-width W (required): keys with |j - i| <= W",
                "as sdpa, window W = --half-width (default 16)",
            ),
            Variant::LocalP => (
                "local-p",
                &["q", "k", "v", "w_p", "v_p"],
                MASKS,
                "q k v [mask bias] as sdpa, w_p [Dp,Dk] v_p [Dp]; --half-width W >= 1 (required); f32",
                "as sdpa, W_p [Da,Dk], v_p [Da], window W = --half-width (default 16)",
            ),
            Variant::Hard => (
                "hard",
                QKV,
                MASKS,
                "q k v [mask bias] as sdpa; --seed S (default 0); --indices FILE writes the sampled keys [B,Hq,Lq] as u32 .npy",
                "as sdpa, seed 0",
            ),
            Variant::ZeroMasked => (
                "zero-masked",
                &["c", "g"],
                &[],
                "c [B,Lc,H] g [B,Lg,H]; scores exactly 0 are masked",
                "C [B*Hq,Lq,Dk], G [B*Hq,Lk,Dk]",
            ),
            Variant::Codewise => (
                "codewise",
                &["c", "g"],
                &[],
                "c [B,Lc,H] g [B,Lg,H]; out [B,1,H], weights [B,Lc]",
                "C [B*Hq,Lq,Dk], G [B*Hq,Lk,Dk]",
            ),
            Variant::HanPool => (
                "han-pool",
                &["x", "w", "b", "u"],
                &["mask"],
                "x [B,L,D] w [D,Da] b [Da] u [Da] [mask [B,L] bool, true = the step takes part]",
                "X [B*Hq,Lq,Dk], W [Dk,Da], b and u [Da]",
            ),
            Variant::FfPool => (
                "ff-pool",
                &["x", "w"],
                &["b", "mask"],
                "x [B,L,D] w [D] [b [L] mask [B,L] bool]; --eps (default 1e-7, > 0)",
                "X [B*Hq,Lq,Dk], w [Dk], b [Lq]",
            ),
            Variant::SelfSum => ("self-sum", &["x"], &[], "x [B,L,D]", "X [B*Hq,Lq,Dk]"),
            Variant::Mha => (
                "mha",
                &["x_q"],
                &["x_kv", "key_padding_mask"],
                "x_q [B,Lq,E] [x_kv [B,Lk,Ekv] (default x_q), key_padding_mask [B,Lk] bool, true = the key \
                 takes part] and q_proj.weight/.bias k_proj.* v_proj.* out_proj.* (or in_proj_weight, \
                 in_proj_bias); --heads N (required), --kv-heads N (default N), --causal",
                "X_q [B,Lq,E], X_kv [B,Lk,E], E = Hq*Dk, Hq and Hkv heads of dim Dk (needs Dk = Dv)",
            ),
            Variant::Location => (
                "location",
                &["q", "h", "v", "w_a", "b_a", "w_c", "b_c"],
                &[],
                "q [B,Lq,Dq] h [B,Lq,Dh] v [B,Lk,Dv] w_a [Lk,Dq+Dh] b_a [Lk] w_c [Do,Dq+Dv] b_c [Do]; f32",
                "q and h [B*Hq,Lq,Dk], v [B*Hq,Lk,Dv], W_a [Lk,2Dk], W_c [Dv,Dk+Dv]",
            ),
        };
        Spec {
            name,
            required,
            optional,
            run_doc,
            bench_doc,
        }
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }
    /// Tensors `run` needs from the `.safetensors` file.
    pub fn required_tensors(self) -> &'static [&'static str] {
        self.spec().required
    }
    /// Tensors `run` uses when the file has them.
    pub fn optional_tensors(self) -> &'static [&'static str] {
        self.spec().optional
    }
    /// Whether the options of §1 (causal, window, scale, soft cap) apply.
    pub fn takes_attention_options(self) -> bool {
        !matches!(
            self,
            Variant::Codewise | Variant::HanPool | Variant::FfPool | Variant::SelfSum
        )
    }
    /// Whether the attention can run on either the fused or the staged path.
    pub fn has_kernel_choice(self) -> bool {
        matches!(
            self,
            Variant::Sdpa
                | Variant::Dot
                | Variant::General
                | Variant::Additive
                | Variant::LocalM
                | Variant::LocalP
                | Variant::ZeroMasked
                | Variant::Mha
        )
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Variant::ALL.into_iter().find(|v| v.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
            format!("unknown variant {s:?} (expected one of {})", names.join(", "))
        })
    }
}

fn help_table(intro: &str, doc: impl Fn(&Spec) -> &'static str) -> String {
    let mut s = format!("{intro}\n");
    for v in Variant::ALL {
        s += &format!("\n  {:<12} {}", v.name(), doc(&v.spec()));
    }
    s
}

/// The `run --variant` help: one line per variant with the tensor names of the `.safetensors`
/// file ([…] = optional) and the flags that apply.
pub fn run_help() -> String {
    help_table(
        "Attention variant. Variants other than sdpa and dot read their tensors from --safetensors FILE \
         under these names ([...] = optional; f32, or f16 where the variant supports it; bool masks: \
         true = takes part):",
        |s| s.run_doc,
    )
}

/// The `bench --variant` help: how a shape B,Hq,Hkv,Lq,Lk,Dk,Dv (or B,H,L,D) becomes each
/// variant's inputs (values in [-1, 1], weights scaled by 1/sqrt(fan-in)).
pub fn bench_help() -> String {
    help_table(
        "Attention variant to benchmark; repeatable (default: sdpa). A shape B,Hq,Hkv,Lq,Lk,Dk,Dv \
         (B,H,L,D: Hq = Hkv = H, Lq = Lk = L, Dk = Dv = D) becomes the inputs below (values in [-1, 1], \
         weights scaled by 1/sqrt(fan-in)); each row's note lists the actual input shapes. Variants \
         without a fused/staged choice (hard, codewise, the pooling ones, location) give one `gpu` row; \
         --causal and --window apply to all but codewise and the pooling ones. Multi-phase calls also \
         report each phase's time (phases_ms, needs GPU timestamps):",
        |s| s.bench_doc,
    )
}

/// Scalar parameters of a variant call.
#[derive(Debug, Clone)]
pub struct VariantParams {
    /// Options of §1 for the variants built on it (scale, soft cap, causal, window, kernel,
    /// `return_weights`, `return_lse`); tensor options come from the inputs (`mask`, `bias`).
    pub attention: AttentionOptions,
    /// Window half-width W of local-m and local-p.
    pub half_width: u32,
    /// Sampling seed of hard attention.
    pub seed: u64,
    /// ε of feed-forward pooling.
    pub eps: f32,
}

impl Default for VariantParams {
    fn default() -> Self {
        Self {
            attention: AttentionOptions::default(),
            half_width: 16,
            seed: 0,
            eps: FeedForwardOptions::default().eps,
        }
    }
}

/// Named host inputs of one variant (and, for `mha`, the layer).
#[derive(Debug, Clone)]
pub struct VariantInputs {
    variant: Variant,
    tensors: Vec<(String, HostTensor)>,
    layer: Option<MultiHeadAttention>,
}

impl VariantInputs {
    /// Inputs of `variant`; float tensors are converted to `dtype` (f32 or f16).
    pub fn new(variant: Variant, tensors: Vec<(String, HostTensor)>, dtype: DType) -> Self {
        let tensors = tensors.into_iter().map(|(n, t)| (n, t.converted(dtype))).collect();
        Self {
            variant,
            tensors,
            layer: None,
        }
    }

    /// Adds the multi-head attention layer (and host copies of its weights for the reference).
    pub fn with_layer(mut self, ctx: &Context, layer: MultiHeadAttention) -> Result<Self> {
        let w = layer.weights();
        for ((weight, bias), l) in MHA_WEIGHTS.into_iter().zip([&w.q, &w.k, &w.v, &w.out]) {
            self.set(weight, HostTensor::download(ctx, &l.weight)?);
            if let Some(b) = &l.bias {
                self.set(bias, HostTensor::download(ctx, b)?);
            }
        }
        self.layer = Some(layer);
        Ok(self)
    }

    fn set(&mut self, name: &str, t: HostTensor) {
        match self.tensors.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = t,
            None => self.tensors.push((name.to_string(), t)),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }
    /// Tensor `name`, when present.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// The dtype of the first tensor (the variant's main input).
    pub fn dtype(&self) -> DType {
        self.tensors.first().map_or(DType::F32, |(_, t)| t.dtype())
    }
    /// The reference tolerance of [`VariantInputs::dtype`].
    pub fn tolerance(&self) -> Tolerance {
        match self.dtype() {
            DType::F16 => Tolerance::F16,
            _ => Tolerance::F32,
        }
    }
    /// Bytes of every input tensor (weights included).
    pub fn bytes(&self) -> u64 {
        let size = |t: &HostTensor| (t.shape.iter().product::<usize>() * t.dtype().size()) as u64;
        self.tensors.iter().map(|(_, t)| size(t)).sum()
    }

    /// The shapes of the variant's own tensors (and the heads of `mha`), e.g. `c[4,16,8], g[4,16,8]`.
    pub fn describe(&self) -> String {
        let spec = self.variant.spec();
        let mut parts: Vec<String> = spec
            .required
            .iter()
            .chain(spec.optional)
            .filter_map(|&n| self.get(n).map(|t| format!("{n}{:?}", t.shape).replace(' ', "")))
            .collect();
        if let Some(layer) = &self.layer {
            let (hq, hkv, dh) = layer.heads();
            parts.push(format!("heads {hq}/{hkv} of dim {dh}"));
        }
        parts.join(", ")
    }

    fn require(&self, name: &'static str) -> Result<&HostTensor> {
        self.get(name)
            .ok_or_else(|| Error::Unsupported(format!("--variant {} needs the input tensor {name:?}", self.variant)))
    }

    fn dims<const N: usize>(&self, name: &'static str) -> Result<[usize; N]> {
        let t = self.require(name)?;
        t.shape.as_slice().try_into().map_err(|_| Error::Rank {
            name,
            expected: N,
            shape: t.shape.clone(),
        })
    }

    fn floats(&self, name: &'static str) -> Result<Vec<f32>> {
        let t = self.require(name)?;
        t.to_f32().ok_or(Error::DType {
            name,
            got: t.dtype(),
            expected: "f32 or f16",
        })
    }

    fn optional_floats(&self, name: &'static str) -> Result<Option<Vec<f32>>> {
        self.get(name).map(|_| self.floats(name)).transpose()
    }

    fn optional_bools(&self, name: &'static str) -> Result<Option<Vec<bool>>> {
        let Some(t) = self.get(name) else {
            return Ok(None);
        };
        match &t.data {
            HostData::Bool(v) => Ok(Some(v.clone())),
            _ => Err(Error::DType {
                name,
                got: t.dtype(),
                expected: "bool (true = takes part)",
            }),
        }
    }

    /// A mask or bias with its broadcast shape [B|1, H|1, Lq, Lk].
    fn broadcast<T>(
        &self,
        name: &'static str,
        data: impl Fn(&'static str) -> Result<Option<Vec<T>>>,
    ) -> Result<Option<(Vec<T>, [usize; 4])>> {
        Ok(data(name)?.zip(self.get(name).map(|t| files::broadcast_shape(&t.shape))))
    }

    fn upload(&self, ctx: &Context, name: &'static str) -> Result<Tensor> {
        self.require(name)?.upload(ctx)
    }

    fn upload_optional(&self, ctx: &Context, name: &'static str) -> Result<Option<Tensor>> {
        self.get(name).map(|t| t.upload(ctx)).transpose()
    }

    fn layer(&self) -> Result<&MultiHeadAttention> {
        self.layer.as_ref().ok_or_else(|| {
            Error::Unsupported("--variant mha needs the layer's weights (VariantInputs::with_layer)".into())
        })
    }
}

/// Reads the inputs of `variant` from a `.safetensors` file (names in [`run_help`]); float
/// tensors take the dtype of the first one. The `mha` layer is added with
/// [`VariantInputs::with_layer`] (e.g. from [`MultiHeadAttention::from_safetensors`]).
pub fn read_inputs(path: &Path, variant: Variant) -> Result<VariantInputs> {
    let bytes = files::read_all(path)?;
    let names = files::safetensors_names(path, &bytes)?;
    let has = |n: &str| names.iter().any(|x| x == n);
    if let Some(missing) = variant.required_tensors().iter().find(|n| !has(n)) {
        return Err(files::bad(
            path,
            format!("needs a tensor named {missing:?} (the file has: {})", names.join(", ")),
        ));
    }
    let tensors = variant
        .required_tensors()
        .iter()
        .chain(variant.optional_tensors())
        .filter(|n| has(n))
        .map(|&n| Ok((n.to_string(), files::read_safetensors_bytes(path, &bytes, n)?)))
        .collect::<Result<Vec<_>>>()?;
    let dtype = match tensors.first().map(|(_, t)| t.dtype()) {
        Some(DType::F16) => DType::F16,
        _ => DType::F32,
    };
    Ok(VariantInputs::new(variant, tensors, dtype))
}

/// Seeded inputs of `variant` for a benchmark shape (the mapping of [`bench_help`]): values in
/// [-1, 1], weights scaled by 1/√fan-in, rounded to `dtype`. `da` is the hidden size of
/// additive, local-p and han-pool.
pub fn random_inputs(
    ctx: &Context,
    variant: Variant,
    p: &Problem,
    da: usize,
    dtype: DType,
    seed: u64,
) -> Result<VariantInputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = |name: &str, shape: &[usize], fan_in: usize| -> (String, HostTensor) {
        let scale = 1.0 / (fan_in as f32).sqrt();
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect();
        let host = HostTensor {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        };
        (name.to_string(), host)
    };
    let Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk,
        dv,
    } = *p;
    // The [B, L, D] variants fold the heads into the batch.
    let n = b * hq;
    let [qs, ks, vs] = p.qkv_shapes();
    let mut tensors = Vec::new();
    if variant.required_tensors().starts_with(QKV) {
        tensors.extend([t("q", &qs, 1), t("k", &ks, 1), t("v", &vs, 1)]);
    }
    tensors.extend(match variant {
        Variant::General => vec![t("w", &[dk, dk], dk)],
        Variant::Additive => vec![
            t("w_q", &[da, dk], dk),
            t("w_k", &[da, dk], dk),
            t("v_a", &[da], da),
            t("b", &[da], dk),
        ],
        Variant::LocalP => vec![t("w_p", &[da, dk], dk), t("v_p", &[da], da)],
        Variant::ZeroMasked | Variant::Codewise => vec![t("c", &[n, lq, dk], 1), t("g", &[n, lk, dk], 1)],
        Variant::HanPool => vec![
            t("x", &[n, lq, dk], 1),
            t("w", &[dk, da], dk),
            t("b", &[da], dk),
            t("u", &[da], da),
        ],
        Variant::FfPool => vec![t("x", &[n, lq, dk], 1), t("w", &[dk], dk), t("b", &[lq], 1)],
        Variant::SelfSum => vec![t("x", &[n, lq, dk], 1)],
        Variant::Mha => {
            if dk != dv {
                return Err(Error::Unsupported(format!(
                    "mha benchmarks use Dk as the head dim and need Dk = Dv (got {dk} and {dv})"
                )));
            }
            // E = Hq·Dk: the query projection keeps the width, K and V project to Hkv·Dk.
            let (e, ekv) = (hq * dk, hkv * dk);
            let [(qw, qb), (kw, kb), (vw, vb), (ow, ob)] = MHA_WEIGHTS;
            vec![
                t("x_q", &[b, lq, e], 1),
                t("x_kv", &[b, lk, e], 1),
                t(qw, &[e, e], e),
                t(qb, &[e], e),
                t(kw, &[ekv, e], e),
                t(kb, &[ekv], e),
                t(vw, &[ekv, e], e),
                t(vb, &[ekv], e),
                t(ow, &[e, e], e),
                t(ob, &[e], e),
            ]
        }
        Variant::Location => vec![
            t("q", &[n, lq, dk], 1),
            t("h", &[n, lq, dk], 1),
            t("v", &[n, lk, dv], 1),
            t("w_a", &[lk, 2 * dk], 2 * dk),
            t("b_a", &[lk], 2 * dk),
            t("w_c", &[dv, dk + dv], dk + dv),
            t("b_c", &[dv], dk + dv),
        ],
        Variant::Sdpa | Variant::Dot | Variant::LocalM | Variant::Hard => Vec::new(),
    });
    let inputs = VariantInputs::new(variant, tensors, dtype);
    if variant != Variant::Mha {
        return Ok(inputs);
    }
    let linear = |(weight, bias): (&'static str, &'static str)| -> Result<Linear> {
        Ok(Linear {
            weight: inputs.upload(ctx, weight)?,
            bias: inputs.upload_optional(ctx, bias)?,
        })
    };
    let [q, k, v, out] = MHA_WEIGHTS;
    let weights = MhaWeights {
        q: linear(q)?,
        k: linear(k)?,
        v: linear(v)?,
        out: linear(out)?,
    };
    let layer = MultiHeadAttention::new(weights, hq, hkv)?;
    inputs.with_layer(ctx, layer)
}

/// GPU outputs by name: `out` always; `weights`, `lse`, `indices`, `positions` and `context`
/// where the variant returns them.
pub type Outputs = Vec<(&'static str, Tensor)>;
/// Downloaded [`Outputs`].
pub type HostOutputs = Vec<(&'static str, HostTensor)>;
/// Reference values of the checked outputs, by name.
pub type Expected = Vec<(&'static str, Vec<f64>)>;

fn named<O>(call: Prepared<O>, outputs: impl FnOnce(&O) -> Outputs) -> Prepared<Outputs> {
    let named = outputs(call.output());
    call.with_output(named)
}

fn attention_outputs(o: &AttentionOutput) -> Outputs {
    let mut named = vec![("out", o.out.clone())];
    named.extend(o.lse.clone().map(|t| ("lse", t)));
    named.extend(o.weights.clone().map(|t| ("weights", t)));
    named
}

fn pool_outputs(o: &PoolOutput) -> Outputs {
    vec![("out", o.out.clone()), ("weights", o.weights.clone())]
}

/// Uploads the inputs and prepares the variant's GPU call (validated by the family function).
pub fn prepare(ctx: &Context, inputs: &VariantInputs, params: &VariantParams) -> Result<Prepared<Outputs>> {
    let up = |name| inputs.upload(ctx, name);
    let opt = |name| inputs.upload_optional(ctx, name);
    let a = &params.attention;
    let qkv = || -> Result<([Tensor; 3], AttentionOptions)> {
        let opts = AttentionOptions {
            mask: opt("mask")?,
            bias: opt("bias")?,
            ..a.clone()
        };
        Ok(([up("q")?, up("k")?, up("v")?], opts))
    };
    Ok(match inputs.variant {
        Variant::Sdpa => {
            let ([q, k, v], o) = qkv()?;
            named(
                Attention::new(ctx, &q, &k, &v, &o)?.into_prepared("attention"),
                attention_outputs,
            )
        }
        Variant::Dot => {
            let ([q, k, v], o) = qkv()?;
            named(dot(ctx, &q, &k, &v, &o)?, attention_outputs)
        }
        Variant::General => {
            let ([q, k, v], o) = qkv()?;
            named(general(ctx, &q, &k, &v, &up("w")?, &o)?, attention_outputs)
        }
        Variant::Additive => {
            let ([q, k, v], o) = qkv()?;
            let w = AdditiveWeights {
                w_q: up("w_q")?,
                w_k: up("w_k")?,
                bias: opt("b")?,
                v: up("v_a")?,
            };
            named(additive(ctx, &q, &k, &v, &w, &o)?, attention_outputs)
        }
        Variant::LocalM => {
            let ([q, k, v], o) = qkv()?;
            named(local_m(ctx, &q, &k, &v, params.half_width, &o)?, attention_outputs)
        }
        Variant::LocalP => {
            let ([q, k, v], o) = qkv()?;
            let w = LocalPWeights {
                w_p: up("w_p")?,
                v_p: up("v_p")?,
            };
            named(local_p(ctx, &q, &k, &v, &w, params.half_width, &o)?, |o| {
                let mut named = attention_outputs(&o.attention);
                named.push(("positions", o.positions.clone()));
                named
            })
        }
        Variant::Hard => {
            let ([q, k, v], o) = qkv()?;
            named(hard(ctx, &q, &k, &v, params.seed, &o)?, |o| {
                vec![("out", o.out.clone()), ("indices", o.indices.clone())]
            })
        }
        Variant::ZeroMasked => named(zero_masked(ctx, &up("c")?, &up("g")?, a)?, attention_outputs),
        Variant::Codewise => named(codewise(ctx, &up("c")?, &up("g")?)?, pool_outputs),
        Variant::HanPool => {
            let w = HanWeights {
                w: up("w")?,
                b: up("b")?,
                u: up("u")?,
            };
            named(han(ctx, &up("x")?, &w, opt("mask")?.as_ref())?, pool_outputs)
        }
        Variant::FfPool => {
            let w = FeedForwardWeights {
                w: up("w")?,
                b: opt("b")?,
            };
            let o = FeedForwardOptions {
                mask: opt("mask")?,
                eps: params.eps,
            };
            named(feed_forward(ctx, &up("x")?, &w, &o)?, pool_outputs)
        }
        Variant::SelfSum => named(self_sum(ctx, &up("x")?)?, |o| vec![("out", o.out.clone())]),
        Variant::Mha => {
            let x_q = up("x_q")?;
            let x_kv = opt("x_kv")?.unwrap_or_else(|| x_q.clone());
            let o = MhaOptions {
                attention: AttentionOptions {
                    return_weights: false,
                    return_lse: false,
                    ..a.clone()
                },
                key_padding_mask: opt("key_padding_mask")?,
                average_weights: a.return_weights,
            };
            named(inputs.layer()?.forward(ctx, &x_q, &x_kv, &o)?, |o| {
                let mut named = vec![("out", o.out.clone())];
                named.extend(o.weights.clone().map(|w| ("weights", w)));
                named
            })
        }
        Variant::Location => {
            let w = LocationWeights {
                w_a: up("w_a")?,
                b_a: up("b_a")?,
                w_c: up("w_c")?,
                b_c: up("b_c")?,
            };
            named(location(ctx, &up("q")?, &up("h")?, &up("v")?, &w, a)?, |o| {
                vec![
                    ("out", o.out.clone()),
                    ("context", o.context.clone()),
                    ("weights", o.weights.clone()),
                ]
            })
        }
    })
}

/// Host copies of Q, K, V (+ mask and bias) of the variants built on §1.
struct QkvHost {
    problem: Problem,
    /// Head dim of Q (differs from Dk for the general and additive scores).
    dq: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Option<(Vec<bool>, [usize; 4])>,
    bias: Option<(Vec<f32>, [usize; 4])>,
}

impl QkvHost {
    fn load(inputs: &VariantInputs) -> Result<Self> {
        let [b, hq, lq, dq] = inputs.dims("q")?;
        let [_, hkv, lk, dk] = inputs.dims("k")?;
        let [.., dv] = inputs.dims::<4>("v")?;
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
            q: inputs.floats("q")?,
            k: inputs.floats("k")?,
            v: inputs.floats("v")?,
            mask: inputs.broadcast("mask", |n| inputs.optional_bools(n))?,
            bias: inputs.broadcast("bias", |n| inputs.optional_floats(n))?,
        })
    }

    fn inputs(&self) -> HostInputs<'_> {
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
fn attention_expected(r: ReferenceOutput, opts: &AttentionOptions) -> Expected {
    let mut e = vec![("out", r.out)];
    if opts.return_lse {
        e.push(("lse", r.lse));
    }
    if opts.return_weights {
        e.push(("weights", r.weights));
    }
    e
}

fn sdpa_expected(host: &HostInputs, opts: &AttentionOptions) -> Expected {
    attention_expected(reference::sdpa(host, opts), opts)
}

fn pool_expected(r: PoolReference) -> Expected {
    vec![("out", r.out), ("weights", r.weights)]
}

/// `opts` with the scale defaulting to 1 (dot and general scores).
fn unit_scale(opts: &AttentionOptions) -> AttentionOptions {
    AttentionOptions {
        scale: Some(opts.scale.unwrap_or(1.0)),
        ..opts.clone()
    }
}

fn gpu_output<'a>(gpu: Option<&'a HostOutputs>, name: &str) -> Option<&'a HostTensor> {
    gpu?.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
}

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

/// The CPU reference of the checked outputs. Pass inputs that [`prepare`] accepted (shapes are
/// not validated again). With the GPU outputs, local-p runs the reference at the GPU's positions
/// (and checks them separately) and hard attention accepts the GPU's pick at near ties.
pub fn reference(inputs: &VariantInputs, params: &VariantParams, gpu: Option<&HostOutputs>) -> Result<Expected> {
    let a = &params.attention;
    Ok(match inputs.variant {
        Variant::Sdpa => sdpa_expected(&QkvHost::load(inputs)?.inputs(), a),
        Variant::Dot => sdpa_expected(&QkvHost::load(inputs)?.inputs(), &unit_scale(a)),
        Variant::General => {
            let qkv = QkvHost::load(inputs)?;
            let w = inputs.floats("w")?;
            let host = HostInputs {
                score: HostScore::General { w: &w },
                ..qkv.inputs()
            };
            sdpa_expected(&host, &unit_scale(a))
        }
        Variant::Additive => {
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
            sdpa_expected(&HostInputs { score, ..qkv.inputs() }, a)
        }
        Variant::LocalM => {
            let opts = AttentionOptions {
                window: Some(Window::symmetric(params.half_width)),
                ..a.clone()
            };
            sdpa_expected(&QkvHost::load(inputs)?.inputs(), &opts)
        }
        Variant::LocalP => {
            let qkv = QkvHost::load(inputs)?;
            let (w_p, v_p) = (inputs.floats("w_p")?, inputs.floats("v_p")?);
            let positions = rf::local_p_positions(&qkv.q, qkv.dq, &w_p, &v_p, qkv.problem.lk);
            let centers = match gpu_output(gpu, "positions").and_then(HostTensor::to_f32) {
                Some(gpu_positions) => gpu_positions,
                None => positions.iter().map(|&x| x as f32).collect(),
            };
            let host = HostInputs {
                local: Some((&centers, params.half_width as f64, true)),
                ..qkv.inputs()
            };
            let mut e = sdpa_expected(&host, a);
            e.push(("positions", positions));
            e
        }
        Variant::Hard => hard_expected(&QkvHost::load(inputs)?.inputs(), a, params.seed, gpu),
        Variant::ZeroMasked => {
            let [b, lc, h] = inputs.dims("c")?;
            let [_, lg, _] = inputs.dims("g")?;
            let (c, g) = (inputs.floats("c")?, inputs.floats("g")?);
            let p = Problem {
                b,
                hq: 1,
                hkv: 1,
                lq: lc,
                lk: lg,
                dk: h,
                dv: h,
            };
            let opts = AttentionOptions {
                scale: Some(1.0),
                zero_score_mask: true,
                ..a.clone()
            };
            sdpa_expected(&HostInputs::new(p, &c, &g, &g), &opts)
        }
        Variant::Codewise => {
            let [b, lc, h] = inputs.dims("c")?;
            let [_, lg, _] = inputs.dims("g")?;
            pool_expected(rf::codewise(&inputs.floats("c")?, &inputs.floats("g")?, (b, lc, lg, h)))
        }
        Variant::HanPool => pool_expected(rf::han(
            &inputs.floats("x")?,
            inputs.dims("x")?.into(),
            &inputs.floats("w")?,
            &inputs.floats("b")?,
            &inputs.floats("u")?,
            inputs.optional_bools("mask")?.as_deref(),
        )),
        Variant::FfPool => pool_expected(rf::feed_forward(
            &inputs.floats("x")?,
            inputs.dims("x")?.into(),
            &inputs.floats("w")?,
            inputs.optional_floats("b")?.as_deref(),
            inputs.optional_bools("mask")?.as_deref(),
            params.eps as f64,
        )),
        Variant::SelfSum => vec![("out", rf::self_sum(&inputs.floats("x")?, inputs.dims("x")?.into()))],
        Variant::Mha => mha_expected(inputs, a)?,
        Variant::Location => {
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
                a,
            );
            vec![("out", r.out), ("context", r.context), ("weights", r.weights)]
        }
    })
}

fn mha_expected(inputs: &VariantInputs, opts: &AttentionOptions) -> Result<Expected> {
    let (hq, hkv, dh) = inputs.layer()?.heads();
    let [b, lq, e] = inputs.dims("x_q")?;
    let x_q = inputs.floats("x_q")?;
    let (x_kv, [_, lk, e_kv]) = match inputs.get("x_kv") {
        Some(_) => (inputs.floats("x_kv")?, inputs.dims("x_kv")?),
        None => (x_q.clone(), [b, lq, e]),
    };
    let weights = MHA_WEIGHTS
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

/// Every element as f32 (bool as 0/1, u32 rounded to the nearest f32).
fn values(t: &HostTensor) -> Vec<f32> {
    match &t.data {
        HostData::F32(v) => v.clone(),
        HostData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        HostData::Bool(v) => v.iter().map(|&x| f32::from(u8::from(x))).collect(),
        HostData::U32(v) => v.iter().map(|&x| x as f32).collect(),
    }
}

/// Compares each expected output with the GPU's (indices exactly, the rest within `tol`).
pub fn compare_outputs(
    got: &HostOutputs,
    expected: &Expected,
    tol: Tolerance,
) -> Result<Vec<(&'static str, Comparison)>> {
    expected
        .iter()
        .map(|&(name, ref e)| {
            let t = gpu_output(Some(got), name)
                .ok_or_else(|| Error::Unsupported(format!("the GPU call returned no {name:?} output")))?;
            let g = values(t);
            if g.len() != e.len() {
                return Err(Error::ShapeMismatch {
                    name,
                    expected: vec![e.len()],
                    got: vec![g.len()],
                });
            }
            let tol = match name {
                "indices" => Tolerance { abs: 0.0, rel: 0.0 },
                _ => tol,
            };
            Ok((name, reference::compare(&g, e, tol)))
        })
        .collect()
}

/// Downloads every output.
pub fn download(ctx: &Context, outputs: &Outputs) -> Result<HostOutputs> {
    outputs
        .iter()
        .map(|(name, t)| Ok((*name, HostTensor::download(ctx, t)?)))
        .collect()
}

/// Outputs of [`run_variant`].
#[derive(Debug, Clone)]
pub struct VariantRun {
    /// Every output, downloaded.
    pub outputs: HostOutputs,
    /// Each checked output against the CPU reference (empty without a check).
    pub checks: Vec<(&'static str, Comparison)>,
}

/// Runs a variant on its inputs, downloads the outputs and, with `check`, compares them with the
/// CPU reference (tolerance of the inputs' dtype).
pub fn run_variant(ctx: &Context, inputs: &VariantInputs, params: &VariantParams, check: bool) -> Result<VariantRun> {
    let outputs = download(ctx, &prepare(ctx, inputs, params)?.run()?)?;
    let checks = match check {
        true => compare_outputs(
            &outputs,
            &reference(inputs, params, Some(&outputs))?,
            inputs.tolerance(),
        )?,
        false => Vec::new(),
    };
    Ok(VariantRun { outputs, checks })
}
