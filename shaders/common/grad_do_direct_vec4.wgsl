// dO of the backward kernels read from the caller's tensor four elements at a time (binding 11):
// common/grad_do_direct.wgsl for a dO whose head dim, offset and strides are multiples of 4 (the
// host checks), used with the vec4 loaders.

@group(0) @binding(11) var<storage, read> d_out_in: array<vec4<elem>>;

fn record_size() -> u32 {
    return 1u;
}

// Elements 4·c4 … 4·c4 + 3 of dO row (b, h, i); `r` is unused here.
fn load_do4(r: u32, b: u32, h: u32, i: u32, c4: u32) -> vec4<f32> {
    let row = backward.do_off + b * backward.do_sb + h * backward.do_sh + i * backward.do_sl;
    return vec4<f32>(d_out_in[row / 4u + c4]);
}
