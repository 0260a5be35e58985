//! Philox-4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
//! SC'11), the CPU twin of `shaders/common/philox.wgsl`, bit for bit.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Ten Philox rounds of `counter` under `key`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = M0 as u64 * c[0] as u64;
        let p1 = M1 as u64 * c[2] as u64;
        c = [
            (p1 >> 32) as u32 ^ c[1] ^ k[0],
            p1 as u32,
            (p0 >> 32) as u32 ^ c[3] ^ k[1],
            p0 as u32,
        ];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// The random word of attention element (b, h, i, j) for `seed`: counter (j, i, h, b), key = seed.
pub fn random_u32(seed: u64, b: usize, h: usize, i: usize, j: usize) -> u32 {
    philox4x32_10(
        [j as u32, i as u32, h as u32, b as u32],
        [seed as u32, (seed >> 32) as u32],
    )[0]
}

/// Whether dropout keeps element (b, h, i, j): its word is at least the threshold ⌊p · 2³²⌋.
pub fn dropout_keeps(seed: u64, threshold: u32, b: usize, h: usize, i: usize, j: usize) -> bool {
    random_u32(seed, b, h, i, j) >= threshold
}

/// Standard Gumbel sample from a random word: u = (top 23 bits + ½) / 2²³ ∈ (0, 1), −ln(−ln u).
pub fn gumbel(word: u32) -> f64 {
    let u = ((word >> 9) as f64 + 0.5) / 8388608.0;
    -(-u.ln()).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 10 rounds).
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn gumbel_is_finite_at_the_extremes() {
        assert!(gumbel(0).is_finite() && gumbel(u32::MAX).is_finite());
        assert!(gumbel(0) < gumbel(u32::MAX));
    }
}
