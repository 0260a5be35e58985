// Additive (Bahdanau) score of the fused kernel: Q and K hold the projections W_q q + b and W_k k
// (head dim DK = Da) and score(q, k) = vᵀ tanh(q + k) is reduced over Da inside the tile, so the
// [Lq, Lk, Da] tensor never exists. v lives in registers, zero past Da; it is read from the side
// buffer (common/side.wgsl) from element `params.score_off`.

var<private> score_w: array<vec4<f32>, MAX_HEAD_VEC4>;

fn init_score_weights() {
    for (var d4 = 0u; d4 < k_vecs(); d4++) {
        var x = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            if (d4 * 4u + e < DK) {
                x[e] = side_elem(params.score_off + d4 * 4u + e);
            }
        }
        score_w[d4] = x;
    }
}

fn score_term(q: vec4<f32>, k: vec4<f32>, d4: u32) -> vec4<f32> {
    // tanh saturates in f32 beyond |x| = 15; clamping keeps exp-based driver tanh finite.
    return score_w[d4] * tanh(clamp(q + k, vec4<f32>(-15.0), vec4<f32>(15.0)));
}
