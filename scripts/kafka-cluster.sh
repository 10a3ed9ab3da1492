#!/usr/bin/env bash
# scripts/kafka-cluster.sh - a throwaway 3-node Apache Kafka cluster (KRaft,
# every node a combined broker+controller, 127.0.0.1 only) for factord's fault
# tests: replication factor 3, min.insync.replicas=2, no unclean leader
# election, so one node may die without losing an acknowledged record. Runs
# the jars that scripts/kafka.sh fetches; can run beside its single broker.
#
# Usage: scripts/kafka-cluster.sh start | stop [--wipe] | kill <n> |
#                                 start-node <n> | status | env |
#                                 leader <topic> <partition> | pid <n>
#   start          fetch the jars if needed, format storage once, start every
#                  node that is down and wait until each answers and lists
#                  all 3 brokers
#   stop           stop all nodes (SIGTERM, SIGKILL after 30 s); --wipe also
#                  removes the cluster's data folder
#   kill <n>       SIGKILL node n (1..3) and wait until its process is gone
#   start-node <n> start node n again and wait until it answers
#   status         one line per node (up/down); exit 0 only when all 3 answer
#   env            print 'export FACTORD_KAFKA_BROKERS=127.0.0.1:<p1>,...'
#   leader <t> <p> print the node id leading partition p of topic t
#   pid <n>        print node n's process id (exit 1 when it is down)
#
# Node i (1..3) listens on client port PORT+2*(i-1) and controller port
# PORT+2*(i-1)+1, keeps its data, log and pid file in <dir>/node<i>.
#
# Environment:
#   FACTORD_KAFKA_VERSION        Kafka version (default 3.9.1)
#   FACTORD_CACHE_DIR            jar cache root (default ~/.cache/factord)
#   FACTORD_KAFKA_CLUSTER_DIR    data folder (default ${TMPDIR:-/tmp}/factord-kafka-cluster)
#   FACTORD_KAFKA_CLUSTER_PORT   node 1's client port (default 39092; uses 6 ports)
#   FACTORD_KAFKA_START_TIMEOUT  seconds to wait for start/start-node (default 120)
#   FACTORD_KAFKA_HEAP           JVM heap flags per node (default "-Xmx384m -Xms128m")
#
# Progress goes to stderr; only 'env', 'leader' and 'pid' write to stdout, so
# eval "$(scripts/kafka-cluster.sh env)" is safe.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
KAFKA_PROG=kafka-cluster.sh
# shellcheck source-path=SCRIPTDIR source=lib/kafka-common.sh
. "$SCRIPT_DIR/lib/kafka-common.sh"

NODES=3
DATA_DIR=${FACTORD_KAFKA_CLUSTER_DIR:-${TMPDIR:-/tmp}/factord-kafka-cluster}
BASE_PORT=${FACTORD_KAFKA_CLUSTER_PORT:-39092}
START_TIMEOUT=${FACTORD_KAFKA_START_TIMEOUT:-120}
HEAP_OPTS=${FACTORD_KAFKA_HEAP:--Xmx384m -Xms128m}

check_version
check_port FACTORD_KAFKA_CLUSTER_PORT "$BASE_PORT" $((2 * NODES))
check_timeout FACTORD_KAFKA_START_TIMEOUT "$START_TIMEOUT"
DATA_DIR=$(abspath "$DATA_DIR")
check_outside_repo "cache dir" "$CACHE_DIR" FACTORD_CACHE_DIR
check_outside_repo "data dir" "$DATA_DIR" FACTORD_KAFKA_CLUSTER_DIR

MARKER=$DATA_DIR/.factord-kafka-cluster
CLUSTER_ID_FILE=$DATA_DIR/cluster.id

port_of() { printf '%s\n' $((BASE_PORT + 2 * ($1 - 1))); }
cport_of() { printf '%s\n' $((BASE_PORT + 2 * ($1 - 1) + 1)); }
node_dir() { printf '%s\n' "$DATA_DIR/node$1"; }
pid_file() { printf '%s\n' "$DATA_DIR/node$1/kafka.pid"; }
log_file() { printf '%s\n' "$DATA_DIR/node$1/kafka.log"; }
props_file() { printf '%s\n' "$DATA_DIR/node$1/server.properties"; }

declare -A LAUNCHED_AT=() BIND_RETRIES=()
VOTERS='' BROKERS=''
for ((i = 1; i <= NODES; i++)); do
    VOTERS+=${VOTERS:+,}$i@127.0.0.1:$(cport_of "$i")
    BROKERS+=${BROKERS:+,}127.0.0.1:$(port_of "$i")
done

check_node() {
    [[ "$1" =~ ^[1-9][0-9]*$ && "$1" -le "$NODES" ]] || die "node '$1' is not one of 1..$NODES"
}

lock_data_dir() {
    mkdir -p "$(dirname "$DATA_DIR")"
    exec 9>"$DATA_DIR.lock"
    flock 9 || die "cannot lock $DATA_DIR.lock"
}

# ---------------------------------------------------------------- nodes ----

# Node n's JVM, recognised by its own server.properties on the command line.
node_alive() { pid_file_alive "$(pid_file "$1")" "$(props_file "$1")"; }
node_pid() { read_pid_file "$(pid_file "$1")"; }

# kcat -L as answered by node n alone; fails when it does not answer.
node_metadata() {
    local port
    port=$(port_of "$1")
    port_silent "$port" && return 1
    kcat -b "127.0.0.1:$port" -L -m 2 2>/dev/null
}

# True when node n answers metadata requests and lists itself.
node_answers() {
    local out
    out=$(node_metadata "$1") || return 1
    [[ "$out" == *"broker $1 at 127.0.0.1:$(port_of "$1")"* ]]
}

# True when node n answers and lists every node as a live broker.
node_sees_all() {
    local out i
    out=$(node_metadata "$1") || return 1
    for ((i = 1; i <= NODES; i++)); do
        [[ "$out" == *"broker $i at 127.0.0.1:$(port_of "$i")"* ]] || return 1
    done
}

write_node_properties() {
    local n=$1 props
    props=$(props_file "$n")
    {
        node_properties "$n" "$(port_of "$n")" "$(cport_of "$n")" "$VOTERS" "$(node_dir "$n")/kraft" 3 2
        cat <<EOF
# The cluster's durability contract (issue 14): 3 copies of every topic, a
# write acknowledged with acks=all is on at least 2 of them, and an out-of-
# date replica never becomes leader.
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
EOF
    } >"$props.tmp"
    mv -f "$props.tmp" "$props"
}

# The jars and the log config come from scripts/kafka.sh fetch; the single
# broker's own settings must not make it refuse to run.
fetch_jars() {
    have_jars && have_log_config && return 0
    env -u FACTORD_KAFKA_DIR -u FACTORD_KAFKA_PORT -u FACTORD_KAFKA_START_TIMEOUT \
        bash "$SCRIPT_DIR/kafka.sh" fetch || die "scripts/kafka.sh fetch failed"
}

cluster_id() {
    local id
    if [[ ! -s "$CLUSTER_ID_FILE" ]]; then
        id=$(new_cluster_id "$DATA_DIR/storage-tool.log")
        printf '%s\n' "$id" >"$CLUSTER_ID_FILE.tmp"
        mv -f "$CLUSTER_ID_FILE.tmp" "$CLUSTER_ID_FILE"
    fi
    tr -dc 'A-Za-z0-9_-' <"$CLUSTER_ID_FILE"
}

check_ports_free() {
    local port cport
    port=$(port_of "$1") cport=$(cport_of "$1")
    if port_listening "$port" || port_listening "$cport"; then
        die "port $port or $cport (node $1) is already in use by a process not in $(pid_file "$1"); stop it or set FACTORD_KAFKA_CLUSTER_PORT"
    fi
}

# The client ports are even and inside Linux's ephemeral range (32768-60999
# by default), where connect() prefers even ports: while the nodes connect to
# each other, one of them may hold a later node's port as the local end of a
# connection (also for 60 s in TIME-WAIT after it closed), and that node's
# bind fails. Waits until no socket at all uses node n's ports, at most 65 s
# and not past deadline $2; true when they are free.
wait_ports_unused() {
    local port cport i
    port=$(port_of "$1") cport=$(cport_of "$1")
    command -v ss >/dev/null 2>&1 || { sleep 2; return 0; }
    for ((i = 0; i < 130 && SECONDS < $2; i++)); do
        [[ -z "$(ss -Htan "( sport = :$port or sport = :$cport )" 2>/dev/null)" ]] && return 0
        sleep 0.5
    done
    return 1
}

# Starts node n's JVM in the background unless it runs (returns 1 then).
launch_node() {
    local n=$1 dir id
    dir=$(node_dir "$n")
    if node_alive "$n"; then
        return 1
    fi
    check_ports_free "$n"
    mkdir -p "$dir/kraft" || die "cannot create $dir/kraft"
    rm -f "$(pid_file "$n")"
    : >"$(log_file "$n")"
    write_node_properties "$n"
    if [[ ! -f "$dir/kraft/meta.properties" ]]; then
        log "formatting node $n's KRaft storage in $dir/kraft"
        id=$(cluster_id)
        format_log_dir "$dir/kraft" "$(props_file "$n")" "$id" "$(log_file "$n")"
    fi
    LAUNCHED_AT[$n]=$SECONDS
    log "starting node $n on 127.0.0.1:$(port_of "$n") (controller $(cport_of "$n"))"
    launch_jvm "$(pid_file "$n")" "$(props_file "$n")" "$(log_file "$n")" "$HEAP_OPTS"
}

# Waits until every node in "$@" is up: answering and listing all nodes
# (check node_sees_all) or just itself (node_answers), given as $1.
wait_nodes() {
    local check=$1 t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) n pid pending
    shift
    while ((SECONDS < deadline)); do
        pending=()
        for n in "$@"; do
            if ! node_alive "$n"; then
                # Just after the launch the pid file may be missing or empty,
                # and while the launcher execs java its command line may be
                # unreadable: only a vanished process counts as dead then.
                pid=$(node_pid "$n")
                if ((SECONDS - ${LAUNCHED_AT[$n]:-0} < 5)) && { [[ -z "$pid" ]] || kill -0 "$pid" 2>/dev/null; }; then
                    pending+=("$n")
                    continue
                fi
                if grep -q 'BindException: Address already in use' "$(log_file "$n")" 2>/dev/null \
                        && ((${BIND_RETRIES[$n]:-0} < 3)); then
                    log "node $n could not bind its ports, held by another connection; waiting until they are free"
                    if wait_ports_unused "$n" "$deadline"; then
                        BIND_RETRIES[$n]=$((${BIND_RETRIES[$n]:-0} + 1))
                        log "node $n: ports free after $((SECONDS - t0)) s; starting it again"
                        launch_node "$n" || true
                        pending+=("$n")
                        continue
                    fi
                fi
                print_log_tail "$(log_file "$n")"
                if grep -q 'BindException: Address already in use' "$(log_file "$n")" 2>/dev/null; then
                    log "sockets on node $n's ports: $(ss -Htanp "( sport = :$(port_of "$n") or sport = :$(cport_of "$n") )" 2>/dev/null | tr -s ' ' | tr '\n' ';')"
                    die "node $n could not bind 127.0.0.1:$(port_of "$n")/$(cport_of "$n"); a FACTORD_KAFKA_CLUSTER_PORT below 32768 (outside the ephemeral port range) avoids this"
                fi
                die "node $n's Kafka process exited during startup"
            elif ! "$check" "$n"; then
                pending+=("$n")
            fi
        done
        if ((${#pending[@]} == 0)); then
            log "node(s) $* up after $((SECONDS - t0)) s: $BROKERS"
            return 0
        fi
        sleep 0.5
    done
    for n in "${pending[@]}"; do print_log_tail "$(log_file "$n")"; done
    [[ -n "${BIND_RETRIES[*]}" ]] && log "a FACTORD_KAFKA_CLUSTER_PORT below 32768 (outside the ephemeral port range) avoids bind failures"
    die "node(s) ${pending[*]} not up within ${START_TIMEOUT} s (processes left running; 'scripts/kafka-cluster.sh stop' ends them)"
}

# ---------------------------------------------------------------- commands -

cmd_start() {
    need java; need kcat
    lock_data_dir
    fetch_jars
    prepare_data_dir "$DATA_DIR" "$MARKER" "$DATA_DIR" FACTORD_KAFKA_CLUSTER_DIR
    local n all=()
    # Every port first, so a clash on node 3 does not leave nodes 1-2 running.
    for ((n = 1; n <= NODES; n++)); do
        node_alive "$n" || check_ports_free "$n"
    done
    for ((n = 1; n <= NODES; n++)); do
        if ! launch_node "$n"; then
            log "node $n already running (pid $(node_pid "$n"))"
        fi
        all+=("$n")
    done
    wait_nodes node_sees_all "${all[@]}"
}

cmd_start_node() {
    local n=$1
    need java; need kcat
    lock_data_dir
    [[ -f "$MARKER" ]] || die "no cluster in $DATA_DIR; run 'scripts/kafka-cluster.sh start' first"
    fetch_jars
    if ! launch_node "$n"; then
        log "node $n already running (pid $(node_pid "$n"))"
    fi
    wait_nodes node_answers "$n"
}

cmd_stop() {
    local wipe=0 n pids=()
    case "${1:-}" in
        "") ;;
        --wipe) wipe=1 ;;
        *) die "unknown option '$1' for stop (expected --wipe)" ;;
    esac
    [[ -d "$DATA_DIR" ]] && lock_data_dir
    for ((n = 1; n <= NODES; n++)); do
        if node_alive "$n"; then
            pids+=("$(node_pid "$n")")
        fi
    done
    if ((${#pids[@]})); then
        # All at once: a node stopping alone waits for the others' controller
        # quorum, which the last ones would no longer have.
        log "stopping ${#pids[@]} node(s) (pids ${pids[*]})"
        terminate "${pids[@]}"
        log "cluster stopped"
    else
        log "no node is running (no live process in $DATA_DIR/node*/kafka.pid)"
    fi
    for ((n = 1; n <= NODES; n++)); do rm -f "$(pid_file "$n")"; done
    if ((wipe)) && [[ -e "$DATA_DIR" ]]; then
        [[ -f "$MARKER" ]] || die "refusing to remove $DATA_DIR: it has no $(basename "$MARKER") marker (not made by kafka-cluster.sh)"
        rm -rf "$DATA_DIR"
        rm -f "$DATA_DIR.lock"
        log "removed $DATA_DIR"
    fi
}

cmd_kill() {
    local n=$1 pid i
    lock_data_dir
    node_alive "$n" || die "node $n is not running"
    pid=$(node_pid "$n")
    log "SIGKILL to node $n (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "node $n is gone"; return 0; }
        sleep 0.1
    done
    die "node $n (pid $pid) still exists 10 s after SIGKILL"
}

cmd_status() {
    need kcat
    local n up=0
    for ((n = 1; n <= NODES; n++)); do
        if node_answers "$n"; then
            up=$((up + 1))
            if node_alive "$n"; then
                log "node $n: up (pid $(node_pid "$n")) at 127.0.0.1:$(port_of "$n")"
            else
                log "node $n: up at 127.0.0.1:$(port_of "$n") (not started with this data dir)"
            fi
        elif node_alive "$n"; then
            log "node $n: down (process $(node_pid "$n") alive but not answering at 127.0.0.1:$(port_of "$n"))"
        else
            log "node $n: down"
        fi
    done
    ((up == NODES))
}

cmd_env() {
    printf 'export FACTORD_KAFKA_BROKERS=%s\n' "$BROKERS"
}

# From the listing of all topics: 'kcat -L -t <topic>' would auto-create a
# missing topic. Its lines: '  topic "<t>" with <n> partitions:', then
# '    partition <p>, leader <id>, replicas: ..., isrs: ...'.
cmd_leader() {
    local topic=$1 part=$2 out leader
    need kcat
    [[ "$part" =~ ^[0-9]+$ ]] || die "partition '$part' is not a number"
    out=$(kcat -b "$BROKERS" -L -m 5 2>&1) || die "no metadata from $BROKERS: $out"
    leader=$(printf '%s\n' "$out" | awk -v t="\"$topic\"" -v p="$part" '
        $1 == "topic" { in_topic = ($2 == t); if (in_topic) found = 1; next }
        in_topic && $1 == "partition" && $2 == p "," && $3 == "leader" { sub(/,$/, "", $4); print $4; exit }
        END { if (!found) print "no-topic" }')
    case "$leader" in
        no-topic) die "topic '$topic' does not exist" ;;
        "") die "topic '$topic' has no partition $part" ;;
        *[!0-9]*) die "partition $part of '$topic' has no leader (leader $leader)" ;;
    esac
    printf '%s\n' "$leader"
}

cmd_pid() {
    node_alive "$1" || die "node $1 is not running"
    printf '%s\n' "$(node_pid "$1")"
}

case "${1:-}" in
    start)      shift; [[ $# -eq 0 ]] || die "start takes no arguments"; cmd_start ;;
    stop)       shift; [[ $# -le 1 ]] || die "usage: scripts/kafka-cluster.sh stop [--wipe]"; cmd_stop "$@" ;;
    kill)       shift; [[ $# -eq 1 ]] || die "usage: scripts/kafka-cluster.sh kill <n>"; check_node "$1"; cmd_kill "$1" ;;
    start-node) shift; [[ $# -eq 1 ]] || die "usage: scripts/kafka-cluster.sh start-node <n>"; check_node "$1"; cmd_start_node "$1" ;;
    status)     shift; cmd_status ;;
    env)        shift; cmd_env ;;
    leader)     shift; [[ $# -eq 2 ]] || die "usage: scripts/kafka-cluster.sh leader <topic> <partition>"; cmd_leader "$1" "$2" ;;
    pid)        shift; [[ $# -eq 1 ]] || die "usage: scripts/kafka-cluster.sh pid <n>"; check_node "$1"; cmd_pid "$1" ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) usage; die "unknown subcommand '$1'" ;;
esac
