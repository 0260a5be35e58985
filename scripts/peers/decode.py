#!/usr/bin/env python3
"""One decode step (B=1, Hq=32, Hkv=8, Lq=1, D=128, f32) in NumPy and, when installed, JAX on the
CPU: the host peers that BENCHMARKS.md compares the decode kernel with (scripts/record.sh runs it
in the same window as the crate's sweeps). Each peer's output is checked against a float64
NumPy reference with the crate's f32 tolerance before it is timed.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install numpy jax
    /tmp/peers/bin/python scripts/peers/decode.py --lengths 4096,16384 --json decode-peers.json

Prints, per length and peer, the median and fastest of --iters runs after one warm-up, and the
K/V read rate (bytes of K and V over the median time); --json writes the same rows.
"""

import argparse
import sys

import numpy as np

from common import jax_or_none, median_min_ms, versions, within, write


def step_numpy(q, k, v):
    # q [Hkv, G, D], k/v [Hkv, Lk, D]: the G query heads of a KV head share its K/V (GQA).
    s = (q @ k.swapaxes(-1, -2)) / np.sqrt(q.shape[-1])
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="4096,16384")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    hq, hkv, d = 32, 8, 128
    rng = np.random.default_rng(0)
    jax = jax_or_none()
    peers = [("numpy", step_numpy, lambda x: x)]
    if jax is not None:
        import jax.numpy as jnp

        @jax.jit
        def step_jax(q, k, v):
            s = (q @ k.swapaxes(-1, -2)) / jnp.sqrt(q.shape[-1])
            return jax.nn.softmax(s, axis=-1) @ v

        peers.append(("jax", lambda q, k, v: step_jax(q, k, v).block_until_ready(), jax.device_put))
    rows, ok = [], True
    for lk in [int(x) for x in a.lengths.split(",")]:
        q = rng.uniform(-1, 1, (hkv, hq // hkv, d)).astype(np.float32)
        k = rng.uniform(-1, 1, (hkv, lk, d)).astype(np.float32)
        v = rng.uniform(-1, 1, (hkv, lk, d)).astype(np.float32)
        expected = step_numpy(*(x.astype(np.float64) for x in (q, k, v)))
        kv_bytes = 2 * k.nbytes
        for name, step, put in peers:
            args = tuple(put(x) for x in (q, k, v))
            max_abs, good = within(np.asarray(step(*args)), expected)
            ok &= good
            median, fastest = median_min_ms(lambda: step(*args), a.iters)
            rows.append(
                {
                    "peer": name,
                    "shape": {"b": 1, "hq": hq, "hkv": hkv, "lq": 1, "lk": lk, "d": d},
                    "dtype": "f32",
                    "median_ms": median,
                    "min_ms": fastest,
                    "kv_gbps": kv_bytes / median / 1e6,
                    "max_abs_err": max_abs,
                    "within_tolerance": good,
                }
            )
            print(
                f"Lk={lk} {name:<5} {median:.2f} ms (min {fastest:.2f})  K/V {kv_bytes / median / 1e6:.2f} GB/s"
                f"  max_abs {max_abs:.1e}{'' if good else '  OUTSIDE TOLERANCE'}"
            )
    print(f"versions: {versions()}")
    write(a.json, "decode", rows, {"iters": a.iters})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
