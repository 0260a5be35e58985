//! Argument types several subcommands share: value enums for kernels, designs, dtypes and causal
//! alignments, and the parsers of `--window` and `--register-tile`.

use clap::ValueEnum;
use wgpu_attention::{Alignment, DType, Design, FlashConfig, KernelChoice};

// `bench --kernel`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelArg {
    Fused,
    Staged,
    Decode,
    Reference,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DesignArg {
    /// The library's choice for the adapter (tuning cache, else by device).
    Auto,
    /// Rows in registers (CPU drivers).
    Register,
    /// Workgroup tiles (GPUs).
    Tiled,
    /// Cooperative matrices (GPUs with tensor cores, f16).
    Coopmat,
    /// Every design, one row each (bench only).
    All,
}

impl DesignArg {
    pub fn design(self) -> Option<Design> {
        match self {
            DesignArg::Register => Some(Design::Register),
            DesignArg::Tiled => Some(Design::Tiled),
            DesignArg::Coopmat => Some(Design::Coopmat),
            DesignArg::Auto | DesignArg::All => None,
        }
    }
}

// `run --kernel` and `warm-up --kernel`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunKernelArg {
    Auto,
    Fused,
    Staged,
    Decode,
}

impl RunKernelArg {
    pub fn choice(self) -> KernelChoice {
        match self {
            RunKernelArg::Auto => KernelChoice::Auto,
            RunKernelArg::Fused => KernelChoice::Fused,
            RunKernelArg::Staged => KernelChoice::Staged,
            RunKernelArg::Decode => KernelChoice::Decode,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    F16,
}

impl DTypeArg {
    pub fn dtype(self) -> DType {
        match self {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CausalArg {
    None,
    TopLeft,
    BottomRight,
}

impl CausalArg {
    pub fn alignment(self) -> Option<Alignment> {
        match self {
            CausalArg::None => None,
            CausalArg::TopLeft => Some(Alignment::TopLeft),
            CausalArg::BottomRight => Some(Alignment::BottomRight),
        }
    }
}

/// `L,R` with `-` or `inf` for an unbounded side.
pub fn parse_window(s: &str) -> Result<(Option<u32>, Option<u32>), String> {
    let side = |x: &str| -> Result<Option<u32>, String> {
        match x.trim() {
            "-" | "inf" | "" => Ok(None),
            v => v.parse().map(Some).map_err(|e| format!("window side {v:?}: {e}")),
        }
    };
    match s.split_once(',') {
        Some((l, r)) => Ok((side(l)?, side(r)?)),
        None => Err(format!("window {s:?}: expected LEFT,RIGHT (use - for unbounded)")),
    }
}

/// `--register-tile WG,ROWS`.
pub fn parse_register_tile(s: &str) -> Result<FlashConfig, String> {
    let parsed: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s}: {e}"))?;
    match parsed[..] {
        [workgroup, rows] => Ok(FlashConfig::new(workgroup, rows)),
        _ => Err(format!("{s}: expected WORKGROUP,ROWS (e.g. 16,2)")),
    }
}
