//! `run --backward`: the forward for O and LSE, then the backward pass on tensor files (the work
//! is `wgpu_attention::bench::files::run_attention_backward`).

use anyhow::{bail, Context as _, Result};
use wgpu_attention::bench::Variant;
use wgpu_attention::files;

use super::{attention_options, cli_error, context, pipeline_notice, report_check, sdpa_inputs};
use super::{DTypeArg, RunArgs, RunKernelArg};

/// The flags of `run --backward`: refused without it, and the forward-only ones refused with it.
pub(crate) fn check_backward_flags(a: &RunArgs) -> Result<()> {
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
pub(crate) fn backward_cmd(a: &RunArgs) -> Result<()> {
    let ctx = context()?;
    let max = ctx.limits().max_buffer_size;
    if let Some(path) = &a.safetensors {
        files::check_safetensors(path, max)?;
    }
    let inputs = sdpa_inputs(a, a.dtype.map(DTypeArg::dtype), max)?;
    let take = |name: &str| inputs.get(name).cloned();
    let run_inputs = files::RunInputs {
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
    let notice = pipeline_notice();
    let opts = attention_options(a, max)?;
    let res = files::run_attention_backward(&ctx, &run_inputs, &d_out, &opts, a.check);
    drop(notice);
    let res = res.map_err(cli_error)?;
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
    let mut passed = true;
    for (name, c) in &res.checks {
        passed &= report_check(name, c);
    }
    let mut writes = vec![(&a.out, &res.out), (&a.lse, &res.lse)];
    for (flag, name) in [
        (&a.out_dq, "dq"),
        (&a.out_dk, "dk"),
        (&a.out_dv, "dv"),
        (&a.out_dbias, "dbias"),
    ] {
        if let Some((_, t)) = res.grads.iter().find(|(n, _)| *n == name) {
            writes.push((flag, t));
        }
    }
    for (path, t) in writes {
        if let Some(path) = path {
            files::write_npy(path, t)?;
            println!("wrote {}", path.display());
        }
    }
    if !passed {
        bail!("gradient outside the reference tolerance");
    }
    Ok(())
}
