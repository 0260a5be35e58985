//! Host side of `shaders/masked_softmax.wgsl`: one workgroup per score row.

use super::{check_workgroup, dispatch_step, grid, BoundBuffer, Params, Step};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::{self, BindingKind, Kernel, Switches};
use crate::tensor::DType;

/// Bindings: params, S/P (in place), LSE, bias, mask, the side buffer (key lengths, local-p
/// centers), then the ALiBi slopes uniform when given.
pub(crate) const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::ReadWrite),
    (2, BindingKind::ReadWrite),
    (8, BindingKind::Read),
    (9, BindingKind::Read),
    (10, BindingKind::Read),
];

/// [`BINDINGS`], then the ALiBi slopes (14) with ALiBi.
pub(crate) fn bindings(s: Switches) -> Vec<(u32, BindingKind)> {
    let mut bindings = BINDINGS.to_vec();
    bindings.extend(s.alibi.then_some((14, BindingKind::Uniform)));
    bindings
}

/// Invocations per row (a power of two).
pub const DEFAULT_WORKGROUP: u32 = 64;

#[allow(clippy::too_many_arguments, reason = "one buffer per shader binding")]
pub(crate) fn step(
    ctx: &Context,
    workgroup: u32,
    dtype: DType,
    p: &Params,
    params: &wgpu::Buffer,
    scores: &BoundBuffer,
    lse: &BoundBuffer,
    masks: [&BoundBuffer; 3],
    alibi: Option<&BoundBuffer>,
) -> Result<Step> {
    if !workgroup.is_power_of_two() {
        return Err(Error::InvalidOption {
            name: "softmax workgroup",
            value: workgroup as f64,
            why: "must be a power of two",
        });
    }
    check_workgroup(ctx, workgroup, 2 * workgroup as u64 * 4)?;
    let switches = Switches {
        alibi: alibi.is_some(),
        ..Switches::default()
    };
    let kernel = pipeline::get(
        ctx,
        Kernel::MaskedSoftmax,
        dtype,
        switches,
        &[("WORKGROUP", workgroup as f64)],
    )?;
    let groups = grid(ctx, p.bh_count as u64 * p.len_q as u64, "masked_softmax")?;
    let [bias, mask, side] = masks;
    let mut buffers = vec![scores, lse, bias, mask, side];
    buffers.extend(alibi);
    Ok(dispatch_step(ctx, kernel, params, &buffers, groups))
}
