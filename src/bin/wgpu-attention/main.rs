//! `wgpu-attention`: device info, calibration ceilings, benchmarks, attention on tensor files,
//! tile tuning, warm-up and the composed shaders. This file holds the command line's top level
//! and its exit code; each subcommand lives in its own module (its arguments and its handler),
//! the shared argument types in [`args`], and the work in the library (`wgpu_attention::bench`,
//! `wgpu_attention::files`).

#[cfg(target_arch = "wasm32")]
compile_error!("the wgpu-attention command line is native-only; in a browser use the library (or web/)");

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod bench;
mod bench_decode;
mod bench_varlen;
mod call;
mod info;
mod peak;
mod run;
mod run_backward;
mod run_inputs;
mod run_kv_cache;
mod run_varlen;
mod shader;
mod tune;
mod verdict;
mod warm_up;

#[derive(Parser)]
#[command(
    name = "wgpu-attention",
    version,
    about = "Portable GPU attention kernels (WGSL on wgpu)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Adapter, backend, driver, granted features and key limits.
    Info,
    /// Measure the adapter's FMA throughput and memory bandwidth.
    Peak {
        /// Measured samples per ceiling.
        #[arg(long, default_value_t = 5)]
        iters: u32,
        /// Write the results as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Benchmark attention kernels (any variant of the family) over shapes and check them against
    /// the CPU reference.
    Bench(Box<bench::BenchArgs>),
    /// Run attention (any variant of the family) on tensors from .npy or .safetensors files.
    Run(Box<run::RunArgs>),
    /// Tune the fused kernel's tiles and the decode kernel's designs and splits for this adapter
    /// and store them in the tuning cache.
    Tune(tune::TuneArgs),
    /// Compile the pipelines of call shapes ahead of their first use (later processes start warm
    /// where the device has PIPELINE_CACHE or the driver caches compiled shaders on disk).
    WarmUp(warm_up::WarmUpArgs),
    /// Print the composed WGSL of any kernel permutation (as its pipelines compile it), or list
    /// the kernels and their switches.
    Shader(shader::ShaderArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Info => info::info(),
        Command::Peak { iters, json } => peak::peak_cmd(*iters, json.as_deref()),
        Command::Bench(a) => bench::bench_cmd(a),
        Command::Run(a) => run::run_cmd(a),
        Command::Tune(a) => tune::tune_cmd(a),
        Command::WarmUp(a) => warm_up::warm_up_cmd(a),
        Command::Shader(a) => shader::shader_cmd(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the message, then each cause not already contained in it.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            eprintln!("error: {}", wgpu_attention::bench::one_line(&msg));
            ExitCode::FAILURE
        }
    }
}
