// Hard (stochastic) attention, ATTENTION.md §5 (Xu et al. 2015): each query row samples one key
// j ~ Categorical(P[i, :]) and outputs V[j]. Sampling uses the Gumbel-max trick,
// j = argmax_j (s_ij + g_ij) with g = −ln(−ln u) and u from the Philox word of (b, h, i, j): an exact
// draw from softmax(s), streamed over the keys without normalizing, reproducible on the CPU.
// One invocation per query row.

//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/philox.wgsl
//@import common/no_centers.wgsl
//@import common/no_alibi.wgsl
//@import common/mask.wgsl
//@import common/side.wgsl
//@import common/load_scalar.wgsl

override WORKGROUP: u32 = 64u;
override DK: u32 = 64u;
override DV: u32 = 64u;

const MAX_HEAD_VEC4: u32 = 64u;
const NO_KEY: u32 = 0xffffffffu;

// Sampled key per (b, h, i) row at `params.lse_off`; NO_KEY for a fully masked row.
@group(0) @binding(6) var<storage, read_write> indices: array<u32>;

// u in (0, 1) from the top 23 bits (exact in f32), then the standard Gumbel quantile.
fn gumbel(x: u32) -> f32 {
    let u = (f32(x >> 9u) + 0.5) * (1.0 / 8388608.0);
    return -log(-log(u));
}

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (row >= params.bh_count * params.len_q) {
        return;
    }
    let bh = params.bh_base + row / params.len_q;
    let i = row % params.len_q;
    let b = bh / params.heads_q;
    let h = bh % params.heads_q;
    let hk = kv_head(h);
    let dk4 = (DK + 3u) / 4u;
    var qv: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var d4 = 0u; d4 < dk4; d4++) {
        qv[d4] = load_q4(params.q_off + b * params.q_sb + h * params.q_sh + i * params.q_sl, d4);
    }
    let k_head = params.k_off + b * params.k_sb + hk * params.k_sh;
    let center = row_center(b, h, i);
    var best = neg_inf();
    var best_j = NO_KEY;
    for (var j = 0u; j < params.len_k; j++) {
        var acc = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < dk4; d4++) {
            acc += qv[d4] * load_k4(k_head + j * params.k_sl, d4);
        }
        let s = finish_score(params.scale * ((acc.x + acc.y) + (acc.z + acc.w)), b, h, i, j, center);
        if (is_masked(s)) {
            continue;
        }
        let perturbed = s + gumbel(random_u32(b, h, i, j));
        if (perturbed > best) {
            best = perturbed;
            best_j = j;
        }
    }
    let v_head = params.v_off + b * params.v_sb + hk * params.v_sh;
    let o_row = params.o_off + b * params.o_sb + h * params.o_sh + i * params.o_sl;
    for (var c4 = 0u; c4 < (DV + 3u) / 4u; c4++) {
        var x = vec4<f32>(0.0);
        if (best_j != NO_KEY) {
            x = load_v4(v_head + best_j * params.v_sl, c4);
        }
        store_o4(o_row, c4, x);
    }
    indices[params.lse_off + bh * params.len_q + i] = best_j;
}
