// Q/K/V/O bindings read and written four elements at a time. Used when every head dim is a
// multiple of 4 and every offset and row stride is too (the host checks); element offsets from
// `params` are divided by 4 here.

@group(0) @binding(1) var<storage, read> q: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> k: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<elem>>;

fn load_q4(row: u32, d4: u32) -> vec4<f32> {
    return vec4<f32>(q[row / 4u + d4]);
}

fn load_k4(row: u32, d4: u32) -> vec4<f32> {
    return vec4<f32>(k[row / 4u + d4]);
}

fn load_v4(row: u32, c4: u32) -> vec4<f32> {
    return vec4<f32>(v[row / 4u + c4]);
}

fn store_o4(row: u32, c4: u32, x: vec4<f32>) {
    out[row / 4u + c4] = vec4<elem>(x);
}
