#!/usr/bin/env bash
# Records the benchmark suites BENCHMARKS.md cites, in one window, into
# benchmarks/<date>-<NAME>/: the JSON of every run plus meta.json (commit and dirty flag, build
# profile, rustc, wgpu, adapter and driver, the driver environment knobs, CPU model and cores,
# memory, NumPy/JAX versions, load average and `peak` before and after, each suite's wall time).
# BENCHMARKS.md's tables are generated from these files by scripts/benchmarks-md.py.
#
# Usage: scripts/record.sh [NAME] [--suites a,b,…]
#   NAME      the record's name after the date (default: the adapter, e.g. llvmpipe-mesa-25.0.7)
#   --suites  a subset of: prefill prefill-f16 designs designs-f16 decode family backward varlen
#             gemm peers mesa22 cold driver-check register-tiles (default: all; the ones needing f16 or another
#             driver skip with a reason where the machine lacks it; cold: scripts/cold-calls.sh,
#             first calls with every cache off; driver-check: scripts/driver-check.sh, the CLI
#             checked on every driver configuration)
# Run it on an otherwise idle machine: every figure is a wall or GPU time on shared cores.
# Every suite checks its outputs against the CPU reference and fails the record when a row is
# outside tolerance. The NumPy/JAX peers are installed into target/peers-venv (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-vulkan.sh

name=""
suites="prefill prefill-f16 designs designs-f16 decode family backward varlen gemm peers mesa22 cold driver-check register-tiles"
while [ $# -gt 0 ]; do
    case "$1" in
        --suites) suites="${2//,/ }"; shift 2 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) name="$1"; shift ;;
    esac
done

echo "== building (release)" >&2
cargo build --quiet --release --bin wgpu-attention --example gemm_throughput
bin=target/release/wgpu-attention
gemm=target/release/examples/gemm_throughput
info="$($bin info)"
field() { sed -n "s/^$1: *//p" <<<"$info" | head -n 1; }
if [ -z "$name" ]; then
    name="$(field adapter | sed 's/ (.*//')-$(field driver | sed -n 's/.*Mesa \([0-9.]*\).*/mesa-\1/p')"
    name="$(tr 'A-Z ' 'a-z-' <<<"${name%-}" | tr -cd 'a-z0-9.-')"
fi
out="benchmarks/$(date -u +%F)-$name"
mkdir -p "$out"
echo "== recording into $out" >&2

# The NumPy/JAX peers, in their own virtual environment.
venv=target/peers-venv
if [[ " $suites " == *" peers "* ]] && ! "$venv/bin/python" -c 'import numpy, jax' 2>/dev/null; then
    echo "== installing numpy and jax into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy 'jax[cpu]'
fi

has_f16=0
grep -q 'SHADER_F16' <<<"$info" && has_f16=1
timings=()
skipped=()
suite() {
    local suite="$1" start=$SECONDS
    shift
    echo "== suite $suite" >&2
    "$@"
    timings+=("\"$suite\": $((SECONDS - start))")
}
skip_suite() {
    echo "== suite $1 SKIPPED: $2" >&2
    skipped+=("\"$1\": \"$2\"")
}
bench() { "$bin" bench --quiet "$@"; }
# Samples per row: enough for a median on a quiet machine, few enough that a record takes about
# half an hour on 2 cores (WGPU_ATTENTION_RECORD_ITERS changes it; the decode suite takes
# WGPU_ATTENTION_RECORD_DECODE_ITERS, default 30).
short="--warmup 1 --iters ${WGPU_ATTENTION_RECORD_ITERS:-5}"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u +%FT%TZ)"
suite peak-before "$bin" peak --json "$out/peak-before.json"
for s in $suites; do
    case "$s" in
        prefill)
            suite prefill bench --preset seq --kernel all --causal none --causal top-left $short --json "$out/prefill.json" ;;
        prefill-f16)
            if [ "$has_f16" = 1 ]; then
                suite prefill-f16 bench --shape 1,8,1024,64 --shape 1,8,2048,64 --dtype f16 --kernel fused --kernel staged \
                    --causal none --causal top-left $short --json "$out/prefill-f16.json"
            else skip_suite prefill-f16 "the adapter has no SHADER_F16"; fi ;;
        designs)
            suite designs bench --shape 1,8,1024,64 --shape 1,8,2048,64 --design all --kernel fused \
                --causal none --causal top-left $short --json "$out/designs.json" ;;
        designs-f16)
            if [ "$has_f16" = 1 ]; then
                suite designs-f16 bench --shape 1,8,1024,64 --design all --kernel fused --dtype f16 \
                    --causal none --causal top-left $short --json "$out/designs-f16.json"
            else skip_suite designs-f16 "the adapter has no SHADER_F16"; fi ;;
        decode)
            # A decode step takes milliseconds: more samples for a stable median.
            suite decode bench --preset decode --batches 1,8 --lengths 4096,16384 --warmup 2 \
                --iters "${WGPU_ATTENTION_RECORD_DECODE_ITERS:-30}" --json "$out/decode.json" ;;
        family)
            variants=()
            for v in sdpa dot general additive local-m local-p hard zero-masked codewise han-pool ff-pool self-sum mha location; do
                variants+=(--variant "$v")
            done
            suite family bench "${variants[@]}" --shape 1,8,256,64 --kernel all $short --json "$out/family.json" ;;
        backward)
            suite backward bench --shape 1,8,1024,64 --kernel fused --kernel staged --backward \
                --causal none --causal top-left $short --json "$out/backward.json" ;;
        varlen)
            suite varlen bench --varlen 512,100,1000,37 --shape 1,8,8,1,64 --causal none --causal bottom-right \
                $short --json "$out/varlen.json" ;;
        gemm)
            suite gemm "$gemm" 1024 512 512 10 --json "$out/gemm.json"
            if [ "$has_f16" = 1 ]; then suite gemm-f16 "$gemm" 1024 512 512 10 f16 --json "$out/gemm-f16.json"; fi ;;
        peers)
            suite peers-prefill "$venv/bin/python" scripts/peers/prefill.py --lengths 512,1024,2048 \
                --causal none,top-left --json "$out/peers-prefill.json"
            suite peers-decode "$venv/bin/python" scripts/peers/decode.py --lengths 4096,16384 \
                --json "$out/peers-decode.json" ;;
        mesa22)
            # The same binary on Debian 12's own lavapipe (Mesa 22.3.6), unpacked beside the
            # installed driver: a same-binary comparison of two drivers in one window.
            icd="$(bash scripts/drivers.sh lavapipe-22 || true)"
            if [ -n "$icd" ]; then
                suite mesa22-prefill env VK_ICD_FILENAMES="$icd" "$bin" bench --quiet --preset seq --kernel fused \
                    --causal none --causal top-left $short --json "$out/prefill.mesa22.json"
                suite mesa22-decode env VK_ICD_FILENAMES="$icd" "$bin" bench --quiet --preset decode --batches 1 \
                    --lengths 4096,16384 $short --json "$out/decode.mesa22.json"
            else skip_suite mesa22 "Debian 12's Mesa 22.3.6 lavapipe could not be unpacked (scripts/drivers.sh)"; fi ;;
        cold)
            suite cold bash scripts/cold-calls.sh "$out/cold.json" ;;
        driver-check)
            suite driver-check bash scripts/driver-check.sh "$out" ;;
        register-tiles)
            # The register design's rows per invocation side by side: what the built-in tile on
            # CPU adapters rests on (each tile's compile is a first call's cost without quick code).
            tiles=()
            for rows in 1 2 4 8; do tiles+=(--register-tile "16,$rows"); done
            suite register-tiles bench --shape 1,8,1024,64 --shape 1,8,1024,128 --kernel fused "${tiles[@]}" \
                --causal none --causal top-left $short --json "$out/register-tiles.json" ;;
        *) echo "record: unknown suite $s" >&2; exit 1 ;;
    esac
done
suite peak-after "$bin" peak --json "$out/peak-after.json"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# meta.json: what a reader needs to defend (or reproduce) the figures.
dirty=false
[ -n "$(git status --porcelain -- . ":!$out")" ] && dirty=true
driver_env="$(env | grep -E '^(VK_|LP_|MESA_|GALLIUM_|WGPU_|RADV_|ANV_)' | sort || true)"
numpy_jax="$("$venv/bin/python" -c 'import numpy, jax; print(numpy.__version__, jax.__version__)' 2>/dev/null || echo "- -")"
OUT="$out" INFO="$info" STARTED="$started" FINISHED="$(date -u +%FT%TZ)" DIRTY="$dirty" \
    LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" DRIVER_ENV="$driver_env" NUMPY_JAX="$numpy_jax" \
    TIMINGS="{$(IFS=,; echo "${timings[*]}")}" SKIPPED="{$(IFS=,; echo "${skipped[*]:-}")}" SUITES="$suites" \
    COMMIT="$(git rev-parse HEAD)" RUSTC="$(rustc -V)" \
    WGPU="$(grep -A1 '^name = "wgpu"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')" \
    python3 - <<'EOF'
import json, os, platform
e = os.environ
info = dict(
    line.split(":", 1) for line in e["INFO"].splitlines() if ":" in line and not line.startswith(" ")
)
info = {k.strip(): v.strip() for k, v in info.items()}
cpu = {"model": "unknown", "cores": os.cpu_count()}
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu["model"] = line.split(":", 1)[1].strip()
            break
with open("/proc/meminfo") as f:
    mem_kib = int(f.readline().split()[1])
driver = info.get("driver", "")
numpy_v, jax_v = e["NUMPY_JAX"].split()
meta = {
    "commit": e["COMMIT"],
    "dirty": e["DIRTY"] == "true",
    "build": "release",
    "rustc": e["RUSTC"],
    "wgpu": e["WGPU"],
    "adapter": {
        "name": info.get("adapter", "unknown"),
        "backend": info.get("backend", ""),
        "device_type": info.get("device type", ""),
        "driver": driver.split(" ")[0] if driver else "",
        "driver_info": " ".join(driver.split(" ")[1:]),
        "subgroups": info.get("subgroups", ""),
    },
    "driver_env": dict(line.split("=", 1) for line in e["DRIVER_ENV"].splitlines() if "=" in line),
    "cpu": cpu,
    "memory_gib": round(mem_kib / 2**20, 1),
    "kernel": platform.release(),
    "peers": {"numpy": None if numpy_v == "-" else numpy_v, "jax": None if jax_v == "-" else jax_v},
    "date": e["STARTED"][:10],
    "started": e["STARTED"],
    "finished": e["FINISHED"],
    "load_before": [float(x) for x in e["LOAD_BEFORE"].split()],
    "load_after": [float(x) for x in e["LOAD_AFTER"].split()],
    "peak_before": "peak-before.json",
    "peak_after": "peak-after.json",
    "suites": e["SUITES"].split(),
    "suite_seconds": json.loads(e["TIMINGS"]),
    "suites_skipped": json.loads(e["SKIPPED"]),
}
with open(os.path.join(e["OUT"], "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
print(f"wrote {e['OUT']}/meta.json")
EOF
echo "== recorded $out; regenerate the tables with scripts/benchmarks-md.py" >&2
