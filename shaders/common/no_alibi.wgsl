// `alibi_slope` of kernels compiled without ALiBi (FLAG_ALIBI is never set for them).

fn alibi_slope(b: u32, h: u32) -> f32 {
    return 0.0;
}
