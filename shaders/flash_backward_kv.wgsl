// Backward pass for dK and dV (FlashAttention-2 recomputation, docs/ATTENTION.md §10). Each
// invocation owns ROWS key rows of one (b, kv head) pair (rows lid, lid + WORKGROUP, …) and streams
// the query rows its workgroup's keys can see, for every query head of the group in order
// (grouped-query attention sums over them in a fixed order: deterministic, no atomics):
// P is recomputed from Q, K and the forward's LSE, dV += (Z ∘ P) · dO, dP = dO · v,
// dS = P ∘ (Z ∘ dP − D) times the soft cap's derivative, dK += dS · (scale · q).

//@switches rows vec4_io alibi compact direct
//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/philox.wgsl
//@import common/no_centers.wgsl
//@if alibi
//@import common/alibi.wgsl
//@else
//@import common/no_alibi.wgsl
//@endif
//@import common/mask.wgsl
//@import common/side_records.wgsl
//@if vec4_io
//@import common/load_vec4.wgsl
//@else
//@import common/load_scalar.wgsl
//@endif
//@import common/grad_io.wgsl
//@if direct
//@if vec4_io
//@import common/grad_do_direct_vec4.wgsl
//@else
//@import common/grad_do_direct.wgsl
//@endif
//@else
//@import common/grad_do_records.wgsl
//@endif
//@import common/grad_prob.wgsl
//@if compact
//@import common/loops_compact.wgsl
//@else
//@import common/loops_unrolled.wgsl
//@endif

override WORKGROUP: u32 = 64u;
override DK: u32 = 64u;
override DV: u32 = 64u;
override DK4: u32 = 16u;
override DV4: u32 = 16u;

const MAX_HEAD_VEC4: u32 = 64u; // head dims up to 256

var<private> qi: array<vec4<f32>, MAX_HEAD_VEC4>;
var<private> doi: array<vec4<f32>, MAX_HEAD_VEC4>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let keys_per_group = WORKGROUP * ROWS;
    let k_blocks = (params.len_k + keys_per_group - 1u) / keys_per_group;
    let t = linear_workgroup(wid, nwg);
    if (t >= params.batch * params.heads_kv * k_blocks) {
        return;
    }
    let bk = t / k_blocks;
    let j0 = (t % k_blocks) * keys_per_group;
    let b = bk / params.heads_kv;
    let hk = bk % params.heads_kv;
    let j_last = min(j0 + keys_per_group, params.len_k) - 1u;
    let group = params.heads_q / params.heads_kv;

    // Query rows some key of the workgroup is seen by (block skipping for key lengths, causal,
    // window).
    var q_begin = 0i;
    var q_end = i32(params.len_q);
    if (has_flag(FLAG_KEY_LENGTHS) && j0 >= min(key_lengths_at(b), params.len_k)) {
        q_end = 0; // every key of the block is past the sequence's length
    }
    if (has_flag(FLAG_CAUSAL)) {
        q_begin = max(q_begin, i32(j0) - causal_offset(b));
    }
    if (has_flag(FLAG_WINDOW)) {
        let off = window_offset(b);
        q_begin = max(q_begin, i32(j0) - off - params.window_right);
        q_end = min(q_end, i32(j_last) - off + params.window_left + 1);
    }

    let k_head = params.k_off + b * params.k_sb + hk * params.k_sh;
    let v_head = params.v_off + b * params.v_sb + hk * params.v_sh;
    //@each_row
    let j_{r} = j0 + lid + {r}u * WORKGROUP;
    let jm_{r} = min(j_{r}, params.len_k - 1u); // keys past Lk compute on a valid key, never written
    var k_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    var dk_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var d4 = 0u; d4 < k_vecs(); d4++) {
        k_{r}[d4] = load_k4(k_head + jm_{r} * params.k_sl, d4);
        dk_{r}[d4] = vec4<f32>(0.0);
    }
    var v_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    var dv_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var c4 = 0u; c4 < v_vecs(); c4++) {
        v_{r}[c4] = load_v4(v_head + jm_{r} * params.v_sl, c4);
        dv_{r}[c4] = vec4<f32>(0.0);
    }
    //@end_row

    for (var g = 0u; g < group; g++) {
        let h = hk * group + g;
        let bh = b * params.heads_q + h;
        let q_head = params.q_off + b * params.q_sb + h * params.q_sh;
        for (var i = q_begin; i < q_end; i++) {
            let iu = u32(i);
            let r = bh * params.len_q + iu;
            let st = row_stats(r);
            for (var d4 = 0u; d4 < k_vecs(); d4++) {
                qi[d4] = load_q4(q_head + iu * params.q_sl, d4) * params.scale;
            }
            for (var c4 = 0u; c4 < v_vecs(); c4++) {
                doi[c4] = load_do4(r, b, h, iu, c4);
            }
            //@each_row
            var acc_{r} = vec4<f32>(0.0);
            for (var d4 = 0u; d4 < k_vecs(); d4++) {
                acc_{r} += qi[d4] * k_{r}[d4];
            }
            let pr_{r} = grad_prob((acc_{r}.x + acc_{r}.y) + (acc_{r}.z + acc_{r}.w), st.x, b, h, iu, jm_{r});
            // A pair of probability 0 (masked) contributes nothing, whatever dO or Q hold.
            if (!(pr_{r}.x == 0.0)) {
                let pz_{r} = pr_{r}.x * pr_{r}.y;
                var dp_{r} = vec4<f32>(0.0);
                for (var c4 = 0u; c4 < v_vecs(); c4++) {
                    dp_{r} += doi[c4] * v_{r}[c4];
                    dv_{r}[c4] += pz_{r} * doi[c4];
                }
                let dpz_{r} = ((dp_{r}.x + dp_{r}.y) + (dp_{r}.z + dp_{r}.w)) * pr_{r}.y;
                let ds_{r} = pr_{r}.x * (dpz_{r} - st.y) * pr_{r}.z;
                for (var d4 = 0u; d4 < k_vecs(); d4++) {
                    dk_{r}[d4] += ds_{r} * qi[d4];
                }
            }
            //@end_row
        }
    }

    // dK [B, Hkv, Lk, Dk] and dV [B, Hkv, Lk, Dv], row-major, at their offsets in `grad`.
    //@each_row
    if (j_{r} < params.len_k) {
        let row_{r} = bk * params.len_k + j_{r};
        for (var d4 = 0u; d4 < k_vecs(); d4++) {
            store_grad4(backward.dk_off + row_{r} * DK, d4, dk_{r}[d4], DK);
        }
        for (var c4 = 0u; c4 < v_vecs(); c4++) {
            store_grad4(backward.dv_off + row_{r} * DV, c4, dv_{r}[c4], DV);
        }
    }
    //@end_row
}
