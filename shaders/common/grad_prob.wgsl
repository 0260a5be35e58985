// The recomputed probability of one (row, key) pair in the backward kernels, with the factors the
// chain rule needs. Needs common/mask.wgsl and common/grad_io.wgsl.

// For the scaled score `raw` = scale · q · k of query i and key j: (P, Z, C) where
// P = exp(s − LSE) with s the score after cap, bias and masks (0 for a masked key or a row with no
// key taking part), Z the dropout factor of P in the forward's sum (0 or 1 / (1 − p); 1 without
// dropout) and C = ds/draw, the soft cap's derivative 1 − tanh²(raw / c) (1 without a cap).
fn grad_prob(raw: f32, lse: f32, b: u32, h: u32, i: u32, j: u32) -> vec3<f32> {
    let s = finish_score(raw, b, h, i, j, 0.0);
    if (is_masked(s) || lse == neg_inf()) {
        return vec3<f32>(0.0);
    }
    var z = 1.0;
    if (has_flag(FLAG_DROPOUT)) {
        z = value_weight(b, h, i, j, 0.0);
    }
    var c = 1.0;
    if (has_flag(FLAG_SOFTCAP)) {
        let t = tanh_precise(raw / params.softcap);
        c = 1.0 - t * t;
    }
    return vec3<f32>(exp(s - lse), z, c);
}
