#!/usr/bin/env bash
# tests/integration/servers_away.sh - PostgreSQL or Kafka away, at start and
# in the middle (issue 7, docs/operations.md "Start-up and outages").
#
# Runs `factord process`, `relay`, `project` and `gateway` against a private
# PostgreSQL and a private Kafka broker of its own (other ports and folders
# than the shared test servers, which it never touches), then:
#   1. both servers away at start: every component waits (alive, CPU low, at
#      most a log line per backoff step), /readyz is not ready;
#   2. both come back: work resumes by itself (a command gets its reply);
#   3. PostgreSQL away in the middle: the same checks, /readyz answers 503,
#      a command sent meanwhile is decided once PostgreSQL is back;
#   4. Kafka away in the middle: the same, and a command after it succeeds;
#   5. SIGTERM: every component exits 0; no sanitizer report in any log.
#
# Usage: servers_away.sh <factord binary> [log dir]
# Environment: FACTORD_AWAY_PG_PORT (default 55499), FACTORD_AWAY_KAFKA_PORT
# (default 29192); the private servers live under ${TMPDIR:-/tmp} and are
# stopped and wiped at exit.
set -uo pipefail

FACTORD=${1:?usage: servers_away.sh <factord binary> [log dir]}
FACTORD=$(cd "$(dirname "$FACTORD")" && pwd)/$(basename "$FACTORD")
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts" && pwd)
TAG=$$
LOGS=${2:-${TMPDIR:-/tmp}/factord-away-logs-$TAG}
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log # a log dir of an earlier run: its reports are not ours
export FACTORD_PG_PORT=${FACTORD_AWAY_PG_PORT:-55499}
export FACTORD_PG_DIR=${TMPDIR:-/tmp}/factord-away-pg-$TAG
export FACTORD_KAFKA_PORT=${FACTORD_AWAY_KAFKA_PORT:-29192}
export FACTORD_KAFKA_DIR=${TMPDIR:-/tmp}/factord-away-kafka-$TAG
export FACTORD_KAFKA_START_TIMEOUT=120
HTTP_PORT=$((FACTORD_KAFKA_PORT + 7))

export FACTORD_DATABASE_URL=postgresql://factord@127.0.0.1:$FACTORD_PG_PORT/factord
export FACTORD_KAFKA_BROKERS=127.0.0.1:$FACTORD_KAFKA_PORT
export FACTORD_CODE_KEY=3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8
export FACTORD_STATE_DIR=$LOGS/state
export FACTORD_HTTP_ADDR=127.0.0.1:$HTTP_PORT
export FACTORD_LOG_LEVEL=info
export FACTORD_TOPIC_PARTITIONS=2
export FACTORD_SESSION_TIMEOUT_MS=6000
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
INSTANCE=away-$TAG
COMPONENTS=(process relay project gateway)
declare -A PID
FAILED=0

say() { printf 'servers_away: %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; FAILED=1; }

pg() { bash "$SCRIPTS/pg.sh" "$@" 2>>"$LOGS/servers.log"; }
kafka() { bash "$SCRIPTS/kafka.sh" "$@" 2>>"$LOGS/servers.log"; }

cleanup() {
    for c in "${COMPONENTS[@]}"; do
        [[ -n "${PID[$c]:-}" ]] && kill -KILL "${PID[$c]}" 2>/dev/null
    done
    kafka stop --wipe >/dev/null
    pg stop --wipe >/dev/null
}
trap cleanup EXIT

ticks() { # utime + stime of a pid, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

readyz() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$FACTORD_HTTP_ADDR/readyz"; }

wait_readyz() { # want timeout_s
    local want=$1 end=$((SECONDS + $2)) got
    while :; do
        got=$(readyz)
        [[ "$got" == "$want" ]] && return 0
        ((SECONDS >= end)) && { fail "/readyz answered $got, wanted $want"; return 1; }
        sleep 1
    done
}

# Every component alive, using little CPU and logging at most a line per
# backoff step over a window of $1 seconds.
check_waiting() {
    local window=$1 what=$2
    declare -A t0 l0
    for c in "${COMPONENTS[@]}"; do
        t0[$c]=$(ticks "${PID[$c]}")
        l0[$c]=$(wc -l <"$LOGS/$c.log")
    done
    sleep "$window"
    local hz; hz=$(getconf CLK_TCK)
    for c in "${COMPONENTS[@]}"; do
        if ! kill -0 "${PID[$c]}" 2>/dev/null; then
            fail "$what: $c exited (see $LOGS/$c.log)"
            continue
        fi
        local cpu=$(( ($(ticks "${PID[$c]}") - t0[$c]) * 1000 / hz ))
        local lines=$(( $(wc -l <"$LOGS/$c.log") - l0[$c] ))
        say "$what: $c alive, ${cpu} ms CPU and $lines log lines in ${window} s"
        # A spinning loop burns the whole window; waiting costs a few percent.
        ((cpu <= window * 100)) || fail "$what: $c used ${cpu} ms CPU in ${window} s (spinning?)"
        # Backoff 100 ms doubling to 5 s: ~9 steps in 20 s, plus librdkafka's
        # own (deduplicated) connection errors.
        ((lines <= window + 10)) || fail "$what: $c wrote $lines log lines in ${window} s (spamming?)"
    done
}

submit() { # user type [payload] -> exit code of factord submit
    local payload=${3:-'{}'}
    "$FACTORD" submit --type "$2" --user "$1" --org org-1 --instance "$INSTANCE" --payload "$payload" \
        --timeout-ms "${SUBMIT_TIMEOUT_MS:-60000}" >>"$LOGS/submit.log" 2>&1
}

import_payload() {
    printf '{"userName":"%s","profile":{"firstName":"Ada","lastName":"Lovelace"},"email":{"email":"ada@example.com"},"phone":{"phone":"+41791234567","isPhoneVerified":true}}' "$1"
}

start_components() {
    for c in "${COMPONENTS[@]}"; do
        "$FACTORD" "$c" >>"$LOGS/$c.log" 2>&1 &
        PID[$c]=$!
    done
}

# --- 0. prepare: schema and topics exist, then both servers go away ------------
say "logs in $LOGS"
pg start || { say "cannot start the private PostgreSQL"; exit 1; }
kafka start || { say "cannot start the private Kafka"; exit 1; }
"$FACTORD" migrate >>"$LOGS/migrate.log" 2>&1 || { say "migrate failed"; exit 1; }
kafka stop >/dev/null
pg stop >/dev/null

# --- 1. both away at start -------------------------------------------------------
start_components
sleep 5
check_waiting 20 "both away at start"
code=$(readyz)
[[ "$code" == 503 ]] || fail "/readyz answered ${code/000/nothing} with both servers away at start, wanted 503"
hz=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$FACTORD_HTTP_ADDR/healthz")
[[ "$hz" == 200 ]] || fail "/healthz answered ${hz/000/nothing} while the gateway waits for Kafka, wanted 200"
say "both away at start: /readyz answers $code, /healthz $hz"

# --- 2. both back: work resumes --------------------------------------------------
pg start || fail "PostgreSQL did not start again"
kafka start || fail "Kafka did not start again"
wait_readyz 200 120
submit u1 ImportHumanUser "$(import_payload u1)" || fail "ImportHumanUser after the servers came back"
submit u1 AddMyAuthFactorOTPSMS || fail "AddMyAuthFactorOTPSMS after the servers came back"
say "both back: work resumed"

# --- 3. PostgreSQL away in the middle -------------------------------------------
submit u2 ImportHumanUser "$(import_payload u2)" || fail "ImportHumanUser before the PostgreSQL outage"
pg stop >/dev/null
wait_readyz 503 30
submit u2 AddMyAuthFactorOTPSMS &
inflight=$!
check_waiting 20 "PostgreSQL away"
pg start || fail "PostgreSQL did not start again"
wait $inflight || fail "the command sent while PostgreSQL was away got no success reply"
wait_readyz 200 60
submit u3 ImportHumanUser "$(import_payload u3)" || fail "ImportHumanUser after the PostgreSQL outage"
say "PostgreSQL back: work resumed"

# --- 4. Kafka away in the middle -------------------------------------------------
kafka stop >/dev/null
wait_readyz 503 30
check_waiting 20 "Kafka away"
kafka start || fail "Kafka did not start again"
wait_readyz 200 120
submit u3 AddMyAuthFactorOTPSMS || fail "AddMyAuthFactorOTPSMS after the Kafka outage"
say "Kafka back: work resumed"

# --- 5. clean stop ---------------------------------------------------------------
for c in "${COMPONENTS[@]}"; do
    kill -TERM "${PID[$c]}" 2>/dev/null
done
for c in "${COMPONENTS[@]}"; do
    wait "${PID[$c]}"
    rc=$?
    PID[$c]=
    ((rc == 0)) || fail "$c exited with $rc after SIGTERM"
done
if grep -l -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer' "$LOGS"/*.log; then
    fail "sanitizer report in a component log (above)"
fi
if ((FAILED)); then
    say "FAILED (logs in $LOGS)"
    exit 1
fi
say "passed"
