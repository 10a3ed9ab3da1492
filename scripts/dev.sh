#!/usr/bin/env bash
# scripts/dev.sh - run factord for real on local defaults (the README's first
# command).
#
# Installs what is missing (scripts/deps.sh), builds, starts a throwaway
# PostgreSQL 15 under ./.factord/pg (127.0.0.1, port FACTORD_PG_PORT, default
# 55433, apart from the test servers), and runs `factord run`: processor,
# relay, read-model projector and HTTP gateway in one process, on the
# embedded Kafka broker unless FACTORD_KAFKA_BROKERS names a real one. It then
# imports a user whose phone is verified and adds the OTP-SMS factor through
# `factord submit`, does the same for a second user over HTTP with the Auth
# API's curl and a development token, and leaves factord running for you to
# try more.
# Ctrl-C stops factord and the PostgreSQL it started.
#
# Usage: scripts/dev.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { printf '\ndev.sh: %s\n' "$*" >&2; }

bash scripts/deps.sh
log "building (build/)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target factord >/dev/null

export FACTORD_STATE_DIR=${FACTORD_STATE_DIR:-$ROOT/.factord}
mkdir -p "$FACTORD_STATE_DIR"
export FACTORD_PG_DIR=${FACTORD_PG_DIR:-$FACTORD_STATE_DIR/pg}
export FACTORD_PG_PORT=${FACTORD_PG_PORT:-55433}
bash scripts/pg.sh start
export FACTORD_DATABASE_URL=${FACTORD_DATABASE_URL:-$(bash scripts/pg.sh url)}

factord_pid=
stop_all() {
    trap - EXIT INT TERM
    if [[ -n $factord_pid ]]; then
        kill -TERM "$factord_pid" 2>/dev/null || true
        wait "$factord_pid" 2>/dev/null || true
    fi
    bash scripts/pg.sh stop >&2 || true
    log "stopped factord and PostgreSQL (data kept in $FACTORD_PG_DIR; 'scripts/pg.sh stop --wipe' with FACTORD_PG_DIR set removes it)"
}
trap stop_all EXIT INT TERM

rm -f "$FACTORD_STATE_DIR/kafka.brokers"
log "starting factord run (logs: $FACTORD_STATE_DIR/factord.log)"
build/factord run 2>>"$FACTORD_STATE_DIR/factord.log" &
factord_pid=$!
# The embedded broker's address appears once factord is up; with a real
# broker (FACTORD_KAFKA_BROKERS) there is nothing to wait for.
for _ in $(seq 1 100); do
    [[ -n ${FACTORD_KAFKA_BROKERS:-} || -s $FACTORD_STATE_DIR/kafka.brokers ]] && break
    kill -0 "$factord_pid" 2>/dev/null || { tail -20 "$FACTORD_STATE_DIR/factord.log" >&2; exit 1; }
    sleep 0.1
done

user="demo-$(date +%s)"
log "importing user $user (organisation demo-org) with a verified phone"
build/factord submit --type ImportHumanUser --user "$user" --org demo-org --timeout-ms 30000 --payload \
    "{\"userName\":\"$user\",\"profile\":{\"firstName\":\"Ada\",\"lastName\":\"Lovelace\"},\"email\":{\"email\":\"ada@example.com\",\"isEmailVerified\":true},\"phone\":{\"phone\":\"+41 79 123 45 67\",\"isPhoneVerified\":true}}"
log "adding the OTP-SMS factor (AddMyAuthFactorOTPSMS)"
build/factord submit --type AddMyAuthFactorOTPSMS --user "$user" --org demo-org --timeout-ms 30000

# The same call over HTTP, as a signed-in user would make it: a second
# user, a development token for it, and the Auth API's curl.
web="web-$(date +%s)"
log "importing user $web, then AddMyAuthFactorOTPSMS over HTTP with a development token"
build/factord submit --type ImportHumanUser --user "$web" --org demo-org --timeout-ms 30000 --payload \
    "{\"userName\":\"$web\",\"profile\":{\"firstName\":\"Grace\",\"lastName\":\"Hopper\"},\"email\":{\"email\":\"grace@example.com\"},\"phone\":{\"phone\":\"+41 79 765 43 21\",\"isPhoneVerified\":true}}" >/dev/null
addr=${FACTORD_HTTP_ADDR:-127.0.0.1:8080}
for _ in $(seq 1 100); do
    curl -fsS "http://$addr/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
TOKEN=$(build/factord token --user "$web" --org demo-org 2>/dev/null)
curl -sS -L -X POST "http://$addr/auth/v1/users/me/auth_factors/otp_sms" \
    -H 'Content-Type: application/json' -H 'Accept: application/json' \
    -H "Authorization: Bearer $TOKEN" --data-raw '{}'
echo

cat >&2 <<MSG

dev.sh: factord is running. Try, in another terminal (from $ROOT):

  export FACTORD_STATE_DIR=$FACTORD_STATE_DIR
  TOKEN=\$(build/factord token --user $web --org demo-org)
  curl -L -X POST 'http://$addr/auth/v1/users/me/auth_factors/otp_sms' -H 'Content-Type: application/json' -H 'Accept: application/json' -H "Authorization: Bearer \$TOKEN" --data-raw '{}'
      # 409 now: the factor is already set up
  curl -s -X POST 'http://$addr/auth/v1/users/me/auth_factors/_search' -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' --data-raw '{}'
  build/factord submit --type RemoveMyAuthFactorOTPSMS --user $user --org demo-org
  psql "$FACTORD_DATABASE_URL" -c 'select * from factord.events order by position'

Ctrl-C stops factord and PostgreSQL.
MSG
wait "$factord_pid"
