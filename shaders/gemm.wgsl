// Batched GEMM for the projections of the attention family (ATTENTION.md §2–§8), tiled design:
// workgroup tiles staged through workgroup memory (common/gemm_tile.wgsl), the fast shape on GPUs.
// The operation, operands and epilogue are those of common/gemm_io.wgsl.

//@import common/grid.wgsl
//@import common/gemm_io.wgsl
//@import common/gemm_tile.wgsl

fn accumulate(acc: vec4<f32>, a: f32, b: vec4<f32>) -> vec4<f32> {
    return acc + a * b;
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    gemm_dispatch(wid, nwg, lid, gp.m, gp.n, gp.k, 0u, gp.batch);
}
