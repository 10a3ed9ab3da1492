#!/usr/bin/env bash
# bench/growth.sh - what factord's costs do as the log grows
# (docs/performance.md, "Cost as the log grows").
#
# One database (factord_bench_growth_<tag>, dropped at the end), one chain
# key, one instance. For each size of the log in turn (default 0, 1,000,000
# and 10,000,000 events; --quick 0, 100,000 and 1,000,000):
#   1. grow: the log is filled up to the size with bench/growth_gen.c's
#      users (ten events from eight commands each, so 1,000,000 users at
#      10,000,000 events), loaded with COPY into factord.events and
#      factord.commands, the chain continued; the relay's checkpoint moves
#      past them. `factord rebuild users` makes their write-side rows
#      (timed: rebuild events/s)
#   2. with process, relay and project running on topics of the step's
#      own: ImportHumanUser for the step's users, then `factord rebuild
#      auth-factors` (the read models of the grown log) while commands
#      arrive at a fixed rate: the rebuild's events/s and the latency of
#      the live commands during it
#   3. a burst of AddMyAuthFactorOTPSMS with one processor: commands/s
#   4. latency at a fixed rate: p50, p99
#   5. projector catch-up: the step's users' read-model rows are deleted
#      and a fresh projector group applies the step's events topic onto
#      read models that hold the grown log: events/s
#   6. `factord verify` from the previous step's signed checkpoint (what
#      an operator's periodic run costs: the step's growth and commands),
#      then `factord verify --full` over the whole log: events/s
#   7. the append path (bench/append.c) at 1 and 16 writers: events/s
# Each figure is printed beside the same figure at the first size, measured
# in the same invocation: the ratio is the honest figure on a machine whose
# absolute speed varies. The machine's state (load, CPU steal, versions,
# build) is printed as by bench/run.
#
# Usage: bench/growth.sh [--quick] [--sizes "N N ..."] [--out FILE]
# Environment: FACTORD_BENCH_USERS (users of each step's burst; default
# 50,000, 10,000 quick), FACTORD_BENCH_RATE (offered commands/s, default
# 2,000), FACTORD_BENCH_LATENCY_S (seconds of the paced run, 15, 5 quick),
# FACTORD_BENCH_APPEND_S (seconds per append run, 8, 3 quick),
# FACTORD_BENCH_REBUILD_RATE (the rebuild's --max-rate in step 2; unset:
# unthrottled), FACTORD_BENCH_KEEP=1 (keep the database and the work folder).
# Progress goes to stderr, the table to stdout, the figures also to a JSON
# file (default bench/results/growth-<UTC timestamp>.json).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build-bench
BENCH_NAME=bench/growth.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

quick=0 out= sizes=
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=1 ;;
        --sizes) [[ $# -ge 2 ]] || { usage; exit 2; }; sizes=$2; shift ;;
        --out) [[ $# -ge 2 ]] || { usage; exit 2; }; out=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown option '$1'" ;;
    esac
    shift
done
if [[ $quick == 1 ]]; then
    sizes=${sizes:-"0 100000 1000000"}; USERS=${FACTORD_BENCH_USERS:-10000}
    LAT_S=${FACTORD_BENCH_LATENCY_S:-5}; APPEND_S=${FACTORD_BENCH_APPEND_S:-3}
else
    sizes=${sizes:-"0 1000000 10000000"}; USERS=${FACTORD_BENCH_USERS:-50000}
    LAT_S=${FACTORD_BENCH_LATENCY_S:-15}; APPEND_S=${FACTORD_BENCH_APPEND_S:-8}
fi
prev_size=-1
for s in $sizes; do
    [[ $s =~ ^[0-9]+$ ]] || die "--sizes takes numbers of events, got '$s'"
    (( s > prev_size )) || die "--sizes must grow: $s after $prev_size"
    prev_size=$s
done
RATE=${FACTORD_BENCH_RATE:-2000}
LAT_N=$(( RATE * LAT_S ))
REBUILD_RATE=${FACTORD_BENCH_REBUILD_RATE:-}
mode=$([[ $quick == 1 ]] && echo quick || echo full)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
[[ -n $out ]] || out=$ROOT/bench/results/growth-$(date -u +%Y%m%dT%H%M%SZ).json
mkdir -p "$(dirname "$out")"

for tool in kcat psql jq openssl cmake; do
    command -v $tool >/dev/null || die "$tool is missing (scripts/deps.sh installs the Debian packages)"
done
eval "$(bash "$ROOT/scripts/servers.sh" start)"

if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    say "configuring a Release build in $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFACTORD_TESTS=OFF >/dev/null
fi
say "building factord and the bench programs in $BUILD"
cmake --build "$BUILD" -j 2 --target factord factord_bench_loadgen factord_bench_append \
    factord_bench_growth_gen >/dev/null || die "build failed (cmake --build $BUILD)"
FACTORD=$BUILD/factord LOADGEN=$BUILD/factord_bench_loadgen APPEND=$BUILD/factord_bench_append
GEN=$BUILD/factord_bench_growth_gen

tag=$(openssl rand -hex 4)
db=factord_bench_growth_$tag
admin_url=$FACTORD_DATABASE_URL
bench_url=$(bench_db_url "$admin_url" "$db")
work=$(mktemp -d "${TMPDIR:-/tmp}/factord-growth.XXXXXX")
declare -A pid=()
cleanup() {
    stop_all
    drop_or_keep
}
trap cleanup EXIT
trap 'exit 130' INT TERM

machine_begin
say "$mode run, sizes $sizes, tag $tag, database $db, work folder $work; load average $load_start"
psql -q "$admin_url" -c "CREATE DATABASE $db" >/dev/null
inst=bench-$tag
export FACTORD_DATABASE_URL=$bench_url
export FACTORD_CODE_KEY=${FACTORD_CODE_KEY:-$(openssl rand -hex 32)}
export FACTORD_CHAIN_KEY=${FACTORD_CHAIN_KEY:-$(openssl rand -hex 32)}
unset FACTORD_CHAIN_KEY_FILE
export FACTORD_SESSION_TIMEOUT_MS=${FACTORD_SESSION_TIMEOUT_MS:-6000}
export FACTORD_LOG_LEVEL=${FACTORD_LOG_LEVEL:-warn}
"$FACTORD" migrate 2>>"$work/migrate.log" || die "migrate failed: $(tail -3 "$work/migrate.log")"
# shellcheck source=bench/catchup-lib.sh
source "$ROOT/bench/catchup-lib.sh"

loadgen() { # mode first count [extra...]
    local m=$1 first=$2 count=$3; shift 3
    "$LOADGEN" "$m" --brokers "$FACTORD_KAFKA_BROKERS" --commands "$FACTORD_COMMANDS_TOPIC" \
        --replies "$FACTORD_REPLIES_TOPIC" --instance "$inst" --tag "$tag" \
        --first "$first" --count "$count" "$@" 2>>"$work/loadgen.log" \
        || die "loadgen $m failed: $(tail -3 "$work/loadgen.log"); component logs in $work (FACTORD_BENCH_KEEP=1 keeps them)"
}
# timed NAME COMMAND...: run it, its output in $work/NAME.log; prints seconds.
timed() {
    local name=$1 t0 rc=0; shift
    t0=$(now)
    "$@" >"$work/$name.log" 2>&1 || rc=$?
    [[ $rc == 0 ]] || die "$name failed (exit $rc): $(tail -3 "$work/$name.log")"
    awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
}
per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }'; }

# grow TARGET: append generated users' events (COPY) until the log holds
# TARGET events; the position counter, its chain head and the relay's
# checkpoint move to the new head.
g_users=0
grow() {
    local target=$1 have head_pos head_hash want fifo
    have=$(sql "SELECT count(*) FROM factord.events")
    want=$(( (target - have) / 10 * 10 ))
    (( want > 0 )) || return 0
    read -r head_pos head_hash < <(sql "SELECT value, encode(head_hash, 'hex') FROM factord.position_counter WHERE id = 1" | tr '|' ' ')
    [[ $(sql "SELECT head_position FROM factord.position_counter WHERE id = 1") == "$head_pos" ]] \
        || die "grow: the position counter and the chain head differ; is a writer running?"
    say "growing the log by $want events ($(( want / 10 )) users) with COPY, after position $head_pos"
    fifo=$work/commands.fifo
    rm -f "$fifo"; mkfifo "$fifo"
    "$PSQL" -qX -v ON_ERROR_STOP=1 "$bench_url" -c "\\copy factord.commands (id, instance_id, type, user_id,
        content_hash, http_status, body, reply_to, decided_at) FROM '$fifo'" 2>>"$work/grow.log" &
    local copy_pid=$! rc=0
    "$GEN" --events "$want" --instance "$inst" --first-user "$g_users" --after-position "$head_pos" \
        --prev-hash "$head_hash" --commands-out "$fifo" --head-out "$work/head" 2>>"$work/grow.log" \
        | "$PSQL" -qX -v ON_ERROR_STOP=1 "$bench_url" -c "\\copy factord.events (instance_id, aggregate_type,
            aggregate_id, sequence, position, type, revision, created_at, creator, resource_owner, command_id,
            last_of_command, payload, hash) FROM STDIN" 2>>"$work/grow.log" || rc=$?
    wait "$copy_pid" || rc=$?
    [[ $rc == 0 ]] || die "grow: COPY failed: $(tail -3 "$work/grow.log")"
    local new_pos new_hash
    read -r new_pos new_hash <"$work/head"
    [[ $(sql "UPDATE factord.position_counter SET value = $new_pos, head_position = $new_pos,
                  head_hash = decode('$new_hash', 'hex') WHERE id = 1 AND value = $head_pos RETURNING 1") == 1 ]] \
        || die "grow: the position counter moved while the log grew"
    sql "INSERT INTO factord.checkpoints (name, position) VALUES ('relay', $new_pos)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = now()" >/dev/null
    g_users=$(( g_users + want / 10 ))
}

steps_json=()
step=0 next_user=0
for size in $sizes; do
    step=$(( step + 1 ))
    say "=== step $step: log of $size events"
    grow "$size"
    settle
    events=$(sql "SELECT count(*) FROM factord.events")
    t=$(timed "rebuild-users-$step" "$FACTORD" rebuild users)
    rebuild_users=$(per_s "$events" "$t")
    say "rebuild users: $events events in $t s"

    # The step's topics and groups: its events topic holds this step's
    # events only, for the catch-up below.
    export FACTORD_COMMANDS_TOPIC=bench.$tag.$step.commands FACTORD_EVENTS_TOPIC=bench.$tag.$step.events
    export FACTORD_REPLIES_TOPIC=bench.$tag.$step.replies FACTORD_DLQ_TOPIC=bench.$tag.$step.dlq
    export FACTORD_PROCESSOR_GROUP=bench.$tag.$step.processor FACTORD_PROJECTOR_GROUP=bench.$tag.$step.projector
    start process process
    start relay relay
    start project project
    first=$next_user
    total=$(( USERS + LAT_N + LAT_N ))
    next_user=$(( next_user + total ))
    say "importing $total users"
    imp=$(loadgen import "$first" "$total")
    alive

    settle
    say "rebuild auth-factors over $(sql "SELECT count(*) FROM factord.events") events while $LAT_N commands arrive at $RATE/s"
    t0=$(now)
    "$FACTORD" rebuild auth-factors ${REBUILD_RATE:+--max-rate "$REBUILD_RATE"} >"$work/rebuild-af-$step.log" 2>&1 &
    rb_pid=$!
    during=$(loadgen paced "$(( first + USERS + LAT_N ))" "$LAT_N" --rate "$RATE")
    paced_end=$(now)
    wait "$rb_pid" || die "rebuild auth-factors failed: $(tail -3 "$work/rebuild-af-$step.log")"
    rb_end=$(now)
    rb_events=$(sed -n 's/.*rebuilt auth-factors: \([0-9]*\) events.*/\1/p' "$work/rebuild-af-$step.log")
    rb_s=$(awk -v a="$t0" -v b="$rb_end" 'BEGIN { printf "%.2f", b - a }')
    rebuild_af=$(per_s "${rb_events:-0}" "$rb_s")
    # How much of the paced run the rebuild overlapped: a rebuild shorter
    # than the run measured fewer commands under it.
    overlap=$(awk -v a="$t0" -v p="$paced_end" -v r="$rb_end" 'BEGIN { o = (r < p ? r : p) - a; printf "%.0f", 100 * o / (p - a) }')
    alive
    say "rebuild auth-factors: ${rb_events:-?} events in $rb_s s; live p99 $(jq -r .p99_ms <<<"$during") ms over $overlap % of the rebuild"

    settle
    burst=$(loadgen burst "$first" "$USERS")
    alive
    say "burst: $(jq -r '"\(.per_s) commands/s, \(.ok) ok"' <<<"$burst")"

    settle
    paced=$(loadgen paced "$(( first + USERS ))" "$LAT_N" --rate "$RATE")
    alive
    say "latency: $(jq -r '"p50 \(.p50_ms) ms, p99 \(.p99_ms) ms"' <<<"$paced")"

    # catch-up onto read models that hold the grown log
    head=$(sql "SELECT coalesce(max(position), 0) FROM factord.events")
    for _ in $(seq 1 600); do
        [[ $(sql "SELECT coalesce((SELECT position FROM factord.checkpoints WHERE name = 'relay'), 0)") -ge $head ]] && break
        sleep 0.2
    done
    stop_pid process; stop_pid relay; stop_pid project
    step_events=$(sql "SELECT count(*) FROM factord.events WHERE instance_id = '$inst' AND aggregate_id IN
                           (SELECT 'u' || n FROM generate_series($first, $(( first + total - 1 ))) AS n)")
    "$PSQL" -qAtX -v ON_ERROR_STOP=1 "$bench_url" >/dev/null <<SQL || die "catch-up: deleting the step's read-model rows failed"
CREATE TEMP TABLE step_users AS SELECT 'u' || n AS id FROM generate_series($first, $(( first + total - 1 ))) AS n;
DELETE FROM factord.auth_factors WHERE instance_id = '$inst' AND user_id IN (SELECT id FROM step_users);
DELETE FROM factord.user_views WHERE instance_id = '$inst' AND user_id IN (SELECT id FROM step_users);
DELETE FROM factord.projected_sequences WHERE instance_id = '$inst' AND user_id IN (SELECT id FROM step_users);
SQL
    settle
    targets=$(catchup_targets "$FACTORD_KAFKA_BROKERS" "$FACTORD_EVENTS_TOPIC")
    t0=$(now)
    start project_catchup project FACTORD_PROJECTOR_GROUP="bench.$tag.$step.catchup"
    deadline=$(( $(date +%s) + 900 ))
    while :; do
        read -r _ done < <(catchup_state "$targets")
        [[ $done == t ]] && break
        (( $(date +%s) < deadline )) || die "catch-up did not finish within 15 minutes"
        alive
        sleep 0.1
    done
    catchup_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    stop_pid project_catchup
    catchup=$(per_s "$step_events" "$catchup_s")
    say "catch-up: $step_events events in $catchup_s s"

    # verify: first as an operator runs it, from the previous step's signed
    # checkpoint (the step's growth and commands), then in full.
    settle
    t_inc=$(timed "verify-incremental-$step" "$FACTORD" verify)
    inc_events=$(awk '$1 == "events" { print $2; exit }' "$work/verify-incremental-$step.log")
    say "verify (incremental): ${inc_events:-?} events checked in $t_inc s"
    settle
    events=$(sql "SELECT count(*) FROM factord.events")
    t=$(timed "verify-$step" "$FACTORD" verify --full)
    verify=$(per_s "$events" "$t")
    say "verify --full: $events events in $t s"

    append=()
    for w in 1 16; do
        settle
        a=$("$APPEND" --writers "$w" --batch 1000 --seconds "$APPEND_S" --instance "append-$step-$w" \
            2>>"$work/append.log") || die "append failed: $(tail -3 "$work/append.log")"
        append+=("$(jq -r .events_per_s <<<"$a")")
    done
    say "append: ${append[0]} events/s at 1 writer, ${append[1]} at 16"

    steps_json+=("$(jq -n --argjson size "$size" --argjson events "$events" --argjson imp "$imp" \
        --argjson burst "$burst" --argjson paced "$paced" --argjson during "$during" \
        --argjson rebuild_users "$rebuild_users" --argjson rebuild_af "$rebuild_af" --argjson overlap "$overlap" \
        --argjson catchup "$catchup" --argjson catchup_events "$step_events" --argjson verify "$verify" \
        --argjson verify_s "$t" --argjson inc_s "$t_inc" --argjson inc_events "${inc_events:-0}" \
        --argjson a1 "${append[0]}" --argjson a16 "${append[1]}" \
        '{size: $size, events_at_verify: $events, import: $imp, burst: $burst, latency: $paced,
          rebuild_users_per_s: $rebuild_users,
          rebuild_auth_factors: {per_s: $rebuild_af, live_latency: $during, overlap_percent: $overlap},
          catch_up: {events: $catchup_events, per_s: $catchup}, verify_per_s: $verify, verify_s: $verify_s,
          verify_incremental: {events: $inc_events, seconds: $inc_s},
          append_per_s: {"1": $a1, "16": $a16}}')")
done

# --- report -------------------------------------------------------------------------
machine_end "$admin_url" "$BUILD"
steps=$(printf '%s\n' "${steps_json[@]}" | jq -s .)
jq -n --arg mode "$mode" --arg started "$started" --arg tag "$tag" --arg host "$(uname -n)" \
    --arg load_start "$load_start" --arg load_end "$load_end" --argjson cpus "$(nproc)" \
    --argjson users "$USERS" --argjson rate "$RATE" --argjson machine "$machine_json" --argjson steps "$steps" \
    --arg commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    '{mode: $mode, started: $started, tag: $tag, host: $host, cpus: $cpus, commit: $commit,
      load_average: {start: $load_start, end: $load_end}, machine: $machine,
      users_per_burst: $users, rate: $rate, steps: $steps}' >"$out"

{
    printf '\nfactord growth benchmark (%s, %s CPUs, load average %s at the start, %s at the end)\n' \
        "$mode" "$(nproc)" "$load_start" "$load_end"
    printf '%s\n' "$machine_text"
    for w in "${suspect[@]}"; do printf 'SUSPECT: %s\n' "$w"; done
    printf 'each figure: value (ratio to the first size, same run)\n\n'
    jq -r '
      def r($v; $base): if $base > 0 then "\($v) (\((100 * $v / $base | round) / 100))" else "\($v)" end;
      .steps[0] as $b |
      (["log events", "e2e cmd/s", "p99 ms", "p99 in rebuild", "catch-up ev/s", "verify ev/s",
        "verify s (incr.)", "rebuild users ev/s", "rebuild af ev/s", "append 1w ev/s", "append 16w ev/s"] | @tsv),
      (.steps[] | [
        "\(.events_at_verify)",
        r(.burst.per_s; $b.burst.per_s),
        r(.latency.p99_ms; $b.latency.p99_ms),
        "\(.rebuild_auth_factors.live_latency.p99_ms) (\(.rebuild_auth_factors.overlap_percent) %)",
        r(.catch_up.per_s; $b.catch_up.per_s),
        r(.verify_per_s; $b.verify_per_s),
        "\(.verify_s) (\(.verify_incremental.seconds): \(.verify_incremental.events) ev)",
        r(.rebuild_users_per_s; $b.rebuild_users_per_s),
        r(.rebuild_auth_factors.per_s; $b.rebuild_auth_factors.per_s),
        r(.append_per_s["1"]; $b.append_per_s["1"]),
        r(.append_per_s["16"]; $b.append_per_s["16"])] | @tsv)' "$out" | column -t -s $'\t'
    printf '\nlog events: the log when verify ran (the size asked for, plus the step'"'"'s own commands'"'"' events)\n'
    printf 'verify s (incr.): verify --full, and (in brackets) verify from the previous step'"'"'s checkpoint: seconds, events checked\n'
    printf 'p99 in rebuild: live commands at %s/s while `factord rebuild auth-factors` ran (%% of the paced run it overlapped)\n' "$RATE"
    printf 'JSON: %s\n' "$out"
}
