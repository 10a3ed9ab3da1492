#!/usr/bin/env bash
# scripts/chaos.sh - the chaos soak (docs/chaos.md): factord's components as
# separate processes (two `factord process` in one group, `factord relay`,
# `factord project`) on a PostgreSQL and a Kafka broker of the soak's own,
# under a steady load of commands (tests/chaos/gen.c: every command type,
# racing pairs, repeated and reused command ids, malformed records), while
# it SIGKILLs and restarts a random component every few seconds, SIGKILLs
# and restarts the broker once and stops PostgreSQL once with an immediate
# shutdown. Then it lets everything settle, reads the topics back and checks,
# printing each figure: one stored outcome per command, malformed records on
# the dead-letter topic, a reply for every command (copies identical), no
# gap in any user's sequence, the events topic equal to the log, the read
# model equal to a fold of the log, nothing lost or duplicated, and how long
# the pipeline took to move again after each kill. Exit 1 when a check
# fails, 2 on usage errors.
#
# With --ha it runs on replicated servers instead (docs/ha.md): a 3-node
# Kafka cluster (scripts/kafka-cluster.sh: RF 3, min.insync.replicas 2) and
# a PostgreSQL primary with a synchronous standby under pg_auto_failover
# (scripts/pg-ha.sh; factord reaches it through a multi-host URL with
# target_session_attrs=read-write). Nothing restarts a factord component:
# it SIGKILLs the broker leading a commands partition, later the PostgreSQL
# primary (the HA manager promotes the standby), later starts the killed
# broker again, and then checks as above, plus that every component is
# still running and how long each fault kept callers waiting.
#
# Usage: scripts/chaos.sh [--short] [--ha] [--commands N] [--users U]
#                         [--instances I] [--seed S] [--rate R] [--keep]
#   --short       the CI run: 10,000 commands, 1,000 users, 200/s
#                 (with --ha: 6,000 commands, 500 users, 100/s)
#   --ha          replicated servers, server faults only (above)
#   (default)     100,000 commands, 10,000 users, 3 instances, 500/s
#   --rate R      commands produced per second
#   --keep        leave the servers running and keep the work folder
#
# Its servers never are the shared ones: PostgreSQL on FACTORD_CHAOS_PG_PORT
# (55442) in FACTORD_CHAOS_PG_DIR (/tmp/factord-chaos-pg), Kafka on
# FACTORD_CHAOS_KAFKA_PORT (19192, controller +1) in FACTORD_CHAOS_KAFKA_DIR
# (/tmp/factord-chaos-kafka); both are wiped before and after the run.
# FACTORD_CHAOS_BUILD: build folder with factord and factord-chaos-gen
# (default build/; built when missing). FACTORD_CHAOS_WORK: work folder
# (logs, manifest, topic dumps; default a fresh /tmp/factord-chaos.XXXXXX,
# removed after a passing run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'chaos.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; }

COMMANDS=100000 USERS=10000 INSTANCES=3 RATE=500 SEED=$(( (RANDOM << 15) | RANDOM )) KEEP=0
KILL_MIN=2 KILL_MAX=5 SETTLE_S=300 HA=0 SHORT=0
for a in "$@"; do [[ $a == --ha ]] && HA=1; done
while [[ $# -gt 0 ]]; do
    case "$1" in
        --short) SHORT=1
                 if ((HA)); then COMMANDS=6000 USERS=500 RATE=100 KILL_MIN=2 KILL_MAX=3 SETTLE_S=150
                 else COMMANDS=10000 USERS=1000 RATE=200 KILL_MIN=3 KILL_MAX=6 SETTLE_S=150; fi ;;
        --ha) ;;
        --commands) COMMANDS=${2:?}; shift ;;
        --users) USERS=${2:?}; shift ;;
        --instances) INSTANCES=${2:?}; shift ;;
        --seed) SEED=${2:?}; shift ;;
        --rate) RATE=${2:?}; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown argument '$1'" ;;
    esac
    shift
done
for v in COMMANDS USERS INSTANCES SEED RATE; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || die "--${v,,} must be a positive number"
done
((INSTANCES <= USERS)) || die "--instances must not exceed --users"

# --- our own servers, never the shared ones ------------------------------------
export FACTORD_PG_PORT=${FACTORD_CHAOS_PG_PORT:-55442}
export FACTORD_PG_DIR=${FACTORD_CHAOS_PG_DIR:-/tmp/factord-chaos-pg}
export FACTORD_KAFKA_PORT=${FACTORD_CHAOS_KAFKA_PORT:-19192}
export FACTORD_KAFKA_DIR=${FACTORD_CHAOS_KAFKA_DIR:-/tmp/factord-chaos-kafka}
[[ $FACTORD_PG_PORT != 55432 && $FACTORD_KAFKA_PORT != 19092 && $FACTORD_KAFKA_PORT != 19091 ]] \
    || die "the soak restarts its servers: it must not use the shared ports 55432/19092"
[[ $FACTORD_PG_DIR != "${TMPDIR:-/tmp}/factord-pg" && $FACTORD_KAFKA_DIR != "${TMPDIR:-/tmp}/factord-kafka" ]] \
    || die "the soak wipes its servers' folders: it must not use the shared ones"
# --ha: the cluster's six ports below Linux's ephemeral range (32768-60999),
# so that no outgoing connection holds one when a node starts.
export FACTORD_KAFKA_CLUSTER_PORT=${FACTORD_CHAOS_KAFKA_CLUSTER_PORT:-29292}
export FACTORD_KAFKA_CLUSTER_DIR=${FACTORD_CHAOS_KAFKA_CLUSTER_DIR:-/tmp/factord-chaos-kafka-cluster}
export FACTORD_PG_HA_PORT=${FACTORD_CHAOS_PG_HA_PORT:-55610}
export FACTORD_PG_HA_DIR=${FACTORD_CHAOS_PG_HA_DIR:-/tmp/factord-chaos-pg-ha}
# A dead primary is declared dead after about 5 s instead of 20-30 s.
export FACTORD_PG_HA_FAST=${FACTORD_PG_HA_FAST:-1}
PG_BIN=${FACTORD_PG_BIN:-/usr/lib/postgresql/15/bin}
for t in kcat psql openssl; do command -v "$t" >/dev/null || die "$t is missing (scripts/deps.sh installs it)"; done

BUILD=${FACTORD_CHAOS_BUILD:-$ROOT/build}
FACTORD=$BUILD/factord
GEN=$BUILD/factord-chaos-gen
if [[ ! -x $FACTORD || ! -x $GEN ]]; then
    say "building factord and factord-chaos-gen in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build "$BUILD" -j "$(nproc)" --target factord factord-chaos-gen >/dev/null
fi
if [[ -n ${FACTORD_CHAOS_WORK:-} ]]; then
    WORK=$FACTORD_CHAOS_WORK
    mkdir -p "$WORK"
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/factord-chaos.XXXXXX")
fi

now_ms() { date +%s%3N; }
as_pg() { if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
rand_ms() { echo $(( $1 + RANDOM % ($2 - $1 + 1) )); } # uniform in [$1, $2]
sleep_ms() { sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }

stop_servers() {
    if ((HA)); then
        bash "$ROOT/scripts/kafka-cluster.sh" stop --wipe >/dev/null 2>&1
        bash "$ROOT/scripts/pg-ha.sh" stop --wipe >/dev/null 2>&1
    else
        bash "$ROOT/scripts/kafka.sh" stop --wipe >/dev/null 2>&1
        bash "$ROOT/scripts/pg.sh" stop --wipe >/dev/null 2>&1
    fi
}

declare -A PID=()
GEN_PID=
passed=0
cleanup() {
    set +e
    [[ -n $GEN_PID ]] && kill -TERM "$GEN_PID" 2>/dev/null
    for c in "${!PID[@]}"; do kill -KILL "${PID[$c]}" 2>/dev/null; done
    wait 2>/dev/null
    if [[ $KEEP == 1 ]]; then
        say "kept the servers (PostgreSQL :$FACTORD_PG_PORT, Kafka :$FACTORD_KAFKA_PORT) and $WORK"
    else
        stop_servers
        if [[ $passed == 1 && -z ${FACTORD_CHAOS_WORK:-} ]]; then rm -rf "$WORK"; else say "logs in $WORK"; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RANDOM=$SEED
say "seed $SEED: $COMMANDS commands, $USERS users, $INSTANCES instances, $RATE/s; work folder $WORK"
stop_servers || true
if ((HA)); then
    t0=$(now_ms)
    bash "$ROOT/scripts/pg-ha.sh" start
    bash "$ROOT/scripts/kafka-cluster.sh" start
    eval "$(bash "$ROOT/scripts/pg-ha.sh" env)"
    eval "$(bash "$ROOT/scripts/kafka-cluster.sh" env)"
    DB_URL=$FACTORD_DATABASE_URL
    say "replicated servers up in $(( ($(now_ms) - t0) / 1000 )) s: PostgreSQL $DB_URL, Kafka $FACTORD_KAFKA_BROKERS"
else
    bash "$ROOT/scripts/pg.sh" start
    bash "$ROOT/scripts/kafka.sh" start
    DB_URL=$(bash "$ROOT/scripts/pg.sh" url)
    export FACTORD_DATABASE_URL=$DB_URL FACTORD_KAFKA_BROKERS=127.0.0.1:$FACTORD_KAFKA_PORT
fi
export FACTORD_CODE_KEY=${FACTORD_CODE_KEY:-$(openssl rand -hex 32)}
export FACTORD_SESSION_TIMEOUT_MS=${FACTORD_SESSION_TIMEOUT_MS:-6000}
export FACTORD_LOG_LEVEL=${FACTORD_LOG_LEVEL:-info}
unset FACTORD_FAILPOINT
sql() { psql -qAtX -v ON_ERROR_STOP=1 "$DB_URL" -c "$1"; }
"$FACTORD" migrate 2>>"$WORK/migrate.log" || die "migrate failed: $(tail -3 "$WORK/migrate.log")"

# --- components, kills and restarts -----------------------------------------------
COMPONENTS=(process-1 process-2 relay project)
: >"$WORK/kills.tsv"
note() { printf '%s\t%s\t%s\n' "$(now_ms)" "$1" "$2" >>"$WORK/kills.tsv"; } # what target
start_component() {
    local c=$1
    printf '{"chaos":"start %s at %s"}\n' "$c" "$(date -u +%FT%T.%3NZ)" >>"$WORK/$c.log"
    "$FACTORD" "${c%-[0-9]}" >>"$WORK/$c.log" 2>&1 &
    PID[$c]=$!
}
unexpected=0
# A component that exited without being killed by us is a finding.
check_alive() {
    local c rc
    for c in "${COMPONENTS[@]}"; do
        if ! kill -0 "${PID[$c]}" 2>/dev/null; then
            rc=0; wait "${PID[$c]}" || rc=$?
            say "FINDING: $c exited by itself (status $rc); restarting it (log: $WORK/$c.log)"
            note died "$c"
            unexpected=$((unexpected + 1))
            start_component "$c"
        fi
    done
}
kill_component() {
    local c=$1
    kill -KILL "${PID[$c]}" 2>/dev/null || true
    note kill "$c"
    wait "${PID[$c]}" 2>/dev/null || true
    sleep_ms "$(rand_ms 200 1500)"
    start_component "$c"
    note restart "$c"
}
# The servers come back in the background: component kills go on meanwhile.
SERVER_JOBS=()
restart_broker() {
    local pid
    pid=$(tr -dc 0-9 <"$FACTORD_KAFKA_DIR/kafka.pid")
    say "SIGKILL the Kafka broker (pid $pid)"
    kill -KILL "$pid"
    note kill broker
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    local pause
    pause=$(rand_ms 1000 3000)
    (
        sleep_ms "$pause"
        bash "$ROOT/scripts/kafka.sh" start 2>>"$WORK/servers.log" || { say "the broker did not come back"; exit 1; }
        note restart broker
        say "the broker is back"
    ) &
    SERVER_JOBS+=($!)
}
restart_pg() {
    say "PostgreSQL: immediate shutdown"
    as_pg "$PG_BIN/pg_ctl" stop -D "$FACTORD_PG_DIR/data" -m immediate -w >/dev/null
    note kill postgres
    local pause
    pause=$(rand_ms 1000 3000)
    (
        sleep_ms "$pause"
        bash "$ROOT/scripts/pg.sh" start 2>>"$WORK/servers.log" || { say "PostgreSQL did not come back"; exit 1; }
        note restart postgres
        say "PostgreSQL is back"
    ) &
    SERVER_JOBS+=($!)
}

# --ha: the broker leading commands partition 0 dies; the HA manager
# promotes the standby after the primary's death; the broker comes back.
KILLED_NODE= OLD_PRIMARY=
kill_leader() {
    KILLED_NODE=$(bash "$ROOT/scripts/kafka-cluster.sh" leader factord.commands 0)
    say "SIGKILL Kafka node $KILLED_NODE (leader of factord.commands [0])"
    bash "$ROOT/scripts/kafka-cluster.sh" kill "$KILLED_NODE" 2>>"$WORK/servers.log"
    note kill broker-leader # once it is gone: commands sent before it still had it
}
kill_primary() {
    OLD_PRIMARY=$(bash "$ROOT/scripts/pg-ha.sh" primary)
    say "SIGKILL the PostgreSQL primary (port $OLD_PRIMARY)"
    bash "$ROOT/scripts/pg-ha.sh" kill-primary >/dev/null 2>>"$WORK/servers.log"
    note kill pg-primary
    (
        bash "$ROOT/scripts/pg-ha.sh" wait-failover "$OLD_PRIMARY" 120 >>"$WORK/servers.log" 2>&1 \
            || { say "no failover"; exit 1; }
        note promoted pg-standby
        say "the standby is the primary"
    ) &
    SERVER_JOBS+=($!)
}
restart_node() {
    say "starting Kafka node $KILLED_NODE again"
    (
        bash "$ROOT/scripts/kafka-cluster.sh" start-node "$KILLED_NODE" 2>>"$WORK/servers.log" \
            || { say "Kafka node $KILLED_NODE did not come back"; exit 1; }
        note back broker-leader
        say "Kafka node $KILLED_NODE is back"
    ) &
    SERVER_JOBS+=($!)
}

"$GEN" --brokers "$FACTORD_KAFKA_BROKERS" --create-topics factord.commands factord.events factord.replies \
    factord.commands.dlq 2>>"$WORK/gen.log" || die "cannot create the topics: $(tail -3 "$WORK/gen.log")"
for c in "${COMPONENTS[@]}"; do start_component "$c"; done
t_start=$(now_ms)
"$GEN" --brokers "$FACTORD_KAFKA_BROKERS" --topic factord.commands --commands "$COMMANDS" --users "$USERS" \
    --instances "$INSTANCES" --seed "$SEED" --rate "$RATE" --out "$WORK/sent.tsv" 2>"$WORK/gen.log" &
GEN_PID=$!
load_ms=$(( COMMANDS * 1000 / RATE ))
broker_at=$(( t_start + load_ms * 30 / 100 )) pg_at=$(( t_start + load_ms * 75 / 100 ))
broker_done=0 pg_done=0 kills=0
if ((HA)); then
    # Far enough apart that each fault's window is its own (a broker's
    # death is noticed after its ~9 s session; a primary's after ~5-30 s).
    leader_at=$(( t_start + load_ms * 10 / 100 )) primary_at=$(( t_start + load_ms * 50 / 100 ))
    back_at=$(( t_start + load_ms * 85 / 100 ))
    leader_done=0 primary_done=0 back_done=0
    while kill -0 "$GEN_PID" 2>/dev/null || ((!back_done)); do
        sleep 0.5
        check_alive
        t=$(now_ms)
        if ((!leader_done && t >= leader_at)); then kill_leader; leader_done=1
        elif ((leader_done && !primary_done && t >= primary_at)); then kill_primary; primary_done=1
        elif ((primary_done && !back_done && t >= back_at)); then restart_node; back_done=1; fi
    done
    broker_done=1 pg_done=1
fi
while kill -0 "$GEN_PID" 2>/dev/null || ((!broker_done || !pg_done)); do
    sleep_ms "$(rand_ms $((KILL_MIN * 1000)) $((KILL_MAX * 1000)))"
    check_alive
    t=$(now_ms)
    if ((!broker_done && t >= broker_at)); then restart_broker; broker_done=1; continue; fi
    if ((!pg_done && t >= pg_at)); then restart_pg; pg_done=1; continue; fi
    kill -0 "$GEN_PID" 2>/dev/null || continue
    c=${COMPONENTS[RANDOM % ${#COMPONENTS[@]}]}
    say "SIGKILL $c ($(grep '^chaos-gen:' "$WORK/gen.log" 2>/dev/null | tail -1 | sed 's/^chaos-gen: //'))"
    kill_component "$c"
    kills=$((kills + 1))
done
for j in "${SERVER_JOBS[@]}"; do wait "$j" || die "a server did not come back (see $WORK/servers.log)"; done
if ((HA)); then
    # The old primary rejoins as the new primary's synchronous standby.
    node=$([[ $OLD_PRIMARY == $((FACTORD_PG_HA_PORT + 1)) ]] && echo a || echo b)
    say "starting PostgreSQL node $node (the old primary) again"
    rejoined=yes
    bash "$ROOT/scripts/pg-ha.sh" start-node "$node" 2>>"$WORK/servers.log" \
        || { rejoined=no; say "FINDING: PostgreSQL node $node did not rejoin (see $WORK/servers.log)"; }
    note back pg-primary
fi
gen_rc=0; wait "$GEN_PID" || gen_rc=$?
GEN_PID=
say "load done: $(grep '^chaos-gen:' "$WORK/gen.log" | tail -1)"
((gen_rc == 0)) || say "FINDING: the generator could not deliver every record (status $gen_rc)"

# --- settle ---------------------------------------------------------------------
psql -qX -v ON_ERROR_STOP=1 "$DB_URL" >/dev/null <<SQL
CREATE SCHEMA chaos;
CREATE TABLE chaos.sent (n int, kind text, id text, instance text, user_id text, type text, sent_ms bigint,
                         partition int, delivered int, copies int, token text);
CREATE TABLE chaos.kills (t_ms bigint, what text, target text);
\copy chaos.sent FROM '$WORK/sent.tsv' WITH (FORMAT csv, DELIMITER E'\t', QUOTE E'\x01')
\copy chaos.kills FROM '$WORK/kills.tsv' WITH (FORMAT csv, DELIMITER E'\t', QUOTE E'\x01')
SQL
want=$(sql "SELECT count(DISTINCT id) FROM chaos.sent WHERE kind IN ('cmd','dup','diff') AND delivered = 1")
say "settling: waiting for $want command outcomes, the relay and the projector to catch up"
settle_start=$(now_ms) settled=0 prev=
while (( $(now_ms) - settle_start < SETTLE_S * 1000 )); do
    check_alive
    state=$(sql "SELECT (SELECT count(*) FROM factord.commands) || ' ' ||
        coalesce((SELECT position FROM factord.checkpoints WHERE name = 'relay'), 0) || ' ' ||
        greatest(coalesce((SELECT max(position) FROM factord.events), 0),
                 coalesce((SELECT max(position) FROM factord.outbox), 0)) || ' ' ||
        (SELECT coalesce(sum(sequence), 0) FROM factord.projected_sequences) || ' ' ||
        (SELECT count(*) FROM factord.events)" 2>/dev/null || echo "? ? ? ? ?")
    read -r n_cmd ckpt head applied n_evt <<<"$state"
    if [[ $n_cmd == "$want" && $ckpt == "$head" && $applied == "$n_evt" ]]; then
        [[ $state == "$prev" ]] && { settled=1; break; }
    fi
    prev=$state
    say "settling: $n_cmd/$want outcomes, relay at $ckpt/$head, projector applied $applied/$n_evt events"
    sleep 2
done
settle_ms=$(( $(now_ms) - settle_start ))
((settled)) && say "settled in $((settle_ms / 1000)) s" || say "FINDING: not settled after $SETTLE_S s"
sleep 3 # the projector's last replies: sent after its commit

stop_rc=0
for c in "${COMPONENTS[@]}"; do
    kill -TERM "${PID[$c]}" 2>/dev/null || true
    rc=0; wait "${PID[$c]}" || rc=$?
    if ((rc != 0)); then say "FINDING: $c exited with $rc on SIGTERM"; stop_rc=1; fi
done
PID=()

# --- read the topics back ---------------------------------------------------------
for t in factord.events factord.replies factord.commands.dlq; do
    kcat -b "$FACTORD_KAFKA_BROKERS" -C -t "$t" -e -q -f '%p\t%o\t%T\t%k\t%s\n' >"$WORK/topic-$t.tsv" 2>"$WORK/kcat.log" \
        || : >"$WORK/topic-$t.tsv" # a topic nobody wrote to (no malformed records) does not exist
done
psql -qX -v ON_ERROR_STOP=1 "$DB_URL" >/dev/null <<SQL
CREATE TABLE chaos.t_events (p int, o bigint, ts bigint, k text, v text);
CREATE TABLE chaos.t_replies (LIKE chaos.t_events);
CREATE TABLE chaos.t_dlq (LIKE chaos.t_events);
\copy chaos.t_events FROM '$WORK/topic-factord.events.tsv' WITH (FORMAT csv, DELIMITER E'\t', QUOTE E'\x01')
\copy chaos.t_replies FROM '$WORK/topic-factord.replies.tsv' WITH (FORMAT csv, DELIMITER E'\t', QUOTE E'\x01')
\copy chaos.t_dlq FROM '$WORK/topic-factord.commands.dlq.tsv' WITH (FORMAT csv, DELIMITER E'\t', QUOTE E'\x01')
ANALYZE chaos.sent; ANALYZE chaos.t_events; ANALYZE chaos.t_replies; ANALYZE chaos.t_dlq;
SQL

# --- checks -----------------------------------------------------------------------
psql -qAtX -F $'\t' -v ON_ERROR_STOP=1 "$DB_URL" -f "$ROOT/tests/chaos/checks.sql" >"$WORK/checks.tsv" \
    || die "the checks did not run (see above)"
failed=0
printf '\n%-44s %-60s %s\n' "check" "figure" "result"
while IFS=$'\t' read -r name figure ok; do
    printf '%-44s %-60s %s\n' "$name" "$figure" "$([[ $ok == t ]] && echo ok || echo FAIL)"
    [[ $ok == t ]] || failed=$((failed + 1))
done <"$WORK/checks.tsv"
verify_line="not available in this build"
if "$FACTORD" verify --help >/dev/null 2>&1; then
    if "$FACTORD" verify >"$WORK/verify.log" 2>&1; then verify_line="exit 0"
    else verify_line="exit $? (see $WORK/verify.log)"; failed=$((failed + 1)); fi
fi
printf '%-44s %-60s %s\n' "factord verify" "$verify_line" ""
printf '%-44s %-60s %s\n' "component kills (SIGKILL + restart)" "$kills" ""
printf '%-44s %-60s %s\n' "components that died by themselves" "$unexpected" "$( ((unexpected == 0)) && echo ok || echo FAIL)"
printf '%-44s %-60s %s\n' "clean exit on SIGTERM after the soak" "$( ((stop_rc == 0)) && echo yes || echo no)" "$( ((stop_rc == 0)) && echo ok || echo FAIL)"
printf '%-44s %-60s %s\n' "generator delivered every record" "$( ((gen_rc == 0)) && echo yes || echo no)" "$( ((gen_rc == 0)) && echo ok || echo FAIL)"
printf '%-44s %-60s %s\n' "settled" "$( ((settled)) && echo "in $((settle_ms / 1000)) s" || echo "no, after $SETTLE_S s")" "$( ((settled)) && echo ok || echo FAIL)"
if ((HA)); then
    printf '%-44s %-60s %s\n' "the old PostgreSQL primary rejoined" "$rejoined" "$([[ $rejoined == yes ]] && echo ok || echo FAIL)"
    [[ $rejoined == yes ]] || failed=$((failed + 1))
fi
((unexpected == 0 && stop_rc == 0 && gen_rc == 0 && settled)) || failed=$((failed + 1))
printf '\nchaos.sh: seed %s, %s commands, %s users, %s instances, %s/s, %s s in all: %s\n' "$SEED" "$COMMANDS" \
    "$USERS" "$INSTANCES" "$RATE" "$(( ($(now_ms) - t_start) / 1000 ))" "$( ((failed == 0)) && echo PASSED || echo "$failed FAILED")"
if ((failed == 0)); then passed=1; exit 0; fi
exit 1
