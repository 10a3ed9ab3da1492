/*
 * infra/crypto/devkeys.h - the development keys `factord run` keeps in its
 * state folder when no key is configured: the phone-code key made here,
 * and the release of the signing key es_jwt_dev_key_ensure hands out, so
 * that no caller outside this layer calls OpenSSL.
 *
 * The key is 32 random bytes (OpenSSL's RAND_bytes) written once as 64 hex
 * digits and a newline to $FACTORD_STATE_DIR/code.key (mode 0600, written
 * to a temporary file, synced, then renamed into place), and read from
 * there like any FACTORD_CODE_KEY_FILE. The hash-chain key's development
 * twin is es_chain_key_ensure_dev (chain.h); the token signing key's is
 * es_jwt_dev_key_ensure (jwt.h).
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_CRYPTO_DEVKEYS_H
#define FACTORD_INFRA_CRYPTO_DEVKEYS_H

#include <openssl/evp.h>
#include <stdbool.h>

#include "domain/errors.h"
#include "infra/base/config.h"

/* When neither FACTORD_CODE_KEY nor FACTORD_CODE_KEY_FILE is set: create
 * the development key in cfg->state_dir unless it is there already, and
 * point cfg->code_key_file at it (cfg owns the new string). *created (may
 * be NULL) says whether this call made the file. ES_EINVAL: the state
 * folder's path is too long; ES_EFATAL: no randomness, or the file could
 * not be written (err says which). */
es_result es_code_key_ensure_dev(es_config *cfg, bool *created, es_error *err) ES_WUR;

/* Free a key this layer gave the caller (es_jwt_dev_key_ensure,
 * es_jwk_to_pkey). NULL-safe. */
void es_jwt_key_free(EVP_PKEY *key);

#endif
