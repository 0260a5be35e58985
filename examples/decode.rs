//! A toy generation loop over a paged KV cache, as an inference engine on wgpu would run it:
//!
//! 1. a pool of pages shared by a ragged batch through a block table (pages handed out in a
//!    shuffled order, as a page allocator would);
//! 2. prefill of the ragged prompts through packed variable-length attention (no padding, the
//!    offsets on the GPU, causal per sequence), then their rotated keys and values appended to
//!    the cache from the same packed rows (`append_packed`);
//! 3. 64 decode steps replayed from prepared calls: the new token's query rotated at its position,
//!    its key rotated and appended with its value at each sequence's length, attention over the
//!    cache — recorded with no validation, pipeline lookup or bind-group creation, one submission
//!    per step. Only the inputs change between steps (the caller's projection would write them).
//!
//! Every step's output is checked against the CPU reference at the end.
//!
//! `cargo run --example decode`

use std::time::Instant;

use wgpu_attention::reference::{self, HostAngles, HostKvCache, HostRope, Tolerance, VarlenHostInputs};
use wgpu_attention::{
    attention_varlen, Alignment, AppendOptions, AttentionOptions, Context, DType, KvCache, PagedLayout, Rope,
    RopeStyle, Tensor, Varlen,
};

const STEPS: usize = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());
    // 8 query heads over 2 KV heads (GQA), head dim 32, rotary on all 32 columns (half-split, as
    // Llama in Hugging Face layout); pages of 16 rows, at most 8 pages (128 rows) per sequence.
    let (b, hq, hkv, d) = (3, 8, 2, 32);
    let layout = PagedLayout {
        pages: 24,
        page_size: 16,
        pages_per_seq: 8,
    };
    let capacity = layout.pages_per_seq * layout.page_size;
    let prompts = [37u32, 6, 0]; // a ragged batch; the last sequence starts empty
    let rope = Rope::new(&ctx, RopeStyle::HalfSplit, d, capacity)?;
    let host_rope = HostRope {
        style: RopeStyle::HalfSplit,
        rotary_dim: d,
        angles: HostAngles::ThetaBase(10000.0),
    };
    let mut cache = KvCache::new_paged(&ctx, b, hkv, layout, d, d, DType::F32)?;
    // Page ids in a scrambled order: sequence s, page i → (7·(8s + i) + 5) mod 24.
    let table: Vec<u32> = (0..(b * layout.pages_per_seq) as u32)
        .map(|i| (7 * i + 5) % layout.pages as u32)
        .collect();
    cache.set_block_table(&ctx, &table)?;
    let mut host = HostKvCache::new(b, hkv, capacity, d, d);

    // Prefill. The prompts' projections, packed row after row ([total, H, D], no padding) and
    // rotated at their positions within each prompt (a model's projection kernels would do this).
    let mut cu = vec![0u32];
    for l in prompts {
        cu.push(cu[cu.len() - 1] + l);
    }
    let total = cu[b] as usize;
    let rotate = |x: Vec<f32>, heads: usize| -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        for s in 0..b {
            for pos in 0..prompts[s] as usize {
                for h in 0..heads {
                    let row = ((cu[s] as usize + pos) * heads + h) * d;
                    out.extend(host_rope.rotate_row(&x[row..row + d], pos).iter().map(|&v| v as f32));
                }
            }
        }
        out
    };
    let q = rotate(token_data(total * hq * d, 0), hq);
    let k = rotate(token_data(total * hkv * d, 1), hkv);
    let v = token_data(total * hkv * d, 2);
    let mut seed = 3;
    // Prefill attention over the packed prompts: causal per sequence, offsets read on the GPU.
    let seqs = Varlen::from_offsets(&ctx, &cu, &cu)?;
    let causal = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        ..Default::default()
    };
    let prefill = attention_varlen(
        &ctx,
        &Tensor::from_slice(&ctx, &q, &[total, hq, d])?,
        &Tensor::from_slice(&ctx, &k, &[total, hkv, d])?,
        &Tensor::from_slice(&ctx, &v, &[total, hkv, d])?,
        &seqs,
        &causal,
    )?;
    let expected = reference::sdpa_varlen(
        &VarlenHostInputs {
            hq,
            hkv,
            dk: d,
            dv: d,
            q: &q,
            k: &k,
            v: &v,
            cu_seqlens_q: &cu,
            cu_seqlens_k: &cu,
        },
        &causal,
    );
    let c = reference::compare(&prefill.out.to_vec::<f32>(&ctx)?, &expected.out, Tolerance::F32);
    if !c.ok() {
        return Err(format!("prefill differs from the CPU reference: {c}").into());
    }
    println!("prefill of prompts {prompts:?} packed without padding matches the CPU reference ({c})");
    // The prompts' (already rotated) keys and values into the cache, straight from the packed
    // rows: sequence s takes rows cu[s] .. cu[s + 1].
    cache.append_packed(
        &ctx,
        &Tensor::from_slice(&ctx, &k, &[total, hkv, d])?,
        &Tensor::from_slice(&ctx, &v, &[total, hkv, d])?,
        &cu,
        None,
    )?;
    // The host twin takes them padded to [B, Hkv, longest prompt, D] with per-sequence counts.
    let longest = prompts.iter().copied().max().unwrap_or(0) as usize;
    let padded = |x: &[f32]| {
        let mut out = vec![0.0f32; b * hkv * longest * d];
        for s in 0..b {
            for pos in 0..prompts[s] as usize {
                for h in 0..hkv {
                    let src = ((cu[s] as usize + pos) * hkv + h) * d;
                    let dst = ((s * hkv + h) * longest + pos) * d;
                    out[dst..dst + d].copy_from_slice(&x[src..src + d]);
                }
            }
        }
        out
    };
    host.append(&padded(&k), &padded(&v), longest, Some(&prompts), None)?;
    println!("prefilled lengths {:?}", cache.lengths());

    // Decode: the inputs live in fixed tensors; everything else is prepared once.
    let q_in = Tensor::zeros(&ctx, &[b, hq, 1, d], DType::F32)?;
    let k_in = Tensor::zeros(&ctx, &[b, hkv, 1, d], DType::F32)?;
    let v_in = Tensor::zeros(&ctx, &[b, hkv, 1, d], DType::F32)?;
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        ..Default::default()
    };
    let rope_q = cache.prepare_rope_q(&ctx, &q_in, &rope)?;
    let append = cache.prepare_append(
        &ctx,
        &k_in,
        &v_in,
        &AppendOptions {
            rope: Some(rope.clone()),
            ..Default::default()
        },
    )?;
    let attend = cache.prepare_replay(&ctx, rope_q.out(), &opts)?;

    let mut outputs = Vec::with_capacity(STEPS);
    let mut expected = Vec::with_capacity(STEPS);
    let mut host_us = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let q = token_data(b * hq * d, seed);
        let (k, v) = (token_data(b * hkv * d, seed + 1), token_data(b * hkv * d, seed + 2));
        seed += 3;
        let queue = ctx.queue();
        queue.write_buffer(q_in.buffer(), q_in.offset(), bytemuck::cast_slice(&q));
        queue.write_buffer(k_in.buffer(), k_in.offset(), bytemuck::cast_slice(&k));
        queue.write_buffer(v_in.buffer(), v_in.offset(), bytemuck::cast_slice(&v));
        let recording = Instant::now();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        cache.rope_q_prepared(&mut encoder, &rope_q)?;
        cache.append_prepared(&mut encoder, &append)?;
        attend.encode(&mut encoder);
        queue.submit([encoder.finish()]);
        host_us.push(recording.elapsed().as_secs_f64() * 1e6);
        // The output tensor is rewritten every step: keep a copy of this step's O.
        outputs.push(attend.output().out.to_vec::<f32>(&ctx)?);

        // The same step on the CPU.
        let q_rot: Vec<f32> = reference::serving::rope(&q, [b, hq, 1, d], &host.lengths, &host_rope)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        host.append(&k, &v, 1, None, Some(&host_rope))?;
        expected.push(host.attend(&q_rot, hq, 1, &opts).out);
    }
    host_us.sort_by(f64::total_cmp);
    println!(
        "{STEPS} decode steps (rope q/k, append, attend; one submission each), final lengths {:?}; host time to \
         record and submit a step: {:.0} µs median",
        cache.lengths(),
        host_us[STEPS / 2],
    );
    let mut worst = reference::compare(&outputs[0], &expected[0], Tolerance::F32);
    for (step, (o, e)) in outputs.iter().zip(&expected).enumerate() {
        let c = reference::compare(o, e, Tolerance::F32);
        if !c.ok() {
            return Err(format!("step {step}: GPU output differs from the CPU reference: {c}").into());
        }
        if c.max_abs > worst.max_abs {
            worst = c;
        }
    }
    println!("every step matches the CPU reference (worst {worst})");
    Ok(())
}

/// Deterministic token data in [−1, 1].
fn token_data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104729) as f32 * 0.001).sin())
        .collect()
}
