#!/usr/bin/env bash
# A change that must not slow anything down, measured: the prefill, decode and backward benchmarks
# of two builds on this machine in one window, interleaved (before, after, before, after, …) so
# that load and thermal drift fall on both alike, into benchmarks/<date>-<NAME>/ with a summary of
# each row's median in both builds (summary.json) and meta.json naming both commits.
#
# Usage: scripts/before-after.sh BEFORE_COMMIT NAME [ROUNDS] [SUITES]
#   BEFORE_COMMIT  the commit to compare against (built in a worktree under target/)
#   NAME           the record's name after the date
#   ROUNDS         interleaved rounds per suite (default 3)
#   SUITES         a subset of "prefill decode backward" (default all); the decode sweep's batches
#                  and lengths come from WGPU_ATTENTION_DECODE_BATCHES (default 1,8) and
#                  WGPU_ATTENTION_DECODE_LENGTHS (default 4096,16384)
# Every bench run checks its outputs against the CPU reference and fails on a wrong result.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-vulkan.sh
before_commit="$(git rev-parse "$1")"
name="$2"
rounds="${3:-3}"
suites="${4:-prefill decode backward}"
out="benchmarks/$(date -u +%F)-$name"
mkdir -p "$out"

# Whether the build measured differs from its commit, as it is built (edits made during the run do
# not count).
dirty=false
[ -n "$(git status --porcelain -- . ":!$out")" ] && dirty=true
echo "== building the current tree and $before_commit (release)" >&2
cargo build --quiet --release --bin wgpu-attention
after_bin=target/release/wgpu-attention
tree=target/before-after/tree
if [ ! -d "$tree" ]; then git worktree add --detach "$tree" "$before_commit" >&2; fi
git -C "$tree" checkout --quiet --detach "$before_commit"
(cd "$tree" && CARGO_TARGET_DIR=../target cargo build --quiet --release --bin wgpu-attention)
before_bin=target/before-after/target/release/wgpu-attention

short="--warmup 1 --iters ${WGPU_ATTENTION_RECORD_ITERS:-5}"
suite_args() {
    case "$1" in
        prefill) echo "--shape 1,8,1024,64 --shape 1,8,2048,64 --kernel fused --kernel staged --causal none --causal top-left $short" ;;
        decode) echo "--preset decode --batches ${WGPU_ATTENTION_DECODE_BATCHES:-1,8} --lengths ${WGPU_ATTENTION_DECODE_LENGTHS:-4096,16384} --warmup 2 --iters ${WGPU_ATTENTION_RECORD_DECODE_ITERS:-20}" ;;
        backward) echo "--shape 1,8,1024,64 --kernel fused --kernel staged --backward --causal none --causal top-left $short" ;;
    esac
}
started="$(date -u +%FT%TZ)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
for suite in $suites; do
    for round in $(seq 1 "$rounds"); do
        for build in before after; do
            bin="${build}_bin"
            echo "== $suite round $round: $build" >&2
            # shellcheck disable=SC2046
            "${!bin}" bench --quiet $(suite_args "$suite") --json "$out/$suite.$build.$round.json" >&2
        done
    done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

OUT="$out" ROUNDS="$rounds" SUITES="$suites" BEFORE="$before_commit" AFTER="$(git rev-parse HEAD)" \
    DIRTY="$dirty" \
    STARTED="$started" FINISHED="$(date -u +%FT%TZ)" LOAD_BEFORE="$load_before" LOAD_AFTER="$load_after" \
    INFO="$($after_bin info)" RUSTC="$(rustc -V)" python3 - <<'PY'
import json, os, statistics
e = os.environ
out, rounds = e["OUT"], int(e["ROUNDS"])
info = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in e["INFO"].splitlines() if ":" in l and not l.startswith(" "))}
FIELDS = ("variant", "kernel", "design", "dtype", "causal", "shape", "layout", "page_size", "splits", "workgroup",
          "built_in", "tile")
def key(row):
    def show(v):
        return ",".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else str(v)
    return " ".join(f"{k}={show(row[k])}" for k in FIELDS if row.get(k) is not None)
summary = []
for suite in e["SUITES"].split():
    medians = {}
    for build in ("before", "after"):
        for r in range(1, rounds + 1):
            with open(f"{out}/{suite}.{build}.{r}.json") as f:
                rows = json.load(f)["rows"]
            for row in rows:
                ms = row.get("median_ms")
                if ms is not None:
                    medians.setdefault(key(row), {}).setdefault(build, []).append(ms)
    for k, m in medians.items():
        if "before" in m and "after" in m:
            b, a = statistics.median(m["before"]), statistics.median(m["after"])
            summary.append({"suite": suite, "row": k, "before_ms": b, "after_ms": a, "change": a / b - 1,
                            "before_runs": m["before"], "after_runs": m["after"]})
worst = max(summary, key=lambda s: s["change"])
meta = {"before_commit": e["BEFORE"], "after_commit": e["AFTER"], "dirty": e["DIRTY"] == "true", "build": "release",
        "rustc": e["RUSTC"], "adapter": info.get("adapter"), "driver": info.get("driver"), "rounds": rounds,
        "interleaved": "per round: before then after, suite by suite", "suites": e["SUITES"].split(),
        "started": e["STARTED"],
        "finished": e["FINISHED"], "load_before": e["LOAD_BEFORE"], "load_after": e["LOAD_AFTER"],
        "cpu_cores": os.cpu_count()}
with open(f"{out}/meta.json", "w") as f:
    json.dump(meta, f, indent=2)
with open(f"{out}/summary.json", "w") as f:
    json.dump({"rows": summary, "worst": worst}, f, indent=2)
for s in summary:
    print(f"{s['suite']:9} {s['before_ms']:9.3f} {s['after_ms']:9.3f} {100 * s['change']:+6.1f}%  {s['row']}")
print(f"worst: {worst['suite']} {worst['row']}: {100 * worst['change']:+.1f}%")
PY
