// dO of the backward kernels read from the row records (common/grad_io.wgsl), where the pre-pass
// copied it in f32: the kernels then need no dO binding (8 storage bindings in all).

fn record_size() -> u32 {
    return DV4 + 1u;
}

// Elements 4·c4 … 4·c4 + 3 of dO row r = (b · Hq + h) · Lq + i.
fn load_do4(r: u32, b: u32, h: u32, i: u32, c4: u32) -> vec4<f32> {
    return grad_rows[grad_row(r) + c4];
}
