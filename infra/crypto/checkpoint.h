/*
 * infra/crypto/checkpoint.h - the verifier's signed checkpoints of the
 * chain head (docs/audit.md, "Checkpoints").
 *
 * After a clean run, `factord verify` records where it got to: the chain
 * head's position and hash, when, with which key, how the run was made
 * (from zero, or from which position) and how many events it checked. The
 * next run starts there instead of at the first event. A checkpoint is
 * signed with the chain key, HMAC-SHA256 over its canonical text:
 *
 *   factord verify checkpoint v1\n
 *   position <decimal>\n
 *   hash <64 lowercase hex digits>\n
 *   verified_at <Unix time in microseconds>\n
 *   key_id <8 hex digits>\n
 *   mode full|incremental\n
 *   from <decimal position>\n
 *   events <decimal>\n
 *
 * so that a row forged or edited in the database does not verify without
 * the key. The text's 33rd byte is never '{', the byte an event's hash
 * input has there (32 bytes of previous hash, then the canonical JSON), so
 * no checkpoint's signature is an event's hash and no event's hash a
 * signature. The file form (`verify --checkpoint-file`) is the canonical
 * text followed by "signature <64 hex digits>\n".
 *
 * Ownership: es_checkpoint is a plain value; texts are caller buffers.
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_CHECKPOINT_H
#define FACTORD_INFRA_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infra/crypto/chain.h"

/* Room for the canonical text, and for the file form. */
#define ES_CHECKPOINT_TEXT_MAX 384
#define ES_CHECKPOINT_FILE_MAX (ES_CHECKPOINT_TEXT_MAX + 80)

typedef struct {
    int64_t position;                       /* the chain head verified (>= 1) */
    unsigned char hash[ES_CHAIN_HASH_LEN];  /* its hash */
    int64_t verified_at_us;                 /* when the run ended, Unix microseconds */
    char key_id[9];                         /* the signing key's id (es_chain_key.key_id) */
    bool full;                              /* the run verified from the first event */
    int64_t from_position;                  /* where the run started (0 when full) */
    int64_t events;                         /* events the run checked */
    unsigned char signature[ES_CHAIN_HASH_LEN];
} es_checkpoint;

/* The canonical text of cp (signature left out) into out (cap bytes,
 * NUL-terminated); its length, or 0 when it does not fit or cp holds what
 * no checkpoint can (a position below 1, a negative count, a key id that is
 * not 8 hex digits). */
size_t es_checkpoint_canonical(const es_checkpoint *cp, char *out, size_t cap);

/* Set cp->key_id to k's and cp->signature over the canonical text. False
 * when cp cannot be encoded (es_checkpoint_canonical's 0). */
bool es_checkpoint_sign(const es_chain_key *k, es_checkpoint *cp) ES_WUR;

typedef enum {
    ES_CHECKPOINT_VALID = 0,
    ES_CHECKPOINT_OTHER_KEY,     /* key_id is not k's: signed with another key (or key_id edited) */
    ES_CHECKPOINT_BAD_SIGNATURE, /* k's key id, but the signature does not verify: forged or edited */
    ES_CHECKPOINT_MALFORMED      /* cannot be encoded */
} es_checkpoint_status;

/* Whether cp is signed with k (constant-time comparison). */
es_checkpoint_status es_checkpoint_check(const es_chain_key *k, const es_checkpoint *cp);
/* "valid", "signed with another key", ... for messages. */
const char *es_checkpoint_status_text(es_checkpoint_status s);

/* The file form of cp into out (ES_CHECKPOINT_FILE_MAX bytes); its length,
 * or 0 as es_checkpoint_canonical. */
size_t es_checkpoint_format(const es_checkpoint *cp, char *out, size_t cap);
/* Parse the file form, strictly: it must be exactly what
 * es_checkpoint_format writes. False with why (a sentence) otherwise. The
 * signature is not checked (es_checkpoint_check). */
bool es_checkpoint_parse(const char *text, es_checkpoint *cp, char *why, size_t why_len);

#endif
