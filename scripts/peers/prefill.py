#!/usr/bin/env python3
"""Prefill attention (B=1, H=8, D=64, f32, Lq = Lk = L, causal or not) in NumPy and, when
installed, JAX on the CPU: the prefill twin of decode.py, the host peers of the crate's
`bench --preset seq` sweep (scripts/record.sh runs both in one window). Each peer's output is
checked against a float64 NumPy reference with the crate's f32 tolerance before it is timed.
FLOPs follow FlashAttention: 4·B·H·L²·D, halved for causal.

    /tmp/peers/bin/python scripts/peers/prefill.py --lengths 512,1024,2048 --causal none,top-left --json p.json
"""

import argparse
import sys

import numpy as np

from common import jax_or_none, median_min_ms, versions, within, write


def attention_numpy(q, k, v, causal):
    # q/k/v [H, L, D]; matmul (BLAS), as a NumPy user writes it
    s = (q @ k.swapaxes(-1, -2)) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tri(s.shape[1], s.shape[2], dtype=bool), s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return p @ v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="512,1024,2048")
    ap.add_argument("--causal", default="none,top-left")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    h, d = a.heads, a.dim
    rng = np.random.default_rng(0)
    jax = jax_or_none()
    rows, ok = [], True
    for length in [int(x) for x in a.lengths.split(",")]:
        q, k, v = (rng.uniform(-1, 1, (h, length, d)).astype(np.float32) for _ in range(3))
        for causal in a.causal.split(","):
            is_causal = causal != "none"
            expected = attention_numpy(*(x.astype(np.float64) for x in (q, k, v)), is_causal)
            peers = [("numpy", lambda q, k, v: attention_numpy(q, k, v, is_causal), lambda x: x)]
            if jax is not None:
                import jax.numpy as jnp

                def step(q, k, v, is_causal=is_causal):
                    s = (q @ k.swapaxes(-1, -2)) / jnp.sqrt(q.shape[-1])
                    if is_causal:
                        s = jnp.where(jnp.tri(s.shape[1], s.shape[2], dtype=bool), s, -jnp.inf)
                    return jax.nn.softmax(s, axis=-1) @ v

                jitted = jax.jit(step)
                peers.append(("jax", lambda q, k, v, f=jitted: f(q, k, v).block_until_ready(), jax.device_put))
            flops = 4.0 * h * length * length * d / (2.0 if is_causal else 1.0)
            for name, fn, put in peers:
                args = tuple(put(x) for x in (q, k, v))
                max_abs, good = within(np.asarray(fn(*args)), expected)
                ok &= good
                median, fastest = median_min_ms(lambda: fn(*args), a.iters)
                rows.append(
                    {
                        "peer": name,
                        "shape": {"b": 1, "hq": h, "hkv": h, "lq": length, "lk": length, "d": d},
                        "causal": causal,
                        "dtype": "f32",
                        "median_ms": median,
                        "min_ms": fastest,
                        "gflops": flops / median / 1e6,
                        "max_abs_err": max_abs,
                        "within_tolerance": good,
                    }
                )
                print(
                    f"L={length} causal={causal:<8} {name:<5} {median:.2f} ms  {flops / median / 1e6:.2f} GFLOP/s"
                    f"  max_abs {max_abs:.1e}{'' if good else '  OUTSIDE TOLERANCE'}"
                )
    print(f"versions: {versions()}")
    write(a.json, "prefill", rows, {"iters": a.iters})
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
