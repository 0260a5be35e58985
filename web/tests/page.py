#!/usr/bin/env python3
"""Opens the built benchmark page (web/dist) in headless Chromium from a server bound to
127.0.0.1, waits for the sweep to finish, checks the correctness column and that every row has
a number, and saves a screenshot, the report JSON and the browser's console log.

Usage: page.py DIST OUT [query]   (query: the page's URL parameters, e.g. "lengths=64,128")
Driven by scripts/test-web.sh; needs Debian's chromium, chromium-driver and python3-selenium.
"""
import base64
import functools
import http.server
import json
import os
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

TIMEOUT_S = float(os.environ.get("WGPU_ATTENTION_PAGE_TIMEOUT", "900"))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


QuietHandler.extensions_map = {**QuietHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript"}


def serve(directory):
    handler = functools.partial(QuietHandler, directory=directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/lib/chromium/chromium"
    # Without --enable-unsafe-webgpu headless Chromium offers no adapter.
    for arg in ["--headless=new", "--enable-unsafe-webgpu", "--window-size=1280,1600",
                "--disable-background-networking", "--disable-component-update", "--no-first-run"]:
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def fail(message):
    print(f"page test FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    dist, out = sys.argv[1], sys.argv[2]
    query = sys.argv[3] if len(sys.argv) > 3 else ""
    os.makedirs(out, exist_ok=True)
    server = serve(dist)
    url = f"http://127.0.0.1:{server.server_address[1]}/?{query}"
    driver = browser()
    try:
        print(f"opening {url}", file=sys.stderr)
        driver.get(url)
        started, state, last = time.time(), None, None
        while time.time() - started < TIMEOUT_S:
            state = driver.execute_script("return document.body.dataset.state")
            status = driver.execute_script("return document.getElementById('status').textContent")
            if status != last:
                print(f"  [{time.time() - started:6.1f} s] {state}: {status}", file=sys.stderr)
                last = status
            if state in ("done", "error", "idle"):
                break
            time.sleep(1)
        elapsed = time.time() - started
        # Full-page screenshot (the table may be taller than the window).
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        with open(os.path.join(out, "page.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        with open(os.path.join(out, "console.log"), "w") as f:
            for entry in driver.get_log("browser"):
                f.write(f"{entry['level']} {entry['message']}\n")
        if state != "done":
            fail(f"the page ended in state {state!r} after {elapsed:.0f} s: {last}")

        adapter = driver.execute_script("return window.adapterInfo")
        checks = driver.execute_script("return window.checkRows")
        report = driver.execute_script("return window.benchReport")
        with open(os.path.join(out, "bench.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(f"adapter: {adapter['adapter']['name']} ({adapter['adapter']['backend']}), timer {adapter['timer']}, "
              f"designs {adapter['designs']}", file=sys.stderr)

        # The correctness table: every case on every path within tolerance.
        if not checks:
            fail("the correctness table is empty")
        bad = [c for c in checks if not c["ok"]]
        if bad:
            fail(f"{len(bad)} correctness case(s) failed: {bad}")
        cells = driver.execute_script(
            "return [...document.querySelectorAll('#check tbody tr')].map(tr => tr.cells[6].textContent)")
        if len(cells) != len(checks) or any(c != "✔ yes" for c in cells):
            fail(f"correctness column of the page: {cells}")

        # The benchmark: every row measured, checked and shown with its numbers.
        rows = report["rows"]
        if not rows:
            fail("no benchmark rows")
        for r in rows:
            name = f"{r['kernel']}/{r.get('design')} {r['shape']}"
            for key in ("median_ms", "gflops", "gbps"):
                if not isinstance(r.get(key), (int, float)) or not r[key] > 0:
                    fail(f"{name}: {key} = {r.get(key)!r} (note: {r.get('note')})")
            if r.get("within_tolerance") is not True:
                fail(f"{name}: not within tolerance (max abs err {r.get('max_abs_err')}, note {r.get('note')})")
        shown = driver.execute_script(
            "return [...document.querySelectorAll('#bench tbody tr')].map(tr => "
            "[tr.cells[5].dataset.value, tr.cells[6].dataset.value, tr.cells[8].textContent])")
        if len(shown) != len(rows):
            fail(f"the table shows {len(shown)} rows, the report has {len(rows)}")
        for gflops, gbps, correct in shown:
            if not (float(gflops or 0) > 0 and float(gbps or 0) > 0 and correct == "✔ yes"):
                fail(f"a table row lacks a number or is not correct: {gflops!r} {gbps!r} {correct!r}")
        series = driver.execute_script("return document.querySelectorAll('#chart-gflops path').length")
        kernels = {(r["kernel"], r.get("design")) for r in rows}
        if series != len(kernels):
            fail(f"the GFLOP/s chart has {series} lines for {len(kernels)} kernels")

        print(f"page test passed in {elapsed:.0f} s: {len(checks)} correctness cases, {len(rows)} rows "
              f"({report['timer']}); screenshot {out}/page.png", file=sys.stderr)
        for r in rows:
            print(f"  {r['kernel']:7} {str(r.get('design') or ''):9} Lq={r['shape']['lq']:5} Lk={r['shape']['lk']:5} "
                  f"{r['median_ms']:9.3f} ms {r['gflops']:8.3f} GFLOP/s {r['gbps']:7.3f} GB/s  err {r['max_abs_err']:.1e}",
                  file=sys.stderr)
    finally:
        driver.quit()
        server.shutdown()


if __name__ == "__main__":
    main()
