//! The page's engine natively (lavapipe in CI): the same rows and correctness table the page
//! shows, so that a broken engine fails here before the browser test.
#![cfg(not(target_arch = "wasm32"))]

use wgpu_attention::Context;
use wgpu_attention_web::engine::{Engine, RowSpec};

fn engine() -> Engine {
    let ctx = Context::new().expect("a Vulkan adapter (lavapipe in CI)");
    Engine::new(ctx).expect("engine")
}

fn spec(json: &str) -> RowSpec {
    serde_json::from_str(json).expect("a valid row spec")
}

#[test]
fn rows_are_measured_and_checked() {
    let engine = engine();
    let specs = [
        r#"{"kernel":"fused","b":1,"hq":2,"hkv":2,"lq":70,"lk":70,"d":32}"#,
        r#"{"kernel":"fused","design":"tiled","b":1,"hq":2,"hkv":2,"lq":70,"lk":70,"d":32,"causal":true}"#,
        r#"{"kernel":"staged","b":1,"hq":2,"hkv":2,"lq":70,"lk":70,"d":32,"iters":2}"#,
        r#"{"kernel":"decode","b":2,"hq":8,"hkv":2,"lq":1,"lk":300,"d":64,"warmup":0,"iters":1}"#,
    ];
    for s in specs {
        let row = pollster::block_on(engine.row(&spec(s))).expect("a row");
        assert!(row.gflops.is_some_and(|g| g > 0.0), "{s}: no GFLOP/s ({:?})", row.note);
        assert!(row.gbps.is_some_and(|g| g > 0.0), "{s}: no GB/s");
        assert_eq!(
            row.within_tolerance,
            Some(true),
            "{s}: max abs err {:?}",
            row.max_abs_err
        );
        assert_eq!(row.checked, "all");
    }
    let report = engine.report();
    assert_eq!(report.rows.len(), specs.len());
    assert_eq!(report.rows[0].causal, "none");
    assert_eq!(report.rows[1].causal, "top-left");
    // The tiled design ran, or the row says why it fell back.
    let tiled = &report.rows[1];
    assert!(
        tiled.design.as_deref() == Some("tiled") || tiled.note.is_some(),
        "{tiled:?}"
    );
    // The JSON a download holds: the fields of `wgpu-attention bench --json`.
    let json = serde_json::to_value(&report).expect("serializable");
    for key in ["adapter", "timer", "peak_gflops", "dtype", "warmup", "iters", "rows"] {
        assert!(json.get(key).is_some(), "report lacks {key}");
    }
    engine.clear();
    assert!(engine.report().rows.is_empty());
}

#[test]
fn a_call_the_device_refuses_is_a_row_with_a_note() {
    let engine = engine();
    // Hq not a multiple of Hkv: refused by validation, reported, not panicking.
    let row = pollster::block_on(engine.row(&spec(r#"{"kernel":"fused","b":1,"hq":3,"hkv":2,"lq":4,"lk":4,"d":8}"#)))
        .expect("a row");
    assert!(row.gflops.is_none());
    assert!(row.note.as_deref().is_some_and(|n| !n.is_empty()), "{row:?}");
}

#[test]
fn unknown_names_are_refused_when_parsed() {
    for bad in [
        r#"{"kernel":"flash","b":1,"hq":1,"hkv":1,"lq":1,"lk":1,"d":8}"#,
        r#"{"kernel":"fused","design":"warp","b":1,"hq":1,"hkv":1,"lq":1,"lk":1,"d":8}"#,
        r#"{"kernel":"fused","dtype":"bf16","b":1,"hq":1,"hkv":1,"lq":1,"lk":1,"d":8}"#,
    ] {
        assert!(serde_json::from_str::<RowSpec>(bad).is_err(), "{bad} was accepted");
    }
}

#[test]
fn correctness_table_passes_on_every_path() {
    let engine = engine();
    let rows = pollster::block_on(engine.check());
    assert!(rows.len() >= 15, "{} rows", rows.len());
    for r in &rows {
        assert!(
            r.ok,
            "{} {} {:?}: {:?} {:?}",
            r.case, r.kernel, r.design, r.max_abs_err, r.note
        );
    }
    assert!(rows.iter().any(|r| r.kernel == "decode"));
    assert!(rows.iter().any(|r| r.kernel == "staged"));
}
