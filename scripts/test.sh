#!/usr/bin/env bash
# Runs everything the README promises (what CI runs): formatting, clippy on every target, on
# the minimal (no-default-features) library and on that library for wasm32 (the browser), the
# docs with warnings denied, then the test lanes — one driver configuration each, every lane
# requiring the capabilities its driver has (a named skip of a required capability fails it):
#   default      the whole test suite on the default adapter (Mesa 25 lavapipe when there is no
#                GPU) and the benchmark page's engine natively
#   swiftshader  the kernel test files on SwiftShader's Vulkan (another shader compiler, 4-wide
#                subgroups, no f16), unpacked from Debian's chromium-common (scripts/drivers.sh)
#   lavapipe-4, lavapipe-16   the subgroup paths at 4- and 16-wide subgroups
#   validation   the core test files and every kernel's shader module under the Khronos
#                validation layer (its spirv-val included); any message fails the lane
#   coopmat      cooperative matrices on Mesa 26 lavapipe in a Debian 13 root (coopmat-tests.sh)
#   browser      the browser suite and the benchmark page in headless Chromium's WebGPU
# then the examples and a short bounded fuzzing pass. Every step and lane prints its wall time;
# at the end a table of the steps, one summary line per lane (passed, failed, ignored, skipped
# by capability, time), and on a failure the failing step's name last.
#
# Usage: scripts/test.sh [--quick] [extra cargo test args]
#   --quick   format, clippy (default features) and the core test files (fused, staged, decode,
#             numerics, errors, cli) on the default lane: 824 s from a fresh clone with empty
#             caches on a 2-core VM; for a first contact or a quick check before a full run
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
# A lane's adapter line from `info` output: adapter; driver; subgroups.
adapter_line() {
    echo "$(sed -n 's/^adapter: *//p' <<<"$1"); $(sed -n 's/^driver: *//p' <<<"$1"); subgroups $(sed -n 's/^subgroups: *//p' <<<"$1")"
}
adapter="$(adapter_line "$info")"
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
    lane_binaries "$@" --test fused --test staged --test decode --test numerics --test errors --test cli
    lane_tests -- fused staged decode numerics errors cli
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
lane_binaries "$@"
lane_run_binaries -- "${wgpu_attention_test_bins[@]}"
lane_run cargo test --quiet --doc "$@"
lane_run cargo test --quiet -p wgpu-attention-web
lane_end
# The lanes below run the default lane's test binaries again, on other drivers and settings.

step "lane swiftshader: SwiftShader's Vulkan (another compiler; 4-wide subgroups, no f16)"
swiftshader_icd="$(bash scripts/drivers.sh swiftshader)"
lane_begin swiftshader "subgroups,tiled,pipeline-cache" "SwiftShader Vulkan (Subzero), 4-wide subgroups"
lane_tests VK_ICD_FILENAMES="$swiftshader_icd" -- fused staged decode numerics masks merge kv_cache paged \
    varlen designs edges family backward alibi shaders
lane_end

# lavapipe's subgroup width follows its vector width: 128 bits → 4 lanes, 512 → 16 (AVX-512).
# Every test file whose kernels take a subgroup path on lavapipe: the register design's subgroup
# fetch (every fused call), the tiled design, the decode kernel's lanes design (the built-in one,
# also under KV caches and paged layouts), the numeric policy; and every module at that width.
subgroup_tests=(fused designs decode kv_cache paged varlen masks alibi edges family numerics
    shaders:module_is_created)
# The adapter line of a lane whose variables change the driver, read from the driver under them;
# fails unless it reports the subgroup width the lane exists for.
adapter_under() {
    local width="$1" lane_info subgroups
    shift
    lane_info="$(env "$@" cargo run --quiet -- info)"
    subgroups="$(sed -n 's/^subgroups: *//p' <<<"$lane_info")"
    [ "$subgroups" = "$width..$width invocations" ] || {
        echo "lane: $* gives subgroups '$subgroups', not $width-wide" >&2
        return 1
    }
    echo "$(adapter_line "$lane_info"); $*"
}
step "lane lavapipe-4: lavapipe with 4-wide subgroups (every subgroup path)"
adapter4="$(adapter_under 4 LP_NATIVE_VECTOR_WIDTH=128)"
lane_begin lavapipe-4 "$default_require" "$adapter4"
lane_tests LP_NATIVE_VECTOR_WIDTH=128 -- "${subgroup_tests[@]}"
lane_end
step "lane lavapipe-16: lavapipe with 16-wide subgroups (every subgroup path; needs AVX-512)"
if grep -qw avx512f /proc/cpuinfo; then
    adapter16="$(adapter_under 16 LP_NATIVE_VECTOR_WIDTH=512)"
    lane_begin lavapipe-16 "$default_require" "$adapter16"
    lane_tests LP_NATIVE_VECTOR_WIDTH=512 -- "${subgroup_tests[@]}"
    lane_end
else
    echo "SKIPPED lane lavapipe-16: the CPU has no AVX-512, so lavapipe offers no 16-wide subgroups" >&2
fi

step "lane validation: the Khronos validation layer over the core tests and every kernel's module"
validation_layer="$(bash scripts/drivers.sh validation)"
validation_logs="$wgpu_attention_lane_dir/validation"
rm -rf "$validation_logs" && mkdir -p "$validation_logs"
lane_begin validation "$default_require" "$adapter, VK_LAYER_KHRONOS_validation (chromium-common's build)"
validation_tests=(shaders fused staged decode:shapes_and_split_counts numerics errors backward:staged family:gemm kv_cache:rope)
lane_tests VK_LAYER_PATH="$validation_layer" VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation \
    VK_LAYER_ENABLE_MESSAGE_LIMIT=false VK_KHRONOS_VALIDATION_LOG_FILENAME="$validation_logs/{}.txt" \
    -- "${validation_tests[@]}"
# The layer opens its log when it loads: a missing log means it never checked anything.
if [ "$(find "$validation_logs" -name '*.txt' | wc -l)" -lt "${#validation_tests[@]}" ]; then
    echo "the validation layer did not load in every test binary: $(ls "$validation_logs")" >&2
    exit 1
fi
if grep -l "Validation Error" "$validation_logs"/*.txt >/dev/null 2>&1; then
    grep -h -A3 "Validation Error" "$validation_logs"/*.txt | head -40 >&2
    echo "validation: $(grep -h "Validation Error" "$validation_logs"/*.txt | grep -o 'VUID[-A-Za-z0-9_]*' | sort | uniq -c | tr '\n' ' ')" >&2
    exit 1
fi
echo "validation: no message from the layer (logs in $validation_logs)" >&2
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
