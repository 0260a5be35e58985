//! Vulkan shader modules written by the crate: WGSL → naga → SPIR-V with the options wgpu 30's
//! Vulkan backend uses, minus the layout decorations Vulkan forbids outside buffer memory, handed
//! to the driver through `create_shader_module_passthrough`.
//!
//! naga 30 decorates every array type with `ArrayStride` and every struct member with `Offset`,
//! whatever memory the type lives in (wgpu issue 7696). Vulkan allows explicit layout only on
//! types in `Uniform`, `StorageBuffer`, `PushConstant` and `PhysicalStorageBuffer` memory
//! (VUID-StandaloneSpirv-None-10684): the validation layer rejects the kernels' workgroup tiles,
//! private rows and function-local arrays, Adreno drivers refuse such workgroup arrays and
//! NVIDIA's 580 driver was reported to crash on function-scope ones. wgpu-hal keeps the naga IR
//! of a WGSL module and writes its SPIR-V when a pipeline is created, with no hook to change it,
//! so where the device allows it the crate writes the SPIR-V itself, exactly as wgpu would (same
//! naga writer, options, override constants and binding numbers), and removes the forbidden
//! decorations (a type used both in buffer memory and elsewhere is refused: the crate's kernels
//! have none, and such a module falls back to wgpu's own path). Devices without
//! `Features::PASSTHROUGH_SHADERS`, other backends and the cooperative-matrix kernels (whose
//! SPIR-V capabilities wgpu sets from experimental features) take wgpu's path.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use naga::back::spv;

/// What wgpu-hal derives from the Vulkan device when it writes SPIR-V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VulkanFacts {
    /// `VkPhysicalDeviceProperties::apiVersion`, (major, minor).
    pub api_version: (u32, u32),
    /// `VK_EXT_robustness2` enabled: wgpu then writes no buffer bounds checks.
    pub robustness2: bool,
}

impl VulkanFacts {
    /// The facts of a device on the Vulkan backend (owned or borrowed); `None` on other backends.
    pub fn of(device: &wgpu::Device) -> Option<Self> {
        // SAFETY: queries only; no Vulkan object is created, destroyed or kept.
        let hal = unsafe { device.as_hal::<wgpu::hal::api::Vulkan>() }?;
        // SAFETY: the physical device belongs to this instance and outlives the call.
        let props = unsafe {
            hal.shared_instance()
                .raw_instance()
                .get_physical_device_properties(hal.raw_physical_device())
        };
        let v = props.api_version;
        Some(Self {
            api_version: ((v >> 22) & 0x7f, (v >> 12) & 0x3ff),
            robustness2: hal
                .enabled_device_extensions()
                .iter()
                .any(|e| e.to_str() == Ok("VK_EXT_robustness2")),
        })
    }

    /// The SPIR-V version wgpu-hal writes for this Vulkan version.
    fn spirv_version(&self) -> (u8, u8) {
        match self.api_version {
            (1, 0) => (1, 0),
            (1, 1) => (1, 3),
            (1, 2) => (1, 5),
            _ => (1, 6),
        }
    }
}

/// SPIR-V of a compute kernel (entry point `main`, bind group 0 with `bindings`) as wgpu-hal 30
/// would write it for `constants`, with the forbidden layout decorations removed; the error says
/// why the module must take wgpu's own path instead.
pub(crate) fn write(
    wgsl: &str,
    constants: &[(&str, f64)],
    bindings: &[u32],
    features: wgpu::Features,
    facts: VulkanFacts,
) -> Result<(Vec<u32>, [u32; 3]), String> {
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
    let info = wgpu_naga_bridge::create_validator(
        features,
        wgpu::DownlevelFlags::all(),
        naga::valid::ValidationFlags::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(wgsl))?;
    let constants: naga::back::PipelineConstants = constants.iter().map(|&(n, v)| (n.to_string(), v)).collect();
    // As wgpu-hal's compile_stage: overrides resolved (workgroup size, array lengths), the module
    // reduced to the entry point.
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, "main")),
        &constants,
    )
    .map_err(|e| format!("override constants: {e}"))?;
    // wgpu-hal numbers a group's Vulkan bindings by rank among its entries sorted by `binding`.
    let mut sorted = bindings.to_vec();
    sorted.sort_unstable();
    let binding_map = sorted
        .iter()
        .enumerate()
        .map(|(rank, &binding)| {
            let info = spv::BindingInfo {
                descriptor_set: 0,
                binding: rank as u32,
                binding_array_size: None,
            };
            (naga::ResourceBinding { group: 0, binding }, info)
        })
        .collect();
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    let options = spv::Options {
        lang_version: facts.spirv_version(),
        flags: spv::WriterFlags::LABEL_VARYINGS | spv::WriterFlags::FORCE_POINT_SIZE,
        // naga declares what the module needs (validation above used the device's features).
        capabilities: None,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: restrict,
            buffer: match facts.robustness2 {
                true => naga::proc::BoundsCheckPolicy::Unchecked,
                false => restrict,
            },
            image_load: restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        // The kernels write every workgroup array before reading it (as with wgpu's path).
        zero_initialize_workgroup_memory: spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: true,
        ray_query_initialization_tracking: true,
        trace_ray_argument_validation: true,
        // Compute stages have no stage I/O; on it naga would declare StorageInputOutput16 for f16.
        use_storage_input_output_16: false,
        fake_missing_bindings: false,
        binding_map,
        debug_info: None,
        task_dispatch_limits: None,
        mesh_shader_primitive_indices_clamp: true,
        emit_int_div_checks: true,
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: "main".into(),
    };
    let mut words = spv::write_vec(&module, &info, &options, Some(&pipeline)).map_err(|e| format!("{e}"))?;
    strip_forbidden_layouts(&mut words)?;
    let workgroup_size = module
        .entry_points
        .iter()
        .find(|e| e.name == "main")
        .map_or([1; 3], |e| e.workgroup_size);
    Ok((words, workgroup_size))
}

/// The module of SPIR-V written by [`write`]. The device must have `PASSTHROUGH_SHADERS`.
pub(crate) fn create_module(
    device: &wgpu::Device,
    label: &str,
    words: &[u32],
    workgroup_size: [u32; 3],
) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptorPassthrough {
        label: Some(label),
        entry_points: Cow::Owned(vec![wgpu::PassthroughShaderEntryPoint {
            name: Cow::Borrowed("main"),
            workgroup_size: (workgroup_size[0], workgroup_size[1], workgroup_size[2]),
        }]),
        spirv: Some(Cow::Borrowed(words)),
        ..Default::default()
    };
    // SAFETY: the words are naga's output for a module naga validated with the device's
    // features, the override constants applied and bindings numbered as wgpu numbers them;
    // removing layout decorations from types outside buffer memory changes no behaviour.
    unsafe { device.create_shader_module_passthrough(desc) }
}

// SPIR-V enumerants (unified1 grammar).
const MAGIC: u32 = 0x0723_0203;
const OP_CAPABILITY: u32 = 17;
const OP_TYPE_ARRAY: u32 = 28;
const OP_TYPE_RUNTIME_ARRAY: u32 = 29;
const OP_TYPE_STRUCT: u32 = 30;
const OP_TYPE_POINTER: u32 = 32;
const OP_DECORATE: u32 = 71;
const OP_MEMBER_DECORATE: u32 = 72;
const LAYOUT_DECORATIONS: [u32; 5] = [4, 5, 6, 7, 35]; // RowMajor, ColMajor, ArrayStride, MatrixStride, Offset
const EXPLICIT_CLASSES: [u32; 5] = [2, 9, 12, 5343, 5349]; // Uniform, PushConstant, StorageBuffer, ShaderRecordBuffer, PhysicalStorageBuffer
const WORKGROUP: u32 = 4;
const CAP_WORKGROUP_EXPLICIT_LAYOUT: u32 = 4428;

/// Removes the layout decorations of every type that no buffer-memory pointer reaches
/// (VUID-StandaloneSpirv-None-10684); returns how many were removed. A type both in buffer memory
/// and in other memory is refused (it would need a twin type); `words` is then left unchanged.
pub(crate) fn strip_forbidden_layouts(words: &mut Vec<u32>) -> Result<usize, String> {
    if words.len() < 5 || words[0] != MAGIC {
        return Err("not a SPIR-V module".into());
    }
    // (start, length) of every instruction after the 5-word header.
    let mut insts = Vec::new();
    let mut at = 5;
    while at < words.len() {
        let len = (words[at] >> 16) as usize;
        if len == 0 || at + len > words.len() {
            return Err(format!("malformed instruction at word {at}"));
        }
        insts.push((at, len));
        at += len;
    }
    let op = |&(start, _): &(usize, usize)| words[start] & 0xffff;
    let operands = |&(start, len): &(usize, usize)| &words[start + 1..start + len];
    let workgroup_explicit = insts
        .iter()
        .any(|i| op(i) == OP_CAPABILITY && operands(i).first() == Some(&CAP_WORKGROUP_EXPLICIT_LAYOUT));
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let (mut explicit_roots, mut other_roots) = (Vec::new(), Vec::new());
    for i in &insts {
        let o = operands(i);
        match op(i) {
            OP_TYPE_ARRAY | OP_TYPE_RUNTIME_ARRAY => {
                children.insert(o[0], vec![o[1]]);
            }
            OP_TYPE_STRUCT => {
                children.insert(o[0], o[1..].to_vec());
            }
            OP_TYPE_POINTER => {
                let explicit = EXPLICIT_CLASSES.contains(&o[1]) || (o[1] == WORKGROUP && workgroup_explicit);
                match explicit {
                    true => explicit_roots.push(o[2]),
                    false => other_roots.push(o[2]),
                }
            }
            _ => {}
        }
    }
    let reach = |roots: Vec<u32>| {
        let mut seen = HashSet::new();
        let mut stack = roots;
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                stack.extend(children.get(&t).into_iter().flatten());
            }
        }
        seen
    };
    let (explicit, other) = (reach(explicit_roots), reach(other_roots));
    let is_layout = |i: &(usize, usize)| {
        let o = operands(i);
        match op(i) {
            OP_DECORATE => o.len() >= 2 && LAYOUT_DECORATIONS.contains(&o[1]),
            OP_MEMBER_DECORATE => o.len() >= 3 && LAYOUT_DECORATIONS.contains(&o[2]),
            _ => false,
        }
    };
    if let Some(mixed) = insts
        .iter()
        .filter(|i| is_layout(i))
        .map(|i| operands(i)[0])
        .find(|t| explicit.contains(t) && other.contains(t))
    {
        return Err(format!("type %{mixed} is laid out in buffer memory and used elsewhere"));
    }
    let mut out = words[..5].to_vec();
    let mut removed = 0;
    for i in &insts {
        if is_layout(i) && !explicit.contains(&operands(i)[0]) {
            removed += 1;
        } else {
            out.extend_from_slice(&words[i.0..i.0 + i.1]);
        }
    }
    *words = out;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(op: u32, operands: &[u32]) -> Vec<u32> {
        let mut w = vec![((operands.len() as u32 + 1) << 16) | op];
        w.extend_from_slice(operands);
        w
    }

    /// %2 = f32, %3 = array<f32, 4> (workgroup), %4 = runtime array<f32> in the storage block %5.
    fn module(share_array_with_buffer: bool) -> Vec<u32> {
        let mut w = vec![MAGIC, 0x0001_0600, 0, 20, 0];
        w.extend(inst(22, &[2, 32])); // OpTypeFloat %2 32
        w.extend(inst(OP_TYPE_ARRAY, &[3, 2, 10]));
        w.extend(inst(OP_TYPE_RUNTIME_ARRAY, &[4, 2]));
        let member = if share_array_with_buffer { 3 } else { 4 };
        w.extend(inst(OP_TYPE_STRUCT, &[5, member]));
        w.extend(inst(OP_DECORATE, &[3, 6, 4])); // ArrayStride 4 on the workgroup array
        w.extend(inst(OP_DECORATE, &[4, 6, 4])); // ArrayStride 4 on the buffer's runtime array
        w.extend(inst(OP_MEMBER_DECORATE, &[5, 0, 35, 0])); // Offset 0
        w.extend(inst(OP_DECORATE, &[5, 2])); // Block
        w.extend(inst(OP_TYPE_POINTER, &[6, WORKGROUP, 3]));
        w.extend(inst(OP_TYPE_POINTER, &[7, 12, 5])); // StorageBuffer
        w
    }

    #[test]
    fn strips_only_types_outside_buffer_memory() {
        let mut w = module(false);
        let before = w.len();
        assert_eq!(strip_forbidden_layouts(&mut w), Ok(1));
        assert_eq!(w.len(), before - 4);
        // The buffer's stride, offset and Block stay; the workgroup array's stride is gone.
        let kept = w.windows(4).filter(|x| x[0] == ((4 << 16) | OP_DECORATE)).count();
        assert_eq!(kept, 1);
        assert!(w.windows(4).any(|x| x == [(4 << 16) | OP_DECORATE, 4, 6, 4]));
        assert!(!w.windows(4).any(|x| x == [(4 << 16) | OP_DECORATE, 3, 6, 4]));
    }

    #[test]
    fn a_type_in_both_memories_is_refused_unchanged() {
        let mut w = module(true);
        let original = w.clone();
        assert!(strip_forbidden_layouts(&mut w).unwrap_err().contains("%3"));
        assert_eq!(w, original);
        let mut junk = vec![1, 2, 3];
        assert!(strip_forbidden_layouts(&mut junk).is_err());
    }
}
