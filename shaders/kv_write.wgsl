// Row writer of the KV cache and the rotary embedding (docs/ATTENTION.md §9). Copies the rows of
// a source [B, H, L, D] into a destination [B, H, *, D]:
// - FLAG_AT_START: source row r of batch b lands at destination row starts[b] + r (a cache append
//   at each sequence's length); otherwise at row r;
// - FLAG_COUNTS: only rows r < counts[b] are written (an uneven append);
// - FLAG_ROPE: columns below rotary_dim are rotated by the angles of position starts[b] + r, read
//   from the cos/sin tables [table_rows, rotary_dim / 2]; pairs are (2i, 2i + 1) (interleaved) or
//   (i, i + rotary_dim / 2) with FLAG_HALF_SPLIT; the other columns pass through;
// - FLAG_PAGED: the destination is a paged cache [num_pages, page_size, H, D] (dst strides per
//   page, per head, per row within the page): destination row `row` of batch b is row
//   row % page_size of page block_table[b, row / page_size]; a page id at or past page_count is
//   never written (the host refuses such appends where it can see the table);
// - FLAG_PACKED: the source is packed [total, H, D] (src strides per row and per head): row r of
//   batch b is source row counts[b] + r, and the batch takes counts[b + 1] − counts[b] rows (the
//   counts binding holds B + 1 offsets);
// - FLAG_ADVANCE: instead of rows, adds each batch's row count (counts[b], or L) to starts[b]
//   (a second dispatch after the writes, so that every write read the old length).
// A destination row at or past dst_rows (the capacity) is never written; the host refuses such an
// append before recording it. One invocation per row (per batch when advancing): on CPU drivers a
// per-element grid spends its time in index arithmetic.

//@import common/grid.wgsl

override WORKGROUP: u32 = 64u;

struct WriteParams {
    batch: u32,
    heads: u32,
    rows: u32,
    dim: u32,
    src_off: u32, src_sb: u32, src_sh: u32, src_sl: u32,
    dst_off: u32, dst_sb: u32, dst_sh: u32, dst_sl: u32,
    dst_rows: u32,
    flags: u32,
    rotary_dim: u32,
    table_rows: u32,
    cos_off: u32,
    sin_off: u32,
    starts_off: u32,
    counts_off: u32,
    page_size: u32,
    page_count: u32,
    table_off: u32,
    table_stride: u32,
}

const FLAG_AT_START: u32 = 1u;
const FLAG_COUNTS: u32 = 2u;
const FLAG_ROPE: u32 = 4u;
const FLAG_HALF_SPLIT: u32 = 8u;
const FLAG_ADVANCE: u32 = 16u;
const FLAG_PAGED: u32 = 32u;
const FLAG_PACKED: u32 = 64u;

@group(0) @binding(0) var<uniform> params: WriteParams;
@group(0) @binding(1) var<storage, read> src: array<elem>;
@group(0) @binding(2) var<storage, read_write> dst: array<elem>;
@group(0) @binding(3) var<storage, read_write> starts: array<u32>;
@group(0) @binding(4) var<storage, read> counts: array<u32>;
@group(0) @binding(5) var<storage, read> cos_table: array<f32>;
@group(0) @binding(6) var<storage, read> sin_table: array<f32>;
@group(0) @binding(7) var<storage, read> block_table: array<u32>;

fn has(flag: u32) -> bool {
    return (params.flags & flag) != 0u;
}

fn row_count(b: u32) -> u32 {
    if (has(FLAG_PACKED)) {
        let first = counts[params.counts_off + b];
        return min(max(counts[params.counts_off + b + 1u], first) - first, params.rows);
    }
    if (has(FLAG_COUNTS)) {
        return min(counts[params.counts_off + b], params.rows);
    }
    return params.rows;
}

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (has(FLAG_ADVANCE)) {
        if (t < params.batch) {
            let s = params.starts_off + t;
            starts[s] = starts[s] + row_count(t);
        }
        return;
    }
    // One invocation per source row (b, h, r).
    if (t >= params.batch * params.heads * params.rows) {
        return;
    }
    let b = t / (params.heads * params.rows);
    let h = (t / params.rows) % params.heads;
    let r = t % params.rows;
    if (r >= row_count(b)) {
        return;
    }
    var start = 0u;
    if (has(FLAG_AT_START) || has(FLAG_ROPE)) {
        start = starts[params.starts_off + b];
    }
    var row = r;
    if (has(FLAG_AT_START)) {
        row = start + r;
    }
    if (row >= params.dst_rows) {
        return;
    }
    var src_row = params.src_off + b * params.src_sb + h * params.src_sh + r * params.src_sl;
    if (has(FLAG_PACKED)) {
        src_row = params.src_off + (counts[params.counts_off + b] + r) * params.src_sl + h * params.src_sh;
    }
    var dst_row = params.dst_off + b * params.dst_sb + h * params.dst_sh + row * params.dst_sl;
    if (has(FLAG_PAGED)) {
        let page = block_table[params.table_off + b * params.table_stride + row / params.page_size];
        if (page >= params.page_count) {
            return;
        }
        dst_row = params.dst_off + page * params.dst_sb + h * params.dst_sh + (row % params.page_size) * params.dst_sl;
    }
    var copy_from = 0u;
    if (has(FLAG_ROPE)) {
        let pos = start + r;
        let half = params.rotary_dim / 2u;
        let split = has(FLAG_HALF_SPLIT);
        for (var i = 0u; i < half; i++) {
            // Pair i: columns (2i, 2i + 1) interleaved, (i, i + half) half-split.
            let a = select(2u * i, i, split);
            let a2 = select(2u * i + 1u, i + half, split);
            var c = 1.0;
            var s = 0.0;
            if (pos < params.table_rows) {
                c = cos_table[params.cos_off + pos * half + i];
                s = sin_table[params.sin_off + pos * half + i];
            }
            let x0 = f32(src[src_row + a]);
            let x1 = f32(src[src_row + a2]);
            dst[dst_row + a] = elem(x0 * c - x1 * s);
            dst[dst_row + a2] = elem(x1 * c + x0 * s);
        }
        copy_from = params.rotary_dim;
    }
    for (var d = copy_from; d < params.dim; d++) {
        dst[dst_row + d] = src[src_row + d];
    }
}
