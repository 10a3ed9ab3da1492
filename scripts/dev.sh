#!/usr/bin/env bash
# scripts/dev.sh - run factord for real on local defaults.
#
# Installs what is missing, builds, starts a throwaway PostgreSQL and a
# single-node Kafka broker on 127.0.0.1 (scripts/servers.sh), applies the
# migrations, creates a development phone-code key under ./.factord, and runs
# `factord process` and `factord relay`. It then imports a demo user whose
# phone is verified, sends AddMyAuthFactorOTPSMS for it (and once more, to
# show the AlreadyExists reply), prints what reached the events and replies
# topics, and keeps factord running until Ctrl-C, which stops everything it
# started.
#
# Usage: scripts/dev.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
log() { printf 'dev.sh: %s\n' "$*" >&2; }

bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFACTORD_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)" >/dev/null
eval "$(bash scripts/servers.sh start)"

STATE=${FACTORD_STATE_DIR:-$ROOT/.factord}
mkdir -p "$STATE"
chmod 700 "$STATE"
if [[ ! -s $STATE/code.key ]]; then
    (umask 077; openssl rand -hex 32 >"$STATE/code.key")
    log "created a DEVELOPMENT phone-code key in $STATE/code.key"
fi
export FACTORD_CODE_KEY_FILE=$STATE/code.key
export FACTORD_SESSION_TIMEOUT_MS=6000

./build/factord migrate
pids=()
stop_all() {
    log "stopping factord and the local servers"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash scripts/servers.sh stop >&2 || true
}
trap stop_all EXIT INT TERM
./build/factord process 2>>"$STATE/process.log" & pids+=($!)
./build/factord relay 2>>"$STATE/relay.log" & pids+=($!)
log "factord process and relay are running (logs: $STATE/process.log, $STATE/relay.log)"

user="demo-$(date +%s)"
id1=$(cat /proc/sys/kernel/random/uuid) id2=$(cat /proc/sys/kernel/random/uuid) id3=$(cat /proc/sys/kernel/random/uuid)
{
    printf '%s\t{"id":"%s","type":"ImportHumanUser","instanceId":"default","userId":"%s","resourceOwner":"demo-org","payload":{"userName":"%s","profile":{"firstName":"Ada","lastName":"Lovelace"},"email":{"email":"ada@example.com","isEmailVerified":true},"phone":{"phone":"+41 79 123 45 67","isPhoneVerified":true}}}\n' "$user" "$id1" "$user" "$user"
    printf '%s\t{"id":"%s","type":"AddMyAuthFactorOTPSMS","instanceId":"default","userId":"%s","resourceOwner":"demo-org","payload":{}}\n' "$user" "$id2" "$user"
    printf '%s\t{"id":"%s","type":"AddMyAuthFactorOTPSMS","instanceId":"default","userId":"%s","resourceOwner":"demo-org","payload":{}}\n' "$user" "$id3" "$user"
} | kcat -b "$FACTORD_KAFKA_BROKERS" -t factord.commands -P -K $'\t' -X partitioner=murmur2_random
log "sent ImportHumanUser and AddMyAuthFactorOTPSMS twice for user $user"
sleep 3
log "events of $user on factord.events:"
timeout 10 kcat -b "$FACTORD_KAFKA_BROKERS" -t factord.events -C -o beginning -e -q -f '%k %s\n' | grep "^$user " || true
log "replies on factord.replies (the second AddMyAuthFactorOTPSMS is refused):"
timeout 10 kcat -b "$FACTORD_KAFKA_BROKERS" -t factord.replies -C -o beginning -e -q -f '%s\n' | grep "$id3" || true
log "factord keeps running; Ctrl-C stops it and the servers"
wait
