# Named, timed steps and test lanes for the scripts CI runs (sourced; sets no shell options).
#   step NAME   ends the running step (printing its time) and starts NAME
# When the script exits, a table of every step's wall time is printed to stderr; when it exits
# with a failure, the last line names the step that failed.

wgpu_attention_steps=()
wgpu_attention_step_name=""
wgpu_attention_step_start=$SECONDS

wgpu_attention_step_end() {
    [ -n "$wgpu_attention_step_name" ] || return 0
    local seconds=$((SECONDS - wgpu_attention_step_start))
    wgpu_attention_steps+=("$(printf '%6d s  %s%s' "$seconds" "$wgpu_attention_step_name" "${1:-}")")
    echo "== ${seconds} s: $wgpu_attention_step_name${1:-}" >&2
    wgpu_attention_step_name=""
}

step() {
    wgpu_attention_step_end
    wgpu_attention_step_name="$*"
    wgpu_attention_step_start=$SECONDS
    echo "== $* (started $(date -u +%H:%M:%S) UTC)" >&2
}

wgpu_attention_steps_report() {
    local status=$? failed="$wgpu_attention_step_name"
    if [ "$status" = 0 ]; then wgpu_attention_step_end; else wgpu_attention_step_end "  (FAILED, exit $status)"; fi
    wgpu_attention_lanes_report
    {
        echo "== steps (wall time):"
        [ ${#wgpu_attention_steps[@]} -eq 0 ] || printf '%s\n' "${wgpu_attention_steps[@]}"
        printf '%6d s  total\n' "$SECONDS"
        if [ "$status" != 0 ]; then echo "== FAILED STEP: ${failed:-(before the first step)} (exit $status)"; fi
    } >&2
}
trap wgpu_attention_steps_report EXIT

# Test lanes (one driver configuration each):
#   lane_begin NAME REQUIRE DESCRIPTION   start a lane: a fresh skip log, WGPU_ATTENTION_REQUIRE
#   lane_run CMD...                       run a test command of the lane (output also kept in
#                                         the lane's log, where its counts are read)
#   lane_end                              the lane's summary line
# Each lane's line (tests passed, failed, ignored, skipped by capability, wall time) is printed
# again at exit, the running lane marked FAILED when the script stops inside it.
wgpu_attention_lanes=()
wgpu_attention_lane=""
wgpu_attention_lane_dir="${CARGO_TARGET_DIR:-target}/lanes"

lane_begin() {
    wgpu_attention_lane="$1"
    wgpu_attention_lane_start=$SECONDS
    wgpu_attention_lane_description="$3"
    mkdir -p "$wgpu_attention_lane_dir"
    wgpu_attention_lane_log="$wgpu_attention_lane_dir/$1.log"
    : >"$wgpu_attention_lane_log"
    export WGPU_ATTENTION_SKIP_LOG
    WGPU_ATTENTION_SKIP_LOG="$(cd "$wgpu_attention_lane_dir" && pwd)/$1.skips"
    : >"$WGPU_ATTENTION_SKIP_LOG"
    export WGPU_ATTENTION_REQUIRE="$2"
    echo "== lane $1: $3 (requires: ${2:-nothing})" >&2
}

lane_run() {
    local status
    set +e
    "$@" 2>&1 | tee -a "$wgpu_attention_lane_log"
    status=${PIPESTATUS[0]}
    set -e
    return "$status"
}

wgpu_attention_lane_line() {
    local outcome="$1" passed failed ignored skipped by_cap
    read -r passed failed ignored < <(
        sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' \
            "$wgpu_attention_lane_log" | awk '{p += $1; f += $2; i += $3} END {print p + 0, f + 0, i + 0}'
    )
    # A test counts once per capability, however many of its parts skipped.
    # Skips come from the skip log (native tests), else from `SKIPPED <what>: <reason> [<cap>]`
    # lines in the lane's output (the browser suite logs to its console).
    local tests_caps
    tests_caps="$(
        {
            cat "$WGPU_ATTENTION_SKIP_LOG"
            [ -s "$WGPU_ATTENTION_SKIP_LOG" ] \
                || sed -n 's/.*SKIPPED \([^:]*\): .* \[\([a-z0-9-]*\)\]$/\1\t\2/p' "$wgpu_attention_lane_log"
        } | awk -F'\t' '{sub(/ \(.*$/, "", $1); print $1 "\t" $2}' | sort -u
    )"
    skipped="$(grep -c . <<<"$tests_caps" || true)"
    by_cap="$(cut -f2 <<<"$tests_caps" | grep . | sort | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')"
    printf 'lane %-14s %s: %s passed, %s failed, %s ignored, %s skipped%s; %d s  [%s]\n' \
        "$wgpu_attention_lane" "$outcome" "$passed" "$failed" "$ignored" "$skipped" \
        "${by_cap:+ ($by_cap)}" $((SECONDS - wgpu_attention_lane_start)) "$wgpu_attention_lane_description"
}

lane_end() {
    local line
    line="$(wgpu_attention_lane_line ok)"
    wgpu_attention_lanes+=("$line")
    echo "== $line" >&2
    wgpu_attention_lane=""
    unset WGPU_ATTENTION_REQUIRE WGPU_ATTENTION_SKIP_LOG
}

wgpu_attention_lanes_report() {
    if [ -n "$wgpu_attention_lane" ]; then wgpu_attention_lanes+=("$(wgpu_attention_lane_line FAILED)"); fi
    [ ${#wgpu_attention_lanes[@]} -gt 0 ] || return 0
    echo "== lanes:" >&2
    printf '%s\n' "${wgpu_attention_lanes[@]}" >&2
}

# The test binaries of the current build, so that lanes after the first run them again (on other
# drivers or settings) without building anything:
#   lane_binaries [cargo test args]              lists them (once per script run)
#   lane_tests [VAR=VALUE…] -- NAME[:FILTER]…    runs tests/NAME.rs's binary (only the tests whose
#                                                name contains FILTER, when given) with VAR set,
#                                                one binary per core (WGPU_ATTENTION_LANE_JOBS)
#   lane_run_binaries [VAR=VALUE…] -- PATH…      the same for binaries given by path
wgpu_attention_test_bins=()
lane_binaries() {
    mapfile -t wgpu_attention_test_bins < <(
        # Test harnesses only: the artifact's profile says `test` (a binary target's own `test`
        # flag is true too, and running the CLI without arguments is not a test).
        cargo test --no-run --message-format=json "$@" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        print(m["executable"])' | sort -u
    )
    [ ${#wgpu_attention_test_bins[@]} -gt 0 ] || { echo "no test binaries (cargo test --no-run failed?)" >&2; return 1; }
}

lane_tests() {
    local vars=() bins=() spec name filter bin found
    while [ $# -gt 0 ] && [ "$1" != -- ]; do vars+=("$1"); shift; done
    shift
    for spec in "$@"; do
        name="${spec%%:*}"
        filter=""
        [ "$spec" = "$name" ] || filter="${spec#*:}"
        found=""
        for bin in "${wgpu_attention_test_bins[@]}"; do
            [[ "$(basename "$bin")" == "$name"-* ]] && found="$bin"
        done
        [ -n "$found" ] || { echo "lane $wgpu_attention_lane: no test binary for tests/$name.rs" >&2; return 1; }
        bins+=("$found${filter:+:$filter}")
    done
    lane_run_binaries "${vars[@]}" -- "${bins[@]}"
}

# lane_run_binaries [VAR=VALUE…] -- PATH[:FILTER]…   the test binaries given, one per core
# (`{}` in a VALUE becomes the binary's file name)
# (WGSL pipeline compiles keep a test binary on about one core), each into its own log; the logs
# are appended to the lane's log in the order given, and any failure fails the call at the end.
lane_run_binaries() {
    local vars=() specs=() logs=() i spec bin filter status=0 running=0
    local jobs="${WGPU_ATTENTION_LANE_JOBS:-$(nproc)}"
    while [ $# -gt 0 ] && [ "$1" != -- ]; do vars+=("$1"); shift; done
    shift
    specs=("$@")
    for i in "${!specs[@]}"; do
        spec="${specs[$i]}"
        bin="${spec%%:*}"
        filter=""
        [ "$spec" = "$bin" ] || filter="${spec#*:}"
        logs+=("$wgpu_attention_lane_dir/$wgpu_attention_lane.$i.log")
        echo "== lane $wgpu_attention_lane: $(basename "$bin")${filter:+ (tests matching $filter)}" >&2
        # `{}` in a variable's value stands for the binary's name (a log file per binary).
        (env "${vars[@]//\{\}/$(basename "$bin")}" "$bin" ${filter:+"$filter"} >"${logs[$i]}" 2>&1
            echo "exit $?" >>"${logs[$i]}") &
        running=$((running + 1))
        if [ "$running" -ge "$jobs" ]; then
            wait -n
            running=$((running - 1))
        fi
    done
    wait
    for i in "${!specs[@]}"; do
        tee -a "$wgpu_attention_lane_log" <"${logs[$i]}"
        if [ "$(tail -n 1 "${logs[$i]}")" != "exit 0" ]; then
            echo "== lane $wgpu_attention_lane: $(basename "${specs[$i]%%:*}") FAILED" >&2
            status=1
        fi
        rm -f "${logs[$i]}"
    done
    return "$status"
}
