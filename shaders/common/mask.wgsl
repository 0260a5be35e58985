// Score post-processing of ATTENTION.md §1 steps 2–4 (soft cap, additive bias, masks) and the
// post-softmax weighting of step 6 and §4 (dropout, local-p Gaussian). Needs common/philox.wgsl, a
// centers piece (common/centers.wgsl or common/no_centers.wgsl: `row_center`), an ALiBi piece
// (common/alibi.wgsl or common/no_alibi.wgsl: `alibi_slope`) and a key-lengths piece
// (common/side.wgsl or common/side_records.wgsl: `key_lengths_at`). Bindings 8 and 9 are bound to a
// dummy buffer when the matching flag is off.

@group(0) @binding(8) var<storage, read> bias: array<elem>;
// Bool mask, one byte per element (NumPy/PyTorch layout), read four to a word.
@group(0) @binding(9) var<storage, read> mask_bytes: array<u32>;

// Aligned-position offsets of batch b (i' = i + offset): the uniform's, or, with the per-sequence
// flags (bottom-right alignment with key lengths), min(len_b, Lk) − Lq so that each sequence's
// last query lines up with its last valid key. Kernels that skip key ranges use these too.
fn seq_offset(b: u32) -> i32 {
    if (has_flag(FLAG_VARLEN)) {
        let seq = enter_sequence(b);
        return i32(seq.w) - i32(seq.y);
    }
    return i32(min(key_lengths_at(b), params.len_k)) - i32(params.len_q);
}

// Packed sequences (FLAG_VARLEN): sequence b's queries are rows [cu_q[b], cu_q[b + 1]) of the packed
// Q and O, its keys rows [cu_k[b], cu_k[b + 1]) of K and V, with cu_q in binding 9 and cu_k in
// the side buffer (no boolean mask or key lengths then). Offsets are clamped to the packed rows
// (total_q, total_k), so inconsistent offsets never address outside the tensors. Returns (first
// query row, query rows, first key row, keys). Read from the buffers each time rather than kept in
// private variables: WGSL's uniformity analysis counts private reads as non-uniform, and the
// tiled design's barriers sit under loops bounded by these lengths.
fn enter_sequence(b: u32) -> vec4<u32> {
    let q0 = min(mask_bytes[b], params.total_q);
    let q1 = clamp(mask_bytes[b + 1u], q0, params.total_q);
    let k0 = min(key_lengths_at(b), params.total_k);
    let k1 = clamp(key_lengths_at(b + 1u), k0, params.total_k);
    return vec4<u32>(q0, q1 - q0, k0, k1 - k0);
}

fn causal_offset(b: u32) -> i32 {
    if (has_flag(FLAG_CAUSAL_PER_SEQ)) {
        return seq_offset(b);
    }
    return params.causal_offset;
}

fn window_offset(b: u32) -> i32 {
    if (has_flag(FLAG_WINDOW_PER_SEQ)) {
        return seq_offset(b);
    }
    return params.window_offset;
}

// ALiBi distances are measured from the bottom-right aligned position (per sequence with
// FLAG_ALIBI_PER_SEQ).
fn alibi_offset(b: u32) -> i32 {
    if (has_flag(FLAG_ALIBI_PER_SEQ)) {
        return seq_offset(b);
    }
    return params.alibi_offset;
}

// Structural masks (key padding, causal, window, local-p, boolean) of key j for query i, batch b,
// head h; `center` is the row's local-p position (`row_center`, read once per row by the caller).
fn key_allowed(b: u32, h: u32, i: u32, j: u32, center: f32) -> bool {
    if (has_flag(FLAG_KEY_LENGTHS) && j >= key_lengths_at(b)) {
        return false;
    }
    if (has_flag(FLAG_CAUSAL) && i32(j) > i32(i) + causal_offset(b)) {
        return false;
    }
    if (has_flag(FLAG_WINDOW)) {
        let pos = i32(i) + window_offset(b);
        if (i32(j) < pos - params.window_left || i32(j) > pos + params.window_right) {
            return false;
        }
    }
    if (has_flag(FLAG_LOCAL) && abs(f32(j) - center) > params.local_radius) {
        return false;
    }
    if (has_flag(FLAG_MASK)) {
        let e = params.mask_off + b * params.mask_sb + h * params.mask_sh + i * params.mask_sl + j;
        if (((mask_bytes[e >> 2u] >> ((e & 3u) * 8u)) & 0xffu) == 0u) {
            return false;
        }
    }
    return true;
}

// Soft cap, bias, then ALiBi, for an already scaled score; -inf when the key is masked (zero-score
// masking tests the score before cap and bias: NeurJudge pads with zero vectors).
fn finish_score(scaled: f32, b: u32, h: u32, i: u32, j: u32, center: f32) -> f32 {
    if (!key_allowed(b, h, i, j, center) || (has_flag(FLAG_ZERO_SCORE) && scaled == 0.0)) {
        return neg_inf();
    }
    var s = scaled;
    if (has_flag(FLAG_SOFTCAP)) {
        // ±inf scores cap to ±c; NaN stays NaN (no clamp: clamp of NaN may return a bound).
        s = params.softcap * tanh_precise(s / params.softcap);
    }
    if (has_flag(FLAG_BIAS)) {
        s += f32(bias[params.bias_off + b * params.bias_sb + h * params.bias_sh + i * params.bias_sl + j]);
    }
    if (has_flag(FLAG_ALIBI)) {
        // A slope of 0 adds exactly 0 (never 0 · inf: distances are finite).
        s -= alibi_slope(b, h) * f32(abs(i32(i) + alibi_offset(b) - i32(j)));
    }
    return s;
}

// Factor applied to probability P[i, j] after the softmax, in the weighted sum only (the LSE and
// the softmax denominator are unaffected): dropout keep/scale, then the local-p Gaussian.
fn value_weight(b: u32, h: u32, i: u32, j: u32, center: f32) -> f32 {
    var w = 1.0;
    if (has_flag(FLAG_DROPOUT)) {
        if (random_u32(b, h, i, j) < params.dropout_threshold) {
            return 0.0;
        }
        w = params.dropout_scale;
    }
    if (has_flag(FLAG_LOCAL)) {
        let d = f32(j) - center;
        w *= exp(-d * d * params.local_gauss);
    }
    return w;
}
