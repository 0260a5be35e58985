//! Prefill of a ragged batch through packed sequences ([`crate::attention_varlen()`]) against
//! the padded dense call (each sequence padded to the longest, key lengths masking the padding
//! keys). Both compute the same rows; the padded call also computes the padding query rows. With
//! equal lengths they do the same work, which isolates the cost of the offsets read on the GPU.
//!
//! The padded call runs on two layouts: [B, L, H, D] (`padded`, FlashAttention's padded layout:
//! rows as far apart as in the packed [total, H, D] tensors, so the comparison is like for like)
//! and contiguous [B, H, L, D] (`padded-bhld`: each head's rows adjacent, which the packed layout
//! cannot offer).

use crate::attention::{Attention, Varlen};
use crate::bench_record::{check_plan, gather, reference_subset, CheckOptions, CheckPlan, Verdict, FULL_CHECK_MACS};
use crate::context::Context;
use crate::error::Result;
use crate::options::{Alignment, AttentionOptions, KernelChoice};
use crate::reference::{self, Tolerance};
use crate::tensor::{DType, Tensor};
use crate::timer::{Stamps, Timer, TimerKind, Timing};
use crate::Problem;

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
    /// Whether rows are compared with the reference, and the tolerance scale.
    pub check: CheckOptions,
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
    /// Largest |O − reference| over the checked rows of the sequences (the f64 CPU reference
    /// of each sequence alone).
    pub max_abs_err: Option<f64>,
    /// Whether the checked rows are within the tolerance (`None`: not checked).
    pub within_tolerance: Option<bool>,
    /// Which rows were compared: `all`, or the sequences and the heads and rows of each.
    pub checked: String,
    /// Whether every row of every sequence was compared.
    pub checked_in_full: bool,
    /// The tolerance of the check, `[abs, rel]`.
    pub tolerance: Option<[f64; 2]>,
}

/// Every path on one batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VarlenBenchReport {
    /// How times were measured.
    pub timer: TimerKind,
    /// The sequence lengths.
    pub lengths: Vec<u32>,
    /// Storage dtype.
    pub dtype: String,
    /// Varlen, padded [B, L, H, D], padded [B, H, L, D].
    pub rows: [VarlenBenchRow; 3],
}

impl VarlenBenchReport {
    /// Median time of varlen over the padded call on the same layout ([B, L, H, D]).
    pub fn ratio(&self) -> f64 {
        self.rows[0].median_ms / self.rows[1].median_ms
    }

    /// Adds the rows to a verdict: `varlen/padded f32 [5, 17, 3] Hq,Hkv,D causal=…`.
    pub fn add_to(&self, verdict: &mut Verdict, hq: usize, hkv: usize, d: usize, causal: &str) {
        for r in &self.rows {
            let label = format!(
                "varlen/{} {} {:?} {hq},{hkv},{d} causal={causal}",
                r.path, self.dtype, self.lengths
            );
            verdict.add(label, r.within_tolerance, r.checked_in_full);
        }
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
    let check = o.check.validated()?;
    // Rounded to the storage dtype, so that the reference reads what the GPU reads.
    let value = |i: usize| {
        let x = ((i * 7919) % 997) as f32 / 997.0 - 0.5;
        match o.dtype {
            DType::F16 => half::f16::from_f32(x).to_f32(),
            _ => x,
        }
    };
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
    // O of every path against the f64 reference of each sequence alone. Varlen writes O packed
    // [total, Hq, D]; both padded calls write a contiguous [B, Hq, L, D] tensor.
    let packed_at = |s: usize, h: usize, r: usize, heads: usize| ((cu[s] as usize + r) * heads + h) * d;
    let outputs: [(Vec<f32>, &RowAt<'_>); 3] = [
        (varlen.output().out.to_f32_vec(ctx)?, &packed_at),
        (padded.output().out.to_f32_vec(ctx)?, &bhld),
        (padded_bhld.output().out.to_f32_vec(ctx)?, &bhld),
    ];
    let tol = check.scale(Tolerance::of(o.dtype));
    let checks: Vec<Checked> = match check.enabled {
        false => vec![Checked::skipped(); 3],
        true => {
            let reference = SequenceReference::new(o, &cu, &q, &kv);
            outputs
                .iter()
                .map(|(out, at)| reference.check(|s, h, r| &out[at(s, h, r, hq)..][..d], tol))
                .collect()
        }
    };
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
            max_abs_err: checks[i].max_abs,
            within_tolerance: checks[i].within,
            checked: checks[i].label.clone(),
            checked_in_full: checks[i].in_full,
            tolerance: check.enabled.then_some([tol.abs, tol.rel]),
        }
    };
    Ok(VarlenBenchReport {
        timer: timer.kind(),
        lengths: o.lengths.clone(),
        dtype: o.dtype.name().into(),
        rows: [row(0), row(1), row(2)],
    })
}

/// Element offset of (sequence, head, row) in an output layout, given the heads per row.
type RowAt<'a> = dyn Fn(usize, usize, usize, usize) -> usize + 'a;

/// The outcome of one path's check.
#[derive(Debug, Clone)]
struct Checked {
    max_abs: Option<f64>,
    within: Option<bool>,
    label: String,
    in_full: bool,
}

impl Checked {
    fn skipped() -> Self {
        Self {
            max_abs: None,
            within: None,
            label: CheckOptions::SKIPPED.into(),
            in_full: false,
        }
    }
}

/// The reference outputs of the checked sequences: every sequence when the whole batch fits
/// [`FULL_CHECK_MACS`], else the first and last non-empty ones, each on the heads and rows of
/// its [`check_plan`].
struct SequenceReference {
    hq: usize,
    d: usize,
    /// (sequence, its problem, plan, reference output of the plan's elements).
    sequences: Vec<(usize, Problem, CheckPlan, Vec<f64>)>,
    label: String,
    in_full: bool,
}

impl SequenceReference {
    fn new(o: &VarlenBenchOptions, cu: &[u32], q: &[f32], kv: &[f32]) -> Self {
        let (hq, hkv, d) = (o.hq, o.hkv, o.d);
        let problem = |l: usize| Problem {
            b: 1,
            hq,
            hkv,
            lq: l,
            lk: l,
            dk: d,
            dv: d,
        };
        let total_macs: u64 = o
            .lengths
            .iter()
            .map(|&l| crate::bench_record::macs(&problem(l as usize)))
            .sum();
        let nonempty: Vec<usize> = (0..o.lengths.len()).filter(|&s| o.lengths[s] > 0).collect();
        let mut chosen = nonempty.clone();
        if total_macs > FULL_CHECK_MACS && nonempty.len() > 2 {
            chosen = vec![nonempty[0], nonempty[nonempty.len() - 1]];
        }
        // Sequence s as [1, H, L, D] host tensors.
        let heads_first = |x: &[f32], s: usize, heads: usize| -> Vec<f32> {
            let (start, len) = (cu[s] as usize, o.lengths[s] as usize);
            let mut out = Vec::with_capacity(heads * len * d);
            for h in 0..heads {
                for r in 0..len {
                    out.extend_from_slice(&x[((start + r) * heads + h) * d..][..d]);
                }
            }
            out
        };
        let opts = AttentionOptions {
            causal: o.causal.map(|_| Alignment::TopLeft),
            ..Default::default()
        };
        let sequences: Vec<_> = chosen
            .iter()
            .map(|&s| {
                let p = problem(o.lengths[s] as usize);
                let plan = check_plan(&p, Alignment::TopLeft);
                let (sq, skv) = (heads_first(q, s, hq), heads_first(kv, s, hkv));
                let expected = reference_subset(&p, [&sq, &skv, &skv], &opts, None, &plan);
                (s, p, plan, expected)
            })
            .collect();
        let in_full = chosen.len() == nonempty.len() && sequences.iter().all(|(_, _, plan, _)| plan.subset.is_none());
        let label = match in_full {
            true => "all".to_string(),
            false => {
                let parts: Vec<String> = sequences
                    .iter()
                    .map(|(s, _, plan, _)| format!("sequence {s}: {}", plan.label))
                    .collect();
                format!(
                    "{} of {} sequences ({})",
                    chosen.len(),
                    nonempty.len(),
                    parts.join("; ")
                )
            }
        };
        Self {
            hq,
            d,
            sequences,
            label,
            in_full,
        }
    }

    /// Compares a path's output, read through `row(sequence, head, row)` (the D values of one
    /// output row), with the reference.
    fn check<'o>(&self, row: impl Fn(usize, usize, usize) -> &'o [f32], tol: Tolerance) -> Checked {
        let (mut max_abs, mut within) = (0.0f64, true);
        for (s, p, plan, expected) in &self.sequences {
            let mut out = Vec::with_capacity(self.hq * p.lq * self.d);
            for h in 0..self.hq {
                for r in 0..p.lq {
                    out.extend_from_slice(row(*s, h, r));
                }
            }
            let c = reference::compare(&gather(p, &out, plan), expected, tol);
            max_abs = max_abs.max(c.max_abs);
            within &= c.ok();
        }
        Checked {
            max_abs: Some(max_abs),
            within: Some(within),
            label: self.label.clone(),
            in_full: self.in_full,
        }
    }
}
