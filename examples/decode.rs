//! A toy generation loop over a KV cache: a ragged batch of prompts is prefilled by appending
//! chunks (each sequence takes only its remaining prompt rows), then 32 decode steps each rotate
//! the new token's query and key (RoPE), append its K/V and attend over the cache, recorded into
//! one encoder and submitted once per step. The outputs of every step are checked against the
//! CPU reference at the end.
//!
//! `cargo run --example decode`

use wgpu_attention::reference::{self, HostAngles, HostKvCache, HostRope, Tolerance};
use wgpu_attention::{Alignment, AppendOptions, AttentionOptions, Context, DType, KvCache, Rope, RopeStyle, Tensor};

const STEPS: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::new()?;
    println!("adapter: {}", ctx.info().summary());
    // 8 query heads over 2 KV heads (GQA), head dim 32, rotary on all 32 columns (half-split, as
    // Llama in Hugging Face layout).
    let (b, hq, hkv, d, capacity) = (3, 8, 2, 32, 96);
    let prompts = [21u32, 6, 0]; // a ragged batch; the last sequence starts empty
    let chunk = 8;
    let rope = Rope::new(&ctx, RopeStyle::HalfSplit, d, capacity)?;
    let host_rope = HostRope {
        style: RopeStyle::HalfSplit,
        rotary_dim: d,
        angles: HostAngles::ThetaBase(10000.0),
    };
    let mut cache = KvCache::new(&ctx, b, hkv, capacity, d, d, DType::F32)?;
    let mut host = HostKvCache::new(b, hkv, capacity, d, d);

    // Prefill: chunks of up to 8 prompt rows; each sequence takes what is left of its prompt.
    let mut seed = 0;
    while cache.lengths().iter().zip(&prompts).any(|(l, p)| l < p) {
        let counts: Vec<u32> = cache
            .lengths()
            .iter()
            .zip(&prompts)
            .map(|(&l, &p)| (p - l).min(chunk as u32))
            .collect();
        let (k, v) = (
            token_data(b * hkv * chunk * d, seed),
            token_data(b * hkv * chunk * d, seed + 1),
        );
        seed += 2;
        let opts = AppendOptions {
            lengths: Some(counts.clone()),
            rope: Some(rope.clone()),
        };
        let shape = [b, hkv, chunk, d];
        cache.append_with(
            &ctx,
            &Tensor::from_slice(&ctx, &k, &shape)?,
            &Tensor::from_slice(&ctx, &v, &shape)?,
            &opts,
        )?;
        host.append(&k, &v, chunk, Some(&counts), Some(&host_rope))?;
    }
    println!("prefilled lengths {:?}", cache.lengths());

    // Decode: per step, rotate q at the new token's position, append its rotated k and v, attend.
    let opts = AttentionOptions {
        causal: Some(Alignment::BottomRight),
        return_lse: true,
        ..Default::default()
    };
    let append = AppendOptions {
        rope: Some(rope.clone()),
        ..Default::default()
    };
    let mut outputs = Vec::with_capacity(STEPS);
    let mut expected = Vec::with_capacity(STEPS);
    let mut record_ms = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let q = token_data(b * hq * d, seed);
        let (k, v) = (token_data(b * hkv * d, seed + 1), token_data(b * hkv * d, seed + 2));
        seed += 3;
        let recording = std::time::Instant::now();
        let mut encoder = ctx.device().create_command_encoder(&Default::default());
        let q_rot = cache.rope_q_encode(
            &ctx,
            &mut encoder,
            &Tensor::from_slice(&ctx, &q, &[b, hq, 1, d])?,
            &rope,
        )?;
        cache.append_encode(
            &ctx,
            &mut encoder,
            &Tensor::from_slice(&ctx, &k, &[b, hkv, 1, d])?,
            &Tensor::from_slice(&ctx, &v, &[b, hkv, 1, d])?,
            &append,
        )?;
        let out = cache.attend_encode(&ctx, &mut encoder, &q_rot, &opts)?;
        ctx.queue().submit([encoder.finish()]);
        record_ms.push(recording.elapsed().as_secs_f64() * 1e3);
        outputs.push(out.out);

        // The same step on the CPU.
        let q_rot: Vec<f32> = reference::cache::rope(&q, [b, hq, 1, d], &host.lengths, &host_rope)
            .into_iter()
            .map(|x| x as f32)
            .collect();
        host.append(&k, &v, 1, None, Some(&host_rope))?;
        expected.push(host.attend(&q_rot, hq, 1, &opts).out);
    }
    // Reading the last output waits for every step.
    let last = outputs[STEPS - 1].to_vec::<f32>(&ctx)?;
    let mut warm = record_ms[1..].to_vec(); // the first step compiles the pipelines
    warm.sort_by(f64::total_cmp);
    println!(
        "{STEPS} decode steps (rope q/k, append, attend; one submission each), final lengths {:?}; host time to \
         validate, prepare and record a step: {:.2} ms median after the first ({:.0} ms with pipeline compiles)",
        cache.lengths(),
        warm[warm.len() / 2],
        record_ms[0]
    );
    let mut worst = reference::compare(&last, &expected[STEPS - 1], Tolerance::F32);
    for (step, (o, e)) in outputs.iter().zip(&expected).enumerate() {
        let c = reference::compare(&o.to_vec::<f32>(&ctx)?, e, Tolerance::F32);
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
