#!/usr/bin/env bash
# scripts/kafka.sh - a throwaway single-node Apache Kafka broker (KRaft mode,
# 127.0.0.1 only) for factord's development and tests, run from the jars on
# Maven Central (no Docker, no Debian package).
#
# Usage: scripts/kafka.sh fetch | start | stop [--wipe] | status | env
#   fetch   download the broker jars into the cache (skipped when present)
#   start   fetch if needed, format storage once, start the broker and wait
#           until it answers (no-op when it already runs)
#   stop    stop the broker (SIGTERM, SIGKILL after 30 s); --wipe also
#           removes its data folder
#   status  exit 0 when the broker answers, 1 otherwise
#   env     print 'export FACTORD_KAFKA_BROKERS=127.0.0.1:<port>'
#
# Environment:
#   FACTORD_KAFKA_VERSION        Kafka version (default 3.9.1)
#   FACTORD_CACHE_DIR            jar cache root (default ~/.cache/factord)
#   FACTORD_KAFKA_DIR            data folder (default ${TMPDIR:-/tmp}/factord-kafka)
#   FACTORD_KAFKA_PORT           client port (default 19092; controller = port+1)
#   FACTORD_KAFKA_START_TIMEOUT  seconds to wait for the broker (default 90)
#   FACTORD_KAFKA_HEAP           JVM heap flags (default "-Xmx512m -Xms256m")
#
# Progress goes to stderr; only 'env' writes to stdout, so
# eval "$(scripts/kafka.sh env)" is safe.
set -euo pipefail

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0" >&2; }

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

KAFKA_VERSION=${FACTORD_KAFKA_VERSION:-3.9.1}
SCALA_VERSION=2.13
SLF4J_RELOAD4J_VERSION=1.7.36
LOG4J2_VERSION=2.24.3          # only for Kafka 4.x, see docs/kafka notes
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

CACHE_ROOT=${FACTORD_CACHE_DIR:-${HOME:?HOME is not set}/.cache/factord}
CACHE_DIR=$CACHE_ROOT/kafka-$KAFKA_VERSION
LIB_DIR=$CACHE_DIR/lib
KAFKA_JAR=$LIB_DIR/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar

DATA_DIR=${FACTORD_KAFKA_DIR:-${TMPDIR:-/tmp}/factord-kafka}
PORT=${FACTORD_KAFKA_PORT:-19092}
START_TIMEOUT=${FACTORD_KAFKA_START_TIMEOUT:-90}
HEAP_OPTS=${FACTORD_KAFKA_HEAP:--Xmx512m -Xms256m}

[[ "$KAFKA_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "FACTORD_KAFKA_VERSION='$KAFKA_VERSION' is not a version like 3.9.1"
[[ "$PORT" =~ ^[0-9]+$ && "$PORT" -ge 1024 && "$PORT" -le 65534 ]] || die "FACTORD_KAFKA_PORT='$PORT' must be a number in 1024..65534"
[[ "$START_TIMEOUT" =~ ^[0-9]+$ ]] || die "FACTORD_KAFKA_START_TIMEOUT='$START_TIMEOUT' must be a number of seconds"
CONTROLLER_PORT=$((PORT + 1))
BROKERS=127.0.0.1:$PORT
KAFKA_MAJOR=${KAFKA_VERSION%%.*}

# Folders may not exist yet: make them absolute without requiring them.
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s/%s\n' "$PWD" "$1" ;; esac; }
CACHE_DIR=$(abspath "$CACHE_DIR"); LIB_DIR=$CACHE_DIR/lib; KAFKA_JAR=$LIB_DIR/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar
DATA_DIR=$(abspath "$DATA_DIR")
case "$CACHE_DIR/" in "$REPO_DIR"/*) die "cache dir $CACHE_DIR is inside the repository; set FACTORD_CACHE_DIR elsewhere" ;; esac
case "$DATA_DIR/" in "$REPO_DIR"/*) die "data dir $DATA_DIR is inside the repository; set FACTORD_KAFKA_DIR elsewhere" ;; esac

KRAFT_DIR=$DATA_DIR/kraft
PROPS=$DATA_DIR/server.properties
PID_FILE=$DATA_DIR/kafka.pid
LOG_FILE=$DATA_DIR/kafka.log
MARKER=$DATA_DIR/.factord-kafka

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH${2:+ ($2)}; run scripts/deps.sh"; }

# ---------------------------------------------------------------- fetch ----

have_jars() { [[ -f "$KAFKA_JAR" ]]; }

write_log_config() {
    # Logs WARN and above to the console, which start redirects to
    # <data dir>/kafka.log; a few INFO lines say when the server is up.
    if [[ "$KAFKA_MAJOR" -ge 4 ]]; then
        cat >"$CACHE_DIR/log4j2.properties.tmp" <<'EOF'
# factord: Kafka broker logging (Log4j 2), WARN to the console
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = info
EOF
        mv -f "$CACHE_DIR/log4j2.properties.tmp" "$CACHE_DIR/log4j2.properties"
    else
        cat >"$CACHE_DIR/log4j.properties.tmp" <<'EOF'
# factord: Kafka broker logging (reload4j), WARN to the console
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
EOF
        mv -f "$CACHE_DIR/log4j.properties.tmp" "$CACHE_DIR/log4j.properties"
    fi
}

log_config_flag() {
    if [[ "$KAFKA_MAJOR" -ge 4 ]]; then
        printf '%s\n' "-Dlog4j2.configurationFile=$CACHE_DIR/log4j2.properties"
    else
        printf '%s\n' "-Dlog4j.configuration=file:$CACHE_DIR/log4j.properties"
    fi
}

write_pom() {
    local logging
    if [[ "$KAFKA_MAJOR" -ge 4 ]]; then
        # Kafka 4.x logs with Log4j 2 but still uses slf4j-api 1.7.x.
        logging="    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J2_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J2_VERSION</version></dependency>"
    else
        logging="    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>$SLF4J_RELOAD4J_VERSION</version></dependency>"
    fi
    cat >"$CACHE_DIR/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by factord scripts/kafka.sh: collects the broker's runtime jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.factord</groupId>
  <artifactId>kafka-broker-jars</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$SCALA_VERSION</artifactId><version>$KAFKA_VERSION</version></dependency>
$logging
  </dependencies>
</project>
EOF
}

cmd_fetch() {
    mkdir -p "$CACHE_DIR" || die "cannot create cache dir $CACHE_DIR"
    exec 8>"$CACHE_DIR/.fetch.lock"
    flock 8 || die "cannot lock $CACHE_DIR/.fetch.lock"
    if have_jars; then
        [[ -f "$CACHE_DIR/log4j.properties" || -f "$CACHE_DIR/log4j2.properties" ]] || write_log_config
        log "Kafka $KAFKA_VERSION jars already in $LIB_DIR"
        exec 8>&-
        return 0
    fi
    need mvn "Maven is needed once to download the broker jars"
    need java
    log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $LIB_DIR ..."
    local t0=$SECONDS
    write_pom
    rm -rf "$CACHE_DIR/lib.tmp"
    # Into lib.tmp first, so an interrupted download never looks complete.
    # sed: Maven 3.8 prints bare ANSI resets even with -q and -B.
    if ! mvn -B -q -Dstyle.color=never -f "$CACHE_DIR/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
            -DincludeScope=runtime -DoutputDirectory="$CACHE_DIR/lib.tmp" 2>&1 \
            | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
        rm -rf "$CACHE_DIR/lib.tmp"
        die "mvn could not download org.apache.kafka:kafka_$SCALA_VERSION:$KAFKA_VERSION (network to Maven Central? see the output above)"
    fi
    [[ -f "$CACHE_DIR/lib.tmp/$(basename "$KAFKA_JAR")" ]] \
        || die "mvn finished but $(basename "$KAFKA_JAR") is not in $CACHE_DIR/lib.tmp"
    rm -rf "$LIB_DIR"
    mv "$CACHE_DIR/lib.tmp" "$LIB_DIR"
    write_log_config
    log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIB_DIR" | cut -f1)) in $((SECONDS - t0)) s"
    exec 8>&-
}

# ---------------------------------------------------------------- broker ---

read_pid() {
    if [[ -f "$PID_FILE" ]]; then tr -dc '0-9' <"$PID_FILE" 2>/dev/null || true; fi
}

# True when the pid in the pid file is alive and is a Kafka JVM.
pid_alive() {
    local pid cmdline
    pid=$(read_pid)
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmdline" == *kafka.Kafka* ]]
}

# True when a broker answers metadata requests on the port and lists itself.
answering() {
    local out
    # Cheap pre-check: kcat waits its whole -m timeout when nobody listens.
    if command -v ss >/dev/null 2>&1 && [[ -z "$(ss -Hltn "( sport = :$PORT )" 2>/dev/null)" ]]; then
        return 1
    fi
    out=$(kcat -b "$BROKERS" -L -m 2 2>/dev/null) || return 1
    [[ "$out" == *"broker 1 at 127.0.0.1:$PORT"* ]]
}

write_server_properties() {
    cat >"$PROPS.tmp" <<EOF
# Generated by factord scripts/kafka.sh on each start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KRAFT_DIR
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
log.retention.hours=168
# Tests send multi-MB records.
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
EOF
    if [[ "$KAFKA_MAJOR" -ge 4 ]]; then
        cat >>"$PROPS.tmp" <<EOF
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
    fi
    mv -f "$PROPS.tmp" "$PROPS"
}

print_log_tail() {
    if [[ -s "$LOG_FILE" ]]; then
        log "last lines of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" | sed 's/^/    /' >&2
    else
        log "$LOG_FILE is empty or missing"
    fi
}

prepare_data_dir() {
    if [[ -d "$DATA_DIR" && ! -f "$MARKER" ]] && [[ -n "$(ls -A "$DATA_DIR" 2>/dev/null)" ]]; then
        die "$DATA_DIR exists, is not empty and was not made by kafka.sh; choose another FACTORD_KAFKA_DIR"
    fi
    mkdir -p "$KRAFT_DIR" || die "cannot create $KRAFT_DIR"
    touch "$MARKER"
}

format_storage() {
    [[ -f "$KRAFT_DIR/meta.properties" ]] && return 0
    local cp="$LIB_DIR/*" cluster_id
    log "formatting KRaft storage in $KRAFT_DIR"
    cluster_id=$(java -cp "$cp" "$(log_config_flag)" kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE") \
        || { print_log_tail; die "kafka.tools.StorageTool random-uuid failed"; }
    # Log lines may share stdout: keep the line that looks like a cluster id.
    cluster_id=$(printf '%s\n' "$cluster_id" | grep -E '^[A-Za-z0-9_-]{22}$' | tail -n 1 || true)
    [[ -n "$cluster_id" ]] || die "kafka.tools.StorageTool random-uuid printed no cluster id"
    java -cp "$cp" "$(log_config_flag)" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" >>"$LOG_FILE" 2>&1 \
        || { print_log_tail; die "kafka.tools.StorageTool format failed"; }
}

cmd_start() {
    need java; need kcat
    mkdir -p "$(dirname "$DATA_DIR")"
    exec 9>"$DATA_DIR.lock"
    flock 9 || die "cannot lock $DATA_DIR.lock"

    if pid_alive; then
        if answering; then
            log "Kafka already running (pid $(read_pid)) at $BROKERS"
            return 0
        fi
        log "Kafka process $(read_pid) is alive but not answering on $BROKERS; waiting for it"
    else
        if answering; then
            die "something else answers as a Kafka broker on $BROKERS (no live pid in $PID_FILE); stop it or set FACTORD_KAFKA_PORT"
        fi
        if [[ -n "$(ss -Hltn "( sport = :$PORT or sport = :$CONTROLLER_PORT )" 2>/dev/null)" ]]; then
            die "port $PORT or $CONTROLLER_PORT on this machine is already in use; set FACTORD_KAFKA_PORT to another port"
        fi
        have_jars || cmd_fetch
        [[ -f "$CACHE_DIR/log4j.properties" || -f "$CACHE_DIR/log4j2.properties" ]] || write_log_config
        prepare_data_dir
        rm -f "$PID_FILE"
        : >"$LOG_FILE"
        write_server_properties
        format_storage
        log "starting Kafka $KAFKA_VERSION on $BROKERS (controller $CONTROLLER_PORT), data in $DATA_DIR"
        # setsid: the broker survives the caller's Ctrl-C / process-group kill.
        # The inner bash writes its own pid, then becomes the JVM via exec.
        # shellcheck disable=SC2086,SC2016 # HEAP_OPTS is a list of flags; $$ is the inner bash's
        nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
            java $HEAP_OPTS -Djava.awt.headless=true \
            "$(log_config_flag)" \
            -cp "$LIB_DIR/*" kafka.Kafka "$PROPS" \
            >>"$LOG_FILE" 2>&1 </dev/null 8>&- 9>&- &
    fi

    local t0=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) seen_pid=0
    while ((SECONDS < deadline)); do
        if pid_alive; then
            seen_pid=1
            if answering; then
                log "Kafka is up (pid $(read_pid)) at $BROKERS after $((SECONDS - t0)) s"
                return 0
            fi
        elif ((seen_pid)) || ((SECONDS - t0 >= 5)); then
            print_log_tail
            die "the Kafka process exited during startup"
        fi
        sleep 0.5
    done
    print_log_tail
    die "Kafka did not answer on $BROKERS within ${START_TIMEOUT} s (process $(read_pid) left running; 'scripts/kafka.sh stop' ends it)"
}

cmd_stop() {
    local wipe=0
    case "${1:-}" in
        "") ;;
        --wipe) wipe=1 ;;
        *) die "unknown option '$1' for stop (expected --wipe)" ;;
    esac
    if [[ -d "$DATA_DIR" ]]; then
        exec 9>"$DATA_DIR.lock"
        flock 9 || die "cannot lock $DATA_DIR.lock"
    fi
    if pid_alive; then
        local pid
        pid=$(read_pid)
        log "stopping Kafka (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "still running after 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 20; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        fi
        log "Kafka stopped"
    else
        log "Kafka is not running (no live process in $PID_FILE)"
    fi
    rm -f "$PID_FILE"
    if ((wipe)) && [[ -e "$DATA_DIR" ]]; then
        [[ -f "$MARKER" ]] || die "refusing to remove $DATA_DIR: it has no $(basename "$MARKER") marker (not made by kafka.sh)"
        rm -rf "$DATA_DIR"
        rm -f "$DATA_DIR.lock"
        log "removed $DATA_DIR"
    fi
}

cmd_status() {
    need kcat
    if answering; then
        if pid_alive; then
            log "Kafka running (pid $(read_pid)) at $BROKERS"
        else
            log "a Kafka broker answers at $BROKERS (not started by kafka.sh with this data dir)"
        fi
        return 0
    fi
    if pid_alive; then
        log "Kafka process $(read_pid) is alive but not answering at $BROKERS"
    else
        log "Kafka is not running at $BROKERS"
    fi
    return 1
}

cmd_env() {
    printf 'export FACTORD_KAFKA_BROKERS=%s\n' "$BROKERS"
}

case "${1:-}" in
    fetch)  shift; [[ $# -eq 0 ]] || die "fetch takes no arguments"; cmd_fetch ;;
    start)  shift; [[ $# -eq 0 ]] || die "start takes no arguments"; cmd_start ;;
    stop)   shift; [[ $# -le 1 ]] || die "usage: scripts/kafka.sh stop [--wipe]"; cmd_stop "$@" ;;
    status) shift; cmd_status ;;
    env)    shift; cmd_env ;;
    -h|--help|help) usage ;;
    "") usage; exit 2 ;;
    *) usage; die "unknown subcommand '$1'" ;;
esac
