//! The numeric policy (docs/ATTENTION.md, "Numbers at the edges"), case by case: every case of
//! tests/common/numeric_policy.rs runs through the CPU reference and through every kernel (fused
//! with subgroup and with plain K/V fetch, staged, decode with one key, two keys and the default
//! number of keys per split; f32 and, where the values exist in half precision, f16). The
//! reference must meet the policy's oracle, and every kernel must match the reference element by
//! element (NaN only matches NaN, ±∞ only itself).

mod common;
#[path = "common/numeric_policy.rs"]
mod numeric_policy;

use common::ctx;
use common::skip::Cap;
use numeric_policy::{Case, BIAS_SHAPE, P};
use wgpu_attention::{Attention, DType, DecodeConfig, Design, FlashConfig, KernelChoice, Tensor, Tuning};

/// The kernels every case runs through.
fn kernels() -> Vec<(String, KernelChoice, Option<Design>, Tuning)> {
    let plain = FlashConfig {
        subgroups: false,
        ..FlashConfig::new(16, 2)
    };
    let tile = |flash| Tuning {
        flash,
        ..Default::default()
    };
    // Decode with one key per split (every key's state goes through the merge), with two, and
    // with the default split count.
    let split = |splits| Tuning {
        decode: Some(DecodeConfig {
            workgroup: 8,
            rows: 0,
            splits,
            lanes: false,
        }),
        ..Default::default()
    };
    let mut kernels: Vec<(String, KernelChoice, Option<Design>, Tuning)> = [
        ("fused", KernelChoice::Fused, tile(None)),
        ("fused/plain-fetch", KernelChoice::Fused, tile(Some(plain))),
        ("staged", KernelChoice::Staged, tile(None)),
        ("decode/6 splits", KernelChoice::Decode, split(6)),
        ("decode/3 splits", KernelChoice::Decode, split(3)),
        ("decode", KernelChoice::Decode, tile(None)),
    ]
    .into_iter()
    .map(|(name, kernel, tuning)| (name.to_string(), kernel, None, tuning))
    .collect();
    // Every other fused design the device runs (f32 and f16 cases alike; a design that cannot
    // serve a case falls back and says so).
    for design in wgpu_attention::available_designs(ctx(), DType::F16) {
        if design != Design::Register {
            let name = format!("fused/{design}");
            kernels.push((name, KernelChoice::Fused, Some(design), tile(None)));
        }
    }
    // The decode kernel's lanes design (head dim over a subgroup), where the device has it.
    let p = wgpu_attention::Problem {
        b: 1,
        hq: 1,
        hkv: 1,
        lq: 1,
        lk: 1,
        dk: 8,
        dv: 8,
    };
    let lanes = common::skip::has_for(Cap::Subgroups, "the decode kernel's lanes design").then(|| {
        DecodeConfig::lanes_for(ctx(), &p)
            .unwrap()
            .expect("a fixed subgroup size gives the lanes design")
    });
    if let Some(lanes) = lanes {
        let tuning = |splits| Tuning {
            decode: Some(DecodeConfig { splits, ..lanes }),
            ..Default::default()
        };
        kernels.push(("decode-lanes/6 splits".into(), KernelChoice::Decode, None, tuning(6)));
        kernels.push(("decode-lanes".into(), KernelChoice::Decode, None, tuning(0)));
    }
    kernels
}

fn upload(x: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    match dtype {
        DType::F16 => {
            let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            Tensor::from_slice(ctx(), &h, shape).unwrap()
        }
        _ => Tensor::from_slice(ctx(), x, shape).unwrap(),
    }
}

fn run_case(case: &Case, dtype: DType) -> Vec<String> {
    let ctx = ctx();
    let numeric_policy::Prepared {
        x,
        mut opts,
        expected,
        mut failures,
    } = numeric_policy::prepare(case, dtype);
    let [qs, ks, vs] = P.qkv_shapes();
    opts.bias = x.bias.as_ref().map(|b| upload(b, &BIAS_SHAPE, dtype));
    opts.mask = x
        .mask
        .as_ref()
        .map(|m| Tensor::from_slice(ctx, m, &BIAS_SHAPE).unwrap());
    opts.key_lengths = x
        .key_lengths
        .as_ref()
        .map(|l| Tensor::from_slice(ctx, l, &[1]).unwrap());
    for (name, kernel, design, tuning) in kernels() {
        let mut opts = opts.clone();
        opts.kernel = kernel;
        opts.design = design;
        let label = format!("{} [{name}, {}]", case.name, dtype.name());
        let call = match Attention::with_tuning(
            ctx,
            &upload(&x.q, &qs, dtype),
            &upload(&x.k, &ks, dtype),
            &upload(&x.v, &vs, dtype),
            &opts,
            &tuning,
        ) {
            Ok(call) => call,
            Err(e) => {
                failures.push(format!("{label}: {e}"));
                continue;
            }
        };
        call.submit().unwrap();
        let gpu = call.into_output();
        let out = gpu.out.to_f32_vec(ctx).unwrap();
        let lse = gpu.lse.unwrap().to_vec::<f32>(ctx).unwrap();
        failures.extend(numeric_policy::compare_kernel(&label, &out, &lse, &expected, dtype));
    }
    failures
}

#[test]
fn numeric_policy_f32() {
    let failures: Vec<String> = numeric_policy::cases()
        .iter()
        .flat_map(|c| run_case(c, DType::F32))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn numeric_policy_f16() {
    require!(Cap::F16);
    let failures: Vec<String> = numeric_policy::cases()
        .iter()
        .filter(|c| c.f16)
        .flat_map(|c| run_case(c, DType::F16))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}
