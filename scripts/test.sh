#!/usr/bin/env bash
# Runs the whole test suite (GPU kernels against the CPU reference on the default adapter,
# lavapipe when there is no GPU), then clippy. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-vulkan.sh
cargo run --quiet -- info
cargo test "$@"
