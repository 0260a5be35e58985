//! `wgpu-attention run --backward` end to end on a tiny shape: the gradient files match the CPU
//! reference, and the backward flags are refused where they do not apply.

use std::path::Path;

use assert_cmd::Command;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::files::{read_npy, write_npy, HostData, HostTensor};
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::{Alignment, AttentionOptions, Problem};

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgpu-attention"));
    c.env(
        wgpu_attention::bench::CACHE_ENV,
        "/nonexistent/wgpu-attention-test-cache.json",
    );
    c
}

fn write(path: &Path, shape: &[usize], data: Vec<f32>) {
    let t = HostTensor {
        shape: shape.to_vec(),
        data: HostData::F32(data),
    };
    write_npy(path, &t).unwrap();
}

fn floats(path: &Path) -> Vec<f32> {
    read_npy(path, "x").unwrap().to_f32().unwrap()
}

/// One `error: …` line mentioning `needle`, and a failure status.
fn fails_with(cmd: &mut Command, needle: &str) {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR") && !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{}",
        lines[0]
    );
}

#[test]
fn run_backward_writes_gradients_that_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let p = Problem {
        b: 1,
        hq: 2,
        hkv: 1,
        lq: 7,
        lk: 9,
        dk: 8,
        dv: 4,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut gen = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect() };
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        gen(qs.iter().product()),
        gen(ks.iter().product()),
        gen(vs.iter().product()),
    );
    let d_out = gen(p.b * p.hq * p.lq * p.dv);
    let bias = gen(p.lq * p.lk);
    let path = |n: &str| dir.path().join(format!("{n}.npy"));
    write(&path("q"), &qs, q.clone());
    write(&path("k"), &ks, k.clone());
    write(&path("v"), &vs, v.clone());
    write(&path("do"), &[p.b, p.hq, p.lq, p.dv], d_out.clone());
    write(&path("bias"), &[p.lq, p.lk], bias.clone());
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        softcap: Some(2.0),
        ..Default::default()
    };
    let inputs = HostInputs {
        bias: Some(Broadcast {
            data: &bias,
            shape: [1, 1, p.lq, p.lk],
        }),
        ..HostInputs::new(p, &q, &k, &v)
    };
    let expected = reference::sdpa_backward(&inputs, &opts, &d_out).unwrap();
    // The fused kernels and the staged path (GEMMs over materialized P and dS) alike.
    for (kernel, path_name) in [("fused", "fused kernels"), ("staged", "staged path")] {
        let grad = |n: &str| dir.path().join(format!("{n}-{kernel}.npy"));
        let out = cli()
            .arg("run")
            .args(
                ["--q", "--k", "--v", "--bias"]
                    .iter()
                    .zip(["q", "k", "v", "bias"])
                    .flat_map(|(f, n)| [f.to_string(), path(n).display().to_string()]),
            )
            .args(["--causal", "bottom-right", "--softcap", "2", "--backward", "--check"])
            .args(["--kernel", kernel])
            .arg("--d-out")
            .arg(path("do"))
            .arg("--out-dq")
            .arg(grad("dq"))
            .arg("--out-dk")
            .arg(grad("dk"))
            .arg("--out-dv")
            .arg(grad("dv"))
            .arg("--out-dbias")
            .arg(grad("dbias"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{kernel}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("sdpa backward ({path_name}")),
            "{kernel}: {stdout}"
        );
        assert_eq!(stdout.matches(": PASS").count(), 4, "{kernel}: {stdout}");
        for (name, want) in [
            ("dq", &expected.dq),
            ("dk", &expected.dk),
            ("dv", &expected.dv),
            ("dbias", expected.dbias.as_ref().unwrap()),
        ] {
            let c = reference::compare(&floats(&grad(name)), want, Tolerance::F32);
            assert!(c.ok(), "{kernel} {name}: {c}");
        }
    }
}

#[test]
fn backward_flags_are_refused_where_they_do_not_apply() {
    fails_with(
        cli().args(["run", "--q", "q.npy", "--out-dq", "dq.npy"]),
        "--out-dq needs --backward",
    );
    fails_with(
        cli().args([
            "run",
            "--q",
            "q.npy",
            "--backward",
            "--d-out",
            "do.npy",
            "--kernel",
            "decode",
        ]),
        "no decode kernel",
    );
    fails_with(cli().args(["run", "--q", "q.npy", "--backward"]), "--d-out");
    fails_with(
        cli().args([
            "run",
            "--variant",
            "hard",
            "--safetensors",
            "x.safetensors",
            "--backward",
        ]),
        "sdpa only",
    );
}

/// `bench --backward` adds one checked `backward` row per shape and causal variant, with the
/// backward/forward ratio in its note, and a `backward-staged` row next to it when staged rows run.
#[test]
fn bench_backward_rows_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = cli()
        .args([
            "bench",
            "--shape",
            "1,2,1,13,17,8,8",
            "--kernel",
            "fused",
            "--kernel",
            "staged",
            "--backward",
        ])
        .args([
            "--causal",
            "none",
            "--causal",
            "bottom-right",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--quiet",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let backward: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kernel"] == "backward").collect();
    assert_eq!(backward.len(), 2, "{rows:#?}");
    let staged: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kernel"] == "backward-staged").collect();
    assert_eq!(staged.len(), 2, "{rows:#?}");
    for row in &staged {
        assert!(row["note"].as_str().unwrap().contains("fused backward"), "{row:#?}");
    }
    for row in backward.into_iter().chain(staged) {
        assert_eq!(row["within_tolerance"], true, "{row:#?}");
        assert_eq!(row["checked"], "dq, dk, dv", "{row:#?}");
        assert!(row["median_ms"].as_f64().unwrap() > 0.0, "{row:#?}");
        assert!(
            row["note"].as_str().unwrap().contains("backward/forward time"),
            "{row:#?}"
        );
    }
}
