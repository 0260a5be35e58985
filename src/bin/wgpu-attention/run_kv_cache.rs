//! `run` over a KV cache read from files (FlashAttention's `flash_attn_with_kvcache`): a cache
//! (contiguous or paged with a block table) with per-sequence lengths, optional new keys and
//! values appended in place (rotated on the way in), optionally rotated queries, then attention
//! over the cache; with `--check`, O and the LSE are compared with the CPU twin of the cache. The
//! cache after the append can be written back in the input's layout and dtype, so that a second
//! run continues from it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use wgpu_attention::bench::Variant;
use wgpu_attention::files::{self, HostData, HostTensor};
use wgpu_attention::reference::{self, Comparison, HostAngles, HostKvCache, HostRope, Tolerance};
use wgpu_attention::{
    wgpu, AppendOptions, AttentionOptions, Context, DType, Error, KernelChoice, KvCache, PagedLayout, Rope, RopeStyle,
    Tensor,
};

use crate::args::DTypeArg;
use crate::call::{context, with_notice};
use crate::run::RunArgs;
use crate::run_inputs::{attention_options, read_named};
use crate::verdict::{kernel_name, report_and_write};

/// `run` in KV-cache mode: the cache from --k/--v, lengths, block table, new rows and rotary
/// tables, then attention over it ([`run_kv_cache`]).
pub fn run_kv_cache_cmd(a: &RunArgs) -> Result<()> {
    if a.variant != Variant::Sdpa {
        bail!("the KV-cache flags (--cache-seqlens, --block-table, --k-new, ...) apply to --variant sdpa");
    }
    for (flag, given) in [
        ("--mask", a.mask.is_some() || a.mask_name.is_some()),
        ("--bias", a.bias.is_some() || a.bias_name.is_some()),
        ("--weights", a.weights.is_some()),
    ] {
        if given {
            bail!("{flag} does not apply with a KV cache (it returns O and the LSE)");
        }
    }
    if a.k_new.is_some() != a.v_new.is_some() {
        bail!("--k-new and --v-new go together");
    }
    if a.rotary_cos.is_some() != a.rotary_sin.is_some() {
        bail!("--rotary-cos and --rotary-sin go together");
    }
    if a.rotary_interleaved && a.rotary_cos.is_none() {
        bail!("--rotary-interleaved needs --rotary-cos and --rotary-sin");
    }
    if a.page_size.is_some() && a.block_table.is_none() {
        bail!("--page-size needs --block-table (the cache is contiguous without one)");
    }
    let ctx = context()?;
    let max = ctx.limits().max_buffer_size;
    let opt = |v: &Option<String>, role: &str| v.as_deref().map(|v| read_named(a, v, role, max)).transpose();
    // Lengths and page ids: any integer dtype within u32.
    let ints = |v: &Option<String>, role: &str| -> Result<Option<HostTensor>> {
        Ok(match (v, &a.safetensors) {
            (None, _) => None,
            (Some(name), Some(path)) => Some(files::read_safetensors_u32(path, &std::fs::read(path)?, name)?),
            (Some(file), None) => Some(files::read_npy_u32(Path::new(file), role)?),
        })
    };
    let qkv = |flag: &Option<PathBuf>, name: &str, role: &str| -> Result<HostTensor> {
        match (&a.safetensors, flag) {
            (Some(path), _) => Ok(files::read_safetensors(path, name)?),
            (None, Some(p)) => Ok(files::read_npy_limited(p, role, max)?),
            (None, None) => bail!("missing --{role} (or give --safetensors FILE)"),
        }
    };
    let dtype = a.dtype.map(DTypeArg::dtype);
    let q = qkv(&a.q, &a.q_name, "q")?;
    let dtype = dtype.unwrap_or(q.dtype());
    let inputs = KvRunInputs {
        q: q.converted(dtype),
        k_cache: qkv(&a.k, &a.k_name, "k")?,
        v_cache: qkv(&a.v, &a.v_name, "v")?,
        cache_seqlens: ints(&a.cache_seqlens, "cache-seqlens")?,
        block_table: ints(&a.block_table, "block-table")?,
        page_size: a.page_size,
        k_new: opt(&a.k_new, "k-new")?,
        v_new: opt(&a.v_new, "v-new")?,
        rotary: opt(&a.rotary_cos, "rotary-cos")?.zip(opt(&a.rotary_sin, "rotary-sin")?),
        rotary_style: match a.rotary_interleaved {
            true => RopeStyle::Interleaved,
            false => RopeStyle::HalfSplit,
        },
        read_back_cache: a.out_k_cache.is_some() || a.out_v_cache.is_some(),
    };
    let opts = attention_options(a, max)?;
    let res = with_notice(|| run_kv_cache(&ctx, &inputs, &opts, a.check))?;
    let mut shapes = vec![format!("out {:?} {}", res.out.shape, res.out.dtype())];
    shapes.extend(res.lse.as_ref().map(|l| format!("lse {:?} f32", l.shape)));
    println!(
        "sdpa over a KV cache ({} kernel): {}; lengths {:?}",
        kernel_name(res.kernel),
        shapes.join(", "),
        res.lengths
    );
    let lengths = HostTensor {
        shape: vec![res.lengths.len()],
        data: HostData::U32(res.lengths.clone()),
    };
    let outputs = [
        (&a.out, Some(&res.out)),
        (&a.lse, res.lse.as_ref()),
        (&a.out_k_cache, res.k_cache.as_ref()),
        (&a.out_v_cache, res.v_cache.as_ref()),
        (&a.out_cache_seqlens, Some(&lengths)),
    ];
    report_and_write(&res.checks, &outputs, "output outside the reference tolerance")
}

/// Inputs of [`run_kv_cache`], as read from files. Float tensors are converted to Q's dtype.
#[derive(Debug, Clone)]
pub struct KvRunInputs {
    /// Q [B, Hq, Lq, Dk]: the newest Lq tokens of every sequence.
    pub q: HostTensor,
    /// The cache's K: [B, Hkv, C, Dk] (contiguous), or pages [N, P, Hkv, Dk] with a block table.
    pub k_cache: HostTensor,
    /// The cache's V, shaped like `k_cache` with Dv.
    pub v_cache: HostTensor,
    /// u32 \[B\]: rows already in each sequence (default: the whole capacity).
    pub cache_seqlens: Option<HostTensor>,
    /// u32 [B, pages_per_seq] page ids: the cache is paged.
    pub block_table: Option<HostTensor>,
    /// Rows per page, checked against the pages' shape when given.
    pub page_size: Option<usize>,
    /// K [B, Hkv, Lnew, Dk] appended at each sequence's length before attending.
    pub k_new: Option<HostTensor>,
    /// V [B, Hkv, Lnew, Dv], with `k_new`.
    pub v_new: Option<HostTensor>,
    /// Rotary tables cos θ and sin θ, f32 [max_positions, rotary_dim / 2]: Q row i and new key
    /// row r of sequence b are rotated at positions len_b + i and len_b + r.
    pub rotary: Option<(HostTensor, HostTensor)>,
    /// Pair convention of the rotary tables.
    pub rotary_style: RopeStyle,
    /// Read the cache back after the append ([`KvRunOutputs::k_cache`], `v_cache`).
    pub read_back_cache: bool,
}

/// Outputs of [`run_kv_cache`].
#[derive(Debug, Clone)]
pub struct KvRunOutputs {
    /// O [B, Hq, Lq, Dv] in Q's dtype.
    pub out: HostTensor,
    /// LSE [B, Hq, Lq] (f32), when requested.
    pub lse: Option<HostTensor>,
    /// Sequence lengths after the append.
    pub lengths: Vec<u32>,
    /// With [`KvRunInputs::read_back_cache`]: K and V of the cache after the append, in the
    /// layout and dtype of the input cache ([B, Hkv, C, D], or pages [N, P, Hkv, D]).
    pub k_cache: Option<HostTensor>,
    /// V of the cache after the append, like `k_cache`.
    pub v_cache: Option<HostTensor>,
    /// The kernel that ran.
    pub kernel: KernelChoice,
    /// O (and LSE) against the reference, when requested.
    pub checks: Vec<(&'static str, Comparison)>,
}

fn float(t: &HostTensor, name: &'static str, rank: usize) -> wgpu_attention::Result<()> {
    if !matches!(t.dtype(), DType::F32 | DType::F16) {
        return Err(Error::DType {
            name,
            got: t.dtype(),
            expected: "f32 or f16",
        });
    }
    if t.shape.len() != rank {
        return Err(Error::Rank {
            name,
            expected: rank,
            shape: t.shape.clone(),
        });
    }
    Ok(())
}

fn words<'a>(t: &'a HostTensor, name: &'static str, shape: &[usize]) -> wgpu_attention::Result<&'a [u32]> {
    match &t.data {
        HostData::U32(v) if t.shape == shape => Ok(v),
        HostData::U32(_) => Err(Error::ShapeMismatch {
            name,
            expected: shape.to_vec(),
            got: t.shape.clone(),
        }),
        _ => Err(Error::DType {
            name,
            got: t.dtype(),
            expected: "u32",
        }),
    }
}

/// Pages [N, P, H, D] (row-major) reordered to the cache's head-major storage [N, H, P, D].
fn head_major(t: &HostTensor) -> HostTensor {
    let [n, p, h, d] = [t.shape[0], t.shape[1], t.shape[2], t.shape[3]];
    debug_assert_eq!(n * p * h * d, t.shape.iter().product::<usize>());
    let index = |e: usize| {
        // Destination element e = ((page·H + head)·P + row)·D + col, from [page, row, head, col].
        let (col, rest) = (e % d, e / d);
        let (row, rest) = (rest % p, rest / p);
        let (head, page) = (rest % h, rest / h);
        ((page * p + row) * h + head) * d + col
    };
    let data = match &t.data {
        HostData::F32(v) => HostData::F32((0..v.len()).map(|e| v[index(e)]).collect()),
        HostData::F16(v) => HostData::F16((0..v.len()).map(|e| v[index(e)]).collect()),
        other => other.clone(),
    };
    HostTensor {
        shape: vec![n, h, p, d],
        data,
    }
}

/// Builds the cache, appends, rotates and attends; `opts` gives the attention options (its
/// key lengths and block table come from the cache).
pub fn run_kv_cache(
    ctx: &Context,
    inputs: &KvRunInputs,
    opts: &AttentionOptions,
    check: bool,
) -> wgpu_attention::Result<KvRunOutputs> {
    float(&inputs.q, "q", 4)?;
    float(&inputs.k_cache, "k cache", 4)?;
    float(&inputs.v_cache, "v cache", 4)?;
    let dtype = inputs.q.dtype();
    let (qs, ks, vs) = (&inputs.q.shape, &inputs.k_cache.shape, &inputs.v_cache.shape);
    let b = qs[0];
    // The block table's ids (checked: u32 [B, pages_per_seq]), (Hkv, capacity) and the layout.
    let table = match &inputs.block_table {
        Some(t) => Some(words(t, "block table", &[b, t.shape.get(1).copied().unwrap_or(0)])?),
        None => None,
    };
    let (hkv, capacity, layout) = match &inputs.block_table {
        None => {
            if ks[0] != b {
                return Err(Error::ShapeMismatch {
                    name: "k cache",
                    expected: vec![b, ks[1], ks[2], ks[3]],
                    got: ks.clone(),
                });
            }
            (ks[1], ks[2], None)
        }
        Some(t) => {
            let cols = t.shape[1];
            if let Some(p) = inputs.page_size.filter(|&p| p != ks[1]) {
                return Err(Error::ShapeMismatch {
                    name: "k cache pages",
                    expected: vec![ks[0], p, ks[2], ks[3]],
                    got: ks.clone(),
                });
            }
            let layout = PagedLayout {
                pages: ks[0],
                page_size: ks[1],
                pages_per_seq: cols,
            };
            (ks[2], cols * ks[1], Some(layout))
        }
    };
    if vs[..3] != ks[..3] {
        return Err(Error::ShapeMismatch {
            name: "v cache",
            expected: vec![ks[0], ks[1], ks[2], vs[3]],
            got: vs.clone(),
        });
    }
    let (dk, dv) = (ks[3], vs[3]);
    let mut cache = match layout {
        None => KvCache::new(ctx, b, hkv, capacity, dk, dv, dtype)?,
        Some(l) => KvCache::new_paged(ctx, b, hkv, l, dk, dv, dtype)?,
    };
    if let Some(table) = table {
        cache.set_block_table(ctx, table)?;
    }
    // The cache's rows, copied into its K and V: [B, Hkv, C, D] as given, pages [N, P, Hkv, D]
    // reordered to the cache's head-major storage [N, Hkv, P, D].
    let mut enc = ctx.device().create_command_encoder(&Default::default());
    for (src, dst) in [(&inputs.k_cache, cache.k()), (&inputs.v_cache, cache.v())] {
        let src = match layout {
            Some(_) => head_major(src),
            None => src.clone(),
        };
        let t = src.converted(dtype).upload(ctx)?;
        // Both are fresh tensors of equal size: whole (4-byte padded) buffers.
        let bytes = padded_size((t.numel() * dtype.size()) as u64);
        enc.copy_buffer_to_buffer(t.buffer(), 0, dst.buffer(), 0, bytes);
    }
    ctx.queue().submit([enc.finish()]);
    let lengths = match &inputs.cache_seqlens {
        Some(t) => words(t, "cache seqlens", &[b])?.to_vec(),
        None => vec![capacity as u32; b],
    };
    cache.set_lengths(ctx, &lengths)?;

    let rope = match &inputs.rotary {
        Some((cos, sin)) => {
            let f32_table = |t: &HostTensor| t.converted(DType::F32).upload(ctx);
            Some(Rope::from_tables(
                inputs.rotary_style,
                f32_table(cos)?,
                f32_table(sin)?,
            )?)
        }
        None => None,
    };
    let q = inputs.q.upload(ctx)?;
    let q = match &rope {
        Some(r) => cache.rope_q(ctx, &q, r)?,
        None => q,
    };
    let new_rows = match (&inputs.k_new, &inputs.v_new) {
        (Some(k), Some(v)) => {
            float(k, "k new", 4)?;
            float(v, "v new", 4)?;
            let append = AppendOptions {
                lengths: None,
                rope: rope.clone(),
            };
            let (kt, vt) = (k.converted(dtype).upload(ctx)?, v.converted(dtype).upload(ctx)?);
            cache.append_with(ctx, &kt, &vt, &append)?;
            Some((k, v))
        }
        (None, None) => None,
        _ => {
            return Err(Error::Unsupported(
                "new keys and values come together: give both k_new and v_new".into(),
            ))
        }
    };
    let res = cache.attend(ctx, &q, opts)?;
    let (mut k_cache, mut v_cache) = (None, None);
    if inputs.read_back_cache {
        // The cache's tensors are [B, Hkv, C, D] or a [N, P, Hkv, D] view of head-major pages:
        // a download reads them in that logical order, the input's layout.
        let back = |t: &Tensor, like: &HostTensor| -> wgpu_attention::Result<HostTensor> {
            Ok(HostTensor::download(ctx, t)?.converted(like.dtype()))
        };
        k_cache = Some(back(cache.k(), &inputs.k_cache)?);
        v_cache = Some(back(cache.v(), &inputs.v_cache)?);
    }
    let out = HostTensor::download(ctx, &res.out)?;
    let lse = res.lse.as_ref().map(|t| HostTensor::download(ctx, t)).transpose()?;
    let mut checks = Vec::new();
    if check {
        // The CPU twin: the same rows, lengths, appends and rotations, then §1 per sequence.
        let f = |t: &HostTensor| t.converted(dtype).to_f32().unwrap_or_default();
        let (kc, vc) = (f(&inputs.k_cache), f(&inputs.v_cache));
        let mut host = HostKvCache::new(b, hkv, capacity, dk, dv);
        match table {
            Some(table) => {
                host.k = reference::gather_pages(&kc, [ks[0], ks[1], hkv, dk], table, b);
                host.v = reference::gather_pages(&vc, [ks[0], ks[1], hkv, dv], table, b);
            }
            None => (host.k, host.v) = (kc, vc),
        }
        host.lengths = lengths.clone();
        let tables = inputs.rotary.as_ref().map(|(c, s)| (f(c), f(s)));
        let host_rope = tables.as_ref().map(|(cos, sin)| HostRope {
            style: inputs.rotary_style,
            rotary_dim: 2 * inputs
                .rotary
                .as_ref()
                .map_or(0, |(c, _)| c.shape.get(1).copied().unwrap_or(0)),
            angles: HostAngles::Tables { cos, sin },
        });
        let mut qf = f(&inputs.q);
        if let Some(r) = &host_rope {
            let rotated = reference::cache::rope(&qf, [b, qs[1], qs[2], qs[3]], &lengths, r);
            qf = rotated.into_iter().map(|x| x as f32).collect();
            if dtype == DType::F16 {
                qf = qf.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            }
        }
        if let Some((k, v)) = new_rows {
            host.append(&f(k), &f(v), k.shape[2], None, host_rope.as_ref())
                .map_err(Error::Unsupported)?;
        }
        let expected = host.attend(&qf, qs[1], qs[2], opts);
        let tol = Tolerance::of(dtype);
        checks.push((
            "out",
            reference::compare(&out.to_f32().unwrap_or_default(), &expected.out, tol),
        ));
        if let Some(l) = &lse {
            checks.push((
                "lse",
                reference::compare(&l.to_f32().unwrap_or_default(), &expected.lse, tol),
            ));
        }
    }
    Ok(KvRunOutputs {
        out,
        lse,
        lengths: cache.lengths().to_vec(),
        k_cache,
        v_cache,
        kernel: res.kernel,
        checks,
    })
}

/// Rounds a byte size up to wgpu's copy alignment (and at least 4 bytes), as the library sizes
/// the buffer of a fresh tensor.
fn padded_size(bytes: u64) -> u64 {
    bytes
        .max(4)
        .div_ceil(wgpu::COPY_BUFFER_ALIGNMENT)
        .saturating_mul(wgpu::COPY_BUFFER_ALIGNMENT)
}
