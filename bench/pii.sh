#!/usr/bin/env bash
# bench/pii.sh - what sealing personal data costs (docs/pii.md, "Measured").
#
# The append path with every event a phone change (`factord_bench_append
# --phone 1`: the worst case, each event carries personal data) without and
# with a master key (FACTORD_PII_KEY), alternated ROUNDS times, each in a
# fresh database; then `factord replay` of the last round's two logs: the
# plain one, the sealed one as stored, and the sealed one opened (--open).
# Prints one table: events/s of each, and sealed ÷ plain.
#
# Usage: bench/pii.sh [--seconds S] [--rounds N]   (defaults 5 and 2)
# The local servers are started when they are not running (never stopped);
# the Release build in build-bench/ is built incrementally. Progress on
# stderr, the table on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build-bench
BENCH_NAME=bench/pii.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

SECONDS_EACH=5 ROUNDS=2
while [[ $# -gt 0 ]]; do
    case $1 in
        --seconds) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { usage; exit 2; }; SECONDS_EACH=$2; shift ;;
        --rounds) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || { usage; exit 2; }; ROUNDS=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown option '$1'" ;;
    esac
    shift
done
command -v jq >/dev/null || die "jq is missing (scripts/deps.sh installs it)"
eval "$(bash "$ROOT/scripts/servers.sh" start)"
if [[ ! -f $BUILD/CMakeCache.txt ]]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFACTORD_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD" -j 2 --target factord factord_bench_append >/dev/null || die "build failed (cmake --build $BUILD)"
FACTORD=$BUILD/factord APPEND=$BUILD/factord_bench_append

admin_url=$FACTORD_DATABASE_URL
work=$(mktemp -d "${TMPDIR:-/tmp}/factord-pii.XXXXXX")
cleanup() {
    local d
    for d in $(psql -XAtq "$admin_url" -c "SELECT datname FROM pg_database WHERE datname LIKE 'factord_bench_pii_${tag}_%'" 2>/dev/null); do
        psql -q "$admin_url" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
machine_begin
export FACTORD_LOG_LEVEL=warn FACTORD_CHAIN_KEY=${FACTORD_CHAIN_KEY:-$(openssl rand -hex 32)}
unset FACTORD_CHAIN_KEY_FILE FACTORD_PII_KEY_FILE
pii_key=$(openssl rand -hex 32)
tag=$(openssl rand -hex 4)

# append MODE ROUND: one append run into a fresh database; prints events/s.
append() {
    local mode=$1 round=$2 db url
    db=factord_bench_pii_${tag}_${mode}_$round
    psql -q "$admin_url" -c "CREATE DATABASE $db" >/dev/null
    url=$(db_url "$mode" "$round")
    FACTORD_DATABASE_URL=$url "$FACTORD" migrate 2>>"$work/migrate.log" >/dev/null || die "migrate failed"
    local key=
    [[ $mode == sealed ]] && key=$pii_key
    FACTORD_DATABASE_URL=$url FACTORD_PII_KEY=$key "$APPEND" --writers 1 --batch 500 --seconds "$SECONDS_EACH" \
        --phone 1 2>>"$work/append.log" | tee -a "$work/append.json" | jq -r .events_per_s
}
# The database of a mode's round (append runs in a subshell: it is named, not remembered).
db_url() { bench_db_url "$admin_url" "factord_bench_pii_${tag}_$1_$2"; }
plain=() sealed=()
for r in $(seq 1 "$ROUNDS"); do
    plain+=("$(append plain "$r")")
    say "round $r: plain ${plain[-1]} events/s"
    sealed+=("$(append sealed "$r")")
    say "round $r: sealed ${sealed[-1]} events/s"
done

# replay URL KEY [--open]: events/s of `factord replay` into /dev/null.
replay() {
    local url=$1 key=$2; shift 2
    local n t0 t1
    n=$("$PSQL" -qAtX "$url" -c "SELECT count(*) FROM factord.events")
    t0=$(now)
    FACTORD_DATABASE_URL=$url FACTORD_PII_KEY=$key "$FACTORD" replay "$@" >/dev/null 2>>"$work/replay.log" \
        || die "replay failed: $(tail -2 "$work/replay.log")"
    t1=$(now)
    awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}
r_plain=$(replay "$(db_url plain "$ROUNDS")" "")
r_stored=$(replay "$(db_url sealed "$ROUNDS")" "$pii_key")
r_open=$(replay "$(db_url sealed "$ROUNDS")" "$pii_key" --open)

machine_end "$admin_url" "$BUILD"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
avg() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.0f", s / NR }'; }
{
    printf '\nfactord sealing cost (%s rounds of %s s; load average %s at the start, %s at the end)\n' \
        "$ROUNDS" "$SECONDS_EACH" "$load_start" "$load_end"
    printf '%s\n' "$machine_text"
    for w in "${suspect[@]}"; do printf 'SUSPECT: %s\n' "$w"; done
    printf '\n%-52s %14s %14s %8s\n' "figure" "plain" "sealed" "ratio"
    printf '%-52s %14s %14s %8s\n' "append, 1 writer, 500 phone changes a batch, ev/s" \
        "${plain[*]}" "${sealed[*]}" "$(ratio "$(avg "${sealed[@]}")" "$(avg "${plain[@]}")")"
    printf '%-52s %14s %14s %8s\n' "replay as stored, ev/s" "$r_plain" "$r_stored" "$(ratio "$r_stored" "$r_plain")"
    printf '%-52s %14s %14s %8s\n' "replay --open, ev/s" "$r_plain" "$r_open" "$(ratio "$r_open" "$r_plain")"
}
