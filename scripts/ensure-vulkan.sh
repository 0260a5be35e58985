#!/usr/bin/env bash
# Makes sure a Vulkan adapter exists and, on Debian 12, that it is the newest lavapipe the
# distribution offers (the default test lane): installs Mesa's lavapipe (CPU Vulkan) when the
# machine has no Vulkan driver, and upgrades Debian 12's Mesa 22.3.6 to bookworm-backports'
# 25.x (faster for these kernels, see BENCHMARKS.md, and without 22.3's 65535-iteration shader
# loop limit). Where backports cannot be reached it keeps (or installs) the release's Mesa.
# Then every Mesa package on the machine (OpenGL/EGL/GBM included) is moved to the Vulkan
# driver's version, packages the new Mesa replaced are removed, the versions are printed, and a
# mixed set fails loudly. Set WGPU_ATTENTION_SYSTEM_MESA=1 to leave the installed driver alone
# (a mixed set then only warns).
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

# Installed binary packages built from Debian's `mesa` source, one "name version" line each.
wgpu_attention_mesa_packages() {
    command -v dpkg-query >/dev/null || return 0
    dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package} ${Version} ${source:Package}\n' 2>/dev/null \
        | awk '$1 == "ii" && $4 == "mesa" {print $2, $3}'
}

# Moves every installed Mesa package to the version of mesa-vulkan-drivers: a newer lavapipe
# pulls only its own dependencies, and a GL stack left half on the old version (EGL from one
# release, glapi from another) is what an OpenGL user of the machine then loads. Packages that
# have no build at that version were replaced by it (Mesa 25's mesa-libgallium provides
# libglapi-mesa; libgl1-mesa-glx is a transitional package) and are removed, unless removing
# them would take other software with them.
wgpu_attention_align_mesa() {
    [ "${WGPU_ATTENTION_SYSTEM_MESA:-0}" = 1 ] && return 0
    command -v apt-get >/dev/null || return 0
    local target name version install=() remove=()
    target="$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)"
    [ -n "$target" ] || return 0
    while read -r name version; do
        [ -n "$name" ] && [ "$version" != "$target" ] || continue
        if apt-cache madison "${name%%:*}" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$target"; then
            install+=("${name%%:*}=$target")
        else
            remove+=("${name%%:*}")
        fi
    done < <(wgpu_attention_mesa_packages)
    if [ ${#install[@]} -gt 0 ]; then
        echo "wgpu-attention: moving Mesa packages to $target: ${install[*]}" >&2
        DEBIAN_FRONTEND=noninteractive wgpu_attention_sudo apt-get install -y -qq --allow-downgrades \
            "${install[@]}" >/dev/null || echo "wgpu-attention: could not install ${install[*]}" >&2
    fi
    if [ ${#remove[@]} -gt 0 ]; then
        local others
        others="$(apt-get -s remove "${remove[@]}" 2>/dev/null | awk '/^Remv / {print $2}' \
            | grep -vxF -f <(printf '%s\n' "${remove[@]}") || true)"
        if [ -z "$others" ]; then
            echo "wgpu-attention: removing Mesa packages that $target replaced: ${remove[*]}" >&2
            DEBIAN_FRONTEND=noninteractive wgpu_attention_sudo apt-get remove -y -qq "${remove[@]}" >/dev/null \
                || echo "wgpu-attention: could not remove ${remove[*]}" >&2
        else
            echo "wgpu-attention: keeping ${remove[*]}: removing them would also remove" $others >&2
        fi
    fi
}

# Prints the Mesa versions installed; returns 1 (after saying which packages differ) on a mixed set.
wgpu_attention_check_mesa() {
    local packages versions
    packages="$(wgpu_attention_mesa_packages)"
    [ -n "$packages" ] || return 0
    versions="$(awk '{print $2}' <<<"$packages" | sort -u)"
    if [ "$(wc -l <<<"$versions")" = 1 ]; then
        echo "wgpu-attention: Mesa $versions ($(awk '{print $1}' <<<"$packages" | sed 's/:.*//' | paste -sd' '))" >&2
        return 0
    fi
    echo "wgpu-attention: MIXED Mesa packages (one driver stack must come from one Mesa):" >&2
    sed 's/^/    /' <<<"$packages" >&2
    return 1
}

wgpu_attention_newest_lavapipe

if ! have_vulkan_driver || ! have_vulkan_loader; then
    echo "wgpu-attention: no Vulkan driver found; installing Mesa lavapipe (mesa-vulkan-drivers)" >&2
    wgpu_attention_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive wgpu_attention_sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

wgpu_attention_align_mesa
if ! wgpu_attention_check_mesa; then
    if [ "${WGPU_ATTENTION_SYSTEM_MESA:-0}" = 1 ]; then
        echo "wgpu-attention: WGPU_ATTENTION_SYSTEM_MESA=1: leaving the mixed set as it is" >&2
    else
        echo "wgpu-attention: could not make the Mesa packages consistent; see the list above" >&2
        # Sourced: `return` ends this file with a failure the sourcing script's `set -e` stops on.
        return 1 2>/dev/null || exit 1
    fi
fi

# The Vulkan loader's WSI layers complain on every device creation without a runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
    export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/wgpu-attention-xdg-$(id -u)"
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
