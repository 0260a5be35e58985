// Philox-4x32-10 (Salmon et al., SC'11): a counter-based generator, so every (b, h, i, j) gets its
// own random word without state or ordering; `reference::philox` is the bit-exact CPU twin.
// WGSL has no 32×32→64 multiply, so the high half is assembled from 16-bit partial products.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// High 32 bits of a · b (the low half is the wrapping product a * b).
fn mul_hi(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xffffu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xffffu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    // Cannot overflow: (2^16 − 1) + (2^16 − 1) + (2^16 − 1)^2 < 2^32.
    let cross = (lo_lo >> 16u) + (hi_lo & 0xffffu) + lo_hi;
    return a_hi * b_hi + (hi_lo >> 16u) + (cross >> 16u);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        let hi0 = mul_hi(PHILOX_M0, c.x);
        let lo0 = PHILOX_M0 * c.x;
        let hi1 = mul_hi(PHILOX_M1, c.z);
        let lo1 = PHILOX_M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k += vec2<u32>(PHILOX_W0, PHILOX_W1);
    }
    return c;
}

// The random word of element (b, h, i, j) for the call's seed: counter (j, i, h, b), key = seed.
fn random_u32(b: u32, h: u32, i: u32, j: u32) -> u32 {
    return philox4x32_10(vec4<u32>(j, i, h, b), vec2<u32>(params.seed_lo, params.seed_hi)).x;
}
