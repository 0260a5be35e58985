//! What a benchmark records, shared by the `wgpu-attention bench` command line and the browser
//! page (`web/`), so that both write the same JSON: the [`BenchReport`] of [`Row`]s and the
//! [`AdapterReport`], how a row's FLOP rate, byte rate and error are filled in, and which outputs
//! of a large problem are compared with the CPU reference ([`check_plan`]). Portable: no clock,
//! no file, no blocking call (feature `serde`).

use std::ops::Range;

use crate::attention::Problem;
use crate::options::{Alignment, AttentionOptions};
use crate::reference::{self, Comparison, HostInputs, Tolerance};
use crate::tensor::DType;
use crate::timer::Timing;

/// Multiply-adds (B·Hq·Lq·Lk·(Dk+Dv)) up to which every output element is checked.
pub const FULL_CHECK_MACS: u64 = 1 << 27;
/// Multiply-adds per checked head above which only a block of rows is checked.
pub const HEAD_CHECK_MACS: u64 = 1 << 29;

/// Which implementation a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelKind {
    /// The fused single-pass kernel.
    Fused,
    /// The three staged kernels.
    Staged,
    /// The split-KV decode kernel and its merge.
    Decode,
    /// The naive f64 CPU reference (wall clock).
    Reference,
    /// The only GPU path of a variant without a fused/staged choice (hard attention, pooling,
    /// code-wise, location).
    Gpu,
    /// The fused backward pass (dQ, dK, dV) after a fused forward; FLOPs are 2.5 × the
    /// forward's (the FlashAttention convention).
    Backward,
    /// The staged backward pass (materialized P and dS), when staged rows are asked for.
    #[serde(rename = "backward-staged")]
    BackwardStaged,
}

impl KernelKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Fused => "fused",
            KernelKind::Staged => "staged",
            KernelKind::Decode => "decode",
            KernelKind::Reference => "reference",
            KernelKind::Gpu => "gpu",
            KernelKind::Backward => "backward",
            KernelKind::BackwardStaged => "backward-staged",
        }
    }
    /// Every kind a user selects (`--kernel all`), in table order.
    pub const ALL: [KernelKind; 3] = [KernelKind::Fused, KernelKind::Staged, KernelKind::Reference];
}

/// `none`, `top-left` or `bottom-right`.
pub fn causal_label(c: Option<Alignment>) -> &'static str {
    match c {
        None => "none",
        Some(Alignment::TopLeft) => "top-left",
        Some(Alignment::BottomRight) => "bottom-right",
    }
}

/// One measured (variant, kernel, dtype, shape, options).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The attention variant (`sdpa`, `additive`, `mha`, …).
    pub variant: String,
    /// `fused`, `staged`, `gpu` (a variant's only GPU path) or `reference`.
    pub kernel: KernelKind,
    /// `f32` or `f16`.
    pub dtype: String,
    /// Problem sizes.
    pub shape: Problem,
    /// `none`, `top-left` or `bottom-right`.
    pub causal: String,
    /// Sliding window `[left, right]` (`null` = unbounded side), when set.
    pub window: Option<[Option<u32>; 2]>,
    /// The fused kernel's design that ran (`register`, `tiled`, `coopmat`), fused rows only.
    pub design: Option<String>,
    /// The kernel's tile (tuning cache or default), e.g. `wg16 rows8` or `q32 k32 lanes4`.
    pub tile: Option<String>,
    /// `gpu-timestamps` or `wall-clock`.
    pub timer: String,
    /// Median time per run, ms.
    pub median_ms: Option<f64>,
    /// Fastest time per run, ms.
    pub min_ms: Option<f64>,
    /// FLOPs (`Problem::flops(causal)`) per median run, in GFLOP/s.
    pub gflops: Option<f64>,
    /// Bytes of Q, K, V read and O written once, per median run, in GB/s.
    pub gbps: Option<f64>,
    /// GFLOP/s as a percentage of the measured FMA ceiling of the same dtype.
    pub pct_peak: Option<f64>,
    /// Largest |GPU − reference| over the checked elements.
    pub max_abs_err: Option<f64>,
    /// Largest |GPU − reference| / |reference| over the checked elements.
    pub max_rel_err: Option<f64>,
    /// Whether every checked element is within the tolerance (`None`: not checked).
    pub within_tolerance: Option<bool>,
    /// Which outputs were compared with the reference: `all`, `2 of 32 heads`, …
    pub checked: String,
    /// Whether every output element was compared (`false` for a partial check or none).
    pub checked_in_full: bool,
    /// The tolerance of the check, `[abs, rel]`: |GPU − reference| ≤ abs + rel·|reference|.
    pub tolerance: Option<[f64; 2]>,
    /// Device bytes the call allocated (outputs, scratch, uniforms), `Attention::allocated_bytes`.
    pub alloc_bytes: Option<u64>,
    /// Runs per measured submission.
    pub runs_per_sample: Option<u32>,
    /// Measured samples.
    pub samples: usize,
    /// Why the row has no measurement, or anything else worth knowing (other variants: the input
    /// shapes the benchmark shape became).
    pub note: Option<String>,
    /// Median GPU time of each phase of a multi-phase call, ms, in recording order (a JSON object;
    /// needs GPU timestamps).
    #[serde(serialize_with = "serialize_phases")]
    pub phases_ms: Option<Vec<(String, f64)>>,
}

impl Row {
    /// A row not measured yet: no times, no check (`checked` = `-`), no note.
    pub fn unmeasured(
        variant: &str,
        kernel: KernelKind,
        dtype: DType,
        shape: Problem,
        causal: Option<Alignment>,
    ) -> Self {
        Self {
            variant: variant.into(),
            kernel,
            dtype: dtype.name().into(),
            shape,
            causal: causal_label(causal).into(),
            window: None,
            design: None,
            tile: None,
            timer: String::new(),
            median_ms: None,
            min_ms: None,
            gflops: None,
            gbps: None,
            pct_peak: None,
            max_abs_err: None,
            max_rel_err: None,
            within_tolerance: None,
            checked: "-".into(),
            checked_in_full: false,
            tolerance: None,
            alloc_bytes: None,
            runs_per_sample: None,
            samples: 0,
            note: None,
            phases_ms: None,
        }
    }
}

fn serialize_phases<S: serde::Serializer>(
    phases: &Option<Vec<(String, f64)>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match phases {
        None => s.serialize_none(),
        Some(p) => {
            let mut map = s.serialize_map(Some(p.len()))?;
            for (name, ms) in p {
                map.serialize_entry(name, ms)?;
            }
            map.end()
        }
    }
}

/// A whole benchmark run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The adapter.
    pub adapter: AdapterReport,
    /// `gpu-timestamps` or `wall-clock` (GPU rows; the reference row always uses the wall clock).
    pub timer: String,
    /// Measured FMA ceiling of the benchmark dtype, GFLOP/s.
    pub peak_gflops: Option<f64>,
    /// Dtype of the rows and of the ceiling.
    pub dtype: String,
    /// Warm-up samples and measured samples per row.
    pub warmup: u32,
    /// Measured samples per row.
    pub iters: u32,
    /// One row per (kernel, dtype, shape, causal).
    pub rows: Vec<Row>,
}

/// The adapter, as written into every report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    /// Adapter name (`"unknown"` for a borrowed device without adapter information).
    pub name: String,
    /// Backend (`Vulkan`, `Metal`, …).
    pub backend: String,
    /// Driver name.
    pub driver: String,
    /// Driver version information.
    pub driver_info: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu`, …
    pub device_type: String,
}

impl AdapterReport {
    /// The adapter of `ctx`.
    pub fn of(ctx: &crate::Context) -> Self {
        match &ctx.info().adapter {
            Some(a) => Self {
                name: a.name.clone(),
                backend: format!("{:?}", a.backend),
                driver: a.driver.clone(),
                driver_info: a.driver_info.clone(),
                device_type: format!("{:?}", a.device_type),
            },
            None => Self {
                name: "unknown".into(),
                backend: "unknown".into(),
                driver: String::new(),
                driver_info: String::new(),
                device_type: "unknown".into(),
            },
        }
    }

    /// `name (backend, device type, driver …)`.
    pub fn summary(&self) -> String {
        format!(
            "{} ({}, {}, driver {} {})",
            self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

/// Multiply-adds of a problem: B·Hq·Lq·Lk·(Dk + Dv).
pub fn macs(p: &Problem) -> u64 {
    (p.b * p.hq) as u64 * p.lq as u64 * p.lk as u64 * (p.dk + p.dv) as u64
}

/// The checked (b, h) pairs and query rows of a partial check.
pub type Subset = (Vec<(usize, usize)>, Range<usize>);

/// Which outputs are compared with the reference.
#[derive(Debug, Clone)]
pub struct CheckPlan {
    /// `None` = everything; else these (b, h) pairs and rows.
    pub subset: Option<Subset>,
    /// What was checked, as reports write it: `all`, `2 of 32 heads, rows 0..512`, …
    pub label: String,
}

impl CheckPlan {
    /// Every output element, under `label` (`all`, or the outputs' names).
    pub fn full(label: &str) -> Self {
        Self {
            subset: None,
            label: label.into(),
        }
    }
}

/// The outputs of a scaled dot-product attention row that are compared with the reference:
/// all of them up to [`FULL_CHECK_MACS`], else the first and last (b, h) on a block of rows.
pub fn check_plan(p: &Problem, align: Alignment) -> CheckPlan {
    if macs(p) <= FULL_CHECK_MACS {
        return CheckPlan::full("all");
    }
    let mut heads = vec![(0, 0)];
    if p.b * p.hq > 1 {
        heads.push((p.b - 1, p.hq - 1));
    }
    let per_row = p.lk as u64 * (p.dk + p.dv) as u64;
    let r = ((HEAD_CHECK_MACS / per_row.max(1)) as usize).clamp(1, p.lq);
    // Rows are sliced so that the causal alignment stays the same: the first rows for top-left
    // (aligned position i), the last rows for bottom-right (i + Lk − Lq).
    let rows = match align {
        Alignment::TopLeft => 0..r,
        Alignment::BottomRight => p.lq - r..p.lq,
    };
    let mut label = format!("{} of {} heads", heads.len(), p.b * p.hq);
    if r < p.lq {
        label += &format!(", rows {}..{}", rows.start, rows.end);
    }
    CheckPlan {
        subset: Some((heads, rows)),
        label,
    }
}

/// The reference output of the checked elements (in the order [`gather`] lists them).
pub fn reference_subset(
    p: &Problem,
    [q, k, v]: [&[f32]; 3],
    opts: &AttentionOptions,
    key_lengths: Option<&[u32]>,
    plan: &CheckPlan,
) -> Vec<f64> {
    let Some((heads, rows)) = &plan.subset else {
        let host = HostInputs {
            key_lengths,
            ..HostInputs::new(*p, q, k, v)
        };
        return reference::sdpa(&host, opts).out;
    };
    let group = p.hq / p.hkv;
    let mut expected = Vec::new();
    for &(b, h) in heads {
        let qh = (b * p.hq + h) * p.lq;
        let kh = b * p.hkv + h / group;
        let sub = Problem {
            b: 1,
            hq: 1,
            hkv: 1,
            lq: rows.len(),
            ..*p
        };
        let host = HostInputs {
            key_lengths: key_lengths.map(|l| &l[b..b + 1]),
            ..HostInputs::new(
                sub,
                &q[(qh + rows.start) * p.dk..(qh + rows.end) * p.dk],
                &k[kh * p.lk * p.dk..(kh + 1) * p.lk * p.dk],
                &v[kh * p.lk * p.dv..(kh + 1) * p.lk * p.dv],
            )
        };
        expected.extend(reference::sdpa(&host, opts).out);
    }
    expected
}

/// The GPU output elements the plan checks.
pub fn gather(p: &Problem, out: &[f32], plan: &CheckPlan) -> Vec<f32> {
    let Some((heads, rows)) = &plan.subset else {
        return out.to_vec();
    };
    let mut got = Vec::new();
    for &(b, h) in heads {
        let base = (b * p.hq + h) * p.lq;
        got.extend_from_slice(&out[(base + rows.start) * p.dv..(base + rows.end) * p.dv]);
    }
    got
}

/// The times, FLOP rate, byte rate and percentage of the ceiling of a timed row.
pub fn fill_metrics(row: &mut Row, flops: f64, bytes: u64, timing: &Timing, peak: Option<f64>) {
    let median = timing.median_s();
    row.median_ms = Some(median * 1e3);
    row.min_ms = Some(timing.min_s() * 1e3);
    row.samples = timing.per_run_s.len();
    row.runs_per_sample = Some(timing.runs_per_sample);
    let gflops = flops / median / 1e9;
    row.gflops = Some(gflops);
    row.gbps = Some(bytes as f64 / median / 1e9);
    row.pct_peak = peak.map(|pk| 100.0 * gflops / pk);
}

/// Bytes of Q, K, V read and O written once.
pub fn sdpa_bytes(p: &Problem, dtype: DType) -> u64 {
    let elems = p.b * (p.hq * p.lq * (p.dk + p.dv) + p.hkv * p.lk * (p.dk + p.dv));
    (elems * dtype.size()) as u64
}

/// Records the largest errors of `comparisons` (made with `tolerance` on the outputs `plan`
/// names) and whether all of them passed.
pub fn set_check<'c>(
    row: &mut Row,
    comparisons: impl IntoIterator<Item = &'c Comparison>,
    plan: &CheckPlan,
    tolerance: Tolerance,
) {
    let (mut abs, mut rel, mut ok) = (0.0f64, 0.0f64, true);
    for c in comparisons {
        abs = abs.max(c.max_abs);
        rel = rel.max(c.max_rel);
        ok &= c.ok();
    }
    row.max_abs_err = Some(abs);
    row.max_rel_err = Some(rel);
    row.within_tolerance = Some(ok);
    row.checked = plan.label.clone();
    row.checked_in_full = plan.subset.is_none();
    row.tolerance = Some([tolerance.abs, tolerance.rel]);
}

/// Whether and how benchmark rows are compared with the CPU reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckOptions {
    /// Compare outputs with the reference (`bench --no-check` turns it off).
    pub enabled: bool,
    /// Factor on every tolerance (`bench --tolerance-scale`; 1 = the stated tolerances).
    pub tolerance_scale: f64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            tolerance_scale: 1.0,
        }
    }
}

impl CheckOptions {
    /// What a row's `checked` cell says when checks are off.
    pub const SKIPPED: &'static str = "skipped (--no-check)";

    /// `tolerance` times the scale.
    pub fn scale(&self, tolerance: Tolerance) -> Tolerance {
        tolerance.scaled(self.tolerance_scale)
    }

    /// Refuses a scale that is negative, NaN or infinite.
    pub fn validated(self) -> crate::error::Result<Self> {
        if !(self.tolerance_scale.is_finite() && self.tolerance_scale >= 0.0) {
            return Err(crate::error::Error::InvalidOption {
                name: "tolerance scale",
                value: self.tolerance_scale,
                why: "must be finite and at least 0",
            });
        }
        Ok(self)
    }
}

/// How the rows of a run fared against the reference: rows outside the tolerance fail the run;
/// rows checked in part or not at all are named but do not fail it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// Rows compared in full and within tolerance.
    pub within_in_full: usize,
    /// Rows compared in part (a subset of heads or rows) and within tolerance.
    pub within_in_part: Vec<String>,
    /// Rows outside the tolerance.
    pub outside: Vec<String>,
    /// Rows not compared (no output, too large for the reference, or checks turned off).
    pub not_checked: Vec<String>,
    /// Checks were turned off (`--no-check`).
    pub checks_off: bool,
}

impl Verdict {
    /// Counts one row: `within` is `None` when the row was not compared.
    pub fn add(&mut self, label: String, within: Option<bool>, in_full: bool) {
        match within {
            Some(false) => self.outside.push(label),
            Some(true) if in_full => self.within_in_full += 1,
            Some(true) => self.within_in_part.push(label),
            None => self.not_checked.push(label),
        }
    }

    /// The verdict of report rows (reference rows are the reference: not counted).
    pub fn of_rows<'r>(rows: impl IntoIterator<Item = &'r Row>, checks: &CheckOptions) -> Self {
        let mut v = Verdict {
            checks_off: !checks.enabled,
            ..Default::default()
        };
        for r in rows.into_iter().filter(|r| r.kernel != KernelKind::Reference) {
            v.add(row_label(r), r.within_tolerance, r.checked_in_full);
        }
        v
    }

    /// True when no row is outside the tolerance.
    pub fn passed(&self) -> bool {
        self.outside.is_empty()
    }

    /// One line naming every row that was not checked in full and within tolerance.
    pub fn line(&self) -> String {
        let list = |rows: &[String]| rows.join(", ");
        let mut parts = vec![];
        if !self.outside.is_empty() {
            parts.push(format!(
                "{} OUTSIDE TOLERANCE: {}",
                self.outside.len(),
                list(&self.outside)
            ));
        }
        parts.push(format!("{} within tolerance in full", self.within_in_full));
        if !self.within_in_part.is_empty() {
            parts.push(format!(
                "{} within tolerance in part: {}",
                self.within_in_part.len(),
                list(&self.within_in_part)
            ));
        }
        if !self.not_checked.is_empty() {
            let why = if self.checks_off { " (--no-check)" } else { "" };
            parts.push(format!(
                "{} not checked{why}: {}",
                self.not_checked.len(),
                list(&self.not_checked)
            ));
        }
        format!("check: {}", parts.join("; "))
    }
}

/// A row as the verdict names it: `variant kernel[/design] dtype B,Hq,Hkv,Lq,Lk,Dk,Dv causal`.
pub fn row_label(r: &Row) -> String {
    let p = &r.shape;
    let kernel = match &r.design {
        Some(d) => format!("{}/{d}", r.kernel.name()),
        None => r.kernel.name().to_string(),
    };
    let mut label = format!(
        "{} {kernel} {} {},{},{},{},{},{},{}",
        r.variant, r.dtype, p.b, p.hq, p.hkv, p.lq, p.lk, p.dk, p.dv
    );
    if r.causal != "none" {
        label += &format!(" causal={}", r.causal);
    }
    label
}
