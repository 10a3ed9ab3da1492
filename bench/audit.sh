#!/usr/bin/env bash
# bench/audit.sh - events/s of the audit tools over a large log: `factord
# rebuild users`, `factord rebuild auth-factors`, and `factord verify` and
# `factord replay` when the binary has them.
#
# Usage: bench/audit.sh [--events N] [--build-dir DIR]
#   --events N      events to generate (default 1000000)
#   --build-dir DIR CMake build folder (default build; configured and built
#                   when factord or factord_bench_gen is missing or stale)
#
# Starts the local servers (scripts/servers.sh start; left running), makes
# a dedicated database factord_bench_audit (or $FACTORD_BENCH_AUDIT_DB;
# dropped at the end, also on
# failure), migrates it, fills it with bench/gen_events.c (batches written
# through es_store_write: 4-5 events per user), then times each tool and
# prints one line per tool:
#   rebuild users: N events in S s = R events/s
# verify runs three times: "verify full" (no checkpoint yet; it records
# one), then "verify incremental" (its N: the events appended, its mode,
# events and users lines below it),
# after 1 % more events (half new users of another instance, half one
# user.locked each for old users spread over the log), from that
# checkpoint, then "verify --full" over the grown log.
# Tools' own output goes to $BUILD_DIR/bench-audit-*.log.
set -euo pipefail

die() { printf 'audit.sh: error: %s\n' "$*" >&2; exit 1; }

EVENTS=1000000
BUILD_DIR=build
while [[ $# -gt 0 ]]; do
    case "$1" in
        --events) [[ $# -ge 2 ]] || die "--events needs a number"; EVENTS=$2; shift 2 ;;
        --build-dir) [[ $# -ge 2 ]] || die "--build-dir needs a folder"; BUILD_DIR=$2; shift 2 ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done
[[ $EVENTS =~ ^[0-9]+$ && $EVENTS -gt 0 ]] || die "--events takes a positive number"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
eval "$(scripts/servers.sh start)"
[[ -n ${FACTORD_DATABASE_URL:-} ]] || die "scripts/servers.sh gave no FACTORD_DATABASE_URL"

if [[ ! -f $BUILD_DIR/CMakeCache.txt ]]; then
    cmake -S . -B "$BUILD_DIR" >/dev/null
fi
cmake --build "$BUILD_DIR" -j2 --target factord factord_bench_gen >/dev/null
BIN=$BUILD_DIR/factord
GEN=$BUILD_DIR/factord_bench_gen

# FACTORD_BENCH_AUDIT_DB names another database, for two runs side by side.
DB=${FACTORD_BENCH_AUDIT_DB:-factord_bench_audit}
[[ $DB =~ ^[a-z_][a-z0-9_]*$ ]] || die "FACTORD_BENCH_AUDIT_DB: a lowercase identifier, please"
ADMIN_URL=$FACTORD_DATABASE_URL
BENCH_URL=${FACTORD_DATABASE_URL%/*}/$DB
[[ $BENCH_URL == postgres*://* ]] || die "FACTORD_DATABASE_URL must be a postgresql:// URI here"
psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    [[ -z ${FACTORD_STATE_DIR:-} ]] || rm -rf "$FACTORD_STATE_DIR"
}
trap cleanup EXIT
psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null

export FACTORD_DATABASE_URL=$BENCH_URL
export FACTORD_LOG_LEVEL=warn
# The generator chains the log with the public key (no FACTORD_CHAIN_KEY):
# verify must use it too, not a development key that `factord run` left in
# ./.factord (it would find the first hash wrong).
unset FACTORD_CHAIN_KEY FACTORD_CHAIN_KEY_FILE
FACTORD_STATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/factord-audit-state.XXXXXX")
export FACTORD_STATE_DIR
"$BIN" migrate >/dev/null 2>&1 || die "factord migrate failed"
printf 'generating %s events ... ' "$EVENTS" >&2
"$GEN" --events "$EVENTS" >&2
N=$(psql "$BENCH_URL" -X -A -t -c "SELECT count(*) FROM factord.events")

now() { date +%s.%N; }
# time_tool NAME COMMAND...: run it, print "NAME: N events in S s = R events/s"
# (N: $COUNT when set, else the log's size).
time_tool() {
    local name=$1; shift
    local n=${COUNT:-$N}
    local log=$BUILD_DIR/bench-audit-${name// /-}.log
    local t0 t1 rc=0
    t0=$(now)
    "$@" >"$log" 2>&1 || rc=$?
    t1=$(now)
    if [[ $rc -ne 0 ]]; then
        printf '%s: failed (exit %s), see %s\n' "$name" "$rc" "$log"
        return 0
    fi
    awk -v n="$n" -v a="$t0" -v b="$t1" -v name="$name" \
        'BEGIN { s = b - a; printf "%s: %d events in %.2f s = %.0f events/s\n", name, n, s, n / s }'
}
has_tool() { "$BIN" "$1" --help >/dev/null 2>&1; }

time_tool "rebuild users" "$BIN" rebuild users
time_tool "rebuild auth-factors" "$BIN" rebuild auth-factors
if has_tool verify && "$BIN" verify --help | grep -q -- --full; then
    time_tool "verify full" "$BIN" verify
    MORE=$(( N / 100 > 2 ? N / 100 : 2 ))
    LOCK=$(( MORE / 2 ))
    USERS=$(psql "$BENCH_URL" -X -A -t -c "SELECT count(*) FROM factord.users")
    printf 'appending %s events (%s of new users, %s for old ones) ... ' "$MORE" "$(( MORE - LOCK ))" "$LOCK" >&2
    "$GEN" --events "$(( MORE - LOCK ))" --instance bench-more >&2
    "$GEN" --lock-existing "$LOCK" --step "$(( USERS / LOCK > 0 ? USERS / LOCK : 1 ))" >&2
    N0=$N
    N=$(psql "$BENCH_URL" -X -A -t -c "SELECT count(*) FROM factord.events")
    COUNT=$(( N - N0 )) time_tool "verify incremental" "$BIN" verify
    grep -E '^(mode|events|users) ' "$BUILD_DIR/bench-audit-verify-incremental.log" | sed 's/^/    /'
    time_tool "verify --full" "$BIN" verify --full
elif has_tool verify; then
    time_tool "verify" "$BIN" verify
else
    echo "verify: skipped (this factord has no verify command yet)"
fi
if has_tool replay; then
    # replay writes the log to stdout: time it into /dev/null.
    time_tool "replay" sh -c '"$0" replay > /dev/null' "$BIN"
else
    echo "replay: skipped (this factord has no replay command yet)"
fi
