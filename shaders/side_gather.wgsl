// The side buffer of a call with several small read-only arrays (common/side.wgsl): each array's
// 32-bit words copied from its own binding into one buffer, at the word offsets the host chose,
// so that the kernels reading them bind one storage buffer instead of several. One invocation per
// destination word.

//@import common/grid.wgsl

override WORKGROUP: u32 = 64u;

struct Gather {
    // Per source: (first word in its binding, words, first word in `side_out`, unused).
    parts: array<vec4<u32>, 3>,
    // Words of `side_out` written (the sum of the parts' words).
    total: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> gather: Gather;
@group(0) @binding(1) var<storage, read> src0: array<u32>;
@group(0) @binding(2) var<storage, read> src1: array<u32>;
@group(0) @binding(3) var<storage, read> src2: array<u32>;
@group(0) @binding(4) var<storage, read_write> side_out: array<u32>;

fn source_word(part: u32, w: u32) -> u32 {
    switch part {
        case 0u: { return src0[w]; }
        case 1u: { return src1[w]; }
        default: { return src2[w]; }
    }
}

@compute @workgroup_size(WORKGROUP)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_workgroup(wid, nwg) * WORKGROUP + lid;
    if (t >= gather.total) {
        return;
    }
    for (var part = 0u; part < 3u; part++) {
        let p = gather.parts[part];
        if (t >= p.z && t < p.z + p.y) {
            side_out[t] = source_word(part, p.x + t - p.z);
            return;
        }
    }
}
