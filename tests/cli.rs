//! The `wgpu-attention` CLI end to end, on tiny shapes: info, peak, bench (JSON/CSV/SVG and
//! errors against the reference), run on .npy and .safetensors files (checked against the
//! reference), the attention family's variants in run and bench, one-line errors for every bad
//! input file or parameter, and tune with a temporary cache that the library then picks up.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::skip::Cap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use wgpu_attention::bench::{adapter_key, BucketDesign, ShapeClass, TuneCache, TuneEntry, TunedConfig, CACHE_ENV};
use wgpu_attention::files::{read_npy, write_npy, HostData, HostTensor};
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::{Alignment, AttentionOptions, Context, DType, Design, FlashConfig, Problem};

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgpu-attention"));
    // Never let a user's tuning cache change what the tests run.
    c.env(CACHE_ENV, "/nonexistent/wgpu-attention-test-cache.json");
    c
}

/// stderr without the Vulkan loader's unrelated XDG_RUNTIME_DIR warnings.
fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.contains("XDG_RUNTIME_DIR") && !l.trim().is_empty())
        .map(String::from)
        .collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "command failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail with exactly one `error: …` line containing `needle`.
fn fails_with(cmd: &mut Command, needle: &str) {
    fails_with_all(cmd, &[needle]);
}

/// Runs a command that must fail with exactly one `error: …` line containing every needle.
fn fails_with_all(cmd: &mut Command, needles: &[&str]) {
    let out = cmd.output().expect("runs");
    assert!(!out.status.success(), "expected failure, got success: {}", stdout(&out));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "expected one error line, got {lines:#?}");
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for needle in needles {
        assert!(
            lines[0].to_lowercase().contains(&needle.to_lowercase()),
            "error line {:?} does not mention {needle:?}",
            lines[0]
        );
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report written")).expect("valid JSON")
}

fn random(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn f32_tensor(shape: &[usize], data: Vec<f32>) -> HostTensor {
    HostTensor {
        shape: shape.to_vec(),
        data: HostData::F32(data),
    }
}

#[test]
fn info_prints_adapter_and_limits() {
    let out = ok(cli().arg("info"));
    let s = stdout(&out);
    for key in [
        "adapter:",
        "backend:",
        "driver:",
        "features:",
        "cooperative matrices",
        "coopmat design:",
        "max_compute_workgroup_storage_size",
    ] {
        assert!(s.contains(key), "missing {key} in\n{s}");
    }
}

#[test]
fn peak_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peak.json");
    let out = ok(cli().args(["peak", "--iters", "1", "--json"]).arg(&path));
    assert!(stdout(&out).contains("GFLOP/s"));
    let v = json(&path);
    assert!(v["fma_f32_gflops"].as_f64().unwrap() > 0.0);
    // The reported ceiling is the best of every calibration shape tried, and each is listed.
    for (dtype, peak) in [("f32", &v["fma_f32"]), ("f16", &v["fma_f16"])] {
        if peak.is_null() {
            continue;
        }
        let best = peak["gflops"].as_f64().unwrap();
        let variants = peak["variants"].as_array().unwrap();
        assert!(variants.len() > 1, "{dtype}: one calibration shape only");
        for shape in variants {
            let g = shape["gflops"].as_f64().unwrap();
            assert!(g > 0.0 && best >= g, "{dtype}: best {best} below a tried shape {shape}");
            let line = format!(
                "{dtype} {:>2} chains  wg {:>3}:",
                shape["chains"].as_u64().unwrap(),
                shape["workgroup"].as_u64().unwrap()
            );
            assert!(stdout(&out).contains(&line), "missing {line:?} in\n{}", stdout(&out));
        }
    }
    assert_eq!(v["fma_f32_gflops"].as_f64(), v["fma_f32"]["gflops"].as_f64());
    // A CPU adapter whose name gives its vector width (llvmpipe) gets the theoretical estimate.
    let cpu = v["adapter"]["device_type"] == "Cpu" && v["adapter"]["name"].as_str().unwrap().contains(" bits");
    if cpu && std::path::Path::new("/proc/cpuinfo").exists() {
        let e = &v["cpu_estimate"];
        assert!(e["gflops"].as_f64().unwrap() > 0.0, "no estimate in {v}");
        assert!(e["cores"].as_u64().unwrap() >= 1 && e["vector_bits"].as_u64().unwrap() >= 128);
        assert!(stdout(&out).contains("CPU theoretical:") && stdout(&out).contains("(estimate)"));
    }
    assert!(v["bandwidth_gbps"].as_f64().unwrap() > 0.0);
    assert!(["gpu-timestamps", "wall-clock"].contains(&v["timer"].as_str().unwrap()));
    assert!(v["adapter"]["name"].is_string());
    assert!(v["adapter"]["device_type"].is_string());
}

#[test]
fn bench_reports_checked_rows_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let (j, c, p) = (
        dir.path().join("b.json"),
        dir.path().join("b.csv"),
        dir.path().join("b.svg"),
    );
    let out = ok(cli()
        .args([
            "bench",
            "--shape",
            "1,4,2,24,40,16,8",
            "--shape",
            "1,2,32,16",
            "--kernel",
            "all",
        ])
        .args([
            "--causal",
            "none",
            "--causal",
            "bottom-right",
            "--warmup",
            "1",
            "--iters",
            "2",
            "--quiet",
        ])
        .arg("--json")
        .arg(&j)
        .arg("--csv")
        .arg(&c)
        .arg("--plot")
        .arg(&p));
    let table = stdout(&out);
    assert!(table.contains("median_ms") && table.contains("fused") && table.contains("staged"));
    let v = json(&j);
    assert!(["gpu-timestamps", "wall-clock"].contains(&v["timer"].as_str().unwrap()));
    assert!(v["peak_gflops"].as_f64().unwrap() > 0.0);
    for key in ["name", "backend", "driver", "device_type"] {
        assert!(v["adapter"][key].is_string(), "adapter.{key}");
    }
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 3);
    for r in rows {
        for key in [
            "kernel",
            "dtype",
            "shape",
            "causal",
            "median_ms",
            "min_ms",
            "gflops",
            "gbps",
            "pct_peak",
            "max_abs_err",
            "max_rel_err",
            "checked",
            "alloc_bytes",
        ] {
            assert!(r.get(key).is_some(), "row lacks {key}: {r}");
        }
        for key in ["b", "hq", "hkv", "lq", "lk", "dk", "dv"] {
            assert!(r["shape"][key].is_u64(), "shape.{key}");
        }
        assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["min_ms"].as_f64().unwrap() <= r["median_ms"].as_f64().unwrap());
        assert!(r["gflops"].as_f64().unwrap() > 0.0);
        if r["kernel"] != "reference" {
            assert_eq!(r["checked"], "all");
            assert_eq!(r["within_tolerance"], true, "{r}");
            assert!(r["max_abs_err"].as_f64().unwrap() < 1e-5, "{r}");
            assert!(r["alloc_bytes"].as_u64().unwrap() > 0);
            assert!(r["pct_peak"].as_f64().unwrap() > 0.0);
        }
    }
    let first = &rows[0];
    assert_eq!(first["shape"]["hkv"], 2);
    assert_eq!(first["shape"]["lk"], 40);
    let csv = std::fs::read_to_string(&c).unwrap();
    assert_eq!(csv.lines().count(), 1 + rows.len());
    assert!(csv.starts_with("kernel,dtype,b,hq,hkv,lq,lk,dk,dv,causal"));
    let svg = std::fs::read_to_string(&p).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("GFLOP/s") && svg.contains("polyline"));
}

#[test]
fn bench_f16_within_tolerance() {
    require!(Cap::F16);
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("b.json");
    ok(cli()
        .args([
            "bench",
            "--shape",
            "1,2,33,16",
            "--dtype",
            "f16",
            "--causal",
            "top-left",
        ])
        .args(["--window", "8,-", "--warmup", "0", "--iters", "1", "--quiet", "--json"])
        .arg(&j));
    let v = json(&j);
    for r in v["rows"].as_array().unwrap() {
        assert_eq!(r["dtype"], "f16");
        assert_eq!(r["window"], serde_json::json!([8, null]));
        assert_eq!(r["within_tolerance"], true, "{r}");
    }
}

#[test]
fn bench_rejects_bad_shapes() {
    // Argument errors come from clap: the message first, then clap's "--help" hint.
    for (shape, needle) in [
        ("1,2,3", "3 values"),
        ("1,3,2,8,8", "multiple"),
        ("1,2,y,4", "invalid digit"),
    ] {
        let out = cli().args(["bench", "--shape", shape]).output().unwrap();
        assert!(!out.status.success());
        let lines = stderr_lines(&out);
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{lines:?}"
        );
    }
    fails_with(cli().args(["bench", "--preset", "nope"]), "unknown preset");
}

/// Reference O for row-major f32 inputs.
fn expected(
    p: Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<(&[bool], [usize; 4])>,
    opts: &AttentionOptions,
) -> reference::ReferenceOutput {
    let host = HostInputs {
        problem: p,
        q,
        k,
        v,
        bias: None,
        mask: mask.map(|(data, shape)| Broadcast { data, shape }),
        key_lengths: None,
        score: Default::default(),
        local: None,
    };
    reference::sdpa(&host, opts)
}

fn out_f32(path: &Path) -> Vec<f32> {
    read_npy(path, "out").unwrap().to_f32().unwrap()
}

#[test]
fn run_npy_inputs_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let p = Problem {
        b: 1,
        hq: 4,
        hkv: 2,
        lq: 12,
        lk: 20,
        dk: 8,
        dv: 16,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product()),
        random(&mut rng, ks.iter().product()),
        random(&mut rng, vs.iter().product()),
    );
    let mask: Vec<bool> = (0..p.lq * p.lk).map(|i| i % 3 != 1).collect();
    write_npy(&d("q.npy"), &f32_tensor(&qs, q.clone())).unwrap();
    write_npy(&d("k.npy"), &f32_tensor(&ks, k.clone())).unwrap();
    write_npy(&d("v.npy"), &f32_tensor(&vs, v.clone())).unwrap();
    write_npy(
        &d("mask.npy"),
        &HostTensor {
            shape: vec![p.lq, p.lk],
            data: HostData::Bool(mask.clone()),
        },
    )
    .unwrap();

    // Fused path, bottom-right causal, mask, LSE, --check.
    let out = ok(cli()
        .arg("run")
        .arg("--q")
        .arg(d("q.npy"))
        .arg("--k")
        .arg(d("k.npy"))
        .arg("--v")
        .arg(d("v.npy"))
        .arg("--mask")
        .arg(d("mask.npy"))
        .args(["--causal", "bottom-right", "--kernel", "fused", "--check", "--out"])
        .arg(d("o.npy"))
        .arg("--lse")
        .arg(d("lse.npy")));
    assert!(stdout(&out).contains("check out against the CPU reference"));
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        ..Default::default()
    };
    let r = expected(p, &q, &k, &v, Some((&mask, [1, 1, p.lq, p.lk])), &opts);
    let o = read_npy(&d("o.npy"), "o").unwrap();
    assert_eq!(o.shape, vec![p.b, p.hq, p.lq, p.dv]);
    let c = reference::compare(&o.to_f32().unwrap(), &r.out, Tolerance::F32);
    assert!(c.ok(), "{c}");
    let lse = read_npy(&d("lse.npy"), "lse").unwrap();
    assert_eq!(lse.shape, vec![p.b, p.hq, p.lq]);
    assert!(reference::compare(&lse.to_f32().unwrap(), &r.lse, Tolerance::F32).ok());

    // Staged path with weights, scale and softcap, no mask.
    ok(cli()
        .arg("run")
        .arg("--q")
        .arg(d("q.npy"))
        .arg("--k")
        .arg(d("k.npy"))
        .arg("--v")
        .arg(d("v.npy"))
        .args(["--kernel", "staged", "--scale", "0.5", "--softcap", "3", "--out"])
        .arg(d("o2.npy"))
        .arg("--weights")
        .arg(d("w.npy")));
    let opts = AttentionOptions {
        scale: Some(0.5),
        softcap: Some(3.0),
        ..Default::default()
    };
    let r = expected(p, &q, &k, &v, None, &opts);
    let c = reference::compare(&out_f32(&d("o2.npy")), &r.out, Tolerance::F32);
    assert!(c.ok(), "{c}");
    let w = read_npy(&d("w.npy"), "w").unwrap();
    assert_eq!(w.shape, vec![p.b, p.hq, p.lq, p.lk]);
    assert!(reference::compare(&w.to_f32().unwrap(), &r.weights, Tolerance::F32).ok());
}

fn write_safetensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, shape, bytes)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*dt, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn f16_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
}

#[test]
fn run_safetensors_f16_matches_the_reference() {
    require!(Cap::F16);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qkv.safetensors");
    let p = Problem {
        b: 2,
        hq: 2,
        hkv: 1,
        lq: 9,
        lk: 9,
        dk: 16,
        dv: 16,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let [qs, ks, vs] = p.qkv_shapes();
    let round = |x: Vec<f32>| -> Vec<f32> { x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect() };
    let q = round(random(&mut rng, qs.iter().product()));
    let k = round(random(&mut rng, ks.iter().product()));
    let v = round(random(&mut rng, vs.iter().product()));
    use safetensors::Dtype::F16;
    write_safetensors(
        &file,
        &[
            ("query", F16, qs.to_vec(), f16_bytes(&q)),
            ("key", F16, ks.to_vec(), f16_bytes(&k)),
            ("value", F16, vs.to_vec(), f16_bytes(&v)),
        ],
    );
    let o = dir.path().join("o.npy");
    ok(cli()
        .arg("run")
        .arg("--safetensors")
        .arg(&file)
        .args([
            "--q-name", "query", "--k-name", "key", "--v-name", "value", "--causal", "top-left",
        ])
        .arg("--out")
        .arg(&o));
    let out = read_npy(&o, "o").unwrap();
    assert_eq!(out.dtype(), DType::F16);
    let opts = AttentionOptions {
        causal: Some(Alignment::TopLeft),
        ..Default::default()
    };
    let r = expected(p, &q, &k, &v, None, &opts);
    let c = reference::compare(&out.to_f32().unwrap(), &r.out, Tolerance::F16);
    assert!(c.ok(), "{c}");
}

#[test]
fn bad_files_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let shape = [1usize, 2, 8, 8];
    let good = f32_tensor(&shape, vec![0.25; 128]);
    write_npy(&d("q.npy"), &good).unwrap();
    // Wrong dtype: int32.
    {
        use npyz::WriterBuilder;
        let mut buf = Vec::new();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[1, 2, 8, 8])
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        w.extend(0..128i32).unwrap();
        w.finish().unwrap();
        std::fs::write(d("int.npy"), buf).unwrap();
    }
    // Wrong rank, mismatched shape, truncated, garbage, float mask.
    write_npy(&d("rank3.npy"), &f32_tensor(&[2, 8, 8], vec![0.5; 128])).unwrap();
    write_npy(&d("k_wrong.npy"), &f32_tensor(&[1, 2, 8, 4], vec![0.5; 64])).unwrap();
    let bytes = std::fs::read(d("q.npy")).unwrap();
    std::fs::write(d("trunc.npy"), &bytes[..bytes.len() - 100]).unwrap();
    std::fs::write(d("garbage.npy"), b"this is not numpy").unwrap();
    write_npy(&d("fmask.npy"), &f32_tensor(&[8, 8], vec![1.0; 64])).unwrap();

    let run = |q: &str, k: &str, extra: &[&str]| -> Command {
        let mut c = cli();
        c.arg("run")
            .arg("--q")
            .arg(d(q))
            .arg("--k")
            .arg(d(k))
            .arg("--v")
            .arg(d("q.npy"))
            .args(extra);
        c
    };
    fails_with(&mut run("int.npy", "q.npy", &[]), "dtype <i4");
    fails_with(&mut run("rank3.npy", "q.npy", &[]), "rank 4");
    fails_with(&mut run("q.npy", "k_wrong.npy", &[]), "shape");
    fails_with(&mut run("q.npy", "trunc.npy", &[]), "truncated");
    fails_with(&mut run("garbage.npy", "q.npy", &[]), "not a valid .npy");
    fails_with(&mut run("missing.npy", "q.npy", &[]), "missing.npy");
    let fmask = d("fmask.npy");
    fails_with(&mut run("q.npy", "q.npy", &["--mask", fmask.to_str().unwrap()]), "bool");
    fails_with(cli().args(["run", "--q"]).arg(d("q.npy")), "missing --k");

    // Safetensors: missing tensor, wrong dtype, truncated file, nonexistent file.
    let st = d("t.safetensors");
    let q_bytes: Vec<u8> = vec![0.5f32; 128].iter().flat_map(|x| x.to_le_bytes()).collect();
    let i_bytes: Vec<u8> = (0..128i32).flat_map(|x| x.to_le_bytes()).collect();
    write_safetensors(
        &st,
        &[
            ("q", safetensors::Dtype::F32, shape.to_vec(), q_bytes.clone()),
            ("k", safetensors::Dtype::F32, shape.to_vec(), q_bytes),
            ("v", safetensors::Dtype::I32, shape.to_vec(), i_bytes),
        ],
    );
    let st_run = |file: &PathBuf, extra: &[&str]| -> Command {
        let mut c = cli();
        c.arg("run").arg("--safetensors").arg(file).args(extra);
        c
    };
    fails_with(&mut st_run(&st, &["--v-name", "values"]), "no tensor named \"values\"");
    fails_with(&mut st_run(&st, &[]), "dtype I32");
    let all = std::fs::read(&st).unwrap();
    let cut = d("cut.safetensors");
    std::fs::write(&cut, &all[..all.len() - 64]).unwrap();
    fails_with(&mut st_run(&cut, &[]), "not a valid .safetensors");
    fails_with(&mut st_run(&d("nope.safetensors"), &[]), "nope.safetensors");
}

#[test]
fn tune_writes_a_cache_the_library_uses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let out = ok(cli()
        .args(["tune", "--quick", "--quiet", "--iters", "1", "--cache"])
        .arg(&cache));
    assert!(stdout(&out).contains("f32/d32/lq64/g1/none/lk128"), "{}", stdout(&out));
    let ctx = Context::new().unwrap();
    let key = adapter_key(ctx.info().adapter.as_ref().unwrap());
    let parsed = TuneCache::load(&cache).expect("the cache parses");
    let entries = &parsed.adapters[&key];
    let p = Problem {
        b: 1,
        hq: 1,
        hkv: 1,
        lq: 100,
        lk: 100,
        dk: 32,
        dv: 32,
    };
    let plain = AttentionOptions::default();
    let class = ShapeClass::of(&p, DType::F32, &plain);
    let entry = &entries[&class.key(128)];
    assert!(entry.median_ms > 0.0);
    assert_eq!(
        parsed.lookup(&key, &class, p.lk).map(TunedConfig::Register),
        Some(entry.config)
    );
    // A decode call (one query row, GQA) is another class: the prefill entry does not serve it.
    let decode = Problem { lq: 1, hq: 4, ..p };
    assert_eq!(
        parsed.lookup(&key, &ShapeClass::of(&decode, DType::F32, &plain), p.lk),
        None
    );

    // A hand-written cache with an unusual (valid) tile: the library must use it.
    let mine = dir.path().join("mine.json");
    let cfg = FlashConfig::new(16, 3);
    let mut c = TuneCache::default();
    c.insert(
        &key,
        ShapeClass::of(&Problem { dk: 16, dv: 16, ..p }, DType::F32, &plain).key(64),
        TuneEntry {
            config: TunedConfig::Register(cfg),
            median_ms: 1.0,
            default_ms: None,
            problem: p,
            timer: "wall-clock".into(),
        },
    );
    c.save(&mine).unwrap();
    let j = dir.path().join("b.json");
    ok(cli()
        .env(CACHE_ENV, &mine)
        .args([
            "bench",
            "--shape",
            "1,2,50,16",
            "--kernel",
            "fused",
            "--iters",
            "1",
            "--quiet",
            "--json",
        ])
        .arg(&j));
    let row = &json(&j)["rows"][0];
    assert_eq!(row["tile"], "wg16 rows3");
    assert_eq!(row["within_tolerance"], true);

    // An unreadable cache falls back to the defaults without failing.
    std::fs::write(&mine, "{ not json").unwrap();
    ok(cli()
        .env(CACHE_ENV, &mine)
        .args([
            "bench",
            "--shape",
            "1,2,50,16",
            "--kernel",
            "fused",
            "--iters",
            "1",
            "--quiet",
            "--json",
        ])
        .arg(&j));
    assert_ne!(json(&j)["rows"][0]["tile"], "wg32 q8 k8");
}

/// `tune --kinds decode` measures the decode kernel's workgroups × splits; a decode entry is then
/// what decode calls of that class run.
#[test]
fn tune_decode_stores_decode_tiles_the_library_uses() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("tune.json");
    let out = ok(cli()
        .args([
            "tune",
            "--kinds",
            "decode",
            "--head-dims",
            "32",
            "--lengths",
            "256",
            "--heads",
            "1",
            "--iters",
            "1",
            "--quiet",
            "--cache",
        ])
        .arg(&cache));
    let bucket = "decode/f32/d32/lq1/g4/none/lk256";
    assert!(stdout(&out).contains(bucket), "{}", stdout(&out));
    let key = adapter_key(Context::new().unwrap().info().adapter.as_ref().unwrap());
    let parsed = TuneCache::load(&cache).unwrap();
    assert!(matches!(parsed.adapters[&key][bucket].config, TunedConfig::Decode(_)));

    // A hand-written decode entry with an unusual split count is what the bench row runs.
    let p = Problem {
        b: 1,
        hq: 4,
        hkv: 1,
        lq: 1,
        lk: 256,
        dk: 32,
        dv: 32,
    };
    let mut c = TuneCache::default();
    let tile = wgpu_attention::DecodeConfig {
        workgroup: 16,
        rows: 0,
        splits: 3,
        lanes: false,
    };
    c.insert(
        &key,
        ShapeClass::of(&p, DType::F32, &AttentionOptions::default()).key_in(BucketDesign::Decode, 256),
        TuneEntry {
            config: TunedConfig::Decode(tile),
            median_ms: 1.0,
            default_ms: None,
            problem: p,
            timer: "wall-clock".into(),
        },
    );
    let mine = dir.path().join("mine.json");
    c.save(&mine).unwrap();
    let j = dir.path().join("d.json");
    ok(cli()
        .env(CACHE_ENV, &mine)
        .args([
            "bench",
            "--shape",
            "1,4,1,1,256,32,32",
            "--kernel",
            "decode",
            "--iters",
            "1",
            "--quiet",
            "--json",
        ])
        .arg(&j));
    let row = &json(&j)["rows"][0];
    assert_eq!(row["tile"], "wg16 rows4 splits3");
    assert_eq!(row["within_tolerance"], true);
}

/// A named tensor of a test .safetensors file.
type StTensor = (&'static str, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A random f32 tensor, values in [-scale, scale].
fn st_random(rng: &mut ChaCha8Rng, name: &'static str, shape: &[usize], scale: f32) -> StTensor {
    let data = random(rng, shape.iter().product());
    let bytes = data.iter().flat_map(|&x| (x * scale).to_le_bytes()).collect();
    (name, safetensors::Dtype::F32, shape.to_vec(), bytes)
}

/// A bool tensor.
fn st_bool(name: &'static str, shape: &[usize], keep: impl Fn(usize) -> bool) -> StTensor {
    let n = shape.iter().product();
    (
        name,
        safetensors::Dtype::BOOL,
        shape.to_vec(),
        (0..n).map(|i| u8::from(keep(i))).collect(),
    )
}

/// `run --variant NAME --safetensors FILE` plus `extra`.
fn run_variant(variant: &str, file: &Path, extra: &[&str]) -> Command {
    let mut c = cli();
    c.args(["run", "--variant", variant, "--safetensors"])
        .arg(file)
        .args(extra);
    c
}

/// The check lines of `run --check`, each of which must say PASS.
fn assert_checks_pass(out: &std::process::Output, outputs: &[&str]) {
    let s = stdout(out);
    for name in outputs {
        let line = s
            .lines()
            .find(|l| l.starts_with(&format!("check {name} against the CPU reference")))
            .unwrap_or_else(|| panic!("no check of {name} in\n{s}"));
        assert!(line.ends_with("PASS") && line.contains("max_abs="), "{line}");
    }
}

fn additive_tensors(rng: &mut ChaCha8Rng) -> Vec<StTensor> {
    vec![
        st_random(rng, "q", &[1, 2, 6, 8], 1.0),
        st_random(rng, "k", &[1, 2, 10, 8], 1.0),
        st_random(rng, "v", &[1, 2, 10, 8], 1.0),
        st_random(rng, "w_q", &[16, 8], 0.35),
        st_random(rng, "w_k", &[16, 8], 0.35),
        st_random(rng, "v_a", &[16], 0.25),
        st_random(rng, "b", &[16], 0.35),
    ]
}

#[test]
fn run_additive_variant_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("additive.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    write_safetensors(&file, &additive_tensors(&mut rng));
    let (o, w) = (dir.path().join("o.npy"), dir.path().join("w.npy"));
    let out = ok(run_variant("additive", &file, &["--check", "--causal", "--out"]).arg(&o));
    assert_checks_pass(&out, &["out"]);
    assert_eq!(read_npy(&o, "o").unwrap().shape, vec![1, 2, 6, 8]);
    // The naive staged path, with the weights.
    let out = ok(run_variant("additive", &file, &["--check", "--kernel", "staged", "--weights"]).arg(&w));
    assert_checks_pass(&out, &["out", "weights"]);
    assert_eq!(read_npy(&w, "w").unwrap().shape, vec![1, 2, 6, 10]);
}

#[test]
fn run_hard_variant_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hard.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    write_safetensors(
        &file,
        &[
            st_random(&mut rng, "q", &[2, 2, 7, 8], 2.0),
            st_random(&mut rng, "k", &[2, 1, 9, 8], 2.0),
            st_random(&mut rng, "v", &[2, 1, 9, 8], 1.0),
        ],
    );
    let indices = |n: &str, seed: &str| -> Vec<u8> {
        let path = dir.path().join(n);
        let out = ok(run_variant("hard", &file, &["--check", "--seed", seed, "--indices"]).arg(&path));
        assert_checks_pass(&out, &["out", "indices"]);
        std::fs::read(path).unwrap()
    };
    let (first, again) = (indices("i1.npy", "7"), indices("i2.npy", "7"));
    assert_eq!(first, again, "the same seed samples the same keys");
    let npy = npyz::NpyFile::new(&first[..]).unwrap();
    assert_eq!(npy.shape(), &[2, 2, 7]);
    assert_eq!(npy.dtype(), npyz::DType::Plain("<u4".parse().unwrap()));
    assert!(npy.into_vec::<u32>().unwrap().iter().all(|&j| j < 9));
}

#[test]
fn run_ff_pool_variant_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ff.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    write_safetensors(
        &file,
        &[
            st_random(&mut rng, "x", &[2, 6, 8], 1.0),
            st_random(&mut rng, "w", &[8], 0.35),
            st_random(&mut rng, "b", &[6], 1.0),
            // The second sequence has two padding steps.
            st_bool("mask", &[2, 6], |i| i < 10),
        ],
    );
    let (o, w) = (dir.path().join("o.npy"), dir.path().join("w.npy"));
    let out = ok(run_variant("ff-pool", &file, &["--check", "--eps", "1e-6", "--out"])
        .arg(&o)
        .arg("--weights")
        .arg(&w));
    assert_checks_pass(&out, &["out", "weights"]);
    assert_eq!(read_npy(&o, "o").unwrap().shape, vec![2, 8]);
    let weights = read_npy(&w, "w").unwrap().to_f32().unwrap();
    assert_eq!(weights.len(), 12);
    assert!(weights[10] == 0.0 && weights[11] == 0.0, "masked steps get no weight");
}

#[test]
fn run_mha_variant_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mha.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // E = 16, two query heads and one key/value head of dim 8, cross-attention over 7 keys.
    let mut tensors = vec![
        st_random(&mut rng, "x_q", &[2, 5, 16], 1.0),
        st_random(&mut rng, "x_kv", &[2, 7, 16], 1.0),
        st_bool("key_padding_mask", &[2, 7], |i| i != 3 && i != 13),
    ];
    for (name, shape) in [
        ("q_proj.weight", vec![16, 16]),
        ("q_proj.bias", vec![16]),
        ("k_proj.weight", vec![8, 16]),
        ("k_proj.bias", vec![8]),
        ("v_proj.weight", vec![8, 16]),
        ("v_proj.bias", vec![8]),
        ("out_proj.weight", vec![16, 16]),
        ("out_proj.bias", vec![16]),
    ] {
        tensors.push(st_random(&mut rng, name, &shape, 0.25));
    }
    write_safetensors(&file, &tensors);
    let (o, w) = (dir.path().join("o.npy"), dir.path().join("w.npy"));
    let args = [
        "--check",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--causal",
        "bottom-right",
        "--out",
    ];
    let out = ok(run_variant("mha", &file, &args).arg(&o).arg("--weights").arg(&w));
    assert_checks_pass(&out, &["out", "weights"]);
    assert_eq!(read_npy(&o, "o").unwrap().shape, vec![2, 5, 16]);
    assert_eq!(read_npy(&w, "w").unwrap().shape, vec![2, 5, 7]);
}

#[test]
fn run_variant_rejects_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    // Additive without w_k: the error names the tensor and the variant.
    let mut tensors = additive_tensors(&mut rng);
    tensors.retain(|t| t.0 != "w_k");
    write_safetensors(&d("no_wk.safetensors"), &tensors);
    fails_with_all(
        &mut run_variant("additive", &d("no_wk.safetensors"), &[]),
        &["--variant additive", "\"w_k\""],
    );
    // Additive scores take no scale (the family function's error).
    write_safetensors(&d("additive.safetensors"), &additive_tensors(&mut rng));
    fails_with(
        &mut run_variant("additive", &d("additive.safetensors"), &["--scale", "0.5"]),
        "scale",
    );
    // ε ≤ 0 for feed-forward pooling.
    let x = d("x.safetensors");
    write_safetensors(
        &x,
        &[
            st_random(&mut rng, "x", &[1, 4, 8], 1.0),
            st_random(&mut rng, "w", &[8], 1.0),
            st_bool("mask", &[1, 4], |_| true),
        ],
    );
    fails_with_all(&mut run_variant("ff-pool", &x, &["--eps", "0"]), &["eps", "> 0"]);
    fails_with(&mut run_variant("ff-pool", &x, &["--eps", "-1"]), "eps");
    // Flags of other variants, missing or negative parameters, no tensor file.
    fails_with(
        &mut run_variant("ff-pool", &x, &["--half-width", "3"]),
        "--half-width does not apply to --variant ff-pool",
    );
    let qkv = d("qkv.safetensors");
    write_safetensors(
        &qkv,
        &[
            st_random(&mut rng, "q", &[1, 1, 4, 8], 1.0),
            st_random(&mut rng, "k", &[1, 1, 4, 8], 1.0),
            st_random(&mut rng, "v", &[1, 1, 4, 8], 1.0),
        ],
    );
    fails_with(&mut run_variant("local-m", &qkv, &[]), "needs --half-width");
    fails_with(
        &mut run_variant("local-m", &qkv, &["--half-width", "-2"]),
        "--half-width must be at least 0",
    );
    fails_with(&mut run_variant("local-p", &qkv, &["--half-width", "2"]), "\"w_p\"");
    fails_with(&mut run_variant("mha", &x, &["--heads", "1"]), "\"x_q\"");
    fails_with(&mut run_variant("mha", &x, &[]), "needs --heads");
    fails_with(
        &mut run_variant("ff-pool", &x, &["--lse", "l.npy"]),
        "--lse does not apply to --variant ff-pool: it returns out, weights",
    );
    fails_with(
        cli().args(["run", "--variant", "codewise", "--q"]).arg(d("q.npy")),
        "do not apply to --variant codewise",
    );
    fails_with(
        cli().args(["run", "--variant", "hard"]),
        "--variant hard reads its tensors from --safetensors",
    );
}

/// Errors name the CLI's flags and rules, not the Rust API or a made-up shape.
#[test]
fn run_errors_speak_in_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let not_api = |cmd: &mut Command, needles: &[&str]| {
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let line = stderr_lines(&out).join(" ");
        assert!(!line.contains("KernelChoice") && !line.contains("option `"), "{line}");
        for n in needles {
            assert!(line.contains(n), "{line:?} lacks {n:?}");
        }
    };
    write_safetensors(&d("additive.safetensors"), &additive_tensors(&mut rng));
    not_api(
        run_variant(
            "additive",
            &d("additive.safetensors"),
            &["--kernel", "fused", "--weights"],
        )
        .arg(d("w.npy")),
        &["--weights needs the staged path", "--kernel staged"],
    );
    if common::skip::has_for(Cap::F16, "an f16 additive call") {
        not_api(
            &mut run_variant(
                "additive",
                &d("additive.safetensors"),
                &["--dtype", "f16", "--kernel", "staged"],
            ),
            &["use --kernel fused (or auto) for f16"],
        );
    }
    // Head dims beyond the fused kernel's registers: the library's advice, in flags.
    let wide = d("wide.safetensors");
    write_safetensors(
        &wide,
        &[
            st_random(&mut rng, "q", &[1, 1, 2, 260], 1.0),
            st_random(&mut rng, "k", &[1, 1, 2, 260], 1.0),
            st_random(&mut rng, "v", &[1, 1, 2, 260], 1.0),
        ],
    );
    not_api(
        &mut run_variant("local-m", &wide, &["--half-width", "1", "--kernel", "fused"]),
        &["--kernel staged"],
    );
    not_api(
        &mut run_variant("local-p", &wide, &["--half-width", "0"]),
        &["--half-width must be at least 1"],
    );
    // MHA: E = 16 in two query heads, one key/value head of dim 8.
    let mut tensors = vec![st_random(&mut rng, "x_q", &[1, 3, 16], 1.0)];
    for (name, shape) in [
        ("q_proj.weight", vec![16, 16]),
        ("k_proj.weight", vec![8, 16]),
        ("v_proj.weight", vec![8, 16]),
        ("out_proj.weight", vec![16, 16]),
    ] {
        tensors.push(st_random(&mut rng, name, &shape, 0.25));
    }
    let mha = d("mha.safetensors");
    write_safetensors(&mha, &tensors);
    not_api(
        &mut run_variant("mha", &mha, &["--heads", "3"]),
        &[
            "--heads 3 does not divide the 16 rows of q_proj.weight",
            "1, 2, 4, 8, 16",
        ],
    );
    not_api(
        &mut run_variant("mha", &mha, &["--heads", "2"]),
        &["--kv-heads 2", "needs 16 rows", "it has 8", "use --kv-heads 1"],
    );
    not_api(
        &mut run_variant("mha", &mha, &["--heads", "4", "--kv-heads", "3"]),
        &["--heads 4 must be a multiple of --kv-heads 3"],
    );
    not_api(
        &mut run_variant("zero-masked", &mha, &["--scale", "0.5"]),
        &["--scale does not apply to --variant zero-masked"],
    );
    not_api(
        &mut run_variant("hard", &wide, &["--dropout", "0.1"]),
        &["--dropout does not apply to --variant hard"],
    );
    not_api(
        &mut run_variant("local-m", &wide, &["--half-width", "1", "--dropout", "1"]),
        &["--dropout must be in [0, 1)"],
    );
}

#[test]
fn bench_variant_additive_reports_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (j, c) = (dir.path().join("b.json"), dir.path().join("b.csv"));
    let out = ok(cli()
        .args([
            "bench",
            "--variant",
            "additive",
            "--kernel",
            "all",
            "--shape",
            "1,1,16,8",
        ])
        .args(["--warmup", "0", "--iters", "1", "--quiet", "--json"])
        .arg(&j)
        .arg("--csv")
        .arg(&c));
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("variant ")),
        "{}",
        stdout(&out)
    );
    let v = json(&j);
    let rows = v["rows"].as_array().unwrap();
    let kernels: Vec<&str> = rows.iter().map(|r| r["kernel"].as_str().unwrap()).collect();
    assert_eq!(kernels, ["fused", "staged", "reference"]);
    for r in rows {
        assert_eq!(r["variant"], "additive");
        assert!(r["median_ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["note"].as_str().unwrap().contains("w_q[8,8]"), "{r}");
        if r["kernel"] != "reference" {
            assert_eq!(r["checked"], "all", "{r}");
            assert_eq!(r["within_tolerance"], true, "{r}");
            assert!(r["alloc_bytes"].as_u64().unwrap() > 0);
        }
    }
    let csv = std::fs::read_to_string(&c).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",variant,phases_ms,design"));
    assert_eq!(csv.lines().count(), 1 + rows.len());
}

/// `bench --design all` prints one fused row per design, each checked against the reference and
/// naming the design that ran; a design the adapter lacks notes its fallback. `run --design`
/// takes one design and refuses `all`.
#[test]
fn bench_design_all_reports_every_design() {
    let dir = tempfile::tempdir().unwrap();
    let (j, c) = (dir.path().join("d.json"), dir.path().join("d.csv"));
    let out = ok(cli()
        .args([
            "bench",
            "--design",
            "all",
            "--kernel",
            "fused",
            "--shape",
            "1,2,1,19,23,16,8",
        ])
        .args([
            "--causal",
            "bottom-right",
            "--warmup",
            "0",
            "--iters",
            "1",
            "--quiet",
            "--json",
        ])
        .arg(&j)
        .arg("--csv")
        .arg(&c));
    let v = json(&j);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), Design::ALL.len(), "{}", stdout(&out));
    let available = wgpu_attention::available_designs(&Context::new().unwrap(), DType::F32);
    for (r, design) in rows.iter().zip(Design::ALL) {
        assert_eq!(r["within_tolerance"], true, "{r}");
        assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
        let ran = r["design"].as_str().unwrap();
        if available.contains(&design) {
            assert_eq!(ran, design.name(), "{r}");
        } else {
            let note = r["note"].as_str().unwrap();
            assert!(note.starts_with(&format!("{design} design unavailable")), "{r}");
            assert!(note.ends_with(&format!("ran {ran}")), "{r}");
        }
        let label = format!("fused/{ran}");
        assert!(stdout(&out).lines().any(|l| l.starts_with(&label)), "{}", stdout(&out));
    }
    assert!(std::fs::read_to_string(&c)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .ends_with(",design"));
    fails_with(cli().args(["run", "--design", "all"]), "--design all applies to bench");
}

#[test]
fn bench_register_tiles_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("t.json");
    ok(cli()
        .args(["bench", "--kernel", "fused", "--shape", "1,2,1,19,23,16,8", "--quiet"])
        .args([
            "--register-tile",
            "8,1",
            "--register-tile",
            "16,2",
            "--warmup",
            "0",
            "--iters",
            "1",
        ])
        .arg("--json")
        .arg(&j));
    let v = json(&j);
    let rows = v["rows"].as_array().unwrap();
    let tiles: Vec<&str> = rows.iter().map(|r| r["tile"].as_str().unwrap()).collect();
    assert_eq!(tiles, ["wg8 rows1", "wg16 rows2"]);
    assert!(rows.iter().all(|r| r["within_tolerance"] == true), "{rows:?}");
    for bad in ["16", "16,2,1", "16,x"] {
        let out = cli().args(["bench", "--register-tile", bad]).output().unwrap();
        assert!(!out.status.success());
        assert!(
            stderr_lines(&out)[0].contains("--register-tile"),
            "{bad}: {:?}",
            stderr_lines(&out)
        );
    }
}

#[test]
fn bench_variant_mha_reports_phase_times() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("b.json");
    let out = ok(cli()
        .args([
            "bench",
            "--variant",
            "mha",
            "--kernel",
            "fused",
            "--shape",
            "1,2,1,16,16,8,8",
        ])
        .args(["--warmup", "0", "--iters", "1", "--quiet", "--json"])
        .arg(&j));
    let v = json(&j);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r["variant"].as_str(), r["kernel"].as_str()),
        (Some("mha"), Some("fused"))
    );
    assert_eq!(r["within_tolerance"], true, "{r}");
    assert!(r["note"].as_str().unwrap().contains("heads 2/1 of dim 8"), "{r}");
    // Which GEMM design ran the projections (Auto: register on a CPU adapter, tiled elsewhere).
    let design = match v["adapter"]["device_type"].as_str() {
        Some("Cpu") => "GEMM design: register",
        _ => "GEMM design: tiled",
    };
    assert!(r["note"].as_str().unwrap().contains(design), "{r}");
    if v["timer"] == "gpu-timestamps" {
        assert!(r["note"].as_str().unwrap().contains("%), attention "), "{r}");
        let phases = r["phases_ms"].as_object().expect("phase times");
        let names: Vec<&str> = phases.keys().map(String::as_str).collect();
        for name in ["projections", "attention", "output projection"] {
            assert!(names.contains(&name), "{names:?}");
            assert!(phases[name].as_f64().unwrap() > 0.0);
        }
        assert!(stdout(&out).contains("phases (ms): projections"), "{}", stdout(&out));
    } else {
        assert!(r["phases_ms"].is_null());
    }
}

/// One variant's inputs for the flag audit: the tensors every run reads, the flags it always
/// needs, the tensor a `mask` / `bias` column adds, and the shape of each output file.
struct Fixture {
    variant: &'static str,
    tensors: Vec<StTensor>,
    required_flags: &'static [&'static str],
    mask: Option<StTensor>,
    bias: Option<StTensor>,
    shapes: Vec<(&'static str, Vec<usize>)>,
}

/// Inputs of every variant: Lq = 6 queries over Lk = 10 keys of dim 8 (pooling: L = 6; mha and
/// location: 5 queries over 7 keys), a key padding row in zero-masked's G.
fn fixtures(rng: &mut ChaCha8Rng) -> Vec<Fixture> {
    let qkv = |rng: &mut ChaCha8Rng| {
        vec![
            st_random(rng, "q", &[1, 2, 6, 8], 1.0),
            st_random(rng, "k", &[1, 2, 10, 8], 1.0),
            st_random(rng, "v", &[1, 2, 10, 8], 1.0),
        ]
    };
    let masks = |rng: &mut ChaCha8Rng| {
        (
            Some(st_bool("mask", &[6, 10], |i| i % 4 != 1)),
            Some(st_random(rng, "bias", &[6, 10], 2.0)),
        )
    };
    let attention_shapes = || {
        vec![
            ("out", vec![1, 2, 6, 8]),
            ("lse", vec![1, 2, 6]),
            ("weights", vec![1, 2, 6, 10]),
        ]
    };
    let with = |mut base: Vec<StTensor>, extra: Vec<StTensor>| {
        base.extend(extra);
        base
    };
    let mut f = Vec::new();
    for variant in ["sdpa", "dot", "local-m", "hard"] {
        let (mask, bias) = masks(rng);
        let mut shapes = attention_shapes();
        if variant == "hard" {
            shapes = vec![("out", vec![1, 2, 6, 8]), ("indices", vec![1, 2, 6])];
        }
        f.push(Fixture {
            variant,
            tensors: qkv(rng),
            required_flags: if variant == "local-m" {
                &["--half-width", "2"]
            } else {
                &[]
            },
            mask,
            bias,
            shapes,
        });
    }
    let (mask, bias) = masks(rng);
    let tensors = with(qkv(rng), vec![st_random(rng, "w", &[8, 8], 0.35)]);
    f.push(Fixture {
        variant: "general",
        tensors,
        required_flags: &[],
        mask,
        bias,
        shapes: attention_shapes(),
    });
    let (mask, bias) = masks(rng);
    let tensors = with(qkv(rng), additive_tensors(rng).split_off(3));
    f.push(Fixture {
        variant: "additive",
        tensors,
        required_flags: &[],
        mask,
        bias,
        shapes: attention_shapes(),
    });
    let (mask, bias) = masks(rng);
    let tensors = with(
        qkv(rng),
        vec![st_random(rng, "w_p", &[16, 8], 0.35), st_random(rng, "v_p", &[16], 0.5)],
    );
    let mut shapes = attention_shapes();
    shapes.push(("positions", vec![1, 2, 6]));
    f.push(Fixture {
        variant: "local-p",
        tensors,
        required_flags: &["--half-width", "3"],
        mask,
        bias,
        shapes,
    });
    // C and G; G's row 3 of each batch is zero padding.
    let guide = |rng: &mut ChaCha8Rng| {
        let (name, dt, shape, mut bytes) = st_random(rng, "g", &[2, 10, 8], 1.0);
        for b in 0..2 {
            let row = (b * 10 + 3) * 8 * 4;
            bytes[row..row + 32].fill(0);
        }
        (name, dt, shape, bytes)
    };
    let cg = |rng: &mut ChaCha8Rng| vec![st_random(rng, "c", &[2, 6, 8], 1.0), guide(rng)];
    let (mask, bias) = masks(rng);
    f.push(Fixture {
        variant: "zero-masked",
        tensors: cg(rng),
        required_flags: &[],
        mask,
        bias,
        shapes: vec![("out", vec![2, 6, 8]), ("lse", vec![2, 6]), ("weights", vec![2, 6, 10])],
    });
    let (mask, bias) = masks(rng);
    f.push(Fixture {
        variant: "codewise",
        tensors: cg(rng),
        required_flags: &[],
        mask,
        bias,
        shapes: vec![("out", vec![2, 1, 8]), ("weights", vec![2, 6])],
    });
    let pool_mask = Some(st_bool("mask", &[2, 6], |i| i < 10));
    let pool_shapes = vec![("out", vec![2, 8]), ("weights", vec![2, 6])];
    f.push(Fixture {
        variant: "han-pool",
        tensors: vec![
            st_random(rng, "x", &[2, 6, 8], 1.0),
            st_random(rng, "w", &[8, 16], 0.35),
            st_random(rng, "b", &[16], 0.35),
            st_random(rng, "u", &[16], 0.5),
        ],
        required_flags: &[],
        mask: pool_mask.clone(),
        bias: Some(st_random(rng, "bias", &[6, 10], 1.0)),
        shapes: pool_shapes.clone(),
    });
    f.push(Fixture {
        variant: "ff-pool",
        tensors: vec![
            st_random(rng, "x", &[2, 6, 8], 1.0),
            st_random(rng, "w", &[8], 0.35),
            st_random(rng, "b", &[6], 1.0),
        ],
        required_flags: &[],
        mask: pool_mask,
        bias: Some(st_random(rng, "bias", &[6, 10], 1.0)),
        shapes: pool_shapes,
    });
    f.push(Fixture {
        variant: "self-sum",
        tensors: vec![st_random(rng, "x", &[2, 6, 8], 1.0)],
        required_flags: &[],
        mask: Some(st_bool("mask", &[2, 6], |i| i < 10)),
        bias: Some(st_random(rng, "bias", &[6, 6], 1.0)),
        shapes: vec![("out", vec![2, 8])],
    });
    let mut mha = vec![
        st_random(rng, "x_q", &[2, 5, 16], 1.0),
        st_random(rng, "x_kv", &[2, 7, 16], 1.0),
    ];
    for (name, shape) in [
        ("q_proj.weight", vec![16, 16]),
        ("q_proj.bias", vec![16]),
        ("k_proj.weight", vec![8, 16]),
        ("v_proj.weight", vec![8, 16]),
        ("out_proj.weight", vec![16, 16]),
        ("out_proj.bias", vec![16]),
    ] {
        mha.push(st_random(rng, name, &shape, 0.25));
    }
    f.push(Fixture {
        variant: "mha",
        tensors: mha,
        required_flags: &["--heads", "2", "--kv-heads", "1"],
        mask: Some(st_bool("key_padding_mask", &[2, 7], |i| i != 3 && i != 13)),
        bias: Some(st_random(rng, "bias", &[5, 7], 1.0)),
        shapes: vec![("out", vec![2, 5, 16]), ("weights", vec![2, 5, 7])],
    });
    f.push(Fixture {
        variant: "location",
        tensors: vec![
            st_random(rng, "q", &[2, 5, 8], 1.0),
            st_random(rng, "h", &[2, 5, 8], 1.0),
            st_random(rng, "v", &[2, 7, 8], 1.0),
            st_random(rng, "w_a", &[7, 16], 0.5),
            st_random(rng, "b_a", &[7], 0.5),
            st_random(rng, "w_c", &[8, 16], 0.35),
            st_random(rng, "b_c", &[8], 0.35),
        ],
        required_flags: &[],
        mask: Some(st_bool("mask", &[5, 7], |i| i % 3 != 0)),
        bias: Some(st_random(rng, "bias", &[5, 7], 1.0)),
        shapes: vec![
            ("out", vec![2, 5, 8]),
            ("context", vec![2, 5, 8]),
            ("weights", vec![2, 5, 7]),
        ],
    });
    f
}

/// The flag audit's columns: the arguments each adds to a variant's run (`FILE` = an output
/// path). `--mask`/`--bias` stand for the tensors added to the `.safetensors` file.
const FLAG_COLUMNS: [(&str, &[&str]); 18] = [
    ("--scale", &["--scale", "0.5"]),
    ("--softcap", &["--softcap", "0.5"]),
    ("--causal", &["--causal"]),
    ("--window", &["--window", "1,1"]),
    ("--dropout", &["--dropout", "0.5", "--seed", "3"]),
    ("--seed", &["--seed", "5"]),
    ("--kernel", &[]),
    ("--lse", &["--lse", "FILE"]),
    ("--weights", &["--weights", "FILE"]),
    ("--indices", &["--indices", "FILE"]),
    ("--positions", &["--positions", "FILE"]),
    ("--context", &["--context", "FILE"]),
    ("--half-width", &["--half-width", "1"]),
    ("--eps", &["--eps", "0.5"]),
    ("--heads", &["--heads", "4", "--kv-heads", "2"]),
    ("--dtype f16", &["--dtype", "f16"]),
    ("mask", &[]),
    ("bias", &[]),
];

/// What `run` does with each variant × flag, one letter per column of [`FLAG_COLUMNS`]:
/// `A` applied (the check passes and the output differs from the run without it), `K` both
/// kernel paths pass the check and agree, `W` the output file is written with its shape,
/// `F` f16 inputs pass the f16 check, `R` refused with one error line naming the flag and the
/// variant, `N` a tensor the variant does not read: it runs and says so on stderr.
const FLAG_TABLE: [(&str, &str); 14] = [
    //              scale softcap causal window dropout seed kernel lse weights indices positions context half-width eps heads f16 mask bias
    ("sdpa", "AAAAARKWWRRRRRRFAA"),
    ("dot", "AAAAARKWWRRRRRRFAA"),
    ("local-m", "AAARARKWWRRRARRFAA"),
    ("hard", "AAAARARRRWRRRRRFAA"),
    ("general", "AAAAARKWWRRRRRRFAA"),
    ("additive", "RAAAARKWWRRRRRRFAA"),
    ("local-p", "AAAAARKWWRWRARRRAA"),
    ("zero-masked", "RAAAARKWWRRRRRRFAA"),
    ("codewise", "RRRRRRRRWRRRRRRFNN"),
    ("han-pool", "RRRRRRRRWRRRRRRFAN"),
    ("ff-pool", "RRRRRRRRWRRRRARFAN"),
    ("self-sum", "RRRRRRRRRRRRRRRFNN"),
    ("mha", "AAAAARKRWRRRRRAFAN"),
    ("location", "RAAAARRRWRRWRRRRNN"),
];

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every variant × flag pair of `run`: each flag is applied on the GPU and in the CPU reference
/// alike (so `--check` passes *and* the result changes) or refused with a CLI error.
#[test]
fn run_applies_or_refuses_every_flag_of_every_variant() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let fixtures = fixtures(&mut rng);
    assert_eq!(fixtures.len(), FLAG_TABLE.len());
    let mut cells = Vec::new();
    for fx in &fixtures {
        let (_, row) = FLAG_TABLE.iter().find(|(v, _)| *v == fx.variant).expect("a table row");
        assert_eq!(row.len(), FLAG_COLUMNS.len(), "{}", fx.variant);
        let file = |suffix: &str, extra: Option<&StTensor>| -> PathBuf {
            let path = dir.path().join(format!("{}{suffix}.safetensors", fx.variant));
            let mut tensors = fx.tensors.clone();
            tensors.extend(extra.cloned());
            write_safetensors(&path, &tensors);
            path
        };
        let base = file("", None);
        let files = [file("-mask", fx.mask.as_ref()), file("-bias", fx.bias.as_ref())];
        for (col, expect) in FLAG_COLUMNS.iter().zip(row.chars()) {
            cells.push((fx, base.clone(), files.clone(), *col, expect));
        }
    }
    let run = |fx: &Fixture, file: &Path, args: &[&str], tag: &str| -> (Command, PathBuf) {
        let out = dir.path().join(format!("{}-{tag}.npy", fx.variant));
        // The variant's own flags (flag, value pairs), unless the column sets them.
        let own: Vec<&str> = fx
            .required_flags
            .chunks(2)
            .filter(|pair| !args.contains(&pair[0]))
            .flatten()
            .copied()
            .collect();
        let mut c = run_variant(fx.variant, file, &own);
        c.args(["--check", "--out"]).arg(&out).args(args);
        (c, out)
    };
    // Baselines: every variant without the audited flag.
    let baselines: Vec<Vec<f32>> = fixtures
        .iter()
        .map(|fx| {
            let (mut c, out) = run(fx, &dir.path().join(format!("{}.safetensors", fx.variant)), &[], "base");
            let o = ok(&mut c);
            assert_checks_pass(&o, &["out"]);
            out_f32(&out)
        })
        .collect();
    let baseline = |fx: &Fixture| &baselines[fixtures.iter().position(|f| f.variant == fx.variant).unwrap()];
    let mut report = Vec::new();
    for (i, (fx, base, [mask_file, bias_file], (flag, args), expect)) in cells.into_iter().enumerate() {
        let v = fx.variant;
        let tag = format!("c{i}");
        let path = dir.path().join(format!("{v}-{tag}-file.npy"));
        let args: Vec<&str> = args
            .iter()
            .map(|&a| if a == "FILE" { path.to_str().unwrap() } else { a })
            .collect();
        let file = match flag {
            "mask" => &mask_file,
            "bias" => &bias_file,
            _ => &base,
        };
        match expect {
            'R' => {
                let args = match flag {
                    "--kernel" => vec!["--kernel", "staged"],
                    _ => args.clone(),
                };
                fails_with_all(&mut run(fx, file, &args, &tag).0, &[flag, &format!("--variant {v}")]);
            }
            'A' | 'N' | 'F' | 'W' => {
                let (mut c, out) = run(fx, file, &args, &tag);
                let o = ok(&mut c);
                let text = stdout(&o);
                let checked: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("check ")?.split(' ').next())
                    .collect();
                assert!(checked.contains(&"out"), "{v} {flag}: {}", stdout(&o));
                assert!(
                    stdout(&o)
                        .lines()
                        .filter(|l| l.starts_with("check "))
                        .all(|l| l.ends_with("PASS")),
                    "{v} {flag}: {}",
                    stdout(&o)
                );
                let got = read_npy(&out, "out").unwrap();
                let diff = max_abs_diff(&got.to_f32().unwrap(), baseline(fx));
                match expect {
                    'A' => assert!(diff > 1e-3, "{v} {flag} did not change the output (max diff {diff})"),
                    'N' => {
                        assert!(diff == 0.0, "{v} {flag}: the unread tensor changed the output");
                        let note = stderr_lines(&o).join("\n");
                        assert!(note.contains("does not read the tensors"), "{v} {flag}: {note}");
                    }
                    'F' => assert_eq!(got.dtype(), DType::F16, "{v} {flag}"),
                    _ => {
                        let name = flag.trim_start_matches("--");
                        assert!(checked.contains(&name), "{v} {flag} is not checked: {}", stdout(&o));
                        let (_, shape) = fx.shapes.iter().find(|(n, _)| *n == name).expect("a shape");
                        let bytes = std::fs::read(&path).unwrap();
                        let written: Vec<usize> = npyz::NpyFile::new(&bytes[..])
                            .unwrap()
                            .shape()
                            .iter()
                            .map(|&n| n as usize)
                            .collect();
                        assert_eq!(&written, shape, "{v} {flag}");
                        // The weights come from the staged path: the same output up to rounding.
                        assert!(diff < 1e-4, "{v} {flag} changed the output (max diff {diff})");
                    }
                }
            }
            'K' => {
                let outs: Vec<Vec<f32>> = ["fused", "staged"]
                    .into_iter()
                    .map(|k| {
                        let (mut c, out) = run(fx, file, &["--kernel", k], &format!("{tag}{k}"));
                        let o = ok(&mut c);
                        assert_checks_pass(&o, &["out"]);
                        let kernel = format!("({k} kernel)");
                        assert!(stdout(&o).contains(&kernel), "{v}: {}", stdout(&o));
                        out_f32(&out)
                    })
                    .collect();
                assert!(
                    max_abs_diff(&outs[0], &outs[1]) < 1e-4,
                    "{v}: the kernel paths disagree"
                );
            }
            other => panic!("unknown table entry {other}"),
        }
        report.push(format!("{v} {flag}: {expect}"));
    }
    assert_eq!(report.len(), 14 * FLAG_COLUMNS.len());
}

/// `run` says on stderr when it compiles a pipeline no cache holds, and the persisted pipeline
/// cache (where the device has PIPELINE_CACHE) remembers it for the next process.
#[test]
fn run_notices_first_compiles_and_persists_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("pipelines");
    let file = dir.path().join("qkv.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    write_safetensors(
        &file,
        &[
            st_random(&mut rng, "q", &[1, 1, 5, 12], 1.0),
            st_random(&mut rng, "k", &[1, 1, 7, 12], 1.0),
            st_random(&mut rng, "v", &[1, 1, 7, 12], 1.0),
        ],
    );
    let notices = || -> Vec<String> {
        let mut c = run_variant("local-m", &file, &["--half-width", "2"]);
        c.env(wgpu_attention::pipeline::PIPELINE_CACHE_ENV, &cache);
        stderr_lines(&ok(&mut c))
            .into_iter()
            .filter(|l| l.starts_with("compiling the "))
            .collect()
    };
    let first = notices();
    // Five query rows: `Auto` takes the decode kernel (either design, as the driver's built-in
    // choice says) and its merge.
    let decode = |l: &String| l.contains("flash_decode.wgsl f32") || l.contains("flash_decode_lanes.wgsl f32");
    assert!(first.iter().any(decode), "{first:?}");
    assert!(first.iter().any(|l| l.contains("decode_merge.wgsl f32")), "{first:?}");
    let ctx = Context::new().unwrap();
    if common::skip::has_on(&ctx, Cap::PipelineCache, Some("the persisted cache")) {
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache file per adapter and driver");
        assert_eq!(notices(), Vec::<String>::new(), "the second process finds it cached");
    }
}

#[test]
fn warm_up_prepares_the_pipelines_of_given_shapes() {
    let out = ok(cli().args([
        "warm-up",
        "--shape",
        "1,4,1,1,64,32,32",
        "--shape",
        "1,2,40,16",
        "--causal",
        "none",
        "--causal",
        "bottom-right",
        "--kernel",
        "fused",
        "--kernel",
        "staged",
    ]));
    let text = stdout(&out);
    assert_eq!(text.matches("ready in").count(), 8, "{text}");
    assert!(text.contains("causal=bottom-right kernel=staged"), "{text}");
}

#[test]
fn bench_uneven_key_lengths_and_a_borrowed_device_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let j = dir.path().join("b.json");
    ok(cli()
        .args([
            "bench",
            "--shape",
            "2,4,2,3,40,16,16",
            "--key-lengths",
            "40,7",
            "--kernel",
            "fused",
            "--kernel",
            "staged",
            "--causal",
            "bottom-right",
            "--borrowed-device",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--quiet",
            "--json",
        ])
        .arg(&j));
    let rows = json(&j)["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["within_tolerance"], true, "{row}");
    }
    // One length per batch is required.
    let out = cli()
        .args([
            "bench",
            "--shape",
            "2,4,40,16",
            "--key-lengths",
            "40",
            "--kernel",
            "fused",
            "--iters",
            "1",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("--key-lengths has 1 values, the shape has B = 2"),
        "{}",
        stdout(&out)
    );
}

/// `bench --kernel decode` and `run --kernel decode` run the split-KV decode kernel and check it.
#[test]
fn decode_kernel_from_the_command_line() {
    let out = ok(cli().args([
        "bench",
        "--shape",
        "1,8,2,1,100,16,16",
        "--kernel",
        "decode",
        "--kernel",
        "fused",
        "--warmup",
        "0",
        "--iters",
        "1",
    ]));
    let s = stdout(&out);
    let row = s
        .lines()
        .find(|l| l.starts_with("decode"))
        .unwrap_or_else(|| panic!("{s}"));
    assert!(row.contains("rows") && row.contains("all"), "{row}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("qkv.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    write_safetensors(
        &file,
        &[
            st_random(&mut rng, "q", &[2, 8, 1, 16], 1.0),
            st_random(&mut rng, "k", &[2, 2, 33, 16], 1.0),
            st_random(&mut rng, "v", &[2, 2, 33, 16], 1.0),
        ],
    );
    let o = ok(&mut run_variant(
        "sdpa",
        &file,
        &["--kernel", "decode", "--causal", "bottom-right", "--check"],
    ));
    assert_checks_pass(&o, &["out"]);
    assert!(stdout(&o).contains("(decode kernel)"), "{}", stdout(&o));
    fails_with(
        &mut run_variant("sdpa", &file, &["--kernel", "decode", "--weights", "w.npy"]),
        "the decode kernel never materializes the weights",
    );
}

fn u32_tensor(shape: &[usize], data: Vec<u32>) -> HostTensor {
    HostTensor {
        shape: shape.to_vec(),
        data: HostData::U32(data),
    }
}

/// `run` over a paged KV cache with new rows, rotary tables and ALiBi, checked against the
/// reference; lengths reported after the append.
#[test]
fn run_over_a_paged_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let (b, hq, hkv, d, page, pages) = (2, 4, 2, 8, 4, 7);
    let path = |n: &str| dir.path().join(format!("{n}.npy"));
    let files: Vec<(&str, HostTensor)> = vec![
        ("q", f32_tensor(&[b, hq, 1, d], random(&mut rng, b * hq * d))),
        (
            "k",
            f32_tensor(&[pages, page, hkv, d], random(&mut rng, pages * page * hkv * d)),
        ),
        (
            "v",
            f32_tensor(&[pages, page, hkv, d], random(&mut rng, pages * page * hkv * d)),
        ),
        ("table", u32_tensor(&[b, 3], vec![5, 0, 2, 6, 3, 1])),
        ("seqlens", u32_tensor(&[b], vec![9, 3])),
        ("k_new", f32_tensor(&[b, hkv, 1, d], random(&mut rng, b * hkv * d))),
        ("v_new", f32_tensor(&[b, hkv, 1, d], random(&mut rng, b * hkv * d))),
        (
            "cos",
            f32_tensor(&[16, 4], (0..64).map(|i| (i as f32 * 0.1).cos()).collect()),
        ),
        (
            "sin",
            f32_tensor(&[16, 4], (0..64).map(|i| (i as f32 * 0.1).sin()).collect()),
        ),
        ("slopes", f32_tensor(&[hq], vec![0.5, 0.25, 0.125, 0.0625])),
    ];
    for (n, t) in &files {
        write_npy(&path(n), t).unwrap();
    }
    let flag = |f: &str, n: &str| [f.to_string(), path(n).display().to_string()];
    for interleaved in [false, true] {
        let mut cmd = cli();
        cmd.arg("run")
            .args(flag("--q", "q"))
            .args(flag("--k", "k"))
            .args(flag("--v", "v"))
            .args(flag("--block-table", "table"))
            .args(flag("--cache-seqlens", "seqlens"))
            .args(flag("--k-new", "k_new"))
            .args(flag("--v-new", "v_new"))
            .args(flag("--rotary-cos", "cos"))
            .args(flag("--rotary-sin", "sin"))
            .args(flag("--alibi-slopes", "slopes"))
            .args(["--page-size", "4", "--causal", "bottom-right", "--check"])
            .arg("--lse")
            .arg(dir.path().join("lse.npy"));
        if interleaved {
            cmd.arg("--rotary-interleaved");
        }
        let out = ok(&mut cmd);
        assert_checks_pass(&out, &["out", "lse"]);
        assert!(stdout(&out).contains("lengths [10, 4]"), "{}", stdout(&out));
    }
    // Misuse, in the flags' words.
    let base = |extra: &[&str]| {
        let mut c = cli();
        c.arg("run")
            .args(flag("--q", "q"))
            .args(flag("--k", "k"))
            .args(flag("--v", "v"))
            .args(flag("--block-table", "table"))
            .args(extra);
        c
    };
    fails_with(
        base(&[]).args(flag("--k-new", "k_new")),
        "--k-new and --v-new go together",
    );
    fails_with(&mut base(&["--page-size", "5"]), "k cache pages");
    fails_with(
        base(&[]).args(flag("--cache-seqlens", "slopes")),
        "cache-seqlens: dtype <f4",
    );
    fails_with(base(&[]).args(flag("--mask", "q")), "--mask does not apply");
    let too_long = u32_tensor(&[b], vec![13, 0]);
    write_npy(&path("long"), &too_long).unwrap();
    fails_with(base(&[]).args(flag("--cache-seqlens", "long")), "capacity");
}

/// A contiguous cache from a .safetensors file (int64 lengths, as NumPy writes them) with one
/// appended row, against the reference computed here on the concatenated rows.
#[test]
fn run_over_a_contiguous_kv_cache_from_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.safetensors");
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let (b, hq, hkv, cap, d) = (2, 2, 1, 6, 8);
    let lens = [4i64, 2];
    let q = random(&mut rng, b * hq * d);
    let k = random(&mut rng, b * hkv * cap * d);
    let v = random(&mut rng, b * hkv * cap * d);
    let k_new = random(&mut rng, b * hkv * d);
    let v_new = random(&mut rng, b * hkv * d);
    let bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    use safetensors::Dtype::{F32, I64};
    write_safetensors(
        &file,
        &[
            ("q", F32, vec![b, hq, 1, d], bytes(&q)),
            ("k", F32, vec![b, hkv, cap, d], bytes(&k)),
            ("v", F32, vec![b, hkv, cap, d], bytes(&v)),
            ("kn", F32, vec![b, hkv, 1, d], bytes(&k_new)),
            ("vn", F32, vec![b, hkv, 1, d], bytes(&v_new)),
            (
                "lens",
                I64,
                vec![b],
                lens.iter().flat_map(|l| l.to_le_bytes()).collect(),
            ),
        ],
    );
    let o = dir.path().join("o.npy");
    ok(cli()
        .arg("run")
        .arg("--safetensors")
        .arg(&file)
        .args([
            "--cache-seqlens",
            "lens",
            "--k-new",
            "kn",
            "--v-new",
            "vn",
            "--causal",
            "bottom-right",
        ])
        .arg("--out")
        .arg(&o));
    let got = read_npy(&o, "o").unwrap().to_f32().unwrap();
    // Sequence s attends over its first lens[s] rows plus the new one.
    for s in 0..b {
        let n = lens[s] as usize;
        let mut ks: Vec<f32> = k[s * cap * d..(s * cap + n) * d].to_vec();
        ks.extend_from_slice(&k_new[s * d..(s + 1) * d]);
        let mut vs: Vec<f32> = v[s * cap * d..(s * cap + n) * d].to_vec();
        vs.extend_from_slice(&v_new[s * d..(s + 1) * d]);
        let p = Problem {
            b: 1,
            hq,
            hkv,
            lq: 1,
            lk: n + 1,
            dk: d,
            dv: d,
        };
        let r = reference::sdpa(
            &HostInputs::new(p, &q[s * hq * d..(s + 1) * hq * d], &ks, &vs),
            &AttentionOptions::default(),
        );
        let c = reference::compare(&got[s * hq * d..(s + 1) * hq * d], &r.out, Tolerance::F32);
        assert!(c.ok(), "sequence {s}: {c}");
    }
}

/// `run --cu-seqlens-q/-k`: packed sequences from .npy (u32 and int64 offsets) and from a
/// .safetensors file (I32 offsets), checked against the reference; bad offsets are one-line errors.
#[test]
fn run_packed_sequences_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (hq, hkv, dk, dv) = (2usize, 1usize, 8usize, 8usize);
    let (cu_q, cu_k) = ([0u32, 3, 3, 10], [0u32, 5, 7, 14]);
    let (tq, tk) = (10usize, 14usize);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (q, k, v) = (
        random(&mut rng, tq * hq * dk),
        random(&mut rng, tk * hkv * dk),
        random(&mut rng, tk * hkv * dv),
    );
    write_npy(&d("q.npy"), &f32_tensor(&[tq, hq, dk], q.clone())).unwrap();
    write_npy(&d("k.npy"), &f32_tensor(&[tk, hkv, dk], k.clone())).unwrap();
    write_npy(&d("v.npy"), &f32_tensor(&[tk, hkv, dv], v.clone())).unwrap();
    let u32_npy = |name: &str, x: &[u32]| {
        let t = HostTensor {
            shape: vec![x.len()],
            data: HostData::U32(x.to_vec()),
        };
        write_npy(&d(name), &t).unwrap();
    };
    u32_npy("cu_q.npy", &cu_q);
    u32_npy("cu_q_bad.npy", &[0, 4, 3, 10]);
    u32_npy("cu_q_long.npy", &[0, 4, 4, 11]);
    {
        use npyz::WriterBuilder;
        let mut buf = Vec::new();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&[4])
            .writer(&mut buf)
            .begin_nd()
            .unwrap();
        w.extend(cu_k.iter().map(|&x| x as i64)).unwrap();
        w.finish().unwrap();
        std::fs::write(d("cu_k.npy"), buf).unwrap();
    }
    let run = |cu_q: &str, extra: &[&str]| -> Command {
        let mut c = cli();
        c.arg("run");
        for (flag, file) in [
            ("--q", "q.npy"),
            ("--k", "k.npy"),
            ("--v", "v.npy"),
            ("--cu-seqlens-q", cu_q),
            ("--cu-seqlens-k", "cu_k.npy"),
        ] {
            c.arg(flag).arg(d(file));
        }
        c.args(extra);
        c
    };
    let out = ok(run(
        "cu_q.npy",
        &["--causal", "bottom-right", "--softcap", "2", "--check", "--out"],
    )
    .arg(d("o.npy"))
    .arg("--lse")
    .arg(d("lse.npy")));
    assert_checks_pass(&out, &["out", "lse"]);
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        softcap: Some(2.0),
        ..Default::default()
    };
    let r = reference::sdpa_varlen(
        &reference::VarlenHostInputs {
            hq,
            hkv,
            dk,
            dv,
            q: &q,
            k: &k,
            v: &v,
            cu_seqlens_q: &cu_q,
            cu_seqlens_k: &cu_k,
        },
        &opts,
    );
    let o = read_npy(&d("o.npy"), "o").unwrap();
    assert_eq!(o.shape, vec![tq, hq, dv]);
    let c = reference::compare(&o.to_f32().unwrap(), &r.out, Tolerance::F32);
    assert!(c.ok(), "{c}");
    let lse = read_npy(&d("lse.npy"), "lse").unwrap();
    assert_eq!(lse.shape, vec![hq, tq]);
    assert!(reference::compare(&lse.to_f32().unwrap(), &r.lse, Tolerance::F32).ok());

    fails_with(&mut run("cu_q_bad.npy", &[]), "must not decrease");
    fails_with(&mut run("cu_q_long.npy", &[]), "past the 10 rows of q");
    fails_with(&mut run("cu_q.npy", &["--kernel", "staged"]), "fused kernel");
    fails_with(&mut run("q.npy", &[]), "not supported for integers");
    fails_with(&mut run("cu_q.npy", &["--variant", "additive"]), "--variant");

    // The same call from a .safetensors file with I32 offsets, f16 storage.
    let st = d("packed.safetensors");
    let bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let ints = |x: &[u32]| x.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect::<Vec<u8>>();
    write_safetensors(
        &st,
        &[
            ("q", safetensors::Dtype::F32, vec![tq, hq, dk], bytes(&q)),
            ("k", safetensors::Dtype::F32, vec![tk, hkv, dk], bytes(&k)),
            ("v", safetensors::Dtype::F32, vec![tk, hkv, dv], bytes(&v)),
            ("cu_q", safetensors::Dtype::I32, vec![4], ints(&cu_q)),
            ("cu_k", safetensors::Dtype::I32, vec![4], ints(&cu_k)),
        ],
    );
    let out = ok(cli()
        .args(["run", "--safetensors"])
        .arg(&st)
        .args(["--cu-seqlens-q-name", "cu_q", "--cu-seqlens-k-name", "cu_k"])
        .args(["--causal", "top-left", "--dtype", "f16", "--check"]));
    assert_checks_pass(&out, &["out"]);
}

/// `bench --varlen`: packed against padded prefill, every path computing the same rows.
#[test]
fn bench_varlen_compares_packed_and_padded_prefill() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("varlen.json");
    let out = ok(cli()
        .args([
            "bench",
            "--varlen",
            "5,0,17",
            "--shape",
            "1,2,1,1,16",
            "--causal",
            "bottom-right",
        ])
        .args(["--warmup", "1", "--iters", "2", "--json"])
        .arg(&report));
    let s = stdout(&out);
    assert!(
        s.contains("varlen / padded (same [B, L, H, D] layout) median time"),
        "{s}"
    );
    let r = json(&report);
    let rows = r[0]["rows"].as_array().unwrap();
    let paths: Vec<&str> = rows.iter().map(|row| row["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["varlen", "padded", "padded-bhld"]);
    for row in rows {
        assert!(row["median_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["max_abs_err"].as_f64().unwrap() <= 2e-5, "{row}");
        assert_eq!(row["within_tolerance"], true, "{row}");
        assert_eq!(row["checked"], "all", "{row}");
    }
    fails_with(cli().args(["bench", "--varlen", "0,0"]), "longer than 0");
    fails_with(
        cli().args(["bench", "--varlen", "4", "--preset", "seq"]),
        "--varlen takes at most one --shape",
    );
}

/// Every bench mode fails (after its table) when a row is outside tolerance, naming the rows in
/// one line; passes with the stated tolerances; and says so when checks are turned off.
#[test]
fn every_bench_mode_fails_on_wrong_output() {
    let small = ["--shape", "1,2,2,16,16,8,8", "--quiet", "--warmup", "0", "--iters", "1"];
    let modes: [(&str, Vec<&str>); 6] = [
        ("sweep", [&small[..], &["--kernel", "all"]].concat()),
        ("design all", [&small[..], &["--design", "all"]].concat()),
        (
            "backward",
            [&small[..], &["--backward", "--kernel", "fused", "--kernel", "staged"]].concat(),
        ),
        ("variant", [&small[..], &["--variant", "additive"]].concat()),
        (
            "decode",
            vec![
                "--preset",
                "decode",
                "--batches",
                "1",
                "--lengths",
                "32",
                "--warmup",
                "0",
                "--iters",
                "1",
            ],
        ),
        (
            "varlen",
            vec![
                "--varlen",
                "5,0,17",
                "--shape",
                "1,2,1,1,16",
                "--warmup",
                "0",
                "--iters",
                "1",
            ],
        ),
    ];
    for (mode, args) in &modes {
        let passed = ok(cli().arg("bench").args(args));
        let s = stdout(&passed);
        let last = s.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("check: ") && last.contains("within tolerance"),
            "{mode}: {s}"
        );
        assert!(!last.contains("OUTSIDE"), "{mode}: {last}");

        // Tolerance 0 demands exact results, which an f32 kernel against the f64 reference never has.
        let out = cli()
            .arg("bench")
            .args(args)
            .args(["--tolerance-scale", "0"])
            .output()
            .expect("runs");
        assert!(
            !out.status.success(),
            "{mode}: a row outside tolerance must fail the run"
        );
        let lines = stderr_lines(&out);
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(
            last.starts_with("error: check: ") && last.contains("OUTSIDE TOLERANCE: "),
            "{mode}: {lines:#?}"
        );
        assert!(!stdout(&out).is_empty(), "{mode}: the table is printed before failing");

        let unchecked = ok(cli()
            .arg("bench")
            .args(args)
            .args(["--no-check", "--tolerance-scale", "0"]));
        let s = stdout(&unchecked);
        assert!(s.contains("skipped (--no-check)"), "{mode}: {s}");
        assert!(
            s.lines()
                .last()
                .unwrap_or_default()
                .contains("not checked (--no-check)"),
            "{mode}: {s}"
        );
    }
    fails_with(
        cli().args(["bench", "--shape", "1,2,2,16,16,8,8", "--tolerance-scale=-1"]),
        "tolerance scale",
    );
}

/// `--alibi-slopes` as a [B, Hq] file (FlashAttention's (batch, nheads)) on every path that takes
/// ALiBi: fused, staged and decode, packed sequences and the backward (fused and staged), each
/// output compared here with the CPU reference given the same slopes.
#[test]
fn run_alibi_slopes_per_batch_on_every_path() {
    use wgpu_attention::reference::{sdpa_backward, sdpa_varlen, VarlenHostInputs};
    use wgpu_attention::AlibiSlopes;
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let (b, hq, hkv, lq, lk, dim) = (2usize, 4usize, 2usize, 5usize, 9usize, 8usize);
    let p = Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk: dim,
        dv: dim,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    let [qs, ks, vs] = p.qkv_shapes();
    let (q, k, v) = (
        random(&mut rng, qs.iter().product()),
        random(&mut rng, ks.iter().product()),
        random(&mut rng, vs.iter().product()),
    );
    let d_out = random(&mut rng, b * hq * lq * dim);
    // Batch 1's slopes are batch 0's reversed: a slope read from the wrong batch shows.
    let slopes = vec![0.9, 0.5, 0.2, 0.05, 0.05, 0.2, 0.5, 0.9];
    for (name, shape, data) in [
        ("q", qs.to_vec(), &q),
        ("k", ks.to_vec(), &k),
        ("v", vs.to_vec(), &v),
        ("do", vec![b, hq, lq, dim], &d_out),
        ("slopes", vec![b, hq], &slopes),
    ] {
        write_npy(&d(&format!("{name}.npy")), &f32_tensor(&shape, data.clone())).unwrap();
    }
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        alibi_slopes: Some(AlibiSlopes::per_batch(b, slopes.clone())),
        ..Default::default()
    };
    let base = |extra: &[&str]| {
        let mut c = cli();
        c.arg("run");
        for (flag, file) in [
            ("--q", "q.npy"),
            ("--k", "k.npy"),
            ("--v", "v.npy"),
            ("--alibi-slopes", "slopes.npy"),
        ] {
            c.arg(flag).arg(d(file));
        }
        c.args(["--causal", "bottom-right"]).args(extra);
        c
    };
    let expected = reference::sdpa(&HostInputs::new(p, &q, &k, &v), &opts);
    for kernel in ["fused", "staged", "decode"] {
        ok(base(&["--kernel", kernel, "--out"]).arg(d("o.npy")));
        let c = reference::compare(&out_f32(&d("o.npy")), &expected.out, Tolerance::F32);
        assert!(c.ok(), "{kernel}: {c}");
    }
    let grads = sdpa_backward(&HostInputs::new(p, &q, &k, &v), &opts, &d_out).unwrap();
    for kernel in ["fused", "staged"] {
        ok(base(&["--backward", "--kernel", kernel, "--d-out"])
            .arg(d("do.npy"))
            .arg("--out-dq")
            .arg(d("dq.npy"))
            .arg("--out-dk")
            .arg(d("dk.npy")));
        for (name, want) in [("dq", &grads.dq), ("dk", &grads.dk)] {
            let c = reference::compare(&out_f32(&d(&format!("{name}.npy"))), want, Tolerance::F32);
            assert!(c.ok(), "backward {kernel} {name}: {c}");
        }
    }
    // Packed sequences: batch b of the slopes is sequence b.
    let (cu_q, cu_k) = ([0u32, 3, 5], [0u32, 6, 9]);
    let (pq, pk, pv) = (
        random(&mut rng, 5 * hq * dim),
        random(&mut rng, 9 * hkv * dim),
        random(&mut rng, 9 * hkv * dim),
    );
    write_npy(&d("pq.npy"), &f32_tensor(&[5, hq, dim], pq.clone())).unwrap();
    write_npy(&d("pk.npy"), &f32_tensor(&[9, hkv, dim], pk.clone())).unwrap();
    write_npy(&d("pv.npy"), &f32_tensor(&[9, hkv, dim], pv.clone())).unwrap();
    write_npy(&d("cu_q.npy"), &u32_tensor(&[3], cu_q.to_vec())).unwrap();
    write_npy(&d("cu_k.npy"), &u32_tensor(&[3], cu_k.to_vec())).unwrap();
    let mut c = cli();
    c.arg("run");
    for (flag, file) in [
        ("--q", "pq.npy"),
        ("--k", "pk.npy"),
        ("--v", "pv.npy"),
        ("--cu-seqlens-q", "cu_q.npy"),
        ("--cu-seqlens-k", "cu_k.npy"),
        ("--alibi-slopes", "slopes.npy"),
        ("--out", "po.npy"),
    ] {
        c.arg(flag).arg(d(file));
    }
    ok(c.args(["--causal", "bottom-right"]));
    let packed = VarlenHostInputs {
        hq,
        hkv,
        dk: dim,
        dv: dim,
        q: &pq,
        k: &pk,
        v: &pv,
        cu_seqlens_q: &cu_q,
        cu_seqlens_k: &cu_k,
    };
    let want = sdpa_varlen(&packed, &opts);
    let c = reference::compare(&out_f32(&d("po.npy")), &want.out, Tolerance::F32);
    assert!(c.ok(), "varlen: {c}");
    // Slopes of another batch size are refused in the flags' words.
    write_npy(&d("slopes3.npy"), &f32_tensor(&[3, hq], vec![0.1; 3 * hq])).unwrap();
    let mut c = cli();
    c.arg("run");
    for (flag, file) in [
        ("--q", "q.npy"),
        ("--k", "k.npy"),
        ("--v", "v.npy"),
        ("--alibi-slopes", "slopes3.npy"),
    ] {
        c.arg(flag).arg(d(file));
    }
    fails_with(&mut c, "alibi_slopes: shape [3, 4] does not match the expected [2, 4]");
}

/// Two decode steps chained through files: `run` over a KV cache writes the cache after its
/// append (`--out-k-cache`, `--out-v-cache`, `--out-cache-seqlens`) and a second `run` continues
/// from those files; both outputs equal one library call sequence on one `KvCache`
/// (contiguous and paged, with and without rotary tables, f32 and f16 storage).
#[test]
fn chained_decode_steps_through_files_match_the_library() {
    use wgpu_attention::{AppendOptions, KvCache, PagedLayout, Rope, RopeStyle, Tensor};
    struct Chain {
        paged: bool,
        rope: bool,
        dtype: DType,
    }
    let chains = [
        Chain {
            paged: false,
            rope: false,
            dtype: DType::F32,
        },
        Chain {
            paged: true,
            rope: true,
            dtype: DType::F32,
        },
        Chain {
            paged: false,
            rope: true,
            dtype: DType::F16,
        },
    ];
    let (b, hq, hkv, d, cap, page) = (2usize, 4usize, 2usize, 8usize, 8usize, 4usize);
    let (pages, per_seq) = (5usize, cap / page);
    let table = vec![4u32, 1, 0, 3];
    let ctx = Context::new().unwrap();
    for (ci, chain) in chains.iter().enumerate() {
        let what = format!(
            "chain {ci} (paged {}, rope {}, {})",
            chain.paged, chain.rope, chain.dtype
        );
        if chain.dtype == DType::F16 && !common::skip::has_for(Cap::F16, &what) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let d_ = |n: &str| dir.path().join(format!("{n}.npy"));
        let mut rng = ChaCha8Rng::seed_from_u64(90 + ci as u64);
        let round = |x: Vec<f32>| match chain.dtype {
            DType::F16 => x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect(),
            _ => x,
        };
        let host = |shape: &[usize], x: Vec<f32>| match chain.dtype {
            DType::F16 => HostTensor {
                shape: shape.to_vec(),
                data: HostData::F16(x.iter().map(|&v| half::f16::from_f32(v)).collect()),
            },
            _ => f32_tensor(shape, x),
        };
        // Step 1: a chunk of 3 new rows per sequence (prefill), step 2: one row (decode).
        // (Q, K, V, rows) of each step.
        let steps: Vec<_> = [3usize, 1]
            .iter()
            .map(|&n| {
                let q = round(random(&mut rng, b * hq * n * d));
                let k = round(random(&mut rng, b * hkv * n * d));
                let v = round(random(&mut rng, b * hkv * n * d));
                (q, k, v, n)
            })
            .collect();
        let cos: Vec<f32> = (0..16 * d / 2).map(|i| (i as f32 * 0.07).cos()).collect();
        let sin: Vec<f32> = (0..16 * d / 2).map(|i| (i as f32 * 0.07).sin()).collect();
        write_npy(&d_("cos"), &f32_tensor(&[16, d / 2], cos.clone())).unwrap();
        write_npy(&d_("sin"), &f32_tensor(&[16, d / 2], sin.clone())).unwrap();
        let cache_shape = match chain.paged {
            true => vec![pages, page, hkv, d],
            false => vec![b, hkv, cap, d],
        };
        let zeros = vec![0.0; cache_shape.iter().product()];
        write_npy(&d_("k0"), &host(&cache_shape, zeros.clone())).unwrap();
        write_npy(&d_("v0"), &host(&cache_shape, zeros)).unwrap();
        write_npy(&d_("len0"), &u32_tensor(&[b], vec![0, 0])).unwrap();
        write_npy(&d_("table"), &u32_tensor(&[b, per_seq], table.clone())).unwrap();

        // The library: one cache, the same appends, rotations and attention.
        let mut cache = match chain.paged {
            true => {
                let layout = PagedLayout {
                    pages,
                    page_size: page,
                    pages_per_seq: per_seq,
                };
                let mut c = KvCache::new_paged(&ctx, b, hkv, layout, d, d, chain.dtype).unwrap();
                c.set_block_table(&ctx, &table).unwrap();
                c
            }
            false => KvCache::new(&ctx, b, hkv, cap, d, d, chain.dtype).unwrap(),
        };
        let up = |x: &[f32], shape: &[usize]| match chain.dtype {
            DType::F16 => {
                let h: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
                Tensor::from_slice(&ctx, &h, shape).unwrap()
            }
            _ => Tensor::from_slice(&ctx, x, shape).unwrap(),
        };
        let rope = chain.rope.then(|| {
            let t = |x: &[f32]| Tensor::from_slice(&ctx, x, &[16, d / 2]).unwrap();
            Rope::from_tables(RopeStyle::HalfSplit, t(&cos), t(&sin)).unwrap()
        });
        let opts = AttentionOptions {
            causal: Some(Alignment::BottomRight),
            ..Default::default()
        };
        let (mut k_in, mut v_in, mut len_in) = ("k0".to_string(), "v0".to_string(), "len0".to_string());
        for (si, (q, k, v, n)) in steps.iter().enumerate() {
            let qt = up(q, &[b, hq, *n, d]);
            let qt = match &rope {
                Some(r) => cache.rope_q(&ctx, &qt, r).unwrap(),
                None => qt,
            };
            let append = AppendOptions {
                lengths: None,
                rope: rope.clone(),
            };
            cache
                .append_with(&ctx, &up(k, &[b, hkv, *n, d]), &up(v, &[b, hkv, *n, d]), &append)
                .unwrap();
            let want = cache.attend(&ctx, &qt, &opts).unwrap().out.to_f32_vec(&ctx).unwrap();

            // The same step through files, from the previous step's written cache.
            write_npy(&d_("q"), &host(&[b, hq, *n, d], q.clone())).unwrap();
            write_npy(&d_("kn"), &host(&[b, hkv, *n, d], k.clone())).unwrap();
            write_npy(&d_("vn"), &host(&[b, hkv, *n, d], v.clone())).unwrap();
            let (k_out, v_out, len_out) = (format!("k{}", si + 1), format!("v{}", si + 1), format!("len{}", si + 1));
            let mut cmd = cli();
            cmd.arg("run");
            for (flag, file) in [
                ("--q", "q"),
                ("--k", &k_in),
                ("--v", &v_in),
                ("--cache-seqlens", &len_in),
                ("--k-new", "kn"),
                ("--v-new", "vn"),
                ("--out", "o"),
                ("--out-k-cache", &k_out),
                ("--out-v-cache", &v_out),
                ("--out-cache-seqlens", &len_out),
            ] {
                cmd.arg(flag).arg(d_(file));
            }
            if chain.paged {
                cmd.arg("--block-table").arg(d_("table"));
            }
            if chain.rope {
                cmd.arg("--rotary-cos")
                    .arg(d_("cos"))
                    .arg("--rotary-sin")
                    .arg(d_("sin"));
            }
            ok(cmd.args(["--causal", "bottom-right", "--check"]));
            let got = out_f32(&d_("o"));
            let worst = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "{what} step {}: files and library differ by {worst}",
                si + 1
            );
            let lengths: Vec<u32> = npyz::NpyFile::new(&std::fs::read(d_(&len_out)).unwrap()[..])
                .unwrap()
                .into_vec()
                .unwrap();
            assert_eq!(lengths, cache.lengths(), "{what}");
            let written = read_npy(&d_(&k_out), "k").unwrap();
            assert_eq!(
                (written.shape.clone(), written.dtype()),
                (cache_shape.clone(), chain.dtype),
                "{what}"
            );
            (k_in, v_in, len_in) = (k_out, v_out, len_out);
        }
    }
}

/// `shader` prints a kernel permutation's composed source, as its pipelines compile it (the
/// switches in its prelude, each piece behind a line marker naming its file), lists the
/// permutation table without a kernel, and refuses what the table does not list, naming the
/// values a switch takes.
#[test]
fn shader_prints_any_permutation() {
    let src = stdout(&ok(cli().args([
        "shader",
        "flash_forward",
        "--set",
        "rows=2",
        "--set",
        "alibi=1",
    ])));
    assert!(src.contains("const ROWS: u32 = 2u;"), "{src}");
    assert!(src.contains("//#line shaders/common/alibi.wgsl 1"), "{src}");
    assert!(!src.contains("//#line shaders/common/no_alibi.wgsl"), "{src}");
    assert!(src.contains("fn main("), "{src}");
    let expected = wgpu_attention::pipeline::compose_switches(
        wgpu_attention::pipeline::Kernel::FlashForward,
        DType::F32,
        wgpu_attention::pipeline::Switches {
            rows: 2,
            alibi: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(src, expected);

    let tiled = stdout(&ok(cli().args([
        "shader",
        "attention",
        "--design",
        "tiled",
        "--dtype",
        "f16",
    ])));
    assert!(tiled.starts_with("enable f16;") && tiled.contains("//#line shaders/flash_tiled.wgsl 1"));
    let direct = stdout(&ok(cli().args(["shader", "flash_backward_q", "--set", "direct=1"])));
    assert!(direct.contains("//#line shaders/common/grad_do_direct.wgsl 1"));

    let table = stdout(&ok(cli().args(["shader"])));
    assert!(
        table.contains("flash_forward") && table.contains("rows=1..8"),
        "{table}"
    );
    fails_with_all(
        cli().args(["shader", "flash_forward", "--set", "rows=9"]),
        &["permutation table", "rows=1..8"],
    );
    fails_with(
        cli().args(["shader", "flash_forward", "--set", "paged=1"]),
        "permutation table",
    );
    fails_with(cli().args(["shader", "flash_forward", "--set", "rows"]), "NAME=VALUE");
    fails_with(cli().args(["shader", "no_such_kernel"]), "no kernel `no_such_kernel`");
}
