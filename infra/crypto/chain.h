/*
 * infra/crypto/chain.h - the event log's hash chain (docs/audit.md).
 *
 * Every event's hash is HMAC-SHA256(chain key, prev || canonical bytes),
 * where prev is the hash of the event before it in position order (32 zero
 * bytes for the first chained event) and the canonical bytes are
 * json_dumps(dom_evt_to_json(evt), JSON_COMPACT | JSON_SORT_KEYS) of the
 * event as the store reads it back (command id lowercase, the position
 * included, so moving an event breaks the chain).
 *
 * The key is secret (FACTORD_CHAIN_KEY / FACTORD_CHAIN_KEY_FILE: 64 hex
 * digits) or, when none is configured, the public key "factord-chain-v1":
 * then the chain catches accidental and naive edits only, since anyone can
 * recompute it; an auditor's recorded head (`verify --expect-head`) still
 * catches a rewrite.
 *
 * Ownership: es_chain_key is a plain value (copy it freely; wipe it with
 * es_chain_key_wipe); es_chain_canon text is malloc'd and freed by
 * es_chain_canon_clear.
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_CHAIN_H
#define FACTORD_INFRA_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "infra/base/config.h"

#define ES_CHAIN_HASH_LEN 32
#define ES_CHAIN_PUBLIC_KEY "factord-chain-v1"

typedef struct {
    unsigned char key[32];
    size_t len;          /* 32, or strlen(ES_CHAIN_PUBLIC_KEY) */
    bool is_public;
    char key_id[9];      /* first 8 hex digits of SHA-256(key): safe to log */
    char source[160];    /* where it came from, for messages (no secret) */
} es_chain_key;

/* The public key (no secret configured). */
void es_chain_key_public(es_chain_key *k);
/* Exactly 32 raw bytes as the key. */
void es_chain_key_init(es_chain_key *k, const unsigned char key[32], const char *source);
void es_chain_key_wipe(es_chain_key *k);

/* FACTORD_CHAIN_KEY, else FACTORD_CHAIN_KEY_FILE, else (when dev_fallback)
 * the development key `factord run` keeps in $FACTORD_STATE_DIR/chain.key if
 * that file exists, else the public key. ES_EINVAL when a configured key is
 * malformed or its file unreadable. */
es_result es_chain_key_load(const es_config *cfg, bool dev_fallback, es_chain_key *k,
                            es_error *err) ES_WUR;

/* For `factord run`: when no chain key is configured, create a development
 * key in $FACTORD_STATE_DIR/chain.key (0600, once; the folder must exist)
 * and point cfg->chain_key_file at it. ES_OK when a key was configured
 * already. *created tells whether a new file was written (may be NULL). */
es_result es_chain_key_ensure_dev(es_config *cfg, bool *created, es_error *err) ES_WUR;

/* The canonical bytes of evt (see above): malloc'd, NUL-terminated.
 * NULL when evt cannot be encoded (invalid UTF-8 in a field). */
char *es_chain_canonical(const dom_evt *evt);

/* The canonical bytes of an event whose position is not known yet, split
 * around the position's digits: canonical = head || digits || tail. Built
 * before the writer takes the counter, so that under the counter's lock only
 * the HMACs remain. */
typedef struct {
    char *text;          /* the canonical text with the event's position then */
    size_t head_len;     /* bytes before the position's digits */
    size_t tail_off;     /* offset of the bytes after them */
} es_chain_canon;
es_result es_chain_canon_prepare(const dom_evt *evt, es_chain_canon *c, es_error *err) ES_WUR;
void es_chain_canon_clear(es_chain_canon *c);

/* A hasher: the key's HMAC pads absorbed once, so an event costs only its
 * own bytes (the verifier's hot loop, the writer under the counter lock).
 * Out of memory aborts; free is NULL-safe. */
typedef struct es_chain_hasher es_chain_hasher;
es_chain_hasher *es_chain_hasher_new(const es_chain_key *k);
void es_chain_hasher_free(es_chain_hasher *h);
/* out = HMAC-SHA256(key, prev || data). */
void es_chain_hash(es_chain_hasher *h, const unsigned char prev[ES_CHAIN_HASH_LEN],
                   const void *data, size_t len, unsigned char out[ES_CHAIN_HASH_LEN]);
/* The same over a prepared canonical text with position pos. */
void es_chain_hash_canon(es_chain_hasher *h, const unsigned char prev[ES_CHAIN_HASH_LEN],
                         const es_chain_canon *c, int64_t pos,
                         unsigned char out[ES_CHAIN_HASH_LEN]);

/* out = HMAC-SHA256(key, data): the same key's MAC over other bytes (the
 * verifier's checkpoints: infra/crypto/checkpoint.h). */
void es_chain_mac(es_chain_hasher *h, const void *data, size_t len, unsigned char out[ES_CHAIN_HASH_LEN]);

/* Lowercase hex of n bytes into out (2n+1 bytes). */
void es_chain_hex(const unsigned char *bytes, size_t n, char *out);
/* Parse 2*n hex digits; false on anything else. */
bool es_chain_unhex(const char *hex, unsigned char *out, size_t n);

#endif
