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
#   FACTORD_KAFKA_SECURE=1       also a SASL_SSL listener on port+2: TLS with a
#                                certificate of a CA made once in tls/ (openssl),
#                                SCRAM-SHA-256 user factord, password in
#                                tls/scram-password; 'env' then also prints
#                                FACTORD_KAFKA_SECURE_BROKERS, _CA and
#                                _PASSWORD_FILE (tests/integration/kafka_secure.sh)
#
# Progress goes to stderr; only 'env' writes to stdout, so
# eval "$(scripts/kafka.sh env)" is safe.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
KAFKA_PROG=kafka.sh
# log, die, usage, need, abspath, the jar cache (KAFKA_VERSION, CACHE_DIR,
# LIB_DIR, KAFKA_JAR, KAFKA_MAJOR) and the node helpers, shared with
# scripts/kafka-cluster.sh.
# shellcheck source-path=SCRIPTDIR source=lib/test-certs.sh
. "$SCRIPT_DIR/lib/test-certs.sh"
# shellcheck source-path=SCRIPTDIR source=lib/kafka-common.sh
. "$SCRIPT_DIR/lib/kafka-common.sh"

SLF4J_RELOAD4J_VERSION=1.7.36
LOG4J2_VERSION=2.24.3          # only for Kafka 4.x, see docs/kafka notes
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1

DATA_DIR=${FACTORD_KAFKA_DIR:-${TMPDIR:-/tmp}/factord-kafka}
PORT=${FACTORD_KAFKA_PORT:-19092}
START_TIMEOUT=${FACTORD_KAFKA_START_TIMEOUT:-90}
HEAP_OPTS=${FACTORD_KAFKA_HEAP:--Xmx512m -Xms256m}

check_version
check_port FACTORD_KAFKA_PORT "$PORT" 1
check_timeout FACTORD_KAFKA_START_TIMEOUT "$START_TIMEOUT"
CONTROLLER_PORT=$((PORT + 1))
BROKERS=127.0.0.1:$PORT

DATA_DIR=$(abspath "$DATA_DIR")
check_outside_repo "cache dir" "$CACHE_DIR" FACTORD_CACHE_DIR
check_outside_repo "data dir" "$DATA_DIR" FACTORD_KAFKA_DIR

SECURE=${FACTORD_KAFKA_SECURE:-0}
SECURE_PORT=$((PORT + 2))
TLS_DIR=$DATA_DIR/tls
KRAFT_DIR=$DATA_DIR/kraft
PROPS=$DATA_DIR/server.properties
PID_FILE=$DATA_DIR/kafka.pid
LOG_FILE=$DATA_DIR/kafka.log
MARKER=$DATA_DIR/.factord-kafka

# ---------------------------------------------------------------- fetch ----

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
        have_log_config || write_log_config
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

read_pid() { read_pid_file "$PID_FILE"; }

# True when the pid in the pid file is alive and is a Kafka JVM.
pid_alive() { pid_file_alive "$PID_FILE"; }

# True when a broker answers metadata requests on the port and lists itself.
answering() {
    local out
    port_silent "$PORT" && return 1
    out=$(kcat -b "$BROKERS" -L -m 2 2>/dev/null) || return 1
    [[ "$out" == *"broker 1 at 127.0.0.1:$PORT"* ]]
}

# The secure listener's CA and certificate (scripts/lib/test-certs.sh), the
# broker's key and certificate in one PEM file (PKCS#8 first, as Kafka's PEM
# keystore wants them), and the SCRAM user's password; made once.
ensure_secure_files() {
    [[ -s $TLS_DIR/broker.pem && -s $TLS_DIR/scram-password ]] && return 0
    make_test_certs "$TLS_DIR" "factord test Kafka CA" "$DATA_DIR/openssl.log" \
        || die "cannot make the TLS certificates (see $DATA_DIR/openssl.log)"
    (
        cd "$TLS_DIR" &&
        openssl pkcs8 -topk8 -nocrypt -in server.key -out server.p8 &&
        cat server.p8 server.crt >broker.pem &&
        openssl rand -hex 16 >scram-password
    ) >>"$DATA_DIR/openssl.log" 2>&1 || die "openssl failed (see $DATA_DIR/openssl.log)"
    chmod 0600 "$TLS_DIR/server.p8" "$TLS_DIR/broker.pem" "$TLS_DIR/scram-password"
}

write_server_properties() {
    node_properties 1 "$PORT" "$CONTROLLER_PORT" "1@127.0.0.1:$CONTROLLER_PORT" "$KRAFT_DIR" 1 1 >"$PROPS.tmp"
    if [[ $SECURE == 1 ]]; then
        # The plain listener stays for the readiness check and the broker's
        # own traffic; clients of the test use the SASL_SSL one.
        sed -i -e "s|^listeners=.*|listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT,SASL_SSL://127.0.0.1:$SECURE_PORT|" \
            -e "s|^advertised.listeners=.*|advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$SECURE_PORT|" \
            -e "s|^listener.security.protocol.map=.*|listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL|" \
            "$PROPS.tmp"
        cat >>"$PROPS.tmp" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/broker.pem
EOF
    fi
    mv -f "$PROPS.tmp" "$PROPS"
}

format_storage() {
    [[ -f "$KRAFT_DIR/meta.properties" ]] && return 0
    local cluster_id
    log "formatting KRaft storage in $KRAFT_DIR"
    cluster_id=$(new_cluster_id "$LOG_FILE")
    if [[ $SECURE == 1 ]]; then
        # The SCRAM user goes into the metadata log at format time.
        java -cp "$LIB_DIR/*" "$(log_config_flag)" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" \
            --add-scram "SCRAM-SHA-256=[name=factord,password=$(cat "$TLS_DIR/scram-password")]" >>"$LOG_FILE" 2>&1 \
            || { print_log_tail "$LOG_FILE"; die "kafka.tools.StorageTool format failed"; }
        return 0
    fi
    format_log_dir "$KRAFT_DIR" "$PROPS" "$cluster_id" "$LOG_FILE"
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
        if port_listening "$PORT" || port_listening "$CONTROLLER_PORT"; then
            die "port $PORT or $CONTROLLER_PORT on this machine is already in use; set FACTORD_KAFKA_PORT to another port"
        fi
        have_jars || cmd_fetch
        have_log_config || write_log_config
        prepare_data_dir "$DATA_DIR" "$MARKER" "$KRAFT_DIR" FACTORD_KAFKA_DIR
        rm -f "$PID_FILE"
        : >"$LOG_FILE"
        if [[ $SECURE == 1 ]]; then ensure_secure_files; fi
        write_server_properties
        format_storage
        log "starting Kafka $KAFKA_VERSION on $BROKERS (controller $CONTROLLER_PORT), data in $DATA_DIR"
        launch_jvm "$PID_FILE" "$PROPS" "$LOG_FILE" "$HEAP_OPTS"
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
            print_log_tail "$LOG_FILE"
            die "the Kafka process exited during startup"
        fi
        sleep 0.5
    done
    print_log_tail "$LOG_FILE"
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
        terminate "$pid"
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
    if [[ $SECURE == 1 ]]; then
        printf 'export FACTORD_KAFKA_SECURE_BROKERS=127.0.0.1:%s\n' "$SECURE_PORT"
        printf 'export FACTORD_KAFKA_SECURE_CA=%s\n' "$TLS_DIR/ca.crt"
        printf 'export FACTORD_KAFKA_SECURE_PASSWORD_FILE=%s\n' "$TLS_DIR/scram-password"
    fi
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
