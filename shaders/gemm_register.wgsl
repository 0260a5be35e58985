// Batched GEMM, register-blocked design for CPU adapters (llvmpipe, SwiftShader): no workgroup
// memory and no barriers. A CPU driver runs the lanes of a subgroup as the SIMD lanes of one
// thread; there a barrier splits the shader and spills every live value, and each storage load is
// a loop over the lanes, so what counts is FMAs per load. Each invocation keeps a ROWS × 8 block of
// C in registers (two vec4 accumulators per row, `lo` and `hi`; its 8 columns strided by WG so that
// neighbouring lanes read neighbouring columns): per step of k it loads ROWS elements of A and 8 of
// B for 8·ROWS FMAs. Measured on llvmpipe at 1024×512×512 (BENCHMARKS.md): one column per
// invocation ran at ~2.5 GFLOP/s, 8 rows × 4 columns at 5-8.7, 8 × 8 (this) ahead of 8 × 4 in 4 of 5
// alternating runs; 16 rows ran slower (the accumulators spill).
// The operation, operands and epilogue are those of common/gemm_io.wgsl. Edges: rows past M and
// columns past N read a clamped (valid) element and are never stored. ROWS (rows per invocation)
// comes from the prelude.

//@switches rows
//@import common/grid.wgsl
//@import common/gemm_io.wgsl

// Invocations per workgroup; a workgroup covers ROWS rows × 8·WG columns.
override WG: u32 = 8u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let blocks_m = (gp.m + ROWS - 1u) / ROWS;
    let blocks_n = (gp.n + WG * 8u - 1u) / (WG * 8u);
    let w = linear_workgroup(wid, nwg);
    if (w >= gp.batch * blocks_m * blocks_n) {
        return;
    }
    let t = w / (blocks_m * blocks_n);
    let block = w % (blocks_m * blocks_n);
    let m0 = (block / blocks_n) * ROWS;
    let n = (block % blocks_n) * WG * 8u + lid.x;
    let a_base = gp.a_off + (t / gp.inner) * gp.a_outer + (t % gp.inner) * gp.a_inner;
    let b_base = gp.b_off + (t / gp.inner) * gp.b_outer + (t % gp.inner) * gp.b_inner;
    // Columns past N (and rows past M below) load the last valid one; their results are dropped.
    let last = gp.n - 1u;
    let b0 = b_base + min(n, last) * gp.b_sn;
    let b1 = b_base + min(n + WG, last) * gp.b_sn;
    let b2 = b_base + min(n + 2u * WG, last) * gp.b_sn;
    let b3 = b_base + min(n + 3u * WG, last) * gp.b_sn;
    let b4 = b_base + min(n + 4u * WG, last) * gp.b_sn;
    let b5 = b_base + min(n + 5u * WG, last) * gp.b_sn;
    let b6 = b_base + min(n + 6u * WG, last) * gp.b_sn;
    let b7 = b_base + min(n + 7u * WG, last) * gp.b_sn;
    //@each_row
    let a_row{r} = a_base + min(m0 + {r}u, gp.m - 1u) * gp.a_sm;
    var lo{r} = vec4<f32>(0.0);
    var hi{r} = vec4<f32>(0.0);
    //@end_row
    for (var k = 0u; k < gp.k; k++) {
        let bo = k * gp.b_sk;
        let b_lo = vec4<f32>(f32(b[b0 + bo]), f32(b[b1 + bo]), f32(b[b2 + bo]), f32(b[b3 + bo]));
        let b_hi = vec4<f32>(f32(b[b4 + bo]), f32(b[b5 + bo]), f32(b[b6 + bo]), f32(b[b7 + bo]));
        let ak = k * gp.a_sk;
        //@each_row
        let a{r} = vec4<f32>(f32(a[a_row{r} + ak]));
        lo{r} = fma(a{r}, b_lo, lo{r});
        hi{r} = fma(a{r}, b_hi, hi{r});
        //@end_row
    }
    for (var c = 0u; c < 4u; c++) {
        //@each_row
        store_c(t, m0 + {r}u, n + c * WG, lo{r}[c]);
        store_c(t, m0 + {r}u, n + (c + 4u) * WG, hi{r}[c]);
        //@end_row
    }
}
