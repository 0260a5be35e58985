// Backward pre-pass: for every query row, D = Σ dO ∘ O (in f32), and the row's record in
// `grad_rows` (common/grad_io.wgsl): dO in f32 when RECORD_DO, then (LSE, D). One invocation per
// row; the first ⌈B / 4⌉ also copy the key lengths (side buffer, common/side.wgsl) after the
// records, where the gradient kernels read them (common/side_records.wgsl). The `o` strides of
// `params` are those of the forward's output.

//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/grad_io.wgsl
//@import common/side.wgsl

override WORKGROUP: u32 = 64u;
override DV: u32 = 64u;
override DV4: u32 = 16u;
// Copy dO into the records (for gradient kernels composed with common/grad_do_records.wgsl).
override RECORD_DO: bool = true;

fn record_size() -> u32 {
    return select(1u, DV4 + 1u, RECORD_DO);
}

@group(0) @binding(1) var<storage, read> o_in: array<elem>;
@group(0) @binding(2) var<storage, read> d_out: array<elem>;
@group(0) @binding(3) var<storage, read> lse_in: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (has_flag(FLAG_KEY_LENGTHS) && r < (params.batch + 3u) / 4u) {
        var lengths = vec4<u32>(0u);
        for (var e = 0u; e < 4u; e++) {
            if (r * 4u + e < params.batch) {
                lengths[e] = key_lengths_at(r * 4u + e);
            }
        }
        grad_rows[backward.lengths_off + r] = bitcast<vec4<f32>>(lengths);
    }
    if (r >= params.batch * params.heads_q * params.len_q) {
        return;
    }
    let i = r % params.len_q;
    let bh = r / params.len_q;
    let b = bh / params.heads_q;
    let h = bh % params.heads_q;
    let o_row = params.o_off + b * params.o_sb + h * params.o_sh + i * params.o_sl;
    let do_row = backward.do_off + b * backward.do_sb + h * backward.do_sh + i * backward.do_sl;
    let base = grad_row(r);
    var d = 0.0;
    for (var c4 = 0u; c4 < DV4; c4++) {
        var x = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let c = c4 * 4u + e;
            if (c < DV) {
                x[e] = f32(d_out[do_row + c]);
                d += x[e] * f32(o_in[o_row + c]);
            }
        }
        if (RECORD_DO) {
            grad_rows[base + c4] = x;
        }
    }
    let lse = lse_in[backward.lse_in_off + b * backward.lse_sb + h * backward.lse_sh + i * backward.lse_sl];
    grad_rows[base + record_size() - 1u] = vec4<f32>(lse, d, 0.0, 0.0);
}
