//! How a checked command ends: each comparison with the CPU reference printed with PASS/FAIL,
//! the requested output files written, then a failure (non-zero exit) when anything was outside
//! tolerance; and the verdict line of a benchmark.

use std::path::PathBuf;

use anyhow::{bail, Result};
use wgpu_attention::bench_record::Verdict;
use wgpu_attention::files::{self, HostTensor};
use wgpu_attention::reference::Comparison;
use wgpu_attention::KernelChoice;

/// An output file flag and the tensor it writes (`None`: the run did not return it).
pub type OutputFile<'a> = (&'a Option<PathBuf>, Option<&'a HostTensor>);

/// Prints one check line (errors and PASS/FAIL); true when it passed.
fn report_check(output: &str, c: &Comparison) -> bool {
    let verdict = if c.ok() { "PASS" } else { "FAIL" };
    println!("check {output} against the CPU reference: {c}: {verdict}");
    c.ok()
}

/// Prints every check against the CPU reference, writes each output whose flag is given, then
/// fails with `failure` when a check was outside tolerance (after every file has been written).
pub fn report_and_write(checks: &[(&str, Comparison)], outputs: &[OutputFile], failure: &str) -> Result<()> {
    let mut passed = true;
    for (name, c) in checks {
        passed &= report_check(name, c);
    }
    for (path, t) in outputs {
        if let (Some(path), Some(t)) = (path, t) {
            files::write_npy(path, t)?;
            println!("wrote {}", path.display());
        }
    }
    if !passed {
        bail!("{failure}");
    }
    Ok(())
}

/// Prints the verdict's line, or fails with it when a row is outside tolerance (after every
/// table and file has been written).
pub fn verdict(v: Verdict) -> Result<()> {
    match v.passed() {
        true => {
            println!("{}", v.line());
            Ok(())
        }
        false => bail!("{}", v.line()),
    }
}

/// The kernel that ran, as the summary line names it.
pub fn kernel_name(k: KernelChoice) -> &'static str {
    match k {
        KernelChoice::Staged => "staged",
        KernelChoice::Decode => "decode",
        _ => "fused",
    }
}
