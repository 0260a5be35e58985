// A block of query rows of one (b, h) pair, as the fused designs see it: which pair and rows the
// workgroup owns, its sequence's lengths (packed sequences read theirs from cu_seqlens), and the
// keys it visits. Needs common/params.wgsl, common/grid.wgsl and common/mask.wgsl; the
// kernel declares `override VARLEN: bool`.

struct RowBlock {
    b: u32,
    h: u32,
    // Flat (b, h) index: the LSE row of the dense layout.
    bh: u32,
    // First query row of the block, within its sequence.
    i0: u32,
    // Last query row of the block that exists (i0 + rows − 1, clamped to the sequence).
    i_last: u32,
    len_q: u32,
    len_k: u32,
    // First rows of the sequence in the packed tensors (0 for dense tensors).
    q_row0: u32,
    k_row0: u32,
    // Keys some row of the block can see: [k_begin, k_end). Keys in [full_begin, full_end) are
    // seen by every row as far as causal, window and padding go (no per-element test needed).
    k_begin: i32,
    k_end: i32,
    full_begin: i32,
    full_end: i32,
}

// The block of workgroup `t` with `rows` query rows per block; false when the workgroup has no
// rows (past the grid, or past a packed sequence's end). Local-p windows are not narrowed here:
// the kernel intersects [k_begin, k_end) with its rows' windows.
fn enter_row_block(t: u32, rows: u32, blk: ptr<function, RowBlock>) -> bool {
    let q_blocks = (params.len_q + rows - 1u) / rows;
    if (t >= params.bh_count * q_blocks) {
        return false;
    }
    let bh = params.bh_base + ((t / q_blocks) * params.bh_stride) % params.bh_count;
    let i0 = (t % q_blocks) * rows;
    let b = bh / params.heads_q;
    // Rows of this (b, h): Lq queries and Lk keys from row 0, or, for packed sequences, sequence
    // b's own lengths and first rows in the packed tensors (its row blocks past len_q do nothing;
    // rows past the longest sequence Lq, which sized the dispatch, are never computed).
    var len_q = params.len_q;
    var len_k = params.len_k;
    var q_row0 = 0u;
    var k_row0 = 0u;
    if (VARLEN) {
        let seq = enter_sequence(b);
        q_row0 = seq.x;
        len_q = min(seq.y, params.len_q);
        k_row0 = seq.z;
        len_k = seq.w;
        if (i0 >= len_q) {
            return false;
        }
    }
    let i_last = min(i0 + rows, len_q) - 1u;
    var k_begin = 0i;
    var k_end = i32(len_k);
    var full_begin = 0i;
    var full_end = i32(len_k);
    if (has_flag(FLAG_KEY_LENGTHS)) {
        k_end = min(k_end, i32(min(key_lengths_at(b), params.len_k))); // lengths are unsigned
        full_end = min(full_end, k_end);
    }
    if (has_flag(FLAG_CAUSAL)) {
        let off = causal_offset(b);
        k_end = min(k_end, i32(i_last) + off + 1);
        full_end = min(full_end, i32(i0) + off + 1);
    }
    if (has_flag(FLAG_WINDOW)) {
        let off = window_offset(b);
        k_begin = max(k_begin, i32(i0) + off - params.window_left);
        k_end = min(k_end, i32(i_last) + off + params.window_right + 1);
        full_begin = max(full_begin, i32(i_last) + off - params.window_left);
        full_end = min(full_end, i32(i0) + off + params.window_right + 1);
    }
    *blk = RowBlock(b, bh % params.heads_q, bh, i0, i_last, len_q, len_k, q_row0, k_row0,
                    k_begin, k_end, full_begin, full_end);
    return true;
}

// Clamps the fully-seen key range into the visited one (after any narrowing of the latter).
fn clamp_full_range(blk: ptr<function, RowBlock>) {
    (*blk).full_begin = clamp((*blk).full_begin, (*blk).k_begin, max((*blk).k_begin, (*blk).k_end));
    (*blk).full_end = clamp((*blk).full_end, (*blk).full_begin, max((*blk).full_begin, (*blk).k_end));
}

// Score of one (row, key) pair from its scaled dot product `s`, after cap, bias, ALiBi and masks;
// `masked_range` (the key is outside the block's fully-seen range) is uniform across the block.
fn block_score(s: f32, masked_range: bool, b: u32, h: u32, i: u32, j: u32, center: f32) -> f32 {
    if (masked_range || (params.flags & (FLAG_SOFTCAP | FLAG_BIAS | FLAG_MASK | FLAG_ZERO_SCORE | FLAG_ALIBI)) != 0u) {
        return finish_score(s, b, h, i, j, center);
    }
    return s;
}

// Element offsets of the block's Q, K, V and O rows (row 0 of the sequence) and of its LSE row
// ([B, Hq, Lq], or [Hq, total_q] for packed sequences).
fn q_head_of(blk: RowBlock) -> u32 {
    return params.q_off + blk.b * params.q_sb + blk.h * params.q_sh + blk.q_row0 * params.q_sl;
}

fn k_head_of(blk: RowBlock) -> u32 {
    return params.k_off + blk.b * params.k_sb + kv_head(blk.h) * params.k_sh + blk.k_row0 * params.k_sl;
}

fn v_head_of(blk: RowBlock) -> u32 {
    return params.v_off + blk.b * params.v_sb + kv_head(blk.h) * params.v_sh + blk.k_row0 * params.v_sl;
}

fn o_head_of(blk: RowBlock) -> u32 {
    return params.o_off + blk.b * params.o_sb + blk.h * params.o_sh + blk.q_row0 * params.o_sl;
}

fn lse_row0_of(blk: RowBlock) -> u32 {
    if (VARLEN) {
        return params.lse_off + blk.h * params.total_q + blk.q_row0;
    }
    return params.lse_off + blk.bh * params.len_q;
}
