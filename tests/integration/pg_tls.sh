#!/usr/bin/env bash
# tests/integration/pg_tls.sh - factord over a PostgreSQL connection with
# sslmode=verify-full (docs/operations.md, "PostgreSQL over TLS").
#
# Starts a private PostgreSQL with TLS (scripts/pg.sh, FACTORD_PG_TLS=1: a
# CA of its own and a server certificate for localhost and 127.0.0.1, other
# port and folder than the shared test server), then:
#   1. `factord migrate` and `factord verify` with sslmode=verify-full and
#      the CA succeed, and the server sees their sessions encrypted;
#   2. `factord process` and `relay` on that URL (and the shared test
#      Kafka, topics of its own) decide and answer a command;
#   3. a client that trusts another CA, or names another host than the
#      certificate's, is refused by libpq, and factord says so and exits 1;
#   4. the private server is stopped and wiped.
#
# Usage: pg_tls.sh <factord binary> [log dir]
# Environment: FACTORD_TEST_KAFKA_BROKERS (for step 2), FACTORD_PGTLS_PORT
# (default: a free port).
set -uo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
test_begin pg_tls.sh "t$$" pgtls-logs "$@"
BROKERS=${FACTORD_TEST_KAFKA_BROKERS:?FACTORD_TEST_KAFKA_BROKERS is not set (see README)}
# A port nobody holds right now (a fixed one can be some connection's
# ephemeral local port at that moment).
export FACTORD_PG_PORT=${FACTORD_PGTLS_PORT:-$(free_port)}
export FACTORD_PG_DIR=${TMPDIR:-/tmp}/factord-pgtls-$TAG
export FACTORD_PG_TLS=1


declare -A PID
cleanup() {
    for c in "${!PID[@]}"; do kill -9 "${PID[$c]}" 2>/dev/null; done
    bash "$SCRIPTS/pg.sh" stop --wipe >/dev/null 2>&1
}
trap cleanup EXIT

bash "$SCRIPTS/pg.sh" start 2>"$LOGS/pg.log" || { cat "$LOGS/pg.log" >&2; echo "pg_tls.sh: cannot start PostgreSQL" >&2; exit 1; }
eval "$(bash "$SCRIPTS/pg.sh" env)"
CA=${FACTORD_PG_TLS_CA:?pg.sh printed no FACTORD_PG_TLS_CA}
URL="host=localhost port=$FACTORD_PG_PORT user=factord dbname=factord sslmode=verify-full sslrootcert=$CA"

# --- 1. tools -----------------------------------------------------------------------
FACTORD_DATABASE_URL="$URL" "$FACTORD" migrate >"$LOGS/migrate.log" 2>&1
rc=$?
check "factord migrate with sslmode=verify-full (exit $rc)" test "$rc" = 0
encrypted=$(psql -X -tA "$URL" -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" 2>>"$LOGS/psql.log")
check "the server sees the session encrypted (got '$encrypted')" test "$encrypted" = t
FACTORD_DATABASE_URL="$URL" "$FACTORD" verify >"$LOGS/verify.log" 2>&1
rc=$?
check "factord verify with sslmode=verify-full (exit $rc)" test "$rc" = 0

# --- 2. a component -------------------------------------------------------------------
export FACTORD_KAFKA_BROKERS=$BROKERS
export FACTORD_COMMANDS_TOPIC=pgtls.$TAG.commands FACTORD_EVENTS_TOPIC=pgtls.$TAG.events
export FACTORD_REPLIES_TOPIC=pgtls.$TAG.replies FACTORD_DLQ_TOPIC=pgtls.$TAG.dlq
export FACTORD_PROCESSOR_GROUP=pgtls-$TAG FACTORD_TOPIC_PARTITIONS=1
export FACTORD_CODE_KEY=3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8
for c in process relay; do
    FACTORD_DATABASE_URL="$URL" "$FACTORD" "$c" >"$LOGS/$c.log" 2>&1 &
    PID[$c]=$!
done
# An unknown user: decided (rejected) by the processor, answered through the
# relay's outbox, both over verify-full.
FACTORD_DATABASE_URL="$URL" "$FACTORD" submit --timeout-ms 60000 --type LockUser --user nobody --org o1 \
    >"$LOGS/submit.log" 2>&1
rc=$?
check "a command decided and answered over verify-full (submit exit 1: rejected; got $rc)" test "$rc" = 1
check "... with the processor's answer" grep -q '"httpStatus":404' "$LOGS/submit.log"
decided=$(psql -X -tA "$URL" -c "SELECT count(*) FROM factord.commands WHERE user_id = 'nobody'" 2>>"$LOGS/psql.log")
check "... and its outcome stored (got '$decided')" test "$decided" = 1
stop_components

# --- 3. refusals ----------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj "/CN=another CA" \
    -keyout "$LOGS/other-ca.key" -out "$LOGS/other-ca.crt" >/dev/null 2>&1
FACTORD_DATABASE_URL="host=localhost port=$FACTORD_PG_PORT user=factord dbname=factord sslmode=verify-full sslrootcert=$LOGS/other-ca.crt" \
    "$FACTORD" verify >"$LOGS/wrong-ca.log" 2>&1
rc=$?
check "another CA: verify exits 1 (got $rc)" test "$rc" = 1
check "... saying the certificate failed verification" grep -q 'certificate verify failed' "$LOGS/wrong-ca.log"
FACTORD_DATABASE_URL="host=db.example hostaddr=127.0.0.1 port=$FACTORD_PG_PORT user=factord dbname=factord sslmode=verify-full sslrootcert=$CA" \
    "$FACTORD" verify >"$LOGS/wrong-host.log" 2>&1
rc=$?
check "another host name: verify exits 1 (got $rc)" test "$rc" = 1
check "... saying the certificate does not match the host" grep -q 'does not match host name' "$LOGS/wrong-host.log"

finish
