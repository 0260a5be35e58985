//! `run` on packed variable-length sequences (`--cu-seqlens-q/-k`): the offsets and the packed
//! Q, K, V read from files, `attention_varlen` on the fused kernel, and with `--check` O and the
//! LSE compared with `reference::sdpa_varlen`.

use anyhow::{bail, Context as _, Result};
use wgpu_attention::bench::Variant;
use wgpu_attention::files::{self, HostTensor};
use wgpu_attention::reference::{self, Comparison, Tolerance};
use wgpu_attention::{Attention, AttentionOptions, Context, DType, Error, Varlen};

use crate::args::RunKernelArg;
use crate::call::with_notice;
use crate::run::RunArgs;
use crate::run_inputs::{attention_options, check_role, sdpa_inputs};
use crate::verdict::report_and_write;

/// `run` on packed variable-length sequences (`--cu-seqlens-q/-k`): sdpa or dot, no mask, bias
/// or weights, on the fused kernel.
pub fn run_varlen_cmd(a: &RunArgs, ctx: &Context, dtype: Option<DType>) -> Result<()> {
    let v = a.variant;
    if !matches!(v, Variant::Sdpa | Variant::Dot) {
        bail!("--cu-seqlens-q/--cu-seqlens-k apply to --variant sdpa and dot only, not {v}");
    }
    let masks = a.mask.is_some() || a.bias.is_some() || a.mask_name.is_some() || a.bias_name.is_some();
    if masks {
        bail!("--mask and --bias do not apply to packed sequences (--cu-seqlens-q): mask with --causal, --window or the offsets");
    }
    if a.weights.is_some() || matches!(a.kernel, RunKernelArg::Staged | RunKernelArg::Decode) {
        bail!("packed sequences (--cu-seqlens-q) run on the fused kernel: no --weights, --kernel auto or fused");
    }
    let (cu_q, cu_k) = match (&a.safetensors, &a.cu_seqlens_q_name, &a.cu_seqlens_k_name) {
        (Some(path), Some(nq), Some(nk)) => {
            let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
            (
                files::read_safetensors_offsets(path, &bytes, nq)?,
                files::read_safetensors_offsets(path, &bytes, nk)?,
            )
        }
        _ => match (&a.cu_seqlens_q, &a.cu_seqlens_k) {
            (Some(q), Some(k)) => (
                files::read_npy_offsets(q, "cu-seqlens-q")?,
                files::read_npy_offsets(k, "cu-seqlens-k")?,
            ),
            _ => bail!("give both --cu-seqlens-q and --cu-seqlens-k (or both names with --safetensors)"),
        },
    };
    let inputs = sdpa_inputs(a, dtype, ctx.limits().max_buffer_size)?;
    if let Some(name) = ["mask", "bias"].into_iter().find(|n| inputs.get(n).is_some()) {
        bail!("the file's {name} tensor does not apply to packed sequences (--cu-seqlens-q-name): mask with --causal, --window or the offsets");
    }
    let get = |name: &str| inputs.get(name).cloned().context(format!("missing {name}"));
    let run_inputs = VarlenRunInputs {
        q: get("q")?,
        k: get("k")?,
        v: get("v")?,
        cu_seqlens_q: cu_q,
        cu_seqlens_k: cu_k,
    };
    let mut opts = attention_options(a, ctx.limits().max_buffer_size)?;
    if v == Variant::Dot {
        opts.scale = Some(a.scale.unwrap_or(1.0));
    }
    let res = with_notice(|| run_varlen(ctx, &run_inputs, &opts, a.check))?;
    let mut shapes = vec![format!("out {:?} {}", res.out.shape, res.out.dtype())];
    shapes.extend(res.lse.as_ref().map(|l| format!("lse {:?} {}", l.shape, l.dtype())));
    println!("{v} (fused kernel, packed sequences): {}", shapes.join(", "));
    let outputs = [(&a.out, Some(&res.out)), (&a.lse, res.lse.as_ref())];
    report_and_write(&res.checks, &outputs, "output outside the reference tolerance")
}

/// Inputs of [`run_varlen`]: packed Q [total_q, Hq, Dk] (f32 or f16), K [total_k, Hkv, Dk] and
/// V [total_k, Hkv, Dv] in Q's dtype, and the B + 1 offsets of each side.
#[derive(Debug, Clone)]
pub struct VarlenRunInputs {
    /// Packed queries.
    pub q: HostTensor,
    /// Packed keys.
    pub k: HostTensor,
    /// Packed values.
    pub v: HostTensor,
    /// Query offsets.
    pub cu_seqlens_q: Vec<u32>,
    /// Key offsets.
    pub cu_seqlens_k: Vec<u32>,
}

/// Outputs of [`run_varlen`].
#[derive(Debug, Clone)]
pub struct VarlenRunOutputs {
    /// O [total_q, Hq, Dv] in Q's dtype.
    pub out: HostTensor,
    /// LSE [Hq, total_q] (f32), when requested.
    pub lse: Option<HostTensor>,
    /// O (and LSE when returned) against the CPU reference, when requested.
    pub checks: Vec<(&'static str, Comparison)>,
}

/// Runs variable-length attention (`wgpu_attention::attention_varlen`) on file inputs: `opts` gives
/// scale, softcap, causal, window, dropout and `return_lse`. With `check`, O and the LSE are
/// compared with `reference::sdpa_varlen` (tolerance of Q's dtype).
pub fn run_varlen(
    ctx: &Context,
    inputs: &VarlenRunInputs,
    opts: &AttentionOptions,
    check: bool,
) -> wgpu_attention::Result<VarlenRunOutputs> {
    let dtype = inputs.q.dtype();
    for (role, t) in [("q", &inputs.q), ("k", &inputs.k), ("v", &inputs.v)] {
        check_role(t, role, true)?;
        if t.dtype() != dtype {
            return Err(Error::DType {
                name: role,
                got: t.dtype(),
                expected: dtype.name(),
            });
        }
    }
    let seqs = Varlen::from_offsets(ctx, &inputs.cu_seqlens_q, &inputs.cu_seqlens_k)?;
    let (q, k, v) = (inputs.q.upload(ctx)?, inputs.k.upload(ctx)?, inputs.v.upload(ctx)?);
    let call = Attention::varlen(ctx, &q, &k, &v, &seqs, opts)?;
    call.submit()?;
    let res = call.output();
    let out = HostTensor::download(ctx, &res.out)?;
    let lse = res.lse.as_ref().map(|t| HostTensor::download(ctx, t)).transpose()?;
    let mut checks = Vec::new();
    if check {
        let f = |t: &HostTensor| t.to_f32().unwrap_or_default();
        let (qf, kf, vf) = (f(&inputs.q), f(&inputs.k), f(&inputs.v));
        let (qs, vs) = (q.shape(), v.shape());
        let expected = reference::sdpa_varlen(
            &reference::VarlenHostInputs {
                hq: qs[1],
                hkv: vs[1],
                dk: qs[2],
                dv: vs[2],
                q: &qf,
                k: &kf,
                v: &vf,
                cu_seqlens_q: &inputs.cu_seqlens_q,
                cu_seqlens_k: &inputs.cu_seqlens_k,
            },
            opts,
        );
        let tol = Tolerance::of(dtype);
        checks.push(("out", reference::compare(&f(&out), &expected.out, tol)));
        if let Some(l) = &lse {
            checks.push(("lse", reference::compare(&f(l), &expected.lse, tol)));
        }
    }
    Ok(VarlenRunOutputs { out, lse, checks })
}
