//! Text table, CSV and JSON renderings of a [`BenchReport`].

use std::path::Path;

use super::runner::{BenchReport, Row};
use crate::error::{Error, Result};

const COLUMNS: [&str; 14] = [
    "kernel",
    "dtype",
    "B,Hq,Hkv,Lq,Lk,Dk,Dv",
    "causal",
    "median_ms",
    "min_ms",
    "GFLOP/s",
    "GB/s",
    "%peak",
    "max_abs",
    "max_rel",
    "checked",
    "alloc_KiB",
    "note",
];

/// Right-aligned (numeric) columns.
const NUMERIC: [&str; 8] = [
    "median_ms",
    "min_ms",
    "GFLOP/s",
    "GB/s",
    "%peak",
    "max_abs",
    "max_rel",
    "alloc_KiB",
];

fn shape(r: &Row) -> String {
    let p = r.shape;
    format!("{},{},{},{},{},{},{}", p.b, p.hq, p.hkv, p.lq, p.lk, p.dk, p.dv)
}

fn num(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn sci(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1e}"))
}

/// A row's phase times: `name{pair}ms` joined by `join` (empty without phases).
fn phases(r: &Row, pair: &str, join: &str) -> String {
    let p = r.phases_ms.iter().flatten();
    p.map(|(name, ms)| format!("{name}{pair}{ms:.4}"))
        .collect::<Vec<_>>()
        .join(join)
}

/// The kernel, with the fused design that ran: `fused/tiled`.
pub fn kernel_label(r: &Row) -> String {
    match &r.design {
        Some(d) => format!("{}/{d}", r.kernel.name()),
        None => r.kernel.name().to_string(),
    }
}

/// The cells of a row; `variant` first when the table has that column.
fn cells(r: &Row, variant: bool) -> Vec<String> {
    let mut causal = r.causal.clone();
    if let Some([l, rr]) = r.window {
        let side = |x: Option<u32>| x.map_or("inf".to_string(), |v| v.to_string());
        causal += &format!(" win({},{})", side(l), side(rr));
    }
    let mut note = r.note.clone().unwrap_or_default();
    if r.within_tolerance == Some(false) {
        note = format!("OUTSIDE TOLERANCE {note}").trim().to_string();
    }
    if let Some(t) = &r.tile {
        note = format!("{t} {note}").trim().to_string();
    }
    if r.phases_ms.is_some() {
        let p = format!("phases (ms): {}", phases(r, " ", ", "));
        note = match note.is_empty() {
            true => p,
            false => format!("{note}; {p}"),
        };
    }
    let variant = variant.then(|| r.variant.clone());
    variant
        .into_iter()
        .chain([
            kernel_label(r),
            r.dtype.clone(),
            shape(r),
            causal,
            num(r.median_ms, 3),
            num(r.min_ms, 3),
            num(r.gflops, 2),
            num(r.gbps, 2),
            num(r.pct_peak, 1),
            sci(r.max_abs_err),
            sci(r.max_rel_err),
            r.checked.clone(),
            r.alloc_bytes
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1024.0)),
            note,
        ])
        .collect()
}

/// The report as an aligned text table with a header naming the adapter, timer and ceiling (and a
/// `variant` column when other variants than sdpa ran).
pub fn table(report: &BenchReport) -> String {
    let mut out = format!(
        "adapter: {}\ntimer: {}   peak FMA ({}): {}\n",
        report.adapter.summary(),
        report.timer,
        report.dtype,
        report
            .peak_gflops
            .map_or("-".to_string(), |g| format!("{g:.1} GFLOP/s")),
    );
    let variant = report.rows.iter().any(|r| r.variant != "sdpa");
    let header: Vec<&str> = variant.then_some("variant").into_iter().chain(COLUMNS).collect();
    let body: Vec<Vec<String>> = report.rows.iter().map(|r| cells(r, variant)).collect();
    let mut width: Vec<usize> = header.iter().map(|c| c.len()).collect();
    for row in &body {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            let last = i + 1 == cells.len();
            // Text columns left-aligned, numbers right-aligned.
            let numeric = NUMERIC.contains(&header[i]);
            match (last, numeric) {
                (true, _) => s += c,
                (_, true) => s += &format!("{c:>w$}  "),
                _ => s += &format!("{c:<w$}  "),
            }
        }
        s.trim_end().to_string() + "\n"
    };
    out += &line(header.iter().map(|c| c.to_string()).collect());
    for row in body {
        out += &line(row);
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows as CSV (one header line; empty fields for missing values; phases as `name=ms;…`).
pub fn csv(report: &BenchReport) -> String {
    let header = [
        "kernel",
        "dtype",
        "b",
        "hq",
        "hkv",
        "lq",
        "lk",
        "dk",
        "dv",
        "causal",
        "window_left",
        "window_right",
        "tile",
        "timer",
        "median_ms",
        "min_ms",
        "gflops",
        "gbps",
        "pct_peak",
        "max_abs_err",
        "max_rel_err",
        "within_tolerance",
        "checked",
        "alloc_bytes",
        "note",
        "variant",
        "phases_ms",
        "design",
    ];
    let mut out = header.join(",") + "\n";
    let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
    for r in &report.rows {
        let p = r.shape;
        let (wl, wr) = r.window.map_or((None, None), |[l, rr]| (l, rr));
        let u = |x: Option<u32>| x.map_or(String::new(), |v| v.to_string());
        let fields = [
            r.kernel.name().to_string(),
            r.dtype.clone(),
            p.b.to_string(),
            p.hq.to_string(),
            p.hkv.to_string(),
            p.lq.to_string(),
            p.lk.to_string(),
            p.dk.to_string(),
            p.dv.to_string(),
            r.causal.clone(),
            u(wl),
            u(wr),
            r.tile.clone().unwrap_or_default(),
            r.timer.clone(),
            f(r.median_ms),
            f(r.min_ms),
            f(r.gflops),
            f(r.gbps),
            f(r.pct_peak),
            f(r.max_abs_err),
            f(r.max_rel_err),
            r.within_tolerance.map_or(String::new(), |b| b.to_string()),
            r.checked.clone(),
            r.alloc_bytes.map_or(String::new(), |b| b.to_string()),
            r.note.clone().unwrap_or_default(),
            r.variant.clone(),
            phases(r, "=", ";"),
            r.design.clone().unwrap_or_default(),
        ];
        out += &fields.iter().map(|s| csv_field(s)).collect::<Vec<_>>().join(",");
        out += "\n";
    }
    out
}

/// Writes `text` to `path`, naming the path in the error.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes any serializable report as pretty JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    write_text(path, &(text + "\n"))
}
