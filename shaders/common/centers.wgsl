// Local-p aligned positions pᵢ, one per (b, h, i) row (binding 11). A separate piece so that
// kernels without local-p stay within the default limit of 8 storage buffers per stage.

@group(0) @binding(11) var<storage, read> centers: array<f32>;

// The local-p position of a query row (0 when local-p is off).
fn row_center(b: u32, h: u32, i: u32) -> f32 {
    if (!has_flag(FLAG_LOCAL)) {
        return 0.0;
    }
    return centers[params.centers_off + (b * params.heads_q + h) * params.len_q + i];
}
