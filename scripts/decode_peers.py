#!/usr/bin/env python3
"""One decode step (B=1, Hq=32, Hkv=8, Lq=1, D=128, f32) in NumPy and, when installed, JAX on the
CPU: the host baselines that BENCHMARKS.md compares the decode kernel with.

    python3 -m venv /tmp/peers && /tmp/peers/bin/pip install numpy jax
    /tmp/peers/bin/python scripts/decode_peers.py --lengths 4096,16384

Prints the median of --iters runs after one warm-up per length, and the K/V read rate
(bytes of K and V over the median time).
"""

import argparse
import statistics
import time

import numpy as np


def step_numpy(q, k, v):
    # q [Hkv, G, D], k/v [Hkv, Lk, D]: the G query heads of a KV head share its K/V (GQA).
    s = np.einsum("hgd,hld->hgl", q, k) / np.sqrt(q.shape[-1])
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("hgl,hld->hgd", p, v)


def median_ms(fn, iters):
    fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="4096,16384")
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    hq, hkv, d = 32, 8, 128
    rng = np.random.default_rng(0)
    try:
        import jax
        import jax.numpy as jnp

        @jax.jit
        def step_jax(q, k, v):
            s = jnp.einsum("hgd,hld->hgl", q, k) / jnp.sqrt(q.shape[-1])
            p = jax.nn.softmax(s, axis=-1)
            return jnp.einsum("hgl,hld->hgd", p, v)

    except ImportError:
        jax = None
    for lk in [int(x) for x in a.lengths.split(",")]:
        q = rng.standard_normal((hkv, hq // hkv, d), dtype=np.float32)
        k = rng.standard_normal((hkv, lk, d), dtype=np.float32)
        v = rng.standard_normal((hkv, lk, d), dtype=np.float32)
        kv_bytes = 2 * k.nbytes
        ms = median_ms(lambda: step_numpy(q, k, v), a.iters)
        print(f"Lk={lk} numpy {ms:.2f} ms  K/V {kv_bytes / ms / 1e6:.2f} GB/s  (numpy {np.__version__})")
        if jax is not None:
            qj, kj, vj = (jax.device_put(x) for x in (q, k, v))
            ms = median_ms(lambda: step_jax(qj, kj, vj).block_until_ready(), a.iters)
            print(f"Lk={lk} jax   {ms:.2f} ms  K/V {kv_bytes / ms / 1e6:.2f} GB/s  (jax {jax.__version__})")


if __name__ == "__main__":
    main()
