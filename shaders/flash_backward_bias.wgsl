// Backward pass for the additive bias (docs/ATTENTION.md §10): dBias = dS, the gradient of the
// score after the soft cap, summed over the axes the bias is broadcast along (its batch or head
// axis of size 1), in a fixed order (deterministic, no atomics). One invocation per element of
// dBias [bias batches, bias heads, Lq, Lk]; P and dP are recomputed from Q, K, V, the forward's
// LSE and dO.

//@switches vec4_io alibi direct
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
//@import common/loops_unrolled.wgsl

override WORKGROUP: u32 = 64u;
override DK: u32 = 64u;
override DV: u32 = 64u;
override DK4: u32 = 16u;
override DV4: u32 = 16u;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    let plane = params.len_q * params.len_k;
    if (e >= backward.bias_batches * backward.bias_heads * plane) {
        return;
    }
    let j = e % params.len_k;
    let i = (e / params.len_k) % params.len_q;
    let hb = (e / plane) % backward.bias_heads;
    let bb = e / (plane * backward.bias_heads);
    // The (b, h) pairs this bias element serves.
    var b_lo = bb;
    var b_hi = bb + 1u;
    if (backward.bias_batches == 1u) {
        b_lo = 0u;
        b_hi = params.batch;
    }
    var h_lo = hb;
    var h_hi = hb + 1u;
    if (backward.bias_heads == 1u) {
        h_lo = 0u;
        h_hi = params.heads_q;
    }
    var acc = 0.0;
    for (var b = b_lo; b < b_hi; b++) {
        for (var h = h_lo; h < h_hi; h++) {
            let hk = kv_head(h);
            let q_row = params.q_off + b * params.q_sb + h * params.q_sh + i * params.q_sl;
            let k_row = params.k_off + b * params.k_sb + hk * params.k_sh + j * params.k_sl;
            let r = (b * params.heads_q + h) * params.len_q + i;
            let st = row_stats(r);
            var s = vec4<f32>(0.0);
            for (var d4 = 0u; d4 < DK4; d4++) {
                s += (load_q4(q_row, d4) * params.scale) * load_k4(k_row, d4);
            }
            let pr = grad_prob((s.x + s.y) + (s.z + s.w), st.x, b, h, i, j);
            if (!(pr.x == 0.0)) {
                let v_row = params.v_off + b * params.v_sb + hk * params.v_sh + j * params.v_sl;
                var dp = vec4<f32>(0.0);
                for (var c4 = 0u; c4 < DV4; c4++) {
                    dp += load_do4(r, b, h, i, c4) * load_v4(v_row, c4);
                }
                acc += pr.x * (((dp.x + dp.y) + (dp.z + dp.w)) * pr.y - st.y);
            }
        }
    }
    grad[e] = elem(acc);
}
