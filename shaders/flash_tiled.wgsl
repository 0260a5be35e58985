// Fused attention, workgroup-tiled (FlashAttention-2 structure, the design for GPUs). A workgroup
// owns BLOCK_Q query rows of one (b, h) pair; LANES invocations share each row, each owning a slice
// of its head dim. The scaled Q block is loaded once into workgroup memory; the visible keys are
// walked in tiles of BLOCK_K rows, each K and V tile loaded once per workgroup (coalesced vec4
// loads, the V tile reusing the K tile's memory) and read by every row of the block. Per tile:
//   1. S[r, j] = q_r · k_j for the tile (lane t of a row computes keys t, t + LANES, …), then cap,
//      bias, ALiBi and masks (`block_score`), into the S tile in workgroup memory, and each lane's
//      maximum;
//   2. while the V tile loads, each lane turns its own scores into probabilities against the row's
//      running maximum (online softmax: max m identical in the row's lanes, each lane summing its
//      own keys' share of l), in place;
//   3. O[r, its slice] += P[r, :] · V[:, its slice].
// O lives in registers: SLOTS vec4 per invocation (DV / (4 · LANES) rounded up), not a whole row.
// The host sets SLOTS with the source and checks that the tiles fit
// the device's workgroup memory.
//
// Design notes:
// - Four barriers per key tile (K loaded, S written, V loaded and P written, V read): the price
//   of sharing every loaded K/V vector with BLOCK_Q rows, which is what GPUs reward (global
//   traffic per FLOP falls by BLOCK_Q). CPU drivers prefer the register design (flash_forward.wgsl).
// - Each exponential is computed once (by the lane that computed the score); the row maximum and
//   the final sum are reduced over the LANES lanes through workgroup memory in a fixed order, so
//   the lanes agree bit for bit and results are deterministic.
// - Lazy rescaling as in the register design: the running max moves only when a tile's maximum
//   exceeds it by RESCALE_THRESHOLD (probabilities stay ≤ e^8); the result is exact math.
// - Key range and block skipping as in the register design (`enter_row_block`); local-p rows have
//   their own windows and are not narrowed per block: every key of the range is tested.

//@switches vec4_io local alibi slots
//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/philox.wgsl
//@if local
//@import common/centers.wgsl
//@else
//@import common/no_centers.wgsl
//@endif
//@if alibi
//@import common/alibi.wgsl
//@else
//@import common/no_alibi.wgsl
//@endif
//@import common/mask.wgsl
//@import common/side.wgsl
//@import common/row_block.wgsl
//@if vec4_io
//@import common/load_vec4.wgsl
//@else
//@import common/load_scalar.wgsl
//@endif

override WORKGROUP: u32 = 128u; // BLOCK_Q · LANES
override BLOCK_Q: u32 = 32u;    // query rows per workgroup
override BLOCK_K: u32 = 32u;    // keys per tile, a multiple of LANES
override LANES: u32 = 4u;       // invocations per query row
override DK: u32 = 64u;         // head dim of Q and K
override DV: u32 = 64u;         // head dim of V and O
override DK4: u32 = 16u;        // DK / 4 rounded up
override DV4: u32 = 16u;        // DV / 4 rounded up
override KV4: u32 = 16u;        // max(DK4, DV4): the K/V tile's row length
override VARLEN: bool = false;

const RESCALE_THRESHOLD: f32 = 8.0;

@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

var<workgroup> q_tile: array<vec4<f32>, BLOCK_Q * DK4>;
var<workgroup> kv_tile: array<vec4<f32>, BLOCK_K * KV4>;
var<workgroup> s_tile: array<f32, BLOCK_Q * BLOCK_K>; // scores, then probabilities
var<workgroup> row_part: array<f32, WORKGROUP>;          // per-lane maxima, then sums

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    var blk: RowBlock;
    if (!enter_row_block(linear_workgroup(wid, nwg), BLOCK_Q, &blk)) {
        return;
    }
    let b = blk.b;
    let h = blk.h;
    let r = lid / LANES;  // this invocation's row in the block
    let lane = lid % LANES;
    let i = blk.i0 + r;
    let im = min(i, blk.len_q - 1u); // rows past Lq compute on a valid row, never written
    let center = row_center(b, h, im);
    if (has_flag(FLAG_LOCAL)) {
        blk.full_end = blk.full_begin; // every key is tested
    }
    clamp_full_range(&blk);
    let k_head = k_head_of(blk);
    let v_head = v_head_of(blk);
    let weighted = has_flag(FLAG_DROPOUT) || has_flag(FLAG_LOCAL);

    // The scaled Q block, zero past the sequence's rows.
    let q_head = q_head_of(blk);
    for (var e = lid; e < BLOCK_Q * DK4; e += WORKGROUP) {
        let row = blk.i0 + e / DK4;
        var x = vec4<f32>(0.0);
        if (row < blk.len_q) {
            x = load_q4(q_head + row * params.q_sl, e % DK4) * params.scale;
        }
        q_tile[e] = x;
    }

    var o: array<vec4<f32>, SLOTS>;
    for (var s = 0u; s < SLOTS; s++) {
        o[s] = vec4<f32>(0.0);
    }
    var m = neg_inf();
    var l_lane = 0.0; // this lane's share of the row's sum (its keys), summed over lanes at the end

    for (var j0 = blk.k_begin; j0 < blk.k_end; j0 += i32(BLOCK_K)) {
        // 1. K tile (zero past the range), then this lane's scores and their maximum.
        workgroupBarrier();
        for (var e = lid; e < BLOCK_K * DK4; e += WORKGROUP) {
            let j = j0 + i32(e / DK4);
            var x = vec4<f32>(0.0);
            if (j < blk.k_end) {
                x = load_k4(k_head + u32(j) * params.k_sl, e % DK4);
            }
            kv_tile[(e / DK4) * KV4 + e % DK4] = x;
        }
        workgroupBarrier();
        var lane_max = neg_inf();
        for (var jj = lane; jj < BLOCK_K; jj += LANES) {
            let j = j0 + i32(jj);
            var s = neg_inf();
            if (j < blk.k_end) {
                var acc = vec4<f32>(0.0);
                for (var d4 = 0u; d4 < DK4; d4++) {
                    acc += q_tile[r * DK4 + d4] * kv_tile[jj * KV4 + d4];
                }
                let masked_range = j < blk.full_begin || j >= blk.full_end;
                s = block_score((acc.x + acc.y) + (acc.z + acc.w), masked_range, b, h, im, u32(j), center);
            }
            s_tile[r * BLOCK_K + jj] = s;
            if (s > lane_max) { // NaN never raises the max; it reaches l and O through exp below
                lane_max = s;
            }
        }
        row_part[lid] = lane_max;
        // 2. V tile over the K tile; meanwhile each lane turns its own scores into probabilities
        //    against the row's maximum (read from the lanes' maxima in a fixed order, so every
        //    lane of the row takes the same rescaling decision).
        workgroupBarrier();
        for (var e = lid; e < BLOCK_K * DV4; e += WORKGROUP) {
            let j = j0 + i32(e / DV4);
            var x = vec4<f32>(0.0);
            if (j < blk.k_end) {
                x = load_v4(v_head + u32(j) * params.v_sl, e % DV4);
            }
            kv_tile[(e / DV4) * KV4 + e % DV4] = x;
        }
        var tile_max = neg_inf();
        for (var t = 0u; t < LANES; t++) {
            tile_max = max(tile_max, row_part[r * LANES + t]); // lane maxima are never NaN
        }
        if (tile_max > m + RESCALE_THRESHOLD) {
            let alpha = exp(m - tile_max);
            l_lane *= alpha;
            for (var s = 0u; s < SLOTS; s++) {
                o[s] *= alpha;
            }
            m = tile_max;
        }
        for (var jj = lane; jj < BLOCK_K; jj += LANES) {
            let s = s_tile[r * BLOCK_K + jj];
            var p = 0.0;
            if (!is_masked(s)) {
                p = exp(s - m);
                l_lane += p;
                if (weighted) {
                    p *= value_weight(b, h, im, u32(j0 + i32(jj)), center);
                }
            }
            s_tile[r * BLOCK_K + jj] = p;
        }
        // 3. O[r, this lane's slice] += P[r, :] · V.
        workgroupBarrier();
        for (var jj = 0u; jj < BLOCK_K; jj++) {
            let p = s_tile[r * BLOCK_K + jj];
            // A key of weight 0 (masked or dropped) contributes nothing: a NaN or inf in its V
            // row must not reach the row (0 · inf is NaN).
            if (!(p == 0.0)) { // not `!=`: it may compile to an ordered compare, false for NaN
                for (var s = 0u; s < SLOTS; s++) {
                    let c4 = lane + s * LANES;
                    if (c4 < DV4) {
                        o[s] += p * kv_tile[jj * KV4 + c4];
                    }
                }
            }
        }
    }
    // The row's sum: the lanes' shares added in a fixed order (the same in every lane).
    row_part[lid] = l_lane;
    workgroupBarrier();
    var l = 0.0;
    for (var t = 0u; t < LANES; t++) {
        l += row_part[r * LANES + t];
    }

    // Normalize and write; a row with no visible key (l = 0) gets O = 0 and LSE = −inf; a NaN
    // score anywhere in the row made l NaN, which reaches O and the LSE.
    if (i < blk.len_q) {
        var inv = 0.0;
        if (!(l == 0.0)) {
            inv = 1.0 / l;
        }
        let o_row = o_head_of(blk) + i * params.o_sl;
        for (var s = 0u; s < SLOTS; s++) {
            let c4 = lane + s * LANES;
            if (c4 < DV4) {
                store_o4(o_row, c4, o[s] * inv);
            }
        }
        if (has_flag(FLAG_LSE) && lane == 0u) {
            lse[lse_row0_of(blk) + i] = lse_of(m, l);
        }
    }
}
