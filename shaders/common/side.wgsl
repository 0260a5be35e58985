// The side buffer: a call's small read-only arrays in one storage binding, so no kernel binds
// more than the 8 storage buffers WebGPU guarantees. Key lengths (or, for packed sequences, the
// key offsets cu_k) from word 0; where a kernel reads them, the local-p centers (f32 bits, from
// `params.centers_off`) and the additive score vector (from `params.score_off`, in elements of
// `elem`). The host binds the one array a call has directly, or gathers several into one buffer
// (shaders/side_gather.wgsl). Bound to a dummy buffer when the call has none.

@group(0) @binding(10) var<storage, read> side: array<u32>;

// Word i of the key lengths (key offsets for packed sequences).
fn key_lengths_at(i: u32) -> u32 {
    return side[i];
}

// Element i of the side buffer read as the storage type `elem` (two f16 per word).
fn side_elem(i: u32) -> f32 {
    if (ELEM_F16) {
        return unpack2x16float(side[i / 2u])[i % 2u];
    }
    return bitcast<f32>(side[i]);
}
