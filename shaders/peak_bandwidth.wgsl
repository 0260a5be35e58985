// Calibration: device-memory bandwidth. A vec4 stream copy, one element per invocation: every
// byte of `src` is read once and every byte of `dst` written once. Large grids are spread over
// x and y by the host (each at most maxComputeWorkgroupsPerDimension).
// Needs no piece: the prelude's `elem` (f32 or f16) is its only import.

override WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<elem>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<elem>>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let index = (wid.x + wid.y * nwg.x) * WORKGROUP + lid;
    if (index < arrayLength(&dst)) {
        dst[index] = src[index];
    }
}
