//! Multi-head attention (docs/ATTENTION.md §8, Vaswani et al. 2017) built from the crate's GEMM and
//! attention kernels: Q = X_q W_qᵀ + b_q, K = X_kv W_kᵀ + b_k, V = X_kv W_vᵀ + b_v, split into heads
//! (Hkv ≤ Hq: GQA/MQA), §1 per head, heads concatenated, output O W_oᵀ + b_o.
//!
//! Nothing is copied between the steps: the projections write [B, L, H·Dh] buffers that the
//! attention kernel reads as [B, H, L, Dh] views, and it writes its output straight into the
//! concatenated-heads layout the output projection reads.
//!
//! Weights are owned or borrowed tensors ([`Tensor::from_buffer`] wraps your buffers) or loaded
//! from a `.safetensors` file ([`MultiHeadAttention::from_safetensors`]) with the Hugging Face
//! names `q_proj.weight`, `q_proj.bias`, `k_proj.*`, `v_proj.*`, `out_proj.weight`,
//! `out_proj.bias` (biases optional), or PyTorch `nn.MultiheadAttention`'s packed
//! `in_proj_weight` [3E, E], `in_proj_bias` \[3E\] plus `out_proj.*`.

use crate::attention::{Attention, AttentionOutput};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::family::{expect_dtype, expect_rank, expect_shape};
use crate::gemm::{self, GemmOptions};
use crate::options::AttentionOptions;
use crate::prepared::Prepared;
use crate::tensor::{DType, Tensor};

/// A linear layer y = x Wᵀ + b (PyTorch layout: weight [out, in]).
#[derive(Debug, Clone)]
pub struct Linear {
    /// W [out, in].
    pub weight: Tensor,
    /// b \[out\].
    pub bias: Option<Tensor>,
}

/// The four projections.
#[derive(Debug, Clone)]
pub struct MhaWeights {
    /// Query projection [Hq·Dh, E].
    pub q: Linear,
    /// Key projection [Hkv·Dh, E_kv].
    pub k: Linear,
    /// Value projection [Hkv·Dh, E_kv].
    pub v: Linear,
    /// Output projection [E_out, Hq·Dh].
    pub out: Linear,
}

/// Options of [`MultiHeadAttention::forward`].
#[derive(Debug, Clone, Default)]
pub struct MhaOptions {
    /// Options of the per-head attention: `causal` (decoder mask), `key_lengths`, `mask`,
    /// `window`, `dropout`, `scale` (default 1/√Dh)… `out`, `return_weights` and
    /// `return_lse` are managed by the module.
    pub attention: AttentionOptions,
    /// Key padding mask [B, Lk] (bool, **true = the key takes part**, the crate's polarity; PyTorch's
    /// `key_padding_mask` uses true = ignore). Not combinable with `attention.mask`.
    pub key_padding_mask: Option<Tensor>,
    /// Also return the attention weights averaged over heads [B, Lq, Lk] (runs the staged path).
    pub average_weights: bool,
}

/// Outputs of [`MultiHeadAttention::forward`].
#[derive(Debug, Clone)]
pub struct MhaOutput {
    /// [B, Lq, E_out].
    pub out: Tensor,
    /// Head-averaged weights [B, Lq, Lk] (f32), when requested.
    pub weights: Option<Tensor>,
}

/// A multi-head attention layer.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    weights: MhaWeights,
    heads_q: usize,
    heads_kv: usize,
    head_dim: usize,
}

impl MultiHeadAttention {
    /// Checks the weight shapes against the head counts: W_q [Hq·Dh, E], W_k and W_v
    /// [Hkv·Dh, E_kv], W_o [E_out, Hq·Dh], biases \[out\].
    pub fn new(weights: MhaWeights, heads_q: usize, heads_kv: usize) -> Result<Self> {
        if heads_q == 0 || heads_kv == 0 || !heads_q.is_multiple_of(heads_kv) {
            return Err(Error::HeadRatio {
                hq: heads_q,
                hkv: heads_kv,
            });
        }
        let wq = expect_rank("q_proj.weight", &weights.q.weight, 2)?;
        if !wq[0].is_multiple_of(heads_q) {
            return Err(Error::InvalidOption {
                name: "heads_q",
                value: heads_q as f64,
                why: "must divide the rows of q_proj.weight (Hq · head dim)",
            });
        }
        let head_dim = wq[0] / heads_q;
        let e_kv = expect_rank("k_proj.weight", &weights.k.weight, 2)?[1];
        expect_shape("k_proj.weight", &weights.k.weight, &[heads_kv * head_dim, e_kv])?;
        expect_shape("v_proj.weight", &weights.v.weight, &[heads_kv * head_dim, e_kv])?;
        let e_out = expect_rank("out_proj.weight", &weights.out.weight, 2)?[0];
        expect_shape("out_proj.weight", &weights.out.weight, &[e_out, heads_q * head_dim])?;
        let dtype = weights.q.weight.dtype();
        for (name, l) in [
            ("q_proj", &weights.q),
            ("k_proj", &weights.k),
            ("v_proj", &weights.v),
            ("out_proj", &weights.out),
        ] {
            expect_dtype(name, &l.weight, dtype)?;
            if let Some(b) = &l.bias {
                expect_shape(name, b, &[l.weight.shape()[0]])?;
                expect_dtype(name, b, dtype)?;
            }
        }
        Ok(Self {
            weights,
            heads_q,
            heads_kv,
            head_dim,
        })
    }

    /// Loads the weights from a `.safetensors` file (names in the module docs) and uploads them
    /// (feature `files`).
    #[cfg(all(feature = "files", not(target_arch = "wasm32")))]
    pub fn from_safetensors(ctx: &Context, path: &std::path::Path, heads_q: usize, heads_kv: usize) -> Result<Self> {
        use crate::files::{bad, check_safetensors, read_all, read_safetensors_bytes};
        check_safetensors(path, ctx.limits().max_buffer_size)?;
        let bytes = read_all(path)?;
        let names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(path, format!("not a valid .safetensors file ({e})")))?
            .names()
            .into_iter()
            .map(|n| n.to_string())
            .collect();
        let load = |name: &str| -> Result<Tensor> { read_safetensors_bytes(path, &bytes, name)?.upload(ctx) };
        let optional = |name: &str| -> Result<Option<Tensor>> {
            match names.iter().any(|n| n == name) {
                true => load(name).map(Some),
                false => Ok(None),
            }
        };
        let linear = |prefix: &str| -> Result<Linear> {
            Ok(Linear {
                weight: load(&format!("{prefix}.weight"))?,
                bias: optional(&format!("{prefix}.bias"))?,
            })
        };
        let out = linear("out_proj")?;
        let (q, k, v) = if names.iter().any(|n| n == "in_proj_weight") {
            // Packed [3E, E] (PyTorch): rows [0, E) query, [E, 2E) key, [2E, 3E) value.
            let w = load("in_proj_weight")?;
            let b = optional("in_proj_bias")?;
            let ws = expect_rank("in_proj_weight", &w, 2)?.to_vec();
            if ws[0] % 3 != 0 {
                return Err(Error::ShapeMismatch {
                    name: "in_proj_weight",
                    expected: vec![3 * ws[1], ws[1]],
                    got: ws,
                });
            }
            let rows = ws[0] / 3;
            let part = |i: usize| -> Result<Linear> {
                Ok(Linear {
                    weight: w.view(i * rows * ws[1], &[rows, ws[1]], &[ws[1], 1])?,
                    bias: match &b {
                        Some(b) => Some(b.view(i * rows, &[rows], &[1])?),
                        None => None,
                    },
                })
            };
            (part(0)?, part(1)?, part(2)?)
        } else {
            (linear("q_proj")?, linear("k_proj")?, linear("v_proj")?)
        };
        Self::new(MhaWeights { q, k, v, out }, heads_q, heads_kv)
    }

    /// The weights.
    pub fn weights(&self) -> &MhaWeights {
        &self.weights
    }
    /// (Hq, Hkv, Dh).
    pub fn heads(&self) -> (usize, usize, usize) {
        (self.heads_q, self.heads_kv, self.head_dim)
    }

    /// Attention of x_q [B, Lq, E] over x_kv [B, Lk, E_kv] (pass the same tensor twice for
    /// self-attention, an encoder's memory for cross-attention). Phases: "projections",
    /// "attention", "output projection" (and "weights average").
    pub fn forward(
        &self,
        ctx: &Context,
        x_q: &Tensor,
        x_kv: &Tensor,
        opts: &MhaOptions,
    ) -> Result<Prepared<MhaOutput>> {
        let qs = expect_rank("x_q", x_q, 3)?.to_vec();
        let ks = expect_rank("x_kv", x_kv, 3)?.to_vec();
        let (b, lq, lk) = (qs[0], qs[1], ks[1]);
        let (hq, hkv, dh) = (self.heads_q, self.heads_kv, self.head_dim);
        let w = &self.weights;
        expect_shape("x_q", x_q, &[b, lq, w.q.weight.shape()[1]])?;
        expect_shape("x_kv", x_kv, &[b, lk, w.k.weight.shape()[1]])?;
        let a = &opts.attention;
        if a.out.is_some() || a.return_weights || a.return_lse {
            return Err(Error::InvalidOption {
                name: "attention",
                value: f64::NAN,
                why: "out, return_weights and return_lse are managed by the module (use average_weights)",
            });
        }
        let mut call = Prepared::new(ctx, ());
        let project = |x: &Tensor, l: &Linear| {
            let o = GemmOptions {
                trans_b: true,
                bias: l.bias.clone(),
                ..Default::default()
            };
            gemm::prepare(ctx, x, &l.weight, &o)
        };
        // [B, L, H·Dh] buffers viewed as [B, H, L, Dh].
        let heads = |t: &Tensor, l: usize, h: usize| t.view(0, &[b, h, l, dh], &[l * h * dh, dh, h * dh, 1]);
        let q = heads(&call.absorb("projections", project(x_q, &w.q)?), lq, hq)?;
        let k = heads(&call.absorb("projections", project(x_kv, &w.k)?), lk, hkv)?;
        let v = heads(&call.absorb("projections", project(x_kv, &w.v)?), lk, hkv)?;
        let concat = Tensor::zeros(ctx, &[b, lq, hq * dh], x_q.dtype())?;
        let mut attn = AttentionOptions {
            out: Some(heads(&concat, lq, hq)?),
            return_weights: opts.average_weights,
            ..a.clone()
        };
        if let Some(m) = &opts.key_padding_mask {
            if a.mask.is_some() {
                return Err(Error::Unsupported(
                    "key_padding_mask and attention.mask together: fold one into the other".into(),
                ));
            }
            expect_shape("key_padding_mask", m, &[b, lk])?;
            expect_dtype("key_padding_mask", m, DType::Bool)?;
            attn.mask = Some(m.view(0, &[b, 1, lq, lk], &[m.strides()[0], 0, 0, m.strides()[1]])?);
        }
        let attention: AttentionOutput = call.absorb(
            "attention",
            Attention::new(ctx, &q, &k, &v, &attn)?.into_prepared("attention"),
        );
        let weights = match attention.weights {
            Some(p) => {
                // Mean over heads as a GEMM: [1, Hq] of 1/Hq times P[b] viewed [Hq, Lq·Lk].
                let ones = Tensor::from_slice(ctx, &vec![1.0f32 / hq as f32; hq], &[1, hq])?;
                let p = p.view(0, &[b, hq, lq * lk], &[hq * lq * lk, lq * lk, 1])?;
                let mean = call.absorb(
                    "weights average",
                    gemm::prepare(ctx, &ones, &p, &GemmOptions::default())?,
                );
                Some(mean.reshape(&[b, lq, lk])?)
            }
            None => None,
        };
        let out = call.absorb("output projection", project(&concat, &w.out)?);
        Ok(call.with_output(MhaOutput { out, weights }))
    }
}
