//! The attention family behind `wgpu-attention run --variant` and `bench --variant`, described by
//! data: one spec per variant (its tensors, outputs and the `run` flags that apply, the help
//! text, and three functions: seeded benchmark tensors, the GPU call and the CPU reference),
//! registered in one table in [`Variant::ALL`] order. The members live in one small module per
//! family module (`score`, `local`, `hard`, `neurjudge`, `pooling`, `mha`, `location`); the inputs
//! in `inputs` ([`read_inputs`] from a `.safetensors` file, [`random_inputs`] for a benchmark
//! shape); running and checking in `check` ([`run_variant`]).

use std::fmt;
use std::str::FromStr;

use crate::context::Context;
use crate::error::Result;
use crate::family::pooling::FeedForwardOptions;
use crate::options::{AttentionOptions, KernelChoice};
use crate::prepared::Prepared;
use crate::tensor::Tensor;

mod check;
mod hard;
mod inputs;
mod local;
mod location;
mod mha;
mod neurjudge;
mod pooling;
mod score;

pub use check::{compare_outputs, download, run_variant, VariantRun};
pub use inputs::{random_inputs, read_inputs, VariantInputs};
pub use mha::with_layer_from_inputs;

use inputs::RandomTensor;

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

/// A scalar option of `run` that a variant either applies (on the GPU and in the CPU reference
/// alike) or refuses. Output files (`--lse`, `--weights`, …) follow the variant's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// `--scale`: the score multiplier.
    Scale,
    /// `--softcap`: c·tanh(s/c).
    Softcap,
    /// `--causal`.
    Causal,
    /// `--window`.
    Window,
    /// `--dropout P` (with `--seed S` as the dropout seed).
    Dropout,
    /// `--kernel fused|staged`.
    Kernel,
    /// `--half-width W` (local windows).
    HalfWidth,
    /// `--seed` as the sampling seed (hard attention).
    Seed,
    /// `--eps` (feed-forward pooling).
    Eps,
    /// `--heads` / `--kv-heads` (multi-head attention).
    Heads,
    /// f16 inputs (`--dtype f16` or f16 tensors in the file).
    F16,
}

impl Flag {
    /// Every flag, in help-text order.
    pub const ALL: [Flag; 11] = [
        Flag::Scale,
        Flag::Softcap,
        Flag::Causal,
        Flag::Window,
        Flag::Dropout,
        Flag::Kernel,
        Flag::HalfWidth,
        Flag::Seed,
        Flag::Eps,
        Flag::Heads,
        Flag::F16,
    ];

    /// How the flag is spelled on the command line.
    pub fn cli(self) -> &'static str {
        match self {
            Flag::Scale => "--scale",
            Flag::Softcap => "--softcap",
            Flag::Causal => "--causal",
            Flag::Window => "--window",
            Flag::Dropout => "--dropout",
            Flag::Kernel => "--kernel",
            Flag::HalfWidth => "--half-width",
            Flag::Seed => "--seed",
            Flag::Eps => "--eps",
            Flag::Heads => "--heads",
            Flag::F16 => "--dtype f16",
        }
    }

    /// The flag with its arguments, for the help text.
    pub fn help(self) -> &'static str {
        match self {
            Flag::Scale => "--scale S",
            Flag::Softcap => "--softcap C",
            Flag::Causal => "--causal",
            Flag::Window => "--window L,R",
            Flag::Dropout => "--dropout P --seed S",
            Flag::Kernel => "--kernel",
            Flag::HalfWidth => "--half-width W",
            Flag::Seed => "--seed S",
            Flag::Eps => "--eps E",
            Flag::Heads => "--heads N --kv-heads N",
            Flag::F16 => "--dtype f16",
        }
    }
}

/// GPU outputs of a variant call, by name (`out` always; `lse`, `weights`, `indices`,
/// `positions`, `context` where the variant returns them), and the attention kernel that ran.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// The output tensors.
    pub tensors: Vec<(&'static str, Tensor)>,
    /// The path of the attention step, for the variants built on §1.
    pub kernel: Option<KernelChoice>,
}

impl Outputs {
    /// The tensors, by name.
    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, Tensor)> {
        self.tensors.iter()
    }
}

/// Downloaded [`Outputs`].
pub type HostOutputs = Vec<(&'static str, crate::files::HostTensor)>;
/// Reference values of the checked outputs, by name.
pub type Expected = Vec<(&'static str, Vec<f64>)>;

/// Prepares the variant's GPU call on uploaded inputs (validated by the family function).
type PrepareFn = fn(&Context, &VariantInputs, &VariantParams) -> Result<Prepared<Outputs>>;
/// The CPU reference of the checked outputs, optionally with the GPU's outputs (see [`reference`]).
type ReferenceFn = fn(&VariantInputs, &VariantParams, Option<&HostOutputs>) -> Result<Expected>;
/// The seeded tensors of a benchmark shape (besides Q, K, V for the variants that read them),
/// given the hidden size Da.
type RandomFn = fn(&crate::attention::Problem, usize) -> Result<Vec<RandomTensor>>;

/// What the CLI knows about a variant: the data every part of `run` and `bench` reads.
pub(super) struct Spec {
    variant: Variant,
    name: &'static str,
    /// Tensors `run` reads from the `.safetensors` file, and those it reads when present.
    required: &'static [&'static str],
    optional: &'static [&'static str],
    /// Shapes of the input tensors, for the help text.
    inputs_doc: &'static str,
    /// Every output the variant can return, with its shape (and when it is returned).
    outputs: &'static [(&'static str, &'static str)],
    /// The `run` flags that apply.
    flags: &'static [Flag],
    /// Whether GEMM stages feed the attention or pooling (each rounds to the storage type), which
    /// widens the check's tolerance as in the family tests (see [`VariantInputs::tolerance`]).
    chained: bool,
    /// Defaults and rules of those flags, for the help text.
    flags_doc: &'static str,
    /// How a benchmark shape B,Hq,Hkv,Lq,Lk,Dk,Dv maps to the inputs, for the help text.
    bench_doc: &'static str,
    random: RandomFn,
    prepare: PrepareFn,
    reference: ReferenceFn,
}

/// Every variant's spec, in [`Variant::ALL`] order.
static SPECS: [&Spec; 14] = [
    &score::SDPA,
    &score::DOT,
    &score::GENERAL,
    &score::ADDITIVE,
    &local::LOCAL_M,
    &local::LOCAL_P,
    &hard::HARD,
    &neurjudge::ZERO_MASKED,
    &neurjudge::CODEWISE,
    &pooling::HAN_POOL,
    &pooling::FF_POOL,
    &pooling::SELF_SUM,
    &mha::MHA,
    &location::LOCATION,
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

    fn spec(self) -> &'static Spec {
        let spec = SPECS[self as usize];
        debug_assert_eq!(spec.variant, self, "SPECS follows Variant::ALL");
        spec
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
    /// Every output the variant can return (`out` first), with its shape.
    pub fn outputs(self) -> &'static [(&'static str, &'static str)] {
        self.spec().outputs
    }
    /// Whether the variant can return output `name`.
    pub fn has_output(self, name: &str) -> bool {
        self.outputs().iter().any(|(n, _)| *n == name)
    }
    /// Whether `run` applies `flag` to this variant (otherwise it refuses it).
    pub fn accepts(self, flag: Flag) -> bool {
        self.spec().flags.contains(&flag)
    }
    /// Whether the options of §1 (causal, window, soft cap, dropout) apply.
    pub fn takes_attention_options(self) -> bool {
        self.accepts(Flag::Causal)
    }
    /// Whether GEMM stages chain into the attention or pooling (see [`VariantInputs::tolerance`]).
    pub fn chained(self) -> bool {
        self.spec().chained
    }
    /// Whether the attention can run on either the fused or the staged path.
    pub fn has_kernel_choice(self) -> bool {
        self.accepts(Flag::Kernel)
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

/// The `run --variant` help: for each variant its tensors (names in the `.safetensors` file,
/// […] = optional), its outputs with their shapes and the file flag that writes each, and the
/// flags that apply (every other flag is refused).
pub fn run_help() -> String {
    let mut s = String::from(
        "Attention variant. Variants other than sdpa and dot read their tensors from --safetensors FILE \
         under the names below ([...] = optional; f32, or f16 where --dtype f16 is listed; bool masks: \
         true = takes part). Outputs are written with --out and the flag named after each; every flag \
         not listed for a variant is refused.\n",
    );
    let pad = " ".repeat(15);
    for v in Variant::ALL {
        let spec = v.spec();
        s += &format!("\n  {:<12} in:  {}", spec.name, spec.inputs_doc);
        let outputs: Vec<String> = spec
            .outputs
            .iter()
            .map(|(name, shape)| format!("{name} {shape} (--{name})"))
            .collect();
        s += &format!("\n{pad}out: {}", outputs.join("; "));
        let flags: Vec<&str> = Flag::ALL
            .into_iter()
            .filter(|f| spec.flags.contains(f))
            .map(Flag::help)
            .collect();
        let flags = match flags.is_empty() {
            true => "none".to_string(),
            false => flags.join(", "),
        };
        let doc = match spec.flags_doc {
            "" => String::new(),
            d => format!("; {d}"),
        };
        s += &format!("\n{pad}flags: {flags}{doc}");
    }
    s
}

/// The `bench --variant` help: how a shape B,Hq,Hkv,Lq,Lk,Dk,Dv (or B,H,L,D) becomes each
/// variant's inputs (values in [-1, 1], weights scaled by 1/sqrt(fan-in)).
pub fn bench_help() -> String {
    let mut s = String::from(
        "Attention variant to benchmark; repeatable (default: sdpa). A shape B,Hq,Hkv,Lq,Lk,Dk,Dv \
         (B,H,L,D: Hq = Hkv = H, Lq = Lk = L, Dk = Dv = D) becomes the inputs below (values in [-1, 1], \
         weights scaled by 1/sqrt(fan-in)); each row's note lists the actual input shapes. Variants \
         without a fused/staged choice (hard, codewise, the pooling ones, location) give one `gpu` row; \
         --causal and --window apply to all but codewise and the pooling ones. Multi-phase calls also \
         report each phase's time (phases_ms, needs GPU timestamps):\n",
    );
    for v in Variant::ALL {
        s += &format!("\n  {:<12} {}", v.name(), v.spec().bench_doc);
    }
    s
}

/// Scalar parameters of a variant call.
#[derive(Debug, Clone)]
pub struct VariantParams {
    /// Options of §1 for the variants built on it (scale, soft cap, causal, window, dropout,
    /// kernel, `return_weights`, `return_lse`); tensor options come from the inputs (`mask`,
    /// `bias`).
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

/// Uploads the inputs and prepares the variant's GPU call (validated by the family function).
pub fn prepare(ctx: &Context, inputs: &VariantInputs, params: &VariantParams) -> Result<Prepared<Outputs>> {
    (inputs.variant().spec().prepare)(ctx, inputs, params)
}

/// The CPU reference of the checked outputs. Pass inputs that [`prepare`] accepted (shapes are
/// not validated again). With the GPU outputs, local-p runs the reference at the GPU's positions
/// (and checks them separately) and hard attention accepts the GPU's pick at near ties.
pub fn reference(inputs: &VariantInputs, params: &VariantParams, gpu: Option<&HostOutputs>) -> Result<Expected> {
    (inputs.variant().spec().reference)(inputs, params, gpu)
}

/// Names the outputs of a prepared call.
fn named<O>(call: Prepared<O>, outputs: impl FnOnce(&O) -> Outputs) -> Prepared<Outputs> {
    let named = outputs(call.output());
    call.with_output(named)
}

/// A GPU output by name.
fn gpu_output<'a>(gpu: Option<&'a HostOutputs>, name: &str) -> Option<&'a crate::files::HostTensor> {
    gpu?.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_follow_the_variant_order() {
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            assert_eq!(SPECS[i].variant, v);
            assert_eq!(v as usize, i);
            assert_eq!(v.outputs()[0].0, "out", "{v}");
        }
    }

    #[test]
    fn run_help_lists_every_output_shape() {
        let help = run_help();
        for v in Variant::ALL {
            for (name, shape) in v.outputs() {
                assert!(help.contains(&format!("{name} {shape}")), "{v} {name}");
            }
        }
    }
}
