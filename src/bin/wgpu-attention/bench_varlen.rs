//! `bench --varlen LENGTHS`: packed variable-length prefill against the padded dense call on the
//! same sequences.

use anyhow::{bail, Result};
use wgpu_attention::bench::render;
use wgpu_attention::bench::varlen::{bench_varlen, VarlenBenchOptions};
use wgpu_attention::bench_record::Verdict;
use wgpu_attention::{Alignment, Problem};

use crate::bench::BenchArgs;
use crate::call::{cli_error, context_of};
use crate::verdict::verdict;

/// `bench --varlen LENGTHS`: packed sequences against the padded dense call.
pub fn bench_varlen_cmd(a: &BenchArgs) -> Result<()> {
    if a.preset.is_some() || a.shapes.len() > 1 || !a.key_lengths.is_empty() || a.window.is_some() {
        bail!("--varlen takes at most one --shape (its heads and head dim) and no --preset, --key-lengths or --window");
    }
    if a.varlen.iter().all(|&l| l == 0) {
        bail!("--varlen needs at least one sequence longer than 0");
    }
    let p = a.shapes.first().copied().unwrap_or(Problem {
        b: 1,
        hq: 8,
        hkv: 8,
        lq: 1,
        lk: 1,
        dk: 64,
        dv: 64,
    });
    if p.dk != p.dv {
        bail!("--varlen measures Dk = Dv: give a shape B,Hq,Hkv,L,D");
    }
    let ctx = context_of(a.borrowed_device)?;
    let causal: Vec<Option<Alignment>> = match a.causal.is_empty() {
        true => vec![None],
        false => a.causal.iter().map(|c| c.alignment()).collect(),
    };
    println!("adapter: {}", wgpu_attention::bench::AdapterReport::of(&ctx).summary());
    println!(
        "lengths {:?}, Hq={} Hkv={} D={} {}",
        a.varlen,
        p.hq,
        p.hkv,
        p.dk,
        a.dtype.dtype().name()
    );
    println!("path         causal        median_ms     min_ms  GFLOP/s  time/varlen  max_abs_err  checked");
    let check = a.check_options()?;
    let mut verdict_rows = Verdict {
        checks_off: !check.enabled,
        ..Default::default()
    };
    let mut reports = Vec::new();
    for c in causal {
        let opts = VarlenBenchOptions {
            lengths: a.varlen.clone(),
            hq: p.hq,
            hkv: p.hkv,
            d: p.dk,
            causal: c,
            dtype: a.dtype.dtype(),
            warmup: a.warmup,
            iters: a.iters.max(1),
            check,
        };
        let r = bench_varlen(&ctx, &opts).map_err(cli_error)?;
        let name = wgpu_attention::bench_record::causal_label(c);
        for row in &r.rows {
            let mut checked = row.checked.clone();
            if row.within_tolerance == Some(false) {
                checked = format!("OUTSIDE TOLERANCE ({checked})");
            }
            println!(
                "{:<12} {:<12} {:>10.3} {:>10.3} {:>8.2} {:>11.3}x {:>12}  {checked}",
                row.path,
                name,
                row.median_ms,
                row.min_ms,
                row.gflops,
                row.median_ms / r.rows[0].median_ms,
                row.max_abs_err.map_or("-".into(), |e| format!("{e:.1e}")),
            );
        }
        println!(
            "varlen / padded (same [B, L, H, D] layout) median time: {:.3}",
            r.ratio()
        );
        r.add_to(&mut verdict_rows, p.hq, p.hkv, p.dk, name);
        reports.push(r);
    }
    if let Some(r) = reports.first() {
        println!("timer: {}", r.timer);
    }
    if let Some(path) = &a.json {
        render::write_json(path, &reports)?;
    }
    verdict(verdict_rows)
}
