#!/usr/bin/env bash
# The main job: benchmarks the fused and staged kernels against the CPU reference on the default
# adapter (lavapipe when there is no GPU) and writes a table to stdout plus JSON, CSV and an SVG
# plot to bench-out/. Extra arguments go to `wgpu-attention bench` (e.g. --preset seq).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-vulkan.sh
mkdir -p bench-out
args=("$@")
if [ ${#args[@]} -eq 0 ]; then args=(--preset default --kernel all); fi
cargo run --quiet --release -- bench "${args[@]}" \
    --json bench-out/bench.json --csv bench-out/bench.csv --plot bench-out/bench.svg
echo "wrote bench-out/bench.json, bench-out/bench.csv, bench-out/bench.svg" >&2
