// ALiBi slopes (docs/ATTENTION.md §1 step 3): one f32 per query head in a uniform (no storage
// binding: the attention kernels already use the default limit of 8). `mask.wgsl` subtracts
// slope_h · |i' − j| from every score, i' the bottom-right aligned query position.

const MAX_ALIBI_HEADS: u32 = 4096u;

@group(0) @binding(14) var<uniform> alibi_slopes: array<vec4<f32>, 1024>;

fn alibi_slope(h: u32) -> f32 {
    return alibi_slopes[h >> 2u][h & 3u];
}
