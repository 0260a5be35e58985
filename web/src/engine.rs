//! What the page runs, free of wasm-bindgen so that it also runs (and is tested) natively: one
//! benchmark row per [`RowSpec`], timed by the library's [`Timer`] (asynchronously) and checked against the CPU reference like
//! `wgpu-attention bench` rows, and the small correctness table of [`check_cases`].

use std::cell::RefCell;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wgpu_attention::bench_record::{
    check_plan, fill_metrics, gather, reference_subset, sdpa_bytes, set_check, AdapterReport, BenchReport, KernelKind,
    Row,
};
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::timer::{Stamps, Timer};
use wgpu_attention::{
    available_designs, Alignment, Attention, AttentionOptions, Context, DType, Design, Error, KernelChoice, Problem,
    Result, Tensor,
};

/// One benchmark row the page asks for (JSON from main.js; unknown names are refused when parsed).
#[derive(Debug, Clone, Deserialize)]
pub struct RowSpec {
    pub kernel: SpecKernel,
    /// The fused kernel's design (`None`: the library's choice).
    #[serde(default)]
    pub design: Option<SpecDesign>,
    #[serde(default)]
    pub dtype: SpecDtype,
    /// Problem sizes (Dk = Dv = d).
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub lq: usize,
    pub lk: usize,
    pub d: usize,
    /// Top-left causal mask.
    #[serde(default)]
    pub causal: bool,
    #[serde(default = "two")]
    pub warmup: u32,
    #[serde(default = "five")]
    pub iters: u32,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecKernel {
    Fused,
    Staged,
    Decode,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecDesign {
    Register,
    Tiled,
    Coopmat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecDtype {
    #[default]
    F32,
    F16,
}

fn two() -> u32 {
    2
}
fn five() -> u32 {
    5
}

impl RowSpec {
    fn problem(&self) -> Problem {
        Problem {
            b: self.b,
            hq: self.hq,
            hkv: self.hkv,
            lq: self.lq,
            lk: self.lk,
            dk: self.d,
            dv: self.d,
        }
    }

    fn kind(&self) -> KernelKind {
        match self.kernel {
            SpecKernel::Fused => KernelKind::Fused,
            SpecKernel::Staged => KernelKind::Staged,
            SpecKernel::Decode => KernelKind::Decode,
        }
    }

    fn design(&self) -> Option<Design> {
        self.design.map(|d| match d {
            SpecDesign::Register => Design::Register,
            SpecDesign::Tiled => Design::Tiled,
            SpecDesign::Coopmat => Design::Coopmat,
        })
    }

    fn dtype(&self) -> DType {
        match self.dtype {
            SpecDtype::F32 => DType::F32,
            SpecDtype::F16 => DType::F16,
        }
    }
}

/// Q, K, V of `p` drawn uniformly from [-1, 1) (rounded to f16 when the dtype is f16), seeded.
pub fn inputs(p: &Problem, dtype: DType, seed: u64) -> [Vec<f32>; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    p.qkv_shapes().map(|shape| {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|_| {
                let x = rng.gen_range(-1.0f32..1.0);
                match dtype {
                    DType::F16 => half_round(x),
                    _ => x,
                }
            })
            .collect()
    })
}

fn half_round(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

fn upload(ctx: &Context, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::F16 => {
            let h: Vec<_> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::from_slice(ctx, &h, shape)
        }
        _ => Tensor::from_slice(ctx, data, shape),
    }
}

/// What a cached reference output was computed for: shape, causal, dtype.
type ReferenceKey = (Problem, bool, &'static str);

/// The page's state: a device, its timer, the rows measured so far and the last reference
/// output (every kernel of one shape is checked against the same one).
pub struct Engine {
    ctx: Context,
    timer: Timer,
    rows: RefCell<Vec<Row>>,
    expected: RefCell<Option<(ReferenceKey, Vec<f64>)>>,
    runs: RefCell<(u32, u32)>,
    /// What the browser says of its adapter (`GPUAdapterInfo`), where wgpu's info is empty.
    described: RefCell<Option<(String, String)>>,
}

/// What the page shows about the adapter.
#[derive(Debug, Serialize)]
pub struct AdapterInfo {
    pub adapter: AdapterReport,
    /// `gpu-timestamps` (WebGPU `timestamp-query`) or `wall-clock` (submission to completion).
    pub timer: &'static str,
    /// The wgpu features the device granted.
    pub features: Vec<String>,
    /// The fused designs the device runs in f32.
    pub designs: Vec<&'static str>,
    pub max_buffer_size: u64,
    pub max_workgroup_storage_size: u32,
}

impl Engine {
    pub fn new(ctx: Context) -> Result<Self> {
        let timer = Timer::new(&ctx)?;
        Ok(Self {
            ctx,
            timer,
            rows: RefCell::new(Vec::new()),
            expected: RefCell::new(None),
            runs: RefCell::new((0, 0)),
            described: RefCell::new(None),
        })
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Names the adapter from the browser's own description (`GPUAdapterInfo`: e.g. vendor
    /// `google`, architecture `swiftshader`), used where wgpu reports no name.
    pub fn describe_adapter(&self, name: String, driver_info: String) {
        *self.described.borrow_mut() = Some((name, driver_info));
    }

    fn adapter_report(&self) -> AdapterReport {
        let mut report = AdapterReport::of(&self.ctx);
        if let Some((name, info)) = self.described.borrow().clone() {
            if report.name.trim().is_empty() || report.name == "unknown" {
                report.name = name;
            }
            if report.driver_info.trim().is_empty() {
                report.driver_info = info;
            }
        }
        report
    }

    pub fn adapter(&self) -> AdapterInfo {
        let limits = self.ctx.limits();
        AdapterInfo {
            adapter: self.adapter_report(),
            timer: self.timer.kind().label(),
            features: self
                .ctx
                .features()
                .iter_names()
                .map(|(name, _)| name.to_string())
                .collect(),
            designs: available_designs(&self.ctx, DType::F32)
                .into_iter()
                .map(Design::name)
                .collect(),
            max_buffer_size: limits.max_buffer_size,
            max_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        }
    }

    /// Runs, times and checks one row, keeps it for [`Engine::report`] and returns it. A call the
    /// device cannot make becomes a row whose note says why (as on the command line).
    pub async fn row(&self, spec: &RowSpec) -> Result<Row> {
        let kind = spec.kind();
        let dtype = spec.dtype();
        let p = spec.problem();
        let mut row = Row {
            timer: self.timer.kind().label().into(),
            ..Row::unmeasured("sdpa", kind, dtype, p, spec.causal.then_some(Alignment::TopLeft))
        };
        if let Err(e) = self.measure(spec, kind, dtype, &p, &mut row).await {
            row.note = Some(match row.note.take() {
                Some(note) => format!("{note}; {e}"),
                None => e.to_string(),
            });
        }
        *self.runs.borrow_mut() = (spec.warmup, spec.iters);
        self.rows.borrow_mut().push(row.clone());
        Ok(row)
    }

    async fn measure(&self, spec: &RowSpec, kind: KernelKind, dtype: DType, p: &Problem, row: &mut Row) -> Result<()> {
        let ctx = &self.ctx;
        let opts = AttentionOptions {
            kernel: match kind {
                KernelKind::Staged => KernelChoice::Staged,
                KernelKind::Decode => KernelChoice::Decode,
                _ => KernelChoice::Fused,
            },
            design: spec.design(),
            causal: spec.causal.then_some(Alignment::TopLeft),
            ..Default::default()
        };
        let [qs, ks, vs] = p.qkv_shapes();
        let host = inputs(p, dtype, 0x5eed);
        let [q, k, v] =
            [(&host[0], qs), (&host[1], ks), (&host[2], vs)].map(|(data, shape)| upload(ctx, data, &shape, dtype));
        let call = Attention::new(ctx, &q?, &k?, &v?, &opts)?;
        if kind == KernelKind::Fused {
            row.design = call.output().design.map(|d| d.name().into());
            row.note = call.output().design_note.clone();
        }
        if let Some(splits) = call.decode_splits() {
            row.tile = Some(format!("splits{splits}"));
        }
        let call = call.into_prepared("attention");
        row.alloc_bytes = Some(call.allocated_bytes());
        let mut record = |enc: &mut wgpu_attention::wgpu::CommandEncoder, stamps: Stamps| match stamps {
            Some((set, first)) => call.encode_timed(enc, set, first),
            None => call.encode(enc),
        };
        let timing = self.timer.measure_async(spec.warmup, spec.iters, &mut record).await?;
        fill_metrics(row, call.flops(), sdpa_bytes(p, dtype), &timing, None);

        let plan = check_plan(p, Alignment::TopLeft);
        let out = call.output().out.to_f32_vec_async(ctx).await?;
        let got = gather(p, &out, &plan);
        let key = (*p, spec.causal, dtype.name());
        let mut cached = self.expected.borrow_mut();
        if cached.as_ref().is_none_or(|(k, _)| *k != key) {
            let host_opts = AttentionOptions {
                causal: opts.causal,
                ..Default::default()
            };
            let expected = reference_subset(p, [&host[0], &host[1], &host[2]], &host_opts, None, &plan);
            *cached = Some((key, expected));
        }
        let expected = &cached.as_ref().expect("filled above").1;
        let tolerance = Tolerance::of(dtype);
        set_check(row, [&reference::compare(&got, expected, tolerance)], &plan, tolerance);
        Ok(())
    }

    /// Every row so far, in the schema of `wgpu-attention bench --json`.
    pub fn report(&self) -> BenchReport {
        let rows = self.rows.borrow().clone();
        let (warmup, iters) = *self.runs.borrow();
        BenchReport {
            adapter: self.adapter_report(),
            timer: self.timer.kind().label().into(),
            peak_gflops: None,
            dtype: rows.first().map_or("f32".into(), |r| r.dtype.clone()),
            warmup,
            iters,
            rows,
        }
    }

    /// Forgets the rows (a new sweep).
    pub fn clear(&self) {
        self.rows.borrow_mut().clear();
    }

    /// Runs every case of [`check_cases`] on every path the device has and compares O and LSE
    /// with the reference.
    pub async fn check(&self) -> Vec<CheckRow> {
        let mut rows = Vec::new();
        for case in check_cases() {
            for (kernel, design) in paths(&self.ctx, &case) {
                let mut row = CheckRow {
                    case: case.name,
                    shape: case.problem.to_string(),
                    kernel: kernel_name(kernel),
                    design: None,
                    max_abs_err: None,
                    max_rel_err: None,
                    ok: false,
                    note: None,
                };
                if let Err(e) = self.check_one(&case, kernel, design, &mut row).await {
                    row.note = Some(e.to_string());
                }
                rows.push(row);
            }
        }
        rows
    }

    async fn check_one(
        &self,
        case: &CheckCase,
        kernel: KernelChoice,
        design: Option<Design>,
        row: &mut CheckRow,
    ) -> Result<()> {
        let ctx = &self.ctx;
        let p = case.problem;
        let [qs, ks, vs] = p.qkv_shapes();
        let host = inputs(&p, DType::F32, case.seed);
        let mask: Option<Vec<bool>> = case.mask.then(|| mask_values(&p));
        let mut opts = case.options.clone();
        opts.kernel = kernel;
        opts.design = design;
        opts.return_lse = true;
        opts.mask = mask
            .as_ref()
            .map(|m| Tensor::from_slice(ctx, m, &[p.b, p.hq, p.lq, p.lk]))
            .transpose()?;
        opts.key_lengths = case
            .key_lengths
            .as_ref()
            .map(|l| Tensor::from_slice(ctx, l, &[p.b]))
            .transpose()?;
        let q = Tensor::from_slice(ctx, &host[0], &qs)?;
        let k = Tensor::from_slice(ctx, &host[1], &ks)?;
        let v = Tensor::from_slice(ctx, &host[2], &vs)?;
        let gpu = wgpu_attention::attention(ctx, &q, &k, &v, &opts)?;
        row.design = gpu.design.map(Design::name);
        row.note = gpu.design_note.clone();
        let expected = reference::sdpa(
            &HostInputs {
                mask: mask.as_deref().map(|data| Broadcast {
                    data,
                    shape: [p.b, p.hq, p.lq, p.lk],
                }),
                key_lengths: case.key_lengths.as_deref(),
                ..HostInputs::new(p, &host[0], &host[1], &host[2])
            },
            &opts,
        );
        let out = reference::compare(&gpu.out.to_f32_vec_async(ctx).await?, &expected.out, Tolerance::F32);
        let lse_gpu = gpu
            .lse
            .ok_or_else(|| Error::Unsupported("no LSE returned".into()))?
            .to_vec_async::<f32>(ctx)
            .await?;
        let lse = reference::compare(&lse_gpu, &expected.lse, Tolerance::F32);
        row.max_abs_err = Some(out.max_abs.max(lse.max_abs));
        row.max_rel_err = Some(out.max_rel.max(lse.max_rel));
        row.ok = out.ok() && lse.ok() && gpu.kernel == kernel;
        Ok(())
    }
}

/// One line of the page's correctness table.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub case: &'static str,
    pub shape: String,
    pub kernel: &'static str,
    pub design: Option<&'static str>,
    pub max_abs_err: Option<f64>,
    pub max_rel_err: Option<f64>,
    /// O and LSE within the f32 tolerance, on the path that was asked for.
    pub ok: bool,
    pub note: Option<String>,
}

/// A small call of the correctness table.
#[derive(Debug, Clone)]
pub struct CheckCase {
    pub name: &'static str,
    pub problem: Problem,
    pub options: AttentionOptions,
    /// A boolean mask [B, Hq, Lq, Lk] with about one key in three masked and row 0 of every
    /// (b, h) fully masked (O = 0, LSE = −∞).
    pub mask: bool,
    pub key_lengths: Option<Vec<u32>>,
    pub seed: u64,
}

/// Awkward shapes and the options that change the kernels' control flow.
pub fn check_cases() -> Vec<CheckCase> {
    let p = |b, hq, hkv, lq, lk, d| Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk: d,
        dv: d,
    };
    let causal = |a| AttentionOptions {
        causal: Some(a),
        ..Default::default()
    };
    vec![
        CheckCase {
            name: "odd sizes",
            problem: p(1, 3, 3, 37, 41, 24),
            options: AttentionOptions::default(),
            mask: false,
            key_lengths: None,
            seed: 1,
        },
        CheckCase {
            name: "causal top-left, GQA 4:1",
            problem: p(2, 4, 1, 33, 33, 64),
            options: causal(Alignment::TopLeft),
            mask: false,
            key_lengths: None,
            seed: 2,
        },
        CheckCase {
            name: "causal bottom-right, Lq < Lk",
            problem: p(1, 2, 2, 19, 70, 32),
            options: causal(Alignment::BottomRight),
            mask: false,
            key_lengths: None,
            seed: 3,
        },
        CheckCase {
            name: "mask with fully masked rows, key lengths",
            problem: p(2, 2, 2, 9, 45, 16),
            options: AttentionOptions::default(),
            mask: true,
            key_lengths: Some(vec![45, 17]),
            seed: 4,
        },
        CheckCase {
            name: "one query (decode), GQA 8:2",
            problem: p(2, 8, 2, 1, 300, 64),
            options: AttentionOptions::default(),
            mask: false,
            key_lengths: Some(vec![300, 123]),
            seed: 5,
        },
    ]
}

fn mask_values(p: &Problem) -> Vec<bool> {
    let (lq, lk) = (p.lq, p.lk);
    (0..p.b * p.hq * lq * lk)
        .map(|e| (e / lk) % lq != 0 && (e * 7 + e / lk) % 3 != 0)
        .collect()
}

/// The fused designs the device has, staged, and decode for single-query cases.
fn paths(ctx: &Context, case: &CheckCase) -> Vec<(KernelChoice, Option<Design>)> {
    let mut paths: Vec<_> = available_designs(ctx, DType::F32)
        .into_iter()
        .map(|d| (KernelChoice::Fused, Some(d)))
        .collect();
    paths.push((KernelChoice::Staged, None));
    if case.problem.lq <= 16 && !case.mask {
        paths.push((KernelChoice::Decode, None));
    }
    paths
}

fn kernel_name(k: KernelChoice) -> &'static str {
    match k {
        KernelChoice::Staged => "staged",
        KernelChoice::Decode => "decode",
        _ => "fused",
    }
}
