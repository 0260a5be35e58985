//! Element-wise comparison with a mixed absolute + relative tolerance, NaN- and ∞-aware.

/// Passes when `|got − expected| ≤ abs + rel · |expected|` for every element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f64,
    /// Relative part, on |expected|.
    pub rel: f64,
}

impl Tolerance {
    /// f32 kernels against the f64 reference.
    pub const F32: Tolerance = Tolerance { abs: 2e-5, rel: 2e-4 };
    /// f16 storage (inputs rounded to f16 on both sides, f32 accumulation, f16 output).
    pub const F16: Tolerance = Tolerance { abs: 2e-3, rel: 4e-3 };

    /// The tolerance of one kernel call in storage dtype `dtype` ([`Tolerance::F16`] for f16,
    /// else [`Tolerance::F32`]).
    pub fn of(dtype: crate::tensor::DType) -> Tolerance {
        match dtype {
            crate::tensor::DType::F16 => Tolerance::F16,
            _ => Tolerance::F32,
        }
    }

    /// Both parts multiplied by `factor` (a benchmark's `--tolerance-scale`).
    pub fn scaled(self, factor: f64) -> Tolerance {
        Tolerance {
            abs: self.abs * factor,
            rel: self.rel * factor,
        }
    }
}

/// The outcome of [`compare`].
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Largest |got − expected| over finite pairs.
    pub max_abs: f64,
    /// Largest |got − expected| / |expected| over finite pairs with expected ≠ 0.
    pub max_rel: f64,
    /// Index of the element with the largest excess over its tolerance (or the first NaN/∞ mismatch).
    pub worst: Option<usize>,
    /// Elements outside the tolerance.
    pub failures: usize,
    /// got\[worst\], expected\[worst\].
    pub worst_pair: Option<(f64, f64)>,
}

impl Comparison {
    /// True when every element is within the tolerance.
    pub fn ok(&self) -> bool {
        self.failures == 0
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_abs={:.3e} max_rel={:.3e} failures={}",
            self.max_abs, self.max_rel, self.failures
        )?;
        if let (Some(i), Some((g, e))) = (self.worst, self.worst_pair) {
            write!(f, " worst[{i}]: got {g:e}, expected {e:e}")?;
        }
        Ok(())
    }
}

/// Compares `got` with `expected` element by element. NaN matches only NaN, ±∞ only itself.
pub fn compare(got: &[f32], expected: &[f64], tol: Tolerance) -> Comparison {
    assert_eq!(got.len(), expected.len(), "compare: lengths differ");
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        worst: None,
        failures: 0,
        worst_pair: None,
    };
    let mut worst_excess = f64::NEG_INFINITY;
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let g = g as f64;
        let excess = if g.is_nan() || e.is_nan() {
            if g.is_nan() && e.is_nan() {
                continue;
            }
            f64::INFINITY
        } else if g.is_infinite() || e.is_infinite() {
            if g == e {
                continue;
            }
            f64::INFINITY
        } else {
            let d = (g - e).abs();
            c.max_abs = c.max_abs.max(d);
            if e != 0.0 {
                c.max_rel = c.max_rel.max(d / e.abs());
            }
            d - (tol.abs + tol.rel * e.abs())
        };
        if excess > 0.0 {
            c.failures += 1;
        }
        if excess > worst_excess {
            worst_excess = excess;
            c.worst = Some(i);
            c.worst_pair = Some((g, e));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_mixed_and_nan_aware() {
        let t = Tolerance { abs: 1e-3, rel: 1e-2 };
        assert!(compare(&[1.0, 100.5, 0.0005], &[1.0, 100.0, 0.0], t).ok());
        assert!(!compare(&[102.0], &[100.0], t).ok());
        assert!(compare(&[f32::NAN, f32::NEG_INFINITY], &[f64::NAN, f64::NEG_INFINITY], t).ok());
        let c = compare(&[0.0, f32::NAN], &[0.0, 1.0], t);
        assert_eq!((c.failures, c.worst), (1, Some(1)));
        assert!(!compare(&[f32::NEG_INFINITY], &[0.0], t).ok());
        // The tolerance is relative to |expected|, not to its sign.
        assert!(compare(&[-100.5], &[-100.0], t).ok());
    }
}
