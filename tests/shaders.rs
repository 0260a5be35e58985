//! Every kernel's composed WGSL parses and validates with naga, before and after its override
//! constants are applied. Needs no GPU.

use std::collections::HashMap;

type Constants = naga::back::PipelineConstants;
use wgpu_attention::pipeline::{compose, compose_switches, permutations_of, Kernel, Switches};

#[path = "common/variants.rs"]
mod variants;

mod common;
use common::skip::{has_for, Cap};

fn validate(src: &str, constants: &HashMap<String, f64>) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
    let mut validator =
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
    let info = validator.validate(&module).map_err(|e| e.emit_to_string(src))?;
    let constants: Constants = constants.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let (resolved, _) = naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
        .map_err(|e| format!("overrides: {e}"))?;
    validator.validate(&resolved).map_err(|e| e.emit_to_string(src))?;
    Ok(())
}

#[test]
fn every_kernel_validates_with_naga() {
    let failures: Vec<String> = variants::all()
        .into_iter()
        .filter_map(|s| validate(&s.wgsl, &HashMap::new()).err().map(|e| format!("{s}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn flash_kernel_validates_for_odd_head_dims() {
    let src = compose_switches(
        Kernel::FlashForward,
        wgpu_attention::DType::F32,
        Switches {
            rows: 3,
            vec4_io: false,
            subgroup: 8,
            additive: true,
            local: true,
            alibi: true,
            ..Switches::default()
        },
    )
    .unwrap();
    for (dk, dv) in [(8, 8), (24, 40), (256, 256), (3, 5)] {
        for varlen in [0, 1] {
            let c: HashMap<String, f64> = [
                ("DK", dk),
                ("DV", dv),
                ("DK4", (dk + 3) / 4),
                ("DV4", (dv + 3) / 4),
                ("WORKGROUP", 32),
                ("VARLEN", varlen),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v as f64))
            .collect();
            validate(&src, &c).unwrap_or_else(|e| panic!("Dk={dk} Dv={dv} VARLEN={varlen}: {e}"));
        }
    }
}

/// Every permutation of the backward kernels (row counts, loaders, dO sources, compact loops,
/// element types) with odd and maximal head dims.
#[test]
fn backward_kernels_validate_for_every_variant() {
    let mut failures = Vec::new();
    for dtype in [wgpu_attention::DType::F32, wgpu_attention::DType::F16] {
        for kernel in [
            Kernel::FlashBackwardPre,
            Kernel::FlashBackwardQ,
            Kernel::FlashBackwardKv,
            Kernel::FlashBackwardBias,
            Kernel::FlashBackwardDs,
            Kernel::FlashBackwardQDirect,
            Kernel::FlashBackwardKvDirect,
            Kernel::FlashBackwardBiasDirect,
        ] {
            for switches in permutations_of(kernel, dtype) {
                let src = compose_switches(kernel, dtype, switches).unwrap();
                for (dk, dv) in [(8, 8), (3, 5), (256, 256)] {
                    let c: HashMap<String, f64> = [
                        ("DK", dk),
                        ("DV", dv),
                        ("DK4", (dk + 3) / 4),
                        ("DV4", (dv + 3) / 4),
                        ("WORKGROUP", 16),
                    ]
                    .into_iter()
                    .filter(|(n, _)| {
                        !matches!(kernel, Kernel::FlashBackwardPre | Kernel::FlashBackwardDs) || !n.starts_with("DK")
                    })
                    .filter(|(n, _)| kernel != Kernel::FlashBackwardDs || *n != "DV")
                    .map(|(n, v)| (n.to_string(), v as f64))
                    .collect();
                    if let Err(e) = validate(&src, &c) {
                        failures.push(format!("{kernel:?}/{dtype}/{switches:?}/Dk={dk},Dv={dv}: {e}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The cooperative-matrix kernel for both matrix sizes, every loader, local-p and ALiBi switches,
/// with its tile constants at the smallest and a large tile, and the widest heads.
#[test]
fn coopmat_kernel_validates_for_every_variant() {
    let mut failures = Vec::new();
    for coop in [8, 16] {
        for (vec4_io, local, alibi) in [
            (false, false, false),
            (true, false, false),
            (true, true, true),
            (false, true, false),
        ] {
            let switches = Switches {
                vec4_io,
                local,
                alibi,
                coop,
                ..Switches::default()
            };
            let src = compose_switches(Kernel::FlashCoopmat, wgpu_attention::DType::F16, switches).unwrap();
            let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src));
            assert!(
                module.is_ok_and(|m| m.entry_points.iter().any(|e| e.name == "main")),
                "{switches:?}: no entry point `main`"
            );
            if let Err(e) = validate(&src, &HashMap::new()) {
                failures.push(format!("{switches:?}: {e}"));
                continue;
            }
            for (br, bc, dk, dv, workgroup, varlen) in [(coop, coop, coop, coop, 8, 0), (64, 32, 256, 128, 128, 1)] {
                let c: HashMap<String, f64> = [
                    ("WORKGROUP", workgroup),
                    ("BR", br),
                    ("BC", bc),
                    ("DK", dk),
                    ("DV", dv),
                    ("DK4", dk / 4),
                    ("DV4", dv / 4),
                    ("VARLEN", varlen),
                ]
                .into_iter()
                .map(|(n, v)| (n.to_string(), v as f64))
                .collect();
                if let Err(e) = validate(&src, &c) {
                    failures.push(format!("{switches:?} Br={br} Bc={bc} Dk={dk} Dv={dv}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The cooperative-matrix GEMM for both matrix sizes and the fragment counts its host picks, with
/// its block constants at the smallest block, the CPU block and the GPU block, in both staging
/// orders.
#[test]
fn gemm_coopmat_kernel_validates_for_both_matrix_sizes() {
    let mut failures = Vec::new();
    for coop in [8u32, 16] {
        for rows in [1u32, 2, 4, 8, 16] {
            let switches = Switches {
                coop,
                rows,
                ..Switches::default()
            };
            let src = compose_switches(Kernel::GemmCoopmat, wgpu_attention::DType::F16, switches).unwrap();
            if let Err(e) = validate(&src, &HashMap::new()) {
                failures.push(format!("{switches:?}: {e}"));
                continue;
            }
            for (workgroup, bm, bn, bk) in [
                (8, coop, coop, coop),
                (8, 4 * coop, 4 * coop, 2 * coop),
                (128, 8 * coop, 8 * coop, 2 * coop),
            ] {
                for (a_m, b_k) in [(0, 0), (1, 1)] {
                    let c: HashMap<String, f64> = [
                        ("WORKGROUP", workgroup),
                        ("BM", bm),
                        ("BN", bn),
                        ("BK", bk),
                        ("A_M_CONTIGUOUS", a_m),
                        ("B_K_CONTIGUOUS", b_k),
                    ]
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v as f64))
                    .collect();
                    if let Err(e) = validate(&src, &c) {
                        failures.push(format!("{switches:?} WG={workgroup} BM={bm} BN={bn} BK={bk}: {e}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The FMA calibration kernel at every chain count and workgroup size `peak` tries (chains past
/// CHAINS sit behind `if`s on the override).
#[test]
fn peak_fma_validates_for_every_calibration_shape() {
    for dtype in [wgpu_attention::DType::F32, wgpu_attention::DType::F16] {
        let src = compose(Kernel::PeakFma, dtype).unwrap();
        for chains in [1, 2, 4, 8, 16] {
            for workgroup in [8, 64, 256] {
                let c: HashMap<String, f64> = [("CHAINS", chains), ("WORKGROUP", workgroup), ("ITERS", 256)]
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v as f64))
                    .collect();
                validate(&src, &c).unwrap_or_else(|e| panic!("{dtype} CHAINS={chains} WORKGROUP={workgroup}: {e}"));
            }
        }
    }
}

/// Every composed kernel through naga's writers for the three native backends: SPIR-V (Vulkan),
/// MSL (Metal) and HLSL (DX12), with its default override constants applied. A switches a backend
/// cannot run is named by `pipeline::backend_unsupported` (the runtime refuses it there with that
/// reason: cooperative matrices on DX12, 16×16 ones on Metal); every other write must succeed. (No Metal or DXC
/// compiler runs here: the check is that naga's writers accept every kernel.)
#[test]
fn every_kernel_writes_spirv_msl_and_hlsl() {
    use naga::back::{hlsl, msl, spv};
    use wgpu_attention::pipeline::backend_unsupported;
    use wgpu_attention::wgpu::Backend;
    let (mut written, mut refused, mut failures) = ([0usize; 3], [0usize; 3], Vec::new());
    for source in variants::all() {
        let module = naga::front::wgsl::parse_str(&source.wgsl).unwrap();
        let mut validator =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all());
        let info = validator.validate(&module).unwrap();
        let stage = Some((naga::ShaderStage::Compute, "main"));
        let (module, info) =
            naga::back::pipeline_constants::process_overrides(&module, &info, stage, &Constants::default()).unwrap();
        let results: [(Backend, Result<(), String>); 3] = [
            (
                Backend::Vulkan,
                spv::write_vec(&module, &info, &spv::Options::default(), None)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ),
            (
                Backend::Metal,
                msl::write_string(
                    &module,
                    &info,
                    &msl::Options {
                        lang_version: (3, 1),
                        ..Default::default()
                    },
                    &msl::PipelineOptions::default(),
                )
                .map(|_| ())
                .map_err(|e| e.to_string()),
            ),
            (Backend::Dx12, {
                let options = hlsl::Options {
                    shader_model: hlsl::ShaderModel::V6_2,
                    fake_missing_bindings: true,
                    ..Default::default()
                };
                let mut out = String::new();
                hlsl::Writer::new(&mut out, &options, &hlsl::PipelineOptions::default())
                    .write(&module, &info, None)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        ];
        let switches = source.switches;
        for (i, (backend, result)) in results.into_iter().enumerate() {
            match (result, backend_unsupported(switches, backend)) {
                (Ok(()), None) => written[i] += 1,
                // Refused by the runtime, whether or not naga's writer produces text for it.
                (_, Some(_)) => refused[i] += 1,
                (Err(e), None) => failures.push(format!("{source} on {backend:?}: {e}")),
            }
        }
    }
    eprintln!(
        "SPIR-V {} written, {} refused; MSL {} written, {} refused; HLSL {} written, {} refused",
        written[0], refused[0], written[1], refused[1], written[2], refused[2]
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(written.iter().all(|&n| n > 800), "{written:?}");
}

/// The runtime composes nothing outside the permutation table: a switches it does not list (a
/// row count past the register design's limit, compact loops on the forward) is refused with
/// `Error::Unsupported` naming the table, before any shader exists.
#[test]
fn variants_outside_the_table_are_refused() {
    use wgpu_attention::pipeline::create_module;
    let ctx = common::ctx();
    for switches in [
        Switches {
            rows: 9,
            ..Switches::default()
        },
        Switches {
            rows: 1,
            compact: true,
            ..Switches::default()
        },
    ] {
        match create_module(ctx, Kernel::FlashForward, wgpu_attention::DType::F32, switches) {
            Err(wgpu_attention::Error::Unsupported(why)) => assert!(why.contains("permutation table"), "{why}"),
            other => panic!("{switches:?}: {other:?}"),
        }
    }
}

/// Every composed kernel's shader module created on the test device the way its pipelines are:
/// on Vulkan from the crate's own SPIR-V (no layout decorations outside buffer memory), which the
/// driver (and, in the validation lane of scripts/test.sh, the Khronos layer and its spirv-val)
/// checks at creation. Variants needing a feature the device lacks are named skips.
#[test]
fn every_kernel_module_is_created_on_the_device() {
    use wgpu_attention::pipeline::{create_module, reflect_bindings};
    let ctx = common::ctx();
    let (f16, subgroups, coopmat) = (
        has_for(Cap::F16, "f16 modules"),
        has_for(Cap::Subgroups, "subgroup modules"),
        has_for(Cap::Coopmat, "cooperative-matrix modules"),
    );
    let (mut own, mut wgpu_path, mut skipped, mut failures) = (0, 0, 0, Vec::new());
    for source in variants::all() {
        if let Err(e) = reflect_bindings(&source.wgsl) {
            failures.push(format!("{source}: bindings: {e}"));
            continue;
        }
        let switches = source.switches;
        let needs_subgroups = switches.subgroup > 0 || source.kernel == Kernel::FlashDecodeLanes;
        if (source.dtype == wgpu_attention::DType::F16 && !f16)
            || (needs_subgroups && !subgroups)
            || (switches.coop > 0 && !coopmat)
        {
            skipped += 1;
            continue;
        }
        match create_module(ctx, source.kernel, source.dtype, switches) {
            Ok(true) => own += 1,
            Ok(false) => wgpu_path += 1,
            Err(e) => failures.push(format!("{source}: {e}")),
        }
    }
    eprintln!("{own} modules from the crate's SPIR-V, {wgpu_path} through wgpu's path, {skipped} skipped");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(own + wgpu_path > 0);
    let vulkan = ctx
        .info()
        .adapter
        .as_ref()
        .is_some_and(|a| a.backend == wgpu_attention::wgpu::Backend::Vulkan);
    if vulkan
        && ctx
            .features()
            .contains(wgpu_attention::wgpu::Features::PASSTHROUGH_SHADERS)
    {
        // Every kernel but the cooperative-matrix ones takes the crate's SPIR-V on Vulkan.
        let coop_modules = variants::all()
            .iter()
            .filter(|s| matches!(s.kernel, Kernel::FlashCoopmat | Kernel::GemmCoopmat))
            .count();
        assert!(
            wgpu_path <= coop_modules,
            "{wgpu_path} modules fell back to wgpu's SPIR-V writer"
        );
    }
}

/// The test-only shaders of tests/shaders/ by import path.
fn test_shader(path: &str) -> Option<&'static str> {
    match path {
        "broken_entry.wgsl" => Some(include_str!("shaders/broken_entry.wgsl")),
        "broken_piece.wgsl" => Some(include_str!("shaders/broken_piece.wgsl")),
        _ => None,
    }
}

/// A compiler error in a piece is placed at the piece's file and line, through the composed
/// source's line markers: naga's parse error, and the device's compilation messages
/// (`ShaderModule::get_compilation_info`) as `Error::Shader`.
#[test]
fn a_broken_piece_is_named_by_file_and_line() {
    use wgpu_attention::pipeline::{compose::compose_with, create_wgsl_module, source_location};
    let src = compose_with(
        &test_shader,
        "tests/shaders",
        "broken_entry.wgsl",
        wgpu_attention::DType::F32,
        &[],
    )
    .expect("the recipe itself is sound");
    let expected = ("tests/shaders/broken_piece.wgsl".to_string(), 4);

    let error = naga::front::wgsl::parse_str(&src).expect_err("the piece does not compile");
    let line = error.location(&src).expect("naga places its error").line_number;
    assert_eq!(
        source_location(&src, line),
        Some(expected.clone()),
        "{}",
        error.emit_to_string(&src)
    );

    match create_wgsl_module(common::ctx(), "broken_entry.wgsl", &src) {
        Err(wgpu_attention::Error::Shader { module, messages }) => {
            assert_eq!(module, "broken_entry.wgsl");
            let place = format!("{}:{}:", expected.0, expected.1);
            assert!(messages.iter().any(|m| m.starts_with(&place)), "{messages:?}");
            assert!(messages.iter().any(|m| m.contains("undefined_name")), "{messages:?}");
        }
        other => panic!("expected Error::Shader, got {other:?}"),
    }
}

/// Every permutation's host binding table ([`wgpu_attention::kernels::bindings`], what the bind
/// group layout is built from) equals what naga reflects from its composed WGSL: binding numbers,
/// uniform or storage, read-only or read-write.
#[test]
fn every_binding_table_matches_the_shader() {
    use wgpu_attention::pipeline::reflect_bindings;
    let mut failures = Vec::new();
    let sources = variants::all();
    for s in &sources {
        let host = wgpu_attention::kernels::bindings(s.kernel, s.switches);
        match reflect_bindings(&s.wgsl) {
            Ok(shader) if shader == host => {}
            Ok(shader) => failures.push(format!("{s}: host {host:?}, shader {shader:?}")),
            Err(e) => failures.push(format!("{s}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(sources.len() > 4000, "{} permutations", sources.len());
}

/// No permutation binds more storage buffers than WebGPU guarantees every device (8 per stage):
/// small inputs share the side buffer, the paged decode's partial states one scratch binding, the
/// backward's key lengths its row records.
#[test]
fn every_kernel_fits_webgpu_storage_budget() {
    use wgpu_attention::kernels::{bindings, storage_count, STORAGE_BUDGET};
    assert_eq!(STORAGE_BUDGET, 8);
    let over: Vec<String> = wgpu_attention::pipeline::permutations()
        .into_iter()
        .filter_map(|(kernel, dtype, switches)| {
            let n = storage_count(&bindings(kernel, switches));
            (n > STORAGE_BUDGET).then(|| format!("{kernel:?}/{dtype}/{switches:?}: {n} storage buffers"))
        })
        .collect();
    assert!(over.is_empty(), "{}", over.join("\n"));
}
