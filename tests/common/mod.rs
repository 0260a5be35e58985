//! Shared test harness: one context per test binary, seeded inputs, GPU-vs-reference checks.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod skip;

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wgpu_attention::reference::{self, Broadcast, HostInputs, Tolerance};
use wgpu_attention::{
    Attention, AttentionOptions, Context, CoopmatConfig, DType, DecodeConfig, FlashConfig, KernelChoice, Problem,
    Tensor, TiledConfig, Tuning,
};

/// The test context (lavapipe in CI). Panics with install advice when no adapter exists.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        Context::new().expect("no GPU adapter: install lavapipe (apt-get install -y mesa-vulkan-drivers)")
    })
}

/// A wgpu instance on the crate's default backends (no OpenGL), as a downstream crate makes one.
pub fn instance() -> wgpu_attention::wgpu::Instance {
    use wgpu_attention::wgpu;
    wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu_attention::context::DEFAULT_BACKENDS,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    })
}

/// A device of the default adapter as a downstream crate creates it, with the features the crate
/// wants and `limits` applied to the adapter's limits (to lower one and test what the crate does
/// at that limit on any device).
pub fn borrowed_device(
    limits: impl FnOnce(wgpu_attention::wgpu::Limits) -> wgpu_attention::wgpu::Limits,
) -> (wgpu_attention::wgpu::Device, wgpu_attention::wgpu::Queue) {
    let adapter = pollster::block_on(instance().request_adapter(&Default::default())).unwrap();
    pollster::block_on(adapter.request_device(&wgpu_attention::wgpu::DeviceDescriptor {
        required_limits: limits(adapter.limits()),
        required_features: adapter.features() & wgpu_attention::context::WANTED_FEATURES,
        ..Default::default()
    }))
    .unwrap()
}

pub fn problem(b: usize, hq: usize, hkv: usize, lq: usize, lk: usize, dk: usize, dv: usize) -> Problem {
    Problem {
        b,
        hq,
        hkv,
        lq,
        lk,
        dk,
        dv,
    }
}

pub fn random(rng: &mut ChaCha8Rng, n: usize, magnitude: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * magnitude).collect()
}

/// Rounds through f16 so that the reference sees exactly what the GPU reads.
pub fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

pub fn upload(ctx: &Context, data: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    match dtype {
        DType::F16 => {
            let h: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
            Tensor::from_slice(ctx, &h, shape).unwrap()
        }
        _ => Tensor::from_slice(ctx, data, shape).unwrap(),
    }
}

/// Which boolean mask a case uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaskKind {
    /// Random, ~70% true, broadcast per `shape`.
    Random { shape: [usize; 4] },
    /// Random, with query row 0 fully masked in every (b, h).
    WithEmptyRow { shape: [usize; 4] },
}

/// One GPU-vs-reference comparison.
#[derive(Debug, Clone)]
pub struct Case {
    pub problem: Problem,
    pub opts: AttentionOptions,
    pub dtype: DType,
    pub bias_shape: Option<[usize; 4]>,
    pub mask: Option<MaskKind>,
    pub key_lengths: Option<Vec<u32>>,
    pub magnitude: f32,
    pub seed: u64,
    /// Fused tile; `None` uses the library's default choice.
    pub tile: Option<FlashConfig>,
    /// Tile of the tiled design (selects that design); `None` uses the library's choice.
    pub tiled: Option<TiledConfig>,
    /// Tile of the cooperative-matrix design (selects it).
    pub coopmat: Option<CoopmatConfig>,
    /// Fail when the requested design fell back (`Case::strict`).
    pub strict_design: bool,
    /// Decode tile and splits; `None` uses the library's default choice.
    pub decode: Option<DecodeConfig>,
    /// Read K and V as pages through a shuffled block table (`AttentionOptions::block_table`).
    pub paged: bool,
}

impl Case {
    pub fn new(problem: Problem) -> Self {
        Self {
            problem,
            opts: AttentionOptions::default(),
            dtype: DType::F32,
            bias_shape: None,
            mask: None,
            key_lengths: None,
            magnitude: 1.0,
            seed: 7,
            tile: None,
            tiled: None,
            coopmat: None,
            strict_design: false,
            decode: None,
            paged: false,
        }
    }
    pub fn opts(mut self, f: impl FnOnce(&mut AttentionOptions)) -> Self {
        f(&mut self.opts);
        self
    }
    pub fn kernel(self, k: KernelChoice) -> Self {
        self.opts(|o| o.kernel = k)
    }
    pub fn dtype(mut self, d: DType) -> Self {
        self.dtype = d;
        self
    }
    pub fn bias(mut self, shape: [usize; 4]) -> Self {
        self.bias_shape = Some(shape);
        self
    }
    pub fn mask(mut self, m: MaskKind) -> Self {
        self.mask = Some(m);
        self
    }
    pub fn key_lengths(mut self, l: Vec<u32>) -> Self {
        self.key_lengths = Some(l);
        self
    }
    pub fn magnitude(mut self, m: f32) -> Self {
        self.magnitude = m;
        self
    }
    pub fn seed(mut self, s: u64) -> Self {
        self.seed = s;
        self
    }
    pub fn tile(mut self, t: FlashConfig) -> Self {
        self.tile = Some(t);
        self
    }
    pub fn tiled(mut self, t: TiledConfig) -> Self {
        self.tiled = Some(t);
        self
    }
    pub fn coopmat(mut self, t: CoopmatConfig) -> Self {
        self.coopmat = Some(t);
        self
    }
    /// Runs on `design` and fails if another design ran (no fallback allowed).
    pub fn strict(mut self, design: wgpu_attention::Design) -> Self {
        self.opts.design = Some(design);
        self.strict_design = true;
        self
    }
    /// The same case over paged K/V: pages of the largest divisor of Lk up to 8 rows, in reversed
    /// order behind a block table (Lk > 0 only).
    pub fn paged(mut self) -> Self {
        self.paged = self.problem.lk > 0;
        self
    }
    pub fn decode(mut self, d: DecodeConfig) -> Self {
        self.decode = Some(d);
        self
    }

    /// Runs the GPU and the reference; `Err` describes the worst element of the first mismatch.
    /// A fused case without an explicit tile or design runs on every fused design this adapter
    /// has (`available_designs`), each checked to have run (or to say why it fell back).
    pub fn check(&self) -> Result<(), String> {
        if self.dtype == DType::F16 && !skip::has_for(skip::Cap::F16, &format!("f16 case {}", self.problem)) {
            return Ok(());
        }
        let expand = self.opts.kernel == KernelChoice::Fused
            && self.tile.is_none()
            && self.tiled.is_none()
            && self.coopmat.is_none()
            && self.opts.design.is_none();
        if !expand {
            return self.check_one();
        }
        for d in wgpu_attention::available_designs(ctx(), self.dtype) {
            self.clone().opts(|o| o.design = Some(d)).check_one()?;
        }
        Ok(())
    }

    fn check_one(&self) -> Result<(), String> {
        let ctx = ctx();
        let p = self.problem;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let [qs, ks, vs] = p.qkv_shapes();
        let mut q = random(&mut rng, qs.iter().product(), self.magnitude);
        let mut k = random(&mut rng, ks.iter().product(), self.magnitude);
        let mut v = random(&mut rng, vs.iter().product(), 1.0);
        let mut bias = self.bias_shape.map(|s| random(&mut rng, s.iter().product(), 2.0));
        if self.dtype == DType::F16 {
            q = round_f16(&q);
            k = round_f16(&k);
            v = round_f16(&v);
            bias = bias.map(|b| round_f16(&b));
        }
        let mask: Option<(Vec<bool>, [usize; 4])> = self.mask.map(|m| match m {
            MaskKind::Random { shape } => ((0..shape.iter().product()).map(|_| rng.gen_bool(0.7)).collect(), shape),
            MaskKind::WithEmptyRow { shape } => {
                let n: usize = shape.iter().product();
                let (lq, lk) = (shape[2], shape[3]);
                ((0..n).map(|e| (e / lk) % lq != 0 && rng.gen_bool(0.7)).collect(), shape)
            }
        });

        let mut opts = self.opts.clone();
        opts.return_lse = true;
        if let Some((b, s)) = self.bias_shape.as_ref().zip(bias.as_ref()).map(|(s, b)| (b, s)) {
            opts.bias = Some(upload(ctx, b, s, self.dtype));
        }
        if let Some((m, s)) = &mask {
            opts.mask = Some(Tensor::from_slice(ctx, m, s).unwrap());
        }
        if let Some(l) = &self.key_lengths {
            opts.key_lengths = Some(Tensor::from_slice(ctx, l, &[p.b]).unwrap());
        }
        let tuning = Tuning {
            flash: self.tile,
            tiled: self.tiled,
            coopmat: self.coopmat,
            decode: self.decode,
            ..Default::default()
        };
        let (k_gpu, v_gpu) = match self.paged {
            false => (upload(ctx, &k, &ks, self.dtype), upload(ctx, &v, &vs, self.dtype)),
            true => {
                let page = (1..=8).rev().find(|d| p.lk.is_multiple_of(*d)).unwrap_or(1);
                let (cols, pages) = (p.lk / page, p.b * p.lk / page);
                let table: Vec<u32> = (0..pages as u32).rev().collect();
                opts.block_table = Some(Tensor::from_slice(ctx, &table, &[p.b, cols]).unwrap());
                let paginate = |x: &[f32], d: usize| {
                    let mut out = vec![0.0f32; x.len()];
                    for b in 0..p.b {
                        for j in 0..p.lk {
                            let id = table[b * cols + j / page] as usize;
                            for h in 0..p.hkv {
                                let src = ((b * p.hkv + h) * p.lk + j) * d;
                                let dst = ((id * page + j % page) * p.hkv + h) * d;
                                out[dst..dst + d].copy_from_slice(&x[src..src + d]);
                            }
                        }
                    }
                    upload(ctx, &out, &[pages, page, p.hkv, d], self.dtype)
                };
                (paginate(&k, p.dk), paginate(&v, p.dv))
            }
        };
        let call = Attention::with_tuning(ctx, &upload(ctx, &q, &qs, self.dtype), &k_gpu, &v_gpu, &opts, &tuning)
            .map_err(|e| format!("{self:?}: attention failed: {e}"))?;
        call.submit().map_err(|e| format!("{self:?}: submit failed: {e}"))?;
        let gpu = call.into_output();
        // (An empty problem dispatches nothing and runs no design.)
        if let Some(d) = self.opts.design.filter(|_| p.b > 0 && p.lq > 0) {
            if gpu.design != Some(d) && (self.strict_design || gpu.design_note.is_none()) {
                return Err(format!(
                    "{self:?}: asked for the {d} design, ran {:?} ({:?})",
                    gpu.design, gpu.design_note
                ));
            }
        }

        let expected = reference::sdpa(
            &HostInputs {
                problem: p,
                q: &q,
                k: &k,
                v: &v,
                bias: bias.as_ref().map(|b| Broadcast {
                    data: b,
                    shape: self.bias_shape.unwrap(),
                }),
                mask: mask.as_ref().map(|(m, s)| Broadcast { data: m, shape: *s }),
                key_lengths: self.key_lengths.as_deref(),
                score: Default::default(),
                local: None,
            },
            &self.opts,
        );
        let tol = if self.dtype == DType::F16 {
            Tolerance::F16
        } else {
            Tolerance::F32
        };
        let out = gpu.out.to_f32_vec(ctx).unwrap();
        let c = reference::compare(&out, &expected.out, tol);
        if !c.ok() {
            return Err(format!("O mismatch ({c}) for {} {:?} case {self:?}", p, gpu.kernel));
        }
        // LSE is f32 on every path; the score magnitude sets its absolute error.
        let lse = gpu.lse.unwrap().to_vec::<f32>(ctx).unwrap();
        let lse_tol = Tolerance {
            abs: tol.abs * self.magnitude.powi(2).max(1.0) as f64,
            rel: tol.rel,
        };
        let c = reference::compare(&lse, &expected.lse, lse_tol);
        if !c.ok() {
            return Err(format!("LSE mismatch ({c}) for {} case {self:?}", p));
        }
        if let Some(w) = gpu.weights {
            let w = w.to_vec::<f32>(ctx).unwrap();
            let c = reference::compare(&w, &expected.weights, tol);
            if !c.ok() {
                return Err(format!("P mismatch ({c}) for {} case {self:?}", p));
            }
        }
        Ok(())
    }
}

/// Runs every case, reporting all failures at once.
pub fn check_all(cases: impl IntoIterator<Item = Case>) {
    let failures: Vec<String> = cases.into_iter().filter_map(|c| c.check().err()).collect();
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
