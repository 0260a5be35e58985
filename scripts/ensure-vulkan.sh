#!/usr/bin/env bash
# Makes sure a Vulkan adapter exists: installs Mesa's lavapipe (CPU Vulkan) when the machine has no
# Vulkan driver. Sourced by scripts/bench.sh, scripts/test.sh and .ci/run.
set -euo pipefail

have_vulkan_driver() {
    # An installed Vulkan ICD manifest means a driver (GPU or lavapipe) and the loader are present.
    compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null
}

if ! have_vulkan_driver || ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
    echo "wgpu-attention: no Vulkan driver found; installing Mesa lavapipe (mesa-vulkan-drivers)" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# The Vulkan loader's WSI layers complain on every device creation without a runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
    export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/wgpu-attention-xdg-$(id -u)"
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
