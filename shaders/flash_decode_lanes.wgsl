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
// SUBGROUP (the fixed subgroup size) and ROWS come from the prelude.

//@switches rows vec4_io subgroup alibi paged
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
//@import common/side.wgsl
//@if vec4_io
//@import common/load_vec4.wgsl
//@else
//@import common/load_scalar.wgsl
//@endif
//@import common/score_dot.wgsl
//@if paged
//@import common/kv_paged.wgsl
//@else
//@import common/kv_contiguous.wgsl
//@endif
//@import common/decode_parts.wgsl

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
    if (w >= decode_units()) {
        return;
    }
    let blk = decode_block(w);
    //@each_row
    let h_{r} = blk.h[{r}];
    let i_{r} = blk.i[{r}];
    //@end_row
    let bl = blk.bl;
    let b = blk.b;
    let hk = blk.hk;
    let split = blk.split;
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
    for (var j = blk.keys.x; j < blk.keys.y; j++) {
        let ju = u32(j);
        let masked_range = j < blk.full.x || j >= blk.full.y;
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
    if ({r}u < blk.rows) {
        let part_{r} = part_row(bl, h_{r}, i_{r}, split);
        let state_{r} = split_state(m_{r}, l_{r});
        for (var c = 0u; c < VC; c++) {
            let c4 = lane + c * SUBGROUP;
            if (c4 < DV4) {
                part_o[part_{r} * DV4 + c4] = o_{r}[c] * state_{r}.x;
            }
        }
        if (lane == 0u) {
            store_part_lse(part_{r}, state_{r}.y);
        }
    }
    //@end_row
}
