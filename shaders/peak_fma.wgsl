// Calibration: arithmetic throughput. Each invocation runs eight independent chains of dependent
// vec4 FMAs (8 accumulators hide the FMA latency), ITERS steps each, so one invocation performs
// ITERS · 8 · 4 · 2 floating-point operations. Every invocation stores the sum of its accumulators
// (slots wrap around a small buffer; which racing write lands does not matter) so that no chain
// can be optimized away; the start values depend on the invocation id so nothing folds.
// Composed after the generated prelude (`alias elem = f32;` or `f16`); needs no common piece.

override WORKGROUP: u32 = 64u;
override ITERS: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> out: array<vec4<elem>>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let index = gid.x + gid.y * nwg.x * WORKGROUP;
    let x = elem(f32(index & 1023u) * 0.0009765625);
    let m = vec4<elem>(elem(0.999), elem(0.998), elem(0.997), elem(0.996));
    let c = vec4<elem>(elem(0.001), elem(0.002), elem(0.003), elem(0.004));
    var a0 = vec4<elem>(x, x + elem(0.01), x + elem(0.02), x + elem(0.03));
    var a1 = a0 + vec4<elem>(elem(0.1));
    var a2 = a0 + vec4<elem>(elem(0.2));
    var a3 = a0 + vec4<elem>(elem(0.3));
    var a4 = a0 + vec4<elem>(elem(0.4));
    var a5 = a0 + vec4<elem>(elem(0.5));
    var a6 = a0 + vec4<elem>(elem(0.6));
    var a7 = a0 + vec4<elem>(elem(0.7));
    for (var i = 0u; i < ITERS; i++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    out[index % arrayLength(&out)] = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7));
}
