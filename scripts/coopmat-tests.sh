#!/usr/bin/env bash
# Runs the test binaries built on this host inside the cooperative-matrix lane
# (scripts/coopmat-lane.sh: Mesa 26 lavapipe, the only lavapipe with VK_KHR_cooperative_matrix),
# filtered to the cooperative-matrix tests. Creating the lane the first time takes ~5 minutes and
# the network; a failure to create it fails this script (CI must not skip it silently).
#
# Usage: scripts/coopmat-tests.sh [extra cargo test build args]
#   WGPU_ATTENTION_COOPMAT_LANE=0        skip (local runs without root or network)
#   WGPU_ATTENTION_COOPMAT_FILTER=NAME   test-name filter inside the lane (default: coopmat);
#                                        an empty filter runs every test of every binary there
#   WGPU_ATTENTION_COOPMAT_SUITE="fused …"  test files (tests/NAME.rs) run whole in the lane, where
#                                        every f16 fused case also runs on the cooperative-matrix
#                                        design (default: the table-driven fused files below, ~2
#                                        minutes; add `shapes` for ~3 more; empty: none)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${WGPU_ATTENTION_COOPMAT_LANE:-1}" = 0 ]; then
    echo "coopmat-tests: skipped (WGPU_ATTENTION_COOPMAT_LANE=0)" >&2
    exit 0
fi
if ! bash scripts/coopmat-lane.sh setup; then
    echo "coopmat-tests: ERROR: the cooperative-matrix lane could not be created (debootstrap or network); set WGPU_ATTENTION_COOPMAT_LANE=0 to skip it locally" >&2
    exit 1
fi

filter="${WGPU_ATTENTION_COOPMAT_FILTER-coopmat}"
# Test binaries from cargo's JSON messages (no jq on a bare Debian: the executable paths are
# plain strings). Only test targets: the library's, the binary's and tests/*.rs.
mapfile -t binaries < <(
    cargo test --no-run --message-format=json "$@" 2>/dev/null \
        | grep '"test":true' \
        | grep -o '"executable":"[^"]*"' \
        | sed 's/^"executable":"//; s/"$//' \
        | sort -u
)
if [ "${#binaries[@]}" = 0 ]; then
    echo "coopmat-tests: ERROR: no test binaries found (cargo test --no-run failed?)" >&2
    exit 1
fi

# The lane must really have cooperative matrices, or every coopmat test would skip. (Output is
# captured, not piped into `grep -q`: an early exit would fail the pipeline under pipefail.)
info="$(bash scripts/coopmat-lane.sh run target/debug/wgpu-attention info 2>&1 || true)"
if ! grep -q '^coopmat design: [0-9]' <<<"$info"; then
    echo "coopmat-tests: ERROR: the lane's adapter has no f16 -> f32 cooperative matrices:" >&2
    echo "$info" >&2
    exit 1
fi

suite=" ${WGPU_ATTENTION_COOPMAT_SUITE-fused numerics edges masks varlen designs alibi properties} "
failed=()
for bin in "${binaries[@]}"; do
    name="$(basename "$bin")"
    name="${name%-*}" # cargo's hash suffix
    args=()
    if [[ "$suite" != *" $name "* ]] && [ -n "$filter" ]; then
        # A filter no test of the binary matches runs nothing; list first to keep the log short.
        listed="$(bash scripts/coopmat-lane.sh run "$bin" --list "$filter" 2>/dev/null || true)"
        grep -q ': test$' <<<"$listed" || continue
        args+=("$filter")
    fi
    echo "== coopmat lane: $name ${args[*]:+(filter: ${args[*]})}" >&2
    bash scripts/coopmat-lane.sh run "$bin" "${args[@]}" || failed+=("$name")
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "coopmat-tests: FAILED in the cooperative-matrix lane: ${failed[*]}" >&2
    exit 1
fi
