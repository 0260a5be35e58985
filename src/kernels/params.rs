//! The uniforms the kernels share: [`Params`] (every attention kernel), its [`Strides`] and
//! [`flags`], and the page uniform [`PageParams`] of the paged kernels.

/// The uniform every attention kernel reads; mirrors `struct Params` in `shaders/common/params.wgsl`.
/// Offsets and strides are in elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub heads_q: u32,
    pub heads_kv: u32,
    pub len_q: u32,
    pub len_k: u32,
    pub dim_k: u32,
    pub dim_v: u32,
    pub bh_base: u32,
    pub bh_count: u32,
    pub flags: u32,
    pub scale: f32,
    pub softcap: f32,
    pub q: Strides,
    pub k: Strides,
    pub v: Strides,
    pub o: Strides,
    pub bias: Strides,
    pub mask: Strides,
    pub causal_offset: i32,
    pub window_offset: i32,
    pub window_left: i32,
    pub window_right: i32,
    pub lse_off: u32,
    /// Rows of the packed Q/O and K/V tensors (variable-length attention).
    pub total_q: u32,
    pub total_k: u32,
    pub dropout_threshold: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub dropout_scale: f32,
    pub local_radius: f32,
    pub local_gauss: f32,
    pub centers_off: u32,
    pub score_off: u32,
    pub row_base: u32,
    pub row_count: u32,
    /// The fused kernel visits its (b, h) pairs in the order p · bh_stride mod bh_count
    /// (see `pair_stride`), so that every contiguous run of workgroups mixes batches.
    pub bh_stride: u32,
    /// ALiBi distances: the bottom-right aligned offset Lk − Lq (per sequence with the flag).
    pub alibi_offset: i32,
}

impl Params {
    /// Multiply-adds of the forward's two products (Q·Kᵀ and P·V) over every (b, h) pair and
    /// query row the dispatch covers, before causal or window skipping.
    pub(crate) fn forward_macs(&self) -> f64 {
        self.bh_count as f64 * self.len_q as f64 * self.len_k as f64 * (self.dim_k + self.dim_v) as f64
    }
}

/// Element offset and (batch, head, row) strides of a 4-D operand; the last dim is contiguous.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Strides {
    pub offset: u32,
    pub batch: u32,
    pub head: u32,
    pub row: u32,
}

/// Flag bits of `Params::flags` (same values as the WGSL constants).
pub mod flags {
    pub const BIAS: u32 = 1;
    pub const MASK: u32 = 2;
    pub const KEY_LENGTHS: u32 = 4;
    pub const CAUSAL: u32 = 8;
    pub const WINDOW: u32 = 16;
    pub const LSE: u32 = 32;
    pub const SOFTCAP: u32 = 64;
    pub const DROPOUT: u32 = 128;
    pub const ZERO_SCORE: u32 = 256;
    pub const LOCAL: u32 = 512;
    /// Bottom-right causal aligned per batch to its key length.
    pub const CAUSAL_PER_SEQ: u32 = 1024;
    /// Bottom-right window aligned per batch to its key length.
    pub const WINDOW_PER_SEQ: u32 = 2048;
    /// Packed variable-length sequences: cu_seqlens in the mask and key-length bindings.
    pub const VARLEN: u32 = 4096;
    /// ALiBi: scores minus slope_h · |i' − j|.
    pub const ALIBI: u32 = 8192;
    /// ALiBi distances from each batch's bottom-right position (its key length).
    pub const ALIBI_PER_SEQ: u32 = 16384;
    /// ALiBi slopes [B, Hq]: batch b, head h reads slope b · Hq + h.
    pub const ALIBI_PER_BATCH: u32 = 32768;
}

/// The page uniform of `shaders/common/kv_paged.wgsl` (`struct Pages`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PageParams {
    /// Rows per page.
    pub size: u32,
    /// Pages in K and V.
    pub count: u32,
    /// Element offset of block_table[0, 0] in its binding.
    pub table_off: u32,
    /// Row stride of the block table (elements).
    pub table_stride: u32,
    /// log2(size) when the page size is a power of two, else 32.
    pub shift: u32,
    pub _pad: [u32; 3],
}
