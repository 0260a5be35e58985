// Kernels compiled without local-p: no positions (FLAG_LOCAL is never set for them).

fn row_center(b: u32, h: u32, i: u32) -> f32 {
    return 0.0;
}
