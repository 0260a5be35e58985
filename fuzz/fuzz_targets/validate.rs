//! Host validation of attention calls on arbitrary shapes, strides, offsets, dtypes and options:
//! every tensor constructor and `validate` returns a value or a structured error; never a panic,
//! a wrapped size or a hang. Needs a Vulkan adapter (lavapipe is enough): nothing is dispatched.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wgpu_attention::{
    validate, wgpu, Alignment, AttentionOptions, Context, DType, Design, Dropout, KernelChoice, Tensor, Window,
};

/// One buffer of 64 KiB (f32: 16,384 elements) that every fuzzed tensor views.
const BUFFER_BYTES: u64 = 1 << 16;

fn setup() -> &'static (Context, wgpu::Buffer) {
    static SETUP: OnceLock<(Context, wgpu::Buffer)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let ctx = Context::new().expect("the validate target needs a Vulkan adapter (lavapipe)");
        let buffer = Tensor::zeros(&ctx, &[(BUFFER_BYTES / 4) as usize], DType::F32)
            .expect("64 KiB tensor")
            .buffer()
            .clone();
        (ctx, buffer)
    })
}

#[derive(Arbitrary, Debug)]
struct View {
    offset: u64,
    shape: Vec<usize>,
    strides: Option<Vec<usize>>,
    dtype: u8,
    /// Mostly small shapes (so that validation, not the buffer check, is reached), sometimes raw.
    raw: bool,
}

impl View {
    fn tensor(&self, buffer: &wgpu::Buffer) -> Option<Tensor> {
        let dtype = [DType::F32, DType::F16, DType::Bool, DType::U32][self.dtype as usize % 4];
        let small = |x: usize| if self.raw { x } else { x % 9 };
        let shape: Vec<usize> = self.shape.iter().take(6).map(|&n| small(n)).collect();
        let offset = if self.raw { self.offset } else { self.offset % 256 };
        let t = match Tensor::from_buffer(buffer, offset, &shape, dtype) {
            Ok(t) => t,
            Err(e) => return expect_message(e),
        };
        match &self.strides {
            None => Some(t),
            Some(s) => {
                let s: Vec<usize> = s.iter().take(6).map(|&x| small(x)).collect();
                match t.with_strides(&s) {
                    Ok(t) => Some(t),
                    Err(e) => expect_message(e),
                }
            }
        }
    }
}

fn expect_message(e: wgpu_attention::Error) -> Option<Tensor> {
    assert!(!e.to_string().is_empty());
    None
}

#[derive(Arbitrary, Debug)]
struct Call {
    q: View,
    k: View,
    v: View,
    bias: Option<View>,
    mask: Option<View>,
    key_lengths: Option<View>,
    out: Option<View>,
    scale: Option<f32>,
    softcap: Option<f32>,
    causal: Option<bool>,
    window: Option<(Option<u32>, Option<u32>, bool)>,
    return_weights: bool,
    return_lse: bool,
    kernel: u8,
    dropout: Option<(f32, u64)>,
    zero_score_mask: bool,
    align_to_key_lengths: bool,
    block_table: Option<View>,
    alibi_slopes: Option<Vec<f32>>,
    design: u8,
}

fn alignment(top_left: bool) -> Alignment {
    if top_left {
        Alignment::TopLeft
    } else {
        Alignment::BottomRight
    }
}

fuzz_target!(|call: Call| {
    let (ctx, buffer) = setup();
    let (Some(q), Some(k), Some(v)) = (call.q.tensor(buffer), call.k.tensor(buffer), call.v.tensor(buffer)) else {
        return;
    };
    let optional = |view: &Option<View>| view.as_ref().and_then(|view| view.tensor(buffer));
    let opts = AttentionOptions {
        scale: call.scale,
        softcap: call.softcap,
        bias: optional(&call.bias),
        mask: optional(&call.mask),
        key_lengths: optional(&call.key_lengths),
        causal: call.causal.map(alignment),
        window: call.window.map(|(left, right, top_left)| Window { left, right, alignment: alignment(top_left) }),
        return_weights: call.return_weights,
        return_lse: call.return_lse,
        kernel: [KernelChoice::Auto, KernelChoice::Fused, KernelChoice::Staged, KernelChoice::Decode][call.kernel as usize % 4],
        dropout: call.dropout.map(|(p, seed)| Dropout { p, seed }),
        zero_score_mask: call.zero_score_mask,
        out: optional(&call.out),
        align_to_key_lengths: call.align_to_key_lengths,
        block_table: optional(&call.block_table),
        alibi_slopes: call.alibi_slopes.clone().map(Into::into),
        design: [None, Some(Design::Register), Some(Design::Tiled), Some(Design::Coopmat)][call.design as usize % 4],
    };
    if let Err(e) = validate(ctx, &q, &k, &v, &opts) {
        assert!(!e.to_string().is_empty());
    }
});
