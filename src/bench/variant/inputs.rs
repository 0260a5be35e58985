//! Named host inputs of a variant: read from a `.safetensors` file ([`read_inputs`]) or seeded at
//! random for a benchmark shape ([`random_inputs`]), with typed accessors for the members.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{mha, Variant};
use crate::attention::Problem;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::mha::MultiHeadAttention;
use crate::files::{self, HostData, HostTensor};
use crate::reference::Tolerance;
use crate::tensor::{DType, Tensor};

/// A seeded benchmark tensor: name, shape and fan-in (values are scaled by 1/√fan-in).
pub(super) type RandomTensor = (&'static str, Vec<usize>, usize);

/// Named host inputs of one variant (and, for `mha`, the layer).
#[derive(Debug, Clone)]
pub struct VariantInputs {
    variant: Variant,
    tensors: Vec<(String, HostTensor)>,
    layer: Option<MultiHeadAttention>,
}

impl VariantInputs {
    /// Inputs of `variant`; float tensors are converted to `dtype` (f32 or f16).
    pub fn new(variant: Variant, tensors: Vec<(String, HostTensor)>, dtype: DType) -> Self {
        let tensors = tensors.into_iter().map(|(n, t)| (n, t.converted(dtype))).collect();
        Self {
            variant,
            tensors,
            layer: None,
        }
    }

    /// Adds the multi-head attention layer (and host copies of its weights for the reference).
    pub fn with_layer(mut self, ctx: &Context, layer: MultiHeadAttention) -> Result<Self> {
        let w = layer.weights();
        for ((weight, bias), l) in mha::WEIGHTS.into_iter().zip([&w.q, &w.k, &w.v, &w.out]) {
            self.set(weight, HostTensor::download(ctx, &l.weight)?);
            if let Some(b) = &l.bias {
                self.set(bias, HostTensor::download(ctx, b)?);
            }
        }
        self.layer = Some(layer);
        Ok(self)
    }

    fn set(&mut self, name: &str, t: HostTensor) {
        match self.tensors.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = t,
            None => self.tensors.push((name.to_string(), t)),
        }
    }

    /// The variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }
    /// Tensor `name`, when present.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// The dtype of the first tensor (the variant's main input).
    pub fn dtype(&self) -> DType {
        self.tensors.first().map_or(DType::F32, |(_, t)| t.dtype())
    }
    /// The reference tolerance of [`VariantInputs::dtype`]: that of §1, or for variants whose
    /// GEMM stages chain into the attention or pooling (each stage rounds to the storage type
    /// before the next) the family tests' wider (1e-4, 1e-3) in f32 and (8e-3, 1.6e-2) in f16.
    pub fn tolerance(&self) -> Tolerance {
        match (self.dtype(), self.variant.chained()) {
            (DType::F16, false) => Tolerance::F16,
            (DType::F16, true) => Tolerance { abs: 8e-3, rel: 1.6e-2 },
            (_, false) => Tolerance::F32,
            (_, true) => Tolerance { abs: 1e-4, rel: 1e-3 },
        }
    }
    /// Bytes of every input tensor (weights included).
    pub fn bytes(&self) -> u64 {
        let size = |t: &HostTensor| (t.shape.iter().product::<usize>() * t.dtype().size()) as u64;
        self.tensors.iter().map(|(_, t)| size(t)).sum()
    }

    /// The shapes of the variant's own tensors (and the heads of `mha`), e.g. `c[4,16,8], g[4,16,8]`.
    pub fn describe(&self) -> String {
        let v = self.variant;
        let mut parts: Vec<String> = v
            .required_tensors()
            .iter()
            .chain(v.optional_tensors())
            .filter_map(|&n| self.get(n).map(|t| format!("{n}{:?}", t.shape).replace(' ', "")))
            .collect();
        if let Some(layer) = &self.layer {
            let (hq, hkv, dh) = layer.heads();
            parts.push(format!("heads {hq}/{hkv} of dim {dh}"));
        }
        parts.join(", ")
    }

    pub(crate) fn require(&self, name: &'static str) -> Result<&HostTensor> {
        self.get(name)
            .ok_or_else(|| Error::Unsupported(format!("--variant {} needs the input tensor {name:?}", self.variant)))
    }

    pub(super) fn dims<const N: usize>(&self, name: &'static str) -> Result<[usize; N]> {
        let t = self.require(name)?;
        t.shape.as_slice().try_into().map_err(|_| Error::Rank {
            name,
            expected: N,
            shape: t.shape.clone(),
        })
    }

    pub(super) fn floats(&self, name: &'static str) -> Result<Vec<f32>> {
        let t = self.require(name)?;
        t.to_f32().ok_or(Error::DType {
            name,
            got: t.dtype(),
            expected: "f32 or f16",
        })
    }

    pub(super) fn optional_floats(&self, name: &'static str) -> Result<Option<Vec<f32>>> {
        self.get(name).map(|_| self.floats(name)).transpose()
    }

    pub(super) fn optional_bools(&self, name: &'static str) -> Result<Option<Vec<bool>>> {
        let Some(t) = self.get(name) else {
            return Ok(None);
        };
        match &t.data {
            HostData::Bool(v) => Ok(Some(v.clone())),
            _ => Err(Error::DType {
                name,
                got: t.dtype(),
                expected: "bool (true = takes part)",
            }),
        }
    }

    /// A mask or bias with its broadcast shape [B|1, H|1, Lq, Lk].
    pub(super) fn broadcast<T>(
        &self,
        name: &'static str,
        data: impl Fn(&'static str) -> Result<Option<Vec<T>>>,
    ) -> Result<Option<(Vec<T>, [usize; 4])>> {
        Ok(data(name)?.zip(self.get(name).map(|t| files::broadcast_shape(&t.shape))))
    }

    pub(super) fn upload(&self, ctx: &Context, name: &'static str) -> Result<Tensor> {
        self.require(name)?.upload(ctx)
    }

    pub(super) fn upload_optional(&self, ctx: &Context, name: &'static str) -> Result<Option<Tensor>> {
        self.get(name).map(|t| t.upload(ctx)).transpose()
    }

    pub(super) fn layer(&self) -> Result<&MultiHeadAttention> {
        self.layer.as_ref().ok_or_else(|| {
            Error::Unsupported("--variant mha needs the layer's weights (VariantInputs::with_layer)".into())
        })
    }
}

/// Reads the inputs of `variant` from a `.safetensors` file (names in [`super::run_help`]);
/// float tensors take `dtype`, or the dtype of the first one when `None`. For `mha` the layer's
/// weights are read too; add the layer with [`super::with_layer_from_inputs`].
pub fn read_inputs(path: &Path, variant: Variant, dtype: Option<DType>) -> Result<VariantInputs> {
    let bytes = files::read_all(path)?;
    let names = files::safetensors_names(path, &bytes)?;
    let has = |n: &str| names.iter().any(|x| x == n);
    if let Some(missing) = variant.required_tensors().iter().find(|n| !has(n)) {
        return Err(files::bad(
            path,
            format!("needs a tensor named {missing:?} (the file has: {})", names.join(", ")),
        ));
    }
    let layer: &[&str] = match variant {
        Variant::Mha => &mha::FILE_WEIGHTS,
        _ => &[],
    };
    let tensors = variant
        .required_tensors()
        .iter()
        .chain(variant.optional_tensors())
        .chain(layer)
        .filter(|n| has(n))
        .map(|&n| Ok((n.to_string(), files::read_safetensors_bytes(path, &bytes, n)?)))
        .collect::<Result<Vec<_>>>()?;
    let dtype = dtype.unwrap_or(match tensors.first().map(|(_, t)| t.dtype()) {
        Some(DType::F16) => DType::F16,
        _ => DType::F32,
    });
    Ok(VariantInputs::new(variant, tensors, dtype))
}

/// Seeded inputs of `variant` for a benchmark shape (the mapping of [`super::bench_help`]):
/// values in [-1, 1], weights scaled by 1/√fan-in, rounded to `dtype`. `da` is the hidden size of
/// additive, local-p and han-pool.
pub fn random_inputs(
    ctx: &Context,
    variant: Variant,
    p: &Problem,
    da: usize,
    dtype: DType,
    seed: u64,
) -> Result<VariantInputs> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut specs: Vec<RandomTensor> = Vec::new();
    if variant.required_tensors().starts_with(&["q", "k", "v"]) {
        let [qs, ks, vs] = p.qkv_shapes();
        specs.extend([("q", qs.to_vec(), 1), ("k", ks.to_vec(), 1), ("v", vs.to_vec(), 1)]);
    }
    specs.extend((variant.spec().random)(p, da)?);
    let tensors = specs
        .into_iter()
        .map(|(name, shape, fan_in)| {
            let scale = 1.0 / (fan_in as f32).sqrt();
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect();
            let host = HostTensor {
                shape,
                data: HostData::F32(data),
            };
            (name.to_string(), host)
        })
        .collect();
    let inputs = VariantInputs::new(variant, tensors, dtype);
    match variant {
        Variant::Mha => mha::with_random_layer(ctx, inputs, p),
        _ => Ok(inputs),
    }
}
