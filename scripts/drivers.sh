#!/usr/bin/env bash
# The Vulkan drivers and validators the test lanes use besides the installed lavapipe, unpacked
# from Debian's packages into target/drivers/ without installing them (cached there):
#   scripts/drivers.sh swiftshader   prints the ICD manifest of SwiftShader's Vulkan (chromium-common):
#                                    VK_ICD_FILENAMES=$(scripts/drivers.sh swiftshader) runs on it
#   scripts/drivers.sh validation    prints a folder with a manifest of the Khronos validation layer
#                                    (chromium-common's recent build): VK_LAYER_PATH=that folder
#                                    VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation forces it on
#   scripts/drivers.sh lavapipe-22   prints the ICD manifest of Debian 12's own lavapipe (Mesa 22.3.6,
#                                    the release's mesa-vulkan-drivers): the same binary on Mesa 22.3.6
#                                    beside the installed Mesa 25 (it shares the host's LLVM 15)
# Needs apt (Debian 12) and the network the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/target/drivers"
chromium="$dir/chromium/usr/lib/chromium"

unpack_chromium_common() {
    [ -f "$chromium/libvk_swiftshader.so" ] && [ -f "$chromium/libVkLayer_khronos_validation.so" ] && return 0
    rm -rf "$dir/chromium" "$dir"/chromium-common_*.deb
    mkdir -p "$dir"
    (cd "$dir" && apt-get download -qq chromium-common 2>/dev/null) \
        || { apt-get update -qq >/dev/null 2>&1 && (cd "$dir" && apt-get download -qq chromium-common 2>/dev/null); } \
        || { echo "drivers: cannot download chromium-common" >&2; exit 1; }
    dpkg -x "$dir"/chromium-common_*.deb "$dir/chromium"
    rm -f "$dir"/chromium-common_*.deb
}

case "${1:-}" in
    swiftshader)
        unpack_chromium_common
        icd="$dir/swiftshader_icd.json"
        printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.0.5"}}\n' \
            "$chromium/libvk_swiftshader.so" >"$icd"
        echo "$icd"
        ;;
    validation)
        unpack_chromium_common
        mkdir -p "$dir/layer"
        printf '{"file_format_version": "1.2.0", "layer": {"name": "VK_LAYER_KHRONOS_validation", "type": "GLOBAL", "library_path": "%s", "api_version": "1.3.239", "implementation_version": "1", "description": "Khronos validation (chromium-common)"}}\n' \
            "$chromium/libVkLayer_khronos_validation.so" >"$dir/layer/VkLayer_khronos_validation.json"
        echo "$dir/layer"
        ;;
    lavapipe-22)
        lib="$dir/lavapipe-22/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
        if [ ! -f "$lib" ]; then
            version="$(apt-cache madison mesa-vulkan-drivers | awk -F'|' '$2 ~ /^ *22\.3\./ {gsub(/ /, "", $2); print $2; exit}')"
            [ -n "$version" ] || { echo "drivers: no mesa-vulkan-drivers 22.3.x in the apt sources" >&2; exit 1; }
            rm -rf "$dir/lavapipe-22" && mkdir -p "$dir"
            (cd "$dir" && apt-get download -qq "mesa-vulkan-drivers=$version" 2>/dev/null) \
                || { echo "drivers: cannot download mesa-vulkan-drivers=$version" >&2; exit 1; }
            dpkg -x "$dir"/mesa-vulkan-drivers_*.deb "$dir/lavapipe-22"
            rm -f "$dir"/mesa-vulkan-drivers_*.deb
        fi
        icd="$dir/lavapipe-22_icd.json"
        printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.1.230"}}\n' "$lib" >"$icd"
        echo "$icd"
        ;;
    *)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
