// The backward kernels' key lengths, read from the row records (common/grad_io.wgsl), where the
// pre-pass copies them: one storage binding fewer, so the kernels that read dO from its tensor
// stay within the 8 storage buffers WebGPU guarantees.

// Word i of the key lengths.
fn key_lengths_at(i: u32) -> u32 {
    return bitcast<u32>(grad_rows[backward.lengths_off + i / 4u][i % 4u]);
}
