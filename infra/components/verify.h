/*
 * infra/components/verify.h - `factord verify`'s check: the event log is
 * complete and unaltered (brief §7; docs/audit.md).
 *
 * The log is streamed in pages (keyset pagination on position, 10,000 rows
 * a page, the next page requested while the current one is checked:
 * infra/pg/logread.h) inside one REPEATABLE READ READ ONLY transaction, so
 * the check sees one snapshot of a log that writers keep appending to, and
 * holds at most two pages in memory per pass.
 *
 * es_audit_verify checks, in this order, and stops at the first problem:
 *  1. in position order: positions strictly increasing; unchained events
 *     (hash NULL, written before migration 0009) only as a prefix at or below
 *     the chain's start; every other event's hash is HMAC(key, previous hash
 *     || canonical bytes) (infra/crypto/chain.h); the stored row holds nothing the
 *     event does not (the type's canonical name, aggregate type "user", no
 *     foreign payload members); the expected head, when given, is in the
 *     log with that hash; the last chained event is the counter's head;
 *  2. in (instance, user, sequence) order: each user's sequences are 1..n
 *     without gap or duplicate, and the write-side projection
 *     (factord.users) equals the fold of the user's events through
 *     dom_user_apply, every column; users without events are errors too.
 * The second pass runs beside the first, on a second connection sharing its
 * snapshot, when one can be had; else after it.
 *
 * Incremental runs (opts->incremental) start from an anchor instead of the
 * first event: the newest signed checkpoint in factord.verify_checkpoints
 * (infra/crypto/checkpoint.h), the checkpoint file's, or the expected
 * head, whichever is at the lowest position (the ones outside the database
 * are the auditor's: starting from the earliest one checks everything a
 * key holder could have rewritten since). Signed anchors must verify with
 * the key; the event at the start must still have the anchor's hash; the
 * chain pass then reads only the events above it, continuing from that
 * hash, and checks the other anchors as it passes them; the users pass
 * folds only the users with an event above it (their whole history) and
 * skips the search for rows without events. What an edit before the start
 * escapes is in docs/audit.md, "Checkpoints": `--full` catches it.
 *
 * Ownership: the store is borrowed (its connection runs the transaction,
 * which is closed again before return); reports are caller storage.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_COMPONENTS_VERIFY_H
#define FACTORD_COMPONENTS_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "infra/components/audit_progress.h"
#include "infra/crypto/chain.h"
#include "infra/crypto/checkpoint.h"
#include "infra/pg/store.h"

typedef struct {
    bool expect_head;      /* --expect-head POS:HASH */
    int64_t expect_position;
    unsigned char expect_hash[ES_CHAIN_HASH_LEN];
    bool incremental;      /* start from the newest checkpoint (or a lower anchor below) */
    bool has_file_checkpoint; /* --checkpoint-file's checkpoint (read by the caller; its */
    es_checkpoint file_checkpoint; /* signature is checked here): an anchor in both modes */
    size_t page;           /* rows per page; 0 = 10,000 */
    es_audit_progress_fn progress; /* may be NULL */
    void *progress_arg;
} es_verify_opts;

typedef struct {
    bool ok;                        /* every check held */
    /* what was checked */
    bool incremental;               /* the run started after from_position */
    int64_t from_position;          /* 0: from the first event */
    char from_what[160];            /* what the start is ("checkpoint 3 (a full verify of ...)",
                                       "the checkpoint file's head", "the expected head"), or
                                       which anchor was refused ("checkpoint 3, refused") */
    int64_t checkpoint_id;          /* the database checkpoint the run started from (0: none) */
    int64_t events;                 /* events read in position order (above from_position) */
    int64_t unchained;              /* events without a hash (a prefix) */
    int64_t users;                  /* users folded and compared (incremental: those with
                                       an event above from_position) */
    int64_t users_sealed;           /* ... of which with sealed personal data that
                                       this run could not open (no FACTORD_PII_KEY):
                                       user_name, phone and verified_phone
                                       were not compared (docs/pii.md) */
    int64_t head_position;          /* the last chained event (0: none) */
    unsigned char head_hash[ES_CHAIN_HASH_LEN];
    int64_t chain_start;            /* the counter's value at migration 0009 */
    int64_t pii_rewrites;           /* runs of `factord pii seal-legacy` that re-chained
                                       the log (factord.pii_rewrites, docs/pii.md) */
    double seconds;
    /* the first problem (when !ok) */
    int64_t bad_position;           /* 0 when the problem has no event */
    char bad_instance[DOM_ID_MAX];
    char bad_user[DOM_ID_MAX];
    char problem[512];
} es_verify_report;

/* Verify the log with key. ES_OK when the checks ran (rep->ok tells whether
 * they held); another result when they could not (PostgreSQL away, schema
 * too old): err says why. */
es_result es_audit_verify(es_store *st, const es_chain_key *key, const es_verify_opts *opts,
                          es_verify_report *rep, es_error *err) ES_WUR;

/* The checkpoint of a clean run rep (rep->ok, rep->head_position > 0) at
 * now_us, signed with key, appended to factord.verify_checkpoints (its id
 * into *id) and copied into *cp. ES_OK with *id = 0 and nothing written
 * when the run reached no chained event. */
es_result es_audit_record_checkpoint(es_store *st, const es_chain_key *key, const es_verify_report *rep,
                                     int64_t now_us, es_checkpoint *cp, int64_t *id, es_error *err) ES_WUR;

/* "POS:HASH" (decimal position, 64 hex digits) for --expect-head. */
bool es_audit_parse_head(const char *s, int64_t *pos, unsigned char hash[ES_CHAIN_HASH_LEN]);

#endif
