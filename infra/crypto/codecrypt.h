/*
 * infra/crypto/codecrypt.h - phone codes: generation, AES-256-GCM encryption, and
 * the SHA-256 content hash of commands; session tokens and their hashes.
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

#include "domain/command.h"
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

/* A session token: 32 bytes from the OS CSPRNG, base64url without padding
 * (43 characters). Only its hash is ever stored (docs/gateway.md,
 * "Sessions"): SHA-256 as 64 lowercase hex digits. A plain hash suffices,
 * since 256 random bits cannot be guessed from it. */
#define ES_SESSION_TOKEN_LEN 43
es_result es_session_token_new(char token[ES_SESSION_TOKEN_LEN + 1], char hash[DOM_TOKEN_HASH_LEN + 1],
                               es_error *err) ES_WUR;
void es_session_token_hash(const char *token, size_t len, char hash[DOM_TOKEN_HASH_LEN + 1]);

#endif
