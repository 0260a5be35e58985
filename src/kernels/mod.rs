//! Host side of the kernels: one module per shader (bindings, override constants, dispatch size),
//! plus the small helpers every launch needs (bindings, dispatch grids, recorded steps). The uniforms
//! they share are in [`params`], the device policy (what is decided per adapter) in [`policy`], the
//! shared GEMM tile in [`gemm_tile`].

pub mod additive_hidden;
pub mod bindings;
pub mod flash_backward;
pub mod flash_coopmat;
pub mod flash_decode;
pub mod flash_forward;
pub mod flash_tiled;
pub mod gemm;
pub mod gemm_coopmat;
pub mod gemm_register;
pub mod gemm_tile;
pub mod hard_attention;
pub mod kv_write;
pub mod masked_softmax;
pub mod params;
pub mod policy;
pub mod pool;
pub mod qk_scores;
pub mod side_gather;
pub mod weighted_sum;

pub use bindings::{bindings, storage_count, STORAGE_BUDGET};
pub use flash_backward::BackwardConfig;
pub use flash_coopmat::CoopmatConfig;
pub use flash_decode::DecodeConfig;
pub use flash_forward::FlashConfig;
pub use flash_tiled::TiledConfig;
pub use gemm_tile::GemmTile;
pub use params::{flags, PageParams, Params, Strides};
/// Moved to [`policy::STAGED_CPU_MAX_KEYS`]; this alias goes in the next release.
#[doc(hidden)]
pub use policy::STAGED_CPU_MAX_KEYS;
// For the pipeline cache and the benchmark harness, which still name it here.
pub(crate) use policy::is_cpu;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::pipeline::CompiledKernel;
use crate::tensor::Tensor;

/// A stride coprime with `pairs` near `pairs` / φ: visiting pair p · stride mod pairs spreads the
/// (b, h) pairs evenly over the dispatch order. Drivers that hand each thread a contiguous range
/// of workgroups (lavapipe) then give every thread a fair share of a batch of uneven sequence
/// lengths, instead of one thread all the long ones. 1 (identity) when the product could
/// overflow 32 bits.
pub(crate) fn pair_stride(pairs: u32) -> u32 {
    if pairs <= 2 || pairs > u16::MAX as u32 {
        return 1;
    }
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut s = ((pairs as f64) * 0.618_034).round() as u32;
    while gcd(s, pairs) != 1 {
        s += 1;
    }
    s
}

/// A buffer range bound to one slot.
#[derive(Debug, Clone)]
pub(crate) struct BoundBuffer {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl BoundBuffer {
    /// The whole of `buffer`.
    pub fn whole(buffer: &wgpu::Buffer) -> Self {
        Self {
            buffer: buffer.clone(),
            offset: 0,
            size: buffer.size(),
        }
    }
}

/// The binding range of a tensor and the element offset of its first element inside that range.
///
/// The range starts at the tensor's offset rounded down to the device's storage-offset alignment
/// and ends after the last reachable element (rounded up to 4 bytes).
pub(crate) fn bind_tensor(ctx: &Context, t: &Tensor, name: &'static str) -> Result<(BoundBuffer, u32)> {
    t.check_device(name, ctx)?;
    let (start, size) = binding_window(ctx, t.buffer(), t.offset(), t.end_byte());
    let max = ctx.limits().max_storage_buffer_binding_size;
    if size > max {
        return Err(Error::Limit {
            what: format!("binding {name} ({} bytes)", size),
            limit: "max_storage_buffer_binding_size",
            needed: size,
            max,
        });
    }
    if !t.buffer().usage().contains(wgpu::BufferUsages::STORAGE) {
        return Err(Error::BufferUsage {
            name,
            needed: wgpu::BufferUsages::STORAGE,
            has: t.buffer().usage(),
        });
    }
    let elem = ((t.offset() - start) / t.dtype().size() as u64) as u32;
    Ok((
        BoundBuffer {
            buffer: t.buffer().clone(),
            offset: start,
            size,
        },
        elem,
    ))
}

/// The binding range `(start, size)` covering bytes `[from, to)` of `buffer`: the start rounded
/// down to the device's storage-offset alignment, the end up to 4 bytes (at least 4 bytes).
pub(crate) fn binding_window(ctx: &Context, buffer: &wgpu::Buffer, from: u64, to: u64) -> (u64, u64) {
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let start = from / align * align;
    let end = crate::tensor::padded_size(to).min(buffer.size());
    (start, end.max(start + 4) - start)
}

/// A 16-byte storage buffer bound to the slots of inputs a call does not use (a fresh one, so it
/// never aliases a buffer the dispatch writes).
pub(crate) fn unused_input(ctx: &Context) -> BoundBuffer {
    BoundBuffer::whole(&ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-attention unused input"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    }))
}

/// Strides of a 4-D tensor view (or a 2-D [L, D] one broadcast over batch and head) for the uniform.
pub(crate) fn strides_of(t: &Tensor, elem_offset: u32) -> Strides {
    let s = t.strides();
    let sh = t.shape();
    let pick = |axis: usize| if sh[axis] == 1 { 0 } else { s[axis] as u32 };
    match s.len() {
        4 => Strides {
            offset: elem_offset,
            batch: pick(0),
            head: pick(1),
            row: s[2] as u32,
        },
        _ => Strides {
            offset: elem_offset,
            batch: 0,
            head: 0,
            row: s[0] as u32,
        },
    }
}

/// A dispatch grid of `count` workgroups spread over x and y so that neither exceeds the limit.
pub(crate) fn grid(ctx: &Context, count: u64, what: &str) -> Result<(u32, u32)> {
    let max = ctx.limits().max_compute_workgroups_per_dimension as u64;
    if count <= max {
        return Ok((count.max(1) as u32, 1));
    }
    let y = count.div_ceil(max);
    if y > max {
        return Err(Error::Limit {
            what: format!("{what} ({count} workgroups)"),
            limit: "max_compute_workgroups_per_dimension (squared)",
            needed: count,
            max: max * max,
        });
    }
    Ok((max as u32, y as u32))
}

/// Which code a kernel with quick-compiling code runs (the register forward, the backward's dQ
/// and dK/dV kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The fast code of the tile as given (an explicit tile, a warm-up, a benchmark).
    Fast,
    /// The quick code while the fast code is not compiled, where
    /// [`crate::pipeline::runs_quick`] allows it.
    QuickUntilCompiled,
}

/// One recorded unit of work of a prepared call.
#[derive(Debug)]
pub(crate) enum Step {
    /// A compute dispatch.
    Dispatch {
        kernel: std::sync::Arc<CompiledKernel>,
        bind_group: wgpu::BindGroup,
        groups: (u32, u32),
    },
    /// A buffer copy (e.g. a chunk of attention weights into the returned tensor).
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
}

/// Binds `params` to binding 0 and `buffers`, in slot order, to every other slot (storage
/// buffers, and any further uniform such as the decode kernel's).
pub(crate) fn dispatch_step(
    ctx: &Context,
    kernel: std::sync::Arc<CompiledKernel>,
    params: &wgpu::Buffer,
    buffers: &[&BoundBuffer],
    groups: (u32, u32),
) -> Step {
    let mut rest = buffers.iter();
    let entries: Vec<wgpu::BindGroupEntry> = kernel
        .bindings
        .iter()
        .map(|&(binding, _)| {
            let resource = if binding == 0 {
                params.as_entire_binding()
            } else {
                let b = rest.next().expect("one buffer per slot after binding 0");
                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: wgpu::BufferSize::new(b.size),
                })
            };
            wgpu::BindGroupEntry { binding, resource }
        })
        .collect();
    let bind_group = ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(kernel.pipeline_label),
        layout: &kernel.layout,
        entries: &entries,
    });
    Step::Dispatch {
        kernel,
        bind_group,
        groups,
    }
}

/// The uniform of `shaders/common/alibi.wgsl`: the slopes in memory order, zero past them (the
/// caller has checked that they fit).
pub(crate) fn alibi_buffer(ctx: &Context, slopes: &crate::options::AlibiSlopes) -> wgpu::Buffer {
    let mut table = [0f32; crate::options::AlibiSlopes::MAX];
    let n = slopes.values().len().min(table.len());
    table[..n].copy_from_slice(&slopes.values()[..n]);
    params_buffer(ctx, &table)
}

/// A uniform buffer holding `params` (any kernel's uniform struct).
///
/// Unlike `DeviceExt::create_buffer_init`, never panics: on a lost device the buffer is invalid
/// and left unwritten, and the caller's error scope (see `Context::scoped`) reports the loss.
pub(crate) fn params_buffer<T: bytemuck::Pod>(ctx: &Context, params: &T) -> wgpu::Buffer {
    let contents = bytemuck::bytes_of(params);
    let buffer = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("wgpu-attention params"),
        size: crate::tensor::padded_size(contents.len() as u64),
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: true,
    });
    let written = match buffer.slice(..).get_mapped_range_mut() {
        Ok(mut range) => {
            range.slice(..contents.len()).copy_from_slice(contents);
            true
        }
        Err(_) => false,
    };
    if written {
        buffer.unmap();
    }
    buffer
}

/// Records `steps` into `encoder`: consecutive dispatches share one compute pass. With
/// `timestamps`, the first pass writes `index` at its start and the last pass `index + 1` at its end.
pub(crate) fn encode_steps(
    encoder: &mut wgpu::CommandEncoder,
    steps: &[Step],
    timestamps: Option<(&wgpu::QuerySet, u32)>,
) {
    let mut i = 0;
    let last_dispatch = steps.iter().rposition(|s| matches!(s, Step::Dispatch { .. }));
    let mut first_pass = true;
    while i < steps.len() {
        match &steps[i] {
            Step::Copy {
                src,
                src_offset,
                dst,
                dst_offset,
                size,
            } => {
                encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                i += 1;
            }
            Step::Dispatch { .. } => {
                let end = steps[i..]
                    .iter()
                    .position(|s| !matches!(s, Step::Dispatch { .. }))
                    .map_or(steps.len(), |n| i + n);
                let is_last = last_dispatch.is_some_and(|l| l < end);
                let timestamp_writes = timestamps.and_then(|(set, index)| {
                    (first_pass || is_last).then_some(wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: first_pass.then_some(index),
                        end_of_pass_write_index: is_last.then_some(index + 1),
                    })
                });
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("wgpu-attention"),
                    timestamp_writes,
                });
                for step in &steps[i..end] {
                    if let Step::Dispatch {
                        kernel,
                        bind_group,
                        groups,
                    } = step
                    {
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(groups.0, groups.1, 1);
                    }
                }
                first_pass = false;
                i = end;
            }
        }
    }
}

/// [`check_workgroup`] for a one-dimensional workgroup without workgroup memory, also against
/// `max_compute_workgroup_size_x`; `kernel` names it in the error.
pub(crate) fn check_workgroup_x(ctx: &Context, kernel: &str, workgroup: u32) -> Result<()> {
    let max = ctx.limits().max_compute_workgroup_size_x;
    if workgroup > max {
        return Err(Error::Limit {
            what: format!("{kernel} workgroup of {workgroup}"),
            limit: "max_compute_workgroup_size_x",
            needed: workgroup as u64,
            max: max as u64,
        });
    }
    check_workgroup(ctx, workgroup, 0)
}

/// Checks a workgroup's invocation count and memory against the device limits.
pub(crate) fn check_workgroup(ctx: &Context, invocations: u32, bytes: u64) -> Result<()> {
    let l = ctx.limits();
    if invocations == 0 || invocations > l.max_compute_invocations_per_workgroup {
        return Err(Error::Limit {
            what: format!("workgroup of {invocations} invocations"),
            limit: "max_compute_invocations_per_workgroup",
            needed: invocations as u64,
            max: l.max_compute_invocations_per_workgroup as u64,
        });
    }
    if bytes > l.max_compute_workgroup_storage_size as u64 {
        return Err(Error::Limit {
            what: "kernel workgroup memory".to_string(),
            limit: "max_compute_workgroup_storage_size",
            needed: bytes,
            max: l.max_compute_workgroup_storage_size as u64,
        });
    }
    Ok(())
}
