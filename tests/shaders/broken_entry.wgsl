// A test-only entry whose piece does not compile: the error must be placed in the piece.

//@import broken_piece.wgsl

@compute @workgroup_size(1)
fn main() {
    let x = broken();
}
