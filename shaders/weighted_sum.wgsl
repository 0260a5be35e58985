// O = P V for every (b, h) pair of the chunk; P is [bh_count, Lq, Lk] from masked_softmax.

//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/gemm_tile.wgsl

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

// A key of weight 0 (masked or dropped) contributes nothing: a NaN or inf in its V row must not
// reach rows that do not weigh it (0 · inf is NaN).
fn accumulate(acc: vec4<f32>, a: f32, b: vec4<f32>) -> vec4<f32> {
    return select(acc + a * b, acc, a == 0.0);
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
    gemm_dispatch(wid, nwg, lid, params.len_q, params.dim_v, params.len_k, params.bh_base, params.bh_count);
}
