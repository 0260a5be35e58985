#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of the .npy and .safetensors readers and of
# attention validation. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 30 s for each of npy, safetensors, validate (what CI runs). For a long run:
#   scripts/fuzz.sh 3600 validate
# New inputs that reach new coverage are added to fuzz/corpus/<target>/ (kept in the repository;
# `cargo +nightly fuzz cmin <target>` minimizes it). A crash is written to fuzz/artifacts/<target>/
# and fails the script; reproduce it with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-vulkan.sh
seconds="${1:-30}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(npy safetensors validate); fi

if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --quiet --locked cargo-fuzz
fi
# libFuzzer's instrumentation needs unstable rustc flags: the nightly toolchain when installed,
# else the stable one with RUSTC_BOOTSTRAP (the same compiler, unstable flags unlocked).
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
# -a: debug assertions (integer overflow panics); -s none: no sanitizer (the crate's own code is
# safe Rust), which keeps the instrumented wgpu build short.
flags=(-a -s none)
log="$(mktemp)"
if ! cargo "${toolchain[@]}" fuzz build "${flags[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t for ${seconds}s" >&2
    status=0
    cargo "${toolchain[@]}" fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=4096 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' "$log" >&2 || true
    if [ "$status" -ne 0 ]; then
        grep -E -A12 "panicked|ERROR|deadly signal|timeout" "$log" | head -60 >&2 || tail -40 "$log" >&2
        echo "fuzz: $t failed; inputs in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzz: no failures" >&2
