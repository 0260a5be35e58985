#!/usr/bin/env bash
# The CLI, run as a user would, on every driver configuration within reach: lavapipe (its default
# 8-wide subgroups, then 4- and 16-wide through LP_NATIVE_VECTOR_WIDTH; 16 needs AVX-512),
# SwiftShader's Vulkan and lavapipe under the Khronos validation layer. On each: every fused
# design and staged (the fast code), the fused forward and backward as a first call runs them (the
# quick code), and decode, all checked against the CPU reference (`bench` fails on a row outside
# tolerance). Writes each run's JSON and a summary, driver-check.json, into DIR; fails on a wrong
# row, a failed run or any message from the validation layer.
# Usage: scripts/driver-check.sh DIR   (uses target/release/; scripts/record.sh builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/driver-check.sh DIR}"
mkdir -p "$out"
bin="$PWD/target/release/wgpu-attention"
shapes=(--shape 1,4,2,77,77,64,64 --shape 1,2,2,130,100,32,48)
causal=(--causal none --causal bottom-right)
once=(--quiet --warmup 0 --iters 1)
summary=()

# check NAME ENV…: the three runs under the environment ENV (VAR=value words).
check() {
    local name="$1" adapter
    shift
    adapter="$(env "$@" "$bin" info | sed -n 's/^adapter: *//p')"
    echo "== $name: $adapter" >&2
    env "$@" "$bin" bench "${once[@]}" --design all --kernel fused --kernel staged "${shapes[@]}" "${causal[@]}" \
        --json "$out/$name.designs.json" >&2
    env "$@" "$bin" bench "${once[@]}" --first-call --kernel fused --backward "${shapes[@]}" "${causal[@]}" \
        --json "$out/$name.first-call.json" >&2
    env "$@" "$bin" bench "${once[@]}" --kernel decode --shape 1,8,2,1,300,64,64 --shape 2,4,4,3,77,32,32 \
        "${causal[@]}" --json "$out/$name.decode.json" >&2
    local rows
    rows="$(python3 -c 'import json,sys; print(sum(sum(1 for r in json.load(open(p))["rows"] if r.get("within_tolerance") is True) for p in sys.argv[1:]))' \
        "$out/$name.designs.json" "$out/$name.first-call.json" "$out/$name.decode.json")"
    summary+=("{\"lane\": \"$name\", \"adapter\": \"$adapter\", \"env\": \"$*\", \"checked_rows\": $rows}")
}

check lavapipe
check lavapipe-4 LP_NATIVE_VECTOR_WIDTH=128
if grep -qw avx512f /proc/cpuinfo; then
    check lavapipe-16 LP_NATIVE_VECTOR_WIDTH=512
else
    echo "SKIPPED lavapipe-16: the CPU has no AVX-512" >&2
fi
check swiftshader VK_ICD_FILENAMES="$(bash scripts/drivers.sh swiftshader)"
layer_log="$out/validation-layer.txt"
rm -f "$layer_log"
check validation VK_LAYER_PATH="$(bash scripts/drivers.sh validation)" VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation \
    VK_LAYER_ENABLE_MESSAGE_LIMIT=false VK_KHRONOS_VALIDATION_LOG_FILENAME="$layer_log"
[ -f "$layer_log" ] || { echo "driver-check: the validation layer never loaded (no $layer_log)" >&2; exit 1; }
messages="$(grep -c "Validation Error" "$layer_log" || true)"
{
    echo "{\"kind\": \"driver-check\", \"validation_messages\": $messages, \"lanes\": ["
    (IFS=$'\n'; echo "${summary[*]}" | sed '$!s/$/,/')
    echo "]}"
} >"$out/driver-check.json"
if [ "$messages" != 0 ]; then
    grep -A3 "Validation Error" "$layer_log" | head -40 >&2
    echo "driver-check: $messages validation message(s)" >&2
    exit 1
fi
echo "driver-check: every row within tolerance on every lane, no validation message (wrote $out)" >&2
