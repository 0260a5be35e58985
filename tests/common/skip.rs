//! Named skips: the one way a test (or part of one) gives up for a missing precondition.
//!
//! A skip prints `SKIPPED <test>: <reason>` and appends a line to the file named by
//! `WGPU_ATTENTION_SKIP_LOG` (scripts/test.sh counts them per lane). Where the lane says the
//! capability must be there (`WGPU_ATTENTION_REQUIRE=f16,subgroups,…`, or `all`), the skip fails
//! the test instead, so a driver that silently loses a feature turns its lane red, not empty.

use std::io::Write;

use wgpu_attention::{available_designs, wgpu, Context, DType, Design, GemmDesign};

/// The environment variable naming the capabilities a lane requires (comma-separated names of
/// [`Cap`], or `all`).
pub const REQUIRE_ENV: &str = "WGPU_ATTENTION_REQUIRE";
/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_ENV: &str = "WGPU_ATTENTION_SKIP_LOG";

/// What a test may need from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// `SHADER_F16`: f16 storage.
    F16,
    /// `SUBGROUP` with a fixed subgroup size (4 to 64): the subgroup paths of the fused and
    /// decode kernels.
    Subgroups,
    /// The tiled fused design (`available_designs`).
    Tiled,
    /// The cooperative-matrix fused design for f16 (`available_designs`).
    Coopmat,
    /// The cooperative-matrix GEMM for f16.
    CoopmatGemm,
    /// `PIPELINE_CACHE`: the persisted driver pipeline cache.
    PipelineCache,
}

impl Cap {
    /// Every capability, in the order `WGPU_ATTENTION_REQUIRE=all` lists them.
    pub const ALL: [Cap; 6] = [
        Cap::F16,
        Cap::Subgroups,
        Cap::Tiled,
        Cap::Coopmat,
        Cap::CoopmatGemm,
        Cap::PipelineCache,
    ];

    /// The name lanes use in `WGPU_ATTENTION_REQUIRE`.
    pub fn name(self) -> &'static str {
        match self {
            Cap::F16 => "f16",
            Cap::Subgroups => "subgroups",
            Cap::Tiled => "tiled",
            Cap::Coopmat => "coopmat",
            Cap::CoopmatGemm => "coopmat-gemm",
            Cap::PipelineCache => "pipeline-cache",
        }
    }

    /// `None` when `ctx` has the capability, else why not.
    pub fn missing(self, ctx: &Context) -> Option<String> {
        let feature = |f: wgpu::Features, name: &str| {
            (!ctx.features().contains(f)).then(|| format!("the device was not granted {name}"))
        };
        match self {
            Cap::F16 => feature(wgpu::Features::SHADER_F16, "SHADER_F16"),
            Cap::PipelineCache => feature(wgpu::Features::PIPELINE_CACHE, "PIPELINE_CACHE"),
            Cap::Subgroups => feature(wgpu::Features::SUBGROUP, "SUBGROUP").or_else(|| {
                let (min, max) = ctx
                    .info()
                    .adapter
                    .as_ref()
                    .map_or((0, 0), |a| (a.subgroup_min_size, a.subgroup_max_size));
                (min != max || !matches!(min, 4 | 8 | 16 | 32 | 64))
                    .then(|| format!("subgroup sizes {min}..{max} are not one fixed size of 4 to 64"))
            }),
            Cap::Tiled => (!available_designs(ctx, DType::F32).contains(&Design::Tiled))
                .then(|| "the tiled design is not available on this device".to_string()),
            Cap::Coopmat => (!available_designs(ctx, DType::F16).contains(&Design::Coopmat))
                .then(|| "no cooperative-matrix design for f16 here (scripts/coopmat-lane.sh runs one)".to_string()),
            Cap::CoopmatGemm => GemmDesign::Coopmat.unsupported(ctx, DType::F16),
        }
    }

    /// Whether the lane requires this capability (`WGPU_ATTENTION_REQUIRE`).
    pub fn required(self) -> bool {
        let Ok(list) = std::env::var(REQUIRE_ENV) else {
            return false;
        };
        list.split(',').map(str::trim).any(|n| n == "all" || n == self.name())
    }
}

/// The running test's name (libtest names each test's thread after it).
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("(unnamed test)").to_string()
}

/// Records a skip of the running test (or of `part` of it, when given) for `reason`; fails the
/// test instead when the lane requires `cap`.
#[track_caller]
pub fn skip(cap: Cap, part: Option<&str>, reason: &str) {
    let test = test_name();
    let what = match part {
        Some(part) => format!("{test} ({part})"),
        None => test,
    };
    if cap.required() {
        panic!(
            "{what} needs {} and this lane requires it ({REQUIRE_ENV}={}), but {reason}",
            cap.name(),
            std::env::var(REQUIRE_ENV).unwrap_or_default()
        );
    }
    eprintln!("SKIPPED {what}: {reason} [{}]", cap.name());
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let line = format!("{what}\t{}\t{reason}\n", cap.name());
        // One write of the whole line on an append-only file: lines of parallel tests do not mix.
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// `true` when `ctx` has `cap`; otherwise records a named skip of the running test (or fails it
/// where the lane requires `cap`) and returns `false`.
#[track_caller]
pub fn has_on(ctx: &Context, cap: Cap, part: Option<&str>) -> bool {
    match cap.missing(ctx) {
        None => true,
        Some(reason) => {
            skip(cap, part, &format!("{reason} on {}", ctx.info().summary()));
            false
        }
    }
}

/// [`has_on`] the test context.
#[track_caller]
pub fn has(cap: Cap) -> bool {
    has_on(super::ctx(), cap, None)
}

/// [`has`] for a part of a test (a dtype of a loop, one case): the skip names the part.
#[track_caller]
pub fn has_for(cap: Cap, part: &str) -> bool {
    has_on(super::ctx(), cap, Some(part))
}

/// Ends the running test with a named skip when the test context (or the context given first)
/// lacks `cap`, and fails it where the lane requires `cap`: `require!(Cap::F16)`,
/// `require!(&ctx, Cap::F16)`.
#[macro_export]
macro_rules! require {
    ($cap:expr) => {
        if !$crate::common::skip::has($cap) {
            return;
        }
    };
    ($ctx:expr, $cap:expr) => {
        if !$crate::common::skip::has_on($ctx, $cap, None) {
            return;
        }
    };
}
