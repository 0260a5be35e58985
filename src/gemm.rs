//! Batched matrix multiply on the GPU (`shaders/gemm.wgsl`), the projection kernel of the
//! attention family: `C = act(alpha · op(A) op(B) + bias + (C if accumulate))`.
//!
//! A is [M, K], [N₁, M, K] or [N₁, N₂, M, K] (K and M swapped with `trans_a`), B likewise with
//! [.., K, N] (`trans_b`: [.., N, K], the layout of a PyTorch `Linear` weight, so `x Wᵀ` is
//! `trans_b: true`). Batch dims of A and B are equal, or one side has none and is broadcast.
//! C has A's (or B's) batch dims and [M, N]. Transposes are strides: nothing is copied.
//!
//! ```
//! # fn main() -> Result<(), wgpu_attention::Error> {
//! use wgpu_attention::{gemm, Context, GemmOptions, Tensor};
//! let ctx = Context::new()?;
//! let x = Tensor::from_slice(&ctx, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2])?; // [M=2, K=2]
//! let w = Tensor::from_slice(&ctx, &[1.0f32, 0.0, 1.0, 1.0], &[2, 2])?; // Linear weight [N, K]
//! let y = gemm::gemm(&ctx, &x, &w, &GemmOptions { trans_b: true, ..Default::default() })?;
//! assert_eq!(y.to_vec::<f32>(&ctx)?, vec![1.0, 3.0, 3.0, 7.0]); // x Wᵀ
//! # Ok(()) }
//! ```

use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::gemm::{flags, GemmParams, MatrixStrides};
use crate::kernels::{self, GemmTile};
use crate::prepared::Prepared;
use crate::tensor::{DType, Tensor};

/// Element-wise function applied to each output element last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// tanh.
    Tanh,
    /// The logistic function 1 / (1 + e⁻ˣ).
    Sigmoid,
}

/// Which GEMM kernel computes the product. Every design supports every option of [`GemmOptions`].
///
/// A forced design that cannot run on the device is an error, never a silent substitute (as
/// with [`GemmDesign::Register`] beyond its reduction limit on old llvmpipe):
/// [`GemmDesign::Coopmat`] with f32 storage, or on a device without f16 → f32 cooperative
/// matrices or without `Features::SUBGROUP`, fails with [`Error::Unsupported`] saying why.
/// `Auto` only picks designs that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum GemmDesign {
    /// [`GemmDesign::Register`] on CPU adapters (`DeviceType::Cpu`: llvmpipe, SwiftShader);
    /// elsewhere [`GemmDesign::Coopmat`] for f16 storage where the device has f16 → f32
    /// cooperative matrices, [`GemmDesign::Tiled`] otherwise ([`GemmDesign::resolve_for`]).
    #[default]
    Auto,
    /// Workgroup tiles staged through workgroup memory (`shaders/gemm.wgsl`); the GPU design,
    /// shaped by [`GemmOptions::tile`].
    Tiled,
    /// Each invocation keeps a block of output rows of one column in registers, with no workgroup
    /// memory and no barriers (`shaders/gemm_register.wgsl`); the CPU design.
    Register,
    /// Cooperative matrices (`shaders/gemm_coopmat.wgsl`): a workgroup of whole subgroups stages
    /// f16 blocks of A and B in workgroup memory and multiplies CM×CM fragments (8 or 16, the
    /// device's f16 → f32 matrix size) into f32 accumulators; f16 storage only, on devices with
    /// `Features::EXPERIMENTAL_COOPERATIVE_MATRIX` and `SUBGROUP`.
    Coopmat,
}

impl GemmDesign {
    /// The design `Auto` stands for on `ctx` for f32 storage (other designs are returned as they
    /// are); [`GemmDesign::resolve_for`] takes the storage type into account.
    pub fn resolve(self, ctx: &Context) -> GemmDesign {
        self.resolve_for(ctx, DType::F32)
    }

    /// The design `Auto` stands for on `ctx` for `dtype` storage: `Register` on CPU adapters,
    /// `Coopmat` for f16 where the device can run it, `Tiled` otherwise. Other designs are
    /// returned as they are.
    pub fn resolve_for(self, ctx: &Context, dtype: DType) -> GemmDesign {
        match self {
            GemmDesign::Auto if kernels::policy::is_cpu(ctx) => GemmDesign::Register,
            GemmDesign::Auto if kernels::gemm_coopmat::unsupported(ctx, dtype).is_none() => GemmDesign::Coopmat,
            GemmDesign::Auto => GemmDesign::Tiled,
            d => d,
        }
    }

    /// Why this design cannot run on `ctx` for `dtype` storage, or `None` when it can (`Auto`
    /// always can). Only [`GemmDesign::Coopmat`] has device requirements.
    pub fn unsupported(self, ctx: &Context, dtype: DType) -> Option<String> {
        match self {
            GemmDesign::Coopmat => kernels::gemm_coopmat::unsupported(ctx, dtype),
            _ => None,
        }
    }

    /// Lower-case name (`auto`, `tiled`, `register`, `coopmat`).
    pub fn name(self) -> &'static str {
        match self {
            GemmDesign::Auto => "auto",
            GemmDesign::Tiled => "tiled",
            GemmDesign::Register => "register",
            GemmDesign::Coopmat => "coopmat",
        }
    }
}

impl std::fmt::Display for GemmDesign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of [`gemm`].
#[derive(Debug, Clone)]
pub struct GemmOptions {
    /// A is stored [.., K, M].
    pub trans_a: bool,
    /// B is stored [.., N, K] (a `Linear` weight).
    pub trans_b: bool,
    /// Multiplier of the product (default 1).
    pub alpha: f32,
    /// Bias added to every row, shape \[N\], dtype of A.
    pub bias: Option<Tensor>,
    /// Applied after bias and accumulation.
    pub activation: Activation,
    /// Multiplier applied last, after the activation (default 1).
    pub post_scale: f32,
    /// Write C here (any strides) instead of allocating it.
    pub out: Option<Tensor>,
    /// Add the product to the existing contents of `out` (C += …).
    pub accumulate: bool,
    /// Tile of the tiled design; `None` picks one from the shape. A tile with `design: Auto`
    /// selects the tiled design.
    pub tile: Option<GemmTile>,
    /// Kernel design; `Auto` picks by adapter type and storage type (or `Tiled` when `tile` is
    /// given).
    pub design: GemmDesign,
}

impl Default for GemmOptions {
    fn default() -> Self {
        Self {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            bias: None,
            activation: Activation::None,
            post_scale: 1.0,
            out: None,
            accumulate: false,
            tile: None,
            design: GemmDesign::Auto,
        }
    }
}

/// Computes the product and returns C (one submission; reading C waits for it).
pub fn gemm(ctx: &Context, a: &Tensor, b: &Tensor, opts: &GemmOptions) -> Result<Tensor> {
    prepare(ctx, a, b, opts)?.run()
}

/// The sizes of a validated GEMM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GemmShape {
    /// Batch dims of C (0 to 2 of them).
    pub batch: Vec<usize>,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
}

impl GemmShape {
    /// Shape of C.
    pub fn out_shape(&self) -> Vec<usize> {
        let mut s = self.batch.clone();
        s.extend([self.m, self.n]);
        s
    }
    /// 2·batch·M·N·K.
    pub fn flops(&self) -> f64 {
        2.0 * self.batch.iter().product::<usize>() as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

/// Checks shapes, dtypes and options; returns the sizes.
pub fn validate(ctx: &Context, a: &Tensor, b: &Tensor, opts: &GemmOptions) -> Result<GemmShape> {
    for (name, t) in [("a", a), ("b", b)] {
        crate::tensor::check_operand(name, t, 2..=4)?;
        if !matches!(t.dtype(), DType::F32 | DType::F16) || t.dtype() != a.dtype() {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: "f32 or f16, both operands alike",
            });
        }
        crate::tensor::check_strides_fit(name, t)?;
    }
    if a.dtype() == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 GEMM",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    let (ra, rb) = (a.shape().len(), b.shape().len());
    let (m, ka) = matrix_dims(a.shape(), opts.trans_a);
    let (kb, n) = matrix_dims(b.shape(), opts.trans_b);
    let (batch_a, batch_b) = (&a.shape()[..ra - 2], &b.shape()[..rb - 2]);
    if ka != kb {
        return Err(Error::ShapeMismatch {
            name: "b (reduction dim)",
            expected: vec![ka],
            got: vec![kb],
        });
    }
    let batch = match (batch_a.is_empty(), batch_b.is_empty()) {
        (_, true) => batch_a.to_vec(),
        (true, false) => batch_b.to_vec(),
        _ if batch_a == batch_b => batch_a.to_vec(),
        _ => {
            return Err(Error::ShapeMismatch {
                name: "b (batch dims)",
                expected: batch_a.to_vec(),
                got: batch_b.to_vec(),
            })
        }
    };
    let shape = GemmShape { batch, m, n, k: ka };
    for (name, x) in [("alpha", opts.alpha), ("post_scale", opts.post_scale)] {
        if !x.is_finite() {
            return Err(Error::InvalidOption {
                name,
                value: x as f64,
                why: "must be finite",
            });
        }
    }
    if let Some(bias) = &opts.bias {
        if bias.shape() != [n] {
            return Err(Error::ShapeMismatch {
                name: "bias",
                expected: vec![n],
                got: bias.shape().to_vec(),
            });
        }
        if bias.dtype() != a.dtype() {
            return Err(Error::DType {
                name: "bias",
                got: bias.dtype(),
                expected: a.dtype().name(),
            });
        }
        crate::tensor::check_strides_fit("bias", bias)?;
    }
    if let Some(out) = &opts.out {
        if out.shape() != shape.out_shape().as_slice() {
            return Err(Error::ShapeMismatch {
                name: "out",
                expected: shape.out_shape(),
                got: out.shape().to_vec(),
            });
        }
        if out.dtype() != a.dtype() {
            return Err(Error::DType {
                name: "out",
                got: out.dtype(),
                expected: a.dtype().name(),
            });
        }
        crate::tensor::check_strides_fit("out", out)?;
    }
    for (what, x) in [("m", m), ("n", n), ("k", ka)] {
        if x > u32::MAX as usize {
            return Err(Error::Limit {
                what: format!("GEMM {what}"),
                limit: "2^32 - 1",
                needed: x as u64,
                max: u32::MAX as u64,
            });
        }
    }
    Ok(shape)
}

/// (rows, cols) of the matrix an operand stands for.
fn matrix_dims(shape: &[usize], trans: bool) -> (usize, usize) {
    let r = shape.len();
    match trans {
        false => (shape[r - 2], shape[r - 1]),
        true => (shape[r - 1], shape[r - 2]),
    }
}

/// Offset and strides of an operand; `trans` swaps the matrix axes; missing batch dims broadcast.
fn matrix_strides(t: &Tensor, offset: u32, trans: bool) -> MatrixStrides {
    let (s, shape) = (t.strides(), t.shape());
    let r = s.len();
    let pick = |axis: usize| if shape[axis] == 1 { 0 } else { s[axis] as u32 };
    let (outer, inner) = match r {
        4 => (pick(0), pick(1)),
        3 => (pick(0), 0),
        _ => (0, 0),
    };
    let (row, col) = (s[r - 2] as u32, s[r - 1] as u32);
    let (row, col) = if trans { (col, row) } else { (row, col) };
    MatrixStrides {
        offset,
        outer,
        inner,
        row,
        col,
    }
}

/// A tile suited to the shape: narrow outputs (GEMV-like) use a one-column workgroup.
fn default_tile(m: usize, n: usize) -> GemmTile {
    match (m, n) {
        (_, 0..=4) => GemmTile {
            wg_x: 1,
            wg_y: 64,
            tile_k: 16,
        },
        (0..=4, _) => GemmTile {
            wg_x: 64,
            wg_y: 1,
            tile_k: 16,
        },
        _ => GemmTile::default(),
    }
}

/// The longest reduction the register design takes on llvmpipe before Mesa 25, whose shaders end
/// every loop after 65535 iterations in total ([`kernels::policy::loop_budget`]); longer ones run tiled.
const REGISTER_MAX_K_UNDER_LOOP_BUDGET: usize = 32768;

/// Validates and prepares the GEMM; record it with [`Prepared::encode`] or run it.
pub fn prepare(ctx: &Context, a: &Tensor, b: &Tensor, opts: &GemmOptions) -> Result<Prepared<Tensor>> {
    let shape = validate(ctx, a, b, opts)?;
    ctx.scoped("gemm setup", || {
        let out = match &opts.out {
            Some(t) => t.clone(),
            None => Tensor::zeros(ctx, &shape.out_shape(), a.dtype())?,
        };
        let (ab, ao) = kernels::bind_tensor(ctx, a, "a")?;
        let (bb, bo) = kernels::bind_tensor(ctx, b, "b")?;
        let (cb, co) = kernels::bind_tensor(ctx, &out, "out")?;
        let (biasb, bias_off) = match &opts.bias {
            Some(t) => kernels::bind_tensor(ctx, t, "bias")?,
            None => (kernels::unused_input(ctx), 0),
        };
        let mut f = 0;
        if opts.bias.is_some() {
            f |= flags::BIAS;
        }
        if opts.accumulate {
            f |= flags::ACCUMULATE;
        }
        match opts.activation {
            Activation::None => {}
            Activation::Tanh => f |= flags::TANH,
            Activation::Sigmoid => f |= flags::SIGMOID,
        }
        let gp = GemmParams {
            m: shape.m as u32,
            n: shape.n as u32,
            k: shape.k as u32,
            batch: shape.batch.iter().product::<usize>() as u32,
            inner: if shape.batch.len() == 2 {
                shape.batch[1] as u32
            } else {
                1
            },
            flags: f,
            alpha: opts.alpha,
            bias_off,
            a: matrix_strides(a, ao, opts.trans_a),
            b: matrix_strides(b, bo, opts.trans_b),
            c: matrix_strides(&out, co, false),
            post_scale: opts.post_scale,
        };
        let params = kernels::params_buffer(ctx, &gp);
        let buffers = [&ab, &bb, &cb, &biasb];
        // Old llvmpipe ends long loops silently; the register design loops once per k.
        let over_budget = kernels::policy::loop_budget(ctx) && shape.k > REGISTER_MAX_K_UNDER_LOOP_BUDGET;
        let design = match (opts.design, opts.tile) {
            (GemmDesign::Auto, Some(_)) => GemmDesign::Tiled,
            (GemmDesign::Auto, None) if over_budget => GemmDesign::Tiled,
            (d, _) => d.resolve_for(ctx, a.dtype()),
        };
        if let Some(why) = design.unsupported(ctx, a.dtype()) {
            return Err(Error::Unsupported(format!("GemmDesign::Coopmat: {why}")));
        }
        if design == GemmDesign::Register && over_budget {
            return Err(Error::Unsupported(format!(
                "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; the register GEMM design reduces over at most {REGISTER_MAX_K_UNDER_LOOP_BUDGET} elements (K = {}): use GemmDesign::Auto or Tiled",
                shape.k
            )));
        }
        let step = match design {
            GemmDesign::Register => kernels::gemm_register::step(ctx, a.dtype(), &gp, &params, buffers)?,
            GemmDesign::Coopmat => kernels::gemm_coopmat::step(ctx, a.dtype(), &gp, &params, buffers)?,
            _ => {
                let tile = opts.tile.unwrap_or_else(|| default_tile(shape.m, shape.n));
                kernels::gemm::step(ctx, tile, a.dtype(), &gp, &params, buffers)?
            }
        };
        let allocated = params.size() + if opts.out.is_none() { out.buffer().size() } else { 0 };
        let mut prepared = Prepared::new(ctx, out);
        prepared.push("gemm", vec![step], allocated, shape.flops());
        Ok(prepared)
    })
}
