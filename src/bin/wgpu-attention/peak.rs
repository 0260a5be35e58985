//! `peak`: the adapter's FMA throughput and memory bandwidth.

use std::path::Path;

use anyhow::Result;
use wgpu_attention::bench::{peak, render};

use crate::call::context;

pub fn peak_cmd(iters: u32, json: Option<&Path>) -> Result<()> {
    let ctx = context()?;
    let r = peak::measure_peak(&ctx, iters)?;
    println!("{r}");
    if let Some(path) = json {
        render::write_json(path, &r)?;
    }
    Ok(())
}
