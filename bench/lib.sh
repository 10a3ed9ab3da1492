# bench/lib.sh - sourced by bench/run, bench/growth.sh and bench/catchup.sh: what every
# benchmark script does the same way. The caller sets BENCH_NAME (for
# messages) before sourcing, and later bench_url (its database), work (its
# folder) and the associative array pid (name -> process id) that start,
# alive and stop_pid use.

say() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() { say "error: $*"; exit 1; }
now() { date +%s.%N; }
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; }

# psql itself, not Debian's Perl wrapper /usr/bin/psql: the wrapper costs
# ~20 ms of CPU per call, a tenth of a core at the polling rates of the
# benchmarks.
PSQL=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -1)
PSQL=${PSQL:-psql}
sql() { "$PSQL" -qAtX "$bench_url" -c "$1"; }

# bench_db_url ADMIN_URL DB: the admin URL with its database replaced.
bench_db_url() {
    local base query
    case $1 in
        postgres://*|postgresql://*)
            base=${1%%\?*}; query=${1#"$base"}
            printf '%s\n' "${base%/*}/$2$query" ;;
        *) printf '%s\n' "$1 dbname=$2" ;;
    esac
}

# settle: every measured phase starts on a settled server. The phase before
# leaves work behind: autovacuum of the hundreds of thousands of rows an
# import or a burst changed, and the checkpoint its WAL set off (after which
# every first change to a page logs the whole page). Measured without this,
# the paced run straight after a burst had p99 130 and 845 ms in two full
# runs (docs/performance.md). VACUUM (ANALYZE) of the bench database, a
# CHECKPOINT, then up to 60 s for autovacuum workers to finish.
settle() {
    local t0 busy
    t0=$(now)
    sql "VACUUM (ANALYZE)" >/dev/null || die "settle: VACUUM failed"
    sql "CHECKPOINT" >/dev/null 2>&1 || say "settle: CHECKPOINT refused (needs pg_checkpoint); going on"
    for _ in $(seq 1 120); do
        busy=$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
        [[ $busy == 0 ]] && break
        sleep 0.5
    done
    say "settled in $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s (VACUUM ANALYZE, CHECKPOINT, autovacuum idle)"
}

# start NAME SUBCOMMAND [NAME=value...]: a factord component in the
# background, its stderr in $work/NAME.log.
start() {
    local name=$1 sub=$2; shift 2
    env "$@" "$FACTORD" "$sub" 2>>"$work/$name.log" &
    pid[$name]=$!
}
# alive: die when a started component has stopped.
alive() {
    for name in "${!pid[@]}"; do
        kill -0 "${pid[$name]}" 2>/dev/null || die "$name stopped: $(tail -3 "$work/$name.log")"
    done
}
# stop_pid NAME: SIGTERM and wait.
stop_pid() {
    local p=${pid[$1]:-}
    [[ -n $p ]] || return 0
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "pid[$1]"
}
# stop_all: every started component.
stop_all() {
    local name
    for name in "${!pid[@]}"; do kill -TERM "${pid[$name]}" 2>/dev/null || true; done
    for name in "${!pid[@]}"; do wait "${pid[$name]}" 2>/dev/null || true; unset "pid[$name]"; done
}
# drop_or_keep: at exit, drop the bench database ($db on $admin_url) and
# the work folder, or keep both and say so with FACTORD_BENCH_KEEP=1.
drop_or_keep() {
    if [[ ${FACTORD_BENCH_KEEP:-0} != 1 ]]; then
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
        rm -rf "$work"
    else
        say "kept database $db and $work"
    fi
}
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# --- the machine's state beside the figures -----------------------------------
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# CPU ticks: all and stolen (by the hypervisor), from /proc/stat's cpu line.
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit }' /proc/stat; }

# machine_begin: remember the load and the CPU ticks at the start of a run.
machine_begin() {
    load_start=$(loadavg)
    ticks_start=$(cpu_ticks)
}

# machine_end ADMIN_URL BUILD_DIR: after a run, set machine_json (the JSON
# object of the run's `machine` field), machine_text (the line the table
# starts with) and the array suspect (one reason each why the figures are
# not comparable): CPU steal during the run, the PostgreSQL, Kafka and
# librdkafka versions, the build and the tree (docs/performance.md,
# "Running the benchmarks").
machine_end() {
    local admin_url=$1 build=$2 t0 st0 t1 st1 pg_version kafka_version rdkafka_version build_type commit_desc
    load_end=$(loadavg)
    read -r t0 st0 <<<"$ticks_start"
    read -r t1 st1 <<<"$(cpu_ticks)"
    steal_pct=$(awk -v a="$t0" -v b="$t1" -v s="$st0" -v e="$st1" 'BEGIN { printf "%.1f", (b > a ? 100 * (e - s) / (b - a) : 0) }')
    pg_version=$(psql -X -tA "$admin_url" -c 'SHOW server_version' 2>/dev/null || echo unknown)
    kafka_version=${FACTORD_KAFKA_VERSION:-3.9.1}
    rdkafka_version=$(pkg-config --modversion rdkafka 2>/dev/null || echo unknown)
    build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null)
    commit_desc=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
    suspect=()
    awk -v l="${load_start%% *}" -v c="$(nproc)" 'BEGIN { exit !(l > c / 2) }' &&
        suspect+=("load average ${load_start%% *} at the start on $(nproc) CPUs: something else was running")
    awk -v s="$steal_pct" 'BEGIN { exit !(s > 5) }' &&
        suspect+=("${steal_pct} % of the CPU time was stolen by the hypervisor: a shared host")
    [[ $build_type == Release ]] || suspect+=("build type '${build_type:-none}', not Release")
    [[ $commit_desc != *-dirty ]] || suspect+=("uncommitted changes in the tree ($commit_desc)")
    local suspect_json
    suspect_json=$(printf '%s\n' "${suspect[@]}" | jq -R . | jq -s 'map(select(length > 0))')
    machine_json=$(jq -n --arg steal "$steal_pct" --arg pg "$pg_version" --arg kafka "$kafka_version" \
        --arg rdkafka "$rdkafka_version" --arg build "$build_type" --arg commit "$commit_desc" --argjson suspect "$suspect_json" \
        '{cpu_steal_percent: ($steal | tonumber), postgresql: $pg, kafka: $kafka, librdkafka: $rdkafka,
          build_type: $build, tree: $commit, suspect: $suspect}')
    machine_text=$(printf 'machine: CPU steal %s %%, PostgreSQL %s, Kafka %s, librdkafka %s, %s build of %s' \
        "$steal_pct" "$pg_version" "$kafka_version" "$rdkafka_version" "${build_type:-unknown}" "$commit_desc")
}
