// Bindings and row statistics shared by the backward kernels (docs/ATTENTION.md §10). Needs
// common/params.wgsl; a dO piece (common/grad_do_records.wgsl or common/grad_do_direct.wgsl)
// provides `record_size` and `load_do4`.
// `grad_rows` holds one record of `record_size()` vec4s per query row r = (b · Hq + h) · Lq + i,
// written by flash_backward_pre.wgsl and read by the gradient kernels: with dO kept in the records
// (devices with 8 storage bindings per stage), dO of the row in f32 (DV4 vec4s, zero-padded past
// DV) first; then (LSE, D, 0, 0) with D = Σ dO ∘ O. After the records, from `lengths_off`, the key
// lengths (u32 bits, four per vec4) with FLAG_KEY_LENGTHS.

struct Backward {
    // dO [B, Hq, Lq, Dv]: element offset and (batch, head, row) strides.
    do_off: u32, do_sb: u32, do_sh: u32, do_sl: u32,
    // The forward's LSE [B, Hq, Lq]: element offset and (batch, head, row) strides.
    lse_in_off: u32, lse_sb: u32, lse_sh: u32, lse_sl: u32,
    // Element offsets of dK and dV in the `grad` binding of the key/value kernel.
    dk_off: u32,
    dv_off: u32,
    // Batches and heads of the bias (1 = broadcast, its gradient summed over that axis).
    bias_batches: u32,
    bias_heads: u32,
    // Element offset of the row statistics in `grad_rows` (vec4 units).
    rows_off: u32,
    // vec4 offset in `grad_rows` of the key lengths the pre-pass copies there (common/side_records.wgsl).
    lengths_off: u32,
    pad1: u32, pad2: u32,
}

@group(0) @binding(7) var<uniform> backward: Backward;
@group(0) @binding(5) var<storage, read_write> grad_rows: array<vec4<f32>>;
// The gradient a kernel writes (dQ; dK and dV; dBias), in the storage type, row-major.
@group(0) @binding(6) var<storage, read_write> grad: array<elem>;

// First vec4 of row r's record.
fn grad_row(r: u32) -> u32 {
    return backward.rows_off + r * record_size();
}

// (LSE, D) of row r.
fn row_stats(r: u32) -> vec2<f32> {
    return grad_rows[grad_row(r) + record_size() - 1u].xy;
}

// Writes elements 4·d4 … 4·d4 + 3 of a row starting at element `base`, those below `n` only.
fn store_grad4(base: u32, d4: u32, x: vec4<f32>, n: u32) {
    for (var e = 0u; e < 4u; e++) {
        if (d4 * 4u + e < n) {
            grad[base + d4 * 4u + e] = elem(x[e]);
        }
    }
}
