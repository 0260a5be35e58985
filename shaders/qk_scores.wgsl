// S = scale · Q Kᵀ for every (b, h) pair of the chunk; S is [bh_count, Lq, Lk], contiguous.
// Composed after common/params.wgsl and common/gemm_tile.wgsl.

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

@compute @workgroup_size(WG_X, WG_Y)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tiles_m = (params.len_q + WG_Y * 4u - 1u) / (WG_Y * 4u);
    let tiles_n = (params.len_k + WG_X * 4u - 1u) / (WG_X * 4u);
    let t = linear_workgroup(wid, nwg);
    if (t >= params.bh_count * tiles_m * tiles_n) {
        return;
    }
    let bh = params.bh_base + t / (tiles_m * tiles_n);
    let r = t % (tiles_m * tiles_n);
    gemm_tile(bh, (r / tiles_n) * WG_Y * 4u, (r % tiles_n) * WG_X * 4u, params.dim_k, lid.x, lid.y);
}
