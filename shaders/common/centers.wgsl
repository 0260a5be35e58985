// Local-p aligned positions pᵢ, one per (b, h, i) row, f32 in the side buffer (common/side.wgsl)
// from word `params.centers_off`.

// The local-p position of a query row (0 when local-p is off).
fn row_center(b: u32, h: u32, i: u32) -> f32 {
    if (!has_flag(FLAG_LOCAL)) {
        return 0.0;
    }
    return bitcast<f32>(side[params.centers_off + (b * params.heads_q + h) * params.len_q + i]);
}
