// Split-KV decode attention with the head dim spread over a subgroup: the same partial states as
// flash_decode.wgsl (GQA packing, key splits, merge by decode_merge.wgsl), computed by a different
// division of work. A workgroup is one subgroup and owns one (pair, row block, split); lane l holds
// vec4 columns l, l + SUBGROUP, l + 2·SUBGROUP, … of every row's q and running O. For each key,
// every lane loads its columns of the K row (the subgroup together reads the row once, as
// contiguous vec4s), forms partial dot products, and subgroupAdd completes the scores; the softmax
// state is uniform across the subgroup, and each lane adds p·v to its own columns.
//
// Why: the state per invocation shrinks by the subgroup size (ROWS · ⌈D4 / SUBGROUP⌉ vec4 of q
// and O instead of ROWS · D4), so it stays in registers, and the lanes of a workgroup read one K/V
// row together instead of one row each. Everything is derived from the workgroup id, so the key
// loop, the masks and the softmax are uniform (no divergence).
//
// Composed after common/params.wgsl, common/grid.wgsl, common/philox.wgsl,
// common/no_centers.wgsl, an ALiBi piece, common/mask.wgsl, a loader piece (`load_q4`,
// `load_k4`, `load_v4`), common/score_dot.wgsl, a K/V layout piece (`kv_rows`) and
// common/decode_parts.wgsl. SUBGROUP (the fixed subgroup size) and ROWS come from the prelude.

override DK: u32 = 64u;  // head dim of Q and K
override DV: u32 = 64u;  // head dim of V and O
override DK4: u32 = 16u; // DK / 4 rounded up
override DV4: u32 = 16u; // DV / 4 rounded up
override KC: u32 = 2u;   // vec4 columns of Q/K per lane: ⌈DK4 / SUBGROUP⌉
override VC: u32 = 2u;   // vec4 columns of V/O per lane: ⌈DV4 / SUBGROUP⌉

const MAX_HEAD_VEC4: u32 = 64u; // head dims up to 256
const LANE_VEC4: u32 = (MAX_HEAD_VEC4 + SUBGROUP - 1u) / SUBGROUP;
const RESCALE_THRESHOLD: f32 = 8.0;

@compute @workgroup_size(SUBGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let w = linear_workgroup(wid, nwg);
    let pairs = decode.batch_count * params.heads_kv;
    if (w >= pairs * decode.row_blocks * decode.splits) {
        return;
    }
    let split = w % decode.splits;
    let rb = (w / decode.splits) % decode.row_blocks;
    let pair = w / (decode.splits * decode.row_blocks);
    let bl = pair / params.heads_kv; // batch within this dispatch
    let b = decode.batch_base + bl;
    let hk = pair % params.heads_kv;
    let group = params.heads_q / params.heads_kv;
    let key_len = decode_key_len(b);
    let split_keys = split_range(split, key_len);

    // The workgroup's rows and the union / intersection of their visible keys in the split.
    var k_begin = i32(params.len_k);
    var k_end = 0i;
    var full_begin = 0i;
    var full_end = i32(params.len_k);
    //@each_row
    let pr_{r} = rb * ROWS + {r}u;
    let pm_{r} = min(pr_{r}, decode.packed_rows - 1u); // rows past the group compute, never written
    let h_{r} = hk * group + pm_{r} / params.len_q;
    let i_{r} = pm_{r} % params.len_q;
    let keys_{r} = row_keys(b, i_{r}, key_len);
    k_begin = min(k_begin, keys_{r}.x);
    k_end = max(k_end, keys_{r}.y);
    full_begin = max(full_begin, keys_{r}.x);
    full_end = min(full_end, keys_{r}.y);
    //@end_row
    k_begin = max(k_begin, split_keys.x);
    k_end = min(k_end, split_keys.y);
    full_begin = clamp(full_begin, k_begin, max(k_begin, k_end));
    full_end = clamp(full_end, full_begin, max(full_begin, k_end));

    //@each_row
    let q_row_{r} = params.q_off + bl * params.q_sb + h_{r} * params.q_sh + i_{r} * params.q_sl;
    var q_{r}: array<vec4<f32>, LANE_VEC4>;
    var o_{r}: array<vec4<f32>, LANE_VEC4>;
    for (var c = 0u; c < KC; c++) {
        let d4 = lane + c * SUBGROUP;
        q_{r}[c] = vec4<f32>(0.0);
        if (d4 < DK4) {
            q_{r}[c] = load_q4(q_row_{r}, d4) * params.scale;
        }
    }
    for (var c = 0u; c < VC; c++) {
        o_{r}[c] = vec4<f32>(0.0);
    }
    var m_{r} = neg_inf();
    var l_{r} = 0.0;
    //@end_row

    let weighted = has_flag(FLAG_DROPOUT);
    var kl: array<vec4<f32>, LANE_VEC4>;
    for (var j = k_begin; j < k_end; j++) {
        let ju = u32(j);
        let masked_range = j < full_begin || j >= full_end;
        let rows = kv_rows(b, bl, hk, ju);
        for (var c = 0u; c < KC; c++) {
            let d4 = lane + c * SUBGROUP;
            kl[c] = vec4<f32>(0.0);
            if (d4 < DK4) {
                kl[c] = load_k4(rows.x, d4);
            }
        }
        //@each_row
        var acc_{r} = vec4<f32>(0.0);
        for (var c = 0u; c < KC; c++) {
            acc_{r} += score_term(q_{r}[c], kl[c], lane + c * SUBGROUP);
        }
        let dot_{r} = subgroupAdd((acc_{r}.x + acc_{r}.y) + (acc_{r}.z + acc_{r}.w));
        let s_{r} = row_score(dot_{r}, masked_range, b, h_{r}, i_{r}, ju);
        var p_{r} = 0.0;
        if (!is_masked(s_{r})) {
            if (s_{r} > m_{r} + RESCALE_THRESHOLD) {
                let alpha = exp(m_{r} - s_{r});
                l_{r} *= alpha;
                for (var c = 0u; c < VC; c++) {
                    o_{r}[c] *= alpha;
                }
                m_{r} = s_{r};
            }
            p_{r} = exp(s_{r} - m_{r});
            l_{r} += p_{r};
            if (weighted) {
                p_{r} *= value_weight(b, h_{r}, i_{r}, ju, 0.0);
            }
        }
        //@end_row
        for (var c = 0u; c < VC; c++) {
            let c4 = lane + c * SUBGROUP;
            kl[c] = vec4<f32>(0.0);
            if (c4 < DV4) {
                kl[c] = load_v4(rows.y, c4);
            }
        }
        //@each_row
        // A key of weight 0 (masked or dropped) never reaches O (0 · inf is NaN).
        if (!(p_{r} == 0.0)) {
            for (var c = 0u; c < VC; c++) {
                o_{r}[c] += p_{r} * kl[c];
            }
        }
        //@end_row
    }

    // The split's partial state of every row: each lane writes its columns, lane 0 the LSE.
    //@each_row
    if (pr_{r} < decode.packed_rows) {
        let part_{r} = part_row(bl, h_{r}, i_{r}, split);
        let state_{r} = split_state(m_{r}, l_{r});
        for (var c = 0u; c < VC; c++) {
            let c4 = lane + c * SUBGROUP;
            if (c4 < DV4) {
                part_o[part_{r} * DV4 + c4] = o_{r}[c] * state_{r}.x;
            }
        }
        if (lane == 0u) {
            part_lse[part_{r}] = state_{r}.y;
        }
    }
    //@end_row
}
