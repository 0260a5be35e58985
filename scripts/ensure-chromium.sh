# Sourced by the browser scripts: installs Debian's chromium and chromium-driver (and the
# packages named as arguments) when missing, and the wasm32 Rust target.
ensure_chromium() {
    local missing=()
    command -v chromedriver >/dev/null && [ -x /usr/lib/chromium/chromium ] || missing+=(chromium chromium-driver)
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}" >&2
        local sudo_=""
        [ "$(id -u)" = 0 ] || sudo_="sudo"
        $sudo_ apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}"
    fi
    rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
}
