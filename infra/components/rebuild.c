/*
 * infra/components/rebuild.c - rebuild a projection from the log into a shadow table
 * and swap it in (rebuild.h).
 *
 * A page is one keyset query (position > reached ORDER BY position LIMIT
 * page), folded in memory and written to the shadow with one statement per
 * table, so a page costs a few round trips whatever its size (the SQL is
 * infra/pg/rebuild_sql.c). The user projection needs each touched user's
 * state before the page: it is read back from the shadow in one query per
 * page, so memory stays bounded by the page, not by the number of users.
 * The auth-factor model needs no read: its row changes (delete, put keeping
 * created_at, sequence only forward) are written exactly as the projector
 * writes them.
 *
 * Committed positions form a prefix of the counter (it is held to COMMIT
 * and a rollback gives its positions back), so "position > reached" never
 * misses an event that commits later. Once the final step holds the
 * counter row, nothing commits until it is done: the last delta is exact.
 *
 * The shadow is disposable until the swap: its writes run with
 * synchronous_commit off; the swapping transaction turns it back on.
 */
#include "infra/base/util.h"
#include "infra/components/rebuild.h"

#include <stdlib.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/base/log.h"
#include "infra/components/projector.h"
#include "infra/pg/rebuild_sql.h"
#include "projections/auth_factors.h"

es_rebuild_target es_rebuild_target_parse(const char *name)
{
    if (name && strcmp(name, "users") == 0)
        return ES_REBUILD_USERS;
    if (name && strcmp(name, "auth-factors") == 0)
        return ES_REBUILD_AUTH_FACTORS;
    return 0;
}

const char *es_rebuild_target_name(es_rebuild_target t)
{
    return t == ES_REBUILD_USERS ? "users" : t == ES_REBUILD_AUTH_FACTORS ? "auth-factors" : "";
}

/* --- context ------------------------------------------------------------------ */

typedef struct {
    es_store *st;
    es_rebuild_opts o;
    es_rbsql_tables tables;
    es_rebuild_stats *stats;
    es_rebuild_phase phase;
    int64_t reached;       /* last position folded */
    int64_t head;
    int64_t started_ms;
    dom_evt *evts;         /* one page */
    size_t *order;         /* page indices sorted by (instance, user, position) */
    dom_user *users;       /* users of the page (users target) */
    proj_af_change *changes;
    proj_af_net *nets;
    es_rbsql_seq *seqs;    /* the page's users' last sequences (auth-factors target) */
    es_rbsql_factor *rows; /* the page's net row changes (auth-factors target) */
    es_view_user *vusers;  /* the page's users for the user read model (auth-factors target) */
    es_projsql *vq;        /* its statements, on the shadow */
    es_view_writer *vw;
} rb_ctx;

static void *rb_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static void rb_report(rb_ctx *c)
{
    if (!c->o.progress)
        return;
    es_rebuild_progress p = {.phase = c->phase,
                             .position = c->reached,
                             .head = c->head > c->reached ? c->head : c->reached,
                             .events = c->stats->events,
                             .elapsed_ms = es_clock_mono_ms() - c->started_ms};
    c->o.progress(c->o.progress_arg, &p);
}

/* --- folding a page ------------------------------------------------------------------ */

/* qsort has no context argument; one rebuild runs per thread. */
static _Thread_local const dom_evt *rb_sort_evts;

static int rb_order_cmp(const void *a, const void *b)
{
    const dom_evt *x = &rb_sort_evts[*(const size_t *)a], *y = &rb_sort_evts[*(const size_t *)b];
    int d = strcmp(x->instance_id, y->instance_id);
    if (!d)
        d = strcmp(x->aggregate_id, y->aggregate_id);
    return d ? d : (x->position > y->position) - (x->position < y->position);
}

static bool rb_same_user(const dom_evt *a, const dom_evt *b)
{
    return strcmp(a->instance_id, b->instance_id) == 0 && strcmp(a->aggregate_id, b->aggregate_id) == 0;
}

static void rb_sort_page(rb_ctx *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c->order[i] = i;
    rb_sort_evts = c->evts;
    qsort(c->order, n, sizeof *c->order, rb_order_cmp);
}

/* The users of the page: their shadow rows, each user's events folded
 * through dom_user_apply, the results upserted. */
static es_result rb_fold_users(rb_ctx *c, size_t n, es_error *err)
{
    size_t n_users = 0;
    rb_sort_page(c, n);
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        if (k && rb_same_user(e, &c->evts[c->order[k - 1]]))
            continue;
        dom_user *u = &c->users[n_users++];
        memset(u, 0, sizeof *u);
        memcpy(u->instance_id, e->instance_id, sizeof u->instance_id);
        memcpy(u->user_id, e->aggregate_id, sizeof u->user_id);
    }
    /* c->users is in strcmp order of (instance, user), as the page was sorted. */
    es_result rc = es_rbsql_load_users(c->st, c->users, n_users, err);
    if (rc != ES_OK)
        return rc;

    size_t u = 0;
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        if (k && !rb_same_user(e, &c->evts[c->order[k - 1]]))
            u++;
        dom_user_apply(&c->users[u], e);
    }
    return es_rbsql_put_users(c->st, c->users, n_users, err);
}

/* The page through the auth-factor reducer, user by user, in sequence
 * order; the net row changes and each user's last sequence written. */
static es_result rb_fold_auth_factors(rb_ctx *c, size_t n, es_error *err)
{
    size_t n_changes = 0, n_seqs = 0;
    rb_sort_page(c, n);
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        n_changes += proj_auth_factors_reduce(e, &c->changes[n_changes]);
        if (k + 1 < n && rb_same_user(e, &c->evts[c->order[k + 1]]))
            continue;
        c->seqs[n_seqs++] = (es_rbsql_seq){.instance_id = e->instance_id, .user_id = e->aggregate_id,
                                           .sequence = e->sequence};
    }
    size_t n_nets = proj_af_fold(c->changes, n_changes, c->nets);
    for (size_t i = 0; i < n_nets; i++) {
        const proj_af_net *net = &c->nets[i];
        c->rows[i] = (es_rbsql_factor){.del = net->del, .put = net->put, .row = es_projector_factor_row(&net->row)};
    }
    es_result rc = es_rbsql_put_factors(c->st, PROJ_AUTH_FACTORS, c->seqs, n_seqs, c->rows, n_nets, err);
    if (rc != ES_OK)
        return rc;
    /* The user read model shares the applied sequences: the same users,
     * each with all its events of the page (pages do not overlap). */
    size_t n_users = 0;
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        if (k && rb_same_user(e, &c->evts[c->order[k - 1]])) {
            c->vusers[n_users - 1].k1 = k + 1;
            continue;
        }
        c->vusers[n_users++] =
            (es_view_user){.instance_id = e->instance_id, .user_id = e->aggregate_id, .k0 = k, .k1 = k + 1};
    }
    return es_view_writer_write(c->vw, c->vq, c->st, c->evts, c->order, c->vusers, n_users, err);
}

/* With a maximum rate, wait until the events folded so far are due (never
 * under the final step's locks, which must be short). False: stopped. */
static bool rb_pace(rb_ctx *c)
{
    if (c->o.max_rate <= 0)
        return true;
    int64_t due_ms = c->stats->events * 1000 / c->o.max_rate;
    int64_t ahead = due_ms - (es_clock_mono_ms() - c->started_ms);
    return ahead <= 0 || es_sleep_unless_stopped(ahead, c->o.stop);
}

/* Fold pages until the visible end of the log; *folded = events. Between
 * pages a stop request ends the pass (not in the locked final step). */
static es_result rb_pass(rb_ctx *c, bool locked, int64_t *folded, es_error *err)
{
    *folded = 0;
    for (;;) {
        if (!locked && c->o.stop && *c->o.stop)
            return es_error_set(err, ES_ETRANSIENT, "rebuild interrupted; the live table is untouched");
        size_t rows = 0, n = 0;
        int64_t last = 0;
        /* The users' events of the next page into c->evts, n of them. */
        es_result rc = es_rbsql_read_page(c->st, c->reached, c->o.page_size, c->evts, &rows, &last, &n, err);
        if (rc != ES_OK)
            return rc;
        if (rows == 0)
            return ES_OK;
        if (n)
            rc = c->o.target == ES_REBUILD_USERS ? rb_fold_users(c, n, err) : rb_fold_auth_factors(c, n, err);
        if (rc != ES_OK)
            return rc;
        c->reached = last;
        c->stats->events += (int64_t)n;
        *folded += (int64_t)n;
        if (!locked && !rb_pace(c))
            return es_error_set(err, ES_ETRANSIENT, "rebuild interrupted; the live table is untouched");
        es_error herr = {0};
        if (es_store_head(c->st, &c->head, &herr) != ES_OK)
            c->head = c->reached;
        rb_report(c);
        if (rows < (size_t)c->o.page_size)
            return ES_OK;
    }
}

/* --- the swap ------------------------------------------------------------------------ */

/* The locked final step: one transaction. ES_ECONFLICT: a lock was not
 * granted within the lock timeout (nothing changed; catch up and retry). */
static es_result rb_final(rb_ctx *c, es_error *err)
{
    int64_t locked_at = 0;
    err->sqlstate[0] = '\0';
    es_result rc = es_store_begin(c->st, err);
    if (rc != ES_OK)
        return rc;
    /* From here no event commits until we do. */
    rc = es_rbsql_lock_live(c->st, c->tables, c->o.lock_timeout_ms, err);
    if (rc != ES_OK)
        goto fail;
    locked_at = es_clock_mono_ms();
    c->phase = ES_REBUILD_SWAP;
    int64_t folded = 0;
    rc = rb_pass(c, true, &folded, err);
    if (rc != ES_OK)
        goto fail;
    c->stats->final_events = folded;
    if (c->o.target == ES_REBUILD_AUTH_FACTORS) {
        /* The sequences table is shared by projections: the others' rows
         * move over unchanged. */
        rc = es_rbsql_keep_other_sequences(c->st, PROJ_AUTH_FACTORS, err);
        if (rc != ES_OK)
            goto fail;
    }
    es_failpoint("rebuild.before_swap");
    rc = es_rbsql_swap(c->st, c->tables, err);
    if (rc != ES_OK)
        goto fail;
    rc = es_store_commit(c->st, err);
    if (rc != ES_OK)
        goto fail;
    c->stats->swap_ms = es_clock_mono_ms() - locked_at;
    return ES_OK;
fail:
    es_store_rollback(c->st);
    if (strcmp(err->sqlstate, "55P03") == 0) /* lock_not_available */
        return ES_ECONFLICT;
    return rc;
}

static es_result rb_lock(rb_ctx *c, es_error *err)
{
    const char *name = es_rebuild_target_name(c->o.target);
    bool got = false;
    es_result rc = es_rbsql_lock(c->st, name, &got, err);
    if (rc == ES_OK && !got)
        rc = es_error_set(err, ES_EINVAL, "another rebuild of %s is running on this database", name);
    return rc;
}

es_result es_rebuild_run(es_store *st, const es_rebuild_opts *opts, es_rebuild_stats *stats, es_error *err)
{
    es_result rc = ES_OK;
    bool locked = false;
    es_error local = {0};
    if (!err)
        err = &local; /* rb_final reads the SQLSTATE */
    rb_ctx c = {.st = st, .o = *opts, .stats = stats};
    memset(stats, 0, sizeof *stats);
    c.started_ms = es_clock_mono_ms();

    if (c.o.target == ES_REBUILD_USERS) {
        c.tables = ES_RBSQL_USERS;
    } else if (c.o.target == ES_REBUILD_AUTH_FACTORS) {
        c.tables = ES_RBSQL_AUTH_FACTORS;
    } else {
        return es_error_set(err, ES_EINVAL, "rebuild: unknown projection");
    }
    if (c.o.page_size <= 0)
        c.o.page_size = 10000;
    if (c.o.final_delta_max <= 0)
        c.o.final_delta_max = 2000;
    if (c.o.lock_timeout_ms <= 0)
        c.o.lock_timeout_ms = 2000;
    if (c.o.max_swap_attempts <= 0)
        c.o.max_swap_attempts = 10;
    size_t page = (size_t)c.o.page_size;
    c.evts = rb_xcalloc(page, sizeof *c.evts);
    c.order = rb_xcalloc(page, sizeof *c.order);
    if (c.o.target == ES_REBUILD_USERS) {
        c.users = rb_xcalloc(page, sizeof *c.users);
    } else {
        c.changes = rb_xcalloc(page * PROJ_AF_MAX_CHANGES, sizeof *c.changes);
        c.nets = rb_xcalloc(page * PROJ_AF_MAX_CHANGES, sizeof *c.nets);
        c.seqs = rb_xcalloc(page, sizeof *c.seqs);
        c.rows = rb_xcalloc(page * PROJ_AF_MAX_CHANGES, sizeof *c.rows);
        c.vusers = rb_xcalloc(page, sizeof *c.vusers);
        c.vq = es_projsql_new(PROJ_AUTH_FACTORS);
        es_projsql_use_views_table(c.vq, "user_views_rebuild");
        c.vw = es_view_writer_new();
    }

    rc = rb_lock(&c, err);
    if (rc != ES_OK)
        goto out;
    locked = true;
    /* 1-2. A fresh shadow. The shadow is disposable until the swap. */
    rc = es_rbsql_create_shadows(st, c.tables, err);
    if (rc == ES_OK)
        rc = es_rbsql_sync_commit_off(st, err);
    if (rc == ES_OK)
        rc = es_store_head(st, &c.head, err);
    if (rc != ES_OK)
        goto out;
    es_info("rebuild started", "projection", es_rebuild_target_name(c.o.target), "head", es_log_i64(c.head));

    /* 3. The log up to its visible end. */
    c.phase = ES_REBUILD_LOAD;
    rb_report(&c);
    int64_t folded = 0;
    rc = rb_pass(&c, false, &folded, err);
    if (rc != ES_OK)
        goto out;
    rc = es_rbsql_analyze_shadows(st, c.tables, err);
    if (rc != ES_OK)
        goto out;

    /* 4-5. Catch up until the delta is small, then the locked step; a lock
     * not granted in time means catching up again. */
    for (;;) {
        c.phase = ES_REBUILD_CATCH_UP;
        do {
            rc = rb_pass(&c, false, &folded, err);
            stats->passes++;
        } while (rc == ES_OK && folded > c.o.final_delta_max && stats->passes < 100);
        if (rc != ES_OK)
            goto out;
        stats->swap_attempts++;
        rc = rb_final(&c, err);
        if (rc != ES_ECONFLICT)
            break;
        es_warn("rebuild: the live tables stayed busy; catching up and trying again", "attempt",
                es_log_i64(stats->swap_attempts), "error", err ? err->text : "");
        if (stats->swap_attempts >= c.o.max_swap_attempts) {
            rc = es_error_set(err, ES_ETRANSIENT, "rebuild: could not lock the live tables in %d attempts",
                              stats->swap_attempts);
            goto out;
        }
        if (c.o.stop && *c.o.stop) {
            rc = es_error_set(err, ES_ETRANSIENT, "rebuild interrupted; the live table is untouched");
            goto out;
        }
    }
    if (rc != ES_OK)
        goto out;
    es_failpoint("rebuild.after_swap");
    stats->position = c.reached;
    c.phase = ES_REBUILD_DONE;
    rb_report(&c);

    /* The retired table: waits only for transactions that still hold it. */
    es_error derr = {0};
    if (es_rbsql_drop_retired(st, c.tables, &derr) != ES_OK)
        es_warn("rebuild: cannot drop the retired table; the next rebuild drops it", "error", derr.text);
    if (es_rbsql_count(st, c.tables, &stats->rows, &derr) != ES_OK)
        stats->rows = 0;
out:
    /* Without the lock the shadow is another rebuild's: leave it alone. */
    if (rc != ES_OK && locked && es_rbsql_connected(st)) {
        es_store_rollback(st);
        es_error derr2 = {0};
        if (es_rbsql_drop_shadows(st, c.tables, &derr2) != ES_OK)
            es_warn("rebuild: cannot drop the shadow; the next rebuild drops it", "error", derr2.text);
    }
    if (es_rbsql_connected(st)) {
        es_error uerr = {0};
        if (locked && es_rbsql_unlock(st, es_rebuild_target_name(c.o.target), &uerr) != ES_OK)
            es_debug("rebuild: advisory unlock failed", "error", uerr.text);
        es_store_rollback(st);
        es_rbsql_sync_commit_reset(st);
    }
    free(c.evts);
    free(c.order);
    free(c.users);
    free(c.changes);
    free(c.nets);
    free(c.seqs);
    free(c.vusers);
    es_projsql_free(c.vq);
    es_view_writer_free(c.vw);
    free(c.rows);
    return rc;
}
