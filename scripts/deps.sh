#!/usr/bin/env bash
# scripts/deps.sh - install every Debian package that factord's build, tests
# and local servers (scripts/pg.sh, scripts/pg-ha.sh, scripts/kafka.sh) need.
#
# Usage: scripts/deps.sh
#
# Quick and idempotent: when every package is already installed it does not
# touch apt at all. Environment:
#   FACTORD_DEPS_FORCE=1   run apt-get update/install even if all is installed
#
# java and mvn may come from outside Debian's packages; when they are already
# on PATH, openjdk-17-jre-headless and maven are not required.
set -euo pipefail

log() { printf 'deps.sh: %s\n' "$*" >&2; }
die() { printf 'deps.sh: error: %s\n' "$*" >&2; exit 1; }

if [[ $# -gt 0 ]]; then
    case "$1" in
        -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
        *) die "unexpected argument '$1' (usage: scripts/deps.sh)" ;;
    esac
fi

packages=(
    build-essential cmake pkg-config clang
    librdkafka-dev libpq-dev libjansson-dev uuid-dev libcriterion-dev libssl-dev
    libmicrohttpd-dev libcurl4-openssl-dev
    kcat
    postgresql-15 postgresql-client-15
    postgresql-15-auto-failover # pg_autoctl, for scripts/pg-ha.sh's failover pair
    ca-certificates curl
    openssl # certificates for the PostgreSQL TLS test (scripts/pg.sh FACTORD_PG_TLS=1)
    prometheus python3 # Prometheus and promtool for tests/integration/metrics.sh (docs/metrics.md)
    libclang-rt-14-dev # libFuzzer runtime for FACTORD_FUZZ builds (tests/fuzz, docs/fuzzing.md)
)
if command -v java >/dev/null 2>&1; then
    log "java found at $(command -v java); not requiring openjdk-17-jre-headless"
else
    packages+=(openjdk-17-jre-headless)
fi
if command -v mvn >/dev/null 2>&1; then
    log "mvn found at $(command -v mvn); not requiring maven"
else
    packages+=(maven)
fi

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu only"

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 && "${FACTORD_DEPS_FORCE:-0}" != "1" ]]; then
    log "all ${#packages[@]} packages already installed (FACTORD_DEPS_FORCE=1 to reinstall)"
    exit 0
fi

sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    else
        die "not root and sudo is not available; as root run: apt-get install ${missing[*]:-${packages[*]}}"
    fi
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    log "missing packages: ${missing[*]}"
else
    log "FACTORD_DEPS_FORCE=1: reinstalling/upgrading the package set"
fi

export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update || die "apt-get update failed"
"${sudo_cmd[@]}" apt-get install -y --no-install-recommends "${packages[@]}" \
    || die "apt-get install failed for: ${packages[*]}"

# Re-check: a package can be 'half-installed' after a failed postinst.
still=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || still+=("$p")
done
[[ ${#still[@]} -eq 0 ]] || die "still not installed after apt-get: ${still[*]}"
log "done"
