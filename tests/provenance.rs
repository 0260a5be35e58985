//! Tensors belong to the device they were created on; contexts on one device share them, a
//! context on another device refuses them with `Error::DeviceMismatch` (never a panic or a wrong
//! result). A borrowed device picks the same tiles as an owned one on the same adapter.

mod common;

use common::ctx;
use wgpu_attention::{
    attention, gemm, AttentionOptions, Context, DType, Error, GemmOptions, KernelChoice, Problem, Tensor,
};

fn qkv(ctx: &Context) -> Tensor {
    Tensor::from_slice(ctx, &[0.25f32; 2 * 5 * 8], &[1, 2, 5, 8]).unwrap()
}

#[test]
fn tensors_of_another_device_are_refused() {
    let a = ctx();
    let b = Context::new().unwrap(); // a second device on the same adapter
    assert!(a.device() != b.device(), "two Context::new() calls share a device");
    let t = qkv(a);
    let local = qkv(&b);
    for kernel in [KernelChoice::Fused, KernelChoice::Staged] {
        let opts = AttentionOptions {
            kernel,
            ..Default::default()
        };
        let e = attention(&b, &t, &t, &t, &opts).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { name: "q" }), "{kernel:?}: {e}");
        let e = attention(&b, &local, &local, &t, &opts).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { name: "v" }), "{kernel:?}: {e}");
        let mask = Tensor::from_slice(a, &[true; 5 * 5], &[1, 1, 5, 5]).unwrap();
        let opts = AttentionOptions {
            mask: Some(mask),
            ..opts
        };
        let e = attention(&b, &local, &local, &local, &opts).unwrap_err();
        assert!(matches!(e, Error::DeviceMismatch { name: "mask" }), "{kernel:?}: {e}");
    }
    let e = t.to_vec::<f32>(&b).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
    let m = Tensor::from_slice(a, &[1.0f32; 4], &[2, 2]).unwrap();
    let e = gemm::gemm(&b, &m, &m, &GemmOptions::default()).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
    // Views keep the device of the tensor they view.
    let e = t
        .view(0, &[1, 2, 5, 8], &[80, 40, 8, 1])
        .unwrap()
        .to_vec::<f32>(&b)
        .unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { .. }), "{e}");
}

#[test]
fn contexts_on_one_device_share_tensors() {
    let a = ctx();
    let shared = Context::from_device(a.device(), a.queue());
    let t = qkv(a);
    let res = attention(&shared, &t, &t, &t, &AttentionOptions::default()).unwrap();
    let o: Vec<f32> = res.out.to_vec(a).unwrap();
    assert!(o.iter().all(|&x| (x - 0.25).abs() < 1e-6));
}

#[test]
fn borrowed_device_picks_the_tiles_of_an_owned_one() {
    let owned = ctx();
    let borrowed = Context::from_device(owned.device(), owned.queue());
    assert_eq!(
        borrowed
            .info()
            .adapter
            .as_ref()
            .map(|a| (&a.name, &a.driver_info, a.device_type)),
        owned
            .info()
            .adapter
            .as_ref()
            .map(|a| (&a.name, &a.driver_info, a.device_type))
    );
    let shapes = [
        Problem {
            b: 1,
            hq: 32,
            hkv: 8,
            lq: 1,
            lk: 4096,
            dk: 128,
            dv: 128,
        },
        Problem {
            b: 1,
            hq: 8,
            hkv: 8,
            lq: 1024,
            lk: 1024,
            dk: 32,
            dv: 32,
        },
        Problem {
            b: 2,
            hq: 4,
            hkv: 4,
            lq: 64,
            lk: 64,
            dk: 64,
            dv: 64,
        },
    ];
    for p in shapes {
        for dtype in [DType::F32, DType::F16] {
            assert_eq!(
                wgpu_attention::tune::selected_flash_config(&borrowed, &p, dtype, &AttentionOptions::default())
                    .unwrap(),
                wgpu_attention::tune::selected_flash_config(owned, &p, dtype, &AttentionOptions::default()).unwrap(),
                "{p} {dtype:?}"
            );
        }
    }
}
