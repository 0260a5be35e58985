// Merge of partial attention states (flash-decoding's second pass, and `merge_attention_states`):
// for every output row (b, h, i) and S parts with outputs O_s and log-sum-exps LSE_s,
//   LSE = log Σ_s e^{LSE_s},  O = Σ_s e^{LSE_s − LSE} O_s.
// Parts with LSE_s = −∞ (no key taking part) contribute nothing; a row with no part left gets
// O = 0 and LSE = −∞; a NaN (or +∞) LSE_s makes the row NaN, as a NaN score does in one pass.
// A part of weight 0 is skipped, so a ±∞/NaN in its O never reaches the row (as a key of weight 0
// in the single-pass kernels). One invocation per output element.
//
// Parts are read as 32-bit words (f32, or two f16 when PARTS_F16) through a table of per-part
// offsets and strides, so the decode scratch and any caller tensors share the kernel.

//@import common/grid.wgsl

override WORKGROUP: u32 = 64u;
override PARTS_F16: bool = false;

struct Merge {
    batch: u32,
    heads: u32,
    len: u32,
    dim: u32,
    parts: u32,
    flags: u32, // 1: write LSE
    // Output O: element offset and (batch, head, row) strides; LSE: offset, contiguous [B, H, L].
    o_off: u32,
    o_sb: u32,
    o_sh: u32,
    o_sl: u32,
    lse_off: u32,
    _pad: u32,
}

// One table entry per part: O element offset and (batch, head, row) strides, then the same for LSE.
struct PartEntry {
    o_off: u32,
    o_sb: u32,
    o_sh: u32,
    o_sl: u32,
    lse_off: u32,
    lse_sb: u32,
    lse_sh: u32,
    lse_sl: u32,
}

@group(0) @binding(0) var<uniform> merge: Merge;
@group(0) @binding(1) var<storage, read> part_o: array<u32>;
@group(0) @binding(2) var<storage, read> part_lse: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<PartEntry>;
@group(0) @binding(4) var<storage, read_write> out: array<elem>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;

fn neg_inf() -> f32 {
    // Through a var: `bitcast<f32>(0xff800000u)` is a const-expression, and WGSL compilers that
    // evaluate those (Tint, in browsers) refuse a non-finite result.
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

// NaN or +∞, by bits (a compiler may fold `x != x`).
fn is_nan_or_pos_inf(x: f32) -> bool {
    let bits = bitcast<u32>(x);
    return (bits & 0x7fffffffu) > 0x7f800000u || bits == 0x7f800000u;
}

fn part_elem(e: u32) -> f32 {
    if (PARTS_F16) {
        return unpack2x16float(part_o[e >> 1u])[e & 1u];
    }
    return bitcast<f32>(part_o[e]);
}

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    let rows = merge.batch * merge.heads * merge.len;
    if (t >= rows * merge.dim) {
        return;
    }
    let row = t / merge.dim;
    let c = t % merge.dim;
    let i = row % merge.len;
    let h = (row / merge.len) % merge.heads;
    let b = row / (merge.len * merge.heads);

    var m = neg_inf();
    var poisoned = false;
    for (var s = 0u; s < merge.parts; s++) {
        let e = table[s];
        let x = part_lse[e.lse_off + b * e.lse_sb + h * e.lse_sh + i * e.lse_sl];
        if (is_nan_or_pos_inf(x)) {
            poisoned = true;
        } else {
            m = max(m, x);
        }
    }
    var o = 0.0;
    var total = neg_inf();
    if (poisoned) {
        var nan_bits = 0x7fc00000u; // a var, not a const-expression (see neg_inf)
        o = bitcast<f32>(nan_bits);
        total = o;
    } else if (!(m == neg_inf())) {
        var sum = 0.0;
        for (var s = 0u; s < merge.parts; s++) {
            let e = table[s];
            let x = part_lse[e.lse_off + b * e.lse_sb + h * e.lse_sh + i * e.lse_sl];
            if (!(x == neg_inf())) {
                sum += exp(x - m);
            }
        }
        let inv = 1.0 / sum; // sum ≥ 1: the largest part contributes e^0
        for (var s = 0u; s < merge.parts; s++) {
            let e = table[s];
            let x = part_lse[e.lse_off + b * e.lse_sb + h * e.lse_sh + i * e.lse_sl];
            if (!(x == neg_inf())) {
                let w = exp(x - m) * inv;
                if (!(w == 0.0)) {
                    o += w * part_elem(e.o_off + b * e.o_sb + h * e.o_sh + i * e.o_sl + c);
                }
            }
        }
        total = m + log(sum);
    }
    out[merge.o_off + b * merge.o_sb + h * merge.o_sh + i * merge.o_sl + c] = elem(o);
    if ((merge.flags & 1u) != 0u && c == 0u) {
        lse[merge.lse_off + row] = total;
    }
}
