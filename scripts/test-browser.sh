#!/usr/bin/env bash
# Runs the browser suite (tests/browser.rs): the library built for wasm32 with wgpu's WebGPU
# backend, in headless Chromium (WebGPU on SwiftShader when there is no GPU), checked against the
# CPU reference compiled to wasm. Installs what it needs: Debian's chromium and chromium-driver,
# the wasm32 target, and wasm-bindgen-cli of the version Cargo.lock pins (cached under target/).
# Usage: scripts/test-browser.sh [cargo test args]   (default `-- --nocapture`: the suite's log
# names the adapter and says whether f16 could be checked)
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $*" >&2; }

source scripts/ensure-chromium.sh
ensure_chromium

# The test runner must be the exact version of the wasm-bindgen the suite links.
version="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
tools="target/tools/wasm-bindgen-$version"
if [ ! -x "$tools/bin/wasm-bindgen-test-runner" ]; then
    step "installing wasm-bindgen-cli $version into $tools"
    cargo install --quiet --root "$tools" wasm-bindgen-cli --version "$version"
fi

args=("$@")
[ $# -gt 0 ] || args=(-- --nocapture)
step "browser suite (headless Chromium, WebGPU)"
# webdriver.json (crate root) passes --enable-unsafe-webgpu: without it Chromium offers no adapter.
# The runner's limit is for the whole suite (default 20 s); SwiftShader compiles each pipeline
# on the CPU, which takes most of the suite's time.
WASM_BINDGEN_TEST_TIMEOUT="${WASM_BINDGEN_TEST_TIMEOUT:-300}" \
CHROMEDRIVER="$(command -v chromedriver)" \
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$PWD/$tools/bin/wasm-bindgen-test-runner" \
    cargo test --no-default-features --target wasm32-unknown-unknown --test browser "${args[@]}"
