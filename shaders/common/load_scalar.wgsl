// Q/K/V/O bindings read and written one element at a time, for any head dim, offset and stride.
// Vectors are zero-padded past the head dim (DK, DV).

@group(0) @binding(1) var<storage, read> q: array<elem>;
@group(0) @binding(2) var<storage, read> k: array<elem>;
@group(0) @binding(3) var<storage, read> v: array<elem>;
@group(0) @binding(4) var<storage, read_write> out: array<elem>;

fn load_q4(row: u32, d4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (d4 * 4u + e < DK) {
            x[e] = f32(q[row + d4 * 4u + e]);
        }
    }
    return x;
}

fn load_k4(row: u32, d4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (d4 * 4u + e < DK) {
            x[e] = f32(k[row + d4 * 4u + e]);
        }
    }
    return x;
}

fn load_v4(row: u32, c4: u32) -> vec4<f32> {
    var x = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if (c4 * 4u + e < DV) {
            x[e] = f32(v[row + c4 * 4u + e]);
        }
    }
    return x;
}

fn store_o4(row: u32, c4: u32, x: vec4<f32>) {
    for (var e = 0u; e < 4u; e++) {
        if (c4 * 4u + e < DV) {
            out[row + c4 * 4u + e] = elem(x[e]);
        }
    }
}
