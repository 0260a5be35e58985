// S = scale · Q Kᵀ for every (b, h) pair of the chunk; S is [bh_count, Lq, Lk], contiguous.

//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/gemm_tile.wgsl

@group(0) @binding(1) var<storage, read> q: array<elem>;
@group(0) @binding(2) var<storage, read> k: array<elem>;
@group(0) @binding(3) var<storage, read_write> scores: array<f32>;

fn load_a(bh: u32, i: u32, d: u32) -> f32 {
    if (i >= params.len_q || d >= params.dim_k) {
        return 0.0;
    }
    let b = bh / params.heads_q;
    let h = bh % params.heads_q;
    return f32(q[params.q_off + b * params.q_sb + h * params.q_sh + i * params.q_sl + d]);
}

fn load_b(bh: u32, d: u32, j: u32) -> f32 {
    if (j >= params.len_k || d >= params.dim_k) {
        return 0.0;
    }
    let b = bh / params.heads_q;
    let h = kv_head(bh % params.heads_q);
    return f32(k[params.k_off + b * params.k_sb + h * params.k_sh + j * params.k_sl + d]);
}

fn store_c(bh: u32, i: u32, j: u32, value: f32) {
    if (i < params.len_q && j < params.len_k) {
        scores[((bh - params.bh_base) * params.len_q + i) * params.len_k + j] = value * params.scale;
    }
}

fn accumulate(acc: vec4<f32>, a: f32, b: vec4<f32>) -> vec4<f32> {
    return acc + a * b;
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    gemm_dispatch(wid, nwg, lid, params.len_q, params.len_k, params.dim_k, params.bh_base, params.bh_count);
}
