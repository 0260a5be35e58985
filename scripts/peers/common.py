"""What the peer scripts share: timing, the float64 check, JSON rows, versions."""

import json
import statistics
import time

import numpy as np

# f32 peers against the float64 reference: the crate's own f32 tolerance (|x - ref| <= abs + rel*|ref|).
ABS, REL = 2e-5, 2e-4


def median_min_ms(fn, iters):
    """Median and fastest wall time of `iters` runs after one warm-up run, in ms."""
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, min(times) * 1e3


def within(got, expected):
    """(largest |got - expected|, whether every element is within the f32 tolerance)."""
    got = np.asarray(got, dtype=np.float64)
    err = np.abs(got - expected)
    return float(err.max()), bool(np.all(err <= ABS + REL * np.abs(expected)))


def jax_or_none():
    try:
        import jax  # noqa: F401

        return jax
    except ImportError:
        return None


def versions():
    jax = jax_or_none()
    return {"numpy": np.__version__, "jax": getattr(jax, "__version__", None)}


def write(path, kind, rows, extra):
    report = {"kind": kind, "versions": versions(), "rows": rows, **extra}
    text = json.dumps(report, indent=2)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    return report
