//! `bench --preset decode`: the decode sweep of `wgpu_attention::bench::decode` (contiguous and
//! paged caches, split and unsplit).

use anyhow::{bail, Result};
use wgpu_attention::bench::{self, render};

use crate::bench::BenchArgs;
use crate::call::context_of;
use crate::verdict::verdict;

/// `bench --preset decode`: the decode sweep of `bench::decode`.
pub fn decode_bench_cmd(a: &BenchArgs) -> Result<()> {
    let refused = [
        ("--variant", !a.variants.is_empty()),
        ("--kernel", !a.kernels.is_empty()),
        ("--causal", !a.causal.is_empty()),
        ("--window", a.window.is_some()),
        ("--key-lengths", !a.key_lengths.is_empty()),
        ("--csv", a.csv.is_some()),
        ("--plot", a.plot.is_some()),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
        bail!("{flag} does not apply to --preset decode (it sweeps the decode kernel's layouts and splits; use --shape B,Hq,Hkv,1,Lk,D,D with {flag} for other runs)");
    }
    let mut opts = bench::decode::DecodeBenchOptions {
        dtype: a.dtype.dtype(),
        page_size: a.page_size,
        warmup: a.warmup,
        iters: a.iters.max(1),
        check: a.check_options()?,
        ..Default::default()
    };
    if !a.batches.is_empty() {
        opts.batches = a.batches.clone();
    }
    if !a.lengths.is_empty() {
        opts.lengths_checked(&a.lengths)?;
    }
    let ctx = context_of(a.borrowed_device)?;
    let r = bench::decode::run_decode_bench(&ctx, &opts)?;
    print!("{}", bench::decode::decode_table(&r));
    if let Some(p) = &a.json {
        render::write_json(p, &r)?;
    }
    verdict(r.verdict(&opts.check))
}
