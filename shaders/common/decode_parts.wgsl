// What the decode kernels (flash_decode.wgsl, flash_decode_lanes.wgsl) share: the split layout,
// the partial states they write (`shaders/decode_merge.wgsl` combines the S splits of every row),
// each sequence's key range and split, each row's visible keys, and the score after masks.
// Needs common/params.wgsl and common/mask.wgsl.

// The split layout; mirrors `kernels::flash_decode::DecodeParams`.
struct Decode {
    // Splits S of each (b, kv head) key range (⌈len_b / S⌉ keys each, the last may be shorter).
    splits: u32,
    // Packed rows G·Lq of one (b, kv head) and row blocks ⌈G·Lq / ROWS⌉.
    packed_rows: u32,
    row_blocks: u32,
    // Batches [batch_base, batch_base + batch_count) of this dispatch (problems whose tensors
    // exceed one storage binding are split by batch). Q/K/V offsets in `params` and the scratch
    // rows are relative to batch_base; masks, key lengths, block table and dropout use the global
    // batch.
    batch_base: u32,
    batch_count: u32,
    // vec4 index in `part_o` where the partial LSEs start, one vec4 each (one scratch binding
    // holds both).
    lse_base: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(11) var<uniform> decode: Decode;
// Partial O [B, Hq, Lq, S, DV4] (vec4 of f32), then from vec4 `decode.lse_base` the partial LSE
// [B, Hq, Lq, S], one vec4 (LSE, 0, 0, 0) each: one scratch binding, so the paged kernels stay
// within the 8 storage buffers WebGPU guarantees. A whole vec4 per LSE: invocations storing
// components of one vec4 race on drivers that store a vector component by read-modify-write
// (SwiftShader).
@group(0) @binding(6) var<storage, read_write> part_o: array<vec4<f32>>;

// The partial LSE of scratch row `part`.
fn store_part_lse(part: u32, lse: f32) {
    part_o[decode.lse_base + part] = vec4<f32>(lse, 0.0, 0.0, 0.0);
}

// One unit of a decode dispatch, (pair, row block, split) with the split fastest: its batch
// within the dispatch (bl) and global (b), KV head, ROWS packed rows (query head h and row i;
// rows past the group repeat the last one, computed but never written: `rows` counts the real
// ones) and the keys of the split the rows see: their union [keys.x, keys.y) and intersection
// [full.x, full.y) (keys there skip the per-element structural test).
struct Block {
    split: u32,
    bl: u32,
    b: u32,
    hk: u32,
    rows: u32,
    h: array<u32, ROWS>,
    i: array<u32, ROWS>,
    keys: vec2<i32>,
    full: vec2<i32>,
}

fn decode_units() -> u32 {
    return decode.batch_count * params.heads_kv * decode.row_blocks * decode.splits;
}

fn decode_block(unit: u32) -> Block {
    var blk: Block;
    blk.split = unit % decode.splits;
    let rb = (unit / decode.splits) % decode.row_blocks;
    let pair = unit / (decode.splits * decode.row_blocks);
    blk.bl = pair / params.heads_kv;
    blk.b = decode.batch_base + blk.bl;
    blk.hk = pair % params.heads_kv;
    blk.rows = min(ROWS, decode.packed_rows - rb * ROWS);
    let group = params.heads_q / params.heads_kv;
    let key_len = decode_key_len(blk.b);
    let split = split_range(blk.split, key_len);
    var lo = i32(params.len_k);
    var hi = 0i;
    var full_lo = 0i;
    var full_hi = i32(params.len_k);
    for (var r = 0u; r < ROWS; r++) {
        let packed = min(rb * ROWS + r, decode.packed_rows - 1u);
        blk.h[r] = blk.hk * group + packed / params.len_q;
        blk.i[r] = packed % params.len_q;
        let keys = row_keys(blk.b, blk.i[r], key_len);
        lo = min(lo, keys.x);
        hi = max(hi, keys.y);
        full_lo = max(full_lo, keys.x);
        full_hi = min(full_hi, keys.y);
    }
    lo = max(lo, split.x);
    hi = min(hi, split.y);
    full_lo = clamp(full_lo, lo, max(lo, hi));
    full_hi = clamp(full_hi, full_lo, max(full_lo, hi));
    blk.keys = vec2<i32>(lo, hi);
    blk.full = vec2<i32>(full_lo, full_hi);
    return blk;
}

// Keys of batch b: its key length (unsigned) within Lk.
fn decode_key_len(b: u32) -> i32 {
    if (has_flag(FLAG_KEY_LENGTHS)) {
        return i32(min(key_lengths_at(b), params.len_k));
    }
    return i32(params.len_k);
}

// Keys [lo, hi) of split `split` of a sequence with `key_len` keys: ⌈key_len / S⌉ each.
fn split_range(split: u32, key_len: i32) -> vec2<i32> {
    let per_split = (u32(key_len) + decode.splits - 1u) / decode.splits;
    let lo = min(i32(split * per_split), key_len);
    return vec2<i32>(lo, min(lo + i32(per_split), key_len));
}

// Keys [lo, hi) that query row i of batch b can see as far as key lengths, causal and window go.
fn row_keys(b: u32, i: u32, key_len: i32) -> vec2<i32> {
    var lo = 0i;
    var hi = key_len;
    if (has_flag(FLAG_CAUSAL)) {
        hi = min(hi, i32(i) + causal_offset(b) + 1);
    }
    if (has_flag(FLAG_WINDOW)) {
        lo = max(lo, i32(i) + window_offset(b) - params.window_left);
        hi = min(hi, i32(i) + window_offset(b) + params.window_right + 1);
    }
    return vec2<i32>(lo, hi);
}

// Score s (scaled dot product) of one (row, key) pair after cap, bias, ALiBi and masks; keys
// inside every row's structural range skip the per-element tests when nothing else applies.
fn row_score(s: f32, masked_range: bool, b: u32, h: u32, i: u32, j: u32) -> f32 {
    if (masked_range || (params.flags & (FLAG_SOFTCAP | FLAG_BIAS | FLAG_MASK | FLAG_ZERO_SCORE | FLAG_ALIBI)) != 0u) {
        return finish_score(s, b, h, i, j, 0.0);
    }
    return s;
}

// Scratch row of (batch bl of the dispatch, head h, query row i, split).
fn part_row(bl: u32, h: u32, i: u32, split: u32) -> u32 {
    return ((bl * params.heads_q + h) * params.len_q + i) * decode.splits + split;
}

// (1 / l, LSE) of a split's running state: no visible key (l = 0) gives (0, −∞); a NaN score a
// NaN l, which reaches both.
fn split_state(m: f32, l: f32) -> vec2<f32> {
    if (l == 0.0) {
        return vec2<f32>(0.0, neg_inf());
    }
    return vec2<f32>(1.0 / l, lse_of(m, l));
}
