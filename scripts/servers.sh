#!/usr/bin/env bash
# scripts/servers.sh - start or stop every local server factord's tests need:
# the throwaway PostgreSQL cluster (scripts/pg.sh) and the single-node Kafka
# broker (scripts/kafka.sh), both on 127.0.0.1 only. Used by CI, tests and
# developers.
#
# Usage: scripts/servers.sh start | stop [--wipe] | status | env
#   start   start PostgreSQL, then Kafka (each a no-op when already running),
#           then print the export lines of 'env'
#   stop    stop Kafka, then PostgreSQL; --wipe also removes their folders
#   status  exit 0 when both answer
#   env     print export lines (FACTORD_DATABASE_URL, FACTORD_TEST_DATABASE_URL,
#           FACTORD_KAFKA_BROKERS)
#
# Typical use:  eval "$(scripts/servers.sh start)"
# Progress goes to stderr, only the export lines to stdout. The FACTORD_PG_*
# and FACTORD_KAFKA_* variables of pg.sh and kafka.sh apply.
set -euo pipefail

die() { printf 'servers.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG=$SCRIPT_DIR/pg.sh
KAFKA=$SCRIPT_DIR/kafka.sh

print_env() {
    bash "$PG" env
    bash "$KAFKA" env
}

case "${1:-}" in
    start)
        shift; [[ $# -eq 0 ]] || die "start takes no arguments"
        bash "$PG" start || die "PostgreSQL did not start (see above)"
        bash "$KAFKA" start || die "Kafka did not start (see above; PostgreSQL is left running, 'scripts/servers.sh stop' stops it)"
        print_env
        ;;
    stop)
        shift
        case "${1:-}" in
            ""|--wipe) ;;
            *) die "unknown option '$1' for stop (expected --wipe)" ;;
        esac
        [[ $# -le 1 ]] || die "usage: scripts/servers.sh stop [--wipe]"
        rc=0
        bash "$KAFKA" stop "$@" || rc=1
        bash "$PG" stop "$@" || rc=1
        exit "$rc"
        ;;
    status)
        rc=0
        bash "$PG" status || rc=1
        bash "$KAFKA" status || rc=1
        exit "$rc"
        ;;
    env) print_env ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) usage; die "unknown subcommand '$1'" ;;
esac
