//! `run`: attention (any variant of the family) on tensors from .npy or .safetensors files, its
//! flags checked against the variant first; KV-cache mode, packed sequences and `--backward`
//! hand over to [`crate::run_kv_cache`], [`crate::run_varlen`] and [`crate::run_backward`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use wgpu_attention::bench::variant::{self, Flag, VariantParams};
use wgpu_attention::bench::Variant;
use wgpu_attention::files;
use wgpu_attention::DType;

use crate::args::{parse_window, CausalArg, DTypeArg, DesignArg, RunKernelArg};
use crate::call::{cli_error, context, with_notice};
use crate::run_backward::{backward_cmd, check_backward_flags};
use crate::run_inputs::{attention_options, sdpa_inputs};
use crate::run_kv_cache::run_kv_cache_cmd;
use crate::run_varlen::run_varlen_cmd;
use crate::verdict::{kernel_name, report_and_write};

#[derive(Args)]
pub struct RunArgs {
    /// Attention variant; all but sdpa and dot read --safetensors (see --help for the tensor names,
    /// the output shapes and the flags of each).
    #[arg(long, value_name = "VARIANT", default_value = "sdpa", long_help = variant::run_help())]
    pub variant: Variant,
    /// Q [B, Hq, Lq, Dk] as .npy (f32 or f16; sdpa and dot).
    #[arg(long, value_name = "FILE.npy")]
    pub q: Option<PathBuf>,
    /// K [B, Hkv, Lk, Dk] as .npy.
    #[arg(long, value_name = "FILE.npy")]
    pub k: Option<PathBuf>,
    /// V [B, Hkv, Lk, Dv] as .npy.
    #[arg(long, value_name = "FILE.npy")]
    pub v: Option<PathBuf>,
    /// Boolean mask as .npy (true = the key takes part), [B|1, Hq|1, Lq, Lk] or [Lq, Lk].
    #[arg(long, value_name = "FILE.npy")]
    pub mask: Option<PathBuf>,
    /// Additive bias as .npy, same shapes as the mask.
    #[arg(long, value_name = "FILE.npy")]
    pub bias: Option<PathBuf>,
    /// Read the tensors from a .safetensors file instead (sdpa and dot: names --q-name etc.; other
    /// variants: the names of --variant's help).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["q", "k", "v", "mask", "bias"])]
    pub safetensors: Option<PathBuf>,
    #[arg(long, default_value = "q")]
    pub q_name: String,
    #[arg(long, default_value = "k")]
    pub k_name: String,
    #[arg(long, default_value = "v")]
    pub v_name: String,
    /// Name of the mask tensor in the .safetensors file (used when present, or required when given).
    #[arg(long)]
    pub mask_name: Option<String>,
    /// Name of the bias tensor in the .safetensors file (used when present, or required when given).
    #[arg(long)]
    pub bias_name: Option<String>,
    /// Packed variable-length sequences (sdpa and dot): query offsets [B+1] as a 1-D .npy of
    /// uint32, int32 or int64 (first 0, nondecreasing). Q, K, V are then packed [total, H, D]
    /// tensors; out is [total_q, Hq, Dv], lse [Hq, total_q]; causal and windows align per sequence.
    #[arg(
        long,
        value_name = "FILE.npy",
        requires = "cu_seqlens_k",
        conflicts_with = "safetensors"
    )]
    pub cu_seqlens_q: Option<PathBuf>,
    /// Key offsets [B+1] of packed sequences, as --cu-seqlens-q.
    #[arg(
        long,
        value_name = "FILE.npy",
        requires = "cu_seqlens_q",
        conflicts_with = "safetensors"
    )]
    pub cu_seqlens_k: Option<PathBuf>,
    /// Name of the query offsets in the .safetensors file (packed sequences; U32, I32 or I64).
    #[arg(long, requires_all = ["cu_seqlens_k_name", "safetensors"])]
    pub cu_seqlens_q_name: Option<String>,
    /// Name of the key offsets in the .safetensors file (packed sequences).
    #[arg(long, requires_all = ["cu_seqlens_q_name", "safetensors"])]
    pub cu_seqlens_k_name: Option<String>,
    /// Storage dtype the float inputs are converted to (default: the dtype of the first input).
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// Kernel path (variants with a fused/staged choice).
    #[arg(long, value_enum, default_value = "auto")]
    pub kernel: RunKernelArg,
    /// Design of the fused kernel.
    #[arg(long, value_enum, default_value = "auto")]
    pub design: DesignArg,
    /// Causal mask alignment (`--causal` alone: top-left).
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "top-left")]
    pub causal: CausalArg,
    /// Sliding window LEFT,RIGHT (`-` = unbounded), aligned like the causal mask.
    #[arg(long, value_parser = parse_window, allow_hyphen_values = true)]
    pub window: Option<(Option<u32>, Option<u32>)>,
    /// Score scale (default 1/sqrt(Dk); dot and general: 1).
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<f32>,
    /// Soft cap c > 0: scores become c·tanh(s/c).
    #[arg(long, allow_hyphen_values = true)]
    pub softcap: Option<f32>,
    /// Dropout on the attention weights: each is kept with probability 1 - P and scaled by
    /// 1/(1 - P), P in [0, 1); the mask comes from --seed (default 0), reproduced by --check.
    #[arg(long, value_name = "P", allow_hyphen_values = true)]
    pub dropout: Option<f32>,
    /// Write the main output `out` as .npy (shapes in --variant's help).
    #[arg(long, value_name = "FILE.npy")]
    pub out: Option<PathBuf>,
    /// Write the LSE (f32) as .npy.
    #[arg(long, value_name = "FILE.npy")]
    pub lse: Option<PathBuf>,
    /// Write the weights (f32) as .npy: P (staged path), the pooling weights, mha's weights averaged
    /// over heads, location's a.
    #[arg(long, value_name = "FILE.npy")]
    pub weights: Option<PathBuf>,
    /// Write the sampled key indices (hard) as u32 .npy; 4294967295 (u32::MAX) marks a row with no
    /// visible key.
    #[arg(long, value_name = "FILE.npy")]
    pub indices: Option<PathBuf>,
    /// Write the predicted positions p_i [B, Hq, Lq] (local-p) as f32 .npy.
    #[arg(long, value_name = "FILE.npy")]
    pub positions: Option<PathBuf>,
    /// Write the context a·v [B, Lq, Dv] (location) as .npy.
    #[arg(long, value_name = "FILE.npy")]
    pub context: Option<PathBuf>,
    /// Window half-width W (local-m, local-p; required there).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub half_width: Option<i64>,
    /// Sampling seed (hard), or the dropout seed with --dropout (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// ε of the normalization (ff-pool; default 1e-7, must be > 0).
    #[arg(long, allow_negative_numbers = true)]
    pub eps: Option<f32>,
    /// Query heads (mha; required there).
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Key/value heads (mha; default: --heads).
    #[arg(long, value_name = "N")]
    pub kv_heads: Option<usize>,
    /// ALiBi slopes, f32 [Hq] or [B, Hq] (.npy, or a tensor name with --safetensors; sdpa and
    /// dot; every path: fused designs, staged, decode, KV cache, varlen, backward).
    #[arg(long, value_name = "FILE|NAME")]
    pub alibi_slopes: Option<String>,
    /// KV-cache mode (sdpa; FlashAttention's flash_attn_with_kvcache): rows already in each
    /// sequence, u32 [B] (.npy or a tensor name with --safetensors; int32/int64 accepted). --k and
    /// --v are then the cache, [B, Hkv, C, D] or pages [N, P, Hkv, D] with --block-table.
    /// Default with the other cache flags: every sequence full.
    #[arg(long, value_name = "FILE|NAME")]
    pub cache_seqlens: Option<String>,
    /// KV-cache mode: the page ids of every sequence, u32 [B, pages_per_seq]; --k/--v are pages.
    #[arg(long, value_name = "FILE|NAME")]
    pub block_table: Option<String>,
    /// KV-cache mode: rows per page (checked against the pages' shape).
    #[arg(long, value_name = "N")]
    pub page_size: Option<usize>,
    /// KV-cache mode: new keys [B, Hkv, Lnew, Dk] appended at each sequence's length first.
    #[arg(long, value_name = "FILE|NAME")]
    pub k_new: Option<String>,
    /// KV-cache mode: new values [B, Hkv, Lnew, Dv] (with --k-new).
    #[arg(long, value_name = "FILE|NAME")]
    pub v_new: Option<String>,
    /// KV-cache mode: write K of the cache after the append as .npy, in the layout and dtype of
    /// --k ([B, Hkv, C, D], or pages [N, P, Hkv, D]): the --k of the next step.
    #[arg(long, value_name = "FILE.npy")]
    pub out_k_cache: Option<PathBuf>,
    /// KV-cache mode: write V of the cache after the append, like --out-k-cache.
    #[arg(long, value_name = "FILE.npy")]
    pub out_v_cache: Option<PathBuf>,
    /// KV-cache mode: write the sequence lengths after the append, u32 [B] (the next step's
    /// --cache-seqlens).
    #[arg(long, value_name = "FILE.npy")]
    pub out_cache_seqlens: Option<PathBuf>,
    /// KV-cache mode: rotary table cos θ, f32 [max_positions, rotary_dim / 2]; Q row i and new key
    /// row r of sequence b are rotated at positions len_b + i and len_b + r.
    #[arg(long, value_name = "FILE|NAME")]
    pub rotary_cos: Option<String>,
    /// KV-cache mode: rotary table sin θ (with --rotary-cos).
    #[arg(long, value_name = "FILE|NAME")]
    pub rotary_sin: Option<String>,
    /// Rotary pairs (2i, 2i + 1) (GPT-J) instead of (i, i + rotary_dim / 2) (GPT-NeoX, Llama).
    #[arg(long)]
    pub rotary_interleaved: bool,
    /// Compare the outputs with the CPU reference and print the errors and PASS/FAIL (non-zero
    /// exit on FAIL).
    #[arg(long)]
    pub check: bool,
    /// Run the backward pass after the forward (sdpa): reads --d-out, writes --out-dq, --out-dk,
    /// --out-dv (and --out-dbias with a bias); --check compares every gradient with the reference.
    #[arg(long)]
    pub backward: bool,
    /// dO [B, Hq, Lq, Dv] as .npy, the gradient of the loss with respect to the output (--backward).
    #[arg(long, value_name = "FILE.npy")]
    pub d_out: Option<PathBuf>,
    /// Write dQ [B, Hq, Lq, Dk] as .npy (--backward).
    #[arg(long, value_name = "FILE.npy")]
    pub out_dq: Option<PathBuf>,
    /// Write dK [B, Hkv, Lk, Dk] as .npy (--backward).
    #[arg(long, value_name = "FILE.npy")]
    pub out_dk: Option<PathBuf>,
    /// Write dV [B, Hkv, Lk, Dv] as .npy (--backward).
    #[arg(long, value_name = "FILE.npy")]
    pub out_dv: Option<PathBuf>,
    /// Write dBias (the bias's shape) as .npy (--backward with --bias).
    #[arg(long, value_name = "FILE.npy")]
    pub out_dbias: Option<PathBuf>,
}

impl RunArgs {
    /// Whether a KV-cache flag is given.
    pub fn kv_cache_mode(&self) -> bool {
        [
            &self.cache_seqlens,
            &self.block_table,
            &self.k_new,
            &self.v_new,
            &self.rotary_cos,
            &self.rotary_sin,
        ]
        .iter()
        .any(|f| f.is_some())
            || [&self.out_k_cache, &self.out_v_cache, &self.out_cache_seqlens]
                .iter()
                .any(|f| f.is_some())
            || self.page_size.is_some()
            || self.rotary_interleaved
    }
}

pub fn run_cmd(a: &RunArgs) -> Result<()> {
    if a.design == DesignArg::All {
        bail!("--design all applies to bench (one row per design); run takes one design");
    }
    check_backward_flags(a)?;
    if a.kv_cache_mode() {
        return run_kv_cache_cmd(a);
    }
    check_run_flags(a)?;
    if a.backward {
        return backward_cmd(a);
    }
    let v = a.variant;
    let dtype = a.dtype.map(DTypeArg::dtype);
    let ctx = context()?;
    if let Some(path) = &a.safetensors {
        // Tensors larger than the device can hold are refused from the header, before reading.
        files::check_safetensors(path, ctx.limits().max_buffer_size)?;
    }
    if a.cu_seqlens_q.is_some() || a.cu_seqlens_q_name.is_some() {
        return run_varlen_cmd(a, &ctx, dtype);
    }
    let mut inputs = match v {
        Variant::Sdpa | Variant::Dot => sdpa_inputs(a, dtype, ctx.limits().max_buffer_size)?,
        _ => {
            let path = a
                .safetensors
                .as_deref()
                .with_context(|| format!("--variant {v} reads its tensors from --safetensors FILE"))?;
            let inputs = variant::read_inputs(path, v, dtype).with_context(|| format!("--variant {v}"))?;
            note_unused_tensors(path, v)?;
            inputs
        }
    };
    if inputs.dtype() == DType::F16 && !v.accepts(Flag::F16) {
        bail!("--variant {v} is f32 only, the inputs are f16: pass --dtype f32 to convert them");
    }
    let defaults = VariantParams::default();
    let attention = attention_options(a, ctx.limits().max_buffer_size)?;
    let params = VariantParams {
        attention,
        half_width: a.half_width.map_or(0, |w| w as u32),
        seed: a.seed.unwrap_or(defaults.seed),
        eps: a.eps.unwrap_or(defaults.eps),
    };
    if v == Variant::Mha {
        let path = a
            .safetensors
            .as_deref()
            .context("--variant mha reads --safetensors FILE")?;
        let (heads, kv_heads) = mha_heads(a, path)?;
        inputs = variant::with_layer_from_inputs(&ctx, inputs, heads, kv_heads)
            .map_err(cli_error)
            .with_context(|| format!("--variant {v}"))?;
    }
    let res = with_notice(|| variant::run_variant(&ctx, &inputs, &params, a.check))?;
    let shapes: Vec<String> = res
        .outputs
        .iter()
        .map(|(n, t)| format!("{n} {:?} {}", t.shape, t.dtype()))
        .collect();
    let kernel = res
        .kernel
        .map_or(String::new(), |k| format!(" ({} kernel)", kernel_name(k)));
    println!("{v}{kernel}: {}", shapes.join(", "));
    let outputs: Vec<_> = output_files(a)
        .into_iter()
        .map(|(path, name)| (path, res.outputs.iter().find(|(n, _)| *n == name).map(|(_, t)| t)))
        .collect();
    report_and_write(&res.checks, &outputs, "output outside the reference tolerance")
}

/// Every output file flag with the output it writes.
fn output_files(a: &RunArgs) -> [(&Option<PathBuf>, &'static str); 6] {
    [
        (&a.out, "out"),
        (&a.lse, "lse"),
        (&a.weights, "weights"),
        (&a.indices, "indices"),
        (&a.positions, "positions"),
        (&a.context, "context"),
    ]
}

/// Refuses a flag the chosen variant does not apply, or a value outside its range, in one line
/// naming the flag (before any file is read or any device is created).
fn check_run_flags(a: &RunArgs) -> Result<()> {
    let v = a.variant;
    let qkv_files = matches!(v, Variant::Sdpa | Variant::Dot);
    let npy = [&a.q, &a.k, &a.v, &a.mask, &a.bias].iter().any(|p| p.is_some());
    let names = a.q_name != "q" || a.k_name != "k" || a.v_name != "v" || a.mask_name.is_some() || a.bias_name.is_some();
    if npy && !qkv_files {
        bail!("--q/--k/--v/--mask/--bias do not apply to --variant {v} (it reads --safetensors FILE)");
    }
    if names && !qkv_files {
        bail!("--q-name/--k-name/--v-name/--mask-name/--bias-name do not apply to --variant {v}");
    }
    if a.alibi_slopes.is_some() && !qkv_files {
        bail!("--alibi-slopes does not apply to --variant {v} (sdpa and dot take it)");
    }
    let given = [
        (Flag::Scale, a.scale.is_some()),
        (Flag::Softcap, a.softcap.is_some()),
        (Flag::Causal, a.causal != CausalArg::None),
        (Flag::Window, a.window.is_some()),
        (Flag::Dropout, a.dropout.is_some()),
        (Flag::Kernel, a.kernel != RunKernelArg::Auto),
        (Flag::HalfWidth, a.half_width.is_some()),
        (Flag::Eps, a.eps.is_some()),
        (Flag::Heads, a.heads.is_some() || a.kv_heads.is_some()),
        (Flag::F16, a.dtype == Some(DTypeArg::F16)),
    ];
    if let Some((flag, _)) = given.iter().find(|(flag, given)| *given && !v.accepts(*flag)) {
        bail!(
            "{} does not apply to --variant {v}{}",
            flag.cli(),
            refusal_reason(v, *flag)
        );
    }
    if a.seed.is_some() && !v.accepts(Flag::Seed) {
        match v.accepts(Flag::Dropout) {
            true if a.dropout.is_none() => {
                bail!("--seed is the dropout seed of --variant {v}: give --dropout P too")
            }
            true => {}
            false => bail!("--seed does not apply to --variant {v}"),
        }
    }
    let outputs: Vec<&str> = v.outputs().iter().map(|(n, _)| *n).collect();
    for (path, name) in output_files(a) {
        if path.is_some() && !v.has_output(name) {
            bail!(
                "--{name} does not apply to --variant {v}: it returns {}",
                outputs.join(", ")
            );
        }
    }
    if a.weights.is_some() && matches!(a.kernel, RunKernelArg::Fused | RunKernelArg::Decode) {
        let k = if a.kernel == RunKernelArg::Fused {
            "fused"
        } else {
            "decode"
        };
        bail!("--weights needs the staged path: use --kernel staged (or auto); the {k} kernel never materializes the weights");
    }
    // Values, in the CLI's words (the library would name its option fields).
    if let Some(s) = a.scale.filter(|s| !s.is_finite()) {
        bail!("--scale must be finite, got {s}");
    }
    if let Some(c) = a.softcap.filter(|c| !(c.is_finite() && *c > 0.0)) {
        bail!("--softcap must be finite and > 0, got {c}");
    }
    if let Some(p) = a.dropout.filter(|p| !(p.is_finite() && (0.0..1.0).contains(p))) {
        bail!("--dropout must be in [0, 1), got {p}");
    }
    if let Some(e) = a.eps.filter(|e| !(e.is_finite() && *e > 0.0)) {
        bail!("--eps must be finite and > 0, got {e}");
    }
    if v.accepts(Flag::HalfWidth) {
        let min = if v == Variant::LocalP { 1 } else { 0 };
        match a.half_width {
            None => bail!("--variant {v} needs --half-width N"),
            Some(w) if w < min => bail!("--half-width must be at least {min} for --variant {v}, got {w}"),
            Some(w) if w > u32::MAX as i64 => bail!("--half-width must be at most {}, got {w}", u32::MAX),
            Some(_) => {}
        }
    }
    if v.accepts(Flag::Heads) {
        let heads = a.heads.context("--variant mha needs --heads N")?;
        let kv_heads = a.kv_heads.unwrap_or(heads);
        if heads == 0 || kv_heads == 0 {
            bail!("--heads and --kv-heads must be at least 1");
        }
        if !heads.is_multiple_of(kv_heads) {
            bail!("--heads {heads} must be a multiple of --kv-heads {kv_heads}");
        }
    }
    Ok(())
}

/// Why a variant refuses a flag, when the reason is not just "it has no such option".
fn refusal_reason(v: Variant, flag: Flag) -> &'static str {
    match (v, flag) {
        (Variant::Additive | Variant::ZeroMasked, Flag::Scale) => " (its scores are not scaled)",
        (Variant::Location, Flag::Scale) => " (the location scores W_a [q; h] + b_a are not scaled)",
        (Variant::LocalM, Flag::Window) => " (its window is --half-width)",
        (Variant::Hard, Flag::Dropout) => " (it samples one key per row)",
        (_, Flag::F16) => " (f32 only)",
        (_, Flag::Kernel) => " (it has one GPU path)",
        _ => "",
    }
}

/// The heads of `--variant mha`, checked against the weights' rows in the CLI's words.
fn mha_heads(a: &RunArgs, path: &Path) -> Result<(usize, usize)> {
    let heads = a.heads.context("--variant mha needs --heads N")?;
    let kv_heads = a.kv_heads.unwrap_or(heads);
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let names = files::safetensors_names(path, &bytes)?;
    let rows = |name: &str| -> Result<Option<usize>> {
        match names.iter().any(|n| n == name) {
            true => Ok(files::read_safetensors_bytes(path, &bytes, name)?
                .shape
                .first()
                .copied()),
            false => Ok(None),
        }
    };
    let (q_rows, k_rows, q_name) = match rows("in_proj_weight")? {
        Some(r) => (r / 3, r / 3, "in_proj_weight's query block"),
        None => match (rows("q_proj.weight")?, rows("k_proj.weight")?) {
            (Some(q), Some(k)) => (q, k, "q_proj.weight"),
            // Missing weights: the layer's loader names them.
            _ => return Ok((heads, kv_heads)),
        },
    };
    let divisors = |n: usize| -> String {
        let d: Vec<String> = (1..=n)
            .filter(|d| n.is_multiple_of(*d))
            .map(|d| d.to_string())
            .collect();
        d.join(", ")
    };
    if !q_rows.is_multiple_of(heads) {
        bail!(
            "--heads {heads} does not divide the {q_rows} rows of {q_name} (rows = heads x head dim): \
             use one of {}",
            divisors(q_rows)
        );
    }
    let dh = q_rows / heads;
    if k_rows != kv_heads * dh {
        let hint = match k_rows.is_multiple_of(dh) {
            true => format!(": use --kv-heads {}", k_rows / dh),
            false => String::new(),
        };
        bail!(
            "--kv-heads {kv_heads} of head dim {dh} ({q_rows} rows of {q_name} / --heads {heads}) needs \
             {} rows in the key projection, it has {k_rows}{hint}",
            kv_heads * dh
        );
    }
    Ok((heads, kv_heads))
}

/// Tensors of the file that another variant would read but this one ignores: a one-line note on
/// stderr, so that a mask meant for another variant is not silently dropped.
fn note_unused_tensors(path: &Path, v: Variant) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let used: Vec<&str> = v
        .required_tensors()
        .iter()
        .chain(v.optional_tensors())
        .copied()
        .collect();
    let known = |n: &str| {
        Variant::ALL
            .iter()
            .any(|o| o.required_tensors().contains(&n) || o.optional_tensors().contains(&n))
    };
    let unused: Vec<String> = files::safetensors_names(path, &bytes)?
        .into_iter()
        .filter(|n| known(n) && !used.contains(&n.as_str()))
        .collect();
    if !unused.is_empty() {
        eprintln!(
            "note: --variant {v} does not read the tensors {} of {}",
            unused.join(", "),
            path.display()
        );
    }
    Ok(())
}
