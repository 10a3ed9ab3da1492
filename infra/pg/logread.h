/*
 * infra/pg/logread.h - reading the event log for the auditor's tools
 * (infra/components/verify.h, replay.h, status.h; docs/audit.md).
 *
 * A reader is one REPEATABLE READ READ ONLY transaction: every read made
 * through it sees one snapshot of a log that writers keep appending to.
 * A reader can be shared with a second connection of its own on the same
 * snapshot, so that two scans run side by side (verify's two passes).
 *
 * Scans stream the log in pages (keyset pagination, `page` rows a query)
 * with libpq's asynchronous calls: as soon as a page arrives, the request
 * for the next one goes out, and the page is handed over row by row while
 * the server reads the next; at most two pages are in memory. Rows are
 * decoded by the store's one decoder (es_store_row_event,
 * es_store_row_user: infra/pg/store.h), so the canonical bytes a verifier
 * recomputes are those the writer hashed.
 *
 * Errors: a failed statement gives ES_ETRANSIENT when the connection is
 * lost, else ES_EFATAL, with the server's message and err->sqlstate.
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_LOGREAD_H
#define FACTORD_INFRA_LOGREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "domain/user.h"
#include "infra/crypto/chain.h"
#include "infra/crypto/checkpoint.h"
#include "infra/pg/store.h"

typedef struct es_logread es_logread;

/* Begin a reader on st's connection (borrowed: st must outlive the reader
 * and run nothing else until es_logread_end). ES_EINVAL when a transaction
 * is open on it already. */
es_result es_logread_begin(es_store *st, es_logread **out, es_error *err) ES_WUR;
/* Roll the reader's transaction back and free it; a shared reader's own
 * connection is closed. NULL-safe. */
void es_logread_end(es_logread *r);
/* A second reader on a new connection (made like r's) in a transaction on
 * r's snapshot, into *out; *out = NULL when that cannot be had, and ES_OK
 * still. Call it before any other read through r, so that the exported
 * snapshot is the one all of r's reads see. When the server refuses the
 * export, r's transaction is begun afresh (a failed statement aborts it),
 * which is the only failure returned. The caller owns *out (es_logread_end)
 * and may use it from another thread than r. */
es_result es_logread_share(es_logread *r, es_logread **out, es_error *err) ES_WUR;

/* --- the position counter ------------------------------------------------ */

typedef struct {
    bool valid;              /* row 1 exists and every column parsed */
    int64_t value;           /* the highest position handed out */
    int64_t head_position;   /* the chain head */
    unsigned char head_hash[ES_CHAIN_HASH_LEN];
    int64_t chain_start;     /* the counter's value at migration 0009 */
    int64_t pii_rewrites;    /* runs of `factord pii seal-legacy` that re-chained
                                the log (factord.pii_rewrites; 0 before migration 0017) */
} es_log_counter;

/* factord.position_counter's row as of the reader's snapshot. ES_OK with
 * c->valid false when the row is missing or malformed; an error when the
 * statement fails (err says "verify: the chain head (is the schema
 * migrated?)"). */
es_result es_logread_counter(es_logread *r, es_log_counter *c, es_error *err) ES_WUR;

/* --- scans ------------------------------------------------------------------ */

/* One event row of a scan, lent to the visitor: its strings point into the
 * page and are valid only until the visitor returns. */
typedef struct {
    bool position_ok;            /* the position column parsed */
    int64_t position;
    const char *instance_id;     /* the columns as stored */
    const char *aggregate_id;
    const char *type;            /* the type's name */
    const char *payload;         /* jsonb as PostgreSQL prints it */
    const char *aggregate_type;  /* chain scan only, else NULL */
    const char *hash_hex;        /* chain and replay scans: hex, NULL when the event has none */
    es_result decoded;           /* es_store_row_event's result: evt holds the event when ES_OK, */
    es_error decode_err;         /* else this says why */
    dom_evt evt;
    /* users scan only: the event's user in factord.users */
    bool has_user;               /* there is a row */
    bool user_decoded;           /* it was decoded: on the first row of each user in the scan
                                    (the same on every row of one user) */
    es_result user_rc;           /* es_store_row_user's result, when user_decoded */
    es_error user_err;
    dom_user user;
} es_log_row;

/* Called for each row, in scan order; false stops the scan. */
typedef bool (*es_log_row_fn)(void *arg, const es_log_row *row);
/* Called after each page's rows (rows: how many the page held; last: its
 * last row's position, 0 when it has none or in the users scan); false
 * stops the scan. May be NULL. */
typedef bool (*es_log_page_fn)(void *arg, size_t rows, int64_t last);

/* Every event above position after (0: every event) in position order,
 * with its hash and aggregate type. ES_OK when the scan ran to its end or a
 * callback stopped it. */
es_result es_logread_chain(es_logread *r, int64_t after, size_t page, es_log_row_fn row,
                           es_log_page_fn page_done, void *arg, es_error *err) ES_WUR;

/* Every event in (instance, aggregate type, aggregate id, sequence) order,
 * with its user's factord.users row beside it (one primary-key probe per
 * event). ES_OK as es_logread_chain. */
es_result es_logread_users(es_logread *r, size_t page, es_log_row_fn row, es_log_page_fn page_done,
                           void *arg, es_error *err) ES_WUR;

/* As es_logread_users, but only the users that have an event above
 * position after: all of each such user's events (from sequence 1), with
 * the row. The users are found through the position index, their events
 * through the primary key, in one pass (a cursor in the reader's
 * transaction, fetched a page at a time): the cost follows the events
 * above after and those users' histories, not the log's size. */
es_result es_logread_users_since(es_logread *r, int64_t after, size_t page, es_log_row_fn row,
                                 es_log_page_fn page_done, void *arg, es_error *err) ES_WUR;

/* The event at position pos: *found false when there is none; else
 * *chained tells whether it has a hash, and hash holds it. */
es_result es_logread_event_hash(es_logread *r, int64_t pos, bool *found, bool *chained,
                                unsigned char hash[ES_CHAIN_HASH_LEN], es_error *err) ES_WUR;

typedef struct {
    char instance_id[DOM_ID_MAX];
    char user_id[DOM_ID_MAX];
} es_log_user_key;

/* A factord.users row without any event of its user, into *who (*found
 * false when there is none). */
es_result es_logread_user_without_events(es_logread *r, bool *found, es_log_user_key *who,
                                         es_error *err) ES_WUR;

/* What a replay reads; NULL and false switch a condition off. */
typedef struct {
    const char *instance_id;
    const char *user_id;           /* aggregate id (of aggregate type "user") */
    const char *resource_owner;
    const dom_evt_type *types;     /* n_types of them; 0 = every type */
    size_t n_types;
    bool has_since, has_until;
    int64_t since_us, until_us;    /* createdAt >= since, < until */
    int64_t from_position;         /* position >= from (0 = start) */
    int64_t to_position;           /* position <= to (0 = no bound) */
} es_log_filter;

/* The events f matches, in position order, with their hashes, in a
 * snapshot of their own (a reader begun on st and ended before return).
 * ES_EINVAL for an unknown type or a time out of range (before anything is
 * read); otherwise ES_OK as es_logread_chain. */
es_result es_logread_replay(es_store *st, const es_log_filter *f, size_t page, es_log_row_fn row,
                            es_log_page_fn page_done, void *arg, es_error *err) ES_WUR;

/* --- verify's checkpoints (migration 0016) ------------------------------------ */

/* The newest row of factord.verify_checkpoints (highest id) as of the
 * reader's snapshot: *found false when there is none. Its signature is not
 * checked here (es_checkpoint_check). */
es_result es_logread_checkpoint_latest(es_logread *r, bool *found, int64_t *id, es_checkpoint *cp,
                                       es_error *err) ES_WUR;

/* Append cp (signed by the caller) to factord.verify_checkpoints, in a
 * transaction of its own on st's connection (no reader may be open on it);
 * *id gets the new row's id. The one write of the auditor's tools. */
es_result es_logread_record_checkpoint(es_store *st, const es_checkpoint *cp, int64_t *id,
                                       es_error *err) ES_WUR;

/* --- positions (status) ----------------------------------------------------- */

typedef struct {
    int64_t head_position;     /* highest committed position (events and outbox) */
    int64_t chain_position;    /* the chain head */
    unsigned char chain_hash[ES_CHAIN_HASH_LEN];
    int64_t relay_checkpoint;  /* 0 when the relay has none */
    int64_t relay_lag_events;  /* events above the checkpoint */
} es_log_positions;

/* The log's positions, in one snapshot of their own (a reader begun on st
 * and ended before return); *p is caller storage. */
es_result es_logread_positions(es_store *st, es_log_positions *p, es_error *err) ES_WUR;

#endif
