// Attention pooling, sequence → one vector (ATTENTION.md §6 code-wise, §7): for each batch b,
//   score_t = max_w S[b, t, w]            (W = 1: the score itself; code-wise: the row max)
//   α = softmax_t(score)                  (MODE_SOFTMAX; masked steps excluded, all masked → 0)
//   α_t = exp(tanh(score_t + bias_t))·m_t / (Σ + ε)   (MODE_FEED_FORWARD, Raffel & Ellis)
//   α_t = m_t                             (MODE_SUM)
//   out[b, :] = Σ_t α_t X[b, t, :]
// One workgroup per batch; α is written to `alpha` (the returned weights) and read back after a
// storage barrier.

//@import common/grid.wgsl

override WORKGROUP: u32 = 64u; // a power of two (tree reduction)

struct PoolParams {
    batch: u32,
    len: u32,
    width: u32,
    dim: u32,
    mode: u32,
    flags: u32,
    eps: f32,
    _pad0: u32,
    s_off: u32, s_sb: u32, s_st: u32, s_sw: u32,
    x_off: u32, x_sb: u32, x_st: u32, x_sd: u32,
    mask_off: u32, mask_sb: u32, bias_off: u32, _pad1: u32,
    o_off: u32, o_sb: u32, o_sd: u32, _pad2: u32,
}

const MODE_SOFTMAX: u32 = 0u;
const MODE_FEED_FORWARD: u32 = 1u;
const MODE_SUM: u32 = 2u;
const POOL_MASK: u32 = 1u;
const POOL_BIAS: u32 = 2u;

@group(0) @binding(0) var<uniform> pp: PoolParams;
@group(0) @binding(1) var<storage, read> scores: array<elem>;
@group(0) @binding(2) var<storage, read> x: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;
@group(0) @binding(4) var<storage, read_write> alpha: array<f32>;
@group(0) @binding(5) var<storage, read> mask_bytes: array<u32>;
@group(0) @binding(6) var<storage, read> step_bias: array<elem>;

var<workgroup> red_max: array<f32, WORKGROUP>;
var<workgroup> red_sum: array<f32, WORKGROUP>;

fn neg_inf() -> f32 {
    // Through a var: `bitcast<f32>(0xff800000u)` is a const-expression, and WGSL compilers that
    // evaluate those (Tint, in browsers) refuse a non-finite result.
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

fn step_kept(b: u32, t: u32) -> bool {
    if ((pp.flags & POOL_MASK) == 0u) {
        return true;
    }
    let e = pp.mask_off + b * pp.mask_sb + t;
    return ((mask_bytes[e >> 2u] >> ((e & 3u) * 8u)) & 0xffu) != 0u;
}

// The step's score after the mode's transform, in log space for softmax (−∞ = excluded) and as a
// non-negative weight for the other modes.
fn step_value(b: u32, t: u32) -> f32 {
    let kept = step_kept(b, t);
    if (pp.mode == MODE_SUM) {
        return select(0.0, 1.0, kept);
    }
    var s = neg_inf();
    for (var w = 0u; w < pp.width; w++) {
        s = max(s, f32(scores[pp.s_off + b * pp.s_sb + t * pp.s_st + w * pp.s_sw]));
    }
    if (pp.mode == MODE_FEED_FORWARD) {
        var e = s;
        if ((pp.flags & POOL_BIAS) != 0u) {
            e += f32(step_bias[pp.bias_off + t]);
        }
        return select(0.0, exp(tanh(clamp(e, -15.0, 15.0))), kept);
    }
    return select(neg_inf(), s, kept);
}

fn reduce_sum(lid: u32, value: f32) -> f32 {
    red_sum[lid] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red_sum[lid] += red_sum[lid + stride];
        }
        workgroupBarrier();
    }
    let total = red_sum[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let b = linear_workgroup(wid, nwg);
    if (b >= pp.batch) {
        return;
    }
    let row = b * pp.len;
    // Pass 1: step values into alpha; the row max (softmax) over them.
    var m = neg_inf();
    for (var t = lid; t < pp.len; t += WORKGROUP) {
        let s = step_value(b, t);
        alpha[row + t] = s;
        m = max(m, s);
    }
    red_max[lid] = m;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red_max[lid] = max(red_max[lid], red_max[lid + stride]);
        }
        workgroupBarrier();
    }
    let row_max = red_max[0];
    // Pass 2: unnormalized weights and their sum; then the normalized α.
    var partial = 0.0;
    for (var t = lid; t < pp.len; t += WORKGROUP) {
        var w = alpha[row + t];
        if (pp.mode == MODE_SOFTMAX) {
            w = select(0.0, exp(w - row_max), w > neg_inf());
        }
        alpha[row + t] = w;
        partial += w;
    }
    let total = reduce_sum(lid, partial);
    var norm = 1.0;
    if (pp.mode == MODE_SOFTMAX) {
        norm = select(0.0, 1.0 / total, total > 0.0);
    } else if (pp.mode == MODE_FEED_FORWARD) {
        norm = 1.0 / (total + pp.eps);
    }
    for (var t = lid; t < pp.len; t += WORKGROUP) {
        alpha[row + t] *= norm;
    }
    storageBarrier();
    workgroupBarrier();
    // Pass 3: out[b, d] = Σ_t α_t X[b, t, d], lanes over d.
    for (var d = lid; d < pp.dim; d += WORKGROUP) {
        var acc = 0.0;
        for (var t = 0u; t < pp.len; t++) {
            acc += alpha[row + t] * f32(x[pp.x_off + b * pp.x_sb + t * pp.x_st + d * pp.x_sd]);
        }
        out[pp.o_off + b * pp.o_sb + d * pp.o_sd] = elem(acc);
    }
}
