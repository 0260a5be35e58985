//! `run --backward`: the forward for O and LSE, then the backward pass on tensor files (dQ, dK,
//! dV and dBias written as .npy), with `--check` every gradient compared with
//! `reference::sdpa_backward`.

use anyhow::{bail, Context as _, Result};
use wgpu_attention::bench::Variant;
use wgpu_attention::files::{self, broadcast_shape, HostData, HostTensor};
use wgpu_attention::reference::{self, Broadcast, Comparison, HostInputs, Tolerance};
use wgpu_attention::{Attention, AttentionBackward, AttentionOptions, Context, DType, Error, Tensor};

use crate::args::{DTypeArg, RunKernelArg};
use crate::call::{context, with_notice};
use crate::run::RunArgs;
use crate::run_inputs::{attention_options, check_role, sdpa_inputs};
use crate::verdict::report_and_write;

/// The flags of `run --backward`: refused without it, and the forward-only ones refused with it.
pub fn check_backward_flags(a: &RunArgs) -> Result<()> {
    let files = [
        ("--d-out", &a.d_out),
        ("--out-dq", &a.out_dq),
        ("--out-dk", &a.out_dk),
        ("--out-dv", &a.out_dv),
        ("--out-dbias", &a.out_dbias),
    ];
    if !a.backward {
        if let Some((flag, _)) = files.iter().find(|(_, p)| p.is_some()) {
            bail!("{flag} needs --backward");
        }
        return Ok(());
    }
    if a.variant != Variant::Sdpa {
        bail!("--backward applies to --variant sdpa only");
    }
    if a.kv_cache_mode() {
        bail!("--backward does not apply to a run over a KV cache");
    }
    if a.cu_seqlens_q.is_some() || a.cu_seqlens_q_name.is_some() {
        bail!("--backward does not apply to packed variable-length sequences (--cu-seqlens-q)");
    }
    if a.d_out.is_none() {
        bail!("--backward needs --d-out FILE.npy (the gradient of the loss with respect to the output)");
    }
    if a.weights.is_some() {
        bail!("--weights does not apply to --backward (it writes the gradients, not P)");
    }
    if a.kernel == RunKernelArg::Decode {
        bail!("--backward has no decode kernel: use --kernel fused, staged (f32) or auto");
    }
    if a.out_dbias.is_some() && a.bias.is_none() && a.bias_name.is_none() && a.safetensors.is_none() {
        bail!("--out-dbias needs a bias (--bias FILE.npy)");
    }
    Ok(())
}

/// `run --backward`: the forward for O and LSE, then dQ, dK, dV (and dBias) written to files.
pub fn backward_cmd(a: &RunArgs) -> Result<()> {
    let ctx = context()?;
    let max = ctx.limits().max_buffer_size;
    if let Some(path) = &a.safetensors {
        files::check_safetensors(path, max)?;
    }
    let inputs = sdpa_inputs(a, a.dtype.map(DTypeArg::dtype), max)?;
    let take = |name: &str| inputs.get(name).cloned();
    let run_inputs = RunInputs {
        q: take("q").context("missing q")?,
        k: take("k").context("missing k")?,
        v: take("v").context("missing v")?,
        mask: take("mask"),
        bias: take("bias"),
    };
    if a.out_dbias.is_some() && run_inputs.bias.is_none() {
        bail!("--out-dbias needs a bias (--bias FILE.npy, or a `bias` tensor in --safetensors)");
    }
    let d_out_path = a.d_out.as_deref().context("--backward needs --d-out")?;
    let d_out = files::read_npy_limited(d_out_path, "d_out", max)?;
    let opts = attention_options(a, max)?;
    let res = with_notice(|| run_attention_backward(&ctx, &run_inputs, &d_out, &opts, a.check))?;
    let shapes: Vec<String> = res
        .grads
        .iter()
        .map(|(n, t)| format!("{n} {:?} {}", t.shape, t.dtype()))
        .collect();
    let path = match a.kernel {
        RunKernelArg::Staged => "staged path: GEMMs over materialized P and dS",
        _ => "fused kernels",
    };
    println!("sdpa backward ({path}): {}", shapes.join(", "));
    let mut outputs = vec![(&a.out, Some(&res.out)), (&a.lse, Some(&res.lse))];
    for (flag, name) in [
        (&a.out_dq, "dq"),
        (&a.out_dk, "dk"),
        (&a.out_dv, "dv"),
        (&a.out_dbias, "dbias"),
    ] {
        if let Some((_, t)) = res.grads.iter().find(|(n, _)| *n == name) {
            outputs.push((flag, Some(t)));
        }
    }
    report_and_write(&res.checks, &outputs, "gradient outside the reference tolerance")
}

/// Inputs of [`run_attention_backward`]: Q, K, V and optional mask and bias, as read from files.
#[derive(Debug, Clone)]
pub struct RunInputs {
    /// Q [B, Hq, Lq, Dk] (f32 or f16; K, V and the bias are converted to its dtype).
    pub q: HostTensor,
    /// K [B, Hkv, Lk, Dk].
    pub k: HostTensor,
    /// V [B, Hkv, Lk, Dv].
    pub v: HostTensor,
    /// Boolean mask (true = takes part), [B|1, Hq|1, Lq, Lk] or [Lq, Lk].
    pub mask: Option<HostTensor>,
    /// Additive bias, same shapes as the mask.
    pub bias: Option<HostTensor>,
}

/// The checked inputs of a `run`: Q, K, V uploaded, the mask and bias (converted to Q's dtype)
/// uploaded into `opts`, and the converted bias for the reference. `extra` float operands (dO)
/// are checked like Q, K and V.
struct Uploaded {
    dtype: DType,
    qkv: [Tensor; 3],
    opts: AttentionOptions,
    bias: Option<HostTensor>,
}

fn upload_run_inputs(
    ctx: &Context,
    inputs: &RunInputs,
    extra: &[(&'static str, &HostTensor)],
    opts: &AttentionOptions,
) -> wgpu_attention::Result<Uploaded> {
    let operands = [("q", &inputs.q), ("k", &inputs.k), ("v", &inputs.v)];
    for (role, t) in operands.iter().chain(extra) {
        check_role(t, role, true)?;
        if t.shape.len() != 4 {
            return Err(Error::Rank {
                name: role,
                expected: 4,
                shape: t.shape.clone(),
            });
        }
    }
    let dtype = inputs.q.dtype();
    for (role, t) in [("k", &inputs.k), ("v", &inputs.v)] {
        if t.dtype() != dtype {
            return Err(Error::DType {
                name: role,
                got: t.dtype(),
                expected: dtype.name(),
            });
        }
    }
    if let Some(m) = &inputs.mask {
        check_role(m, "mask", false)?;
    }
    let bias = match &inputs.bias {
        Some(b) => {
            check_role(b, "bias", true)?;
            Some(b.converted(dtype))
        }
        None => None,
    };
    Ok(Uploaded {
        dtype,
        qkv: [inputs.q.upload(ctx)?, inputs.k.upload(ctx)?, inputs.v.upload(ctx)?],
        opts: AttentionOptions {
            mask: inputs.mask.as_ref().map(|m| m.upload(ctx)).transpose()?,
            bias: bias.as_ref().map(|b| b.upload(ctx)).transpose()?,
            ..opts.clone()
        },
        bias,
    })
}

/// Outputs of [`run_attention_backward`].
#[derive(Debug, Clone)]
pub struct BackwardRunOutputs {
    /// The forward's O [B, Hq, Lq, Dv] in Q's dtype.
    pub out: HostTensor,
    /// The forward's LSE [B, Hq, Lq] (f32).
    pub lse: HostTensor,
    /// `dq`, `dk`, `dv` and, with a bias, `dbias`, in Q's dtype.
    pub grads: Vec<(&'static str, HostTensor)>,
    /// Each gradient against the CPU reference, when requested.
    pub checks: Vec<(&'static str, Comparison)>,
}

/// Runs the forward (for O and LSE) and the backward pass of attention on file inputs and the
/// output gradient `d_out` [B, Hq, Lq, Dv] (converted to Q's dtype): `opts` gives scale, softcap,
/// causal, window, kernel and dropout (its tensor fields are filled here). With `check`, every
/// gradient is compared with the CPU reference.
pub fn run_attention_backward(
    ctx: &Context,
    inputs: &RunInputs,
    d_out: &HostTensor,
    opts: &AttentionOptions,
    check: bool,
) -> wgpu_attention::Result<BackwardRunOutputs> {
    let up = upload_run_inputs(ctx, inputs, &[("d_out", d_out)], opts)?;
    let (dtype, bias) = (up.dtype, up.bias);
    let [q, k, v] = up.qkv;
    let d_out = d_out.converted(dtype);
    let full = AttentionOptions {
        return_lse: true,
        return_weights: false,
        ..up.opts
    };
    let forward = Attention::new(ctx, &q, &k, &v, &full)?;
    let lse_t = forward
        .output()
        .lse
        .clone()
        .ok_or_else(|| Error::Unsupported("the forward returned no LSE".into()))?;
    let out_t = forward.output().out.clone();
    let backward = AttentionBackward::new(ctx, &q, &k, &v, &out_t, &d_out.upload(ctx)?, &lse_t, &full)?;
    forward.submit()?;
    let g = backward.run()?;
    let mut grads = vec![
        ("dq", HostTensor::download(ctx, &g.dq)?),
        ("dk", HostTensor::download(ctx, &g.dk)?),
        ("dv", HostTensor::download(ctx, &g.dv)?),
    ];
    if let Some(db) = &g.dbias {
        grads.push(("dbias", HostTensor::download(ctx, db)?));
    }
    let mut checks = Vec::new();
    if check {
        let (qf, kf, vf) = (
            inputs.q.to_f32().unwrap_or_default(),
            inputs.k.to_f32().unwrap_or_default(),
            inputs.v.to_f32().unwrap_or_default(),
        );
        let bias_f = bias.as_ref().and_then(|b| b.to_f32());
        let mask_b = match inputs.mask.as_ref().map(|m| &m.data) {
            Some(HostData::Bool(v)) => Some(v.as_slice()),
            _ => None,
        };
        let problem = wgpu_attention::validate(ctx, &q, &k, &v, &full)?;
        let host = HostInputs {
            bias: bias_f.as_deref().zip(bias.as_ref()).map(|(data, b)| Broadcast {
                data,
                shape: broadcast_shape(&b.shape),
            }),
            mask: mask_b.zip(inputs.mask.as_ref()).map(|(data, m)| Broadcast {
                data,
                shape: broadcast_shape(&m.shape),
            }),
            ..HostInputs::new(problem, &qf, &kf, &vf)
        };
        let expected = reference::sdpa_backward(&host, &full, &d_out.to_f32().unwrap_or_default())?;
        let tol = Tolerance::of(dtype);
        let mut want: Vec<(&'static str, &[f64])> =
            vec![("dq", &expected.dq), ("dk", &expected.dk), ("dv", &expected.dv)];
        if let Some(db) = &expected.dbias {
            want.push(("dbias", db));
        }
        for ((name, got), (_, want)) in grads.iter().zip(want) {
            checks.push((*name, reference::compare(&got.to_f32().unwrap_or_default(), want, tol)));
        }
    }
    Ok(BackwardRunOutputs {
        out: HostTensor::download(ctx, &out_t)?,
        lse: HostTensor::download(ctx, &lse_t)?,
        grads,
        checks,
    })
}
