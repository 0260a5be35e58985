#!/usr/bin/env bash
# Makes sure a Vulkan adapter exists: installs Mesa's lavapipe (CPU Vulkan) when the machine has no
# Vulkan driver. Sourced by scripts/bench.sh, scripts/test.sh, scripts/fuzz.sh and .ci/run (it
# sets no shell options of its own: they would stay on in the shell that sources it).

have_vulkan_driver() {
    # An installed Vulkan ICD manifest means a driver (GPU or lavapipe) and the loader are present.
    compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null
}

have_vulkan_loader() {
    # Not `ldconfig -p | grep -q`: grep exiting early makes the pipeline fail under pipefail.
    compgen -G "/usr/lib/*/libvulkan.so.1" >/dev/null || compgen -G "/usr/lib/libvulkan.so.1" >/dev/null \
        || compgen -G "/usr/lib64/libvulkan.so.1" >/dev/null
}

if ! have_vulkan_driver || ! have_vulkan_loader; then
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
