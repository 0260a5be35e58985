//! Prefill of a ragged batch two ways: packed sequences ([`crate::attention_varlen()`]) against
//! the padded dense call (Q, K, V padded to the longest sequence, key lengths, bottom-right
//! alignment per sequence). Both compute the same rows; the padded call also runs the padding
//! query rows. With equal lengths the two do the same work, which isolates the cost of reading
//! the offsets on the GPU.

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
    /// `"varlen"` or `"padded"`.
    pub path: &'static str,
    /// Median milliseconds per call.
    pub median_ms: f64,
    /// Fastest milliseconds per call.
    pub min_ms: f64,
    /// GFLOP/s of the useful work (the sequences' own rows and keys, FlashAttention's count,
    /// halved for causal), the same numerator for both paths.
    pub gflops: f64,
}

/// Both paths on one batch, with the largest difference between their outputs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VarlenBenchReport {
    /// How times were measured.
    pub timer: TimerKind,
    /// The sequence lengths.
    pub lengths: Vec<u32>,
    /// Varlen first, then padded.
    pub rows: [VarlenBenchRow; 2],
    /// Largest |varlen − padded| over the sequences' rows of O.
    pub max_abs_diff: f64,
}

impl VarlenBenchReport {
    /// Median time of varlen over padded.
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

/// Times varlen and the padded dense call on the same sequences.
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
    // [B, H, L, D] with each sequence's rows copied in and zero padding.
    let pad = |x: &[f32], heads: usize| {
        let mut out = vec![0.0; b * heads * max * d];
        for (s, (&start, &len)) in cu.iter().zip(&o.lengths).enumerate() {
            for r in 0..len as usize {
                for h in 0..heads {
                    let src = ((start as usize + r) * heads + h) * d;
                    let dst = ((s * heads + h) * max + r) * d;
                    out[dst..dst + d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
        out
    };
    let seqs = Varlen::from_offsets(ctx, &cu, &cu)?;
    let pq = upload(ctx, &q, &[total, hq, d], o.dtype)?;
    let pkv = upload(ctx, &kv, &[total, hkv, d], o.dtype)?;
    let dq = upload(ctx, &pad(&q, hq), &[b, hq, max, d], o.dtype)?;
    let dkv = upload(ctx, &pad(&kv, hkv), &[b, hkv, max, d], o.dtype)?;
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
    let padded = Attention::new(ctx, &dq, &dkv, &dkv, &dense_opts)?;

    let timer = Timer::new(ctx)?;
    let useful: f64 = o
        .lengths
        .iter()
        .map(|&l| 4.0 * hq as f64 * l as f64 * l as f64 * d as f64)
        .sum::<f64>()
        / if o.causal.is_some() { 2.0 } else { 1.0 };
    // The two paths are sampled alternately, so that load from elsewhere on the machine falls on
    // both alike.
    let calls = [("varlen", &varlen), ("padded", &padded)];
    let mut runs = [1u32; 2];
    for (slot, (_, call)) in runs.iter_mut().zip(calls) {
        let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
            Some((set, i)) => call.encode_timed(enc, set, i),
            None => call.encode(enc),
        };
        *slot = timer.measure(o.warmup, 1, &mut record)?.runs_per_sample;
    }
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..o.iters.max(1) {
        for (i, (_, call)) in calls.iter().enumerate() {
            let mut record = |enc: &mut wgpu::CommandEncoder, stamps: Stamps| match stamps {
                Some((set, q)) => call.encode_timed(enc, set, q),
                None => call.encode(enc),
            };
            samples[i].push(timer.sample(runs[i], &mut record)?);
        }
    }
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
        }
    };
    let rows = [row(0), row(1)];
    let (vo, po) = (
        varlen.output().out.to_f32_vec(ctx)?,
        padded.output().out.to_f32_vec(ctx)?,
    );
    let mut max_abs_diff: f64 = 0.0;
    for (s, (&start, &len)) in cu.iter().zip(&o.lengths).enumerate() {
        for r in 0..len as usize {
            for h in 0..hq {
                let a = &vo[((start as usize + r) * hq + h) * d..][..d];
                let p = &po[((s * hq + h) * max + r) * d..][..d];
                for (x, y) in a.iter().zip(p) {
                    max_abs_diff = max_abs_diff.max((x - y).abs() as f64);
                }
            }
        }
    }
    Ok(VarlenBenchReport {
        timer: timer.kind(),
        lengths: o.lengths.clone(),
        rows,
        max_abs_diff,
    })
}
