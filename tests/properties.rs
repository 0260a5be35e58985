//! Property tests: random shapes and option combinations agree with the CPU reference.

mod common;
use common::*;
use proptest::prelude::*;
use wgpu_attention::{Alignment, DType, FlashConfig, KernelChoice, TiledConfig, Window};

fn alignment() -> impl Strategy<Value = Alignment> {
    prop_oneof![Just(Alignment::TopLeft), Just(Alignment::BottomRight)]
}

prop_compose! {
    fn any_case()(
        b in 1usize..=2, hkv in 1usize..=2, group in prop_oneof![Just(1usize), Just(2), Just(4)],
        lq in 1usize..=40, lk in 1usize..=40, dk in 1usize..=48, dv in 1usize..=48,
        causal in proptest::option::of(alignment()),
        window in proptest::option::of((proptest::option::of(0u32..12), proptest::option::of(0u32..12), alignment())),
        softcap in proptest::option::of(0.5f32..8.0),
        scale in proptest::option::of(-1.0f32..1.0),
        bias in any::<bool>(), mask in any::<bool>(), lengths in any::<bool>(),
        fused in any::<bool>(), f16 in any::<bool>(), seed in any::<u64>(),
        rows in 1u32..=3, workgroup in prop_oneof![Just(8u32), Just(16), Just(64)], subgroups in any::<bool>(),
        tiled in any::<bool>(), block_q in prop_oneof![Just(4u32), Just(8), Just(16)],
        lanes in prop_oneof![Just(1u32), Just(2), Just(4)], key_tiles in 1u32..=4,
    ) -> Case {
        let p = problem(b, hkv * group, hkv, lq, lk, dk, dv);
        let mut c = Case::new(p).seed(seed).opts(|o| {
            o.causal = causal;
            o.window = window.map(|(left, right, alignment)| Window { left, right, alignment });
            o.softcap = softcap;
            o.scale = scale;
        });
        if bias { c = c.bias([1, p.hq, lq, lk]); }
        if mask { c = c.mask(MaskKind::Random { shape: [b, 1, lq, lk] }); }
        if lengths { c = c.key_lengths((0..b as u32).map(|i| (i * 7 + 3) % (lk as u32 + 1)).collect()); }
        if fused {
            // Random tiles too (register or tiled design); few rows keep lavapipe's pipeline
            // compiles short.
            c = c.kernel(KernelChoice::Fused);
            if tiled {
                c = c.tiled(TiledConfig::new(block_q, lanes * key_tiles, lanes));
            } else {
                let mut tile = FlashConfig::new(workgroup, rows);
                tile.subgroups = subgroups;
                c = c.tile(tile);
            }
            if f16 { c = c.dtype(DType::F16); }
        } else {
            c = c.kernel(KernelChoice::Staged).opts(|o| o.return_weights = true);
        }
        c
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn gpu_matches_reference(case in any_case()) {
        if let Err(e) = case.check() {
            prop_assert!(false, "{}", e);
        }
    }
}
