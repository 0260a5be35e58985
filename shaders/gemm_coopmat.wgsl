// Batched GEMM on cooperative matrices (f16 storage, f32 accumulation). A workgroup of WORKGROUP
// invocations (whole subgroups) computes a BM × BN block of C made of CM × CM fragments (CM, the
// adapter's largest f16 → f32 matrix size, and the `coop_a`/`coop_b`/`coop_c` types come from the
// prelude). K advances BK at a time: the A block (BM × BK) and the B block (BK × BN) are staged
// into workgroup memory as f16 through `load_a`/`load_b` (any strides, zero past the edges), then
// each subgroup multiplies its fragments with `coopMultiplyAdd` into f32 accumulators held across
// the whole reduction. At the end every fragment is stored into an f32 tile in workgroup memory and
// each element is written through `store_c`, so alpha, bias, accumulation, activation and edges
// are those of the other designs. The operation, operands and epilogue are those of
// common/gemm_io.wgsl. ROWS (fragments per subgroup) comes from the prelude: accumulator r < ROWS
// of subgroup s holds fragment s + r · (number of subgroups), and the host picks ROWS so that the fewest subgroups the device may form cover
// every fragment. Cooperative-matrix operations need uniform control flow (naga checks it), so no
// `if` guards them: when the device forms more subgroups than that, an accumulator past the last
// fragment computes the last fragment again and stores it into a scratch fragment past the C tile.

//@switches rows coop
//@import common/grid.wgsl
//@import common/gemm_io.wgsl

override WORKGROUP: u32 = 8u;
override BM: u32 = 32u; // rows of C per workgroup (multiple of CM)
override BN: u32 = 32u; // columns of C per workgroup (multiple of CM)
override BK: u32 = 8u;  // reduction step (multiple of CM)
// How the operands are laid out, to make consecutive invocations stage consecutive addresses:
// A with m contiguous (A stored transposed), B with k contiguous (B stored transposed, a weight).
override A_M_CONTIGUOUS: bool = false;
override B_K_CONTIGUOUS: bool = false;

var<workgroup> a_tile: array<f16, BM * BK>; // [BM][BK], row-major
var<workgroup> b_tile: array<f16, BK * BN>; // [BK][BN], row-major
var<workgroup> c_tile: array<f32, BM * BN + CM * CM>; // [BM][BN], row-major, then the scratch fragment

struct Inputs {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) sg_count: u32,
}

@compute @workgroup_size(WORKGROUP)
fn main(input: Inputs) {
    let lid = input.lid;
    let blocks_m = (gp.m + BM - 1u) / BM;
    let blocks_n = (gp.n + BN - 1u) / BN;
    let w = linear_workgroup(input.wid, input.nwg);
    // No early return: naga wants every cooperative-matrix operation after none. A workgroup past
    // the grid reduces over nothing and writes nothing.
    let live = w < gp.batch * blocks_m * blocks_n;
    var k_len = gp.k;
    if (!live) {
        k_len = 0u;
    }
    let t = w / (blocks_m * blocks_n);
    let block = w % (blocks_m * blocks_n);
    let m0 = (block / blocks_n) * BM;
    let n0 = (block % blocks_n) * BN;

    let frags_n = BN / CM;
    let frags = (BM / CM) * frags_n;
    //@each_row
    let frag{r} = min(input.sg + {r}u * input.sg_count, frags);
    let fm{r} = (min(frag{r}, frags - 1u) / frags_n) * CM;
    let fc{r} = (min(frag{r}, frags - 1u) % frags_n) * CM;
    // (`let`s: naga 30's SPIR-V writer needs the stride of coopStore evaluated beforehand.)
    let at{r} = select(fm{r} * BN + fc{r}, BM * BN, frag{r} == frags);
    let stride{r} = select(BN, CM, frag{r} == frags);
    var acc{r} = coop_c();
    //@end_row

    for (var k0 = 0u; k0 < k_len; k0 += BK) {
        for (var e = lid; e < BM * BK; e += WORKGROUP) {
            var mm = e / BK;
            var kk = e % BK;
            if (A_M_CONTIGUOUS) {
                mm = e % BM;
                kk = e / BM;
            }
            a_tile[mm * BK + kk] = f16(load_a(t, m0 + mm, k0 + kk));
        }
        for (var e = lid; e < BK * BN; e += WORKGROUP) {
            var kk = e / BN;
            var nn = e % BN;
            if (B_K_CONTIGUOUS) {
                kk = e % BK;
                nn = e / BK;
            }
            b_tile[kk * BN + nn] = f16(load_b(t, k0 + kk, n0 + nn));
        }
        workgroupBarrier();
        //@each_row
        for (var kk = 0u; kk < BK; kk += CM) {
            let a = coopLoadT<coop_a>(&a_tile[fm{r} * BK + kk], BK);
            let b = coopLoadT<coop_b>(&b_tile[kk * BN + fc{r}], BN);
            acc{r} = coopMultiplyAdd(a, b, acc{r});
        }
        //@end_row
        workgroupBarrier();
    }

    //@each_row
    coopStoreT(acc{r}, &c_tile[at{r}], stride{r});
    //@end_row
    workgroupBarrier();
    if (live) {
        for (var e = lid; e < BM * BN; e += WORKGROUP) {
            store_c(t, m0 + e / BN, n0 + e % BN, c_tile[e]);
        }
    }
}
