#!/usr/bin/env bash
# scripts/pg-ha.sh - a throwaway PostgreSQL 15 failover pair on 127.0.0.1 for
# factord's fault tests (issue 14): a pg_auto_failover monitor and two nodes,
# a primary with a synchronous streaming standby. Failover is pg_autoctl's
# (Debian package postgresql-15-auto-failover), never a promote of our own.
# Trust authentication (loopback only); role 'factord' (superuser, as
# scripts/pg.sh's) owns the database 'factord', created on the primary.
#
# Usage: scripts/pg-ha.sh start | stop [--wipe] | status | env | primary
#                         | kill-primary [--postmaster] | start-node <a|b>
#                         | wait-failover <old primary port> [timeout]
#   start          create the monitor and the nodes on first use, start what
#                  is not running, wait until one node is primary and the
#                  other a secondary replicating synchronously; prints how
#                  long that took (stderr)
#   stop           stop the nodes, then the monitor; --wipe also removes the
#                  folder
#   status         pg_autoctl show state (exit 1 when the monitor is down)
#   env            print export FACTORD_DATABASE_URL='postgresql://factord@
#                  127.0.0.1:A,127.0.0.1:B/factord?target_session_attrs=read-write'
#   primary        print the port of the node the monitor holds as primary
#   kill-primary   model a lost primary machine: SIGKILL the primary node's
#                  whole pg_autoctl process group (its keeper and its
#                  postmaster together; backends exit with the postmaster);
#                  prints the killed node's port. With --postmaster only the
#                  postmaster dies; its keeper restarts it within seconds,
#                  but the monitor may still fail over to the standby (seen:
#                  after 1.3-1.9 s), the old primary rejoining as secondary.
#   start-node     restart a killed node (a or b); waits until it is a
#                  synchronous secondary again (pg_rewind is pg_autoctl's)
#   wait-failover  wait until the node other than <old primary port> is
#                  primary and accepts a write (default timeout 180 s);
#                  prints the seconds waited
#
# Environment:
#   FACTORD_PG_HA_DIR    folder (default ${TMPDIR:-/tmp}/factord-pg-ha): the
#                        data folders monitor/, a/, b/, logs in log/,
#                        pg_autoctl's config and state in xdg/
#   FACTORD_PG_HA_PORT   monitor port (default 55600); node a is port+1,
#                        node b port+2
#   FACTORD_PG_HA_FAST   1: the monitor declares a node dead after about 5 s
#                        instead of 20-30 s and waits 10 s instead of 30 s for
#                        a vanished primary to demote itself (the defaults
#                        guard against a primary that is only slow); read on
#                        each start
#   FACTORD_PG_HA_START_TIMEOUT  seconds 'start' waits for the pair (default 180)
#   FACTORD_PG_BIN       server binaries (default /usr/lib/postgresql/15/bin)
#
# As root, everything runs as the 'postgres' system user (runuser), which
# owns the folder. Each pg_autoctl service runs detached (setsid) in its own
# process group; pg_autoctl keeps its pid files under xdg/run/. Progress goes
# to stderr; 'env', 'primary', 'kill-primary' and 'wait-failover' write their
# answer to stdout.
set -euo pipefail

log() { printf 'pg-ha.sh: %s\n' "$*" >&2; }
die() { printf 'pg-ha.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

ROOT=${FACTORD_PG_HA_DIR:-${TMPDIR:-/tmp}/factord-pg-ha}
case "$ROOT" in /*) ;; *) ROOT=$PWD/$ROOT ;; esac
ROOT=${ROOT%/}
PORT=${FACTORD_PG_HA_PORT:-55600}
PG_BIN=${FACTORD_PG_BIN:-/usr/lib/postgresql/15/bin}
FAST=${FACTORD_PG_HA_FAST:-0}
START_TIMEOUT=${FACTORD_PG_HA_START_TIMEOUT:-180}

[[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1024 && "$PORT" -le 65533 ]] || die "FACTORD_PG_HA_PORT='$PORT' must be a number in 1024..65533"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "FACTORD_PG_HA_START_TIMEOUT='$START_TIMEOUT' must be a number of seconds"
[[ "$FAST" == 0 || "$FAST" == 1 ]] || die "FACTORD_PG_HA_FAST='$FAST' must be 0 or 1"
[[ "$ROOT" != *[\'\ ]* ]] || die "FACTORD_PG_HA_DIR must not contain a single quote or a space"
case "$ROOT/" in
    "$REPO_DIR"/.factord/*) ;;
    "$REPO_DIR"/*) die "$ROOT is inside the repository; set FACTORD_PG_HA_DIR elsewhere (or under .factord/)" ;;
esac

MON_PORT=$PORT
A_PORT=$((PORT + 1))
B_PORT=$((PORT + 2))
MARKER=$ROOT/.factord-pg-ha
LOG_DIR=$ROOT/log
XDG=$ROOT/xdg
MON_URI="postgres://autoctl_node@127.0.0.1:$MON_PORT/pg_auto_failover?sslmode=prefer"
DB_USER=factord
DB_NAME=factord
URL="postgresql://$DB_USER@127.0.0.1:$A_PORT,127.0.0.1:$B_PORT/$DB_NAME?target_session_attrs=read-write"

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# Runs a command as the owner of the clusters.
as_pg() {
    if ((IS_ROOT)); then
        # cd /: postgres may not be allowed into the caller's folder.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# pg_autoctl keeps its config, state and pid files under XDG_* folders
# (default: the postgres user's home and /tmp/pg_autoctl); ours live in the
# folder, so --wipe removes everything. initdb (run by pg_autoctl) takes its
# encoding from the locale: C.UTF-8 gives UTF8.
autoctl() {
    as_pg env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA -u PGSERVICE \
        XDG_CONFIG_HOME="$XDG/config" XDG_DATA_HOME="$XDG/share" XDG_RUNTIME_DIR="$XDG/run" \
        LANG=C.UTF-8 LC_ALL=C.UTF-8 pg_autoctl "$@"
}

node_dir() { printf '%s/%s\n' "$ROOT" "$1"; }
node_port() {
    case "$1" in
        monitor) echo "$MON_PORT" ;;
        a) echo "$A_PORT" ;;
        b) echo "$B_PORT" ;;
        *) die "unknown node '$1'" ;;
    esac
}
port_node() {
    case "$1" in
        "$A_PORT") echo a ;;
        "$B_PORT") echo b ;;
        *) return 1 ;;
    esac
}
other_node() { if [[ "$1" == a ]]; then echo b; else echo a; fi; }

check_tools() {
    command -v pg_autoctl >/dev/null 2>&1 \
        || die "pg_autoctl not found (install postgresql-15-auto-failover: scripts/deps.sh)"
    [[ -x "$PG_BIN/pg_ctl" ]] \
        || die "PostgreSQL 15 server binaries not found in $PG_BIN (install postgresql-15: scripts/deps.sh, or set FACTORD_PG_BIN)"
    command -v psql >/dev/null 2>&1 || die "psql not found (install postgresql-client-15: scripts/deps.sh)"
    command -v pg_isready >/dev/null 2>&1 || die "pg_isready not found (install postgresql-client-15: scripts/deps.sh)"
    command -v setsid >/dev/null 2>&1 || die "setsid not found (util-linux)"
    if ((IS_ROOT)); then
        command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux); needed to run PostgreSQL as 'postgres' when root"
        id -u postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' system user (install postgresql-15: scripts/deps.sh)"
    fi
}

lock() {
    mkdir -p "$(dirname "$ROOT")"
    exec 9>"$ROOT.lock"
    flock 9 || die "cannot lock $ROOT.lock"
}

# Seconds since the epoch with a fraction, and a difference of two of them.
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f\n", b - a }'; }

created() { [[ -f "$XDG/config/pg_autoctl$(node_dir "$1")/pg_autoctl.cfg" && -f "$(node_dir "$1")/PG_VERSION" ]]; }

# pid (= process group, it runs under setsid) of a node's pg_autoctl
# service, from pg_autoctl's own pid file; empty when it does not run.
service_pid() {
    local f pid
    f="$XDG/run/pg_autoctl$(node_dir "$1")/pg_autoctl.pid"
    [[ -f "$f" ]] || return 0
    pid=$(head -n 1 "$f" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    [[ -r "/proc/$pid/cmdline" ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "pg_autoctl" || return 0
    echo "$pid"
}

running() { [[ -n "$(service_pid "$1")" ]]; }

# pid of a node's postmaster when it runs (line 1 of postmaster.pid).
postmaster_pid() {
    local pid
    pid=$(sed -n 1p "$(node_dir "$1")/postmaster.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-D $(node_dir "$1")" || return 0
    echo "$pid"
}

port_in_use() {
    command -v ss >/dev/null 2>&1 || return 1
    [[ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]]
}

print_log_tail() {
    local f=$1
    if [[ -s "$f" ]]; then
        log "last lines of $f:"
        tail -n 30 "$f" | sed 's/^/    /' >&2
    fi
}

# psql on the monitor's database, one value per line, fields split by '|'.
mon_sql() {
    psql -X -q -h 127.0.0.1 -p "$MON_PORT" -U autoctl_node -d pg_auto_failover -tA \
        -v ON_ERROR_STOP=1 -c "$1" 2>/dev/null
}

node_sql() {
    PGCONNECT_TIMEOUT=3 timeout 10 psql -X -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -tA \
        -v ON_ERROR_STOP=1 -c "$2" 2>/dev/null
}

# Port of the node the monitor holds as primary; empty if none.
monitor_primary_port() {
    mon_sql "select primary_port from pgautofailover.get_primary('default', 0)" | head -n 1 || true
}

# Reported and assigned state of a node, as "reported|goal".
node_state() {
    mon_sql "select reportedstate || '|' || goalstate from pgautofailover.node where nodename = '$1'" || true
}

node_id() { mon_sql "select nodeid from pgautofailover.node where nodename = '$1'" || true; }

prepare_folder() {
    if [[ -d "$ROOT" && ! -f "$MARKER" && -n "$(ls -A "$ROOT" 2>/dev/null)" ]]; then
        die "$ROOT exists, is not empty and was not made by pg-ha.sh; choose another FACTORD_PG_HA_DIR"
    fi
    mkdir -p "$ROOT" "$LOG_DIR" "$XDG/config" "$XDG/share" "$XDG/run"
    touch "$MARKER"
    if ((IS_ROOT)); then
        chown -R postgres:postgres "$ROOT"
        as_pg test -w "$ROOT" -a -x "$ROOT" \
            || die "the postgres user cannot write to $ROOT (a parent folder is closed to other users?); set FACTORD_PG_HA_DIR to a folder under /tmp"
    fi
}

# Our settings: factord-ha.conf, included last by postgresql.conf (after
# pg_autoctl's postgresql-auto-failover.conf, which comes first), rewritten on
# each start. The standby gets both files with its base backup.
write_conf() {
    local name=$1 dir conf
    dir=$(node_dir "$name")
    conf=$dir/factord-ha.conf
    if ! grep -q "^include_if_exists = 'factord-ha.conf'" "$dir/postgresql.conf"; then
        as_pg sh -c "printf '\n# factord: settings written by scripts/pg-ha.sh\ninclude_if_exists = '\''factord-ha.conf'\''\n' >>'$dir/postgresql.conf'"
    fi
    # shellcheck disable=SC2016 # the $0 is sh -c's
    {
        echo "# Written by factord scripts/pg-ha.sh on each start; edits are overwritten."
        echo "# synchronous_commit stays on (pg_autoctl sets it): a COMMIT returns once"
        echo "# the synchronous standby has the WAL on disk."
        if [[ "$name" == monitor ]]; then
            if [[ "$FAST" == 1 ]]; then
                echo "# FACTORD_PG_HA_FAST=1: declare a node dead within about 5 s."
                echo "pgautofailover.health_check_period = 1000"
                echo "pgautofailover.health_check_timeout = 1000"
                echo "pgautofailover.health_check_max_retries = 1"
                echo "pgautofailover.health_check_retry_delay = 1000"
                echo "pgautofailover.node_considered_unhealthy_timeout = 5000"
                echo "pgautofailover.primary_demote_timeout = 10000"
            fi
        else
            # The same values on both nodes: a standby needs max_connections
            # at least the primary's.
            echo "max_connections = 200"
            echo "max_wal_size = 4GB"
            echo "wal_compression = lz4"
        fi
        echo "log_line_prefix = '%m [%p] %q%u@%d '"
    } | as_pg sh -c 'cat >"$0.tmp" && mv -f "$0.tmp" "$0"' "$conf"
}

# Starts a node's pg_autoctl service (which starts its postgres) detached.
# setsid twice: runuser out of the caller's session (it would pass a
# terminal's SIGHUP on), pg_autoctl in a process group of its own that
# kill-primary can kill whole. 9>&-: nothing may keep our lock.
run_service() {
    local name=$1 dir pid i
    dir=$(node_dir "$name")
    if ((IS_ROOT)); then
        (cd / && setsid -f runuser -u postgres -- setsid env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA -u PGSERVICE \
            XDG_CONFIG_HOME="$XDG/config" XDG_DATA_HOME="$XDG/share" XDG_RUNTIME_DIR="$XDG/run" \
            LANG=C.UTF-8 LC_ALL=C.UTF-8 nohup pg_autoctl run --pgdata "$dir" \
            >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&-)
    else
        setsid -f env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA -u PGSERVICE \
            XDG_CONFIG_HOME="$XDG/config" XDG_DATA_HOME="$XDG/share" XDG_RUNTIME_DIR="$XDG/run" \
            LANG=C.UTF-8 LC_ALL=C.UTF-8 nohup pg_autoctl run --pgdata "$dir" \
            >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&-
    fi
    for ((i = 0; i < 100; i++)); do
        pid=$(service_pid "$name")
        if [[ -n "$pid" ]]; then
            log "started pg_autoctl for $name (pid $pid, port $(node_port "$name"), log $LOG_DIR/$name.log)"
            return 0
        fi
        sleep 0.1
    done
    print_log_tail "$LOG_DIR/$name.log"
    die "pg_autoctl run for $name did not start"
}

wait_accepting() {
    local name=$1 port deadline
    port=$(node_port "$name")
    deadline=$((SECONDS + 60))
    until pg_isready -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1; do
        if ((SECONDS >= deadline)) || ! running "$name"; then
            print_log_tail "$LOG_DIR/$name.log"
            die "$name does not accept connections on 127.0.0.1:$port"
        fi
        sleep 0.2
    done
}

create_monitor() {
    log "creating the monitor on 127.0.0.1:$MON_PORT"
    if ! autoctl create monitor --pgdata "$(node_dir monitor)" --pgport "$MON_PORT" \
            --listen 127.0.0.1 --hostname 127.0.0.1 --auth trust --no-ssl \
            --pgctl "$PG_BIN/pg_ctl" >>"$LOG_DIR/monitor.log" 2>&1 9>&-; then
        print_log_tail "$LOG_DIR/monitor.log"
        die "pg_autoctl create monitor failed"
    fi
}

# pg_autoctl create postgres (without --run) registers the node, makes it
# (initdb for the first node, pg_basebackup from the primary for the second,
# which needs the primary's keeper running) and exits with postgres stopped.
# --auth trust: pg_autoctl's own pg_hba rules (monitor, replication) trust
# 127.0.0.1; initdb's default 'host all all 127.0.0.1/32 trust' (pg_ctl
# initdb --auth=trust) admits factord, and the standby copies it.
create_node() {
    local name=$1
    log "creating node $name on 127.0.0.1:$(node_port "$name")"
    if ! autoctl create postgres --pgdata "$(node_dir "$name")" \
            --pgport "$(node_port "$name")" --listen 127.0.0.1 --hostname 127.0.0.1 \
            --name "$name" --auth trust --no-ssl --pgctl "$PG_BIN/pg_ctl" \
            --monitor "$MON_URI" >>"$LOG_DIR/$name.log" 2>&1 9>&-; then
        print_log_tail "$LOG_DIR/$name.log"
        die "pg_autoctl create postgres for node $name failed"
    fi
}

# Waits until the monitor reports a node in one of the given states, both
# reported and assigned.
wait_state() {
    local name=$1 timeout=$2 states=$3 st deadline
    deadline=$((SECONDS + timeout))
    while :; do
        st=$(node_state "$name")
        if [[ "${st%%|*}" == "${st##*|}" && " $states " == *" ${st%%|*} "* ]]; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            print_log_tail "$LOG_DIR/$name.log"
            die "node $name is '${st:-unknown}' (reported|assigned) after $timeout s, not one of: $states"
        fi
        sleep 0.3
    done
}

# 0 when the primary on port $1 lists the standby node $2 in
# synchronous_standby_names and streams to it synchronously. pg_autoctl
# writes 'ANY 1 (pgautofailover_standby_<id>)', which PostgreSQL reports as
# sync_state 'quorum'; with one listed standby every commit waits for it, as
# with 'sync'.
sync_to() {
    local pport=$1 standby=$2 id names st
    id=$(node_id "$standby")
    [[ -n "$id" ]] || return 1
    names=$(node_sql "$pport" "show synchronous_standby_names") || return 1
    [[ "$names" == *"pgautofailover_standby_$id"* ]] || return 1
    st=$(node_sql "$pport" "select sync_state from pg_stat_replication where application_name = 'pgautofailover_standby_$id' and state = 'streaming'") || return 1
    [[ "$st" == sync || "$st" == quorum ]]
}

# Waits for a primary and a synchronous secondary; echoes nothing.
wait_pair() {
    local timeout=$1 deadline pport pname sname
    deadline=$((SECONDS + timeout))
    while :; do
        pport=$(monitor_primary_port)
        if pname=$(port_node "$pport" 2>/dev/null); then
            sname=$(other_node "$pname")
            if [[ "$(node_state "$pname")" == "primary|primary" && "$(node_state "$sname")" == "secondary|secondary" ]] \
                    && sync_to "$pport" "$sname"; then
                return 0
            fi
        fi
        if ((SECONDS >= deadline)); then
            autoctl show state --pgdata "$(node_dir monitor)" >&2 || true
            die "no primary with a synchronous secondary after $timeout s (logs in $LOG_DIR)"
        fi
        sleep 0.3
    done
}

ensure_database() {
    local pport=$1 sql
    sql="select count(*) from pg_roles where rolname = '$DB_USER'"
    if [[ "$(node_sql "$pport" "$sql")" != 1 ]]; then
        node_sql "$pport" "create role $DB_USER login superuser" >/dev/null || die "could not create role $DB_USER"
        log "created role $DB_USER"
    fi
    sql="select count(*) from pg_database where datname = '$DB_NAME'"
    if [[ "$(node_sql "$pport" "$sql")" != 1 ]]; then
        # Like scripts/pg.sh's databases: UTF8, C collation.
        node_sql "$pport" "create database $DB_NAME owner $DB_USER template template0 encoding 'UTF8' locale 'C'" >/dev/null \
            || die "could not create database $DB_NAME"
        log "created database $DB_NAME (owner $DB_USER)"
    fi
}

cmd_start() {
    check_tools
    lock
    local t0 name pport
    t0=$(now)
    if ! running monitor; then
        for name in monitor a b; do
            running "$name" && continue
            ! port_in_use "$(node_port "$name")" \
                || die "port $(node_port "$name") is already in use by another server; set FACTORD_PG_HA_PORT to another base port"
        done
        prepare_folder
        created monitor || create_monitor
        write_conf monitor
        run_service monitor
    else
        write_conf monitor
        psql -X -q -h 127.0.0.1 -p "$MON_PORT" -U autoctl_node -d pg_auto_failover \
            -c "select pg_reload_conf()" >/dev/null 2>&1 || true
    fi
    wait_accepting monitor
    for name in a b; do
        if ! created "$name"; then
            create_node "$name"
            write_conf "$name"
            run_service "$name"
            if [[ "$name" == a ]]; then
                # a first: it becomes the primary, b its standby.
                wait_state a 120 "single primary wait_primary"
            fi
        elif ! running "$name"; then
            write_conf "$name"
            run_service "$name"
        fi
    done
    wait_pair "$START_TIMEOUT"
    pport=$(monitor_primary_port)
    ensure_database "$pport"
    log "primary $(port_node "$pport") on 127.0.0.1:$pport, synchronous secondary $(other_node "$(port_node "$pport")"), after $(since "$t0") s"
    log "$URL"
}

# Stops one service: pg_autoctl stop (postgres fast shutdown), then SIGTERM,
# then SIGKILL to its process group; then any postmaster left behind.
stop_service() {
    local name=$1 pid pm i
    pid=$(service_pid "$name")
    if [[ -n "$pid" ]]; then
        autoctl stop --pgdata "$(node_dir "$name")" >/dev/null 2>&1 || true
        for ((i = 0; i < 300 && ${#pid} > 0; i++)); do
            kill -0 "$pid" 2>/dev/null || pid=
            [[ -n "$pid" ]] && sleep 0.2
        done
        if [[ -n "$pid" ]]; then
            log "pg_autoctl for $name did not stop within 60 s; SIGKILL to its process group"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        log "stopped $name"
    fi
    pm=$(postmaster_pid "$name")
    if [[ -n "$pm" ]]; then
        log "postmaster of $name (pid $pm) outlived pg_autoctl; fast shutdown"
        as_pg "$PG_BIN/pg_ctl" stop -D "$(node_dir "$name")" -m fast -w -t 30 >/dev/null 2>&1 \
            || kill -KILL "$pm" 2>/dev/null || true
    fi
}

cmd_stop() {
    local wipe=0
    case "${1:-}" in
        "") ;;
        --wipe) wipe=1 ;;
        *) die "unknown option '$1' for stop (expected --wipe)" ;;
    esac
    if [[ -e "$ROOT" ]]; then
        lock
        # Both nodes at once, so that neither is promoted while the other stops.
        stop_service a &
        stop_service b &
        wait
        stop_service monitor
    fi
    if ((wipe)) && [[ -e "$ROOT" ]]; then
        [[ -f "$MARKER" ]] || die "refusing to remove $ROOT: it has no $(basename "$MARKER") marker (not made by pg-ha.sh)"
        rm -rf "$ROOT"
        rm -f "$ROOT.lock"
        log "removed $ROOT"
    fi
}

cmd_status() {
    check_tools
    running monitor || { log "the monitor is not running ($ROOT)"; return 1; }
    autoctl show state --pgdata "$(node_dir monitor)"
}

cmd_primary() {
    local p
    p=$(monitor_primary_port)
    [[ -n "$p" ]] || die "no primary (is the pair running? scripts/pg-ha.sh status)"
    echo "$p"
}

cmd_kill_primary() {
    local only_pm=0 pport name pid pm i
    case "${1:-}" in
        "") ;;
        --postmaster) only_pm=1 ;;
        *) die "unknown option '$1' for kill-primary (expected --postmaster)" ;;
    esac
    pport=$(cmd_primary)
    name=$(port_node "$pport") || die "the monitor's primary port $pport is neither node's"
    pm=$(postmaster_pid "$name")
    if ((only_pm)); then
        [[ -n "$pm" ]] || die "node $name has no running postmaster"
        kill -KILL "$pm"
        log "SIGKILL to the postmaster of node $name (pid $pm, port $pport); its pg_autoctl restarts it"
    else
        pid=$(service_pid "$name")
        [[ -n "$pid" ]] || die "pg_autoctl of node $name does not run"
        kill -KILL -- "-$pid"
        log "SIGKILL to node $name's process group: pg_autoctl pid $pid and postmaster pid ${pm:-none} (port $pport)"
        for ((i = 0; i < 50; i++)); do
            [[ -z "$pm" ]] || ! kill -0 "$pm" 2>/dev/null && break
            sleep 0.1
        done
    fi
    echo "$pport"
}

cmd_start_node() {
    local name=${1:-} t0
    [[ "$name" == a || "$name" == b ]] || die "usage: scripts/pg-ha.sh start-node <a|b>"
    check_tools
    lock
    running monitor || die "the monitor is not running: scripts/pg-ha.sh start"
    created "$name" || die "node $name was never created: scripts/pg-ha.sh start"
    t0=$(now)
    if running "$name"; then
        log "node $name already runs"
    else
        write_conf "$name"
        run_service "$name"
    fi
    wait_state "$name" "$START_TIMEOUT" "secondary"
    local deadline=$((SECONDS + 60))
    until sync_to "$(monitor_primary_port)" "$name"; do
        ((SECONDS < deadline)) || die "node $name is secondary but not a synchronous standby after 60 s"
        sleep 0.3
    done
    log "node $name is a synchronous secondary of 127.0.0.1:$(monitor_primary_port) after $(since "$t0") s"
}

cmd_wait_failover() {
    local old=${1:-} timeout=${2:-180} oldname newname nport t0 deadline
    [[ -n "$old" ]] || die "usage: scripts/pg-ha.sh wait-failover <old primary port> [timeout]"
    [[ "$timeout" =~ ^[0-9]+$ ]] || die "timeout '$timeout' must be a number of seconds"
    oldname=$(port_node "$old") || die "port $old is neither node's ($A_PORT, $B_PORT)"
    newname=$(other_node "$oldname")
    nport=$(node_port "$newname")
    t0=$(now)
    deadline=$((SECONDS + timeout))
    # The check factord's libpq makes (target_session_attrs=read-write:
    # neither in recovery nor default_transaction_read_only), then a real
    # write: a freshly promoted node is out of recovery some seconds before
    # it takes writes.
    until timeout 5 psql -X -q -tA \
            "postgresql://$DB_USER@127.0.0.1:$nport/$DB_NAME?target_session_attrs=read-write&connect_timeout=2" \
            -c "create temp table factord_ha_probe (i int)" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            autoctl show state --pgdata "$(node_dir monitor)" >&2 || true
            die "node $newname (port $nport) does not accept writes after $timeout s"
        fi
        sleep 0.2
    done
    log "node $newname (127.0.0.1:$nport) is primary and accepts writes"
    since "$t0"
}

case "${1:-}" in
    start)   shift; [[ $# -eq 0 ]] || die "start takes no arguments"; cmd_start ;;
    stop)    shift; [[ $# -le 1 ]] || die "usage: scripts/pg-ha.sh stop [--wipe]"; cmd_stop "$@" ;;
    status)  shift; cmd_status ;;
    env)     shift; printf "export FACTORD_DATABASE_URL='%s'\n" "$URL" ;;
    primary) shift; cmd_primary ;;
    kill-primary) shift; [[ $# -le 1 ]] || die "usage: scripts/pg-ha.sh kill-primary [--postmaster]"; cmd_kill_primary "$@" ;;
    start-node) shift; [[ $# -eq 1 ]] || die "usage: scripts/pg-ha.sh start-node <a|b>"; cmd_start_node "$1" ;;
    wait-failover) shift; [[ $# -ge 1 && $# -le 2 ]] || die "usage: scripts/pg-ha.sh wait-failover <old primary port> [timeout]"; cmd_wait_failover "$@" ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) usage; die "unknown subcommand '$1'" ;;
esac
