// dO of the backward kernels read from the caller's tensor (binding 11, any strides with a
// contiguous last dim): the row records hold only (LSE, D), so the extra memory is one vec4 per
// query row. The key lengths travel in the records (common/side_records.wgsl), so the kernels
// bind 8 storage buffers.

@group(0) @binding(11) var<storage, read> d_out_in: array<elem>;

fn record_size() -> u32 {
    return 1u;
}

// Elements 4·c4 … 4·c4 + 3 of dO row (b, h, i), zero past DV; `r` is unused here.
fn load_do4(r: u32, b: u32, h: u32, i: u32, c4: u32) -> vec4<f32> {
    let row = backward.do_off + b * backward.do_sb + h * backward.do_sh + i * backward.do_sl;
    var x = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c4 * 4u + e < DV) {
            x[e] = f32(d_out_in[row + c4 * 4u + e]);
        }
    }
    return x;
}
