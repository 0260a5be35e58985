#!/usr/bin/env bash
# Makes sure a Vulkan adapter exists and, on Debian 12, that it is the newest lavapipe the
# distribution offers (the default test lane): installs Mesa's lavapipe (CPU Vulkan) when the
# machine has no Vulkan driver, and upgrades Debian 12's Mesa 22.3.6 to bookworm-backports'
# 25.x (about 2× faster for these kernels, and without 22.3's 65535-iteration shader loop limit).
# Where backports cannot be reached it keeps (or installs) the release's Mesa. Set
# WGPU_ATTENTION_SYSTEM_MESA=1 to leave the installed driver alone.
# Sourced by scripts/bench.sh, scripts/test.sh, scripts/fuzz.sh and .ci/run (it sets no shell
# options of its own: they would stay on in the shell that sources it).

have_vulkan_driver() {
    # An installed Vulkan ICD manifest means a driver (GPU or lavapipe) and the loader are present.
    compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null
}

have_vulkan_loader() {
    # Not `ldconfig -p | grep -q`: grep exiting early makes the pipeline fail under pipefail.
    compgen -G "/usr/lib/*/libvulkan.so.1" >/dev/null || compgen -G "/usr/lib/libvulkan.so.1" >/dev/null \
        || compgen -G "/usr/lib64/libvulkan.so.1" >/dev/null
}

wgpu_attention_sudo() {
    if [ "$(id -u)" != 0 ]; then sudo "$@"; else "$@"; fi
}

# The bookworm-backports source, with the URI and keyring of the release's own source.
wgpu_attention_add_backports() {
    local list=/etc/apt/sources.list.d/wgpu-attention-backports.sources
    [ -f "$list" ] && return 0
    grep -qs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/* && return 0
    local uri keyring
    uri="$(grep -hs -m1 '^URIs:.*debian/\?$' /etc/apt/sources.list.d/*.sources | awk 'NR == 1 {print $2}')"
    keyring="$(grep -hs -m1 '^Signed-By:' /etc/apt/sources.list.d/*.sources | awk 'NR == 1 {print $2}')"
    uri="${uri:-http://deb.debian.org/debian}"
    keyring="${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$uri" "$keyring" | wgpu_attention_sudo tee "$list" >/dev/null
}

# Debian 12 with Mesa older than 25: move to bookworm-backports' Mesa (Mesa's Vulkan drivers only;
# a vendor driver such as NVIDIA's is a separate package and stays as it is).
wgpu_attention_newest_lavapipe() {
    [ "${WGPU_ATTENTION_SYSTEM_MESA:-0}" = 1 ] && return 0
    grep -qs 'VERSION_CODENAME=bookworm' /etc/os-release || return 0
    command -v apt-get >/dev/null || return 0
    local have
    have="$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)"
    case "$have" in 2[5-9].*|[3-9]*.*) return 0 ;; esac
    echo "wgpu-attention: installing lavapipe from bookworm-backports (Mesa 25; have: ${have:-none})" >&2
    if wgpu_attention_add_backports \
        && wgpu_attention_sudo apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive wgpu_attention_sudo apt-get install -y -qq \
            -t bookworm-backports mesa-vulkan-drivers libvulkan1 >/dev/null; then
        return 0
    fi
    echo "wgpu-attention: bookworm-backports unavailable; keeping the release's Mesa" >&2
    return 0
}

wgpu_attention_newest_lavapipe

if ! have_vulkan_driver || ! have_vulkan_loader; then
    echo "wgpu-attention: no Vulkan driver found; installing Mesa lavapipe (mesa-vulkan-drivers)" >&2
    wgpu_attention_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive wgpu_attention_sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

# The Vulkan loader's WSI layers complain on every device creation without a runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
    export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/wgpu-attention-xdg-$(id -u)"
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
