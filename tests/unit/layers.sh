#!/bin/sh
# tests/unit/layers.sh - the layers of infra/ hold (docs/architecture.md).
#
# Usage: layers.sh <source dir> <build dir>
#
# Two checks, over what the compiler really built and what the sources say:
#  1. calls: every object file's undefined symbols (nm -u). libpq (PQ*,
#     lo_*), librdkafka (rd_kafka_*), libmicrohttpd (MHD_*) and OpenSSL
#     (EVP_, RAND_, HMAC, BN_, EC_, ERR_, PEM_, OSSL_, OPENSSL_, CRYPTO_,
#     BIO_, SHA*) and libcurl (curl_*) may be called only from their
#     adapter folder: infra/pg, infra/kafka, infra/http, infra/crypto,
#     infra/sms. The domain and the projections
#     call none of them (domain_purity.sh checks the rest of the domain).
#  2. includes: a client library's header is included only in its adapter
#     folder; base includes only the domain and base; an adapter includes
#     only the domain, base, itself (and pg the crypto layer, for the hash
#     chain); nothing in infra/ includes cmd/, and no adapter includes a
#     component.
# Places that do not hold yet are listed, with their reason, in
# layers.allow beside this script; an entry that holds again must be
# removed from it (the check says so), so the list only shrinks.
set -eu

src=${1:?usage: layers.sh <source dir> <build dir>}
build=${2:?usage: layers.sh <source dir> <build dir>}
allow="$src/tests/unit/layers.allow"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

family_of() { # symbol -> family or nothing
    case "$1" in
        PQ*|lo_*) echo libpq ;;
        rd_kafka_*) echo librdkafka ;;
        MHD_*) echo libmicrohttpd ;;
        curl_*) echo libcurl ;;
        EVP_*|RAND_*|HMAC*|BN_*|EC_*|ERR_*|PEM_*|OSSL_*|OPENSSL_*|CRYPTO_*|BIO_*|SHA1*|SHA256*|SHA512*) echo openssl ;;
    esac
}
own_family() { # layer -> the family it may call
    case "$1" in
        pg) echo libpq ;; kafka) echo librdkafka ;; http) echo libmicrohttpd ;; crypto) echo openssl ;;
        sms) echo libcurl ;;
    esac
}

# --- 1. calls -----------------------------------------------------------------
# "<layer> <source file> <family>" for every object that calls a family.
: > "$tmp/calls"
check_objects() { # <layer> <source prefix> <objects...>
    layer=$1; prefix=$2; shift 2
    for o in "$@"; do
        [ -f "$o" ] || continue
        name=$(basename "$o" .o)  # foo.c
        # An object whose source is gone (moved or split) is a leftover of
        # an earlier build of this folder, not part of this one.
        [ -f "$src/$prefix/$name" ] || continue
        nm -u "$o" | awk 'NF >= 2 && $1 == "U" { sub(/@.*/, "", $2); print $2 }' | sort -u |
        while read -r sym; do
            fam=$(family_of "$sym")
            if [ -n "$fam" ]; then echo "$prefix/$name $fam"; fi
        done | sort -u | while read -r file fam; do
            if [ "$fam" != "$(own_family "$layer")" ]; then echo "$file $fam"; fi
        done >> "$tmp/calls"
    done
}
objdir() { echo "$build/CMakeFiles/$1.dir"; }
for layer in base crypto pg kafka http sms components; do
    d=$(objdir "factord_$layer")/infra/$layer
    [ -d "$d" ] || { echo "layers: no objects for infra/$layer in $d (build first)" >&2; exit 2; }
    check_objects "$layer" "infra/$layer" "$d"/*.o
done
check_objects domain domain "$(objdir factord_domain)"/domain/*.o
check_objects projections projections "$(objdir factord_projections)"/projections/*.o
check_objects cmd cmd/factord "$(objdir factord)"/cmd/factord/*.o

# --- 2. includes ----------------------------------------------------------------
: > "$tmp/includes"
for f in $(cd "$src" && ls domain/*.[ch] projections/*.[ch] infra/*/*.[ch] cmd/factord/*.[ch]); do
    case "$f" in
        infra/*) layer=$(echo "$f" | cut -d/ -f2) ;;
        cmd/*) layer=cmd ;;
        *) layer=$(echo "$f" | cut -d/ -f1) ;;
    esac
    grep -E '^[[:space:]]*#[[:space:]]*include' "$src/$f" | sed -E 's/^[^"<]*["<]([^">]*)[">].*/\1/' |
    while read -r inc; do
        what=""
        case "$inc" in
            libpq-fe.h|libpq/*) [ "$layer" = pg ] || what=libpq ;;
            librdkafka/*) [ "$layer" = kafka ] || what=librdkafka ;;
            microhttpd.h) [ "$layer" = http ] || what=libmicrohttpd ;;
            curl/*) [ "$layer" = sms ] || what=libcurl ;;
            openssl/*) [ "$layer" = crypto ] || what=openssl ;;
            cmd/*) [ "$layer" = cmd ] || what="include:cmd" ;;
            infra/*)
                to=$(echo "$inc" | cut -d/ -f2)
                case "$layer/$to" in
                    domain/*|projections/*) what="include:infra" ;;
                    base/base|crypto/base|crypto/crypto|pg/base|pg/crypto|pg/pg) ;;
                    kafka/base|kafka/kafka|http/base|http/http|sms/base|sms/sms) ;;
                    components/*|cmd/*) ;;
                    *) what="include:infra/$to" ;;
                esac ;;
            projections/*)
                case "$layer" in domain|base|crypto|pg|kafka|http|sms) what="include:projections" ;; esac ;;
        esac
        if [ -n "$what" ]; then echo "$f $what"; fi
    done >> "$tmp/includes"
done

# --- verdict ----------------------------------------------------------------------
sort -u "$tmp/calls" "$tmp/includes" > "$tmp/found"
grep -Ev '^[[:space:]]*(#|$)' "$allow" 2>/dev/null | awk '{ print $1, $2 }' | sort -u > "$tmp/allowed" || true
new=$(comm -23 "$tmp/found" "$tmp/allowed")
stale=$(comm -13 "$tmp/found" "$tmp/allowed")
status=0
if [ -n "$new" ]; then
    echo "layers: calls or includes outside their layer (docs/architecture.md, \"Layers\"):"
    printf '%s\n' "$new" | sed 's/^/  /'
    status=1
fi
if [ -n "$stale" ]; then
    echo "layers: these entries of tests/unit/layers.allow hold now; remove them:"
    printf '%s\n' "$stale" | sed 's/^/  /'
    status=1
fi
if [ $status = 0 ]; then echo "layers: ok ($(wc -l < "$tmp/allowed") listed exceptions left)"; fi
exit $status
