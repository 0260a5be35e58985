// Fused single-pass attention (FlashAttention forward): a workgroup owns BLOCK_Q query rows of one
// (b, h) pair and streams keys BLOCK_K at a time through workgroup memory, keeping a running max
// and sum per row (online softmax) and a rescaled output accumulator. S is never materialized.
// Composed after common/params.wgsl and common/mask.wgsl.
//
// Both products are register-tiled: each invocation computes 4 × 4 micro-tiles, rows contiguous,
// columns strided so that neighbouring invocations read neighbouring workgroup-memory words.

override WORKGROUP: u32 = 64u;
override BLOCK_Q: u32 = 32u; // multiple of 4
override BLOCK_K: u32 = 32u; // multiple of 4
override DK: u32 = 64u;      // head dim of Q and K (exact)
override DV: u32 = 64u;      // head dim of V and O (exact)
override DKV_MAX: u32 = 64u; // max(DK, DV_PAD)
override DV_PAD: u32 = 64u;  // DV rounded up to a multiple of 4

@group(0) @binding(1) var<storage, read> q: array<elem>;
@group(0) @binding(2) var<storage, read> k: array<elem>;
@group(0) @binding(3) var<storage, read> v: array<elem>;
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

var<workgroup> q_tile: array<f32, BLOCK_Q * DK>;        // [row][d]
var<workgroup> kv_tile: array<f32, BLOCK_K * DKV_MAX>;  // Kᵀ as [d][key], then V as [key][c]
var<workgroup> p_tile: array<f32, BLOCK_Q * BLOCK_K>;   // scores, then probabilities [row][key]
var<workgroup> o_acc: array<f32, BLOCK_Q * DV_PAD>;     // unnormalized output [row][c]
var<workgroup> row_max: array<f32, BLOCK_Q>;
var<workgroup> row_sum: array<f32, BLOCK_Q>;
var<workgroup> row_rescale: array<f32, BLOCK_Q>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let q_blocks = (params.len_q + BLOCK_Q - 1u) / BLOCK_Q;
    let t = linear_workgroup(wid, nwg);
    if (t >= params.bh_count * q_blocks) {
        return;
    }
    let bh = params.bh_base + t / q_blocks;
    let i0 = (t % q_blocks) * BLOCK_Q;
    let b = bh / params.heads_q;
    let h = bh % params.heads_q;
    let hk = kv_head(h);
    let i_last = min(i0 + BLOCK_Q, params.len_q) - 1u;

    // Keys any row of this block can see: later blocks are never loaded (causal, window, padding).
    var k_begin = 0i;
    var k_end = i32(params.len_k);
    if (has_flag(FLAG_KEY_LENGTHS)) {
        k_end = min(k_end, i32(key_lengths[b]));
    }
    if (has_flag(FLAG_CAUSAL)) {
        k_end = min(k_end, i32(i_last) + params.causal_offset + 1);
    }
    if (has_flag(FLAG_WINDOW)) {
        k_begin = max(k_begin, i32(i0) + params.window_offset - params.window_left);
        k_end = min(k_end, i32(i_last) + params.window_offset + params.window_right + 1);
    }
    // Start on a block boundary so blocks line up across query blocks.
    k_begin = (k_begin / i32(BLOCK_K)) * i32(BLOCK_K);

    let q_base = params.q_off + b * params.q_sb + h * params.q_sh;
    for (var e = lid; e < BLOCK_Q * DK; e += WORKGROUP) {
        let r = e / DK;
        let d = e % DK;
        var x = 0.0;
        if (i0 + r < params.len_q) {
            x = f32(q[q_base + (i0 + r) * params.q_sl + d]);
        }
        q_tile[e] = x;
    }
    for (var e = lid; e < BLOCK_Q * DV_PAD; e += WORKGROUP) {
        o_acc[e] = 0.0;
    }
    for (var r = lid; r < BLOCK_Q; r += WORKGROUP) {
        row_max[r] = neg_inf();
        row_sum[r] = 0.0;
    }

    let k_base = params.k_off + b * params.k_sb + hk * params.k_sh;
    let v_base = params.v_off + b * params.v_sb + hk * params.v_sh;
    let s_cols = BLOCK_K / 4u;  // micro-tile columns of S
    let o_cols = DV_PAD / 4u;   // micro-tile columns of O
    for (var j0 = k_begin; j0 < k_end; j0 += i32(BLOCK_K)) {
        let j0u = u32(j0);
        let j_last = j0u + BLOCK_K - 1u;
        // A block needs per-element masking only where a mask boundary crosses it.
        var needs_mask = has_flag(FLAG_MASK) || j0 + i32(BLOCK_K) > k_end;
        if (has_flag(FLAG_CAUSAL)) {
            needs_mask = needs_mask || i32(j_last) > i32(i0) + params.causal_offset;
        }
        if (has_flag(FLAG_WINDOW)) {
            needs_mask = needs_mask || j0 < i32(i_last) + params.window_offset - params.window_left
                || i32(j_last) > i32(i0) + params.window_offset + params.window_right;
        }

        workgroupBarrier(); // previous block's V reads are done
        for (var e = lid; e < BLOCK_K * DK; e += WORKGROUP) {
            let j = e / DK;
            let d = e % DK;
            var x = 0.0;
            if (j0u + j < params.len_k) {
                x = f32(k[k_base + (j0u + j) * params.k_sl + d]);
            }
            kv_tile[d * BLOCK_K + j] = x;
        }
        workgroupBarrier();

        // S = scale · Q Kᵀ, then cap, bias and masks.
        for (var mt = lid; mt < (BLOCK_Q / 4u) * s_cols; mt += WORKGROUP) {
            let r0 = (mt / s_cols) * 4u;
            let c0 = mt % s_cols;
            var acc0 = vec4<f32>(0.0);
            var acc1 = vec4<f32>(0.0);
            var acc2 = vec4<f32>(0.0);
            var acc3 = vec4<f32>(0.0);
            for (var d = 0u; d < DK; d++) {
                let kr = d * BLOCK_K + c0;
                let kv = vec4<f32>(kv_tile[kr], kv_tile[kr + s_cols], kv_tile[kr + 2u * s_cols], kv_tile[kr + 3u * s_cols]);
                acc0 += q_tile[r0 * DK + d] * kv;
                acc1 += q_tile[(r0 + 1u) * DK + d] * kv;
                acc2 += q_tile[(r0 + 2u) * DK + d] * kv;
                acc3 += q_tile[(r0 + 3u) * DK + d] * kv;
            }
            for (var c = 0u; c < 4u; c++) {
                let jj = c0 + c * s_cols;
                var s = vec4<f32>(acc0[c], acc1[c], acc2[c], acc3[c]) * params.scale;
                for (var rr = 0u; rr < 4u; rr++) {
                    var x = s[rr];
                    if (j0u + jj >= params.len_k) {
                        x = neg_inf();
                    } else if (needs_mask || has_flag(FLAG_SOFTCAP) || has_flag(FLAG_BIAS)) {
                        // Rows past Lq are computed on zeros and never written; clamp their index.
                        let i = min(i0 + r0 + rr, params.len_q - 1u);
                        x = finish_score(x, b, h, i, j0u + jj);
                    }
                    p_tile[(r0 + rr) * BLOCK_K + jj] = x;
                }
            }
        }
        workgroupBarrier();

        // Online softmax per row; V is loaded meanwhile (K is no longer read).
        for (var r = lid; r < BLOCK_Q; r += WORKGROUP) {
            let m_old = row_max[r];
            var m_new = m_old;
            for (var j = 0u; j < BLOCK_K; j++) {
                let s = p_tile[r * BLOCK_K + j];
                if (!is_masked(s)) {
                    m_new = max(m_new, s);
                }
            }
            var alpha = 1.0;
            var sum = 0.0;
            if (is_masked(m_new)) {
                for (var j = 0u; j < BLOCK_K; j++) {
                    p_tile[r * BLOCK_K + j] = 0.0;
                }
            } else {
                alpha = exp(m_old - m_new);
                for (var j = 0u; j < BLOCK_K; j++) {
                    let p = exp(p_tile[r * BLOCK_K + j] - m_new);
                    p_tile[r * BLOCK_K + j] = p;
                    sum += p;
                }
            }
            row_max[r] = m_new;
            row_sum[r] = row_sum[r] * alpha + sum;
            row_rescale[r] = alpha;
        }
        for (var e = lid; e < BLOCK_K * DV_PAD; e += WORKGROUP) {
            let j = e / DV_PAD;
            let c = e % DV_PAD;
            var x = 0.0;
            if (j0u + j < params.len_k && c < DV) {
                x = f32(v[v_base + (j0u + j) * params.v_sl + c]);
            }
            kv_tile[e] = x;
        }
        workgroupBarrier();

        // O = O · rescale + P V.
        for (var mt = lid; mt < (BLOCK_Q / 4u) * o_cols; mt += WORKGROUP) {
            let r0 = (mt / o_cols) * 4u;
            let c0 = mt % o_cols;
            var acc0 = vec4<f32>(0.0);
            var acc1 = vec4<f32>(0.0);
            var acc2 = vec4<f32>(0.0);
            var acc3 = vec4<f32>(0.0);
            for (var j = 0u; j < BLOCK_K; j++) {
                let vr = j * DV_PAD + c0;
                let vv = vec4<f32>(kv_tile[vr], kv_tile[vr + o_cols], kv_tile[vr + 2u * o_cols], kv_tile[vr + 3u * o_cols]);
                acc0 += p_tile[r0 * BLOCK_K + j] * vv;
                acc1 += p_tile[(r0 + 1u) * BLOCK_K + j] * vv;
                acc2 += p_tile[(r0 + 2u) * BLOCK_K + j] * vv;
                acc3 += p_tile[(r0 + 3u) * BLOCK_K + j] * vv;
            }
            let a = vec4<f32>(row_rescale[r0], row_rescale[r0 + 1u], row_rescale[r0 + 2u], row_rescale[r0 + 3u]);
            for (var c = 0u; c < 4u; c++) {
                let col = c0 + c * o_cols;
                o_acc[r0 * DV_PAD + col] = o_acc[r0 * DV_PAD + col] * a.x + acc0[c];
                o_acc[(r0 + 1u) * DV_PAD + col] = o_acc[(r0 + 1u) * DV_PAD + col] * a.y + acc1[c];
                o_acc[(r0 + 2u) * DV_PAD + col] = o_acc[(r0 + 2u) * DV_PAD + col] * a.z + acc2[c];
                o_acc[(r0 + 3u) * DV_PAD + col] = o_acc[(r0 + 3u) * DV_PAD + col] * a.w + acc3[c];
            }
        }
    }
    workgroupBarrier();

    // Normalize and write; a row with no visible key gets O = 0 and LSE = -inf.
    let o_base = params.o_off + b * params.o_sb + h * params.o_sh;
    for (var e = lid; e < BLOCK_Q * DV; e += WORKGROUP) {
        let r = e / DV;
        let c = e % DV;
        if (i0 + r < params.len_q) {
            let l = row_sum[r];
            var o = 0.0;
            if (l > 0.0) {
                o = o_acc[r * DV_PAD + c] / l;
            }
            out[o_base + (i0 + r) * params.o_sl + c] = elem(o);
        }
    }
    if (has_flag(FLAG_LSE)) {
        for (var r = lid; r < BLOCK_Q; r += WORKGROUP) {
            if (i0 + r < params.len_q) {
                var x = neg_inf();
                if (row_sum[r] > 0.0) {
                    x = row_max[r] + log(row_sum[r]);
                }
                lse[bh * params.len_q + i0 + r] = x;
            }
        }
    }
}
