#!/bin/sh
# tests/unit/domain_purity.sh - the domain does no I/O (house style).
#
# Lists the undefined symbols of the domain's static library ($1) and fails
# when any of them is a socket, file, clock, randomness or environment call,
# or anything from librdkafka or libpq: time and ids are inputs to the
# domain, never something it fetches.
set -eu

lib=${1:?usage: domain_purity.sh <libfactord_domain.a>}
if [ ! -f "$lib" ]; then
    echo "domain_purity: $lib: no such file" >&2
    exit 2
fi

# A failing nm stops the script here (set -e), rather than passing as "no
# symbols". Versioned names such as "read@GLIBC_2.2.5" lose their version.
symbols=$(nm -u "$lib")
undefined=$(printf '%s\n' "$symbols" |
    awk 'NF >= 2 && $1 == "U" { sub(/@.*/, "", $2); print $2 }' | sort -u)

forbidden='^(socket|connect|send|recv|open|fopen|read|write|getenv|secure_getenv|time|clock_gettime|gettimeofday|rand|random|srand|getrandom|rd_kafka.*|PQ.*)$'
offending=$(printf '%s\n' "$undefined" | grep -E "$forbidden" || true)

if [ -n "$offending" ]; then
    echo "domain_purity: $lib references I/O symbols:"
    printf '  %s\n' $offending
    exit 1
fi
echo "domain_purity: ok ($(printf '%s\n' "$undefined" | grep -c .) undefined symbols, none forbidden)"
