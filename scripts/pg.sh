#!/usr/bin/env bash
# scripts/pg.sh - a throwaway PostgreSQL 15 cluster for factord's development
# and tests: listens on 127.0.0.1 only, trust authentication (loopback only),
# superuser 'factord', databases 'factord' and 'factord_test'.
#
# Usage: scripts/pg.sh start | stop [--wipe] | status | env | url
#   start   initdb once, start the server, create the databases; a no-op
#           when it already runs
#   stop    fast shutdown (pg_ctl stop -m fast); --wipe also removes the folder
#   status  exit 0 when the server accepts connections, 1 otherwise
#   url     print postgresql://factord@127.0.0.1:<port>/factord
#   env     print export lines for FACTORD_DATABASE_URL (and
#           FACTORD_TEST_DATABASE_URL, the factord_test database)
#
# Environment:
#   FACTORD_PG_DIR    folder (default ${TMPDIR:-/tmp}/factord-pg), holding
#                     data/ (the cluster), sock/ (unix socket), postgresql.log
#   FACTORD_PG_PORT   TCP port (default 55432)
#   FACTORD_PG_BIN    server binaries (default /usr/lib/postgresql/15/bin)
#   FACTORD_PG_TLS=1  also serve TLS: a CA and a server certificate for
#                     localhost and 127.0.0.1 are made once in tls/ (openssl),
#                     and 'env' prints FACTORD_PG_TLS_CA, the CA's file, for
#                     sslmode=verify-full clients (tests/integration/pg_tls.sh)
#
# PostgreSQL refuses to run as root: as root the folder belongs to the
# 'postgres' system user and initdb/pg_ctl run through 'runuser -u postgres'.
# Progress goes to stderr; only 'env' and 'url' write to stdout.
set -euo pipefail

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { printf 'pg.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib/test-certs.sh
. "$SCRIPT_DIR/lib/test-certs.sh"

PG_ROOT=${FACTORD_PG_DIR:-${TMPDIR:-/tmp}/factord-pg}
case "$PG_ROOT" in /*) ;; *) PG_ROOT=$PWD/$PG_ROOT ;; esac
PG_ROOT=${PG_ROOT%/}
PORT=${FACTORD_PG_PORT:-55432}
PG_BIN=${FACTORD_PG_BIN:-/usr/lib/postgresql/15/bin}

[[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1024 && "$PORT" -le 65535 ]] || die "FACTORD_PG_PORT='$PORT' must be a number in 1024..65535"
[[ "$PG_ROOT" != *"'"* ]] || die "FACTORD_PG_DIR must not contain a single quote"
# Inside the repository only under the git-ignored state folder .factord/
# (the quick start keeps its throwaway cluster there).
case "$PG_ROOT/" in
    "$REPO_DIR"/.factord/*) ;;
    "$REPO_DIR"/*) die "$PG_ROOT is inside the repository; set FACTORD_PG_DIR elsewhere (or under .factord/)" ;;
esac

PGDATA_DIR=$PG_ROOT/data
SOCK_DIR=$PG_ROOT/sock
TLS_DIR=$PG_ROOT/tls
TLS=${FACTORD_PG_TLS:-0}
LOG_FILE=$PG_ROOT/postgresql.log
MARKER=$PG_ROOT/.factord-pg
DB_USER=factord
DATABASES=(factord factord_test)
URL=postgresql://$DB_USER@127.0.0.1:$PORT/factord
TEST_URL=postgresql://$DB_USER@127.0.0.1:$PORT/factord_test

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# Runs a server-side command as the cluster's owner.
as_pg() {
    if ((IS_ROOT)); then
        # cd /: postgres may not be allowed into the caller's folder.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

check_tools() {
    [[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] \
        || die "PostgreSQL 15 server binaries not found in $PG_BIN (install postgresql-15: scripts/deps.sh, or set FACTORD_PG_BIN)"
    command -v psql >/dev/null 2>&1 || die "psql not found (install postgresql-client-15: scripts/deps.sh)"
    command -v pg_isready >/dev/null 2>&1 || die "pg_isready not found (install postgresql-client-15: scripts/deps.sh)"
    if ((IS_ROOT)); then
        command -v runuser >/dev/null 2>&1 || die "runuser not found (util-linux); needed to run PostgreSQL as 'postgres' when root"
        id -u postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' system user (install postgresql-15: scripts/deps.sh)"
    fi
}

lock() {
    mkdir -p "$(dirname "$PG_ROOT")"
    exec 9>"$PG_ROOT.lock"
    flock 9 || die "cannot lock $PG_ROOT.lock"
}

initialized() { [[ -f "$PGDATA_DIR/PG_VERSION" ]]; }

# 0 when the postmaster of this data folder runs.
running() {
    initialized || return 1
    as_pg "$PG_BIN/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1
}

# Port the running postmaster listens on (line 4 of postmaster.pid).
running_port() { sed -n 4p "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true; }

ready() { pg_isready -q -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -t 2 >/dev/null 2>&1; }

port_in_use() {
    command -v ss >/dev/null 2>&1 || return 1
    [[ -n "$(ss -Hltn "( sport = :$PORT )" 2>/dev/null)" ]]
}

print_log_tail() {
    local f=${1:-$LOG_FILE}
    if [[ -s "$f" ]]; then
        log "last lines of $f:"
        tail -n 30 "$f" | sed 's/^/    /' >&2
    fi
}

prepare_folder() {
    if [[ -d "$PG_ROOT" && ! -f "$MARKER" && -n "$(ls -A "$PG_ROOT" 2>/dev/null)" ]]; then
        die "$PG_ROOT exists, is not empty and was not made by pg.sh; choose another FACTORD_PG_DIR"
    fi
    mkdir -p "$PG_ROOT" "$SOCK_DIR"
    touch "$MARKER"
    if ((IS_ROOT)); then
        chown postgres:postgres "$PG_ROOT" "$SOCK_DIR" "$MARKER"
        [[ ! -e "$LOG_FILE" ]] || chown postgres:postgres "$LOG_FILE"
        as_pg test -w "$PG_ROOT" -a -x "$PG_ROOT" \
            || die "the postgres user cannot write to $PG_ROOT (a parent folder is closed to other users?); set FACTORD_PG_DIR to a folder under /tmp"
    fi
    local sock_path="$SOCK_DIR/.s.PGSQL.$PORT"
    ((${#sock_path} <= 107)) || die "unix socket path $sock_path is longer than 107 bytes; use a shorter FACTORD_PG_DIR"
}

init_cluster() {
    initialized && return 0
    log "initdb in $PGDATA_DIR"
    local init_log=$PG_ROOT/initdb.log
    : >"$init_log"
    ((IS_ROOT)) && chown postgres:postgres "$init_log"
    if ! as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" --auth=trust -U "$DB_USER" \
            --encoding=UTF8 --locale=C >"$init_log" 2>&1; then
        print_log_tail "$init_log"
        die "initdb failed (full output in $init_log)"
    fi
    # Our settings live in factord.conf, rewritten on every start.
    as_pg sh -c "printf '\n# factord: settings written by scripts/pg.sh\ninclude_if_exists = '\''factord.conf'\''\n' >>'$PGDATA_DIR/postgresql.conf'"
}

# A CA and a server certificate for localhost and 127.0.0.1
# (scripts/lib/test-certs.sh), made once; the server's key belongs to the
# server's user.
ensure_tls() {
    make_test_certs "$TLS_DIR" "factord test PostgreSQL CA" "$PG_ROOT/openssl.log" \
        || die "cannot make the TLS certificates (see $PG_ROOT/openssl.log)"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$TLS_DIR/server.key" "$TLS_DIR/server.crt"; fi
}

write_conf() {
    local conf=$PGDATA_DIR/factord.conf
    # shellcheck disable=SC2016 # the $0/$1 are sh -c's
    as_pg sh -c 'cat >"$0.tmp" && mv -f "$0.tmp" "$0"' "$conf" <<EOF
# Written by factord scripts/pg.sh on each start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = 200
shared_buffers = 256MB
# fsync and synchronous_commit keep their defaults (on).
# Write-heavy settings (docs/operations.md, "PostgreSQL"): a checkpoint
# every 1 GB of WAL came every 16-20 s under load, and after each one the
# first change to every page logs the whole page (commits stalled up to
# 0.8 s); full-page images are compressed, and checkpoints come less often.
max_wal_size = 4GB
wal_compression = lz4
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if [[ $TLS == 1 ]]; then
        # shellcheck disable=SC2016 # the $0 is sh -c's
        as_pg sh -c 'cat >>"$0"' "$conf" <<EOF
ssl = on
ssl_cert_file = '$TLS_DIR/server.crt'
ssl_key_file = '$TLS_DIR/server.key'
EOF
    fi
}

ensure_databases() {
    local existing db
    existing=$(psql -X -q -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres -tA \
        -c "select datname from pg_database" 2>&1) \
        || die "cannot query the server on 127.0.0.1:$PORT: $existing"
    for db in "${DATABASES[@]}"; do
        if ! grep -qx "$db" <<<"$existing"; then
            psql -X -q -h 127.0.0.1 -p "$PORT" -U "$DB_USER" -d postgres \
                -c "create database \"$db\"" >/dev/null \
                || die "could not create database $db"
            log "created database $db"
        fi
    done
}

cmd_start() {
    check_tools
    lock
    if running; then
        local rport
        rport=$(running_port)
        [[ -z "$rport" || "$rport" == "$PORT" ]] \
            || die "the cluster in $PGDATA_DIR already runs on port $rport, not $PORT; stop it first"
        if ! ready; then
            log "server process runs; waiting for it to accept connections"
            wait_ready
        fi
        ensure_databases
        log "PostgreSQL already running at 127.0.0.1:$PORT ($PGDATA_DIR)"
        return 0
    fi
    if port_in_use; then
        die "port $PORT on this machine is already in use by another server; set FACTORD_PG_PORT to another port"
    fi
    prepare_folder
    init_cluster
    if [[ $TLS == 1 ]]; then ensure_tls; fi
    write_conf
    log "starting PostgreSQL on 127.0.0.1:$PORT ($PGDATA_DIR)"
    local t0=$SECONDS
    # 9>&-: the server must not inherit (and keep) our lock.
    if ! as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -l "$LOG_FILE" -w -t 60 \
            >/dev/null 2>"$PG_ROOT/pg_ctl.err" 9>&-; then
        cat "$PG_ROOT/pg_ctl.err" >&2 || true
        print_log_tail
        die "pg_ctl start failed"
    fi
    rm -f "$PG_ROOT/pg_ctl.err"
    wait_ready
    ensure_databases
    log "PostgreSQL is up at 127.0.0.1:$PORT after $((SECONDS - t0)) s"
}

wait_ready() {
    local deadline=$((SECONDS + 30))
    until ready; do
        if ((SECONDS >= deadline)); then
            print_log_tail
            die "PostgreSQL does not accept connections on 127.0.0.1:$PORT after 30 s"
        fi
        sleep 0.3
    done
}

cmd_stop() {
    local wipe=0
    case "${1:-}" in
        "") ;;
        --wipe) wipe=1 ;;
        *) die "unknown option '$1' for stop (expected --wipe)" ;;
    esac
    if [[ -e "$PG_ROOT" ]]; then
        check_tools
        lock
    fi
    if running; then
        log "stopping PostgreSQL ($PGDATA_DIR)"
        as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 >/dev/null \
            || die "pg_ctl stop failed (see $LOG_FILE)"
        log "PostgreSQL stopped"
    else
        log "PostgreSQL is not running ($PGDATA_DIR)"
    fi
    if ((wipe)) && [[ -e "$PG_ROOT" ]]; then
        [[ -f "$MARKER" ]] || die "refusing to remove $PG_ROOT: it has no $(basename "$MARKER") marker (not made by pg.sh)"
        rm -rf "$PG_ROOT"
        rm -f "$PG_ROOT.lock"
        log "removed $PG_ROOT"
    fi
}

cmd_status() {
    command -v pg_isready >/dev/null 2>&1 || die "pg_isready not found (install postgresql-client-15: scripts/deps.sh)"
    if ready; then
        log "PostgreSQL accepts connections at 127.0.0.1:$PORT"
        return 0
    fi
    log "PostgreSQL is not accepting connections at 127.0.0.1:$PORT"
    return 1
}

case "${1:-}" in
    start)  shift; [[ $# -eq 0 ]] || die "start takes no arguments"; cmd_start ;;
    stop)   shift; [[ $# -le 1 ]] || die "usage: scripts/pg.sh stop [--wipe]"; cmd_stop "$@" ;;
    status) shift; cmd_status ;;
    url)    shift; printf '%s\n' "$URL" ;;
    env)    shift
            printf 'export FACTORD_DATABASE_URL=%s\n' "$URL"
            printf 'export FACTORD_TEST_DATABASE_URL=%s\n' "$TEST_URL"
            if [[ $TLS == 1 ]]; then printf 'export FACTORD_PG_TLS_CA=%s\n' "$TLS_DIR/ca.crt"; fi ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) usage; die "unknown subcommand '$1'" ;;
esac
