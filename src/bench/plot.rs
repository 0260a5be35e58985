//! SVG plot of a benchmark: GFLOP/s against sequence length (Lk), one line per
//! (attention variant other than sdpa +) kernel (+ causal variant, + head dim when several were run).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use super::runner::BenchReport;
use crate::error::{Error, Result};

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(format!("plot: {e}")),
    }
}

/// The series of the plot: label → sorted (Lk, GFLOP/s) points.
pub fn series(report: &BenchReport) -> BTreeMap<String, Vec<(f64, f64)>> {
    let dims: std::collections::BTreeSet<(usize, usize)> =
        report.rows.iter().map(|r| (r.shape.dk, r.shape.dv)).collect();
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &report.rows {
        let Some(g) = r.gflops else { continue };
        let mut label = match r.variant.as_str() {
            "sdpa" => super::render::kernel_label(r),
            v => format!("{v} {}", super::render::kernel_label(r)),
        };
        if r.causal != "none" {
            label += &format!(" causal {}", r.causal);
        }
        if dims.len() > 1 {
            label += &format!(" D={}", r.shape.dk);
        }
        out.entry(label).or_default().push((r.shape.lk as f64, g));
    }
    for pts in out.values_mut() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Draws the plot into an SVG file. Rows without a measurement are left out.
pub fn plot_svg(report: &BenchReport, path: &Path) -> Result<()> {
    let series = series(report);
    let points = series.values().flatten();
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, 0.0f64, 0.0f64);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        x0 = 1.0;
        x1 = 2.0;
    }
    let (x0, x1) = (x0 / 1.25, (x1 * 1.25).max(x0 * 2.0));
    let y1 = if y1 > 0.0 { y1 * 1.15 } else { 1.0 };
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(path, e))?;
    let title = format!(
        "{} {} — {} ({})",
        "attention", report.dtype, report.adapter.name, report.timer
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((x0..x1).log_scale(), 0.0..y1)
        .map_err(|e| plot_error(path, e))?;
    chart
        .configure_mesh()
        .x_desc("sequence length Lk")
        .y_desc("GFLOP/s")
        .x_label_formatter(&|x| format!("{}", x.round() as u64))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| plot_error(path, e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
            .map_err(|e| plot_error(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| plot_error(path, e))?;
    root.present().map_err(|e| plot_error(path, e))?;
    Ok(())
}
