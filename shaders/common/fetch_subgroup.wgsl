// K/V rows fetched cooperatively: lane l of each subgroup loads vector c + l of the row and
// subgroupBroadcast hands every vector to every lane, so a row costs DK4 / SUBGROUP loads per lane
// instead of DK4 (the standard warp-cooperative load; on SIMD CPU drivers each load is a per-lane
// loop and the broadcasts are register shuffles). `//@each_lane` … `//@end_lane` blocks are repeated
// SUBGROUP times with `{l}` replaced. Requires the whole subgroup to be active: the key loop is uniform.

struct KernelInputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
}

fn lane_of(input: KernelInputs) -> u32 {
    return input.lane;
}

var<private> kv: array<vec4<f32>, MAX_HEAD_VEC4 + SUBGROUP>;

fn fetch_k(row: u32, lane: u32) {
    for (var c = 0u; c < k_vecs(); c += SUBGROUP) {
        var mine = vec4<f32>(0.0);
        if (c + lane < k_vecs()) {
            mine = load_k4(row, c + lane);
        }
        //@each_lane
        kv[c + {l}u] = subgroupBroadcast(mine, {l}u);
        //@end_lane
    }
}

fn fetch_v(row: u32, lane: u32) {
    for (var c = 0u; c < v_vecs(); c += SUBGROUP) {
        var mine = vec4<f32>(0.0);
        if (c + lane < v_vecs()) {
            mine = load_v4(row, c + lane);
        }
        //@each_lane
        kv[c + {l}u] = subgroupBroadcast(mine, {l}u);
        //@end_lane
    }
}

// Loop bounds agreed by the whole subgroup (the broadcasts need every lane active).
fn uniform_min(x: i32) -> i32 {
    return subgroupMin(x);
}

fn uniform_max(x: i32) -> i32 {
    return subgroupMax(x);
}
