// One output tile of a batched GEMM, C = A · B, register-tiled: a WG_Y × WG_X workgroup computes
// a (4·WG_Y) × (4·WG_X) tile, each invocation 4 rows × 4 columns (columns strided by WG_X so that
// neighbouring invocations touch neighbouring addresses). K advances TILE_K at a time through
// workgroup memory. The including kernel defines:
//   fn load_a(batch: u32, m: u32, k: u32) -> f32   (0 outside the problem)
//   fn load_b(batch: u32, k: u32, n: u32) -> f32   (0 outside the problem)
//   fn store_c(batch: u32, m: u32, n: u32, value: f32)   (ignores m, n outside the problem)
//   fn accumulate(acc: vec4<f32>, a: f32, b: vec4<f32>) -> vec4<f32>   (acc + a·b, or a variant)

override WG_X: u32 = 16u;
override WG_Y: u32 = 16u;
override TILE_K: u32 = 16u;
// True when B is stored with k contiguous (B = Kᵀ): load B tiles k-fastest to coalesce reads.
override B_K_CONTIGUOUS: bool = false;

var<workgroup> a_tile: array<f32, TILE_K * WG_Y * 4u>;
var<workgroup> b_tile: array<f32, TILE_K * WG_X * 4u>;

fn gemm_tile(batch: u32, m0: u32, n0: u32, k_len: u32, tx: u32, ty: u32) {
    let tile_m = WG_Y * 4u;
    let tile_n = WG_X * 4u;
    let lid = ty * WG_X + tx;
    let threads = WG_X * WG_Y;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k_len; k0 += TILE_K) {
        for (var e = lid; e < TILE_K * tile_m; e += threads) {
            let kk = e % TILE_K;
            let mm = e / TILE_K;
            a_tile[kk * tile_m + mm] = load_a(batch, m0 + mm, k0 + kk);
        }
        for (var e = lid; e < TILE_K * tile_n; e += threads) {
            var kk = e / tile_n;
            var nn = e % tile_n;
            if (B_K_CONTIGUOUS) {
                kk = e % TILE_K;
                nn = e / TILE_K;
            }
            b_tile[kk * tile_n + nn] = load_b(batch, k0 + kk, n0 + nn);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ar = kk * tile_m + ty * 4u;
            let br = kk * tile_n + tx;
            let a = vec4<f32>(a_tile[ar], a_tile[ar + 1u], a_tile[ar + 2u], a_tile[ar + 3u]);
            let bv = vec4<f32>(b_tile[br], b_tile[br + WG_X], b_tile[br + 2u * WG_X], b_tile[br + 3u * WG_X]);
            acc0 = accumulate(acc0, a.x, bv);
            acc1 = accumulate(acc1, a.y, bv);
            acc2 = accumulate(acc2, a.z, bv);
            acc3 = accumulate(acc3, a.w, bv);
        }
        workgroupBarrier();
    }
    let m = m0 + ty * 4u;
    let n = n0 + tx;
    for (var c = 0u; c < 4u; c++) {
        store_c(batch, m, n + c * WG_X, acc0[c]);
        store_c(batch, m + 1u, n + c * WG_X, acc1[c]);
        store_c(batch, m + 2u, n + c * WG_X, acc2[c]);
        store_c(batch, m + 3u, n + c * WG_X, acc3[c]);
    }
}

// Entry logic shared by the GEMM kernels: maps the (linearized) workgroup to one output tile of
// one of `batches` matrices (numbered from `batch_base`), for an m_len × n_len output reduced over k_len.
fn gemm_dispatch(
    wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>,
    m_len: u32, n_len: u32, k_len: u32, batch_base: u32, batches: u32,
) {
    let tiles_m = (m_len + WG_Y * 4u - 1u) / (WG_Y * 4u);
    let tiles_n = (n_len + WG_X * 4u - 1u) / (WG_X * 4u);
    let t = linear_workgroup(wid, nwg);
    if (t >= batches * tiles_m * tiles_n) {
        return;
    }
    let bh = batch_base + t / (tiles_m * tiles_n);
    let r = t % (tiles_m * tiles_n);
    gemm_tile(bh, (r / tiles_n) * WG_Y * 4u, (r % tiles_n) * WG_X * 4u, k_len, lid.x, lid.y);
}
