//! Kernels, shader composition and the pipeline cache.
//!
//! Each kernel is one entry file in `shaders/` with one entry point `main`; the file names its
//! pieces from `shaders/common/` and its switches itself (`//@import`, `//@if`, see
//! [`mod@compose`]), and the host only supplies the switch values, from the permutation table
//! ([`permutations`]), and the override constants. Tile and workgroup sizes are WGSL `override`
//! constants set at pipeline creation; shapes travel in a uniform buffer, so one pipeline serves
//! every shape. Pipelines are cached by (kernel, dtype, switches, constants) in a bounded
//! least-recently-used cache per context ([`PipelineCache`]), and, where the device has
//! `Features::PIPELINE_CACHE`, the driver's compiled code is persisted across processes (see
//! [`PIPELINE_CACHE_ENV`]).

use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::tensor::DType;

pub mod compose;
mod driver_cache;
mod kernel;
mod lru;
mod permutations;
#[cfg(not(target_arch = "wasm32"))]
mod spirv;

pub use compose::{source_location, Switches};
#[cfg(feature = "cache-files")]
pub(crate) use driver_cache::user_cache_dir;
pub(crate) use driver_cache::DiskCache;
pub use driver_cache::{pipeline_cache_dir, set_compile_hook, CompileHook, PIPELINE_CACHE_ENV};
pub use kernel::{default_switches, Kernel};
pub use lru::{PipelineCache, DEFAULT_CACHE_CAPACITY};
pub use permutations::{axes, is_permutation, permutations, permutations_of, Axes};

/// Renamed [`Switches`]; the alias goes in the next release.
#[doc(hidden)]
#[deprecated(note = "renamed pipeline::Switches")]
pub type Variant = Switches;
/// Renamed [`BindingKind`]; the alias goes in the next release.
#[doc(hidden)]
#[deprecated(note = "renamed pipeline::BindingKind")]
pub type Slot = BindingKind;
/// Renamed [`default_switches`]; goes in the next release.
#[doc(hidden)]
#[deprecated(note = "renamed pipeline::default_switches")]
pub fn default_variant(kernel: Kernel) -> Switches {
    default_switches(kernel)
}

/// The WGSL source of `kernel` for storage type `dtype` with its [`default_switches`].
pub fn compose(kernel: Kernel, dtype: DType) -> Result<String> {
    compose_switches(kernel, dtype, default_switches(kernel))
}

/// The WGSL source of a permutation of `kernel`: its entry file's recipe followed with these
/// switch values (see [`compose`](mod@compose)). Refuses what the permutation table does not list.
pub fn compose_switches(kernel: Kernel, dtype: DType, switches: Switches) -> Result<String> {
    check_permutation(kernel, dtype, switches)?;
    compose::compose_with(
        &compose::file,
        "shaders",
        kernel.file(),
        dtype,
        &switches.values(kernel.direct()),
    )
    .map_err(|e| Error::Shader {
        module: kernel.file().to_string(),
        messages: vec![e.to_string()],
    })
}

/// How a kernel's binding is used; turned into an explicit bind group layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingKind {
    /// A uniform buffer (`Params`, or a kernel's second uniform).
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// Cache key: kernel, element type, override constants (name, value bits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kernel: Kernel,
    dtype: DType,
    switches: Switches,
    constants: Vec<(&'static str, u64)>,
}

impl Key {
    fn new(kernel: Kernel, dtype: DType, switches: Switches, constants: &[(&'static str, f64)]) -> Self {
        let constants = constants.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        Self {
            kernel,
            dtype,
            switches,
            constants,
        }
    }
}

/// A compiled kernel with its bind group layout.
#[derive(Debug)]
pub struct CompiledKernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) bindings: Vec<(u32, BindingKind)>,
    pub(crate) pipeline_label: &'static str,
}

/// Multiply-adds (Q·Kᵀ and P·V; the backward counts 2.5 times the forward's) up to which a first
/// call may run quick code (see [`PipelineCache::set_quick_first_calls`]): 2³³ ≈ 8.6·10⁹, a few
/// seconds of the backward's compact code on lavapipe; beyond it the fast code's compile is the
/// smaller cost.
pub const QUICK_MACS: f64 = 8589934592.0;

/// Refuses a (kernel, dtype, switches) the permutation table does not list: nothing is composed
/// that the shader tests did not check.
fn check_permutation(kernel: Kernel, dtype: DType, switches: Switches) -> Result<()> {
    match is_permutation(kernel, dtype, switches) {
        true => Ok(()),
        false => Err(Error::Unsupported(format!(
            "{} in {}: {switches:?} is not in the kernel permutation table (pipeline::permutations)",
            kernel.file(),
            dtype.name()
        ))),
    }
}

/// Whether a call of `macs` multiply-adds without an explicit tile runs the quick code of a
/// kernel whose fast code is (kernel, dtype, switches, constants): on CPU adapters, with the
/// context's policy on, while that code is neither compiled here nor in the persisted cache.
pub(crate) fn runs_quick(
    ctx: &Context,
    macs: f64,
    kernel: Kernel,
    dtype: DType,
    switches: Switches,
    constants: &[(&'static str, f64)],
) -> bool {
    let cpu = crate::kernels::is_cpu(ctx);
    if !cpu || !ctx.pipelines().quick_first_calls() || macs > QUICK_MACS {
        return false;
    }
    let key = Key::new(kernel, dtype, switches, constants);
    if ctx.pipelines().contains(&key) {
        return false;
    }
    let known = ctx
        .disk_cache()
        .is_some_and(|d| match compose_switches(kernel, dtype, switches) {
            Ok(source) => d.knows(driver_cache::key(&source, &key.constants)),
            Err(_) => false,
        });
    !known
}

/// Returns the cached pipeline of `kernel` for (dtype, switches, constants), creating it on
/// first use inside an error scope, with the bind group layout of its binding table
/// ([`fn@crate::kernels::bindings`]).
pub(crate) fn get(
    ctx: &Context,
    kernel: Kernel,
    dtype: DType,
    switches: Switches,
    constants: &[(&'static str, f64)],
) -> Result<Arc<CompiledKernel>> {
    let key = Key::new(kernel, dtype, switches, constants);
    if let Some(hit) = ctx.pipelines().lock().get(&key) {
        return Ok(hit);
    }
    check_permutation(kernel, dtype, switches)?;
    if dtype == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 storage",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    let bindings = crate::kernels::bindings(kernel, switches);
    let storage = crate::kernels::storage_count(&bindings);
    let max_storage = ctx.limits().max_storage_buffers_per_shader_stage;
    if storage > max_storage {
        return Err(Error::Limit {
            what: format!("{} storage bindings", kernel.file()),
            limit: "max_storage_buffers_per_shader_stage",
            needed: storage as u64,
            max: max_storage as u64,
        });
    }
    let source = compose_switches(kernel, dtype, switches)?;
    let disk = ctx.disk_cache();
    let disk_key = driver_cache::key(&source, &key.constants);
    if !disk.is_some_and(|d| d.knows(disk_key)) {
        driver_cache::notify_compile(&format!("{} {}", kernel.file(), dtype.name()));
    }
    let own_spirv = own_spirv(ctx, kernel, &source, &bindings, constants);
    let mut messages = Vec::new();
    let compiled = ctx.scoped("pipeline creation", || {
        let device = ctx.device();
        let module = match &own_spirv {
            #[cfg(not(target_arch = "wasm32"))]
            Some((words, workgroup)) => spirv::create_module(device, kernel.file(), words, *workgroup),
            _ => {
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(kernel.file()),
                    source: wgpu::ShaderSource::Wgsl(source.as_str().into()),
                });
                messages = compile_errors_now(&module, &source);
                module
            }
        };
        if !messages.is_empty() {
            return Err(shader_error(kernel.file(), messages.clone()));
        }
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|&(binding, slot)| wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match slot {
                        BindingKind::Uniform => wgpu::BufferBindingType::Uniform,
                        BindingKind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        BindingKind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    // Storage element types differ per switches (scalar or vec4) and uniforms per
                    // kernel; wgpu checks bound sizes against the shader at dispatch.
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(kernel.file()),
            entries: &entries,
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(kernel.file()),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(kernel.file()),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                // The crate's own SPIR-V has the constants applied already.
                constants: if own_spirv.is_some() { &[] } else { constants },
                // Every workgroup array is written before it is read.
                zero_initialize_workgroup_memory: false,
            },
            cache: disk.map(DiskCache::cache),
        });
        if let Some(d) = disk {
            d.save(disk_key);
        }
        Ok(Arc::new(CompiledKernel {
            pipeline,
            layout,
            bindings: bindings.clone(),
            pipeline_label: kernel.file(),
        }))
    });
    // The compiler's messages, mapped to the shader files, say more than the error scope's.
    let compiled = match compiled {
        Err(Error::Wgpu { .. }) if !messages.is_empty() => Err(shader_error(kernel.file(), messages)),
        other => other,
    }?;
    ctx.pipelines().lock().insert(key, compiled.clone());
    Ok(compiled)
}

/// The bindings of a composed kernel as naga reflects them from its WGSL: each global of bind
/// group 0 that its entry point `main` uses, with its [`BindingKind`] (uniform, read-only or
/// read-write storage), sorted by binding. A pipeline's layout must hold exactly these; the
/// host's binding tables ([`fn@crate::kernels::bindings`]) must agree with it (tests/shaders.rs
/// checks every permutation).
#[cfg(not(target_arch = "wasm32"))]
pub fn reflect_bindings(wgsl: &str) -> std::result::Result<Vec<(u32, BindingKind)>, String> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(wgsl))?;
    let main = module
        .entry_points
        .iter()
        .position(|e| e.name == "main")
        .ok_or("no entry point `main`")?;
    let used = info.get_entry_point(main);
    let mut bindings = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else { continue };
        if used[handle].is_empty() {
            continue;
        }
        if binding.group != 0 {
            return Err(format!(
                "binding group {} (the kernels use group 0 only)",
                binding.group
            ));
        }
        let kind = match var.space {
            naga::AddressSpace::Uniform => BindingKind::Uniform,
            naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => {
                BindingKind::ReadWrite
            }
            naga::AddressSpace::Storage { .. } => BindingKind::Read,
            other => return Err(format!("binding {} in {other:?} memory", binding.binding)),
        };
        bindings.push((binding.binding, kind));
    }
    bindings.sort_unstable_by_key(|&(binding, _)| binding);
    Ok(bindings)
}

/// Creates the shader module of any kernel switches as a pipeline of it would (the crate's own
/// SPIR-V where the device takes it, else wgpu's path), without compiling a pipeline: a
/// driver or validation layer checks the module when it is created, so every permutation can be
/// checked on a device in seconds. Returns whether the crate's own SPIR-V was used.
#[cfg(not(target_arch = "wasm32"))]
pub fn create_module(ctx: &Context, kernel: Kernel, dtype: DType, switches: Switches) -> Result<bool> {
    let source = compose_switches(kernel, dtype, switches)?;
    let bindings = crate::kernels::bindings(kernel, switches);
    let own = own_spirv(ctx, kernel, &source, &bindings, &[]);
    create_module_from(ctx, kernel.file(), &source, own)
}

/// Creates a shader module from composed WGSL (`label` names it in errors): its compilation
/// errors come back as [`Error::Shader`], each placed at `shaders/FILE:LINE:COLUMN` of the piece
/// it comes from ([`source_location`]). For composed sources outside the crate's kernels (tests
/// with deliberately broken pieces).
#[cfg(not(target_arch = "wasm32"))]
pub fn create_wgsl_module(ctx: &Context, label: &str, composed: &str) -> Result<()> {
    create_module_from(ctx, label, composed, None).map(|_| ())
}

#[cfg(not(target_arch = "wasm32"))]
fn create_module_from(ctx: &Context, label: &str, source: &str, own: Option<(Vec<u32>, [u32; 3])>) -> Result<bool> {
    let mut messages = Vec::new();
    let created = ctx.scoped("shader module creation", || {
        match &own {
            Some((words, workgroup)) => {
                spirv::create_module(ctx.device(), label, words, *workgroup);
            }
            None => {
                let module = ctx.device().create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(label),
                    source: wgpu::ShaderSource::Wgsl(source.into()),
                });
                messages = compile_errors_now(&module, source);
            }
        }
        match messages.is_empty() {
            true => Ok(own.is_some()),
            false => Err(shader_error(label, messages.clone())),
        }
    });
    match created {
        Err(Error::Wgpu { .. }) if !messages.is_empty() => Err(shader_error(label, messages)),
        other => other,
    }
}

/// The errors of a compilation, each placed in its piece: `shaders/FILE:LINE:COLUMN: message`
/// ([`source_location`]; a line of the generated prelude is named `prelude:LINE`).
pub fn place_messages(composed: &str, info: &wgpu::CompilationInfo) -> Vec<String> {
    info.messages
        .iter()
        .filter(|m| m.message_type == wgpu::CompilationMessageType::Error)
        .map(|m| match &m.location {
            Some(at) => {
                let place = match source_location(composed, at.line_number) {
                    Some((file, line)) => format!("{file}:{line}:{}", at.line_position),
                    None => format!("prelude:{}:{}", at.line_number, at.line_position),
                };
                format!("{place}: {}", m.message)
            }
            None => m.message.clone(),
        })
        .collect()
}

/// The placed errors of a module just created from `composed`, where they can be waited for
/// (natively; in the browser they arrive later, through the error scopes).
fn compile_errors_now(module: &wgpu::ShaderModule, composed: &str) -> Vec<String> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let info = pollster::block_on(module.get_compilation_info());
        place_messages(composed, &info)
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (module, composed);
        Vec::new()
    }
}

fn shader_error(module: &str, messages: Vec<String>) -> Error {
    Error::Shader {
        module: module.to_string(),
        messages,
    }
}

/// Why a kernel switches cannot run on `backend` through naga (so the runtime refuses it there
/// instead of failing inside wgpu or the driver), or `None`. tests/shaders.rs writes every other
/// composed kernel through naga's SPIR-V, MSL and HLSL writers.
pub fn backend_unsupported(switches: Switches, backend: wgpu::Backend) -> Option<&'static str> {
    match (backend, switches.coop) {
        (_, 0) => None,
        (wgpu::Backend::Dx12, _) => Some("naga's HLSL writer has no cooperative matrices"),
        (wgpu::Backend::Metal, m) if m != 8 => {
            Some("Metal's simdgroup matrices are 8×8 only (naga would write a simdgroup type Metal lacks)")
        }
        (wgpu::Backend::Gl, _) => Some("naga's GLSL writer has no cooperative matrices"),
        _ => None,
    }
}

/// Environment variable choosing who writes the Vulkan SPIR-V of the kernels: `wgpu` forces
/// wgpu's own writer (with the layout decorations Vulkan forbids outside buffer memory), for
/// comparisons; anything else, or unset, lets the crate write it where the device allows.
pub const SPIRV_ENV: &str = "WGPU_ATTENTION_SPIRV";

/// The SPIR-V of `source` written by the crate ([`spirv`]: no layout decorations outside buffer
/// memory) where the device takes it: Vulkan with `PASSTHROUGH_SHADERS`, kernels without
/// cooperative matrices. `None` sends the kernel down wgpu's own WGSL path.
#[cfg(not(target_arch = "wasm32"))]
fn own_spirv(
    ctx: &Context,
    kernel: Kernel,
    source: &str,
    slots: &[(u32, BindingKind)],
    constants: &[(&'static str, f64)],
) -> Option<(Vec<u32>, [u32; 3])> {
    if !ctx.features().contains(wgpu::Features::PASSTHROUGH_SHADERS)
        || matches!(kernel, Kernel::FlashCoopmat | Kernel::GemmCoopmat)
        || std::env::var(SPIRV_ENV).is_ok_and(|v| v == "wgpu")
    {
        return None;
    }
    let facts = spirv::VulkanFacts::of(ctx.device())?;
    let bindings: Vec<u32> = slots.iter().map(|&(binding, _)| binding).collect();
    // A module the writer refuses takes wgpu's path, which reports any error of the WGSL itself.
    spirv::write(source, constants, &bindings, ctx.features(), facts).ok()
}

#[cfg(target_arch = "wasm32")]
fn own_spirv(
    _: &Context,
    _: Kernel,
    _: &str,
    _: &[(u32, BindingKind)],
    _: &[(&'static str, f64)],
) -> Option<(Vec<u32>, [u32; 3])> {
    None
}
