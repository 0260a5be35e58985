// Fused masked softmax over each row of S (in place: S in, P out) and the row's LSE; P includes
// the dropout and local-p factors (`value_weight`). One workgroup per row.

//@switches alibi
//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/philox.wgsl
//@import common/centers.wgsl
//@if alibi
//@import common/alibi.wgsl
//@else
//@import common/no_alibi.wgsl
//@endif
//@import common/mask.wgsl
//@import common/side.wgsl

override WORKGROUP: u32 = 64u; // a power of two (tree reduction)

@group(0) @binding(1) var<storage, read_write> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse: array<f32>;

var<workgroup> red_max: array<f32, WORKGROUP>;
var<workgroup> red_sum: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    if (row >= params.bh_count * params.len_q) {
        return;
    }
    let bh = params.bh_base + row / params.len_q;
    let i = row % params.len_q;
    let b = bh / params.heads_q;
    let h = bh % params.heads_q;
    let base = row * params.len_k;

    let center = row_center(b, h, i);
    // Pass 1: finished scores written back; running (max, sum of exp) per invocation.
    var m = neg_inf();
    var l = 0.0;
    for (var j = lid; j < params.len_k; j += WORKGROUP) {
        let s = finish_score(scores[base + j], b, h, i, j, center);
        scores[base + j] = s;
        if (!is_masked(s)) {
            if (s > m) {
                l = l * exp(m - s) + 1.0;
                m = s;
            } else {
                l += exp(s - m);
            }
        }
    }
    red_max[lid] = m;
    red_sum[lid] = l;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let m1 = red_max[lid];
            let m2 = red_max[lid + stride];
            let mm = max(m1, m2);
            if (!is_masked(mm)) {
                red_sum[lid] = red_sum[lid] * exp(m1 - mm) + red_sum[lid + stride] * exp(m2 - mm);
                red_max[lid] = mm;
            } else {
                red_sum[lid] += red_sum[lid + stride]; // 0, or NaN from NaN scores
            }
        }
        workgroupBarrier();
    }
    let row_max = red_max[0];
    let row_sum = red_sum[0];
    // No key took part (a row whose only unmasked scores are NaN is not empty: its sum is NaN).
    let empty = is_masked(row_max) && row_sum == 0.0;

    // Pass 2: normalized probabilities; a fully masked row is all zeros.
    let weighted = has_flag(FLAG_DROPOUT) || has_flag(FLAG_LOCAL);
    for (var j = lid; j < params.len_k; j += WORKGROUP) {
        var p = 0.0;
        if (!empty) {
            p = exp(scores[base + j] - row_max) / row_sum;
            if (weighted && p > 0.0) {
                p *= value_weight(b, h, i, j, center);
            }
        }
        scores[base + j] = p;
    }
    if (lid == 0u && has_flag(FLAG_LSE)) {
        var out = neg_inf();
        if (is_nan(row_sum) || is_nan(row_max)) {
            out = nan_f32(); // a NaN score reached the row
        } else if (!empty) {
            out = row_max + log(row_sum);
        }
        lse[params.lse_off + bh * params.len_q + i] = out;
    }
}
