// Backward pass for dQ (FlashAttention-2 recomputation, docs/ATTENTION.md §10). Each invocation
// owns ROWS query rows of one (b, h) pair (rows lid, lid + WORKGROUP, …) and streams every key its
// workgroup can see once: P is recomputed from Q, K and the forward's LSE, then
// dP = dO · v, dS = P ∘ (Z ∘ dP − D) (Z: the dropout factor), times the soft cap's derivative, and
// dQ += dS · k; dQ = scale · Σ dS K is written once, in key order (deterministic, no atomics).
// `//@each_row` blocks are repeated ROWS times by the host.

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

var<private> kj: array<vec4<f32>, MAX_HEAD_VEC4>;
var<private> vj: array<vec4<f32>, MAX_HEAD_VEC4>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows_per_group = WORKGROUP * ROWS;
    let q_blocks = (params.len_q + rows_per_group - 1u) / rows_per_group;
    let t = linear_workgroup(wid, nwg);
    if (t >= params.bh_count * q_blocks) {
        return;
    }
    let bh = params.bh_base + t / q_blocks;
    let i0 = (t % q_blocks) * rows_per_group;
    let b = bh / params.heads_q;
    let h = bh % params.heads_q;
    let hk = kv_head(h);
    let i_last = min(i0 + rows_per_group, params.len_q) - 1u;

    // Keys some row of the workgroup can see (block skipping for key lengths, causal, window).
    var k_begin = 0i;
    var k_end = i32(params.len_k);
    if (has_flag(FLAG_KEY_LENGTHS)) {
        k_end = min(k_end, i32(min(key_lengths_at(b), params.len_k)));
    }
    if (has_flag(FLAG_CAUSAL)) {
        k_end = min(k_end, i32(i_last) + causal_offset(b) + 1);
    }
    if (has_flag(FLAG_WINDOW)) {
        let off = window_offset(b);
        k_begin = max(k_begin, i32(i0) + off - params.window_left);
        k_end = min(k_end, i32(i_last) + off + params.window_right + 1);
    }

    let q_head = params.q_off + b * params.q_sb + h * params.q_sh;
    let k_head = params.k_off + b * params.k_sb + hk * params.k_sh;
    let v_head = params.v_off + b * params.v_sb + hk * params.v_sh;
    //@each_row
    let i_{r} = i0 + lid + {r}u * WORKGROUP;
    let im_{r} = min(i_{r}, params.len_q - 1u); // rows past Lq compute on a valid row, never written
    let g_{r} = bh * params.len_q + im_{r};
    let st_{r} = row_stats(g_{r});
    var q_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var d4 = 0u; d4 < k_vecs(); d4++) {
        q_{r}[d4] = load_q4(q_head + im_{r} * params.q_sl, d4) * params.scale;
    }
    var do_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var c4 = 0u; c4 < v_vecs(); c4++) {
        do_{r}[c4] = load_do4(g_{r}, b, h, im_{r}, c4);
    }
    var dq_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var d4 = 0u; d4 < k_vecs(); d4++) {
        dq_{r}[d4] = vec4<f32>(0.0);
    }
    //@end_row

    for (var j = k_begin; j < k_end; j++) {
        let ju = u32(j);
        for (var d4 = 0u; d4 < k_vecs(); d4++) {
            kj[d4] = load_k4(k_head + ju * params.k_sl, d4);
        }
        for (var c4 = 0u; c4 < v_vecs(); c4++) {
            vj[c4] = load_v4(v_head + ju * params.v_sl, c4);
        }
        //@each_row
        var acc_{r} = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < k_vecs(); d4++) {
            acc_{r} += q_{r}[d4] * kj[d4];
        }
        let pr_{r} = grad_prob((acc_{r}.x + acc_{r}.y) + (acc_{r}.z + acc_{r}.w), st_{r}.x, b, h, im_{r}, ju);
        // A key of probability 0 (masked) contributes nothing, whatever its V row holds.
        if (!(pr_{r}.x == 0.0)) {
            var dp_{r} = vec4<f32>(0.0);
            for (var c4 = 0u; c4 < v_vecs(); c4++) {
                dp_{r} += do_{r}[c4] * vj[c4];
            }
            let dpz_{r} = ((dp_{r}.x + dp_{r}.y) + (dp_{r}.z + dp_{r}.w)) * pr_{r}.y;
            let ds_{r} = pr_{r}.x * (dpz_{r} - st_{r}.y) * pr_{r}.z;
            for (var d4 = 0u; d4 < k_vecs(); d4++) {
                dq_{r}[d4] += ds_{r} * kj[d4];
            }
        }
        //@end_row
    }

    // dQ [B, Hq, Lq, Dk], row-major.
    //@each_row
    if (i_{r} < params.len_q) {
        for (var d4 = 0u; d4 < k_vecs(); d4++) {
            store_grad4(g_{r} * DK, d4, dq_{r}[d4] * params.scale, DK);
        }
    }
    //@end_row
}
