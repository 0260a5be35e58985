//! Every kernel's composed WGSL parses and validates with naga, before and after its override
//! constants are applied. Needs no GPU.

use std::collections::HashMap;

type Constants = naga::back::PipelineConstants;
use wgpu_attention::pipeline::{compose, Kernel};

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
    let mut failures = Vec::new();
    for kernel in Kernel::ALL {
        for &dtype in kernel.dtypes() {
            let src = compose(kernel, dtype);
            if let Err(e) = validate(&src, &HashMap::new()) {
                failures.push(format!("{kernel:?}/{dtype}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn flash_kernel_validates_for_odd_head_dims() {
    let src = compose(Kernel::FlashForward, wgpu_attention::DType::F32);
    for (dk, dv) in [(8, 8), (24, 40), (256, 256), (3, 5)] {
        let dv_pad = (dv + 3) / 4 * 4;
        let c: HashMap<String, f64> = [
            ("DK", dk),
            ("DV", dv),
            ("DV_PAD", dv_pad),
            ("DKV_MAX", dk.max(dv_pad)),
            ("BLOCK_Q", 16),
            ("BLOCK_K", 8),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v as f64))
        .collect();
        validate(&src, &c).unwrap_or_else(|e| panic!("Dk={dk} Dv={dv}: {e}"));
    }
}
