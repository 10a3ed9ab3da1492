#!/usr/bin/env bash
# tests/integration/metrics.sh - every long-running component serves
# Prometheus metrics that a real Prometheus scrapes and promtool accepts
# (docs/metrics.md).
#
# On the shared test servers (FACTORD_TEST_DATABASE_URL's server, a
# database of its own; FACTORD_TEST_KAFKA_BROKERS, topics and groups of its
# own) it runs `factord process`, `relay`, `project`, `gateway` and
# `notify` (webhook provider at a closed port: every send is a retry), each
# with its own FACTORD_METRICS_ADDR, then:
#   1. imports users and adds their factor through `factord submit`, one
#      command twice (replayed), one over the gateway with a development
#      token, and asks for a code (ChallengeOTPSMS) for the notifier;
#   2. scrapes every component: `promtool check metrics` passes on each,
#      and the figures are those of step 1 (commands by type and outcome,
#      events appended, relay published and lag, projector events, the
#      gateway's request, SMS sends, consumer-group lag series);
#   3. starts a real Prometheus (Debian's package) scraping all five every
#      second, and checks through its HTTP API that every target is up and
#      that a query sees the accepted commands;
#   4. a bad FACTORD_METRICS_ADDR is refused at start (exit 2) with the
#      setting's name;
#   5. SIGTERM: every component exits 0; no sanitizer report in any log.
#
# Usage: metrics.sh <factord binary> [log dir]
set -uo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
test_begin metrics.sh "m$$$RANDOM" metrics "$@"
DB_URL=${FACTORD_TEST_DATABASE_URL:?FACTORD_TEST_DATABASE_URL is not set: start the servers (see README)}
BROKERS=${FACTORD_TEST_KAFKA_BROKERS:?FACTORD_TEST_KAFKA_BROKERS is not set (see README)}
for tool in promtool prometheus curl psql; do
    command -v "$tool" >/dev/null || { echo "metrics.sh: $tool not found (scripts/deps.sh installs it)" >&2; exit 1; }
done



# --- a database, topics and groups of our own ---------------------------------
DB=factord_metrics_$TAG
ADMIN_URL=$DB_URL
psql -q -X -d "$ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null || { echo "metrics.sh: cannot create $DB" >&2; exit 1; }
export FACTORD_DATABASE_URL=${DB_URL%/*}/$DB
export FACTORD_KAFKA_BROKERS=$BROKERS
export FACTORD_COMMANDS_TOPIC=metrics.$TAG.commands FACTORD_EVENTS_TOPIC=metrics.$TAG.events
export FACTORD_REPLIES_TOPIC=metrics.$TAG.replies FACTORD_DLQ_TOPIC=metrics.$TAG.dlq
export FACTORD_GATEWAY_REPLIES_TOPIC=metrics.$TAG.gw
export FACTORD_PROCESSOR_GROUP=metrics-$TAG-proc FACTORD_PROJECTOR_GROUP=metrics-$TAG-proj
export FACTORD_NOTIFY_GROUP=metrics-$TAG-notify
export FACTORD_TOPIC_PARTITIONS=2 FACTORD_SESSION_TIMEOUT_MS=6000
export FACTORD_CODE_KEY=3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8
export FACTORD_STATE_DIR=$LOGS/state FACTORD_INSTANCE_ID=metrics-inst
export FACTORD_LOG_LEVEL=info
GW_PORT=$(free_port)
export FACTORD_HTTP_ADDR=127.0.0.1:$GW_PORT

declare -A PID PORT
PROM_PID=
cleanup() {
    for c in "${!PID[@]}"; do kill -9 "${PID[$c]}" 2>/dev/null; done
    [[ -n $PROM_PID ]] && kill -9 "$PROM_PID" 2>/dev/null
    wait 2>/dev/null
    psql -q -X -d "$ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
}
trap cleanup EXIT

"$FACTORD" migrate >"$LOGS/migrate.log" 2>&1 || { echo "metrics.sh: migrate failed (see $LOGS)" >&2; exit 1; }

start() { # <component> [VAR=value ...]
    local c=$1; shift
    PORT[$c]=$(free_port)
    env FACTORD_METRICS_ADDR=127.0.0.1:${PORT[$c]} "$@" "$FACTORD" "$c" >"$LOGS/$c.log" 2>&1 &
    PID[$c]=$!
}
start process
start relay
start project
start gateway
# Retried for the whole test (no delivery outcome is recorded meanwhile, so
# the processor's figures below stay exact).
start notify FACTORD_SMS_PROVIDER=webhook FACTORD_SMS_WEBHOOK_URL=http://127.0.0.1:9/never \
    FACTORD_NOTIFY_RETRY_FIRST_MS=200 FACTORD_NOTIFY_RETRY_MAX_MS=500 FACTORD_NOTIFY_MAX_ATTEMPTS=100

scrape() { curl -sf --max-time 5 "http://127.0.0.1:${PORT[$1]}/metrics"; }
# The value of one sample (exact name{labels} as rendered), or "".
sample() { scrape "$1" | awk -v s="$2" 'index($0, s " ") == 1 { print $2 }'; }
for c in "${!PORT[@]}"; do
    wait_for 60 scrape "$c" >/dev/null || fail "$c serves /metrics"
done

# --- 1. some work ------------------------------------------------------------------
submit() { "$FACTORD" submit --timeout-ms 60000 "$@" >>"$LOGS/submit.log" 2>&1; }
for u in 1 2 3; do
    submit --type ImportHumanUser --user "u$u" --org o1 \
        --payload "{\"userName\":\"user$u\",\"profile\":{\"firstName\":\"A\",\"lastName\":\"B\"},\"email\":{\"email\":\"u$u@example.com\"},\"phone\":{\"phone\":\"+4179123456$u\",\"isPhoneVerified\":true}}" \
        || fail "import u$u"
done
ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
submit --id "$ID" --type AddMyAuthFactorOTPSMS --user u1 --org o1 || fail "add u1"
submit --id "$ID" --type AddMyAuthFactorOTPSMS --user u1 --org o1 || fail "add u1 again (replayed)"
submit --type AddMyAuthFactorOTPSMS --user u2 --org o1 || fail "add u2"
submit --type AddMyAuthFactorOTPSMS --user nobody --org o1 && fail "add for an unknown user was accepted"
TOKEN=$("$FACTORD" token --user u3 --org o1 2>>"$LOGS/submit.log")
code=$(curl -s -o "$LOGS/gw.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' --data '{}' "http://127.0.0.1:$GW_PORT/auth/v1/users/me/auth_factors/otp_sms")
check "AddMyAuthFactorOTPSMS over the gateway answers 200 (got $code)" test "$code" = 200
submit --type ChallengeOTPSMS --user u1 --org o1 || fail "challenge u1"

# --- 2. every component's scrape ------------------------------------------------------
for c in "${!PORT[@]}"; do
    scrape "$c" >"$LOGS/$c.metrics"
    check "promtool check metrics: $c" promtool check metrics <"$LOGS/$c.metrics"
done
eq() { # <component> <sample> <want>
    local got
    got=$(sample "$1" "$2")
    [[ $got == "$3" ]] || { echo "  $1: $2 is '$got', want '$3'" >&2; return 1; }
}
check "imports accepted" eq process 'factord_commands_total{type="ImportHumanUser",outcome="accepted"}' 3
check "factors accepted (two by submit, one over the gateway)" \
    eq process 'factord_commands_total{type="AddMyAuthFactorOTPSMS",outcome="accepted"}' 3
check "the repeated command replayed" \
    eq process 'factord_commands_total{type="AddMyAuthFactorOTPSMS",outcome="replayed"}' 1
check "the unknown user's command rejected" \
    eq process 'factord_commands_total{type="AddMyAuthFactorOTPSMS",outcome="rejected"}' 1
# 3 imports x 2 events, 3 factors, 1 code: 10 events
check "events appended" eq process 'factord_events_appended_total' 10
check "nothing dead-lettered" eq process 'factord_dead_letters_total' 0
check "processor batches histogram counts every batch" \
    test "$(sample process factord_processor_batch_duration_seconds_count)" -ge 1
check "decision latency observed for each of the 9 commands" \
    test "$(sample process factord_command_decision_latency_seconds_count)" = 9
replied() { [[ $(sample project factord_reply_latency_seconds_count) -ge 7 ]]; }
check "reply latency observed for the 7 accepted commands" wait_for 30 replied
wait_lag() { [[ $(sample relay factord_relay_lag_rows) == 0 ]]; }
check "relay lag drains to 0" wait_for 30 wait_lag
check "relay published at least the 10 events" test "$(sample relay factord_relay_published_total)" -ge 10
applied() { [[ $(sample project 'factord_projector_events_total{result="applied"}') == 10 ]]; }
check "projector applied the 10 events" wait_for 30 applied
check "gateway counted its 200" \
    test "$(sample gateway 'factord_http_request_duration_seconds_count{server="gateway",method="POST",code="200"}')" -ge 1
sends() { [[ -n $(sample notify 'factord_sms_sends_total{provider="webhook",outcome="retry"}') ]]; }
check "notifier counted its failed sends" wait_for 30 sends
lag_series() { scrape process | grep -q "^kafka_consumergroup_lag{consumergroup=\"metrics-$TAG-proc\",topic=\"metrics.$TAG.commands\",partition=\"[01]\"} 0$"; }
check "processor exports its group's lag per partition" wait_for 10 lag_series
notfound=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[process]}/other")
check "other paths get 404 (got $notfound)" test "$notfound" = 404

# --- 3. a real Prometheus -----------------------------------------------------------------
PROM_PORT=$(free_port)
{
    echo "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}"
    echo "scrape_configs:"
    echo "  - job_name: factord"
    echo "    static_configs:"
    for c in "${!PORT[@]}"; do
        echo "      - targets: ['127.0.0.1:${PORT[$c]}']"
        echo "        labels: {component: '$c'}"
    done
} >"$LOGS/prometheus.yml"
promtool check config "$LOGS/prometheus.yml" >"$LOGS/promtool-config.log" 2>&1
check "promtool check config (see promtool-config.log)" test $? = 0
prometheus --config.file="$LOGS/prometheus.yml" --storage.tsdb.path="$LOGS/prom-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$LOGS/prometheus.log" 2>&1 &
PROM_PID=$!
all_up() {
    curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/targets" 2>/dev/null | python3 2>/dev/null -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if len(t) == 5 and all(x["health"] == "up" for x in t) else 1)'
}
check "Prometheus scrapes all five components, every target up" wait_for 60 all_up
accepted() {
    curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" \
        --data-urlencode 'query=sum(factord_commands_total{outcome="accepted",component="process",type=~"ImportHumanUser|AddMyAuthFactorOTPSMS"})' |
        python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; sys.exit(0 if r and r[0]["value"][1] == "6" else 1)' 2>/dev/null
}
check "a PromQL query sees the 6 accepted commands" wait_for 30 accepted
kill "$PROM_PID" 2>/dev/null; wait "$PROM_PID" 2>/dev/null; PROM_PID=
# Scrapes come every second here (every 15 s in production): logged at
# debug, they stay out of an info log; the gateway's own requests do not.
no_scrape_lines() { ! grep -q '"path":"/metrics"' "$LOGS"/{process,relay,project,gateway,notify}.log; }
check "scrapes are not logged at info" no_scrape_lines
check "... while the gateway's requests are" grep -q '"msg":"request"' "$LOGS/gateway.log"

# --- 4. a bad address --------------------------------------------------------------------------
FACTORD_METRICS_ADDR=127.0.0.1:notaport timeout 30 "$FACTORD" relay >"$LOGS/bad-addr.log" 2>&1
rc=$?
check "a bad FACTORD_METRICS_ADDR exits 2 (got $rc)" test "$rc" = 2
check "... naming the setting" grep -q FACTORD_METRICS_ADDR "$LOGS/bad-addr.log"

# --- 5. stop -----------------------------------------------------------------------------------------
stop_components
finish
