#!/usr/bin/env bash
# Builds the benchmark page into web/dist/ (static files: index.html, main.js, style.css and the
# wasm engine under pkg/): the library compiled for wasm32 in release mode, bound to JavaScript by
# wasm-bindgen (no bundler). Installs the wasm32 target and the wasm-bindgen-cli matching
# Cargo.lock (cached under target/tools/) when missing. Serve the folder over HTTP, e.g.
#   python3 -m http.server --bind 127.0.0.1 --directory web/dist 8000
# and open http://127.0.0.1:8000/ in a browser with WebGPU.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "== $*" >&2; }

rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
version="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
tools="target/tools/wasm-bindgen-$version"
if [ ! -x "$tools/bin/wasm-bindgen" ]; then
    step "installing wasm-bindgen-cli $version into $tools"
    cargo install --quiet --root "$tools" wasm-bindgen-cli --version "$version"
fi

step "building the page's engine (wasm32, release)"
cargo build --quiet --release -p wgpu-attention-web --lib --target wasm32-unknown-unknown
out=web/dist
rm -rf "$out"
mkdir -p "$out"
"$tools/bin/wasm-bindgen" --target web --no-typescript --out-dir "$out/pkg" \
    target/wasm32-unknown-unknown/release/wgpu_attention_web.wasm
cp web/index.html web/main.js web/style.css "$out/"
wasm="$out/pkg/wgpu_attention_web_bg.wasm"
step "built $out: $(stat -c %s "$wasm") bytes of wasm ($(gzip -9c "$wasm" | wc -c) gzipped)"
