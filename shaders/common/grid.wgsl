// The host spreads large grids over x and y (each at most maxComputeWorkgroupsPerDimension).
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
