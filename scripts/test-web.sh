#!/usr/bin/env bash
# Tests the benchmark page in a real browser: builds it (scripts/build-web.sh), serves web/dist
# from 127.0.0.1, opens it in headless Chromium (WebGPU on SwiftShader when there is no GPU)
# through chromedriver, waits for the sweep, checks the correctness column and that every row has
# its numbers (web/tests/page.py), and saves the screenshot, the report JSON and the console log
# in target/web/. Installs Debian's chromium, chromium-driver and python3-selenium when missing.
# Usage: scripts/test-web.sh [URL query]   (default: a short sweep; e.g. "lengths=256,512,1024")
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-chromium.sh
ensure_chromium python3-selenium
bash scripts/build-web.sh
query="${1:-lengths=64,128,256&heads=4&d=64&designs=all&iters=3}"
echo "== the page in headless Chromium ($query)" >&2
/usr/bin/python3 web/tests/page.py web/dist target/web "$query"
