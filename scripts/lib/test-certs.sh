# scripts/lib/test-certs.sh - a CA of its own and a server certificate it
# signed, for the TLS listeners of the test servers (scripts/pg.sh with
# FACTORD_PG_TLS=1, scripts/kafka.sh with FACTORD_KAFKA_SECURE=1).
#
# Sourced, never run. make_test_certs DIR CA_NAME LOG writes DIR/ca.crt,
# DIR/ca.key, DIR/server.key and DIR/server.crt (EC P-256, ten years, the
# server's subjectAltName localhost and 127.0.0.1; keys mode 0600), unless
# they are there already; openssl's output goes to LOG. Returns non-zero
# when openssl fails or is missing.
# shellcheck shell=bash

make_test_certs() {
    local dir=$1 ca_name=$2 logf=$3
    [[ -s $dir/ca.crt && -s $dir/server.crt && -s $dir/server.key ]] && return 0
    command -v openssl >/dev/null 2>&1 || { echo "openssl not found; run scripts/deps.sh" >>"$logf"; return 1; }
    mkdir -p "$dir" || return 1
    (
        cd "$dir" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=$ca_name" -keyout ca.key -out ca.crt &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
            -keyout server.key -out server.csr &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.crt
    ) >"$logf" 2>&1 || return 1
    chmod 0755 "$dir"
    chmod 0644 "$dir/ca.crt" "$dir/server.crt"
    chmod 0600 "$dir/ca.key" "$dir/server.key"
}
