// Fused attention on cooperative matrices (FlashAttention-2 structure, f16 storage, f32
// accumulation). A workgroup owns BR query rows of one (b, h) pair and walks the visible keys in
// tiles of BC: S = Q·Kᵀ and O += P·V are products of CM×CM matrices (`coopMultiplyAdd`, the
// adapter's largest f16 → f32 shape, fixed in the prelude: `CM`, `coop_a`, `coop_b`, `coop_c`);
// the softmax runs in scalar code on the S tile in workgroup memory. Composed after
// common/params.wgsl, common/grid.wgsl, common/philox.wgsl, a centers piece, an ALiBi piece,
// common/mask.wgsl, common/row_block.wgsl (the block's rows and key range) and a loader piece
// (common/load_vec4.wgsl or common/load_scalar.wgsl), like the register design: same bindings,
// same uniform.
//
// Per key tile, with three barriers:
//   A. stage the K tile (f16, zero rows outside the visible range)           | barrier
//   B. S = Q·Kᵀ: each subgroup takes CM×CM tiles of S, stored as f32          | barrier
//   C. per row (scalar): scale, cap, bias, ALiBi, masks (`block_score`), online max/sum, rescale
//      of the row's O accumulator, P = exp(s − m) · dropout/local weight as f16; meanwhile the
//      V tile is staged                                                      | barrier
//   D. O += P·V: each subgroup takes CM×CM tiles of O (f32 in workgroup memory: loaded, multiplied,
//      stored back)
// The next tile's A writes only the K tile, which D does not read, so D needs no barrier of its own.
//
// Numbers at the edges (docs/ATTENTION.md): the running max moves exactly (no lazy threshold), so
// P ≤ 1 fits f16; dropout's 1/(1 − p) is applied to O at the end, not to P. A NaN score makes its
// row's P and l NaN, which the product carries to that row only. A masked or dropped key has P = 0,
// and 0 · ∞ is NaN in a matrix product: keys outside the visible range are staged as zero rows,
// and ±∞ and NaN inside it are staged as 0, then added in scalar code where P ≠ 0 (the register
// design's rule), after the product.

override WORKGROUP: u32 = 8u;
override BR: u32 = 32u;  // query rows per workgroup (multiple of CM)
override BC: u32 = 32u;  // keys per tile (multiple of CM)
override DK: u32 = 64u;  // head dim of Q and K (multiple of CM)
override DV: u32 = 64u;  // head dim of V and O (multiple of CM)
override DK4: u32 = 16u; // DK / 4
override DV4: u32 = 16u; // DV / 4
// Packed variable-length sequences (FLAG_VARLEN), as in the other designs.
override VARLEN: bool = false;
