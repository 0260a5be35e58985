#!/usr/bin/env bash
# First calls of every kernel class with nothing cached: each in a fresh process with Mesa's
# shader cache off (MESA_SHADER_CACHE_DISABLE=true) and the crate's pipeline cache off
# (WGPU_ATTENTION_PIPELINE_CACHE=off), as on a new machine or after a driver update. Prints a
# line per call and writes JSON rows (class, call, seconds, peak RSS) to FILE for
# scripts/benchmarks-md.py. The targets (every class within 10 s and 500 MB on Mesa 25 lavapipe)
# are written into the file and marked per row.
# Usage: scripts/cold-calls.sh FILE.json   (uses target/release/; scripts/record.sh builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/cold-calls.sh FILE.json}"
bin=target/release/wgpu-attention
gemm=target/release/examples/gemm_throughput
target_s=10
target_mb=500
rows=()
call() {
    local class="$1" shown="$2"
    shift 2
    local stats seconds kb status=0
    stats="$(mktemp)"
    MESA_SHADER_CACHE_DISABLE=true WGPU_ATTENTION_PIPELINE_CACHE=off \
        /usr/bin/time -f "%e %M" -o "$stats" "$@" >/dev/null 2>&1 || status=$?
    read -r seconds kb <"$stats"
    rm -f "$stats"
    [ "$status" = 0 ] || { echo "cold-calls: $class failed (exit $status): $*" >&2; exit 1; }
    local mb=$((kb / 1024)) ok=false
    awk -v s="$seconds" -v t="$target_s" 'BEGIN {exit !(s <= t)}' && [ "$mb" -le "$target_mb" ] && ok=true
    printf '%-28s %7.2f s %6d MB  %s\n' "$class" "$seconds" "$mb" "$shown" >&2
    rows+=("{\"class\": \"$class\", \"call\": \"$shown\", \"seconds\": $seconds, \"peak_rss_mb\": $mb, \"ok\": $ok}")
}
# A first call as a one-shot process makes it: the library's own choice of code (on CPU adapters
# the quick code while the fast code is not compiled), one call, no reference check.
first() {
    local class="$1" args="$2"
    call "$class" "bench --first-call $args" "$bin" bench --quiet --no-check --first-call --warmup 0 --iters 1 $args
}
first "fused/register D=64" "--shape 1,4,4,130,130,64,64 --kernel fused --design register"
first "fused/register D=128" "--shape 1,4,4,130,130,128,128 --kernel fused --design register"
for d in 64 128; do
    first "fused/tiled D=$d" "--shape 1,4,4,130,130,$d,$d --kernel fused --design tiled"
    first "decode D=$d" "--shape 1,32,8,1,1024,$d,$d --kernel decode"
    first "staged D=$d" "--shape 1,4,4,130,130,$d,$d --kernel staged"
    first "backward (fused) D=$d" "--shape 1,4,1,130,130,$d,$d --kernel fused --backward"
done
first "family: additive (fused)" "--variant additive --shape 1,1,130,64 --kernel fused"
first "family: local-p (fused)" "--variant local-p --shape 1,1,130,64 --kernel fused"
first "family: hard" "--variant hard --shape 1,1,130,64"
first "family: han-pool" "--variant han-pool --shape 1,1,130,64"
for design in tiled register; do
    call "gemm/$design" "gemm_throughput 256 128 128 1 $design" "$gemm" 256 128 128 1 "$design"
done
{
    echo "{\"kind\": \"cold\", \"cache\": \"Mesa's shader cache and the crate's pipeline cache off\","
    echo " \"target_seconds\": $target_s, \"target_rss_mb\": $target_mb, \"rows\": ["
    (IFS=$'\n'; echo "${rows[*]}" | sed '$!s/$/,/')
    echo "]}"
} >"$out"
echo "wrote $out" >&2
