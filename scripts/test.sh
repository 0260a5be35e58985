#!/usr/bin/env bash
# Runs everything the README promises (what CI runs): formatting, clippy on every target, on
# the minimal (no-default-features) library and on that library for wasm32 (the browser), the
# docs with warnings denied, then the test lanes — one driver configuration each, every lane
# requiring the capabilities its driver has (a named skip of a required capability fails it):
#   default    the whole test suite on the default adapter (Mesa 25 lavapipe when there is no
#              GPU) and the benchmark page's engine natively
#   coopmat    cooperative matrices on Mesa 26 lavapipe in a Debian 13 root (coopmat-tests.sh)
#   browser    the browser suite and the benchmark page in headless Chromium's WebGPU
# then the examples and a short bounded fuzzing pass. Every step and lane prints its wall time;
# at the end a table of the steps, one summary line per lane (passed, failed, ignored, skipped
# by capability, time), and on a failure the failing step's name last.
#
# Usage: scripts/test.sh [--quick] [extra cargo test args]
#   --quick   format, clippy (default features) and the core test files (fused, staged, decode,
#             numerics, errors, cli) on the default lane: ~15 minutes from a clean target/ on a
#             2-core machine; for a first contact or a quick check before a full run
#   WGPU_ATTENTION_FUZZ_SECONDS=0 skips fuzzing, WGPU_ATTENTION_BROWSER=0 the browser lane,
#   WGPU_ATTENTION_COOPMAT_LANE=0 the coopmat lane
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/steps.sh

quick=0
if [ "${1:-}" = --quick ]; then
    quick=1
    shift
fi

step "driver (ensure-vulkan.sh: lavapipe, one consistent Mesa)"
source scripts/ensure-vulkan.sh

step "adapter"
info="$(cargo run --quiet -- info)"
echo "$info"
adapter="$(sed -n 's/^adapter: *//p' <<<"$info"); $(sed -n 's/^driver: *//p' <<<"$info"); subgroups $(sed -n 's/^subgroups: *//p' <<<"$info")"
# What the default lane requires. lavapipe (CI, and any machine without a GPU) has f16, fixed
# subgroups, the tiled design and the pipeline cache: losing one fails the lane. On another
# adapter only what WGPU_ATTENTION_REQUIRE names is required; the rest skips by name.
case "$(sed -n 's/^driver: *//p' <<<"$info")" in
    llvmpipe*) default_require="f16,subgroups,tiled,pipeline-cache" ;;
    *) default_require="${WGPU_ATTENTION_REQUIRE:-}" ;;
esac

step "format"
cargo fmt --check
step "clippy (all targets, default features)"
cargo clippy --quiet --all-targets -- -D warnings

if [ "$quick" = 1 ]; then
    step "tests (quick: core files on the default lane)"
    lane_begin default "$default_require" "$adapter"
    lane_run cargo test "$@" --test fused --test staged --test decode --test numerics --test errors --test cli
    lane_end
    exit 0
fi

step "clippy (library and examples without default features: wgpu, bytemuck, half, thiserror, pollster)"
cargo clippy --quiet --no-default-features --lib --examples -- -D warnings
step "clippy (library for the browser: wasm32-unknown-unknown, WebGPU backend)"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
cargo clippy --quiet --no-default-features --lib --target wasm32-unknown-unknown -- -D warnings
cargo clippy --quiet --lib --target wasm32-unknown-unknown -- -D warnings
# A wasm dependent, with or without the default features, compiles no native-only crate.
for features in "" "--no-default-features"; do
    native_only="$(cargo tree --quiet -p wgpu-attention $features --target wasm32-unknown-unknown -e normal --prefix none \
        | grep -E '^(pollster|clap|indicatif|plotters|rand|rand_chacha|anyhow|npyz|safetensors|dirs) ' || true)"
    if [ -n "$native_only" ]; then
        echo "the wasm32 library ($features) pulls native-only crates: $native_only" >&2
        exit 1
    fi
done
step "clippy (the benchmark page's engine, web/: native and wasm32)"
cargo clippy --quiet -p wgpu-attention-web --all-targets -- -D warnings
cargo clippy --quiet -p wgpu-attention-web --lib --target wasm32-unknown-unknown -- -D warnings
step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps

step "lane default: every test file"
lane_begin default "$default_require" "$adapter"
lane_run cargo test "$@"
lane_run cargo test --quiet -p wgpu-attention-web
lane_end

if [ "${WGPU_ATTENTION_COOPMAT_LANE:-1}" != 0 ]; then
    step "lane coopmat: Mesa 26 lavapipe in a Debian 13 root"
    lane_begin coopmat "coopmat,coopmat-gemm,f16,subgroups,tiled" "Mesa 26.1 lavapipe, cooperative matrices"
    lane_run bash scripts/coopmat-tests.sh
    lane_end
fi

step "examples"
for example in examples/*.rs; do
    name="$(basename "$example" .rs)"
    echo "== example $name" >&2
    cargo run --quiet --example "$name"
done

if [ "${WGPU_ATTENTION_BROWSER:-1}" != 0 ]; then
    step "lane browser: wasm32 in headless Chromium's WebGPU, and the benchmark page"
    # Chromium's WebGPU runs on SwiftShader here: no f16, and wgpu's WebGPU backend maps no
    # subgroups; those checks are named skips.
    lane_begin browser "" "headless Chromium WebGPU"
    lane_run bash scripts/test-browser.sh
    lane_run bash scripts/test-web.sh
    lane_end
fi

fuzz_seconds="${WGPU_ATTENTION_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ]; then
    step "fuzzing (${fuzz_seconds}s per target)"
    bash scripts/fuzz.sh "$fuzz_seconds"
fi
