// Fused single-pass attention (FlashAttention forward) with online softmax. Each invocation owns
// ROWS query rows of one (b, h) pair (rows lid, lid + WORKGROUP, …) and streams every visible key
// once: Q rows and O accumulators live in registers, each loaded K/V vector feeds ROWS rows, and
// the Lq×Lk score matrix never exists.
// Design notes:
// - No workgroup memory and no barriers: every lane needs the same K/V row at the same time, so
//   rows are broadcast (by the memory system, or by subgroupBroadcast after a cooperative load).
//   On SIMD CPU drivers such as lavapipe every load is a per-lane loop and barriers spill live
//   registers, so the kernel maximizes arithmetic per loaded vector and has no barrier.
// - `//@each_row` … `//@end_row` blocks are repeated ROWS times by the host with `{r}` replaced by the
//   row number, so per-row state is plain variables the compiler keeps in registers.
// - Lazy rescaling: the running max only moves when a score exceeds it by RESCALE_THRESHOLD, so
//   probabilities stay ≤ e^8 and the O accumulator is rescaled rarely; the result is exact math.
// - Key range: keys no row can see are never visited; keys every row fully sees skip the per-element
//   mask test (the causal/window band pays for it). Local-p rows each have their own window: the
//   range is the union over the subgroup's rows and every key is tested.
// - Dropout and the local-p Gaussian weight P in the weighted sum only (`value_weight`); the
//   softmax denominator and LSE use the unweighted probabilities.
// - Packed variable-length sequences (VARLEN): the (b, h) pair is a sequence and a head; its
//   first rows and lengths come from cu_seqlens on the GPU (`enter_sequence`, clamped to the
//   tensors), positions i, j stay within the sequence, and LSE is laid out [Hq, total_q].

//@switches rows vec4_io subgroup additive local alibi
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
//@import common/loops_unrolled.wgsl
//@if subgroup
//@import common/fetch_subgroup.wgsl
//@else
//@import common/fetch_plain.wgsl
//@endif
//@if additive
//@import common/score_additive.wgsl
//@else
//@import common/score_dot.wgsl
//@endif

override WORKGROUP: u32 = 64u;
override DK: u32 = 64u;  // head dim of Q and K
override DV: u32 = 64u;  // head dim of V and O
override DK4: u32 = 16u; // DK / 4 rounded up
override DV4: u32 = 16u; // DV / 4 rounded up
// Packed variable-length sequences (set with FLAG_VARLEN): a specialization constant, so that the
// dense kernel compiles without the per-sequence addressing.
override VARLEN: bool = false;

const MAX_HEAD_VEC4: u32 = 64u; // head dims up to 256
const RESCALE_THRESHOLD: f32 = 8.0;

@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(input: KernelInputs) {
    let lid = input.lid;
    let lane = lane_of(input);
    init_score_weights();
    var blk: RowBlock;
    if (!enter_row_block(linear_workgroup(input.wid, input.nwg), WORKGROUP * ROWS, &blk)) {
        return;
    }
    let b = blk.b;
    let h = blk.h;
    let i0 = blk.i0;
    let len_q = blk.len_q;
    let len_k = blk.len_k;
    let weighted = has_flag(FLAG_DROPOUT) || has_flag(FLAG_LOCAL);
    //@each_row
    let i_{r} = i0 + lid + {r}u * WORKGROUP;
    let im_{r} = min(i_{r}, len_q - 1u); // rows past Lq compute on a valid row, never written
    let c_{r} = row_center(b, h, im_{r});
    //@end_row
    if (has_flag(FLAG_LOCAL)) {
        // Keys with |j − pᵢ| ≤ radius for some row of this invocation, then of its subgroup.
        var lo = i32(len_k);
        var hi = 0i;
        //@each_row
        lo = min(lo, i32(ceil(c_{r} - params.local_radius)));
        hi = max(hi, i32(floor(c_{r} + params.local_radius)) + 1);
        //@end_row
        blk.k_begin = max(blk.k_begin, uniform_min(lo));
        blk.k_end = min(blk.k_end, uniform_max(hi));
        blk.full_end = blk.full_begin; // every key is tested
    }
    clamp_full_range(&blk);
    let k_begin = blk.k_begin;
    let k_end = blk.k_end;
    let full_begin = blk.full_begin;
    let full_end = blk.full_end;

    let q_head = q_head_of(blk);
    let k_head = k_head_of(blk);
    let v_head = v_head_of(blk);
    //@each_row
    var q_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var d4 = 0u; d4 < k_vecs(); d4++) {
        q_{r}[d4] = load_q4(q_head + im_{r} * params.q_sl, d4) * params.scale;
    }
    var o_{r}: array<vec4<f32>, MAX_HEAD_VEC4>;
    for (var c4 = 0u; c4 < v_vecs(); c4++) {
        o_{r}[c4] = vec4<f32>(0.0);
    }
    var m_{r} = neg_inf();
    var l_{r} = 0.0;
    //@end_row

    for (var j = k_begin; j < k_end; j++) {
        let ju = u32(j);
        let masked_range = j < full_begin || j >= full_end;
        fetch_k(k_head + ju * params.k_sl, lane);
        //@each_row
        var acc_{r} = vec4<f32>(0.0);
        for (var d4 = 0u; d4 < k_vecs(); d4++) {
            acc_{r} += score_term(q_{r}[d4], kv[d4], d4);
        }
        let s_{r} = block_score((acc_{r}.x + acc_{r}.y) + (acc_{r}.z + acc_{r}.w), masked_range, b, h, im_{r}, ju, c_{r});
        var p_{r} = 0.0;
        if (!is_masked(s_{r})) {
            if (s_{r} > m_{r} + RESCALE_THRESHOLD) {
                let alpha = exp(m_{r} - s_{r});
                l_{r} *= alpha;
                for (var c4 = 0u; c4 < v_vecs(); c4++) {
                    o_{r}[c4] *= alpha;
                }
                m_{r} = s_{r};
            }
            p_{r} = exp(s_{r} - m_{r});
            l_{r} += p_{r};
            if (weighted) {
                p_{r} *= value_weight(b, h, im_{r}, ju, c_{r});
            }
        }
        //@end_row
        fetch_v(v_head + ju * params.v_sl, lane);
        //@each_row
        // A key of weight 0 (masked or dropped) contributes nothing: a NaN or inf in its V row
        // must not reach rows that do not weigh it (0 · inf is NaN).
        if (!(p_{r} == 0.0)) { // not `!=`: it may compile to an ordered compare, false for NaN
            for (var c4 = 0u; c4 < v_vecs(); c4++) {
                o_{r}[c4] += p_{r} * kv[c4];
            }
        }
        //@end_row
    }

    // Normalize and write; a row with no visible key (l = 0) gets O = 0 and LSE = -inf; a NaN
    // score anywhere in the row made l NaN, which reaches O and the LSE.
    let o_head = o_head_of(blk);
    let lse_row0 = lse_row0_of(blk);
    //@each_row
    if (i_{r} < len_q) {
        var inv_{r} = 0.0;
        if (!(l_{r} == 0.0)) {
            inv_{r} = 1.0 / l_{r};
        }
        for (var c4 = 0u; c4 < v_vecs(); c4++) {
            store_o4(o_head + i_{r} * params.o_sl, c4, o_{r}[c4] * inv_{r});
        }
        if (has_flag(FLAG_LSE)) {
            lse[lse_row0 + i_{r}] = lse_of(m_{r}, l_{r});
        }
    }
    //@end_row
}
