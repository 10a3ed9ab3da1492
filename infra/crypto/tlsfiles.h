/*
 * infra/crypto/tlsfiles.h - a server's TLS certificate and private key,
 * read from PEM files and checked before a server uses them, so that a
 * wrong file is a clear error at start naming the setting, not a listener
 * that fails its handshakes (docs/gateway.md, "HTTPS").
 *
 * Ownership: es_tls_files holds malloc'd PEM text; es_tls_files_free
 * wipes the key's copy and is NULL-safe on empty structs.
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_TLSFILES_H
#define FACTORD_INFRA_TLSFILES_H

#include <stddef.h>

#include "domain/errors.h"

typedef struct {
    char *cert_pem;   /* the certificate, then any chain */
    char *key_pem;    /* the certificate's private key (secret) */
    size_t key_len;
} es_tls_files;

/* Read cert_file and key_file (named in errors by cert_setting and
 * key_setting), and check that the first is a certificate, the second an
 * unencrypted private key, and that they belong together. ES_EINVAL with
 * the setting and what is wrong; *out is empty then. */
es_result es_tls_files_load(const char *cert_file, const char *cert_setting, const char *key_file,
                            const char *key_setting, es_tls_files *out, es_error *err) ES_WUR;
void es_tls_files_free(es_tls_files *t);

#endif
