#!/usr/bin/env bash
# tests/integration/kafka_secure.sh - factord's Kafka clients over SASL_SSL
# with SCRAM-SHA-256 against the real broker (docs/operations.md, "Trust
# boundaries").
#
# Starts a private broker (scripts/kafka.sh with FACTORD_KAFKA_SECURE=1: a
# SASL_SSL listener with a certificate of a CA of its own and a SCRAM user;
# other port and folder than the shared test broker), then, with only
# librdkafka's settings passed through FACTORD_RDKAFKA_*:
#   1. `factord process`, `relay`, `project` and `gateway` run on it (topic
#      creation, consumers, producers, the gateway's reply waiter): an
#      import through `factord submit` and a factor through the gateway
#      over HTTP are answered;
#   2. `factord status` reads the groups' lag over it;
#   3. no log holds the SCRAM password;
#   4. a wrong password, and a client that does not speak TLS, are refused
#      (submit exits 2; the reason is in its output);
#   5. SIGTERM: every component exits 0; the broker is stopped and wiped.
#
# Usage: kafka_secure.sh <factord binary> [log dir]
# Environment: FACTORD_TEST_DATABASE_URL (a database of its own is made on
# that server), FACTORD_KSEC_PORT (default 29592; +1 controller, +2 SASL_SSL).
set -uo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
test_begin kafka_secure.sh "k$$" ksec-logs "$@"
DB_URL=${FACTORD_TEST_DATABASE_URL:?FACTORD_TEST_DATABASE_URL is not set: start the servers (see README)}
export FACTORD_KAFKA_PORT=${FACTORD_KSEC_PORT:-29592}
export FACTORD_KAFKA_DIR=${TMPDIR:-/tmp}/factord-ksec-$TAG
export FACTORD_KAFKA_SECURE=1 FACTORD_KAFKA_START_TIMEOUT=120


DB=factord_ksec_$TAG
declare -A PID
cleanup() {
    for c in "${!PID[@]}"; do kill -9 "${PID[$c]}" 2>/dev/null; done
    wait 2>/dev/null
    bash "$SCRIPTS/kafka.sh" stop --wipe >/dev/null 2>&1
    psql -q -X -d "$DB_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT

bash "$SCRIPTS/kafka.sh" start 2>"$LOGS/kafka-start.log" || { cat "$LOGS/kafka-start.log" >&2; exit 1; }
eval "$(bash "$SCRIPTS/kafka.sh" env)"
PASSWORD=$(cat "${FACTORD_KAFKA_SECURE_PASSWORD_FILE:?kafka.sh printed no secure settings}")
psql -q -X -d "$DB_URL" -c "CREATE DATABASE $DB" >/dev/null || { echo "kafka_secure.sh: cannot create $DB" >&2; exit 1; }

export FACTORD_DATABASE_URL=${DB_URL%/*}/$DB
export FACTORD_KAFKA_BROKERS=$FACTORD_KAFKA_SECURE_BROKERS
export FACTORD_RDKAFKA_SECURITY_PROTOCOL=SASL_SSL FACTORD_RDKAFKA_SASL_MECHANISMS=SCRAM-SHA-256
export FACTORD_RDKAFKA_SASL_USERNAME=factord FACTORD_RDKAFKA_SASL_PASSWORD=$PASSWORD
export FACTORD_RDKAFKA_SSL_CA_LOCATION=$FACTORD_KAFKA_SECURE_CA
export FACTORD_TOPIC_PARTITIONS=2 FACTORD_SESSION_TIMEOUT_MS=6000
export FACTORD_CODE_KEY=3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8
export FACTORD_STATE_DIR=$LOGS/state FACTORD_INSTANCE_ID=ksec
GW_PORT=$(free_port)
export FACTORD_HTTP_ADDR=127.0.0.1:$GW_PORT

"$FACTORD" migrate >"$LOGS/migrate.log" 2>&1 || { echo "kafka_secure.sh: migrate failed (see $LOGS)" >&2; exit 1; }
for c in process relay project gateway; do
    "$FACTORD" "$c" >"$LOGS/$c.log" 2>&1 &
    PID[$c]=$!
done

# --- 1. work over SASL_SSL ----------------------------------------------------------
"$FACTORD" submit --timeout-ms 90000 --type ImportHumanUser --user u1 --org o1 \
    --payload '{"userName":"u1","profile":{"firstName":"A","lastName":"B"},"email":{"email":"u1@example.com"},"phone":{"phone":"+41791234567","isPhoneVerified":true}}' \
    >"$LOGS/submit.log" 2>&1
rc=$?
check "an import through factord submit over SASL_SSL is answered 200 (exit $rc)" test "$rc" = 0
TOKEN=$("$FACTORD" token --user u1 --org o1 2>>"$LOGS/submit.log")
ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_PORT/readyz") == 200 ]]; }
check "the gateway is ready on the secure broker" wait_for 90 ready
code=$(curl -s -o "$LOGS/gw.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data '{}' "http://127.0.0.1:$GW_PORT/auth/v1/users/me/auth_factors/otp_sms")
check "AddMyAuthFactorOTPSMS over the gateway is answered 200 (got $code)" test "$code" = 200

# --- 2. status ----------------------------------------------------------------------------
"$FACTORD" status >"$LOGS/status.log" 2>&1
rc=$?
check "factord status reads Kafka over SASL_SSL (exit $rc)" test "$rc" = 0
check "... and shows the processors' group" grep -q factord-processor "$LOGS/status.log"

# --- 3. the password stays out of the logs ------------------------------------------------
check "no log holds the SCRAM password" bash -c "! grep -rlF -- '$PASSWORD' '$LOGS'/*.log"

# --- 4. refusals ----------------------------------------------------------------------------
FACTORD_RDKAFKA_SASL_PASSWORD=not-the-password "$FACTORD" submit --timeout-ms 15000 --type LockUser --user u1 \
    --org o1 >"$LOGS/wrong-password.log" 2>&1
rc=$?
check "a wrong password: submit exits 2 (got $rc)" test "$rc" = 2
check "... naming the authentication failure" grep -q 'Authentication failed' "$LOGS/wrong-password.log"
FACTORD_RDKAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT "$FACTORD" submit --timeout-ms 15000 --type LockUser --user u1 \
    --org o1 >"$LOGS/no-tls.log" 2>&1
rc=$?
check "no TLS on the SASL_SSL port: submit exits 2 (got $rc)" test "$rc" = 2

# --- 5. stop ----------------------------------------------------------------------------------
stop_components
finish
