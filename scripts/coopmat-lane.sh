#!/usr/bin/env bash
# The cooperative-matrix test lane: a Debian 13 (trixie) root whose lavapipe (Mesa 26.1 from
# trixie-backports) implements VK_KHR_cooperative_matrix, which no Debian 12 Mesa does. Mesa 26.1
# needs Debian 13's libc, so it cannot be installed on the Debian 12 host; binaries built on the
# host run unchanged inside the root (newer libc), with the work tree bind-mounted at its own path.
#
# Usage:
#   scripts/coopmat-lane.sh setup              create the root if missing (cached, reused)
#   scripts/coopmat-lane.sh run CMD [ARGS...]  run CMD inside the root, from the current directory
#   scripts/coopmat-lane.sh BINARY [ARGS...]   same as `run BINARY ARGS...` (e.g. a test binary)
#
# The root lives in .lanes/trixie/ of the work tree (ignored by git); WGPU_ATTENTION_LANE_ROOT
# moves it and WGPU_ATTENTION_LANE_MIRROR replaces the Debian mirror of the host's apt sources.
# Creating it takes ~5 minutes and needs root (or sudo), debootstrap (installed with apt when
# missing) and the network; any failure is reported and makes the script fail.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
root="${WGPU_ATTENTION_LANE_ROOT:-$repo/.lanes/trixie}"
ready="$root/.wgpu-attention-lane-ready"

die() {
    echo "coopmat-lane: ERROR: $*" >&2
    exit 1
}
say() { echo "coopmat-lane: $*" >&2; }
as_root() {
    if [ "$(id -u)" != 0 ]; then sudo "$@"; else "$@"; fi
}

# The host's Debian mirror and keyring (the same ones ensure-vulkan.sh uses for backports).
host_mirror() {
    if [ -n "${WGPU_ATTENTION_LANE_MIRROR:-}" ]; then
        echo "$WGPU_ATTENTION_LANE_MIRROR"
        return
    fi
    local uri
    uri="$(grep -hs -m1 '^URIs:.*debian/\?$' /etc/apt/sources.list.d/*.sources | awk '{print $2; exit}')"
    echo "${uri:-http://deb.debian.org/debian}"
}
host_keyring() {
    local keyring
    keyring="$(grep -hs -m1 '^Signed-By:' /etc/apt/sources.list.d/*.sources | awk '{print $2; exit}')"
    echo "${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}"
}

# Mounts go into a private mount namespace when `unshare` works: they vanish with the script
# (even on SIGKILL) and other processes never see the work tree looped inside the root. Without
# it they are made in the host's namespace and the EXIT trap removes them.
if [ -z "${WGPU_ATTENTION_LANE_NS:-}" ] && command -v unshare >/dev/null \
    && as_root unshare --mount --propagation private true 2>/dev/null; then
    export WGPU_ATTENTION_LANE_NS=1
    exec_as_root=()
    [ "$(id -u)" != 0 ] && exec_as_root=(sudo --preserve-env)
    exec "${exec_as_root[@]}" unshare --mount --propagation private "$0" "$@"
fi

mounted=()
# Idempotent: a path that is already a mount point is left as it is (and not unmounted by us).
bind() {
    local src="$1" dst="$2"
    mkdir -p "$dst"
    if mountpoint -q "$dst"; then return 0; fi
    as_root mount --bind "$src" "$dst"
    mounted+=("$dst")
}
unbind_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        as_root umount "${mounted[$i]}" 2>/dev/null || as_root umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    mounted=()
}
trap unbind_all EXIT

# Deletes a half-made root, never through a mount left inside it (a bind-mounted /dev or work
# tree would be deleted with it): those are unmounted first, and anything still mounted stops us.
remove_partial() {
    local dir="$1" target
    [ -e "$dir" ] || return 0
    while read -r target; do
        case "$target" in "$dir"/*) as_root umount -l "$target" 2>/dev/null || true ;; esac
    done < <(awk '{print $5}' /proc/self/mountinfo | sort -r)
    if awk '{print $5}' /proc/self/mountinfo | grep -q "^$dir/"; then
        die "mounts remain under $dir; unmount them before retrying"
    fi
    as_root rm -rf --one-file-system "$dir"
}

setup() {
    [ -f "$ready" ] && return 0
    local mirror keyring tmp
    mirror="$(host_mirror)"
    keyring="$(host_keyring)"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        as_root apt-get update -qq || die "apt-get update failed (network?)"
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null \
            || die "cannot install debootstrap"
    fi
    # Built beside the final path and renamed when complete: a half-made root is never reused.
    tmp="$root.partial"
    remove_partial "$tmp"
    mkdir -p "$(dirname "$root")"
    say "creating a Debian 13 root in $root from $mirror (a few minutes)"
    as_root debootstrap --variant=minbase --keyring="$keyring" trixie "$tmp" "$mirror" \
        >"$(dirname "$root")/debootstrap.log" 2>&1 \
        || { tail -n 5 "$(dirname "$root")/debootstrap.log" >&2; die "debootstrap failed; see $(dirname "$root")/debootstrap.log"; }
    printf 'Types: deb\nURIs: %s\nSuites: trixie-backports\nComponents: main\nSigned-By: %s\n' \
        "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg \
        | as_root tee "$tmp/etc/apt/sources.list.d/trixie-backports.sources" >/dev/null
    as_root cp /etc/resolv.conf "$tmp/etc/resolv.conf"
    bind /proc "$tmp/proc"
    bind /dev "$tmp/dev"
    as_root chroot "$tmp" apt-get update -qq || die "apt-get update inside the trixie root failed"
    say "installing mesa-vulkan-drivers from trixie-backports"
    DEBIAN_FRONTEND=noninteractive as_root chroot "$tmp" apt-get install -y -qq --no-install-recommends \
        -t trixie-backports mesa-vulkan-drivers libvulkan1 >/dev/null \
        || die "installing mesa-vulkan-drivers (trixie-backports) inside the root failed"
    as_root chroot "$tmp" apt-get clean
    unbind_all
    as_root mv "$tmp" "$root"
    as_root touch "$ready"
    say "ready: $(as_root chroot "$root" dpkg-query -W -f='mesa-vulkan-drivers ${Version}' mesa-vulkan-drivers)"
}

run_in_root() {
    [ $# -gt 0 ] || die "no command given"
    bind /proc "$root/proc"
    bind /dev "$root/dev"
    bind "$repo" "$root$repo"
    local cwd="$PWD"
    case "$cwd/" in "$repo"/*) ;; *) cwd="$repo" ;; esac
    # cargo's test harness runs binaries from the package root; keep the caller's directory and
    # environment (the host's runtime dir does not exist inside the root).
    as_root env XDG_RUNTIME_DIR=/tmp/xdg-runtime WGPU_ATTENTION_LANE=coopmat \
        chroot "$root" /bin/bash -c \
        'mkdir -p -m 700 "$XDG_RUNTIME_DIR"; cd "$0" && exec "$@"' "$cwd" "$@"
}

case "${1:-}" in
    "" | -h | --help)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    setup)
        setup
        ;;
    run)
        shift
        setup
        run_in_root "$@"
        ;;
    *)
        setup
        run_in_root "$@"
        ;;
esac
