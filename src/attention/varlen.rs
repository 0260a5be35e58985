//! Variable-length (packed) attention, docs/ATTENTION.md §1c: ragged sequences packed row after
//! row with no padding, their boundaries given by offset tensors (`cu_seqlens`) that stay on the
//! GPU. Runs on the fused kernel in one dispatch: each (sequence, head, query block) workgroup
//! reads its sequence's offsets from the GPU, skips blocks past its queries and addresses the
//! packed rows from those offsets (clamped to the tensors, so inconsistent offsets never reach
//! outside them).

use super::params::base_params;
use super::plan::storage_buffer;
use super::validate::{check_alibi, check_out, check_rows_contiguous, check_scalar_options};
use super::{Attention, AttentionOutput, Problem, Tuning};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::kernels::{self, flags, BoundBuffer, Strides};
use crate::options::{Alignment, AttentionOptions, KernelChoice};
use crate::tensor::{DType, Tensor};

/// The sequences of a packed batch: B + 1 nondecreasing offsets per side (`cu_seqlens`, first 0)
/// and the longest query and key sequence. Sequence b's queries are rows
/// `cu_seqlens_q[b] .. cu_seqlens_q[b + 1]` of the packed Q and O, its keys rows
/// `cu_seqlens_k[b] .. cu_seqlens_k[b + 1]` of the packed K and V.
///
/// Built from GPU-resident offsets with [`Varlen::new`] (nothing is read back: the host checks
/// their shape and dtype, the kernel clamps every offset to the packed tensors), or from host
/// offsets with [`Varlen::from_offsets`], which uploads them, checks them fully and computes the
/// longest sequences.
#[derive(Debug, Clone)]
pub struct Varlen {
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: usize,
    max_seqlen_k: usize,
    /// The offsets as given on the host (checked against the packed tensors' rows by each call).
    host: Option<(Vec<u32>, Vec<u32>)>,
}

impl Varlen {
    /// GPU-resident offsets: `cu_seqlens_q` and `cu_seqlens_k` are u32 tensors of shape \[B + 1\];
    /// `max_seqlen_q` / `max_seqlen_k` bound every sequence's query / key length.
    ///
    /// The query bound sizes the dispatch: query rows of a sequence past `max_seqlen_q` are not
    /// computed (their O and LSE are not written). Key lengths are read from the offsets, the
    /// key bound sizes the tile choice and, on CPU drivers, must not exceed
    /// [`crate::kernels::flash_forward::CPU_MAX_KEYS`] (their shader loops end after a fixed
    /// iteration budget). Offsets that decrease or exceed the packed tensors
    /// are clamped on the GPU: such a sequence covers fewer rows, nothing is read or written
    /// outside the tensors.
    pub fn new(cu_seqlens_q: Tensor, cu_seqlens_k: Tensor, max_seqlen_q: usize, max_seqlen_k: usize) -> Self {
        Self {
            cu_seqlens_q,
            cu_seqlens_k,
            max_seqlen_q,
            max_seqlen_k,
            host: None,
        }
    }

    /// Host offsets, uploaded: both slices hold B + 1 nondecreasing offsets starting at 0
    /// ([`Error::SeqOffsets`] otherwise); the longest sequences are computed from them. Each call
    /// also checks that the last offsets do not exceed the packed tensors' rows.
    ///
    /// ```
    /// # fn main() -> Result<(), wgpu_attention::Error> {
    /// use wgpu_attention::{Context, Varlen};
    /// let ctx = Context::new()?;
    /// // Three sequences of 5, 0 and 3 queries, attending to 7, 2 and 3 keys.
    /// let seqs = Varlen::from_offsets(&ctx, &[0, 5, 5, 8], &[0, 7, 9, 12])?;
    /// assert_eq!((seqs.batch(), seqs.max_seqlen_q(), seqs.max_seqlen_k()), (3, 5, 7));
    /// # Ok(()) }
    /// ```
    pub fn from_offsets(ctx: &Context, cu_seqlens_q: &[u32], cu_seqlens_k: &[u32]) -> Result<Self> {
        let max_q = check_host_offsets("cu_seqlens_q", cu_seqlens_q)?;
        let max_k = check_host_offsets("cu_seqlens_k", cu_seqlens_k)?;
        if cu_seqlens_q.len() != cu_seqlens_k.len() {
            return Err(Error::ShapeMismatch {
                name: "cu_seqlens_k",
                expected: vec![cu_seqlens_q.len()],
                got: vec![cu_seqlens_k.len()],
            });
        }
        Ok(Self {
            cu_seqlens_q: Tensor::from_slice(ctx, cu_seqlens_q, &[cu_seqlens_q.len()])?,
            cu_seqlens_k: Tensor::from_slice(ctx, cu_seqlens_k, &[cu_seqlens_k.len()])?,
            max_seqlen_q: max_q,
            max_seqlen_k: max_k,
            host: Some((cu_seqlens_q.to_vec(), cu_seqlens_k.to_vec())),
        })
    }

    /// Number of sequences B (0 when the query offsets are not a non-empty vector).
    pub fn batch(&self) -> usize {
        self.cu_seqlens_q.shape().first().map_or(0, |n| n.saturating_sub(1))
    }
    /// Query offsets \[B + 1\] (u32).
    pub fn cu_seqlens_q(&self) -> &Tensor {
        &self.cu_seqlens_q
    }
    /// Key offsets \[B + 1\] (u32).
    pub fn cu_seqlens_k(&self) -> &Tensor {
        &self.cu_seqlens_k
    }
    /// The longest query sequence.
    pub fn max_seqlen_q(&self) -> usize {
        self.max_seqlen_q
    }
    /// The longest key sequence.
    pub fn max_seqlen_k(&self) -> usize {
        self.max_seqlen_k
    }
    /// The host offsets (query, key), when built with [`Varlen::from_offsets`].
    pub fn host_offsets(&self) -> Option<(&[u32], &[u32])> {
        self.host.as_ref().map(|(q, k)| (q.as_slice(), k.as_slice()))
    }
}

/// Checks B + 1 ≥ 1 offsets: first 0, nondecreasing. Returns the longest sequence.
fn check_host_offsets(name: &'static str, cu: &[u32]) -> Result<usize> {
    match cu.first() {
        None => {
            return Err(Error::SeqOffsets {
                name,
                why: "needs B + 1 offsets (at least one, the leading 0)".into(),
            })
        }
        Some(&first) if first != 0 => {
            return Err(Error::SeqOffsets {
                name,
                why: format!("the first offset must be 0, got {first}"),
            })
        }
        Some(_) => {}
    }
    let mut longest = 0;
    for (b, w) in cu.windows(2).enumerate() {
        if w[1] < w[0] {
            return Err(Error::SeqOffsets {
                name,
                why: format!("offsets must not decrease: entry {} is {} after {}", b + 1, w[1], w[0]),
            });
        }
        longest = longest.max((w[1] - w[0]) as usize);
    }
    Ok(longest)
}

/// Runs attention over packed variable-length sequences (docs/ATTENTION.md §1c) and returns O
/// \[total_q, Hq, Dv\] (dtype of Q) and, with `return_lse`, LSE \[Hq, total_q\] (f32). One
/// submission; returns without waiting for the GPU.
///
/// Q is \[total_q, Hq, Dk\], K \[total_k, Hkv, Dk\], V \[total_k, Hkv, Dv\] (any strides with a
/// contiguous last dim); `seqs` gives the sequences. Each sequence is §1 on its own rows: causal
/// masks and windows are aligned per sequence (bottom-right: query i of sequence b sits at
/// i + len_k(b) − len_q(b); top-left: at i), dropout is keyed by (b, h, i, j) with i, j
/// positions within the sequence. Options: scale, soft cap, causal, window, dropout, LSE,
/// zero-score masking and `out` (\[total_q, Hq, Dv\]) apply; a bias, a boolean mask, key lengths
/// (the key offsets give them), weights and the staged and decode kernels are refused with
/// [`Error::Unsupported`].
///
/// Edges: a sequence with no keys gives O = 0 and LSE = −∞ on its rows; one with no queries
/// writes nothing; B = 0, total_q = 0 or `max_seqlen_q` = 0 dispatch nothing. Rows of Q outside
/// every sequence are not written.
///
/// ```
/// # fn main() -> Result<(), wgpu_attention::Error> {
/// use wgpu_attention::{attention_varlen, Alignment, AttentionOptions, Context, Tensor, Varlen};
/// let ctx = Context::new()?;
/// let (h, d) = (2, 8);
/// let seqs = Varlen::from_offsets(&ctx, &[0, 3, 8], &[0, 3, 8])?; // lengths 3 and 5
/// let x: Vec<f32> = (0..8 * h * d).map(|i| (i as f32 * 0.1).sin()).collect();
/// let q = Tensor::from_slice(&ctx, &x, &[8, h, d])?;
/// let opts = AttentionOptions { causal: Some(Alignment::BottomRight), ..Default::default() };
/// let res = attention_varlen(&ctx, &q, &q, &q, &seqs, &opts)?;
/// let o: Vec<f32> = res.out.to_vec(&ctx)?;
/// // The first query of each sequence sees only its own first key: O = V of that row.
/// assert!((o[0] - x[0]).abs() < 1e-6 && (o[3 * h * d] - x[3 * h * d]).abs() < 1e-6);
/// # Ok(()) }
/// ```
pub fn attention_varlen(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &Varlen,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let call = Attention::varlen(ctx, q, k, v, seqs, opts)?;
    call.submit()?;
    Ok(call.into_output())
}

/// [`attention_varlen`] recorded into the caller's encoder; the caller submits it. Outputs are
/// allocated here and valid once the caller's submission has run.
pub fn attention_varlen_encode(
    ctx: &Context,
    encoder: &mut wgpu::CommandEncoder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &Varlen,
    opts: &AttentionOptions,
) -> Result<AttentionOutput> {
    let call = Attention::varlen(ctx, q, k, v, seqs, opts)?;
    call.encode(encoder);
    Ok(call.into_output())
}

/// Rows of a packed \[rows, H, D\] operand.
fn rows(t: &Tensor) -> usize {
    t.shape()[0]
}

/// Checks the packed tensors, the offsets and the options against each other and the device.
/// Returns the problem with B sequences of at most `max_seqlen_q` / `max_seqlen_k` rows.
pub fn validate_varlen(
    ctx: &Context,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    seqs: &Varlen,
    opts: &AttentionOptions,
) -> Result<Problem> {
    let (cu_q, cu_k) = (&seqs.cu_seqlens_q, &seqs.cu_seqlens_k);
    let tensors = [("q", Some(q)), ("k", Some(k)), ("v", Some(v))]
        .into_iter()
        .chain([("cu_seqlens_q", Some(cu_q)), ("cu_seqlens_k", Some(cu_k))])
        .chain([("out", opts.out.as_ref())]);
    for (name, t) in tensors {
        if let Some(t) = t {
            t.check_device(name, ctx)?;
        }
    }
    for (name, t) in [("q", q), ("k", k), ("v", v)] {
        crate::tensor::check_operand_axes(name, t, 3..=3, &[0])?;
        if !matches!(t.dtype(), DType::F32 | DType::F16) || t.dtype() != q.dtype() {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: if name == "q" { "f32 or f16" } else { q.dtype().name() },
            });
        }
        check_rows_contiguous(name, t)?;
        if let Some(&n) = t.shape().iter().find(|&&n| n > i32::MAX as usize) {
            return Err(Error::Limit {
                what: format!("{name} dimension"),
                limit: "2^31 - 1 elements per axis",
                needed: n as u64,
                max: i32::MAX as u64,
            });
        }
    }
    if q.dtype() == DType::F16 && !ctx.features().contains(wgpu::Features::SHADER_F16) {
        return Err(Error::MissingFeature {
            what: "f16 attention",
            feature: wgpu::Features::SHADER_F16,
        });
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if ks[2] != qs[2] {
        return Err(Error::ShapeMismatch {
            name: "k",
            expected: vec![ks[0], ks[1], qs[2]],
            got: ks.to_vec(),
        });
    }
    if vs[0] != ks[0] || vs[1] != ks[1] {
        return Err(Error::ShapeMismatch {
            name: "v",
            expected: vec![ks[0], ks[1], vs[2]],
            got: vs.to_vec(),
        });
    }
    if !qs[1].is_multiple_of(ks[1]) {
        return Err(Error::HeadRatio { hq: qs[1], hkv: ks[1] });
    }
    for (name, t) in [("cu_seqlens_q", cu_q), ("cu_seqlens_k", cu_k)] {
        if t.dtype() != DType::U32 {
            return Err(Error::DType {
                name,
                got: t.dtype(),
                expected: "u32",
            });
        }
        if t.shape().len() != 1 || t.shape()[0] == 0 {
            return Err(Error::SeqOffsets {
                name,
                why: format!("needs shape [B + 1] (at least the leading 0), got {:?}", t.shape()),
            });
        }
        if !t.is_contiguous() {
            return Err(Error::Strides {
                name,
                shape: t.shape().to_vec(),
                strides: t.strides().to_vec(),
                why: "must be contiguous",
            });
        }
        // The kernel indexes the offsets from the start of their binding.
        let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
        if !t.offset().is_multiple_of(align) {
            return Err(Error::Misaligned {
                name,
                offset: t.offset(),
                align,
            });
        }
    }
    if cu_k.shape() != cu_q.shape() {
        return Err(Error::ShapeMismatch {
            name: "cu_seqlens_k",
            expected: cu_q.shape().to_vec(),
            got: cu_k.shape().to_vec(),
        });
    }
    let (total_q, total_k) = (rows(q), rows(k));
    for (name, max, total, what) in [
        ("max_seqlen_q", seqs.max_seqlen_q, total_q, "the rows of q"),
        ("max_seqlen_k", seqs.max_seqlen_k, total_k, "the rows of k"),
    ] {
        if max > total {
            return Err(Error::SeqOffsets {
                name,
                why: format!("{max} exceeds {what} ({total}): no sequence can be that long"),
            });
        }
    }
    if let Some((hq, hk)) = &seqs.host {
        for (name, cu, total, what) in [("cu_seqlens_q", hq, total_q, "q"), ("cu_seqlens_k", hk, total_k, "k")] {
            let last = *cu.last().unwrap_or(&0) as usize;
            if last > total {
                return Err(Error::SeqOffsets {
                    name,
                    why: format!("the sequences end at row {last}, past the {total} rows of {what}"),
                });
            }
        }
    }
    let p = Problem {
        b: seqs.batch(),
        hq: qs[1],
        hkv: ks[1],
        lq: seqs.max_seqlen_q,
        lk: seqs.max_seqlen_k,
        dk: qs[2],
        dv: vs[2],
    };
    // 32-bit indices: packed rows × heads (O and LSE rows) and the dispatch's (b, h) pairs.
    for (what, n) in [
        (
            format!("total_q·Hq = {}·{} query rows", total_q, p.hq),
            total_q as u64 * p.hq as u64,
        ),
        (
            format!("B·Hq = {}·{} (sequence, head) pairs", p.b, p.hq),
            p.b as u64 * p.hq as u64,
        ),
    ] {
        if n > u32::MAX as u64 {
            return Err(Error::Limit {
                what,
                limit: "2^32 - 1 (32-bit row indices)",
                needed: n,
                max: u32::MAX as u64,
            });
        }
    }
    check_scalar_options(opts)?;
    check_alibi(opts, p.b, p.hq)?;
    let refuse = |what: &str| Err(Error::Unsupported(format!("variable-length attention: {what}")));
    if opts.block_table.is_some() {
        return refuse("packed K/V are not paged; give block_table to attention() over a KV cache");
    }
    if opts.bias.is_some() || opts.mask.is_some() {
        return refuse("a bias or boolean mask has no packed layout; mask with causal, window or the offsets");
    }
    if opts.key_lengths.is_some() || opts.align_to_key_lengths {
        return refuse("the key offsets give each sequence's keys; key_lengths and align_to_key_lengths do not apply (bottom-right alignment is per sequence already)");
    }
    if opts.return_weights {
        return refuse("the fused kernel never materializes the weights");
    }
    if !matches!(opts.kernel, KernelChoice::Auto | KernelChoice::Fused) {
        return refuse("runs on the fused kernel (KernelChoice::Auto or Fused)");
    }
    let longest = Problem {
        lk: seqs.max_seqlen_k,
        ..p
    };
    if !kernels::flash_forward::fits(ctx, &longest) {
        return refuse(&format!(
            "this driver (llvmpipe before Mesa 25) ends shader loops after 65535 iterations without an error; the fused kernel stays within it for {} keys per sequence with head dims up to 128, {} beyond (max_seqlen_k = {})",
            kernels::flash_forward::CPU_MAX_KEYS,
            kernels::flash_forward::CPU_MAX_KEYS_WIDE,
            seqs.max_seqlen_k
        ));
    }
    if let Some(out) = &opts.out {
        let inputs = [
            ("q", Some(q)),
            ("k", Some(k)),
            ("v", Some(v)),
            ("cu_seqlens_q", Some(cu_q)),
            ("cu_seqlens_k", Some(cu_k)),
        ];
        check_out(out, vec![total_q, p.hq, p.dv], q.dtype(), &inputs)?;
    }
    Ok(p)
}

/// Strides of a packed \[rows, H, D\] operand for the uniform: no batch stride (sequences are
/// addressed by their first row), head stride, row stride.
fn packed_strides(t: &Tensor, elem_offset: u32) -> Strides {
    let s = t.strides();
    Strides {
        offset: elem_offset,
        batch: 0,
        head: if t.shape()[1] == 1 { 0 } else { s[1] as u32 },
        row: s[0] as u32,
    }
}

/// Binds a whole packed tensor; its elements must be addressable with 32-bit indices.
fn bind_packed(ctx: &Context, t: &Tensor, name: &'static str) -> Result<(BoundBuffer, Strides)> {
    let (bound, offset) = kernels::bind_tensor(ctx, t, name)?;
    let elems = bound.size / t.dtype().size() as u64;
    if elems > u32::MAX as u64 {
        return Err(Error::Limit {
            what: format!("{name} binding ({elems} elements)"),
            limit: "2^32 - 1 elements (32-bit indices)",
            needed: elems,
            max: u32::MAX as u64,
        });
    }
    Ok((bound, packed_strides(t, offset)))
}

impl Attention {
    /// Validates and prepares variable-length attention ([`attention_varlen`]) with default tiles;
    /// record it with [`Attention::encode`] as often as wanted. [`Attention::problem`] reports B
    /// sequences of `max_seqlen_q` queries and `max_seqlen_k` keys (an upper bound of the work).
    pub fn varlen(
        ctx: &Context,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        seqs: &Varlen,
        opts: &AttentionOptions,
    ) -> Result<Self> {
        Self::varlen_with_tuning(ctx, q, k, v, seqs, opts, &Tuning::default())
    }

    /// Like [`Attention::varlen`] with explicit tile settings (`tuning.flash`).
    pub fn varlen_with_tuning(
        ctx: &Context,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        seqs: &Varlen,
        opts: &AttentionOptions,
        tuning: &Tuning,
    ) -> Result<Self> {
        let problem = validate_varlen(ctx, q, k, v, seqs, opts)?;
        ctx.scoped("attention setup", || {
            Self::plan_varlen(ctx, problem, q, k, v, seqs, opts, tuning)
        })
    }

    #[allow(clippy::too_many_arguments, reason = "internal planner of the public constructors")]
    fn plan_varlen(
        ctx: &Context,
        problem: Problem,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        seqs: &Varlen,
        opts: &AttentionOptions,
        tuning: &Tuning,
    ) -> Result<Self> {
        let p = &problem;
        let (total_q, total_k) = (rows(q), rows(k));
        let out = match &opts.out {
            Some(t) => t.clone(),
            None => Tensor::zeros(ctx, &[total_q, p.hq, p.dv], q.dtype())?,
        };
        let lse = match opts.return_lse {
            true => Some(Tensor::zeros(ctx, &[p.hq, total_q], DType::F32)?),
            false => None,
        };
        let mut allocated = Self::output_bytes(opts, &out, &lse);
        let mut steps = Vec::new();
        let (mut design, mut design_note) = (None, None);
        if p.b > 0 && total_q > 0 && p.lq > 0 {
            // No keys at all: a zero stand-in row is bound (the kernel clamps every sequence to 0
            // keys and never reads it).
            let stand_in = match total_k {
                0 => Some(Tensor::zeros(ctx, &[p.dk.max(p.dv)], q.dtype())?),
                _ => None,
            };
            let (k, v) = match &stand_in {
                Some(row) => (
                    row.view(0, &[1, p.hkv, p.dk], &[p.dk, 0, 1])?,
                    row.view(0, &[1, p.hkv, p.dv], &[p.dv, 0, 1])?,
                ),
                None => (k.clone(), v.clone()),
            };
            allocated += stand_in.as_ref().map_or(0, |t| t.buffer().size());
            let (qb, qs) = bind_packed(ctx, q, "q")?;
            let (kb, ks) = bind_packed(ctx, &k, "k")?;
            let (vb, vs) = bind_packed(ctx, &v, "v")?;
            let (ob, os) = bind_packed(ctx, &out, "out")?;
            let mut params = base_params(p, opts);
            (params.q, params.k, params.v, params.o) = (qs, ks, vs, os);
            params.flags |= flags::VARLEN;
            if opts.causal == Some(Alignment::BottomRight) {
                params.flags |= flags::CAUSAL_PER_SEQ;
            }
            if opts.window.is_some_and(|w| w.alignment == Alignment::BottomRight) {
                params.flags |= flags::WINDOW_PER_SEQ;
            }
            if opts.alibi_slopes.is_some() {
                // Distances from each sequence's own bottom-right position.
                params.flags |= flags::ALIBI_PER_SEQ;
            }
            (params.total_q, params.total_k) = (total_q as u32, total_k as u32);
            let lse_bound = match &lse {
                Some(t) => {
                    let (b, off) = kernels::bind_tensor(ctx, t, "lse")?;
                    params.lse_off = off;
                    b
                }
                None => BoundBuffer::whole(&storage_buffer(ctx, "wgpu-attention unused lse", 16)?),
            };
            let (cu_q, _) = kernels::bind_tensor(ctx, &seqs.cu_seqlens_q, "cu_seqlens_q")?;
            let (cu_k, _) = kernels::bind_tensor(ctx, &seqs.cu_seqlens_k, "cu_seqlens_k")?;
            params.bh_count = (p.b * p.hq) as u32;
            params.bh_stride = kernels::pair_stride(params.bh_count);
            let pick = super::design::pick(ctx, p, q.dtype(), opts, &Default::default(), tuning)?;
            (design, design_note) = (Some(pick.kernel.design()), pick.note);
            let params_buf = kernels::params_buffer(ctx, &params);
            allocated += params_buf.size();
            let unused = kernels::unused_input(ctx);
            let alibi = Self::alibi_uniform(ctx, opts);
            let bindings = kernels::flash_forward::FusedBindings {
                params: &params,
                uniform: &params_buf,
                qkv: [&qb, &kb, &vb],
                out: &ob,
                lse: &lse_bound,
                masks: [&unused, &cu_q, &cu_k],
                local: false,
                additive: false,
                alibi: alibi.as_ref(),
            };
            steps.push(pick.kernel.step(ctx, q.dtype(), &bindings)?);
        }
        Ok(Self {
            ctx: ctx.clone(),
            problem,
            steps,
            output: AttentionOutput {
                out,
                lse,
                weights: None,
                kernel: KernelChoice::Fused,
                design,
                design_note,
            },
            causal: opts.causal.is_some(),
            allocated,
            splits: None,
        })
    }
}
