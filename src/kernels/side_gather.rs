//! Host side of `shaders/side_gather.wgsl`: a call's small read-only arrays (key lengths, local-p
//! centers, the additive score vector) gathered into one side buffer (`shaders/common/side.wgsl`),
//! so that the kernels reading them stay within the 8 storage buffers WebGPU guarantees.

use super::{dispatch_step, grid, params_buffer, BoundBuffer, Step};
use crate::context::Context;
use crate::error::Result;
use crate::pipeline::{self, BindingKind, Kernel, Switches};
use crate::tensor::DType;

/// Bindings: the uniform, three sources, the side buffer.
pub const BINDINGS: &[(u32, BindingKind)] = &[
    (0, BindingKind::Uniform),
    (1, BindingKind::Read),
    (2, BindingKind::Read),
    (3, BindingKind::Read),
    (4, BindingKind::ReadWrite),
];

/// Most arrays one side buffer gathers.
pub const MAX_PARTS: usize = 3;

const WORKGROUP: u32 = 64;

/// The gather's uniform; mirrors `struct Gather` in `shaders/side_gather.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    parts: [[u32; 4]; MAX_PARTS],
    total: u32,
    _pad: [u32; 3],
}

/// One array of a side buffer: `words` 32-bit words of `source` from word `first`, copied to
/// word `at` of the side buffer.
#[derive(Debug, Clone)]
pub(crate) struct SidePart {
    pub source: BoundBuffer,
    pub first: u32,
    pub words: u32,
    pub at: u32,
}

/// The dispatch copying `parts` (at most [`MAX_PARTS`]) into `side`; returns it and the bytes of
/// its uniform.
pub(crate) fn gather_step(ctx: &Context, parts: &[SidePart], side: &BoundBuffer) -> Result<(Step, u64)> {
    assert!(parts.len() <= MAX_PARTS, "at most {MAX_PARTS} side arrays");
    let mut params = GatherParams::default();
    for (slot, part) in params.parts.iter_mut().zip(parts) {
        *slot = [part.first, part.words, part.at, 0];
    }
    params.total = parts.iter().map(|p| p.at + p.words).max().unwrap_or(0);
    let uniform = params_buffer(ctx, &params);
    let kernel = pipeline::get(
        ctx,
        Kernel::SideGather,
        DType::F32,
        Switches::default(),
        &[("WORKGROUP", WORKGROUP as f64)],
    )?;
    let groups = grid(
        ctx,
        (params.total as u64).div_ceil(WORKGROUP as u64).max(1),
        "side_gather",
    )?;
    // Sources past the parts are never read: any of them stands in.
    let sources: Vec<&BoundBuffer> = (0..MAX_PARTS).map(|i| &parts[i.min(parts.len() - 1)].source).collect();
    let step = dispatch_step(
        ctx,
        kernel,
        &uniform,
        &[sources[0], sources[1], sources[2], side],
        groups,
    );
    Ok((step, uniform.size()))
}
