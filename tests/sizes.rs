//! Sizes computed from shapes, strides and offsets never wrap: each constructor that used to
//! succeed with a wrapped size (a 4-byte buffer for 2^64 elements) now returns a clear error.

mod common;

use common::ctx;
use wgpu_attention::{DType, Error, Tensor};

fn is_size_error(r: Result<Tensor, Error>) -> bool {
    matches!(
        r,
        Err(Error::SizeOverflow { .. }) | Err(Error::Limit { .. }) | Err(Error::BufferTooSmall { .. })
    )
}

#[test]
fn huge_shapes_are_refused() {
    let ctx = ctx();
    let big = 1usize << 31;
    let e = Tensor::zeros(ctx, &[big, big], DType::F32);
    assert!(is_size_error(e), "zeros([2^31, 2^31])");
    let e = Tensor::zeros(ctx, &[1 << 32, 1 << 32], DType::F32);
    assert!(
        matches!(e, Err(Error::SizeOverflow { .. })),
        "zeros([2^32, 2^32]): {e:?}"
    );
    let e = Tensor::from_slice::<f32>(ctx, &[], &[1 << 32, 1 << 32]);
    assert!(
        matches!(e, Err(Error::SizeOverflow { .. })),
        "from_slice(&[], [2^32, 2^32]): {e:?}"
    );
    let e = Tensor::from_bytes(ctx, &[], &[usize::MAX, 2], DType::F16);
    assert!(matches!(e, Err(Error::SizeOverflow { .. })), "{e:?}");
}

#[test]
fn wrapped_views_reshapes_and_offsets_are_refused() {
    let ctx = ctx();
    let t = Tensor::from_slice(ctx, &[0.0f32; 16], &[16]).unwrap();
    let e = t.reshape(&[(1 << 63) + 8, 2]);
    assert!(e.is_err(), "reshape of 16 elements to [2^63 + 8, 2]: {e:?}");
    let e = t.view(1 << 62, &[1], &[1]);
    assert!(is_size_error(e), "view at element offset 2^62");
    let e = t.view(0, &[2], &[1 << 62]);
    assert!(is_size_error(e), "stride 2^62");
    let e = t.view(0, &[3, 3], &[usize::MAX / 2, 1]);
    assert!(is_size_error(e), "stride usize::MAX / 2");
    let e = Tensor::from_buffer(t.buffer(), u64::MAX - 3, &[1], DType::F32);
    assert!(is_size_error(e), "from_buffer at offset u64::MAX − 3");
    let e = Tensor::from_buffer(t.buffer(), 0, &[1 << 40, 1 << 40], DType::F32);
    assert!(is_size_error(e));
    // Broadcast views (stride 0) of huge logical shapes are legal views of one element.
    let b = t.view(0, &[1 << 40, 4], &[0, 1]).unwrap();
    assert_eq!(b.shape(), &[1 << 40, 4]);
    let e = t.view(0, &[1 << 40, 1 << 40, 1 << 40], &[0, 0, 1]);
    assert!(e.is_err(), "element count 2^120 overflows: {e:?}");
}

#[test]
fn error_messages_name_the_operation() {
    let e = Tensor::zeros(ctx(), &[1 << 32, 1 << 32], DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tensor allocation") && e.contains("overflows"), "{e}");
}

#[test]
fn row_counts_beyond_32_bits_are_refused_not_truncated() {
    use wgpu_attention::{attention, family::hard::hard, AttentionOptions};
    let ctx = ctx();
    // Broadcast views (stride 0) make a B·Hq of 2^32 without memory: it must not run truncated.
    let one = Tensor::from_slice(ctx, &[0.5f32; 8], &[8]).unwrap();
    let q = one.view(0, &[1 << 16, 1 << 16, 1, 8], &[0, 0, 0, 1]).unwrap();
    let k = one.view(0, &[1 << 16, 1, 1, 8], &[0, 0, 0, 1]).unwrap();
    let e = attention(ctx, &q, &k, &k, &AttentionOptions::default()).unwrap_err();
    assert!(e.to_string().contains("32-bit row indices"), "{e}");
    let e = hard(ctx, &q, &k, &k, 1, &AttentionOptions::default()).unwrap_err();
    assert!(e.to_string().contains("32-bit row indices"), "{e}");
}
