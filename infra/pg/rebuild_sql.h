/*
 * infra/pg/rebuild_sql.h - the SQL of `factord rebuild`
 * (infra/components/rebuild.h): the shadow tables of a projection, reading
 * the log by pages, writing a folded page to the shadow, the locked swap,
 * and the advisory lock that keeps one rebuild per projection.
 *
 * Every table is in schema factord: each live table <t> has a shadow
 * <t>_rebuild, written during the rebuild, and a retired <t>_retired, which
 * holds the old rows between the swap and its drop. Rows travel as one
 * JSON array per statement (json_to_recordset), so a page costs a few round
 * trips whatever its size; rows are read back with the store's decoders
 * (es_store_row_event, es_store_row_user), so a rebuild reads the log
 * exactly as the relay and the processor do.
 *
 * Ownership: the caller owns the store and every array it passes; the
 * functions fill caller storage and keep nothing. Errors are the store's
 * (es_store_exec: classified SQLSTATEs, err->sqlstate set); `what` texts
 * start with "rebuild:".
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PG_REBUILD_SQL_H
#define FACTORD_INFRA_PG_REBUILD_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "domain/user.h"
#include "infra/pg/projection_sql.h"
#include "infra/pg/store.h"

/* The tables a rebuild replaces. */
typedef enum {
    ES_RBSQL_USERS = 1,     /* factord.users */
    ES_RBSQL_AUTH_FACTORS   /* factord.projected_sequences, then factord.auth_factors
                               and factord.user_views (the projector's lock order) */
} es_rbsql_tables;

/* --- the advisory lock ------------------------------------------------------ */

/* Try to take the session advisory lock of the rebuild of name (class
 * 'frbd', hashtext(name)): *got false when another session holds it. */
es_result es_rbsql_lock(es_store *st, const char *name, bool *got, es_error *err) ES_WUR;
/* Release what es_rbsql_lock took. */
es_result es_rbsql_unlock(es_store *st, const char *name, es_error *err) ES_WUR;

/* --- the shadows ------------------------------------------------------------ */

/* Drop the shadow and retired tables an earlier run left, then create each
 * shadow LIKE its live table INCLUDING ALL, with the live table's storage
 * options, comment and grants (which LIKE does not copy). */
es_result es_rbsql_create_shadows(es_store *st, es_rbsql_tables t, es_error *err) ES_WUR;
/* SET synchronous_commit = off for this session (the shadow is disposable
 * until the swap); es_rbsql_sync_commit_reset undoes it. */
es_result es_rbsql_sync_commit_off(es_store *st, es_error *err) ES_WUR;
/* RESET synchronous_commit; best effort, never fails. */
void es_rbsql_sync_commit_reset(es_store *st);
/* ANALYZE each shadow (its statistics lag behind its growth). */
es_result es_rbsql_analyze_shadows(es_store *st, es_rbsql_tables t, es_error *err) ES_WUR;
/* DROP TABLE IF EXISTS each shadow (after a failure). */
es_result es_rbsql_drop_shadows(es_store *st, es_rbsql_tables t, es_error *err) ES_WUR;
/* DROP TABLE each retired table (after the swap's commit). */
es_result es_rbsql_drop_retired(es_store *st, es_rbsql_tables t, es_error *err) ES_WUR;

/* --- a page ------------------------------------------------------------------- */

/* Up to limit events with position > after, in position order, whatever
 * their aggregate: *rows read, the last at *last (unchanged when none);
 * the users' events among them decoded into evts (room for limit), *n of
 * them. ES_EFATAL for an event the store's decoder refuses. */
es_result es_rbsql_read_page(es_store *st, int64_t after, int limit, dom_evt *evts, size_t *rows,
                             int64_t *last, size_t *n, es_error *err) ES_WUR;

/* users[0..n) hold only their instance_id and user_id, sorted by strcmp
 * on (instance_id, user_id), distinct: each one the users shadow has a row
 * of gets that row (es_store_row_user); the others are left as they are. */
es_result es_rbsql_load_users(es_store *st, dom_user *users, size_t n, es_error *err) ES_WUR;
/* Upsert users[0..n) into the users shadow, removed users first (a name a
 * page frees must be free before another user of the page takes it);
 * users still in DOM_USER_NONE are skipped, as es_store_write skips them. */
es_result es_rbsql_put_users(es_store *st, const dom_user *users, size_t n, es_error *err) ES_WUR;

/* One user's applied sequence after a page (projected_sequences). */
typedef struct {
    const char *instance_id, *user_id;
    int64_t sequence;
} es_rbsql_seq;

/* One net change of an auth-factor row (the projections/auth_factors fold):
 * del removes the row (instance_id, user_id, type), put then writes it
 * (keeping created_at when it is there). Strings are borrowed. */
typedef struct {
    bool del, put;
    es_projsql_factor row;
} es_rbsql_factor;

/* Write a folded page to the auth-factor shadows, as the projector writes
 * the live tables: the sequences of projection (only forward), then the
 * deleted rows, then the put ones. An empty list costs no statement. */
es_result es_rbsql_put_factors(es_store *st, const char *projection, const es_rbsql_seq *seqs,
                               size_t n_seqs, const es_rbsql_factor *rows, size_t n_rows,
                               es_error *err) ES_WUR;

/* --- the locked final step (inside the caller's transaction) ---------------- */

/* SET LOCAL lock_timeout = lock_timeout_ms and synchronous_commit = on,
 * then LOCK the live tables ACCESS EXCLUSIVE (the users table before the
 * counter, as the processor takes them), then the position counter row FOR
 * UPDATE: from here no event commits until the caller's transaction ends.
 * A lock not granted in time fails with err->sqlstate "55P03". */
es_result es_rbsql_lock_live(es_store *st, es_rbsql_tables t, int lock_timeout_ms, es_error *err) ES_WUR;
/* Copy the rows of projected_sequences of every projection other than
 * projection into its shadow unchanged (the table is shared). */
es_result es_rbsql_keep_other_sequences(es_store *st, const char *projection, es_error *err) ES_WUR;
/* Live -> retired, shadow -> live, and the index names (constraints follow
 * their index) swapped between the two, matched by definition, so the live
 * table keeps the names migrations and error messages know. */
es_result es_rbsql_swap(es_store *st, es_rbsql_tables t, es_error *err) ES_WUR;

/* --- after ------------------------------------------------------------------- */

/* Rows of the live table (users, or auth_factors). */
es_result es_rbsql_count(es_store *st, es_rbsql_tables t, int64_t *rows, es_error *err) ES_WUR;
/* Is the store's connection still up (worth cleaning up on)? */
bool es_rbsql_connected(es_store *st);

#endif
