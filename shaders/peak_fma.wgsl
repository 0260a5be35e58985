// Calibration: arithmetic throughput. Each invocation runs CHAINS independent chains of dependent
// vec4 FMAs (enough independent accumulators hide the FMA latency, and more FMAs per loop step
// amortize the loop's own work), ITERS steps each, so one invocation performs
// ITERS · CHAINS · 4 · 2 floating-point operations. Every invocation stores the sum of its
// accumulators (slots wrap around a small buffer; which racing write lands does not matter) so that
// no chain can be optimized away; the start values depend on the invocation id so nothing folds.
// The host tries several (CHAINS, WORKGROUP) shapes and reports the fastest: which one fills an
// adapter best differs (a GPU wants many invocations, a CPU driver many FMAs per lane and step).
// CHAINS = 16 is eight vec8 chains held as two vec4 each. Chains past CHAINS sit behind `if`s on the
// override constant, which the driver folds away.
// Needs no piece: the prelude's `elem` (f32 or f16) is its only import.

override WORKGROUP: u32 = 64u;
override ITERS: u32 = 256u;
// Independent vec4 accumulators, 1 to 16.
override CHAINS: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> out: array<vec4<elem>>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let index = gid.x + gid.y * nwg.x * WORKGROUP;
    let x = elem(f32(index & 1023u) * 0.0009765625);
    let m = vec4<elem>(elem(0.999), elem(0.998), elem(0.997), elem(0.996));
    let c = vec4<elem>(elem(0.001), elem(0.002), elem(0.003), elem(0.004));
    var a0 = vec4<elem>(x, x + elem(0.01), x + elem(0.02), x + elem(0.03));
    var a1 = a0 + vec4<elem>(elem(0.0625));
    var a2 = a0 + vec4<elem>(elem(0.1250));
    var a3 = a0 + vec4<elem>(elem(0.1875));
    var a4 = a0 + vec4<elem>(elem(0.2500));
    var a5 = a0 + vec4<elem>(elem(0.3125));
    var a6 = a0 + vec4<elem>(elem(0.3750));
    var a7 = a0 + vec4<elem>(elem(0.4375));
    var a8 = a0 + vec4<elem>(elem(0.5000));
    var a9 = a0 + vec4<elem>(elem(0.5625));
    var a10 = a0 + vec4<elem>(elem(0.6250));
    var a11 = a0 + vec4<elem>(elem(0.6875));
    var a12 = a0 + vec4<elem>(elem(0.7500));
    var a13 = a0 + vec4<elem>(elem(0.8125));
    var a14 = a0 + vec4<elem>(elem(0.8750));
    var a15 = a0 + vec4<elem>(elem(0.9375));
    for (var i = 0u; i < ITERS; i++) {
        a0 = fma(a0, m, c);
        if (CHAINS > 1u) { a1 = fma(a1, m, c); }
        if (CHAINS > 2u) { a2 = fma(a2, m, c); }
        if (CHAINS > 3u) { a3 = fma(a3, m, c); }
        if (CHAINS > 4u) { a4 = fma(a4, m, c); }
        if (CHAINS > 5u) { a5 = fma(a5, m, c); }
        if (CHAINS > 6u) { a6 = fma(a6, m, c); }
        if (CHAINS > 7u) { a7 = fma(a7, m, c); }
        if (CHAINS > 8u) { a8 = fma(a8, m, c); }
        if (CHAINS > 9u) { a9 = fma(a9, m, c); }
        if (CHAINS > 10u) { a10 = fma(a10, m, c); }
        if (CHAINS > 11u) { a11 = fma(a11, m, c); }
        if (CHAINS > 12u) { a12 = fma(a12, m, c); }
        if (CHAINS > 13u) { a13 = fma(a13, m, c); }
        if (CHAINS > 14u) { a14 = fma(a14, m, c); }
        if (CHAINS > 15u) { a15 = fma(a15, m, c); }
    }
    var sum = a0;
    if (CHAINS > 1u) { sum += a1; }
    if (CHAINS > 2u) { sum += a2; }
    if (CHAINS > 3u) { sum += a3; }
    if (CHAINS > 4u) { sum += a4; }
    if (CHAINS > 5u) { sum += a5; }
    if (CHAINS > 6u) { sum += a6; }
    if (CHAINS > 7u) { sum += a7; }
    if (CHAINS > 8u) { sum += a8; }
    if (CHAINS > 9u) { sum += a9; }
    if (CHAINS > 10u) { sum += a10; }
    if (CHAINS > 11u) { sum += a11; }
    if (CHAINS > 12u) { sum += a12; }
    if (CHAINS > 13u) { sum += a13; }
    if (CHAINS > 14u) { sum += a14; }
    if (CHAINS > 15u) { sum += a15; }
    out[index % arrayLength(&out)] = sum;
}
