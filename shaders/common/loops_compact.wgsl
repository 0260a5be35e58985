// Trip counts of the head-dim loops read from the uniform, so no loop is unrolled: the compact
// code of first calls on CPU drivers, compiled in about a second at any head dim and several times
// slower than the unrolled code (common/loops_unrolled.wgsl) it stands in for.

fn k_vecs() -> u32 {
    return (params.dim_k + 3u) / 4u;
}

fn v_vecs() -> u32 {
    return (params.dim_v + 3u) / 4u;
}
