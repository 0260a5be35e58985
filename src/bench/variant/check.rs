//! Running a variant, downloading its outputs and comparing them with the CPU reference.

use super::{gpu_output, prepare, reference, Expected, HostOutputs, Outputs, VariantInputs, VariantParams};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::files::{HostData, HostTensor};
use crate::options::KernelChoice;
use crate::reference::{self, Comparison, Tolerance};

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
    /// The path of the attention step, for the variants built on §1.
    pub kernel: Option<KernelChoice>,
    /// Each checked output against the CPU reference (empty without a check).
    pub checks: Vec<(&'static str, Comparison)>,
}

/// Runs a variant on its inputs, downloads the outputs and, with `check`, compares them with the
/// CPU reference (tolerance of the inputs' dtype).
pub fn run_variant(ctx: &Context, inputs: &VariantInputs, params: &VariantParams, check: bool) -> Result<VariantRun> {
    let gpu = prepare(ctx, inputs, params)?.run()?;
    let outputs = download(ctx, &gpu)?;
    let checks = match check {
        true => compare_outputs(
            &outputs,
            &reference(inputs, params, Some(&outputs))?,
            inputs.tolerance(),
        )?,
        false => Vec::new(),
    };
    Ok(VariantRun {
        outputs,
        kernel: gpu.kernel,
        checks,
    })
}
