// O = P V for every (b, h) pair of the chunk; P is [bh_count, Lq, Lk] from masked_softmax.
// Composed after common/params.wgsl and common/gemm_tile.wgsl.

@group(0) @binding(1) var<storage, read> weights: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;

fn load_a(bh: u32, i: u32, j: u32) -> f32 {
    if (i >= params.len_q || j >= params.len_k) {
        return 0.0;
    }
    return weights[((bh - params.bh_base) * params.len_q + i) * params.len_k + j];
}

fn load_b(bh: u32, j: u32, d: u32) -> f32 {
    if (j >= params.len_k || d >= params.dim_v) {
        return 0.0;
    }
    let b = bh / params.heads_q;
    let h = kv_head(bh % params.heads_q);
    return f32(v[params.v_off + b * params.v_sb + h * params.v_sh + j * params.v_sl + d]);
}

fn store_c(bh: u32, i: u32, d: u32, value: f32) {
    if (i < params.len_q && d < params.dim_v) {
        let b = bh / params.heads_q;
        let h = bh % params.heads_q;
        out[params.o_off + b * params.o_sb + h * params.o_sh + i * params.o_sl + d] = elem(value);
    }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let tiles_m = (params.len_q + WG_Y * 4u - 1u) / (WG_Y * 4u);
    let tiles_n = (params.dim_v + WG_X * 4u - 1u) / (WG_X * 4u);
    let t = linear_workgroup(wid, nwg);
    if (t >= params.bh_count * tiles_m * tiles_n) {
        return;
    }
    let bh = params.bh_base + t / (tiles_m * tiles_n);
    let r = t % (tiles_m * tiles_n);
    gemm_tile(bh, (r / tiles_n) * WG_Y * 4u, (r % tiles_n) * WG_X * 4u, params.len_k, lid.x, lid.y);
}
