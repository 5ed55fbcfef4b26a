# Shared by loadtest/durability.sh and loadtest/every-scenario.sh (sourced):
# starting gateway variants, checking their ports, and running one scenario.
# The caller sets `state` (a directory), `secs` and `rounds`.

lt=./target/release/sluice-loadtest
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

# Refuses to start over an earlier run's gateways (they would be measured).
ports_free() {
    for p in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo ":$p is taken (an earlier run still up?): stop it first" >&2
            exit 1
        fi
    done
}

listening() {
    for p in "$@"; do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null \
            || { echo "nothing listens on :$p (see $state/*.log)" >&2; exit 1; }
    done
}

# gateway NAME CONFIG: a Sluice in its own session, its log in $state/NAME.log.
gateway() {
    API_TOKEN="Bearer upstream-key" setsid ./target/release/sluice serve --config "$2" \
        </dev/null >"$state/$1.log" 2>&1 &
    pids+=($!)
}

# run SCENARIO ARGS...: the table, or what went wrong.
run() {
    if ! "$lt" "$@" --duration "${secs}s" --rounds "$rounds" >"$state/out" 2>"$state/err"; then
        cat "$state/out" "$state/err" >&2
        exit 1
    fi
    sed -n '/^endpoint/,$p' "$state/out"
}
