#!/usr/bin/env bash
# bench/ha.sh - end-to-end throughput on one Kafka broker and on a 3-node
# cluster (replication 3, min.insync.replicas 2), in one run, with the ratio
# (docs/ha.md). Runs `bench/run --quick --e2e-only` against the shared
# single broker, then against scripts/kafka-cluster.sh (started here on its
# own ports and stopped and wiped at the end), then the single broker again,
# so that a drift of the machine shows as a difference between the two
# single-broker runs. PostgreSQL is the shared single server in all three.
#
# Usage: bench/ha.sh            Environment: as bench/run (FACTORD_BENCH_USERS ...)
# The cluster: FACTORD_BENCH_CLUSTER_PORT (default 29392, 6 ports from there)
# and FACTORD_BENCH_CLUSTER_DIR (default /tmp/factord-bench-kafka-cluster).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'bench/ha.sh: %s\n' "$*" >&2; }
export FACTORD_KAFKA_CLUSTER_PORT=${FACTORD_BENCH_CLUSTER_PORT:-29392}
export FACTORD_KAFKA_CLUSTER_DIR=${FACTORD_BENCH_CLUSTER_DIR:-/tmp/factord-bench-kafka-cluster}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/factord-bench-ha.XXXXXX")
cleanup() { bash "$ROOT/scripts/kafka-cluster.sh" stop --wipe >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

# The burst figure of one bench/run table: "<1 processor> <2 processors> <p99 ms>".
figures() {
    awk '/AddMyAuthFactorOTPSMS, 1 processor/ { one = $6 }
         /AddMyAuthFactorOTPSMS, 2 processors/ { two = $6 }
         /^latency p99 / { p99 = $3 }
         END { print one, two, p99 }' "$1"
}
run() { # name, then env assignments
    local name=$1; shift
    say "bench/run --quick --e2e-only: $name"
    env "$@" bash "$ROOT/bench/run" --quick --e2e-only --out "$WORK/$name.json" >"$WORK/$name.txt"
    cat "$WORK/$name.txt"
}

bash "$ROOT/scripts/kafka-cluster.sh" start
CLUSTER=$(bash "$ROOT/scripts/kafka-cluster.sh" env | sed 's/^export FACTORD_KAFKA_BROKERS=//')
# CPU seconds (user + system) the cluster's three JVMs have used so far.
cluster_cpu() {
    local n pid sum=0 hz
    hz=$(getconf CLK_TCK)
    for n in 1 2 3; do
        pid=$(bash "$ROOT/scripts/kafka-cluster.sh" pid "$n")
        sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    awk -v t="$sum" -v hz="$hz" 'BEGIN { printf "%.1f", t / hz }'
}
run single-1 FACTORD_BENCH_KAFKA_BROKERS=
c0=$(cluster_cpu) t0=$(date +%s)
run cluster FACTORD_BENCH_KAFKA_BROKERS="$CLUSTER"
c1=$(cluster_cpu) t1=$(date +%s)
run single-2 FACTORD_BENCH_KAFKA_BROKERS=
read -r s1a s1b s1p <<<"$(figures "$WORK/single-1.txt")"
read -r ca cb cp <<<"$(figures "$WORK/cluster.txt")"
read -r s2a s2b s2p <<<"$(figures "$WORK/single-2.txt")"
printf '\n%-34s %14s %14s %12s\n' "e2e AddMyAuthFactorOTPSMS" "1 processor" "2 processors" "p99 at 2000/s"
printf '%-34s %10s c/s %10s c/s %9s ms\n' "one broker (before)" "$s1a" "$s1b" "$s1p"
printf '%-34s %10s c/s %10s c/s %9s ms\n' "3 brokers, RF 3, min ISR 2" "$ca" "$cb" "$cp"
printf '%-34s %10s c/s %10s c/s %9s ms\n' "one broker (after)" "$s2a" "$s2b" "$s2p"
awk -v c="$ca" -v a="$s1a" -v b="$s2a" 'BEGIN { printf "cluster / one broker (1 processor): %.2f\n", c / ((a + b) / 2) }'
awk -v a="$c0" -v b="$c1" -v s=$((t1 - t0)) \
    'BEGIN { printf "the three brokers used %.1f CPU s in the %d s of the cluster run (this machine: %d CPUs)\n", b - a, s, '"$(nproc)"' }'
