// Fused attention on cooperative matrices (FlashAttention-2 structure, f16 storage, f32
// accumulation). A workgroup owns BR query rows of one (b, h) pair and walks the visible keys in
// tiles of BC: S = Q·Kᵀ and O += P·V are products of CM×CM matrices (`coopMultiplyAdd`, the
// adapter's largest f16 → f32 shape, fixed in the prelude: `CM`, `coop_a`, `coop_b`, `coop_c`);
// the softmax runs in scalar code on the S tile in workgroup memory.
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

//@switches vec4_io local alibi coop
//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/philox.wgsl
//@if local
//@import common/centers.wgsl
//@else
//@import common/no_centers.wgsl
//@endif
//@if alibi
//@import common/alibi.wgsl
//@else
//@import common/no_alibi.wgsl
//@endif
//@import common/mask.wgsl
//@import common/side.wgsl
//@import common/row_block.wgsl
//@if vec4_io
//@import common/load_vec4.wgsl
//@else
//@import common/load_scalar.wgsl
//@endif

override WORKGROUP: u32 = 8u;
override BR: u32 = 32u;  // query rows per workgroup (multiple of CM)
override BC: u32 = 32u;  // keys per tile (multiple of CM)
override DK: u32 = 64u;  // head dim of Q and K (multiple of CM)
override DV: u32 = 64u;  // head dim of V and O (multiple of CM)
override DK4: u32 = 16u; // DK / 4
override DV4: u32 = 16u; // DV / 4
// Packed variable-length sequences (FLAG_VARLEN), as in the other designs.
override VARLEN: bool = false;

@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

var<workgroup> q_tile: array<f16, BR * DK>;   // [BR][DK], row-major
var<workgroup> k_tile: array<f16, BC * DK>;   // [BC][DK], row-major (Kᵀ read column-major)
var<workgroup> v_tile: array<f16, BC * DV>;   // [BC][DV], row-major
var<workgroup> s_tile: array<f32, BR * BC>;   // [BR][BC] scores, then final scores
var<workgroup> p_tile: array<f16, BR * BC>;   // [BR][BC] weighted probabilities
var<workgroup> o_tile: array<f32, BR * DV>;   // [BR][DV] unnormalized output
var<workgroup> row_max: array<f32, BR>;
var<workgroup> row_sum: array<f32, BR>;
// Whether the V tile of an even / odd tile holds ±∞ or NaN (two, so that resetting the next one
// never races with a late reader of the current one).
var<workgroup> v_special: array<atomic<u32>, 2>;

struct Inputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) sg_count: u32,
}

// Stores four head elements of a staged row as f16.
fn put_q(at: u32, x: vec4<f32>) {
    q_tile[at] = f16(x.x);
    q_tile[at + 1u] = f16(x.y);
    q_tile[at + 2u] = f16(x.z);
    q_tile[at + 3u] = f16(x.w);
}

fn put_k(at: u32, x: vec4<f32>) {
    k_tile[at] = f16(x.x);
    k_tile[at + 1u] = f16(x.y);
    k_tile[at + 2u] = f16(x.z);
    k_tile[at + 3u] = f16(x.w);
}

fn put_v(at: u32, x: vec4<f32>) {
    v_tile[at] = f16(x.x);
    v_tile[at + 1u] = f16(x.y);
    v_tile[at + 2u] = f16(x.z);
    v_tile[at + 3u] = f16(x.w);
}

// f16 storage: beyond the largest f16, or NaN, is not finite.
fn is_finite4(x: vec4<f32>) -> vec4<bool> {
    return abs(x) <= vec4<f32>(65504.0);
}

@compute @workgroup_size(WORKGROUP)
fn main(input: Inputs) {
    let lid = input.lid;
    // No early return: naga wants every cooperative-matrix operation after none (uniform control
    // flow); a workgroup without rows (past the grid or its sequence) visits no key, writes nothing.
    var blk: RowBlock;
    let live = enter_row_block(linear_workgroup(input.wid, input.nwg), BR, &blk);
    if (!live) {
        blk.k_end = blk.k_begin;
        blk.len_q = 0u;
    }
    if (has_flag(FLAG_LOCAL)) {
        blk.full_end = blk.full_begin; // each row has its own window: every key is tested
    }
    clamp_full_range(&blk);
    let b = blk.b;
    let h = blk.h;
    let i0 = blk.i0;
    let len_q = blk.len_q;
    let k_end = blk.k_end;
    let weighted = has_flag(FLAG_DROPOUT) || has_flag(FLAG_LOCAL);
    // Dropout keeps P ≤ 1 in f16 by applying its scale to O at the end.
    var out_scale = 1.0;
    if (has_flag(FLAG_DROPOUT)) {
        out_scale = params.dropout_scale;
    }
    let q_head = q_head_of(blk);
    let k_head = k_head_of(blk);
    let v_head = v_head_of(blk);

    // The Q block (zero rows past Lq), O = 0, m = −∞, l = 0.
    for (var e = lid; e < BR * DK4; e += WORKGROUP) {
        let r = e / DK4;
        let d4 = e % DK4;
        var x = vec4<f32>(0.0);
        if (i0 + r < len_q) {
            x = load_q4(q_head + (i0 + r) * params.q_sl, d4);
        }
        put_q(r * DK + d4 * 4u, x);
    }
    for (var e = lid; e < BR * DV; e += WORKGROUP) {
        o_tile[e] = 0.0;
    }
    for (var r = lid; r < BR; r += WORKGROUP) {
        row_max[r] = neg_inf();
        row_sum[r] = 0.0;
    }

    let m_tiles = BR / CM;
    var parity = 0u;
    for (var j0 = blk.k_begin; j0 < k_end; j0 += i32(BC)) {
        // A. The K tile; keys outside [k_begin, k_end) are zero rows.
        if (lid == 0u) {
            atomicStore(&v_special[parity], 0u);
        }
        for (var e = lid; e < BC * DK4; e += WORKGROUP) {
            let c = e / DK4;
            let j = j0 + i32(c);
            var x = vec4<f32>(0.0);
            if (j < k_end) {
                x = load_k4(k_head + u32(j) * params.k_sl, e % DK4);
            }
            put_k(c * DK + (e % DK4) * 4u, x);
        }
        workgroupBarrier();

        // B. S = Q·Kᵀ, CM×CM tiles spread over the subgroups.
        let s_tiles = m_tiles * (BC / CM);
        for (var st = input.sg; st < s_tiles; st += input.sg_count) {
            let r0 = (st / (BC / CM)) * CM;
            let c0 = (st % (BC / CM)) * CM;
            var acc = coop_c();
            for (var d0 = 0u; d0 < DK; d0 += CM) {
                let a = coopLoadT<coop_a>(&q_tile[r0 * DK + d0], DK);
                // Kᵀ[d][j] = K[j][d]: the row-major K tile read column-major.
                let kt = coopLoad<coop_b>(&k_tile[c0 * DK + d0], DK);
                acc = coopMultiplyAdd(a, kt, acc);
            }
            coopStoreT(acc, &s_tile[r0 * BC + c0], BC);
        }
        workgroupBarrier();

        // C. The softmax of each row, and the V tile.
        for (var r = lid; r < BR; r += WORKGROUP) {
            let im = min(i0 + r, len_q - 1u); // rows past Lq compute on a valid row, never written
            let center = row_center(b, h, im);
            var tile_max = neg_inf();
            for (var c = 0u; c < BC; c++) {
                let j = j0 + i32(c);
                var s = neg_inf();
                if (j < k_end) {
                    let masked_range = j < blk.full_begin || j >= blk.full_end;
                    s = block_score(s_tile[r * BC + c] * params.scale, masked_range, b, h, im, u32(j), center);
                }
                s_tile[r * BC + c] = s;
                if (s > tile_max) {
                    tile_max = s;
                }
            }
            // Exact running max: P ≤ 1. m = −∞ before the first visible key: O and l are 0.
            let m_old = row_max[r];
            var m = m_old;
            if (tile_max > m_old) {
                m = tile_max;
                let alpha = exp(m_old - m);
                row_max[r] = m;
                row_sum[r] *= alpha;
                for (var c = 0u; c < DV; c++) {
                    o_tile[r * DV + c] *= alpha;
                }
            }
            var l = row_sum[r];
            for (var c = 0u; c < BC; c++) {
                let s = s_tile[r * BC + c];
                var p = 0.0;
                if (!is_masked(s)) {
                    p = exp(s - m);
                    l += p;
                    if (weighted) {
                        p *= value_weight(b, h, im, u32(j0 + i32(c)), center) / out_scale;
                    }
                }
                p_tile[r * BC + c] = f16(p);
            }
            row_sum[r] = l;
        }
        for (var e = lid; e < BC * DV4; e += WORKGROUP) {
            let c = e / DV4;
            let j = j0 + i32(c);
            var x = vec4<f32>(0.0);
            if (j < k_end) {
                x = load_v4(v_head + u32(j) * params.v_sl, e % DV4);
                // ±∞ and NaN are staged as 0 and added after the product (see D).
                let finite = is_finite4(x);
                if (!all(finite)) {
                    atomicOr(&v_special[parity], 1u);
                    x = select(vec4<f32>(0.0), x, finite);
                }
            }
            put_v(c * DV + (e % DV4) * 4u, x);
        }
        workgroupBarrier();

        // D. O += P·V.
        let o_tiles = m_tiles * (DV / CM);
        for (var ot = input.sg; ot < o_tiles; ot += input.sg_count) {
            let r0 = (ot / (DV / CM)) * CM;
            let c0 = (ot % (DV / CM)) * CM;
            var acc = coopLoadT<coop_c>(&o_tile[r0 * DV + c0], DV);
            for (var k0 = 0u; k0 < BC; k0 += CM) {
                let a = coopLoadT<coop_a>(&p_tile[r0 * BC + k0], BC);
                let vb = coopLoadT<coop_b>(&v_tile[k0 * DV + c0], DV);
                acc = coopMultiplyAdd(a, vb, acc);
            }
            coopStoreT(acc, &o_tile[r0 * DV + c0], DV);
        }
        // The ±∞ and NaN of the V tile, added where P ≠ 0 only. The flag is the same for the whole
        // workgroup (set before the last barrier, reset two tiles later), so the branch and its
        // barrier are uniform.
        if (atomicLoad(&v_special[parity]) != 0u) {
            workgroupBarrier();
            for (var e = lid; e < BR * DV; e += WORKGROUP) {
                let r = e / DV;
                let c = e % DV;
                var acc = o_tile[e];
                for (var k = 0u; k < BC; k++) {
                    let j = j0 + i32(k);
                    let p = f32(p_tile[r * BC + k]);
                    if (j < k_end && !(p == 0.0)) { // not `!=`: it may compile to an ordered compare
                        let x = load_v4(v_head + u32(j) * params.v_sl, c / 4u)[c % 4u];
                        if (!is_finite4(vec4<f32>(x)).x) {
                            acc += p * x;
                        }
                    }
                }
                o_tile[e] = acc;
            }
        }
        parity ^= 1u;
    }
    workgroupBarrier();

    // Normalize and write; a row with no visible key (l = 0) gets O = 0 and LSE = −∞; a NaN score
    // made l NaN, which reaches O and the LSE.
    let o_head = o_head_of(blk);
    for (var e = lid; e < BR * DV4; e += WORKGROUP) {
        let r = e / DV4;
        let c4 = e % DV4;
        if (i0 + r < len_q) {
            let l = row_sum[r];
            var inv = 0.0;
            if (!(l == 0.0)) {
                inv = out_scale / l;
            }
            let at = r * DV + c4 * 4u;
            let o = vec4<f32>(o_tile[at], o_tile[at + 1u], o_tile[at + 2u], o_tile[at + 3u]);
            store_o4(o_head + (i0 + r) * params.o_sl, c4, o * inv);
        }
    }
    if (has_flag(FLAG_LSE)) {
        let lse_row0 = lse_row0_of(blk);
        for (var r = lid; r < BR; r += WORKGROUP) {
            if (i0 + r < len_q) {
                lse[lse_row0 + i0 + r] = lse_of(row_max[r], row_sum[r]);
            }
        }
    }
}
