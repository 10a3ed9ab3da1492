/*
 * infra/crypto/pii.h - personal data sealed under per-user keys
 * (crypto-shredding, docs/pii.md).
 *
 * Each user has a 256-bit data key; the key store keeps it wrapped
 * (AES-256-GCM) under one master key. An event's PII fields are sealed as
 * one payload member, DOM_PII_PREFIX base64(nonce(12) | ciphertext | tag(16)),
 * whose plaintext is the sealed record (dom_evt_pii_pack) and whose
 * associated data binds instance, user, event type and sequence, so a sealed
 * value opens only as the payload of the event it was made for. Destroying
 * a user's wrapped key (erasure) leaves every sealed value of that user
 * unreadable; the hash chain covers the sealed bytes and still verifies.
 *
 * Ownership: keys are plain values the caller holds; es_pii_key_wipe and
 * es_pii_master_wipe clear them. Nothing here allocates on the heap except
 * OpenSSL's cipher context, freed before each call returns.
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PII_H
#define FACTORD_INFRA_PII_H

#include <stddef.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "infra/base/config.h"

#define ES_PII_KEY_LEN 32
#define ES_PII_WRAPPED_LEN 60 /* nonce(12) | AES-256-GCM(master, data key)(32) | tag(16) */

/* The master key that wraps every data key, and its key id (the first 8
 * hex digits of SHA-256 of the key, as the phone-code and chain keys'). */
typedef struct {
    unsigned char key[ES_PII_KEY_LEN];
    char key_id[9];
} es_pii_master;

/* One user's data key, unwrapped: in memory only, never stored plain. */
typedef struct {
    unsigned char key[ES_PII_KEY_LEN];
} es_pii_key;

void es_pii_master_init(es_pii_master *m, const unsigned char key[ES_PII_KEY_LEN]);
/* A master key from 64 hex digits (trailing white space allowed). */
es_result es_pii_master_from_hex(const char *hex, es_pii_master *m, es_error *err) ES_WUR;
/* The master key from FACTORD_PII_KEY or FACTORD_PII_KEY_FILE; else, when
 * dev_fallback, from $FACTORD_STATE_DIR/pii.key if that file exists.
 * *have = false (ES_OK) when there is none: personal data stays in clear.
 * ES_EINVAL when a configured key is not 64 hex digits or its file cannot
 * be read. */
es_result es_pii_master_load(const es_config *cfg, bool dev_fallback, es_pii_master *m, bool *have,
                             es_error *err) ES_WUR;
/* `factord run` without a configured key: create $FACTORD_STATE_DIR/pii.key
 * (64 hex digits, mode 0600) once, and point cfg->pii_key_file at it (cfg
 * owns the new string). *created (may be NULL) says whether it was made now. */
es_result es_pii_master_ensure_dev(es_config *cfg, bool *created, es_error *err) ES_WUR;
void es_pii_master_wipe(es_pii_master *m); /* NULL-safe */
void es_pii_key_wipe(es_pii_key *k);       /* NULL-safe */

/* A fresh data key (OS CSPRNG) for (instance_id, user_id) into *dek, and
 * its wrapped form for the key store into wrapped. */
es_result es_pii_key_new(const es_pii_master *m, const char *instance_id, const char *user_id,
                         es_pii_key *dek, unsigned char wrapped[ES_PII_WRAPPED_LEN],
                         es_error *err) ES_WUR;
/* Unwrap a key store row's key (len bytes). ES_EINVAL (and *dek zeroed)
 * when it is not ES_PII_WRAPPED_LEN bytes, was altered, belongs to another
 * user or instance, or was wrapped under another master key. */
es_result es_pii_key_unwrap(const es_pii_master *m, const char *instance_id, const char *user_id,
                            const unsigned char *wrapped, size_t len, es_pii_key *dek,
                            es_error *err) ES_WUR;

/* Seal evt's PII fields under dek: evt->pii gets the sealed member and
 * pii_state DOM_PII_OPEN (the fields keep their plaintext for the caller;
 * the payload now carries only the sealed member). The event's instance,
 * user, type and sequence must be final: they are bound. ES_EINVAL when
 * evt's type has no PII fields or a field is too long. */
es_result es_pii_seal(const es_pii_key *dek, dom_evt *evt, es_error *err) ES_WUR;
/* Open evt's sealed member into its PII fields (pii_state DOM_PII_OPEN).
 * A plain event (DOM_PII_CLEAR) is left as it is. ES_EINVAL (fields
 * emptied, state unchanged) when the member is malformed, has another
 * prefix, or does not authenticate under dek for this event's instance,
 * user, type and sequence: altered, moved, or another key. */
es_result es_pii_open(const es_pii_key *dek, dom_evt *evt, es_error *err) ES_WUR;
/* What a reader makes of a sealed event whose user is erased: the fields
 * empty, pii_state DOM_PII_ERASED. A plain event is left as it is. */
void es_pii_mark_erased(dom_evt *evt);

#endif
