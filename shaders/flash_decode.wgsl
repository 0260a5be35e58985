// Split-KV decode attention (flash-decoding) with GQA packing. The query heads that share a KV
// head, times the Lq query rows, are the "packed rows" of one (b, kv head): packed row p is query
// head hk·G + p / Lq, row p % Lq (G = Hq / Hkv). Every invocation owns ROWS packed rows and one
// split of the key range, streams that split's visible keys once for all of its rows (each K/V
// vector loaded feeds every query head of the group) and writes, per row, the split's normalized
// partial output O_s = Σ p v / Σ p (f32) and its LSE_s = m + log Σ p into scratch laid out as
// [B, Hq, Lq, S] rows (of the dispatch's batches). `shaders/decode_merge.wgsl` then combines the S splits of every row.
// Design notes:
// - The key range of each (b, kv head) is split by that sequence's own key length (read on the
//   GPU), so a prepared call keeps every split busy as a KV cache grows and a batch of uneven
//   lengths gives every split of every sequence a fair share.
// - Invocation t of the dispatch is (pair, row block, split) with the split fastest: the lanes of
//   a workgroup share their Q rows and walk neighbouring key ranges, so a decode step with few
//   (b, kv head) pairs still spreads its K/V stream over the whole machine.
// - No workgroup memory and no barriers (as flash_forward.wgsl): the splits are combined by the
//   merge kernel, not inside the workgroup.
// - Masks, scores, dropout keying and lazy rescaling are those of flash_forward.wgsl, so both
//   kernels follow one numeric policy; a split no row can see writes O_s = 0 and LSE_s = −∞.

//@switches rows vec4_io alibi paged
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
//@import common/loops_unrolled.wgsl
//@import common/fetch_plain.wgsl
//@import common/score_dot.wgsl
//@if paged
//@import common/kv_paged.wgsl
//@else
//@import common/kv_contiguous.wgsl
//@endif
//@import common/decode_parts.wgsl

override WORKGROUP: u32 = 16u;
override DK: u32 = 64u;  // head dim of Q and K
override DV: u32 = 64u;  // head dim of V and O
override DK4: u32 = 16u; // DK / 4 rounded up
override DV4: u32 = 16u; // DV / 4 rounded up

const MAX_HEAD_VEC4: u32 = 64u; // head dims up to 256
const RESCALE_THRESHOLD: f32 = 8.0;

@compute @workgroup_size(WORKGROUP)
fn main(input: KernelInputs) {
    let t = linear_workgroup(input.wid, input.nwg) * WORKGROUP + input.lid;
    if (t >= decode_units()) {
        return;
    }
    let blk = decode_block(t);
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
    var q_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var d4 = 0u; d4 < DK4; d4++) {
        q_{r}[d4] = load_q4(q_row_{r}, d4) * params.scale;
    }
    var o_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var c4 = 0u; c4 < DV4; c4++) {
        o_{r}[c4] = vec4<f32>(0.0);
    }
    var m_{r} = neg_inf();
    var l_{r} = 0.0;
    //@end_row

    let weighted = has_flag(FLAG_DROPOUT);
    for (var j = blk.keys.x; j < blk.keys.y; j++) {
        let ju = u32(j);
        let masked_range = j < blk.full.x || j >= blk.full.y;
        let rows = kv_rows(b, bl, hk, ju);
        fetch_k(rows.x, 0u);
        //@each_row
        var acc_{r} = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < DK4; d4++) {
            acc_{r} += score_term(q_{r}[d4], kv[d4], d4);
        }
        let s_{r} = row_score((acc_{r}.x + acc_{r}.y) + (acc_{r}.z + acc_{r}.w), masked_range, b, h_{r}, i_{r}, ju);
        var p_{r} = 0.0;
        if (!is_masked(s_{r})) {
            if (s_{r} > m_{r} + RESCALE_THRESHOLD) {
                let alpha = exp(m_{r} - s_{r});
                l_{r} *= alpha;
                for (var c4 = 0u; c4 < DV4; c4++) {
                    o_{r}[c4] *= alpha;
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
        fetch_v(rows.y, 0u);
        //@each_row
        // A key of weight 0 (masked or dropped) never reaches O (0 · inf is NaN).
        if (!(p_{r} == 0.0)) {
            for (var c4 = 0u; c4 < DV4; c4++) {
                o_{r}[c4] += p_{r} * kv[c4];
            }
        }
        //@end_row
    }

    // The split's partial state of every row: normalized O and LSE.
    //@each_row
    if ({r}u < blk.rows) {
        let part_{r} = part_row(bl, h_{r}, i_{r}, split);
        let state_{r} = split_state(m_{r}, l_{r});
        for (var c4 = 0u; c4 < DV4; c4++) {
            part_o[part_{r} * DV4 + c4] = o_{r}[c4] * state_{r}.x;
        }
        store_part_lse(part_{r}, state_{r}.y);
    }
    //@end_row
}
