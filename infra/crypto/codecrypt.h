/*
 * infra/crypto/codecrypt.h - phone codes: generation, AES-256-GCM encryption, and
 * the SHA-256 content hash of commands.
 *
 * A stored code is "<key id>:<base64(nonce(12) | ciphertext | tag(16))>".
 * The key id (first 8 hex digits of SHA-256 of the key) lets a notifier see
 * which key a code needs; the associated data binds the ciphertext to its
 * instance and user, so a copied ciphertext does not verify for another user.
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_CODECRYPT_H
#define FACTORD_INFRA_CODECRYPT_H

#include <stddef.h>

#include "domain/errors.h"

typedef struct {
    unsigned char key[32];
    char key_id[9];
} es_codekey;

void es_codekey_init(es_codekey *ck, const unsigned char key[32]);

/* len random decimal digits (uniform, from the OS CSPRNG) into out. */
es_result es_code_generate(char *out, size_t out_len, int len, es_error *err) ES_WUR;

es_result es_code_encrypt(const es_codekey *ck, const char *instance_id, const char *user_id,
                          const char *code, char *out, size_t out_len, es_error *err) ES_WUR;
/* ES_EINVAL when the ciphertext was altered, is for another user or key. */
es_result es_code_decrypt(const es_codekey *ck, const char *instance_id, const char *user_id,
                          const char *enc, char *out, size_t out_len, es_error *err) ES_WUR;

void es_sha256(const void *data, size_t len, unsigned char out[32]);

#endif
