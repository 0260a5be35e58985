//! `shader`: the composed WGSL of any kernel permutation, exactly as its pipelines compile it
//! (markers `//#line FILE LINE` name where each stretch of it comes from), or the permutation
//! table.

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Args;
use wgpu_attention::pipeline::{self, axes, default_switches, Kernel};

use crate::args::{DTypeArg, DesignArg};

#[derive(Args)]
pub struct ShaderArgs {
    /// The kernel: its entry file in shaders/ (`flash_forward`, `flash_decode_lanes`, …, `.wgsl`
    /// optional), or `attention` for the fused design --design picks. Without it, the kernels
    /// and the values each of their switches takes are listed.
    kernel: Option<String>,
    /// Storage element type.
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// With `attention`: the fused design (default register).
    #[arg(long, value_enum)]
    design: Option<DesignArg>,
    /// A switch, NAME=VALUE (repeatable): rows, vec4_io, subgroup, additive, local, alibi, paged,
    /// coop, slots, compact (0 or 1 for the flags), and direct=1 for the backward kernels that
    /// read dO from its tensor. Switches not set keep the kernel's defaults.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

pub fn shader_cmd(a: &ShaderArgs) -> Result<()> {
    let Some(name) = &a.kernel else {
        print!("{}", table());
        return Ok(());
    };
    let mut sets = Vec::new();
    for s in &a.set {
        let (n, v) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("--set {s}: expected NAME=VALUE"))?;
        let v: u32 = v
            .trim()
            .parse()
            .with_context(|| format!("--set {s}: the value is a number"))?;
        sets.push((n.trim().to_string(), v));
    }
    let direct = sets.iter().any(|(n, v)| n == "direct" && *v == 1);
    let stem = match (name.as_str(), a.design) {
        ("attention", None | Some(DesignArg::Register | DesignArg::Auto)) => "flash_forward",
        ("attention", Some(DesignArg::Tiled)) => "flash_tiled",
        ("attention", Some(DesignArg::Coopmat)) => "flash_coopmat",
        ("attention", Some(DesignArg::All)) => bail!("--design all names no single kernel"),
        (_, Some(_)) => bail!("--design goes with the kernel `attention`"),
        (stem, None) => stem,
    };
    let kernel = Kernel::named(stem, direct).ok_or_else(|| {
        anyhow!(
            "no kernel `{name}`{}; the kernels:\n{}",
            if direct { " with direct=1" } else { "" },
            table()
        )
    })?;
    let mut switches = default_switches(kernel);
    for (n, v) in sets.iter().filter(|(n, _)| n != "direct") {
        switches = switches.with(n, *v).map_err(|e| anyhow!("--set {n}={v}: {e}"))?;
    }
    let dtype = a.dtype.dtype();
    let source = pipeline::compose_switches(kernel, dtype, switches)
        .map_err(|e| anyhow!("{e}\n{}: {}", kernel.file(), values(kernel)))?;
    print!("{source}");
    Ok(())
}

/// One line per kernel: its entry file, storage types and the values of each switch it takes.
fn table() -> String {
    let mut out = String::new();
    for kernel in Kernel::ALL {
        let dtypes: Vec<&str> = kernel.dtypes().iter().map(|d| d.name()).collect();
        let direct = if kernel.direct() { " direct=1" } else { "" };
        out.push_str(&format!(
            "{:<26} {:<8} {}{direct}\n",
            kernel.file().trim_end_matches(".wgsl"),
            dtypes.join(","),
            values(kernel)
        ));
    }
    out
}

/// The switches a kernel takes and their values, from the permutation table.
fn values(kernel: Kernel) -> String {
    let a = axes(kernel);
    let list = |v: &[u32]| match v {
        [first, .., last] if v.len() > 2 && (*last - *first) as usize + 1 == v.len() => format!("{first}..{last}"),
        _ => v.iter().map(u32::to_string).collect::<Vec<_>>().join("|"),
    };
    let flags = |v: &[bool]| v.iter().map(|&b| (b as u32).to_string()).collect::<Vec<_>>().join("|");
    let mut parts = Vec::new();
    let mut num = |name: &str, v: &[u32]| {
        if v != [0] {
            parts.push(format!("{name}={}", list(v)));
        }
    };
    num("rows", a.rows);
    num("subgroup", a.subgroup);
    num("coop", a.coop);
    num("slots", a.slots);
    for (name, v) in [
        ("vec4_io", a.vec4_io),
        ("additive", a.additive),
        ("local", a.local),
        ("alibi", a.alibi),
        ("paged", a.paged),
        ("compact", a.compact),
    ] {
        if v != [false] {
            parts.push(format!("{name}={}", flags(v)));
        }
    }
    match parts.is_empty() {
        true => "(no switches)".to_string(),
        false => parts.join(" "),
    }
}
