// Staged backward (docs/ATTENTION.md §10), the element-wise step between its GEMMs: for every
// (b, h, i, j) of the materialized [B, Hq, Lq, Lk] matrices, from the scaled scores r = scale · q · k
// and dP̃ = dO · v (both computed by GEMMs), writes P ∘ Z over r and dS′ = P ∘ (Z ∘ dP̃ − D) times
// the soft cap's derivative over dP̃. One invocation per element.

//@switches alibi
//@import common/params.wgsl
//@import common/grid.wgsl
//@import common/philox.wgsl
//@import common/no_centers.wgsl
//@if alibi
//@import common/alibi.wgsl
//@else
//@import common/no_alibi.wgsl
//@endif
//@import common/mask.wgsl
//@import common/side_records.wgsl
//@import common/grad_io.wgsl
//@import common/grad_do_records.wgsl
//@import common/grad_prob.wgsl

override WORKGROUP: u32 = 64u;
override DV4: u32 = 16u;

// scale · Q Kᵀ in, P ∘ Z out (f32, row-major [B, Hq, Lq, Lk]).
@group(0) @binding(1) var<storage, read_write> scores: array<f32>;
// dO Vᵀ in, dS′ out (f32, row-major [B, Hq, Lq, Lk]).
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    let rows = params.batch * params.heads_q * params.len_q;
    if (e / params.len_k >= rows) {
        return;
    }
    let j = e % params.len_k;
    let r = e / params.len_k;
    let i = r % params.len_q;
    let bh = r / params.len_q;
    let st = row_stats(r);
    let pr = grad_prob(scores[e], st.x, bh / params.heads_q, bh % params.heads_q, i, j);
    if (pr.x == 0.0) {
        // A pair of probability 0 (masked) contributes nothing, whatever dO · v holds.
        scores[e] = 0.0;
        grads[e] = 0.0;
        return;
    }
    scores[e] = pr.x * pr.y;
    grads[e] = pr.x * (grads[e] * pr.y - st.y) * pr.z;
}
