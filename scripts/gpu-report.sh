#!/usr/bin/env bash
# Records everything worth knowing about one GPU in one command: the adapter (features, limits,
# cooperative-matrix shapes), the measured ceilings, a quick tune, and the benchmark presets on
# every fused design in f32 and f16 (sequence sweep, head-dim sweep, causal, decode sweep, the
# multi-head layer's GEMM/attention split), each as a table, JSON, CSV and an SVG plot, into one
# folder with a summary.
# Usage: scripts/gpu-report.sh [OUT_DIR]   (default: gpu-report/<adapter>-<date>)
# The tuning cache of the run lives in OUT_DIR (the user's cache is left alone). Nothing here
# installs a driver: on a GPU machine the vendor's Vulkan driver is used as it is.
set -uo pipefail
cd "$(dirname "$0")/.."
export WGPU_ATTENTION_SYSTEM_MESA=1
source scripts/ensure-vulkan.sh

cargo build --quiet --release || exit 1
bin=target/release/wgpu-attention
adapter="$($bin info | sed -n 's/^adapter: *//p' | tr -c 'A-Za-z0-9._-' '-' | cut -c1-40)"
out="${1:-gpu-report/${adapter}-$(date +%Y%m%d-%H%M)}"
mkdir -p "$out"
export WGPU_ATTENTION_TUNE_CACHE="$out/tune.json"
failed=()

# One step: its output to OUT/NAME.txt (and the terminal); a failing step is listed, not fatal.
step() {
    local name="$1"
    shift
    echo "== $name: $*" >&2
    if ! "$@" 2>&1 | tee "$out/$name.txt"; then
        failed+=("$name")
    fi
}

step info "$bin" info
step peak "$bin" peak --json "$out/peak.json"
step tune "$bin" tune --quick --quiet
step tune-f16 "$bin" tune --quick --quiet --dtype f16   # f16 buckets: coopmat's tiles too
for dtype in f32 f16; do
    files() { echo --json "$out/$1.json" --csv "$out/$1.csv" --plot "$out/$1.svg"; }
    # shellcheck disable=SC2046
    step "seq-$dtype" "$bin" bench --preset seq --design all --kernel fused --kernel staged --dtype "$dtype" $(files "seq-$dtype")
    # shellcheck disable=SC2046
    step "seq-causal-$dtype" "$bin" bench --preset seq --causal bottom-right --design all --kernel fused \
        --dtype "$dtype" $(files "seq-causal-$dtype")
    # shellcheck disable=SC2046
    step "headdim-$dtype" "$bin" bench --preset headdim --design all --kernel fused --dtype "$dtype" $(files "headdim-$dtype")
    # shellcheck disable=SC2046
    step "decode-$dtype" "$bin" bench --preset decode --dtype "$dtype" --json "$out/decode-$dtype.json"
    # shellcheck disable=SC2046
    step "mha-$dtype" "$bin" bench --variant mha --shape 1,8,1024,64 --dtype "$dtype" $(files "mha-$dtype")
done

{
    echo "# GPU report: $adapter"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- command: scripts/gpu-report.sh $*"
    echo "- failed steps: ${failed[*]:-none}"
    echo
    echo '```'
    cat "$out/info.txt"
    echo '```'
    for f in "$out"/*.txt; do
        [ "$(basename "$f")" = info.txt ] && continue
        echo
        echo "## $(basename "$f" .txt)"
        echo '```'
        cat "$f"
        echo '```'
    done
} >"$out/summary.md"
echo "wrote $out (summary.md, JSON, CSV, SVG)" >&2
[ ${#failed[@]} -eq 0 ]
