// The naive additive-attention path's hidden tensor (ATTENTION.md §2, as a framework computes it):
// T[r, j, a] = tanh(Q'[i, a] + K'[j, a]) for query rows i = row_base + r of one (b, h) pair, where
// Q' = W_q q + b and K' = W_k k are the projections (head dim dim_k = Da). A GEMM with v then
// reduces T to scores. This path exists as the baseline of the fused kernel, which never builds T.

//@import common/params.wgsl
//@import common/grid.wgsl

override WORKGROUP: u32 = 64u;

@group(0) @binding(1) var<storage, read> q: array<elem>;
@group(0) @binding(2) var<storage, read> k: array<elem>;
@group(0) @binding(7) var<storage, read_write> hidden: array<elem>;

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (e >= params.row_count * params.len_k * params.dim_k) {
        return;
    }
    let a = e % params.dim_k;
    let j = (e / params.dim_k) % params.len_k;
    let i = params.row_base + e / (params.dim_k * params.len_k);
    let b = params.bh_base / params.heads_q;
    let h = params.bh_base % params.heads_q;
    let x = f32(q[params.q_off + b * params.q_sb + h * params.q_sh + i * params.q_sl + a])
        + f32(k[params.k_off + b * params.k_sb + kv_head(h) * params.k_sh + j * params.k_sl + a]);
    hidden[e] = elem(tanh(clamp(x, -15.0, 15.0)));
}
