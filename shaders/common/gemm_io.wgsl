// The GEMM kernels' uniform, bindings and edge-aware element access, shared by the tiled design
// (`gemm.wgsl`) and the register-blocked one (`gemm_register.wgsl`):
//   C[t] = post_scale · act(alpha · A[t] B[t] + bias + (C[t] if ACCUMULATE)), act = id, tanh or sigmoid
// Any strides (transposes are strides); a batch index splits into (t / inner, t % inner) so
// [B, H, M, K] views need no copy, and a zero batch stride broadcasts (weights). bias has one entry
// per column n.

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    inner: u32,
    flags: u32,
    alpha: f32,
    bias_off: u32,
    a_off: u32, a_outer: u32, a_inner: u32, a_sm: u32, a_sk: u32,
    b_off: u32, b_outer: u32, b_inner: u32, b_sk: u32, b_sn: u32,
    c_off: u32, c_outer: u32, c_inner: u32, c_sm: u32, c_sn: u32,
    post_scale: f32,
}

const GEMM_BIAS: u32 = 1u;
const GEMM_ACCUMULATE: u32 = 2u;
const GEMM_TANH: u32 = 4u;
const GEMM_SIGMOID: u32 = 8u;

@group(0) @binding(0) var<uniform> gp: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> c: array<elem>;
@group(0) @binding(4) var<storage, read> bias: array<elem>;

fn load_a(t: u32, m: u32, k: u32) -> f32 {
    if (m >= gp.m || k >= gp.k) {
        return 0.0;
    }
    return f32(a[gp.a_off + (t / gp.inner) * gp.a_outer + (t % gp.inner) * gp.a_inner + m * gp.a_sm + k * gp.a_sk]);
}

fn load_b(t: u32, k: u32, n: u32) -> f32 {
    if (k >= gp.k || n >= gp.n) {
        return 0.0;
    }
    return f32(b[gp.b_off + (t / gp.inner) * gp.b_outer + (t % gp.inner) * gp.b_inner + k * gp.b_sk + n * gp.b_sn]);
}

fn store_c(t: u32, m: u32, n: u32, value: f32) {
    if (m >= gp.m || n >= gp.n) {
        return;
    }
    let e = gp.c_off + (t / gp.inner) * gp.c_outer + (t % gp.inner) * gp.c_inner + m * gp.c_sm + n * gp.c_sn;
    var x = gp.alpha * value;
    if ((gp.flags & GEMM_BIAS) != 0u) {
        x += f32(bias[gp.bias_off + n]);
    }
    if ((gp.flags & GEMM_ACCUMULATE) != 0u) {
        x += f32(c[e]);
    }
    if ((gp.flags & GEMM_TANH) != 0u) {
        x = tanh(clamp(x, -15.0, 15.0));
    }
    if ((gp.flags & GEMM_SIGMOID) != 0u) {
        x = 1.0 / (1.0 + exp(-x));
    }
    c[e] = elem(gp.post_scale * x);
}
