#!/usr/bin/env bash
# bench/rejoin.sh - how long a SIGKILLed processor that is restarted at once
# keeps its partitions waiting, with dynamic group membership (the default)
# and with static membership (FACTORD_GROUP_INSTANCE_ID), in one run
# (docs/ha.md).
#
# Starts the local servers (scripts/servers.sh start), builds factord when
# the binary is missing, and for each mode works in a database and topics
# of its own (bench_<tag>, bench.<tag>.*): one `factord process`, a steady
# load of ImportHumanUser commands (FACTORD_BENCH_RATE per second, produced
# with kcat every 100 ms), a SIGKILL of the processor after 8 s, its restart
# 1 s later, and 20 s more load. From factord.commands it prints, per mode,
#   <mode>: no decision for S s after the kill (restart after 1 s; the
#           longest gap between two decisions: G s)
# The session timeout is FACTORD_SESSION_TIMEOUT_MS (default here 10000).
#
# Usage: bench/rejoin.sh
# Environment: FACTORD_BENCH_RATE (default 300), FACTORD_BENCH_BUILD (build
# folder, default build/), FACTORD_BENCH_KEEP=1 keeps the databases.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${FACTORD_BENCH_BUILD:-$ROOT/build}
RATE=${FACTORD_BENCH_RATE:-300}
say() { printf 'rejoin.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

command -v kcat >/dev/null || die "kcat is missing (scripts/deps.sh installs it)"
eval "$(bash "$ROOT/scripts/servers.sh" start)"
if [[ ! -x $BUILD/factord ]]; then
    say "building factord in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target factord >/dev/null
fi
FACTORD=$BUILD/factord
ADMIN_URL=$FACTORD_DATABASE_URL
export FACTORD_CODE_KEY=${FACTORD_CODE_KEY:-$(openssl rand -hex 32)}
export FACTORD_SESSION_TIMEOUT_MS=${FACTORD_SESSION_TIMEOUT_MS:-10000}
export FACTORD_LOG_LEVEL=${FACTORD_LOG_LEVEL:-warn}
work=$(mktemp -d "${TMPDIR:-/tmp}/factord-rejoin.XXXXXX")
dbs=() proc=
cleanup() {
    [[ -n $proc ]] && kill -KILL "$proc" 2>/dev/null
    if [[ ${FACTORD_BENCH_KEEP:-0} != 1 ]]; then
        for db in "${dbs[@]}"; do
            psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
        done
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Produce RATE commands a second for $1 seconds, numbering users from $2.
load() {
    local secs=$1 next=$2 per=$((RATE / 10)) i t
    for ((t = 0; t < secs * 10; t++)); do
        for ((i = 0; i < per; i++, next++)); do
            printf 'u%d\t{"id":"%s","type":"ImportHumanUser","instanceId":"bench","userId":"u%d","resourceOwner":"org","payload":{"userName":"u%d","profile":{"firstName":"A","lastName":"L"},"email":{"email":"a@example.com"}}}\n' \
                "$next" "$(cat /proc/sys/kernel/random/uuid)" "$next" "$next"
        done | kcat -b "$FACTORD_KAFKA_BROKERS" -t "$FACTORD_COMMANDS_TOPIC" -P -K $'\t' 2>>"$work/kcat.log"
        sleep 0.1
    done
}

run_mode() { # mode (dynamic|static)
    local mode=$1 tag db url
    tag=$(openssl rand -hex 4)
    db=bench_$tag
    dbs+=("$db")
    psql -q "$ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
    url="${ADMIN_URL%/*}/$db"
    export FACTORD_DATABASE_URL=$url
    export FACTORD_COMMANDS_TOPIC=bench.$tag.commands FACTORD_EVENTS_TOPIC=bench.$tag.events
    export FACTORD_REPLIES_TOPIC=bench.$tag.replies FACTORD_DLQ_TOPIC=bench.$tag.dlq
    export FACTORD_PROCESSOR_GROUP=bench.$tag.processor
    if [[ $mode == static ]]; then export FACTORD_GROUP_INSTANCE_ID=process-1; else unset FACTORD_GROUP_INSTANCE_ID; fi
    "$FACTORD" migrate 2>>"$work/migrate.log" || die "migrate failed"
    "$FACTORD" process 2>>"$work/process-$mode.log" &
    proc=$!
    load 8 0 &
    local loader=$!
    sleep 8
    local kill_ms
    kill_ms=$(now_ms)
    kill -KILL "$proc"; wait "$proc" 2>/dev/null || true
    say "$mode: SIGKILLed the processor; restarting it in 1 s"
    sleep 1
    "$FACTORD" process 2>>"$work/process-$mode.log" &
    proc=$!
    wait "$loader"
    load 20 $((RATE * 8)) || true
    sleep 5
    kill -TERM "$proc"; wait "$proc" 2>/dev/null || true
    proc=
    psql -qAtX "$url" -F ' ' -c "
        WITH d AS (SELECT (extract(epoch FROM decided_at) * 1000)::bigint AS t FROM factord.commands),
             g AS (SELECT t - lag(t) OVER (ORDER BY t) AS gap FROM d)
        SELECT round(((SELECT min(t) FROM d WHERE t > $kill_ms) - $kill_ms) / 1000.0, 1),
               round((SELECT max(gap) FROM g) / 1000.0, 1), (SELECT count(*) FROM d)"
}

read -r dyn_wait dyn_gap dyn_n <<<"$(run_mode dynamic)"
read -r st_wait st_gap st_n <<<"$(run_mode static)"
printf 'processor SIGKILLed and restarted after 1 s, %d commands/s, session timeout %d ms:\n' "$RATE" \
    "$FACTORD_SESSION_TIMEOUT_MS"
printf '  dynamic membership: no decision for %s s after the kill (longest gap %s s; %s commands)\n' \
    "$dyn_wait" "$dyn_gap" "$dyn_n"
printf '  static membership:  no decision for %s s after the kill (longest gap %s s; %s commands)\n' \
    "$st_wait" "$st_gap" "$st_n"
