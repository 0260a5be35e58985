//! `warm-up`: the pipelines of call shapes compiled ahead of their first use.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use wgpu_attention::{bench, AttentionOptions, Problem};

use crate::args::{CausalArg, DTypeArg, DesignArg, RunKernelArg};
use crate::call::context;

#[derive(Args)]
pub struct WarmUpArgs {
    /// Problem shape B,Hq,Hkv,Lq,Lk,Dk,Dv (or B,H,L,D, or B,Hq,Hkv,L,D); repeatable.
    #[arg(long = "shape", value_name = "SHAPE", value_parser = bench::parse_shape, required = true)]
    shapes: Vec<Problem>,
    /// Storage dtype.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Causal variants; repeatable (default: none).
    #[arg(long = "causal", value_enum)]
    causal: Vec<CausalArg>,
    /// Kernel paths; repeatable (default: auto, the fused kernel).
    #[arg(long = "kernel", value_enum)]
    kernels: Vec<RunKernelArg>,
    /// Design of the fused kernel (default: the library's choice for the adapter).
    #[arg(long, value_enum, default_value = "auto")]
    design: DesignArg,
    /// Also compile the backward kernels of each call (the fast code of the default tile; on
    /// lavapipe minutes cold, which first calls otherwise avoid with quick code).
    #[arg(long)]
    backward: bool,
}

pub fn warm_up_cmd(a: &WarmUpArgs) -> Result<()> {
    if a.design == DesignArg::All {
        bail!("--design all applies to bench (one row per design); warm-up takes one design");
    }
    let ctx = context()?;
    let causal = if a.causal.is_empty() {
        vec![CausalArg::None]
    } else {
        a.causal.clone()
    };
    let kernels = if a.kernels.is_empty() {
        vec![RunKernelArg::Auto]
    } else {
        a.kernels.clone()
    };
    for p in &a.shapes {
        for &c in &causal {
            for &k in &kernels {
                let opts = AttentionOptions {
                    causal: c.alignment(),
                    kernel: k.choice(),
                    design: a.design.design(),
                    ..Default::default()
                };
                let started = std::time::Instant::now();
                wgpu_attention::Attention::warm_up(&ctx, p, a.dtype.dtype(), &opts)?;
                if a.backward {
                    let bopts = wgpu_attention::BackwardOptions::default();
                    wgpu_attention::AttentionBackward::warm_up(&ctx, p, a.dtype.dtype(), &opts, &bopts)?;
                }
                println!(
                    "{p} {} causal={} kernel={}{}: ready in {:.2} s",
                    a.dtype.dtype().name(),
                    c.to_possible_value().map_or("?".into(), |v| v.get_name().to_string()),
                    k.to_possible_value().map_or("?".into(), |v| v.get_name().to_string()),
                    if a.backward { " with backward" } else { "" },
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(())
}
