/*
 * infra/components/rebuild.h - rebuilding a projection from the PostgreSQL log while
 * factord keeps serving, then swapping it in atomically.
 *
 * Two projections: the write-side user projection (factord.users, folded
 * with dom_user_apply, brief §4.9) and the projector's read models
 * (factord.auth_factors and factord.user_views with their applied
 * sequences in factord.projected_sequences, folded with the
 * projections/auth_factors and projections/user_views reducers).
 *
 * Steps (docs/operations.md, "Rebuilding projections"):
 *   1. drop any stale shadow or retired table of an earlier run (a rerun
 *      starts over), under a session advisory lock per projection;
 *   2. CREATE TABLE <live>_rebuild (LIKE <live> INCLUDING ALL), plus the
 *      live table's storage options, comment and grants;
 *   3. stream the log by position in pages (keyset pagination), fold each
 *      page in memory, write the shadow in one statement per table;
 *   4. catch-up passes while the live system writes, until the delta left
 *      is small;
 *   5. one transaction: lock the live tables (ACCESS EXCLUSIVE; the users
 *      table before the position counter, the order the processor takes
 *      them in, so the two never deadlock), then the position counter row
 *      (no event commits meanwhile), apply the last delta, swap the tables
 *      and their index names by ALTER ... RENAME, COMMIT; then drop the
 *      retired table. Prepared statements of running processors are
 *      re-analysed by name after the DDL, so they use the new table.
 * Nothing touches a live table before step 5; an interruption or a crash
 * leaves it as it was.
 *
 * Ownership: the caller owns the store and the options; the store's
 * connection is used for the whole run and left idle afterwards.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_REBUILD_H
#define FACTORD_INFRA_REBUILD_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/pg/store.h"

typedef enum {
    ES_REBUILD_USERS = 1,     /* "users": factord.users */
    ES_REBUILD_AUTH_FACTORS   /* "auth-factors": factord.auth_factors, user_views + projected_sequences */
} es_rebuild_target;

/* "users" / "auth-factors" -> target; 0 for anything else. */
es_rebuild_target es_rebuild_target_parse(const char *name);
const char *es_rebuild_target_name(es_rebuild_target t);

typedef enum {
    ES_REBUILD_LOAD = 1,  /* the first pass over the log */
    ES_REBUILD_CATCH_UP,  /* passes over what arrived meanwhile */
    ES_REBUILD_SWAP,      /* the locked final step */
    ES_REBUILD_DONE
} es_rebuild_phase;

typedef struct {
    es_rebuild_phase phase;
    int64_t position;     /* log position folded so far */
    int64_t head;         /* highest committed position seen (the total) */
    int64_t events;       /* events folded so far */
    int64_t elapsed_ms;
} es_rebuild_progress;

typedef struct {
    es_rebuild_target target;
    int page_size;               /* events per page; 0: 10000 */
    int64_t final_delta_max;     /* catch up until fewer positions are left; 0: 2000 */
    int lock_timeout_ms;         /* for the final step's locks; 0: 2000 */
    int max_swap_attempts;       /* final step retries after a lock timeout; 0: 10 */
    int64_t max_rate;            /* events/s folded at most before the final step, so
                                    that live commands keep their share of the
                                    machine; 0: as fast as it goes */
    /* Called after every page and at phase changes; NULL: none. */
    void (*progress)(void *arg, const es_rebuild_progress *p);
    void *progress_arg;
    /* Checked between pages: set (by a signal handler) to stop. */
    volatile sig_atomic_t *stop;
} es_rebuild_opts;

typedef struct {
    int64_t events;       /* events folded */
    int64_t rows;         /* rows of the projection after the swap */
    int64_t position;     /* the log position the swapped-in table is at */
    int passes;           /* catch-up passes */
    int64_t final_events; /* events folded under the locks (the last delta) */
    int swap_attempts;
    int64_t swap_ms;      /* time the live tables were locked */
} es_rebuild_stats;

/* Rebuild and swap. ES_OK: the rebuilt table is live. ES_EINVAL: bad
 * options, or another rebuild of the same projection holds the lock.
 * ES_ETRANSIENT: stopped (opts->stop) or PostgreSQL went away; the live
 * table is untouched. ES_EFATAL: an undecodable event or a schema problem.
 * On every failure the shadow table is dropped when the connection still
 * works. */
es_result es_rebuild_run(es_store *st, const es_rebuild_opts *opts, es_rebuild_stats *stats,
                         es_error *err) ES_WUR;

#endif
