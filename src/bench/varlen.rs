//! Prefill of a ragged batch through packed sequences ([`crate::attention_varlen()`]) against
//! the padded dense call (each sequence padded to the longest, key lengths masking the padding
//! keys). Both compute the same rows; the padded call also computes the padding query rows. With
//! equal lengths they do the same work, which isolates the cost of the offsets read on the GPU.
//!
//! The padded call runs on two layouts: [B, L, H, D] (`padded`, FlashAttention's padded layout:
//! rows as far apart as in the packed [total, H, D] tensors, so the comparison is like for like)
//! and contiguous [B, H, L, D] (`padded-bhld`: each head's rows adjacent, which the packed layout
//! cannot offer).

use super::timer::{Stamps, Timer, TimerKind, Timing};
use crate::attention::{Attention, Varlen};
use crate::context::Context;
use crate::error::Result;
use crate::options::{Alignment, AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// What [`bench_varlen`] measures.
#[derive(Debug, Clone)]
pub struct VarlenBenchOptions {
    /// Length of each sequence (queries = keys: prefill).
    pub lengths: Vec<u32>,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Head dim (Dk = Dv).
    pub d: usize,
    /// Causal alignment (per sequence), or none.
    pub causal: Option<Alignment>,
    /// Storage dtype.
    pub dtype: DType,
    /// Unmeasured samples.
    pub warmup: u32,
    /// Measured samples.
    pub iters: u32,
}

/// One measured path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VarlenBenchRow {
    /// `"varlen"`, `"padded"` ([B, L, H, D]) or `"padded-bhld"` ([B, H, L, D]).
    pub path: &'static str,
    /// Median milliseconds per call.
    pub median_ms: f64,
    /// Fastest milliseconds per call.
    pub min_ms: f64,
    /// GFLOP/s of the useful work (the sequences' own rows and keys, FlashAttention's count,
    /// halved for causal), the same numerator for every path.
    pub gflops: f64,
    /// Largest |O − O of varlen| over the sequences' rows (0 for varlen itself).
    pub max_abs_diff: f64,
}

/// Every path on one batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VarlenBenchReport {
    /// How times were measured.
    pub timer: TimerKind,
    /// The sequence lengths.
    pub lengths: Vec<u32>,
    /// Varlen, padded [B, L, H, D], padded [B, H, L, D].
    pub rows: [VarlenBenchRow; 3],
}

impl VarlenBenchReport {
    /// Median time of varlen over the padded call on the same layout ([B, L, H, D]).
    pub fn ratio(&self) -> f64 {
        self.rows[0].median_ms / self.rows[1].median_ms
    }
}

fn upload(ctx: &Context, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::F16 => {
            let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            Tensor::from_slice(ctx, &h, shape)
        }
        _ => Tensor::from_slice(ctx, data, shape),
    }
}

/// Times varlen and the padded dense calls on the same sequences, sampled alternately so that
/// load from elsewhere on the machine falls on every path alike.
pub fn bench_varlen(ctx: &Context, o: &VarlenBenchOptions) -> Result<VarlenBenchReport> {
    let b = o.lengths.len();
    let (hq, hkv, d) = (o.hq, o.hkv, o.d);
    let max = o.lengths.iter().copied().max().unwrap_or(0) as usize;
    let total: usize = o.lengths.iter().map(|&l| l as usize).sum();
    let mut cu = vec![0u32];
    for &l in &o.lengths {
        cu.push(cu.last().copied().unwrap_or(0) + l);
    }
    let value = |i: usize| ((i * 7919) % 997) as f32 / 997.0 - 0.5;
    let packed = |heads: usize| -> Vec<f32> { (0..total * heads * d).map(value).collect() };
    let (q, kv) = (packed(hq), packed(hkv));
    // Element offset of row r of sequence s, head h in the padded layouts.
    let blhd = |s: usize, h: usize, r: usize, heads: usize| ((s * max + r) * heads + h) * d;
    let bhld = |s: usize, h: usize, r: usize, heads: usize| ((s * heads + h) * max + r) * d;
    let pad = |x: &[f32], heads: usize, at: &dyn Fn(usize, usize, usize, usize) -> usize| {
        let mut out = vec![0.0; b * heads * max * d];
        for (s, (&start, &len)) in cu.iter().zip(&o.lengths).enumerate() {
            for r in 0..len as usize {
                for h in 0..heads {
                    let src = ((start as usize + r) * heads + h) * d;
                    out[at(s, h, r, heads)..][..d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
        out
    };
    let seqs = Varlen::from_offsets(ctx, &cu, &cu)?;
    let pq = upload(ctx, &q, &[total, hq, d], o.dtype)?;
    let pkv = upload(ctx, &kv, &[total, hkv, d], o.dtype)?;
    let opts = AttentionOptions {
        causal: o.causal,
        kernel: KernelChoice::Fused,
        ..Default::default()
    };
    let varlen = Attention::varlen(ctx, &pq, &pkv, &pkv, &seqs, &opts)?;
    // Prefill (len_q = len_k per sequence): bottom-right and top-left coincide within each
    // sequence, and top-left is what the padded call (queries padded at the end) computes for
    // every sequence's rows.
    let dense_opts = AttentionOptions {
        key_lengths: Some(Tensor::from_slice(ctx, &o.lengths, &[b])?),
        causal: o.causal.map(|_| Alignment::TopLeft),
        ..opts
    };
    let view = |x: Vec<f32>, heads: usize| -> Result<Tensor> {
        let t = upload(ctx, &x, &[x.len()], o.dtype)?;
        Tensor::from_blhd(t.buffer(), 0, [b, max, heads, d], o.dtype)
    };
    let lq = view(pad(&q, hq, &blhd), hq)?;
    let lkv = view(pad(&kv, hkv, &blhd), hkv)?;
    let padded = Attention::new(ctx, &lq, &lkv, &lkv, &dense_opts)?;
    let dq = upload(ctx, &pad(&q, hq, &bhld), &[b, hq, max, d], o.dtype)?;
    let dkv = upload(ctx, &pad(&kv, hkv, &bhld), &[b, hkv, max, d], o.dtype)?;
    let padded_bhld = Attention::new(ctx, &dq, &dkv, &dkv, &dense_opts)?;

    let timer = Timer::new(ctx)?;
    let useful: f64 = o
        .lengths
        .iter()
        .map(|&l| 4.0 * hq as f64 * l as f64 * l as f64 * d as f64)
        .sum::<f64>()
        / if o.causal.is_some() { 2.0 } else { 1.0 };
    let calls = [("varlen", &varlen), ("padded", &padded), ("padded-bhld", &padded_bhld)];
    let mut runs = [1u32; 3];
    for (slot, (_, call)) in runs.iter_mut().zip(calls) {
        let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
            Some((set, i)) => call.encode_timed(enc, set, i),
            None => call.encode(enc),
        };
        *slot = timer.measure(o.warmup, 1, &mut record)?.runs_per_sample;
    }
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..o.iters.max(1) {
        for (i, (_, call)) in calls.iter().enumerate() {
            let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
                Some((set, q)) => call.encode_timed(enc, set, q),
                None => call.encode(enc),
            };
            samples[i].push(timer.sample(runs[i], &mut record)?);
        }
    }
    // O of every path on the sequences' rows, against varlen's.
    let vo = varlen.output().out.to_f32_vec(ctx)?;
    let diff = |o_dense: &[f32], at: &dyn Fn(usize, usize, usize, usize) -> usize| {
        let mut m: f64 = 0.0;
        for (s, (&start, &len)) in cu.iter().zip(&o.lengths).enumerate() {
            for r in 0..len as usize {
                for h in 0..hq {
                    let a = &vo[((start as usize + r) * hq + h) * d..][..d];
                    for (x, y) in a.iter().zip(&o_dense[at(s, h, r, hq)..][..d]) {
                        m = m.max((x - y).abs() as f64);
                    }
                }
            }
        }
        m
    };
    // Both padded calls write O as a contiguous [B, H, L, D] tensor.
    let diffs = [
        0.0,
        diff(&padded.output().out.to_f32_vec(ctx)?, &bhld),
        diff(&padded_bhld.output().out.to_f32_vec(ctx)?, &bhld),
    ];
    let row = |i: usize| {
        let t = Timing {
            per_run_s: samples[i].clone(),
            runs_per_sample: runs[i],
        };
        VarlenBenchRow {
            path: calls[i].0,
            median_ms: t.median_s() * 1e3,
            min_ms: t.min_s() * 1e3,
            gflops: useful / t.median_s() * 1e-9,
            max_abs_diff: diffs[i],
        }
    };
    Ok(VarlenBenchReport {
        timer: timer.kind(),
        lengths: o.lengths.clone(),
        rows: [row(0), row(1), row(2)],
    })
}
