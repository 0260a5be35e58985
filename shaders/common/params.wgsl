// Problem description shared by every attention kernel; mirrors `kernels::Params` on the host.
// Offsets and strides are in elements. `bh` indexes (batch, query head) pairs: bh = b * heads_q + h.
// Offsets are relative to the binding and may wrap around 2^32 (u32 arithmetic is modular): when a
// problem is split into chunks, each chunk binds only the window of a tensor it touches.
struct Params {
    batch: u32,
    heads_q: u32,
    heads_kv: u32,
    len_q: u32,
    len_k: u32,
    dim_k: u32,
    dim_v: u32,
    // First (b, h) pair and number of pairs covered by this dispatch (large problems are chunked).
    bh_base: u32,
    bh_count: u32,
    flags: u32,
    scale: f32,
    softcap: f32,
    q_off: u32, q_sb: u32, q_sh: u32, q_sl: u32,
    k_off: u32, k_sb: u32, k_sh: u32, k_sl: u32,
    v_off: u32, v_sb: u32, v_sh: u32, v_sl: u32,
    o_off: u32, o_sb: u32, o_sh: u32, o_sl: u32,
    bias_off: u32, bias_sb: u32, bias_sh: u32, bias_sl: u32,
    mask_off: u32, mask_sb: u32, mask_sh: u32, mask_sl: u32,
    // Aligned query position i' = i + offset (causal and window may use different alignments).
    causal_offset: i32,
    window_offset: i32,
    window_left: i32,
    window_right: i32,
    // Element offset of LSE row 0 in its binding (wrapping: chunks bind a window of the tensor).
    lse_off: u32,
    // Packed sequences (FLAG_VARLEN): rows of the packed Q/O and K/V tensors; every offset read from
    // cu_seqlens is clamped to them.
    total_q: u32,
    total_k: u32,
    // Dropout (§1 step 6): an element is dropped when its Philox word is below the threshold
    // (p · 2^32); kept elements are scaled by 1 / (1 − p).
    dropout_threshold: u32,
    seed_lo: u32,
    seed_hi: u32,
    dropout_scale: f32,
    // Local-p (§4): query row i sees keys with |j − centers[i]| ≤ local_radius, each weight then
    // multiplied by exp(−(j − centers[i])² · local_gauss).
    local_radius: f32,
    local_gauss: f32,
    centers_off: u32,
    // Element offset of the additive score vector v (§2).
    score_off: u32,
    // Query rows [row_base, row_base + row_count) of a row-chunked kernel (additive_hidden).
    row_base: u32,
    row_count: u32,
    // The fused kernel visits pair p of its dispatch as (p * bh_stride) % bh_count: coprime with
    // bh_count, so every contiguous run of workgroups mixes batches (uneven key lengths).
    bh_stride: u32,
    // ALiBi: aligned position offset of every batch (bottom-right, Lk − Lq) unless per sequence.
    alibi_offset: i32,
}

@group(0) @binding(0) var<uniform> params: Params;

const FLAG_BIAS: u32 = 1u;
const FLAG_MASK: u32 = 2u;
const FLAG_KEY_LENGTHS: u32 = 4u;
const FLAG_CAUSAL: u32 = 8u;
const FLAG_WINDOW: u32 = 16u;
const FLAG_LSE: u32 = 32u;
const FLAG_SOFTCAP: u32 = 64u;
const FLAG_DROPOUT: u32 = 128u;
const FLAG_ZERO_SCORE: u32 = 256u;
const FLAG_LOCAL: u32 = 512u;
// Bottom-right causal / window aligned per batch to the key length: i' = i + min(len_b, Lk) − Lq.
const FLAG_CAUSAL_PER_SEQ: u32 = 1024u;
const FLAG_WINDOW_PER_SEQ: u32 = 2048u;
// Packed variable-length sequences (fused kernel): binding 9 holds cu_seqlens_q and the side buffer
// (common/side.wgsl) cu_seqlens_k, len_q / len_k are the longest sequences, and per-sequence alignment uses each
// sequence's own lengths.
const FLAG_VARLEN: u32 = 4096u;
// ALiBi: scores minus slope_h · |i' − j| (common/alibi.wgsl), per sequence like the masks above.
const FLAG_ALIBI: u32 = 8192u;
const FLAG_ALIBI_PER_SEQ: u32 = 16384u;
// ALiBi slopes [B, Hq] (one per batch and head) instead of [Hq].
const FLAG_ALIBI_PER_BATCH: u32 = 32768u;

fn has_flag(flag: u32) -> bool {
    return (params.flags & flag) != 0u;
}

fn neg_inf() -> f32 {
    // Through a var: `bitcast<f32>(0xff800000u)` is a const-expression, and WGSL compilers that
    // evaluate those (Tint, in browsers) refuse a non-finite result.
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

// NaN by its bits: a compiler may fold `x != x`, and WGSL leaves log/exp of NaN undefined
// (SwiftShader's log(NaN) is a finite 89.1), so NaN results are written explicitly.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn nan_f32() -> f32 {
    var bits = 0x7fc00000u; // a var, not a const-expression (see neg_inf)
    return bitcast<f32>(bits);
}

// The LSE m + ln(l) of a softmax row with running max m and sum l: −∞ for a row that saw no key
// (l = 0), NaN when a NaN score reached the row (in m or in l: WGSL's max may drop a NaN, and
// log(NaN) is undefined, so the NaN is written explicitly).
fn lse_of(m: f32, l: f32) -> f32 {
    if (is_nan(m) || is_nan(l)) {
        return nan_f32();
    }
    if (l == 0.0) {
        return neg_inf();
    }
    return m + log(l);
}

// True for a masked score: exactly -inf. Every finite score takes part, however negative (a bias of
// f32::MIN is a number, not a mask), and NaN stays unmasked so that it propagates.
fn is_masked(s: f32) -> bool {
    return s == neg_inf();
}

// tanh with a small relative error for every x: drivers' tanh (often (e^2x - 1)/(e^2x + 1)) loses
// relative precision near 0, which made a soft cap of 1e6 differ from no cap. An odd Taylor series
// below 0.125 (truncation error < 1e-9 relative), (1 - e)/(1 + e) with e = exp(-2|x|) above.
// tanh(±inf) = ±1 and tanh(NaN) = NaN.
fn tanh_precise(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.125) {
        let x2 = x * x;
        return x * (1.0 + x2 * (-0.33333334 + x2 * (0.13333334 + x2 * -0.05396825)));
    }
    let e = exp(-2.0 * a);
    let t = (1.0 - e) / (1.0 + e);
    return select(-t, t, x >= 0.0);
}

// Query head h reads key/value head h / (heads_q / heads_kv) (GQA; MQA when heads_kv = 1).
fn kv_head(h: u32) -> u32 {
    return h / (params.heads_q / params.heads_kv);
}
