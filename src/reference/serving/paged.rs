//! Reference paged layout: the twin of [`crate::serving::paged`]'s block-table lookup.

/// Dense K or V [B, Hkv, pages_per_seq · page_size, D] (row-major) of a paged layout: `pages` is
/// [num_pages, page_size, Hkv, D] row-major and `table` [B, pages_per_seq] row-major; key `j`
/// of sequence `b` is row `j % page_size` of page `table[b, j / page_size]`. Unmapped entries
/// (ids ≥ num_pages) give zero rows.
pub fn gather_pages(pages: &[f32], [num_pages, page_size, hkv, d]: [usize; 4], table: &[u32], b: usize) -> Vec<f32> {
    let cols = table.len().checked_div(b).unwrap_or(0);
    let lk = cols * page_size;
    let mut out = vec![0.0; b * hkv * lk * d];
    for s in 0..b {
        for j in 0..lk {
            let page = table[s * cols + j / page_size] as usize;
            if page >= num_pages {
                continue;
            }
            for h in 0..hkv {
                let src = ((page * page_size + j % page_size) * hkv + h) * d;
                let dst = ((s * hkv + h) * lk + j) * d;
                out[dst..dst + d].copy_from_slice(&pages[src..src + d]);
            }
        }
    }
    out
}
