//! Which design of the fused kernel serves a call: the caller's [`Design`], else the tuning
//! cache's fastest, else the device's natural one; a design that cannot serve the call falls
//! back (coopmat → tiled → register) with the reason kept for the caller and the bench table.

use super::{Extras, Problem, Tuning};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::flash_forward::FusedBindings;
use crate::kernels::{self, Code, CoopmatConfig, FlashConfig, Step, TiledConfig};
use crate::options::{AttentionOptions, Design};
use crate::tensor::DType;

/// A fused design with its tile.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FusedKernel {
    /// The register design's tile and which code runs it (quick first calls unless the tile
    /// was given).
    Register(FlashConfig, Code),
    Tiled(TiledConfig),
    Coopmat(CoopmatConfig),
}

impl FusedKernel {
    pub fn design(&self) -> Design {
        match self {
            FusedKernel::Register(..) => Design::Register,
            FusedKernel::Tiled(_) => Design::Tiled,
            FusedKernel::Coopmat(_) => Design::Coopmat,
        }
    }

    /// The dispatch of this design over the fused kernels' shared bindings.
    pub fn step(&self, ctx: &Context, dtype: DType, bindings: &FusedBindings) -> Result<Step> {
        match *self {
            FusedKernel::Register(cfg, code) => kernels::flash_forward::step(ctx, cfg, code, dtype, bindings),
            FusedKernel::Tiled(cfg) => kernels::flash_tiled::step(ctx, cfg, dtype, bindings),
            FusedKernel::Coopmat(cfg) => kernels::flash_coopmat::step(ctx, cfg, dtype, bindings),
        }
    }
}

/// The tile as the bench table shows it.
impl std::fmt::Display for FusedKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FusedKernel::Register(c, _) => write!(f, "wg{} rows{}", c.workgroup, c.rows),
            FusedKernel::Tiled(c) => write!(f, "q{} k{} lanes{}", c.block_q, c.block_k, c.lanes),
            FusedKernel::Coopmat(c) => write!(f, "q{} k{} wg{}", c.block_q, c.block_k, c.workgroup),
        }
    }
}

/// The design and tile a fused call runs, and why it is not the one asked for (if so).
pub(crate) struct DesignPick {
    pub kernel: FusedKernel,
    pub note: Option<String>,
}

/// The design that runs the fused call when the caller names none: an explicit tile in `tuning`
/// names its design; then the tuning cache's fastest measured design for the shape class; then
/// register on CPU adapters (no workgroup memory, rows in registers), coopmat on GPUs that can
/// run it for this call (cooperative matrices, f16 storage) and tiled on other GPUs.
fn preferred(
    ctx: &Context,
    p: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
    extras: &Extras,
    tuning: &Tuning,
) -> Design {
    if tuning.flash.is_some() {
        return Design::Register;
    }
    if tuning.tiled.is_some() {
        return Design::Tiled;
    }
    if tuning.coopmat.is_some() {
        return Design::Coopmat;
    }
    let runnable: Vec<Design> = Design::ALL
        .into_iter()
        .filter(|&d| unsupported(ctx, d, p, dtype, extras).is_none())
        .collect();
    if let Some(d) = crate::tune::fastest_design(ctx, p, dtype, opts, &runnable) {
        return d;
    }
    match kernels::policy::is_cpu(ctx) {
        true => Design::Register,
        false if runnable.contains(&Design::Coopmat) => Design::Coopmat,
        false => Design::Tiled,
    }
}

/// The fused designs this device runs for `dtype` storage with the dot-product score, in
/// [`Design::ALL`] order (register always). A design listed here may still fall back for one
/// call (for example coopmat for head dims that are not a multiple of its matrix size).
///
/// ```
/// # fn main() -> Result<(), wgpu_attention::Error> {
/// use wgpu_attention::{available_designs, Context, DType, Design};
/// let ctx = Context::new()?;
/// assert!(available_designs(&ctx, DType::F32).contains(&Design::Register));
/// # Ok(()) }
/// ```
pub fn available_designs(ctx: &Context, dtype: DType) -> Vec<Design> {
    Design::ALL
        .into_iter()
        .filter(|&d| match d {
            Design::Register => true,
            Design::Tiled => kernels::flash_tiled::unsupported(ctx, false).is_none(),
            _ => kernels::flash_coopmat::device_unsupported(ctx, dtype).is_none(),
        })
        .collect()
}

/// Why `design` cannot serve the call, or `None`.
fn unsupported(ctx: &Context, design: Design, p: &Problem, dtype: DType, extras: &Extras) -> Option<String> {
    let additive = extras.score_vector.is_some();
    match design {
        Design::Register => None,
        Design::Tiled => kernels::flash_tiled::unsupported(ctx, additive),
        _ => kernels::flash_coopmat::unsupported(ctx, p, dtype, additive),
    }
}

/// The design after falling back from `design` (coopmat → tiled → register).
fn fallback(design: Design) -> Design {
    match design {
        Design::Coopmat => Design::Tiled,
        _ => Design::Register,
    }
}

/// The design and tile of a fused call.
pub(crate) fn pick(
    ctx: &Context,
    p: &Problem,
    dtype: DType,
    opts: &AttentionOptions,
    extras: &Extras,
    tuning: &Tuning,
) -> Result<DesignPick> {
    let requested = opts
        .design
        .unwrap_or_else(|| preferred(ctx, p, dtype, opts, extras, tuning));
    let mut design = requested;
    let mut why_not = None;
    while let Some(why) = unsupported(ctx, design, p, dtype, extras) {
        why_not.get_or_insert(why);
        design = fallback(design);
    }
    let note = why_not.map(|why| format!("{requested} design unavailable ({why}); ran {design}"));
    let kernel = match design {
        Design::Tiled => FusedKernel::Tiled(match tuning.tiled {
            Some(c) => c,
            None => crate::tune::tiled_config(ctx, p, dtype, opts)?,
        }),
        Design::Coopmat => FusedKernel::Coopmat(match tuning.coopmat {
            Some(c) => c,
            None => crate::tune::coopmat_config(ctx, p, dtype, opts)?,
        }),
        _ => match tuning.flash {
            Some(c) => FusedKernel::Register(c, Code::Fast),
            None => FusedKernel::Register(
                crate::tune::flash_config(ctx, p, dtype, opts)?,
                Code::QuickUntilCompiled,
            ),
        },
    };
    Ok(DesignPick { kernel, note })
}
