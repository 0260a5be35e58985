//! CPU twin of [`crate::serving::merge_attention_states`] (and of the decode path's merge
//! kernel): naive, f64.

/// Merges partial states: each part is (O \[rows, dim\], LSE \[rows\]) contiguous, f32 (f16 parts
/// converted by the caller). Returns (O \[rows, dim\], LSE \[rows\]) in f64:
/// LSE = log Σᵢ e^{LSEᵢ}, O = Σᵢ e^{LSEᵢ − LSE} Oᵢ. Parts with LSEᵢ = −∞ contribute nothing (nor
/// does a part whose weight is exactly 0); a row with none left is O = 0, LSE = −∞; a NaN or +∞
/// LSEᵢ makes the row NaN.
pub fn merge_states(parts: &[(&[f32], &[f32])], rows: usize, dim: usize) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0f64; rows * dim];
    let mut lse = vec![f64::NEG_INFINITY; rows];
    for r in 0..rows {
        let xs: Vec<f64> = parts.iter().map(|(_, l)| l[r] as f64).collect();
        if xs.iter().any(|x| x.is_nan() || *x == f64::INFINITY) {
            lse[r] = f64::NAN;
            out[r * dim..(r + 1) * dim].fill(f64::NAN);
            continue;
        }
        let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = xs.iter().map(|x| (x - m).exp()).sum();
        lse[r] = m + sum.ln();
        for ((o, _), x) in parts.iter().zip(&xs) {
            let w = (x - lse[r]).exp();
            if w == 0.0 {
                continue;
            }
            for c in 0..dim {
                out[r * dim + c] += w * o[r * dim + c] as f64;
            }
        }
    }
    (out, lse)
}
