//! The shapes of a benchmark: named sweeps ([`preset`]) and `--shape` values ([`parse_shape`]).

use crate::attention::Problem;
use crate::options::Alignment;

fn square(b: usize, h: usize, l: usize, d: usize) -> Problem {
    Problem {
        b,
        hq: h,
        hkv: h,
        lq: l,
        lk: l,
        dk: d,
        dv: d,
    }
}

/// Names of the presets.
pub const PRESETS: [&str; 4] = ["default", "seq", "headdim", "decode"];

/// A named sweep: its shapes and the causal variants it runs by default.
/// - `seq`: B=1, H=8, D=64, L ∈ {512, 1024, 2048};
/// - `headdim`: B=1, H=8, L=1024, D ∈ {32, 64, 128, 256};
/// - `decode`: B ∈ {1, 8}, Hq=32, Hkv=8, D=128, Lq=1, Lk ∈ {1024, 4096, 16384};
/// - `default`: B=1, H=4, D=64, L ∈ {128, 256, 512}, non-causal and causal (a couple of minutes on lavapipe).
pub fn preset(name: &str) -> std::result::Result<(Vec<Problem>, Vec<Option<Alignment>>), String> {
    Ok(match name {
        "seq" => ([512, 1024, 2048].map(|l| square(1, 8, l, 64)).to_vec(), vec![None]),
        "headdim" => ([32, 64, 128, 256].map(|d| square(1, 8, 1024, d)).to_vec(), vec![None]),
        "decode" => (
            [1, 8]
                .into_iter()
                .flat_map(|b| {
                    [1024, 4096, 16384].map(|lk| Problem {
                        b,
                        hq: 32,
                        hkv: 8,
                        lq: 1,
                        lk,
                        dk: 128,
                        dv: 128,
                    })
                })
                .collect(),
            vec![None],
        ),
        "default" => (
            [128, 256, 512].map(|l| square(1, 4, l, 64)).to_vec(),
            vec![None, Some(Alignment::TopLeft)],
        ),
        other => {
            return Err(format!(
                "unknown preset {other:?} (expected one of {})",
                PRESETS.join(", ")
            ))
        }
    })
}

/// Parses a shape: `B,Hq,Hkv,Lq,Lk,Dk,Dv`, `B,Hq,Hkv,L,D` (Lq = Lk, Dk = Dv) or `B,H,L,D`.
pub fn parse_shape(s: &str) -> std::result::Result<Problem, String> {
    let v: Vec<usize> = s
        .split([',', 'x'])
        .map(|x| x.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("shape {s:?}: {e} (expected B,H,L,D or B,Hq,Hkv,L,D or B,Hq,Hkv,Lq,Lk,Dk,Dv)"))?;
    let p = match v[..] {
        [b, h, l, d] => square(b, h, l, d),
        [b, hq, hkv, l, d] => Problem {
            hq,
            hkv,
            ..square(b, hq, l, d)
        },
        [b, hq, hkv, lq, lk, dk, dv] => Problem {
            b,
            hq,
            hkv,
            lq,
            lk,
            dk,
            dv,
        },
        _ => {
            return Err(format!(
                "shape {s:?} has {} values (expected 4: B,H,L,D; 5: B,Hq,Hkv,L,D; or 7: B,Hq,Hkv,Lq,Lk,Dk,Dv)",
                v.len()
            ))
        }
    };
    if [p.b, p.hq, p.hkv, p.lq, p.lk, p.dk, p.dv].contains(&0) {
        return Err(format!("shape {s:?}: every size must be at least 1"));
    }
    if !p.hq.is_multiple_of(p.hkv) {
        return Err(format!("shape {s:?}: Hq={} is not a multiple of Hkv={}", p.hq, p.hkv));
    }
    Ok(p)
}
