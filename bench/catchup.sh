#!/usr/bin/env bash
# bench/catchup.sh - how fast a restarted read-model projector catches up.
#
# Starts the local servers (scripts/servers.sh start), builds factord when
# the binary is missing, and works in a database and topics of its own
# (bench_<tag>, bench.<tag>.*). It loads about 100,000 events onto the events
# topic the way production does: ImportHumanUser (verified phone: 2 events)
# and AddMyAuthFactorOTPSMS (1 event) commands for N/3 users, produced with
# kcat from a generated file and decided by `factord process`, published by
# `factord relay`. Then it stops those and starts `factord project` on a
# fresh consumer group, which has the whole topic to catch up on (read-model
# rows, the applied-sequence rows, and a success reply for each of the 2N/3
# commands), and times it until every event is applied: the sum of the
# users' applied sequences equals the number of events in the log. Prints
#   catch-up: N events in S s = R events/s
# (S counts from the projector's start, group join included; the join time
# is printed too). Progress goes to stderr.
#
# Usage: bench/catchup.sh
# Environment: FACTORD_BENCH_EVENTS (default 100000), FACTORD_BENCH_BUILD
# (build folder, default build/), FACTORD_PROJECTOR_BATCH_MAX and the other FACTORD_*
# settings apply to the components. The bench database is dropped at the
# end (FACTORD_BENCH_KEEP=1 keeps it); its topics stay on the broker.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${FACTORD_BENCH_BUILD:-$ROOT/build}
EVENTS=${FACTORD_BENCH_EVENTS:-100000}
BENCH_NAME=catchup.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

command -v kcat >/dev/null || die "kcat is missing (scripts/deps.sh installs it)"
command -v psql >/dev/null || die "psql is missing (scripts/deps.sh installs it)"
eval "$(bash "$ROOT/scripts/servers.sh" start)"
if [[ ! -x $BUILD/factord ]]; then
    say "building factord in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target factord >/dev/null
fi
FACTORD=$BUILD/factord

# --- a database, topics and groups of our own ------------------------------
tag=$(openssl rand -hex 4)
db=bench_$tag
admin_url=$FACTORD_DATABASE_URL
bench_url=$(bench_db_url "$admin_url" "$db")
work=$(mktemp -d "${TMPDIR:-/tmp}/factord-catchup.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    drop_or_keep
}
trap cleanup EXIT
trap 'exit 130' INT TERM

psql -q "$admin_url" -c "CREATE DATABASE $db" >/dev/null
export FACTORD_DATABASE_URL=$bench_url
export FACTORD_COMMANDS_TOPIC=bench.$tag.commands FACTORD_EVENTS_TOPIC=bench.$tag.events
export FACTORD_REPLIES_TOPIC=bench.$tag.replies FACTORD_DLQ_TOPIC=bench.$tag.dlq
export FACTORD_PROCESSOR_GROUP=bench.$tag.processor FACTORD_PROJECTOR_GROUP=bench.$tag.projector
export FACTORD_CODE_KEY=${FACTORD_CODE_KEY:-$(openssl rand -hex 32)}
export FACTORD_SESSION_TIMEOUT_MS=${FACTORD_SESSION_TIMEOUT_MS:-6000}
export FACTORD_LOG_LEVEL=${FACTORD_LOG_LEVEL:-warn}
"$FACTORD" migrate 2>>"$work/migrate.log" || die "migrate failed: $(tail -3 "$work/migrate.log")"
# shellcheck source=bench/catchup-lib.sh
source "$ROOT/bench/catchup-lib.sh"

# --- load ---------------------------------------------------------------------
users=$(( (EVENTS + 2) / 3 ))
total=$(( users * 3 ))
say "generating $((users * 2)) commands for $users users ($total events) in $work"
awk -v n="$users" -v tag="$tag" -v inst="bench-$tag" 'BEGIN {
    for (i = 1; i <= n; i++) {
        u = "user-" i
        printf "%s\t{\"id\":\"%s-%04x-4000-8000-%012x\",\"type\":\"ImportHumanUser\",\"instanceId\":\"%s\",\"userId\":\"%s\",\"resourceOwner\":\"org-bench\",\"payload\":{\"userName\":\"%s\",\"profile\":{\"firstName\":\"Ada\",\"lastName\":\"Lovelace\"},\"email\":{\"email\":\"ada@example.com\",\"isEmailVerified\":true},\"phone\":{\"phone\":\"+41791234567\",\"isPhoneVerified\":true}}}\n", u, tag, 1, i, inst, u, u
        printf "%s\t{\"id\":\"%s-%04x-4000-8000-%012x\",\"type\":\"AddMyAuthFactorOTPSMS\",\"instanceId\":\"%s\",\"userId\":\"%s\",\"resourceOwner\":\"org-bench\",\"payload\":{}}\n", u, tag, 2, i, inst, u
    }
}' >"$work/commands.tsv"

"$FACTORD" process 2>>"$work/process.log" & pids+=($!)
"$FACTORD" relay 2>>"$work/relay.log" & pids+=($!)
load_start=$(now)
say "producing the commands with kcat"
kcat -b "$FACTORD_KAFKA_BROKERS" -t "$FACTORD_COMMANDS_TOPIC" -P -K $'\t' -z lz4 -l "$work/commands.tsv"
deadline=$(( $(date +%s) + 600 ))
while :; do
    committed=$(sql "SELECT count(*) FROM factord.events")
    published=$(sql "SELECT coalesce((SELECT position FROM factord.checkpoints WHERE name = 'relay'), 0)")
    head=$(sql "SELECT coalesce(max(position), 0) FROM factord.events")
    say "loading: $committed/$total events committed, published up to position $published/$head"
    [[ $committed -ge $total && $published -ge $head ]] && break
    (( $(date +%s) < deadline )) || die "loading did not finish within 10 minutes (logs in $work)"
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || die "a component stopped: $(tail -3 "$work"/*.log)"; done
    sleep 2
done
load_s=$(awk -v a="$load_start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
say "loaded $total events onto $FACTORD_EVENTS_TOPIC in $load_s s; stopping process and relay"
for pid in "${pids[@]}"; do kill -TERM "$pid"; wait "$pid" || true; done
pids=()

# --- catch up -----------------------------------------------------------------
say "starting factord project on the fresh group $FACTORD_PROJECTOR_GROUP"
targets=$(catchup_targets "$FACTORD_KAFKA_BROKERS" "$FACTORD_EVENTS_TOPIC")
start=$(now)
"$FACTORD" project 2>>"$work/project.log" & pids+=($!)
first=
deadline=$(( $(date +%s) + 600 ))
last_say=$(date +%s)
while :; do
    read -r any_applied done < <(catchup_state "$targets")
    t=$(now)
    [[ -z $first && $any_applied == t ]] && first=$t
    [[ $done == t ]] && break
    if (( $(date +%s) - last_say >= 2 )); then
        say "catching up: $(catchup_applied)/$total events applied"
        last_say=$(date +%s)
    fi
    (( $(date +%s) < deadline )) || die "catch-up did not finish within 10 minutes (logs in $work)"
    kill -0 "${pids[0]}" 2>/dev/null || die "the projector stopped: $(tail -3 "$work/project.log")"
    sleep 0.1
done
applied=$(catchup_applied)
[[ $applied -eq $total ]] || die "caught up, but $applied of $total events applied"
factors=$(sql "SELECT count(*) FROM factord.auth_factors")
[[ $factors -eq $users ]] || die "expected $users factor rows, found $factors"
join_s=$(awk -v a="$start" -v b="$first" 'BEGIN { printf "%.2f", b - a }')
awk -v n="$total" -v a="$start" -v b="$t" -v j="$join_s" -v f="$first" 'BEGIN {
    s = b - a
    printf "catch-up: %d events in %.2f s = %.0f events/s\n", n, s, n / s
    printf "(group join and first batch: %s s; applying alone: %.0f events/s)\n", j, n / (b - f)
}'
