#!/usr/bin/env bash
# Runs everything the README promises (what CI runs): formatting, clippy on every target, on
# the minimal (no-default-features) library and on that library for wasm32 (the browser), the
# docs with warnings denied, the whole test suite
# (GPU kernels against the CPU reference on the default adapter, lavapipe when there is no GPU),
# the examples, the browser suite (scripts/test-browser.sh), the benchmark page in a browser
# (scripts/test-web.sh) and a short bounded fuzzing pass. The
# cooperative-matrix tests run a second time in the cooperative-matrix lane
# (scripts/coopmat-tests.sh).
# Usage: scripts/test.sh [extra cargo test args]   (WGPU_ATTENTION_FUZZ_SECONDS=0 skips fuzzing,
# WGPU_ATTENTION_BROWSER=0 the browser suite and page, WGPU_ATTENTION_COOPMAT_LANE=0 the coopmat lane)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/steps.sh
step "driver (ensure-vulkan.sh: lavapipe, one consistent Mesa)"
source scripts/ensure-vulkan.sh

step "adapter"
cargo run --quiet -- info
step "format"
cargo fmt --check
step "clippy (all targets, default features)"
cargo clippy --quiet --all-targets -- -D warnings
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
step "tests"
cargo test "$@"
step "tests of the benchmark page's engine (natively)"
cargo test --quiet -p wgpu-attention-web
step "tests on the cooperative-matrix lane (Mesa 26 lavapipe in a Debian 13 root)"
bash scripts/coopmat-tests.sh
step "examples"
for example in examples/*.rs; do
    name="$(basename "$example" .rs)"
    step "example $name"
    cargo run --quiet --example "$name"
done
if [ "${WGPU_ATTENTION_BROWSER:-1}" != 0 ]; then
    step "browser (wasm32 in headless Chromium's WebGPU)"
    bash scripts/test-browser.sh
    step "the benchmark page in headless Chromium (screenshot and report in target/web/)"
    bash scripts/test-web.sh
fi
fuzz_seconds="${WGPU_ATTENTION_FUZZ_SECONDS:-20}"
if [ "$fuzz_seconds" != 0 ]; then
    step "fuzzing (${fuzz_seconds}s per target)"
    bash scripts/fuzz.sh "$fuzz_seconds"
fi
