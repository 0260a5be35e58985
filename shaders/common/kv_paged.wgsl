// K/V row addresses of a paged cache (docs/ATTENTION.md §9): K and V are pages
// [num_pages, page_size, Hkv, D] (the `params` strides are per page, per row within a page and
// per head) and row j of sequence b lives at row j % page_size of page block_table[b, j /
// page_size]. A page id at or past the page count reads the last page (memory-safe; the host
// refuses such tables where it can see them).

// Mirrors `kernels::PageParams`.
struct Pages {
    // Rows per page and pages in K/V.
    size: u32,
    count: u32,
    // Element offset of block_table[0, 0] in its binding and the table's row stride.
    table_off: u32,
    table_stride: u32,
    // log2(size) when size is a power of two, else 32: page and row by shift and mask instead of
    // an integer division per key (CPU drivers have no vector integer division).
    shift: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(13) var<storage, read> block_table: array<u32>;
@group(0) @binding(15) var<uniform> pages: Pages;

fn kv_rows(b: u32, bl: u32, hk: u32, j: u32) -> vec2<u32> {
    var col = 0u;
    var row = 0u;
    if (pages.shift < 32u) {
        col = j >> pages.shift;
        row = j & (pages.size - 1u);
    } else {
        col = j / pages.size;
        row = j % pages.size;
    }
    let page = min(block_table[pages.table_off + b * pages.table_stride + col], pages.count - 1u);
    return vec2<u32>(
        params.k_off + page * params.k_sb + hk * params.k_sh + row * params.k_sl,
        params.v_off + page * params.v_sb + hk * params.v_sh + row * params.v_sl,
    );
}
