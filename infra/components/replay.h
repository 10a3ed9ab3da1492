/*
 * infra/components/replay.h - `factord replay`: the event log as JSON
 * lines, filtered (docs/audit.md).
 *
 * The log is streamed in pages (keyset pagination on position, 10,000 rows
 * a page, the next page requested while the current one is written:
 * infra/pg/logread.h) inside one REPEATABLE READ READ ONLY transaction, so
 * the output is one snapshot of a log that writers keep appending to.
 *
 * Ownership: the store is borrowed (its connection runs the transaction,
 * which is closed again before return); the filter and out are the
 * caller's.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_COMPONENTS_REPLAY_H
#define FACTORD_COMPONENTS_REPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "infra/components/audit_progress.h"
#include "infra/pg/store.h"

#define ES_REPLAY_MAX_TYPES 32

typedef struct {
    const char *instance_id;       /* NULL = every instance */
    const char *user_id;           /* aggregate id; NULL = every user */
    const char *resource_owner;    /* organisation; NULL = every one */
    dom_evt_type types[ES_REPLAY_MAX_TYPES];
    size_t n_types;                /* 0 = every type */
    bool has_since, has_until;
    int64_t since_us, until_us;    /* createdAt >= since, < until */
    int64_t from_position;         /* position >= from (0 = start) */
    int64_t to_position;           /* position <= to (0 = no bound) */
    size_t page;                   /* rows per page; 0 = 10,000 */
    bool open;                     /* personal data in clear (the store has the
                                      master key): not the hashed bytes */
    es_audit_progress_fn progress; /* may be NULL */
    void *progress_arg;
} es_replay_filter;

/* Write the matching events to out as JSON lines in position order: the
 * dom_evt_to_json members (sorted by name: the chain's canonical text)
 * plus "hash" (hex, or null for an unchained event). With f->open, a
 * sealed event's personal data is printed in clear in place of its "pii"
 * member, or "pii":"erased" when its user is erased (docs/pii.md): such a
 * line is not the hashed text.
 * *written = lines written. */
es_result es_audit_replay(es_store *st, const es_replay_filter *f, FILE *out, int64_t *written,
                          es_error *err) ES_WUR;

#endif
