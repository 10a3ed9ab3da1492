/*
 * infra/components/projector.h - applying a batch of events to the read models in one
 * PostgreSQL transaction, and preparing the success replies it makes due.
 *
 * The Kafka loop (projector_loop.h) hands over the events it polled,
 * in offset order. In one transaction this module locks the last applied
 * sequence of every user in the batch (factord.projected_sequences, FOR
 * UPDATE, sorted), applies each event whose sequence is above it through
 * the pure reducers (projections/), skips the others (redeliveries and
 * republished duplicates), writes the read-model rows and the new
 * sequences, and finds the reply topic of every command whose last event
 * is in the batch, applied or skipped (given by the relay beside the
 * event, or looked up). After COMMIT it returns those
 * replies; the caller produces them and only then stores the offsets, so
 * a caller who gets a reply reads its own write (brief §4.7), and a crash
 * before the offsets are stored replies again, identically.
 *
 * A unique violation, a serialization failure or a deadlock (a second
 * projector on the same users during a rebalance) rolls back and applies
 * the batch again on fresh rows.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PROJECTOR_H
#define FACTORD_INFRA_PROJECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "infra/crypto/codecrypt.h"
#include "infra/pg/projection_sql.h"
#include "infra/pg/store.h"
#include "projections/auth_factors.h"

/* A success reply to produce: value {"commandId","httpStatus":200,"body"}
 * on topic, keyed by the command id. topic and value are owned by the
 * projector, key points into the events of the run; all valid until the
 * projector's next run or free, and while those events live. A returnCode
 * reply's value holds the phone code: never log it. */
typedef struct {
    const char *topic;
    const char *key; size_t key_len;
    const char *value; size_t value_len;
} es_reply;

typedef struct {
    const es_codekey *code_key; /* decrypts codes for returnCode replies */
    int max_conflict_retries;   /* 0: 20 */
} es_projector_opts;

typedef struct {
    size_t applied;    /* events that took effect */
    size_t skipped;    /* at or below the user's applied sequence */
    size_t gaps;       /* applied after a missing sequence (warned) */
    size_t replies;    /* replies returned */
    size_t attempts;
} es_project_stats;

typedef struct es_projector es_projector;

/* Borrows st and opts->code_key for its lifetime. */
es_projector *es_projector_new(es_store *st, const es_projector_opts *opts);
void es_projector_free(es_projector *p); /* NULL-safe */

/* Apply n events (offset order; borrowed) and commit. reply_to (NULL, or
 * n entries, each NULL or "" when unknown) is the reply topic the relay
 * published beside each event (header factord-reply-to, set on the last
 * event of an accepted command); a completed command without one has its
 * topic looked up in factord.commands. ES_OK: committed;
 * *replies / *n_replies are the success replies now due, in event order.
 * ES_ETRANSIENT: PostgreSQL is away (or conflicts persisted); nothing
 * committed, retry the same events after es_store_reset. ES_EFATAL: a bug
 * or an unusable schema. */
es_result es_projector_run_batch(es_projector *p, const dom_evt *evts, const char *const *reply_to, size_t n,
                                 const es_reply **replies, size_t *n_replies, es_project_stats *stats,
                                 es_error *err) ES_WUR;

/* The same for the events evts[idx[0]], ..., evts[idx[n - 1]] (idx in
 * increasing order; NULL: evts[0..n)), reply_to indexed like evts. Two
 * projectors on two connections may apply disjoint users' subsets of one
 * batch at once (factord project does, projector_loop.c). */
es_result es_projector_run_subset(es_projector *p, const dom_evt *evts, const char *const *reply_to,
                                  const size_t *idx, size_t n, const es_reply **replies, size_t *n_replies,
                                  es_project_stats *stats, es_error *err) ES_WUR;

/* The read model of one user: up to max rows (by type) into out, *n of
 * them. Outside a transaction of the caller's, a consistent snapshot. */
es_result es_auth_factors_list(es_store *st, const char *instance_id, const char *user_id,
                               proj_auth_factor *out, size_t max, size_t *n, es_error *err) ES_WUR;

/* f as the row the pg layer writes (infra/pg/projection_sql.h): its
 * strings point into f or are static names. For every writer of the
 * auth-factor model (the projector, rebuild). */
es_projsql_factor es_projector_factor_row(const proj_auth_factor *f);

/* The user read model (projections/user_views.h), for every writer of it
 * (the projector, rebuild): one user's events of a batch, evts[order[k]]
 * for k in [k0, k1) with a sequence above applied. */
typedef struct {
    const char *instance_id, *user_id; /* borrowed */
    int64_t applied;
    size_t k0, k1;
} es_view_user;

/* Buffers kept between batches; one thread. */
typedef struct es_view_writer es_view_writer;
es_view_writer *es_view_writer_new(void);
void es_view_writer_free(es_view_writer *w); /* NULL-safe */

/* For the users (in (instance, user) strcmp order) whose events touch
 * the view: load the stored rows that the first such event changes only
 * part of (one statement), fold the events in, and delete or write each
 * changed row whole, through q's user-view statements (its table:
 * es_projsql_use_views_table), inside the caller's transaction or not. */
es_result es_view_writer_write(es_view_writer *w, es_projsql *q, es_store *st, const dom_evt *evts,
                               const size_t *order, const es_view_user *users, size_t n_users,
                               es_error *err) ES_WUR;

/* The success reply value for a command whose last event is last:
 * {"commandId":"<id>","httpStatus":200,"body":<dom_success_body(last, code)>},
 * built exactly as the processor builds a repeated reply from the stored
 * body, so both are byte-identical (without a code). malloc'd text. */
char *es_success_reply(const dom_evt *last, const char *code);

#endif
