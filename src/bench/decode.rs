//! The decode benchmark (`wgpu-attention bench --preset decode`): one decode step (Lq = 1) over a
//! KV cache holding Lk keys per sequence, contiguous and paged, with the decode kernel's designs
//! side by side: rows per invocation with the splits chosen by the device, the same unsplit, and
//! the head dim spread over a subgroup (`lanes`, where the device has a fixed subgroup size); the
//! row of the tile an untuned call gets is marked `built-in`. Every row reports the GPU time, the K/V read
//! rate (`kv_gbps`: bytes of K and V over the GPU time) and its share of the adapter's measured
//! copy bandwidth, and the host time of one call prepared from scratch (validation, pipeline
//! lookup, bind groups, recording, submission) against the same call replayed (recording and
//! submission only). Outputs are checked against the CPU reference: every head when the sweep's
//! shape is small enough for the naive reference ([`crate::bench_record::FULL_CHECK_MACS`]), else the
//! first and last (b, h).

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::peak::measure_bandwidth;
use super::AdapterReport;
use crate::attention::{Attention, Problem, Tuning};
use crate::bench_record::{check_plan, gather, reference_subset, CheckOptions, CheckPlan, Verdict};
use crate::context::Context;
use crate::error::Result;
use crate::kernels::DecodeConfig;
use crate::options::{AttentionOptions, KernelChoice};
use crate::reference::{self, Tolerance};
use crate::tensor::{DType, Tensor};
use crate::timer::{Stamps, Timer};

/// How the cache stores K and V.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvLayout {
    /// [B, Hkv, Lk, D].
    Contiguous,
    /// Pages [N, P, Hkv, D] in shuffled order behind a block table.
    Paged,
}

/// What the decode benchmark sweeps.
#[derive(Debug, Clone)]
pub struct DecodeBenchOptions {
    /// Batch sizes B.
    pub batches: Vec<usize>,
    /// Keys per sequence Lk.
    pub key_lengths: Vec<usize>,
    /// Query heads Hq.
    pub heads_q: usize,
    /// KV heads Hkv.
    pub heads_kv: usize,
    /// Head dim D (Dk = Dv).
    pub head_dim: usize,
    /// Storage dtype.
    pub dtype: DType,
    /// Rows per page of the paged layout.
    pub page_size: usize,
    /// Layouts to run.
    pub layouts: Vec<KvLayout>,
    /// Unmeasured warm-up samples.
    pub warmup: u32,
    /// Measured samples.
    pub iters: u32,
    /// Whether rows are compared with the reference, and the tolerance scale.
    pub check: CheckOptions,
}

impl Default for DecodeBenchOptions {
    fn default() -> Self {
        Self {
            batches: vec![1, 8],
            key_lengths: vec![1024, 4096, 16384, 32768],
            heads_q: 32,
            heads_kv: 8,
            head_dim: 128,
            dtype: DType::F32,
            page_size: 16,
            layouts: vec![KvLayout::Contiguous, KvLayout::Paged],
            warmup: 2,
            iters: 10,
            check: CheckOptions::default(),
        }
    }
}

impl DecodeBenchOptions {
    /// Sets the key lengths; each must be at least 1 and a multiple of the page size.
    pub fn lengths_checked(&mut self, lengths: &[usize]) -> Result<()> {
        if let Some(&l) = lengths
            .iter()
            .find(|&&l| l == 0 || !l.is_multiple_of(self.page_size.max(1)))
        {
            return Err(crate::error::Error::InvalidOption {
                name: "key length",
                value: l as f64,
                why: "must be at least 1 and a multiple of the page size",
            });
        }
        self.key_lengths = lengths.to_vec();
        Ok(())
    }
}

/// One measured decode call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeRow {
    /// Problem shape (Lq = 1).
    pub shape: Problem,
    /// Storage dtype.
    pub dtype: String,
    /// K/V layout.
    pub layout: KvLayout,
    /// Rows per page (paged layout).
    pub page_size: Option<usize>,
    /// Decode design: `rows` (whole rows per invocation) or `lanes` (head dim over a subgroup).
    pub design: &'static str,
    /// Workgroup size.
    pub workgroup: u32,
    /// Whether this is the tile a call gets without a tuning cache ([`DecodeConfig::built_in`]).
    pub built_in: bool,
    /// Splits of each sequence's keys (1 = unsplit).
    pub splits: Option<u32>,
    /// Median GPU time of one call.
    pub median_ms: Option<f64>,
    /// Fastest sample.
    pub min_ms: Option<f64>,
    /// Bytes of K and V read per second (GB/s).
    pub kv_gbps: Option<f64>,
    /// `kv_gbps` as a percentage of the measured copy bandwidth.
    pub pct_copy_peak: Option<f64>,
    /// Host time of one call prepared from scratch and submitted (median, ms).
    pub host_oneshot_ms: Option<f64>,
    /// Host time of the same call replayed: encode and submit (median, ms).
    pub host_replay_ms: Option<f64>,
    /// Largest absolute error on the checked heads.
    pub max_abs_err: Option<f64>,
    /// Whether the checked heads are within the tolerance (`None`: not checked).
    pub within_tolerance: Option<bool>,
    /// Which outputs were compared: `all`, `2 of 256 heads`, or why none.
    pub checked: String,
    /// Whether every output element was compared.
    pub checked_in_full: bool,
    /// The tolerance of the check, `[abs, rel]`.
    pub tolerance: Option<[f64; 2]>,
    /// Why a row has no numbers.
    pub note: Option<String>,
}

/// The decode benchmark's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeReport {
    /// The adapter.
    pub adapter: AdapterReport,
    /// How GPU time was measured.
    pub timer: String,
    /// Measured copy bandwidth (bytes read + written per second, GB/s).
    pub copy_peak_gbps: f64,
    /// The rows.
    pub rows: Vec<DecodeRow>,
}

/// Host inputs of one (B, Lk): Q [B, Hq, 1, D], K and V [B, Hkv, Lk, D] row-major (rounded to
/// the storage dtype).
struct HostData {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Uniform values in [-1, 1) from a fast generator (the sweep fills gigabytes).
fn fill(n: usize, seed: u64, dtype: DType) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    });
    match dtype {
        DType::F16 => data.map(|v| half::f16::from_f32(v).to_f32()).collect(),
        _ => data.collect(),
    }
}

fn upload(ctx: &Context, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::F16 => {
            let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
            Tensor::from_slice(ctx, &h, shape)
        }
        _ => Tensor::from_slice(ctx, data, shape),
    }
}

/// K or V [B, Hkv, Lk, D] scattered into pages through `table`, stored head-major
/// ([N, Hkv, P, D] in memory, as `KvCache` stores its pages).
fn to_pages(x: &[f32], [b, hkv, lk, d]: [usize; 4], page: usize, table: &[u32]) -> Vec<f32> {
    let cols = lk / page;
    let mut out = vec![0.0; x.len()];
    for s in 0..b {
        for j in 0..lk {
            let p = table[s * cols + j / page] as usize;
            for h in 0..hkv {
                let src = ((s * hkv + h) * lk + j) * d;
                let dst = ((p * hkv + h) * page + j % page) * d;
                out[dst..dst + d].copy_from_slice(&x[src..src + d]);
            }
        }
    }
    out
}

impl DecodeReport {
    /// How the rows fared against the reference.
    pub fn verdict(&self, checks: &CheckOptions) -> Verdict {
        let mut v = Verdict {
            checks_off: !checks.enabled,
            ..Default::default()
        };
        for r in &self.rows {
            v.add(r.label(), r.within_tolerance, r.checked_in_full);
        }
        v
    }
}

impl DecodeRow {
    /// The row as a verdict names it: `decode/rows f32 contiguous B,Hq,Hkv,Lk,D splits 8`.
    pub fn label(&self) -> String {
        let p = self.shape;
        let layout = match (self.layout, self.page_size) {
            (KvLayout::Paged, Some(s)) => format!("paged/{s}"),
            _ => "contiguous".into(),
        };
        let splits = self.splits.map_or(String::new(), |s| format!(" splits {s}"));
        format!(
            "decode/{} {} {layout} {},{},{},{},{}{splits}",
            self.design, self.dtype, p.b, p.hq, p.hkv, p.lk, p.dk
        )
    }
}

/// The outputs a row is compared on and their reference values, computed once per shape.
struct Expected {
    plan: CheckPlan,
    out: Vec<f64>,
}

/// Runs the sweep; rows that cannot run on this adapter carry the reason in `note`.
pub fn run_decode_bench(ctx: &Context, opts: &DecodeBenchOptions) -> Result<DecodeReport> {
    let check = opts.check.validated()?;
    let timer = Timer::new(ctx)?;
    let (copy_peak_gbps, _) = measure_bandwidth(ctx, &timer, opts.iters.max(3))?;
    let mut rows = Vec::new();
    for &b in &opts.batches {
        for &lk in &opts.key_lengths {
            let p = Problem {
                b,
                hq: opts.heads_q,
                hkv: opts.heads_kv,
                lq: 1,
                lk,
                dk: opts.head_dim,
                dv: opts.head_dim,
            };
            let kv_len = b * p.hkv * lk * p.dk;
            let host = HostData {
                q: fill(b * p.hq * p.dk, 1 + lk as u64, opts.dtype),
                k: fill(kv_len, 2 + lk as u64, opts.dtype),
                v: fill(kv_len, 3 + lk as u64, opts.dtype),
            };
            let expected = check.enabled.then(|| {
                let plan = check_plan(&p, crate::options::Alignment::BottomRight);
                let lengths = vec![lk as u32; b];
                let attn = AttentionOptions {
                    align_to_key_lengths: true,
                    ..Default::default()
                };
                let out = reference_subset(&p, [&host.q, &host.k, &host.v], &attn, Some(&lengths), &plan);
                Expected { plan, out }
            });
            let rows_auto = DecodeConfig::default_for(ctx, &p)?;
            let mut designs = vec![rows_auto, DecodeConfig { splits: 1, ..rows_auto }];
            designs.extend(DecodeConfig::lanes_for(ctx, &p)?);
            let built_in = DecodeConfig::built_in(ctx, &p)?;
            for &layout in &opts.layouts {
                for &cfg in &designs {
                    let mut row = DecodeRow {
                        shape: p,
                        dtype: opts.dtype.name().into(),
                        layout,
                        page_size: (layout == KvLayout::Paged).then_some(opts.page_size),
                        design: if cfg.lanes { "lanes" } else { "rows" },
                        workgroup: cfg.workgroup,
                        built_in: cfg == built_in,
                        splits: None,
                        median_ms: None,
                        min_ms: None,
                        kv_gbps: None,
                        pct_copy_peak: None,
                        host_oneshot_ms: None,
                        host_replay_ms: None,
                        max_abs_err: None,
                        within_tolerance: None,
                        checked: match check.enabled {
                            true => "-".into(),
                            false => CheckOptions::SKIPPED.into(),
                        },
                        checked_in_full: false,
                        tolerance: None,
                        note: None,
                    };
                    let measured = measure_row(ctx, &timer, opts, &host, cfg, copy_peak_gbps, &mut row);
                    let measured = measured.map(|out| {
                        if let Some(e) = &expected {
                            check_row(&mut row, &out, e, check.scale(Tolerance::of(opts.dtype)));
                        }
                    });
                    if let Err(e) = measured {
                        row.note = Some(super::one_line(&e.to_string()));
                    }
                    rows.push(row);
                }
            }
        }
    }
    Ok(DecodeReport {
        adapter: AdapterReport::of(ctx),
        timer: timer.kind().label().into(),
        copy_peak_gbps,
        rows,
    })
}

fn measure_row(
    ctx: &Context,
    timer: &Timer,
    opts: &DecodeBenchOptions,
    host: &HostData,
    cfg: DecodeConfig,
    copy_peak_gbps: f64,
    row: &mut DecodeRow,
) -> Result<Vec<f32>> {
    let p = row.shape;
    let dtype = opts.dtype;
    let kv_shape = [p.b, p.hkv, p.lk, p.dk];
    let q = upload(ctx, &host.q, &[p.b, p.hq, 1, p.dk], dtype)?;
    let lengths = Tensor::from_slice(ctx, &vec![p.lk as u32; p.b], &[p.b])?;
    let mut attn = AttentionOptions {
        key_lengths: Some(lengths),
        align_to_key_lengths: true,
        kernel: KernelChoice::Decode,
        ..Default::default()
    };
    let (k, v) = match row.layout {
        KvLayout::Contiguous => (
            upload(ctx, &host.k, &kv_shape, dtype)?,
            upload(ctx, &host.v, &kv_shape, dtype)?,
        ),
        KvLayout::Paged => {
            let page = opts.page_size;
            if page == 0 || !p.lk.is_multiple_of(page) {
                return Err(crate::error::Error::InvalidOption {
                    name: "page size",
                    value: page as f64,
                    why: "must divide every key length of the sweep",
                });
            }
            let pages = p.b * p.lk / page;
            let mut table: Vec<u32> = (0..pages as u32).collect();
            table.shuffle(&mut ChaCha8Rng::seed_from_u64(p.lk as u64));
            attn.block_table = Some(Tensor::from_slice(ctx, &table, &[p.b, p.lk / page])?);
            // [N, P, Hkv, D] views of head-major pages.
            let pages_of = |x: &[f32]| -> Result<Tensor> {
                let t = upload(
                    ctx,
                    &to_pages(x, kv_shape, page, &table),
                    &[pages, p.hkv, page, p.dk],
                    dtype,
                )?;
                t.view(
                    0,
                    &[pages, page, p.hkv, p.dk],
                    &[p.hkv * page * p.dk, p.dk, page * p.dk, 1],
                )
            };
            (pages_of(&host.k)?, pages_of(&host.v)?)
        }
    };
    let tuning = Tuning {
        decode: Some(cfg),
        ..Default::default()
    };
    let call = Attention::with_tuning(ctx, &q, &k, &v, &attn, &tuning)?;
    row.splits = call.decode_splits();
    let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
        Some((set, i)) => call.encode_timed(enc, set, i),
        None => call.encode(enc),
    };
    let timing = timer.measure(opts.warmup, opts.iters, &mut record)?;
    let median = timing.median_s();
    let kv_bytes = (2 * p.b * p.hkv * p.lk * p.dk * dtype.size()) as f64;
    row.median_ms = Some(median * 1e3);
    row.min_ms = Some(timing.min_s() * 1e3);
    row.kv_gbps = Some(kv_bytes / median / 1e9);
    row.pct_copy_peak = Some(100.0 * kv_bytes / median / 1e9 / copy_peak_gbps);

    // Host time per call: prepared from scratch vs replayed (the GPU work drains between calls,
    // outside the timed span).
    let (mut oneshot, mut replay) = (Vec::new(), Vec::new());
    for _ in 0..opts.iters.max(3) {
        let t = Instant::now();
        let fresh = Attention::with_tuning(ctx, &q, &k, &v, &attn, &tuning)?;
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        fresh.encode(&mut enc);
        ctx.queue().submit([enc.finish()]);
        oneshot.push(t.elapsed().as_secs_f64());
        ctx.wait()?;
        let t = Instant::now();
        let mut enc = ctx.device().create_command_encoder(&Default::default());
        call.encode(&mut enc);
        ctx.queue().submit([enc.finish()]);
        replay.push(t.elapsed().as_secs_f64());
        ctx.wait()?;
    }
    row.host_oneshot_ms = Some(median_of(&mut oneshot) * 1e3);
    row.host_replay_ms = Some(median_of(&mut replay) * 1e3);
    call.output().out.to_f32_vec(ctx)
}

/// Compares a row's output with the reference on the outputs its plan names.
fn check_row(row: &mut DecodeRow, out: &[f32], expected: &Expected, tol: Tolerance) {
    let got = gather(&row.shape, out, &expected.plan);
    let c = reference::compare(&got, &expected.out, tol);
    row.max_abs_err = Some(c.max_abs);
    row.within_tolerance = Some(c.ok());
    row.checked = expected.plan.label.clone();
    row.checked_in_full = expected.plan.subset.is_none();
    row.tolerance = Some([tol.abs, tol.rel]);
}

fn median_of(x: &mut [f64]) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

/// The report as an aligned text table.
pub fn decode_table(r: &DecodeReport) -> String {
    let mut out = format!(
        "adapter: {}\ntimer: {}   copy bandwidth: {:.2} GB/s\n",
        r.adapter.summary(),
        r.timer,
        r.copy_peak_gbps
    );
    let header = [
        "B,Hq,Hkv,Lk,D",
        "dtype",
        "layout",
        "design",
        "splits",
        "median_ms",
        "kv_GB/s",
        "%copy",
        "host_1shot_ms",
        "host_replay_ms",
        "max_abs",
        "checked",
        "note",
    ];
    let num = |x: Option<f64>, d: usize| x.map_or("-".to_string(), |v| format!("{v:.d$}"));
    let body: Vec<Vec<String>> = r
        .rows
        .iter()
        .map(|row| {
            let p = row.shape;
            let layout = match (row.layout, row.page_size) {
                (KvLayout::Paged, Some(s)) => format!("paged/{s}"),
                _ => "contiguous".into(),
            };
            let mut note = row.note.clone().unwrap_or_default();
            if row.within_tolerance == Some(false) {
                note = format!("OUTSIDE TOLERANCE {note}");
            }
            vec![
                format!("{},{},{},{},{}", p.b, p.hq, p.hkv, p.lk, p.dk),
                row.dtype.clone(),
                layout,
                format!(
                    "{} wg{}{}",
                    row.design,
                    row.workgroup,
                    if row.built_in { " (built-in)" } else { "" }
                ),
                row.splits.map_or("-".into(), |s| s.to_string()),
                num(row.median_ms, 3),
                num(row.kv_gbps, 2),
                num(row.pct_copy_peak, 1),
                num(row.host_oneshot_ms, 3),
                num(row.host_replay_ms, 3),
                row.max_abs_err.map_or("-".into(), |e| format!("{e:.1e}")),
                row.checked.clone(),
                note,
            ]
        })
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for cells in &body {
        for (w, c) in width.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    out += &line(header.iter().map(|h| h.to_string()).collect());
    for cells in body {
        out += &line(cells);
    }
    out
}
