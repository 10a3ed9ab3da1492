# tests/integration/lib.sh - what the shell integration tests share
# (metrics.sh, pg_tls.sh, kafka_secure.sh): checks that count failures
# instead of stopping, waiting for a condition, a free port, and the end
# (a sanitizer report in any log fails the test; the summary; the exit
# code). Sourced, never run; the caller then calls test_begin.
# shellcheck shell=bash

failures=0

# test_begin NAME TAG LOGPREFIX BINARY [LOGDIR]: what every shell test
# starts with. Sets TEST_NAME; FACTORD, the binary's absolute path; SCRIPTS,
# the repository's scripts/ folder; TAG, this run's tag for names; LOGS,
# LOGDIR or $TMPDIR/factord-LOGPREFIX-TAG, made and emptied.
test_begin() {
    TEST_NAME=$1 TAG=$2
    [[ -n ${4:-} ]] || { echo "usage: $1 <factord binary> [log dir]" >&2; exit 1; }
    FACTORD=$(cd "$(dirname "$4")" && pwd)/$(basename "$4")
    SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts" && pwd)
    LOGS=${5:-${TMPDIR:-/tmp}/factord-$3-$TAG}
    mkdir -p "$LOGS"
    rm -rf "${LOGS:?}"/*
}
pass() { printf '%s: ok   %s\n' "$TEST_NAME" "$*"; }
fail() { printf '%s: FAIL %s\n' "$TEST_NAME" "$*" >&2; failures=$((failures + 1)); }
# check <description> <command...>: runs the command (keep its output
# redirections inside it), ok when it succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
# wait_for <seconds> <command...>: until the command succeeds, or false.
wait_for() { local end=$((SECONDS + $1)); shift; until "$@"; do ((SECONDS < end)) || return 1; sleep 0.5; done; }
# A TCP port on 127.0.0.1 that nobody holds right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# SIGTERM to every component in the caller's PID array (name -> pid); each
# must exit 0. The array is emptied.
stop_components() {
    local c rc
    for c in "${!PID[@]}"; do kill -TERM "${PID[$c]}" 2>/dev/null; done
    for c in "${!PID[@]}"; do
        wait "${PID[$c]}"
        rc=$?
        check "$c exits 0 on SIGTERM (got $rc)" test "$rc" = 0
        unset "PID[$c]"
    done
}

# The sanitizer scan, the summary and the exit code.
finish() {
    local reports
    reports=$(grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$LOGS"/*.log 2>/dev/null | tr '\n' ' ')
    [[ -z $reports ]] || fail "a sanitizer report in $reports"
    if ((failures)); then
        echo "$TEST_NAME: $failures check(s) failed; logs in $LOGS" >&2
        exit 1
    fi
    echo "$TEST_NAME: all checks passed"
    exit 0
}
