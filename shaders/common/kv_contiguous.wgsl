// K/V row addresses of a [B, Hkv, L, D] layout (any strides): `kv_rows(b, bl, hk, j)` returns the
// element offsets of key row j and value row j of kv head hk, batch bl of the dispatch (b is the
// global batch, unused here).

fn kv_rows(b: u32, bl: u32, hk: u32, j: u32) -> vec2<u32> {
    return vec2<u32>(
        params.k_off + bl * params.k_sb + hk * params.k_sh + j * params.k_sl,
        params.v_off + bl * params.v_sb + hk * params.v_sh + j * params.v_sl,
    );
}
