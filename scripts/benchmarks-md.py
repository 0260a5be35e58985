#!/usr/bin/env python3
"""Generates the tables of BENCHMARKS.md from the records under benchmarks/ (scripts/record.sh).

BENCHMARKS.md holds the hand-written text; every table sits between two markers naming its kind
and its record files:

    <!-- table bench benchmarks/2026-12-06-llvmpipe-mesa-25.0.7/prefill.json -->
    ... generated ...
    <!-- /table -->

This script rewrites what is between the markers from the records: a line naming the record
(commit, build, driver, machine, date, load) and the table. `--check` rewrites nothing and exits
1 when the file differs from what the records give (tests/docs.rs runs it), so the document
cannot drift from the data.

Kinds (their arguments are record files, relative to the repository):
  bench FILE [kernels=fused,staged] [dtype=f32] [tile=yes]
                                                  rows of `wgpu-attention bench --json` (tile=yes:
                                                  with the tile each row ran)
  decode FILE [layout=contiguous]                 rows of `bench --preset decode --json`
  varlen FILE                                     rows of `bench --varlen --json`
  gemm FILE                                       rows of examples/gemm_throughput --json
  peak FILE                                       `wgpu-attention peak --json`
  prefill-peers BENCH PEERS                       the crate's fused rows beside NumPy/JAX (same record)
  decode-peers DECODE PEERS                       the best decode row per shape beside NumPy/JAX
  drivers A B [kernels=…]                         the same bench rows from two driver runs of one record
  drivers-decode A B                              the same decode rows from two driver runs
  cold FILE                                       first calls with the driver's shader cache off
  driver-check FILE                               the CLI checked on every driver configuration

Usage: scripts/benchmarks-md.py [--check] [FILE.md]
"""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = re.compile(r"^<!-- table (?P<spec>.+?) -->\n(?P<body>.*?)^<!-- /table -->\n", re.M | re.S)


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return json.load(f)


def meta_of(path):
    return load(os.path.join(os.path.dirname(path), "meta.json"))


def num(x, digits):
    return "-" if x is None else f"{x:.{digits}f}"


def sci(x):
    return "-" if x is None else f"{x:.1e}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def adapter_of(path, meta):
    """The adapter a file was measured on: its own record of it where it has one (a run on another
    driver in the same record), else the record's."""
    own = load(path)
    own = own[0] if isinstance(own, list) and own else own
    a = own.get("adapter") if isinstance(own, dict) else None
    if isinstance(a, dict):
        return f"{a['name']}, driver {a['driver']} {a['driver_info']}"
    if isinstance(a, str):
        return a
    m = meta["adapter"]
    return f"{m['name']}, driver {m['driver']} {m['driver_info']}"


def provenance(paths):
    """One line per file the table reads: record, commit, build, adapter and driver, knobs,
    machine, date, load."""
    lines = []
    for p in paths:
        d = os.path.dirname(p)
        m = load(os.path.join(d, "meta.json"))
        dirty = " (uncommitted changes)" if m["dirty"] else ""
        load_avg = f"load {m['load_before'][0]:.2f} → {m['load_after'][0]:.2f}"
        lines.append(
            f"*[`{p}`]({p}) (record `{d}`): commit `{m['commit'][:10]}`{dirty}, {m['build']} build, "
            f"{adapter_of(p, m)}{knobs(m)}; {m['cpu']['model']}, {m['cpu']['cores']} cores; "
            f"{m['date']}, {load_avg}.*"
        )
    return "\n".join(lines) + "\n\n"


def knobs(m):
    set_ = {k: v for k, v in m.get("driver_env", {}).items() if v}
    return "" if not set_ else " (" + ", ".join(f"{k}={v}" for k, v in sorted(set_.items())) + ")"


def shape(s):
    return f"{s['b']}×{s['hq']}/{s['hkv']}×{s['lq']}×{s['lk']}×{s['dk']}" + ("" if s["dk"] == s["dv"] else f"/{s['dv']}")


def checked(r):
    if r.get("within_tolerance") is False:
        return f"**OUTSIDE** ({r['checked']})"
    c = r.get("checked", "-")
    if c == "-" and r.get("median_ms") is not None and r.get("timer") != "wall-clock":
        return "not checked¹"
    return c


def footnotes(rows, label):
    """Why rows have no time or were not checked, from their notes, below the table."""
    lines = []
    for r in rows:
        note = r.get("note") or ""
        timed = r.get("median_ms") is not None
        if not timed and note:
            lines.append(f"- {label(r)}: no time: {note}")
        elif checked(r) == "not checked¹":
            why = next((part for part in note.split("; ") if part.startswith("not checked")), "not checked")
            lines.append(f"- {label(r)}: {why}")
    if not lines:
        return ""
    return "\nRows without a time, or without a check (¹), and why:\n\n" + "\n".join(lines) + "\n"


def kernel(r):
    k = r["kernel"]
    label = f"{k}/{r['design']}" if r.get("design") else k
    # A design the adapter cannot run falls back to another and says so in the row's note.
    asked = re.search(r"(\w+) design unavailable", r.get("note") or "")
    return f"{label} (for {asked.group(1)})" if asked else label


def opts_of(args):
    pos = [a for a in args if "=" not in a]
    kv = dict(a.split("=", 1) for a in args if "=" in a)
    return pos, kv


def bench_rows(report, kv):
    kernels = kv.get("kernels")
    rows = report["rows"]
    if kernels:
        rows = [r for r in rows if r["kernel"] in kernels.split(",")]
    if "dtype" in kv:
        rows = [r for r in rows if r["dtype"] == kv["dtype"]]
    return rows


def render_bench(paths, kv):
    report = load(paths[0])
    rows = bench_rows(report, kv)
    peak = report.get("peak_gflops")
    body = [
        [
            r["variant"],
            kernel(r),
            r["dtype"],
            shape(r["shape"]),
            r["causal"],
            num(r.get("median_ms"), 3),
            num(r.get("gflops"), 2),
            num(r.get("gbps"), 2),
            num(r.get("pct_peak"), 1),
            sci(r.get("max_abs_err")),
            checked(r),
        ]
        for r in rows
    ]
    header = ["variant", "kernel", "dtype", "B×Hq/Hkv×Lq×Lk×D", "causal", "median ms", "GFLOP/s", "GB/s", "% FMA peak", "max abs err", "checked"]
    if kv.get("tile") == "yes":
        # The tile each row ran, after the kernel (tables comparing tiles side by side).
        header.insert(2, "tile")
        for r, src in zip(body, rows):
            r.insert(2, src.get("tile") or "-")
    if all(r[0] == "sdpa" for r in body):
        header, body = header[1:], [r[1:] for r in body]
    note = f"FMA ceiling of the run: {peak:.1f} GFLOP/s ({report['dtype']}); timer: {report['timer']}.\n\n" if peak else f"Timer: {report['timer']}.\n\n"
    label = lambda r: f"{r['variant']} {kernel(r)} {r['dtype']} {shape(r['shape'])} causal {r['causal']}"
    return note + table(header, body) + footnotes(rows, label)


def decode_label(r):
    layout = f"paged/{r['page_size']}" if r["layout"] == "paged" else "contiguous"
    design = f"{r['design']} wg{r['workgroup']}" + (" (built-in)" if r.get("built_in") else "")
    return layout, design, r.get("splits") or "-"


def render_decode(paths, kv):
    report = load(paths[0])
    rows = report["rows"]
    if "layout" in kv:
        rows = [r for r in rows if r["layout"] == kv["layout"]]
    body = []
    for r in rows:
        s = r["shape"]
        layout, design, splits = decode_label(r)
        body.append(
            [
                f"{s['b']}×{s['hq']}/{s['hkv']}×{s['lk']}×{s['dk']}",
                r["dtype"],
                layout,
                design,
                splits,
                num(r.get("median_ms"), 3),
                num(r.get("kv_gbps"), 2),
                num(r.get("pct_copy_peak"), 1),
                num(r.get("host_oneshot_ms"), 3),
                num(r.get("host_replay_ms"), 3),
                sci(r.get("max_abs_err")),
                checked(r),
            ]
        )
    note = f"Copy bandwidth of the run: {report['copy_peak_gbps']:.2f} GB/s; timer: {report['timer']}.\n\n"
    header = ["B×Hq/Hkv×Lk×D", "dtype", "layout", "design", "splits", "median ms", "K/V GB/s", "% copy", "host 1-shot ms", "host replay ms", "max abs err", "checked"]

    def label(r):
        s = r["shape"]
        layout, design, _ = decode_label(r)
        return f"{s['b']}×{s['hq']}/{s['hkv']}×{s['lk']}×{s['dk']} {layout} {design}"

    return note + table(header, body) + footnotes(rows, label)


def render_varlen(paths, kv):
    reports = load(paths[0])
    body = []
    for rep in reports:
        base = rep["rows"][0]["median_ms"]
        for r in rep["rows"]:
            body.append(
                [
                    str(rep["lengths"]),
                    rep["dtype"],
                    r["path"],
                    num(r["median_ms"], 3),
                    num(r["gflops"], 2),
                    f"{r['median_ms'] / base:.2f}×",
                    sci(r.get("max_abs_err")),
                    checked(r),
                ]
            )
    header = ["lengths", "dtype", "path", "median ms", "GFLOP/s", "time / varlen", "max abs err", "checked"]
    return f"Timer: {reports[0]['timer']}.\n\n" + table(header, body)


def render_gemm(paths, kv):
    report = load(paths[0])
    body = [
        [f"{r['m']}×{r['n']}×{r['k']}", r["dtype"], r["design"], num(r["median_ms"], 3), num(r["min_ms"], 3), num(r["gflops"], 2), sci(r["max_abs_err"]), "yes" if r["within_tolerance"] else "**NO**"]
        for r in report["rows"]
    ]
    header = ["M×N×K", "dtype", "design", "median ms", "min ms", "GFLOP/s", "max abs err", "within tolerance"]
    return f"Timer: {report['timer']}; {report['samples']} samples per design.\n\n" + table(header, body)


def render_peak(paths, kv):
    body = []
    for p in paths:
        r = load(p)
        est = r.get("cpu_estimate") or {}
        body.append(
            [
                os.path.basename(p),
                num(r.get("fma_f32_gflops"), 1),
                num(r.get("fma_f16_gflops"), 1),
                num(r.get("bandwidth_gbps"), 2),
                num(est.get("gflops"), 1) if est else "-",
            ]
        )
    header = ["run", "FMA f32 GFLOP/s", "FMA f16 GFLOP/s", "copy GB/s", "CPU FMA estimate GFLOP/s"]
    return table(header, body)


def render_prefill_peers(paths, kv):
    bench, peers = load(paths[0]), load(paths[1])
    by_peer = {}
    for r in peers["rows"]:
        by_peer[(r["peer"], r["shape"]["lq"], r["causal"])] = r
    body = []
    for r in bench["rows"]:
        if r["kernel"] != "fused" or r["dtype"] != "f32":
            continue
        s = r["shape"]
        key = (s["lq"], r["causal"])
        cells = [shape(s), r["causal"], f"{kernel(r)} {num(r.get('gflops'), 2)}"]
        for peer in ("numpy", "jax"):
            p = by_peer.get((peer,) + key)
            cells.append("-" if p is None else num(p["gflops"], 2))
        body.append(cells)
    v = peers["versions"]
    note = f"GFLOP/s (FlashAttention's count); NumPy {v['numpy']}, JAX {v['jax'] or 'not installed'} on the same CPU in the same record.\n\n"
    return note + table(["B×Hq/Hkv×Lq×Lk×D", "causal", "wgpu-attention", "NumPy", "JAX"], body)


def render_decode_peers(paths, kv):
    decode, peers = load(paths[0]), load(paths[1])
    best = {}
    for r in decode["rows"]:
        if r.get("median_ms") is None or r["layout"] != "contiguous" or r["shape"]["b"] != 1:
            continue
        lk = r["shape"]["lk"]
        if lk not in best or r["median_ms"] < best[lk]["median_ms"]:
            best[lk] = r
    by_peer = {(r["peer"], r["shape"]["lk"]): r for r in peers["rows"]}
    body = []
    for lk, r in sorted(best.items()):
        _, design, splits = decode_label(r)
        cells = [f"1×{r['shape']['hq']}/{r['shape']['hkv']}×{lk}×{r['shape']['dk']}", f"{design}, splits {splits}", num(r["median_ms"], 2)]
        for peer in ("numpy", "jax"):
            p = by_peer.get((peer, lk))
            cells.append("-" if p is None else num(p["median_ms"], 2))
        body.append(cells)
    v = peers["versions"]
    note = f"Median ms of one decode step (f32); NumPy {v['numpy']}, JAX {v['jax'] or 'not installed'} on the same CPU in the same record.\n\n"
    return note + table(["B×Hq/Hkv×Lk×D", "wgpu-attention (fastest design)", "ms", "NumPy ms", "JAX ms"], body)


def render_drivers(paths, kv):
    a, b = load(paths[0]), load(paths[1])
    ka, kb = (f"{r['adapter']['driver_info'].split(' (')[0]}" for r in (a, b))
    index = {(kernel(r), r["dtype"], shape(r["shape"]), r["causal"]): r for r in bench_rows(b, kv)}
    body = []
    for r in bench_rows(a, kv):
        key = (kernel(r), r["dtype"], shape(r["shape"]), r["causal"])
        o = index.get(key)
        if o is None or r.get("median_ms") is None or o.get("median_ms") is None:
            continue
        body.append(list(key) + [num(r["median_ms"], 3), num(o["median_ms"], 3), f"{r['median_ms'] / o['median_ms']:.2f}×"])
    header = ["kernel", "dtype", "B×Hq/Hkv×Lq×Lk×D", "causal", f"{ka} ms", f"{kb} ms", "time ratio"]
    return table(header, body)


def render_drivers_decode(paths, kv):
    """Rows of the same decode sweep on two drivers, paired in order (a row runs the same design
    and splits on both: the same binary chose them)."""
    a, b = load(paths[0]), load(paths[1])
    ka, kb = (f"{r['adapter']['driver_info'].split(' (')[0]}" for r in (a, b))
    key = lambda r: (f"{r['shape']['b']}×{r['shape']['hq']}/{r['shape']['hkv']}×{r['shape']['lk']}×{r['shape']['dk']}",) + decode_label(r)
    body = []
    for r, o in zip(a["rows"], b["rows"]):
        if key(r) != key(o) or r.get("median_ms") is None or o.get("median_ms") is None:
            continue
        body.append([str(c) for c in key(r)] + [num(r["median_ms"], 3), num(o["median_ms"], 3), f"{r['median_ms'] / o['median_ms']:.2f}×"])
    header = ["B×Hq/Hkv×Lk×D", "layout", "design", "splits", f"{ka} ms", f"{kb} ms", "time ratio"]
    return table(header, body)


def render_cold(paths, kv):
    report = load(paths[0])
    body = [
        [r["class"], r["call"], num(r["seconds"], 2), f"{r['peak_rss_mb']:.0f}", "yes" if r["ok"] else "**NO**"]
        for r in report["rows"]
    ]
    note = f"Each call in a fresh process, {report['cache']}; target ≤ {report['target_seconds']} s and ≤ {report['target_rss_mb']} MB.\n\n"
    return note + table(["kernel class", "call", "seconds", "peak RSS MB", "within target"], body)


def render_driver_check(paths, kv):
    report = load(paths[0])
    hidden = ("VK_LAYER_PATH", "VK_LAYER_ENABLE_MESSAGE_LIMIT", "VK_KHRONOS_VALIDATION_LOG_FILENAME")

    def variables(env):
        words = [w.split("=", 1) for w in env.split()]
        shown = [f"`{k}={os.path.basename(v)}`" for k, v in words if k not in hidden]
        return " ".join(shown) or "-"

    body = [[l["lane"], l["adapter"], variables(l["env"]), str(l["checked_rows"])] for l in report["lanes"]]
    note = (
        "Every fused design and staged (fast code), the fused forward and backward as a first call runs them "
        "(quick code) and decode, with `--check`; every row within tolerance. "
        f"Messages from the validation layer: {report['validation_messages']}.\n\n"
    )
    return note + table(["lane", "adapter", "driver variables", "rows checked"], body)


KINDS = {
    "bench": render_bench,
    "decode": render_decode,
    "varlen": render_varlen,
    "gemm": render_gemm,
    "peak": render_peak,
    "prefill-peers": render_prefill_peers,
    "decode-peers": render_decode_peers,
    "drivers": render_drivers,
    "drivers-decode": render_drivers_decode,
    "cold": render_cold,
    "driver-check": render_driver_check,
}


def render(spec):
    kind, *args = spec.split()
    if kind not in KINDS:
        raise SystemExit(f"benchmarks-md: unknown table kind {kind!r} in <!-- table {spec} -->")
    paths, kv = opts_of(args)
    for p in paths:
        if not os.path.exists(os.path.join(ROOT, p)):
            raise SystemExit(f"benchmarks-md: {p} (named by <!-- table {spec} -->) does not exist")
    return provenance(paths) + KINDS[kind](paths, kv)


def generate(text):
    return MARK.sub(lambda m: f"<!-- table {m['spec']} -->\n{render(m['spec'])}<!-- /table -->\n", text)


def main():
    args = sys.argv[1:]
    check = "--check" in args
    files = [a for a in args if a != "--check"] or [os.path.join(ROOT, "BENCHMARKS.md")]
    stale = []
    for path in files:
        with open(path) as f:
            text = f.read()
        new = generate(text)
        if new != text:
            if check:
                stale.append(path)
            else:
                with open(path, "w") as f:
                    f.write(new)
                print(f"benchmarks-md: rewrote {path}")
    if stale:
        print(f"benchmarks-md: {', '.join(stale)} differ from their records: run scripts/benchmarks-md.py", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
