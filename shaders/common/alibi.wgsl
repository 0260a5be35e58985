// ALiBi slopes (docs/ATTENTION.md §1 step 3): one f32 per query head ([Hq]) or per batch and
// query head ([B, Hq], FLAG_ALIBI_PER_BATCH) in a uniform of 4096 (no storage binding: the
// attention kernels already use the default limit of 8). `mask.wgsl` subtracts
// slope · |i' − j| from every score, i' the bottom-right aligned query position.

@group(0) @binding(14) var<uniform> alibi_slopes: array<vec4<f32>, 1024>;

fn alibi_slope(b: u32, h: u32) -> f32 {
    let i = select(h, b * params.heads_q + h, has_flag(FLAG_ALIBI_PER_BATCH));
    return alibi_slopes[i >> 2u][i & 3u];
}
