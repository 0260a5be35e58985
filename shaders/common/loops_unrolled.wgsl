// Trip counts of the head-dim loops: the override constants, so the driver unrolls every loop and
// keeps per-row arrays in registers (the fast code; on CPU drivers its compile grows with rows ×
// head dim, to minutes for the backward kernels).

fn k_vecs() -> u32 {
    return DK4;
}

fn v_vecs() -> u32 {
    return DV4;
}
