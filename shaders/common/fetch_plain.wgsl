// K/V rows fetched by every invocation on its own (all lanes read the same address: a broadcast
// load). Needs no subgroup support. Defines the fused kernel's inputs and `fetch_k`/`fetch_v`,
// which fill `kv` with one row of K or V as vec4s.

struct KernelInputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

fn lane_of(input: KernelInputs) -> u32 {
    return 0u;
}

var<private> kv: array<vec4<f32>, MAX_HEAD_VEC4>;

fn fetch_k(row: u32, lane: u32) {
    for (var d4 = 0u; d4 < k_vecs(); d4++) {
        kv[d4] = load_k4(row, d4);
    }
}

fn fetch_v(row: u32, lane: u32) {
    for (var c4 = 0u; c4 < v_vecs(); c4++) {
        kv[c4] = load_v4(row, c4);
    }
}

// Loop bounds need no agreement between invocations here.
fn uniform_min(x: i32) -> i32 {
    return x;
}

fn uniform_max(x: i32) -> i32 {
    return x;
}
