//! How the subcommands call the library: the GPU context (the crate's own, or a device lent as a
//! downstream crate lends one), a notice while a pipeline compiles, and library errors in the
//! CLI's words.

use anyhow::{anyhow, Context as _, Result};
use wgpu_attention::{wgpu, Context};

pub fn context() -> Result<Context> {
    Context::new().context("creating the GPU context")
}

/// A device made the way a downstream crate makes its own (default adapter, the features the
/// crate's fast paths use, full limits), lent to `Context::from_device`.
pub fn borrowed_context() -> Result<Context> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::from_env().unwrap_or(wgpu_attention::context::DEFAULT_BACKENDS),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).context("no adapter")?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("borrowed"),
        required_features: adapter.features() & wgpu_attention::context::WANTED_FEATURES,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .context("requesting a device")?;
    Ok(Context::from_device(&device, &queue))
}

/// The crate's own context, or with `borrowed` one on a device created here ([`borrowed_context`]).
pub fn context_of(borrowed: bool) -> Result<Context> {
    match borrowed {
        true => borrowed_context(),
        false => context(),
    }
}

/// Library messages name the Rust API; the CLI names its flags instead.
pub fn cli_error(e: wgpu_attention::Error) -> anyhow::Error {
    let mut msg = e.to_string();
    for (api, flag) in [
        ("KernelChoice::Staged (or Auto)", "--kernel staged (or auto)"),
        ("KernelChoice::Staged", "--kernel staged"),
        ("KernelChoice::Fused", "--kernel fused"),
        ("with return_weights", "with --weights"),
        ("option `half_width`", "--half-width"),
        ("option `eps`", "--eps"),
        ("option `softcap`", "--softcap"),
        ("option `scale`", "--scale"),
        ("option `dropout.p`", "--dropout"),
        ("option `heads_q`", "--heads"),
        ("use the fused path for f16", "use --kernel fused (or auto) for f16"),
    ] {
        msg = msg.replace(api, flag);
    }
    anyhow!(msg)
}

/// Prints a one-line notice on stderr while the library compiles a pipeline no cache holds.
pub fn pipeline_notice() -> impl Drop {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            wgpu_attention::pipeline::set_compile_hook(None);
        }
    }
    wgpu_attention::pipeline::set_compile_hook(Some(Box::new(|what: &str| {
        eprintln!("compiling the {what} pipeline (first use; can take a while on a CPU adapter)…");
    })));
    Reset
}

/// Runs a library call with the compile notice on, its error in the CLI's words.
pub fn with_notice<T>(call: impl FnOnce() -> wgpu_attention::Result<T>) -> Result<T> {
    let notice = pipeline_notice();
    let res = call().map_err(cli_error);
    drop(notice);
    res
}
