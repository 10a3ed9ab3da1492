/*
 * infra/pg/piikeys.h - the key store of sealed personal data
 * (factord.pii_keys, migration 0017; docs/pii.md).
 *
 * Both functions take a batch of events and make one round trip for all
 * their users (two when a batch has users without a key yet; binary
 * arrays, infra/pg/pgarr.h), never one per event:
 * es_piikeys_seal on the write path (inside the batch transaction, before
 * the chain's canonical bytes are built), es_piikeys_open on every read
 * path that needs the fields in clear.
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PIIKEYS_H
#define FACTORD_INFRA_PIIKEYS_H

#include <stddef.h>

#include "domain/event.h"
#include "infra/crypto/pii.h"
#include "infra/pg/store.h"

/* Seal every event of evts (n) whose type has PII fields and that is not
 * sealed yet, under its user's data key: one statement reads the users'
 * key rows; a user without one gets a new key, inserted in the caller's
 * transaction by a second statement (only when some are new); a user whose row is a
 * tombstone (erased) gets a throwaway key, so the event is written sealed
 * and unreadable. The events keep their plaintext fields (DOM_PII_OPEN).
 * ES_EFATAL when a row was wrapped under another master key. */
es_result es_piikeys_seal(es_store *st, const es_pii_master *m, dom_evt *evts, size_t n,
                          es_error *err) ES_WUR;

/* Open every sealed event of evts (n) with its user's key
 * (DOM_PII_OPEN), or mark it erased (DOM_PII_ERASED) when the user's row is
 * a tombstone. Plain events are left alone. ES_EFATAL (naming the event)
 * when m is NULL and a sealed event is met, when a sealed event's user has
 * no key row, when a row was wrapped under another master key, or when a
 * sealed value does not authenticate (tampering). */
es_result es_piikeys_open(es_store *st, const es_pii_master *m, dom_evt *evts, size_t n,
                          es_error *err) ES_WUR;

/* Erasure (docs/pii.md, "Erasure"): for every user.removed event of evts
 * (n), in the caller's transaction and after es_piikeys_seal sealed it,
 * turn the user's key row into a tombstone (wrapped NULL, erased_at set)
 * and delete the user's factord.code_deliveries rows (their reasons may
 * quote the number). One statement, only when there is such an event;
 * *erased (may be NULL) gets the number of keys destroyed. */
es_result es_piikeys_erase(es_store *st, const dom_evt *evts, size_t n, size_t *erased,
                           es_error *err) ES_WUR;

/* One event with its user's key row read beside it (a join on
 * factord.pii_keys in the reader's own statement, for the audit scans of
 * infra/pg/logread.c): has_row false when there is none, wrapped_hex NULL
 * for a tombstone. Opens, or marks erased, a sealed event as
 * es_piikeys_open does; with m NULL it is left sealed (DOM_PII_SEALED), for
 * a tool that runs without the master key. */
es_result es_piikeys_open_row(const es_pii_master *m, dom_evt *e, bool has_row, const char *wrapped_hex,
                              const char *master_id, es_error *err) ES_WUR;

/* What es_piikeys_seal_legacy did. */
typedef struct {
    int64_t first_position;   /* the first plain PII event (0: none, nothing done) */
    int64_t last_position;    /* the last event rewritten or re-hashed */
    int64_t head_position;    /* the chain head (unchanged) */
    int64_t events_sealed;    /* plain PII events sealed in place */
    int64_t events_rehashed;  /* chained events whose hash was recomputed */
    unsigned char old_head[32], new_head[32];
} es_pii_rewrite;

/* `factord pii seal-legacy` (docs/pii.md, "Events written before
 * sealing"): in one transaction, holding the position counter's row (so
 * every writer waits), seal in place every event of a PII type still in
 * clear, from the first one to the head, under its user's key (created as
 * needed; the store's master key is required), with the append-only
 * trigger disabled for this transaction only; recompute the hash chain
 * with h from that event to the head and move the head's hash; and record
 * the run in factord.pii_rewrites (chain_key_id and note as given). ES_OK
 * with rep->first_position 0 when there is nothing to seal. */
es_result es_piikeys_seal_legacy(es_store *st, es_chain_hasher *h, const char *chain_key_id, const char *note,
                                 es_pii_rewrite *rep, es_error *err) ES_WUR;

#endif
