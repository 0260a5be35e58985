// Dot-product score of the fused kernel: score(q, k) = Σ q·k over the head dim (q is pre-scaled).

fn init_score_weights() {}

fn score_term(q: vec4<f32>, k: vec4<f32>, d4: u32) -> vec4<f32> {
    return q * k;
}
