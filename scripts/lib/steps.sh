# Named, timed steps for the scripts CI runs (sourced; sets no shell options).
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
    {
        echo "== steps (wall time):"
        printf '%s\n' "${wgpu_attention_steps[@]}"
        printf '%6d s  total\n' "$SECONDS"
        if [ "$status" != 0 ]; then echo "== FAILED STEP: ${failed:-(before the first step)} (exit $status)"; fi
    } >&2
}
trap wgpu_attention_steps_report EXIT
