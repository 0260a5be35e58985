//! Tile selection for the fused kernel.

use crate::attention::Problem;
use crate::context::Context;
use crate::error::Result;
use crate::kernels::FlashConfig;
use crate::tensor::DType;

/// The tile the fused kernel uses for `problem`: the largest built-in candidate that fits.
pub(crate) fn flash_config(ctx: &Context, problem: &Problem, _dtype: DType) -> Result<FlashConfig> {
    FlashConfig::default_for(ctx, problem.dk as u32, problem.dv as u32)
}
