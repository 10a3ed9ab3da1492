/*
 * tests/integration/test_rebuild.c - `factord rebuild users|auth-factors`
 * on the real servers.
 *
 * live: process, relay and project run while a writer thread submits
 * commands for a few hundred users (imports, OTP added and removed, phone
 * changes and removals); both projections are rebuilt (users twice) as
 * child processes of the binary, swapping under the running processor and
 * projector. Commands decided after the swaps succeed and are reflected;
 * once everything settles, every row of factord.users, factord.auth_factors
 * and the projector's applied sequences equals a fold of the log done here,
 * through dom_user_apply and the auth-factor reducer (brief §4.9).
 *
 * interrupted: a rebuild killed inside its final transaction
 * (rebuild.before_swap) leaves the live table as it was (same table, same
 * checksum) and a rerun succeeds; one killed after the swap
 * (rebuild.after_swap) leaves the new table live and the rerun drops the
 * retired one; a second rebuild of the same projection refuses to run.
 *
 * busy: a transaction holding the live table makes the final step time out
 * and try again later (nothing swapped meanwhile); SIGTERM between pages
 * exits 1 with the live table as it was and no shadow left.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/components/projector.h"
#include "infra/components/rebuild.h"
#include "projections/auth_factors.h"
#include "projections/user_views.h"
#include "tests/integration/harness.h"

#define OWNER "org-1"
#define N_USERS 200

/* --- helpers ------------------------------------------------------------------ */

/* `factord rebuild <what>` as a child, with e's database and logs. */
static pid_t spawn_rebuild_page(const h_env *e, const char *what, const char *failpoint, const char *page)
{
    char fp[128];
    snprintf(fp, sizeof fp, "FACTORD_FAILPOINT=%s", failpoint ? failpoint : "");
    const char *args[] = {"rebuild", what, "--page-size", page, NULL};
    const char *env[] = {fp, NULL};
    return h_spawn_argv(e, args, failpoint ? env : NULL);
}

static pid_t spawn_rebuild(const h_env *e, const char *what, const char *failpoint)
{
    return spawn_rebuild_page(e, what, failpoint, "5000");
}

/* Small pages make a rebuild slow enough for the writer to add events in
 * every phase: load, catch-up passes, and the final delta under the locks. */
static void rebuild_ok_paged(const h_env *e, const char *what, const char *page)
{
    int rc = h_wait(spawn_rebuild_page(e, what, NULL, page), 180000);
    cr_assert_eq(rc, 0, "factord rebuild %s exited with %d (log: %s)", what, rc, e->log_path);
}

static void rebuild_ok(const h_env *e, const char *what)
{
    rebuild_ok_paged(e, what, "5000");
}

static PGconn *db(const h_env *e)
{
    PGconn *c = PQconnectdb(e->db_url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

/* First column of the first row as text (malloc'd), NULL when no row. */
static char *row_text(const h_env *e, const char *sql, int nparams, const char *const *params)
{
    PGconn *c = db(e);
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    char *v = PQntuples(r) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    PQfinish(c);
    return v;
}

/* The same, "" when no row. */
static char *sql_text(const h_env *e, const char *sql)
{
    char *v = row_text(e, sql, 0, NULL);
    return v ? v : strdup("");
}

/* --- the writer thread ---------------------------------------------------------- */

typedef struct {
    const h_env *e;
    atomic_bool stop;
    atomic_long sent;
    es_result rc;
    char error[sizeof(es_error){0}.text];
} writer;

static es_result send_one(es_producer *p, const h_env *e, const char *type, const char *user, json_t *payload,
                          es_error *err)
{
    char *c = h_command(e, type, user, OWNER, payload, NULL);
    es_result rc = es_producer_send(p, e->commands, user, strlen(user), c, strlen(c), NULL, err);
    free(c);
    return rc;
}

/* Imports N_USERS users, then random commands for them (and, now and then,
 * a new user) until stopped. Never asserts: Criterion's asserts belong to
 * the test thread. */
static void *writer_main(void *arg)
{
    writer *w = arg;
    es_producer *p = NULL;
    es_error err = {0};
    unsigned seed = (unsigned)getpid();
    int fresh = 0;
    size_t failed = 0;
    w->rc = es_producer_new(w->e->brokers, "factord-test-writer", &p, &err);
    for (int i = 0; w->rc == ES_OK && i < N_USERS; i++) {
        char user[32], phone[32];
        snprintf(user, sizeof user, "u%03d", i);
        snprintf(phone, sizeof phone, "+4179%07d", i);
        w->rc = send_one(p, w->e, "ImportHumanUser", user, h_import_payload(user, phone, i % 4 != 0), &err);
        atomic_fetch_add(&w->sent, 1);
    }
    while (w->rc == ES_OK && !atomic_load(&w->stop)) {
        for (int k = 0; k < 20 && w->rc == ES_OK; k++) {
            char user[32], phone[32];
            int r = rand_r(&seed) % 100;
            snprintf(user, sizeof user, "u%03d", rand_r(&seed) % N_USERS);
            if (r < 35) {
                w->rc = send_one(p, w->e, "AddMyAuthFactorOTPSMS", user, NULL, &err);
            } else if (r < 55) {
                w->rc = send_one(p, w->e, "RemoveMyAuthFactorOTPSMS", user, NULL, &err);
            } else if (r < 75) {
                snprintf(phone, sizeof phone, "+4178%07d", rand_r(&seed) % 10000000);
                w->rc = send_one(p, w->e, "SetMyPhone", user, json_pack("{s:s}", "phone", phone), &err);
            } else if (r < 85) {
                w->rc = send_one(p, w->e, "RemoveMyPhone", user, NULL, &err);
            } else {
                /* A new user with a verified phone, and its factor. */
                snprintf(user, sizeof user, "n%04d", fresh++);
                snprintf(phone, sizeof phone, "+4177%07d", fresh);
                w->rc = send_one(p, w->e, "ImportHumanUser", user, h_import_payload(user, phone, true), &err);
                if (w->rc == ES_OK) {
                    atomic_fetch_add(&w->sent, 1);
                    w->rc = send_one(p, w->e, "AddMyAuthFactorOTPSMS", user, NULL, &err);
                }
            }
            if (w->rc == ES_OK)
                atomic_fetch_add(&w->sent, 1);
        }
        if (w->rc == ES_OK)
            w->rc = es_producer_flush(p, 30000, &failed, &err);
        if (w->rc == ES_OK && failed)
            w->rc = es_error_set(&err, ES_EFATAL, "%zu records not delivered", failed);
        es_sleep_ms(20);
    }
    if (w->rc == ES_OK)
        w->rc = es_producer_flush(p, 30000, &failed, &err);
    snprintf(w->error, sizeof w->error, "%s", err.text);
    es_producer_free(p);
    return NULL;
}

/* --- folding the log here ----------------------------------------------------------- */

static void expect_user_eq(const dom_user *got, const dom_user *want)
{
    const char *id = want->user_id;
    cr_expect_str_eq(got->resource_owner, want->resource_owner, "%s: resource_owner", id);
    cr_expect_str_eq(got->user_name, want->user_name, "%s: user_name", id);
    cr_expect_eq(got->status, want->status, "%s: status", id);
    cr_expect_eq(got->sequence, want->sequence, "%s: sequence", id);
    cr_expect_str_eq(got->phone, want->phone, "%s: phone", id);
    cr_expect_eq(got->phone_verified, want->phone_verified, "%s: phone_verified", id);
    cr_expect_str_eq(got->verified_phone, want->verified_phone, "%s: verified_phone", id);
    cr_expect_eq(got->otp_sms, want->otp_sms, "%s: otp_sms", id);
    cr_expect_str_eq(got->code_enc, want->code_enc, "%s: code_enc", id);
    cr_expect_eq(got->code_expires_at_us, want->code_expires_at_us, "%s: code_expires_at", id);
    cr_expect_eq(got->created_at_us, want->created_at_us, "%s: created_at", id);
    cr_expect_eq(got->changed_at_us, want->changed_at_us, "%s: changed_at", id);
}

/* Every user of the log: factord.users, factord.auth_factors and the
 * applied sequence equal a fold of the user's events; no other rows. */
static void expect_projections_match_log(const h_env *e)
{
    es_store *st = h_store(e);
    PGconn *c = db(e);
    PGresult *users = PQexec(c, "SELECT DISTINCT instance_id, aggregate_id FROM factord.events"
                                " WHERE aggregate_type = 'user' ORDER BY 1, 2");
    cr_assert_eq(PQresultStatus(users), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    int n_users = PQntuples(users);
    cr_assert_gt(n_users, N_USERS - 1);
    long want_factors = 0, want_views = 0;
    for (int i = 0; i < n_users; i++) {
        const char *inst = PQgetvalue(users, i, 0), *uid = PQgetvalue(users, i, 1);
        dom_evt *evts = NULL;
        size_t n = 0;
        es_error err = {0};
        cr_assert_eq(es_store_user_events(st, inst, uid, &evts, &n, &err), ES_OK, "%s", err.text);
        cr_assert_gt(n, 0);

        /* The write-side projection. */
        dom_user want, got;
        memset(&want, 0, sizeof want);
        for (size_t k = 0; k < n; k++)
            dom_user_apply(&want, &evts[k]);
        memset(&got, 0, sizeof got);
        snprintf(got.instance_id, sizeof got.instance_id, "%s", inst);
        snprintf(got.user_id, sizeof got.user_id, "%s", uid);
        bool found = false;
        cr_assert_eq(es_store_begin(st, &err), ES_OK, "%s", err.text);
        cr_assert_eq(es_store_load_users(st, &got, &found, 1, &err), ES_OK, "%s", err.text);
        es_store_rollback(st);
        cr_expect(found, "%s has events but no factord.users row", uid);
        if (found)
            expect_user_eq(&got, &want);

        /* The auth-factor read model, row by row as the projector keeps it. */
        proj_auth_factor rows[PROJ_AF__TYPES];
        bool present[PROJ_AF__TYPES] = {false};
        for (size_t k = 0; k < n; k++) {
            proj_af_change ch[PROJ_AF_MAX_CHANGES];
            size_t nc = proj_auth_factors_reduce(&evts[k], ch);
            for (size_t j = 0; j < nc; j++) {
                proj_af_type t = ch[j].row.type;
                if (ch[j].op == PROJ_AF_DELETE) {
                    present[t] = false;
                } else {
                    int64_t created = present[t] ? rows[t].created_at_us : ch[j].row.created_at_us;
                    rows[t] = ch[j].row;
                    rows[t].created_at_us = created;
                    present[t] = true;
                }
            }
        }
        proj_auth_factor listed[4];
        size_t n_listed = 0;
        cr_assert_eq(es_auth_factors_list(st, inst, uid, listed, 4, &n_listed, &err), ES_OK, "%s", err.text);
        size_t n_want = 0;
        for (int t = 0; t < PROJ_AF__TYPES; t++) {
            if (!present[t])
                continue;
            n_want++;
            bool seen = false;
            for (size_t j = 0; j < n_listed; j++) {
                if (listed[j].type != (proj_af_type)t)
                    continue;
                seen = true;
                cr_expect_eq(listed[j].state, rows[t].state, "%s: state", uid);
                cr_expect_eq(listed[j].sequence, rows[t].sequence, "%s: factor sequence", uid);
                cr_expect_eq(listed[j].created_at_us, rows[t].created_at_us, "%s: factor created_at", uid);
                cr_expect_eq(listed[j].changed_at_us, rows[t].changed_at_us, "%s: factor changed_at", uid);
                cr_expect_str_eq(listed[j].resource_owner, rows[t].resource_owner, "%s: factor owner", uid);
            }
            cr_expect(seen, "%s: factor %d missing", uid, t);
        }
        cr_expect_eq(n_listed, n_want, "%s: %zu factors listed, the log makes %zu", uid, n_listed, n_want);
        want_factors += (long)n_want;

        /* The user read model: the fold of the user's events. */
        proj_user_view view;
        memset(&view, 0, sizeof view);
        bool exists = false;
        for (size_t k = 0; k < n; k++)
            proj_user_view_apply(&view, &exists, &evts[k]);
        const char *vp[] = {inst, uid};
        char want_row[2048];
        snprintf(want_row, sizeof want_row, "%s|%s|%s|%s|%s|%d|%lld|%lld|%lld", view.state, view.human.user_name,
                 view.human.first_name, view.human.email, view.human.phone, view.human.is_phone_verified ? 1 : 0,
                 (long long)view.sequence, (long long)view.created_at_us, (long long)view.changed_at_us);
        char *got_row = row_text(e,
                                 "SELECT concat_ws('|', state, user_name, first_name, email, phone,"
                                 "       phone_verified::int, sequence, (extract(epoch FROM created_at) * 1000000)::bigint,"
                                 "       (extract(epoch FROM changed_at) * 1000000)::bigint)"
                                 "  FROM factord.user_views WHERE instance_id = $1 AND user_id = $2",
                                 2, vp);
        if (exists) {
            cr_expect_not_null(got_row, "%s: no user view", uid);
            if (got_row)
                cr_expect_str_eq(got_row, want_row, "%s: user view", uid);
            want_views++;
        } else
            cr_expect_null(got_row, "%s: a user view of a removed user", uid);
        free(got_row);

        const char *p[] = {PROJ_AUTH_FACTORS, inst, uid};
        long applied = h_sql_long(e,
                                  "SELECT sequence FROM factord.projected_sequences"
                                  " WHERE projection = $1 AND instance_id = $2 AND user_id = $3",
                                  3, p);
        cr_expect_eq(applied, (long)evts[n - 1].sequence, "%s: applied sequence %ld, last event %lld", uid,
                     applied, (long long)evts[n - 1].sequence);
        free(evts);
    }
    PQclear(users);
    cr_expect_eq(h_sql_long(e, "SELECT count(*) FROM factord.users", 0, NULL), n_users, "users rows");
    cr_expect_eq(h_sql_long(e, "SELECT count(*) FROM factord.projected_sequences", 0, NULL), n_users,
                 "sequence rows");
    cr_expect_eq(h_sql_long(e, "SELECT count(*) FROM factord.auth_factors", 0, NULL), want_factors,
                 "auth_factors rows");
    cr_expect_eq(h_sql_long(e, "SELECT count(*) FROM factord.user_views", 0, NULL), want_views, "user_views rows");
    PQfinish(c);
    es_store_free(st);
}

static void expect_no_leftovers(const h_env *e)
{
    cr_expect_eq(h_sql_long(e,
                            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                            " WHERE n.nspname = 'factord' AND (c.relname LIKE '%\\_rebuild%'"
                            "    OR c.relname LIKE '%\\_retired%')",
                            0, NULL),
                 0, "a shadow or retired table (or index) is left");
}

/* Wait until cond (a count query) is 0. */
static void wait_zero(const h_env *e, const char *what, const char *sql, int timeout_ms)
{
    int64_t end = es_clock_mono_ms() + timeout_ms;
    long v;
    while ((v = h_sql_long(e, sql, 0, NULL)) != 0 && es_clock_mono_ms() < end)
        es_sleep_ms(200);
    cr_assert_eq(v, 0, "%s: still %ld after %d ms", what, v, timeout_ms);
}

/* --- tests ---------------------------------------------------------------------------- */

Test(rebuild, live_swap_under_load, .timeout = 600)
{
    h_env e;
    h_env_init(&e, "rebuild_live");
    pid_t proc = h_spawn(&e, "process", NULL);
    pid_t relay = h_spawn(&e, "relay", NULL);
    pid_t proj = h_spawn(&e, "project", NULL);

    writer w = {.e = &e};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, writer_main, &w), 0);

    /* Let the log and both projections fill before the first rebuild. */
    int64_t end = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, "SELECT count(*) FROM factord.auth_factors", 0, NULL) < 20 && es_clock_mono_ms() < end)
        es_sleep_ms(200);
    cr_assert_geq(h_sql_long(&e, "SELECT count(*) FROM factord.auth_factors", 0, NULL), 20,
                  "the pipeline did not get going");
    long before = h_sql_long(&e, "SELECT count(*) FROM factord.events", 0, NULL);

    rebuild_ok_paged(&e, "users", "20");
    /* A damaged user read model: the projector keeps the damage (it
     * writes back what it loads), the rebuild folds the log afresh. */
    const char *damage = "WITH d AS (UPDATE factord.user_views SET first_name = 'damaged' RETURNING 1)"
                         " SELECT count(*) FROM d";
    cr_assert_gt(h_sql_long(&e, damage, 0, NULL), 0);
    rebuild_ok_paged(&e, "auth-factors", "20");
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM factord.user_views WHERE first_name = 'damaged'", 0, NULL), 0,
                 "rebuild auth-factors rebuilt the user read model");
    rebuild_ok(&e, "users");
    rebuild_ok(&e, "auth-factors");
    long after = h_sql_long(&e, "SELECT count(*) FROM factord.events", 0, NULL);
    cr_expect_gt(after, before, "no event was appended while the rebuilds ran");

    /* Decided after the swaps, on the new tables: import and factor. */
    char imp[37], add[37];
    char *c1 = h_command(&e, "ImportHumanUser", "after-swap", OWNER,
                         h_import_payload("after-swap", "+41791230000", true), imp);
    char *c2 = h_command(&e, "AddMyAuthFactorOTPSMS", "after-swap", OWNER, NULL, add);
    h_produce(&e, e.commands, "after-swap", c1, strlen(c1));
    h_produce(&e, e.commands, "after-swap", c2, strlen(c2));
    free(c1);
    free(c2);
    const char *pa[] = {add};
    end = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, "SELECT count(*) FROM factord.commands WHERE id = $1::uuid", 1, pa) != 1 &&
           es_clock_mono_ms() < end)
        es_sleep_ms(100);
    cr_assert_eq(h_sql_long(&e, "SELECT http_status FROM factord.commands WHERE id = $1::uuid", 1, pa), 200,
                 "AddMyAuthFactorOTPSMS after the swap was not accepted");
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM factord.users WHERE user_id = 'after-swap' AND otp_sms",
                            0, NULL),
                 1);
    wait_zero(&e, "the projector did not list the factor added after the swap",
              "SELECT 1 - count(*) FROM factord.auth_factors WHERE user_id = 'after-swap'", 60000);

    /* Stop the writer; let the processor and the projector finish. */
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    cr_assert_eq(w.rc, ES_OK, "writer: %s", w.error);
    char want[32];
    snprintf(want, sizeof want, "%ld", atomic_load(&w.sent) + 2);
    const char *pw[] = {want};
    end = es_clock_mono_ms() + 120000;
    while (h_sql_long(&e, "SELECT count(*) - $1::bigint FROM factord.commands", 1, pw) < 0 &&
           es_clock_mono_ms() < end)
        es_sleep_ms(200);
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) - $1::bigint FROM factord.commands", 1, pw), 0,
                 "not every command was decided");
    wait_zero(&e, "the projector did not catch up",
              "SELECT count(*) FROM (SELECT instance_id, aggregate_id, max(sequence) AS s"
              "   FROM factord.events GROUP BY 1, 2) m"
              "  LEFT JOIN factord.projected_sequences p ON p.projection = 'auth_factors'"
              "   AND p.instance_id = m.instance_id AND p.user_id = m.aggregate_id"
              " WHERE p.sequence IS DISTINCT FROM m.s",
              120000);

    expect_projections_match_log(&e);
    expect_no_leftovers(&e);
    cr_expect_eq(h_stop(proc, false), 0);
    cr_expect_eq(h_stop(relay, false), 0);
    cr_expect_eq(h_stop(proj, false), 0);
    h_env_done(&e);
}

/* 300 users with 4-5 events each, straight into the log (no components). */
static void fill_log(const h_env *e)
{
    es_store *st = h_store(e);
    es_error err = {0};
    for (int b = 0; b < 3; b++) {
        static dom_evt evts[100 * 5];
        static dom_user users[100];
        size_t n = 0;
        for (int i = 0; i < 100; i++) {
            char user[16];
            snprintf(user, sizeof user, "u%03d", b * 100 + i);
            static const dom_evt_type types[] = {DOM_EVT_HUMAN_ADDED, DOM_EVT_PHONE_CHANGED,
                                                 DOM_EVT_PHONE_VERIFIED, DOM_EVT_OTP_SMS_ADDED,
                                                 DOM_EVT_OTP_SMS_REMOVED};
            size_t first = n;
            memset(&users[i], 0, sizeof users[i]);
            for (int k = 0; k < (i % 2 ? 5 : 4); k++) {
                dom_evt *ev = &evts[n++];
                memset(ev, 0, sizeof *ev);
                ev->type = types[k];
                snprintf(ev->instance_id, sizeof ev->instance_id, "%s", e->instance);
                snprintf(ev->aggregate_id, sizeof ev->aggregate_id, "%s", user);
                snprintf(ev->resource_owner, sizeof ev->resource_owner, OWNER);
                snprintf(ev->creator, sizeof ev->creator, "%s", user);
                ev->sequence = k + 1;
                ev->created_at_us = es_clock_now_us();
                ev->revision = DOM_EVT_REVISION;
                if (types[k] == DOM_EVT_HUMAN_ADDED)
                    snprintf(ev->human.user_name, sizeof ev->human.user_name, "%s", user);
                if (types[k] == DOM_EVT_PHONE_CHANGED)
                    snprintf(ev->phone, sizeof ev->phone, "+4179%07d", b * 100 + i);
            }
            for (size_t k = first; k < n; k++)
                dom_user_apply(&users[i], &evts[k]);
        }
        es_write wr = {.events = evts, .n_events = n, .users = users, .n_users = 100};
        cr_assert_eq(es_store_begin(st, &err), ES_OK, "%s", err.text);
        cr_assert_eq(es_store_write(st, &wr, &err), ES_OK, "%s", err.text);
        cr_assert_eq(es_store_commit(st, &err), ES_OK, "%s", err.text);
    }
    es_store_free(st);
}

#define USERS_SUM                                                                                              \
    "SELECT md5(string_agg(u::text, ',' ORDER BY instance_id, user_id)) FROM factord.users u"
#define FACTORS_SUM                                                                                            \
    "SELECT coalesce(md5(string_agg(f::text, ',' ORDER BY instance_id, user_id, type)), '')"                   \
    "  FROM factord.auth_factors f"
#define OID_OF(t) "SELECT '" t "'::regclass::oid::text"

Test(rebuild, interrupted_leaves_live_untouched, .timeout = 300)
{
    h_env e;
    h_env_init(&e, "rebuild_interrupted");
    fill_log(&e);

    /* users: a second rebuild of the same projection refuses to run (the
     * first one's lock, taken here), and leaves the first one's shadow. */
    char *sum = sql_text(&e, USERS_SUM), *oid = sql_text(&e, OID_OF("factord.users"));
    PGconn *holder = db(&e);
    PGresult *r = PQexec(holder, "SELECT pg_advisory_lock(1718772324, hashtext('users'));"
                                 " CREATE TABLE factord.users_rebuild (x int)");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(holder));
    PQclear(r);
    int rc = h_wait(spawn_rebuild(&e, "users", NULL), 60000);
    cr_expect_eq(rc, 1, "a concurrent rebuild should fail with 1, not %d", rc);
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM pg_class WHERE relname = 'users_rebuild'", 0, NULL), 1,
                 "the concurrent rebuild dropped the running one's shadow");
    PQfinish(holder); /* releases the lock; the next run drops the stale shadow */

    /* users: killed inside the final transaction, before the swap. */
    rc = h_wait(spawn_rebuild(&e, "users", "rebuild.before_swap"), 120000);
    cr_assert_eq(rc, -SIGKILL, "the failpoint should have killed the rebuild (exit %d)", rc);
    char *sum2 = sql_text(&e, USERS_SUM), *oid2 = sql_text(&e, OID_OF("factord.users"));
    cr_expect_str_eq(sum2, sum, "the live users table changed");
    cr_expect_str_eq(oid2, oid, "another table is live");
    free(sum2);
    free(oid2);
    /* The rerun starts over (the stale shadow is dropped) and swaps. */
    rebuild_ok(&e, "users");
    sum2 = sql_text(&e, USERS_SUM);
    oid2 = sql_text(&e, OID_OF("factord.users"));
    cr_expect_str_eq(sum2, sum, "the rebuilt users differ from the live ones");
    cr_expect_str_neq(oid2, oid, "the rerun did not swap");
    expect_no_leftovers(&e);
    free(sum);
    free(oid);
    free(sum2);
    free(oid2);

    /* auth-factors: the live model is empty (no projector ran). */
    sum = sql_text(&e, FACTORS_SUM);
    oid = sql_text(&e, OID_OF("factord.auth_factors"));
    rc = h_wait(spawn_rebuild(&e, "auth-factors", "rebuild.before_swap"), 120000);
    cr_assert_eq(rc, -SIGKILL, "exit %d", rc);
    sum2 = sql_text(&e, FACTORS_SUM);
    oid2 = sql_text(&e, OID_OF("factord.auth_factors"));
    cr_expect_str_eq(sum2, sum, "the live auth_factors table changed");
    cr_expect_str_eq(oid2, oid, "another table is live");
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM factord.projected_sequences", 0, NULL), 0);
    free(sum2);
    free(oid2);

    /* Killed after the commit, before the retired table is dropped: the
     * new tables are live; the rerun drops what was left. */
    rc = h_wait(spawn_rebuild(&e, "auth-factors", "rebuild.after_swap"), 120000);
    cr_assert_eq(rc, -SIGKILL, "exit %d", rc);
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM factord.auth_factors", 0, NULL), 150);
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM pg_class WHERE relname = 'auth_factors_retired'", 0, NULL),
                 1);
    rebuild_ok(&e, "auth-factors");
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM factord.auth_factors", 0, NULL), 150);
    cr_expect_eq(h_sql_long(&e, "SELECT count(*) FROM factord.projected_sequences", 0, NULL), 300);
    expect_no_leftovers(&e);
    expect_projections_match_log(&e);
    free(sum);
    free(oid);
    h_env_done(&e);
}

/* --max-rate: every progress report before the final step finds the events
 * folded so far due at the rate (events * 1000 / rate <= elapsed ms), which
 * an unpaced rebuild of this log breaks at its first page. */
typedef struct {
    int64_t rate;
    int reports, early;
    int64_t worst_events, worst_ms;
} pace_check;

static void pace_progress(void *arg, const es_rebuild_progress *p)
{
    pace_check *pc = arg;
    if (p->phase == ES_REBUILD_SWAP || p->events == 0)
        return;
    pc->reports++;
    if (p->events * 1000 / pc->rate > p->elapsed_ms) {
        pc->early++;
        pc->worst_events = p->events;
        pc->worst_ms = p->elapsed_ms;
    }
}

Test(rebuild, max_rate_paces_the_pages, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "rebuild_rate");
    fill_log(&e);
    char *sum = sql_text(&e, USERS_SUM);
    es_store *st = h_store(&e);
    volatile sig_atomic_t stop = 0;
    pace_check pc = {.rate = 2000};
    es_rebuild_opts o = {.target = ES_REBUILD_USERS, .page_size = 100, .max_rate = pc.rate,
                         .progress = pace_progress, .progress_arg = &pc, .stop = &stop};
    es_rebuild_stats stats;
    es_error err = {0};
    cr_assert_eq(es_rebuild_run(st, &o, &stats, &err), ES_OK, "%s", err.text);
    cr_expect_eq(stats.events, 1350, "the whole log folded, got %lld", (long long)stats.events);
    cr_expect_geq(pc.reports, 10, "a report per page");
    cr_expect_eq(pc.early, 0, "%d reports ahead of the rate, e.g. %lld events after %lld ms", pc.early,
                 (long long)pc.worst_events, (long long)pc.worst_ms);
    char *sum2 = sql_text(&e, USERS_SUM);
    cr_expect_str_eq(sum2, sum, "the paced rebuild's users differ from the live ones");
    free(sum);
    free(sum2);
    es_store_free(st);
    h_env_done(&e);
}

/* True when the test's log has a line containing text. */
static bool log_has(const h_env *e, const char *text)
{
    FILE *f = fopen(e->log_path, "r");
    char line[4096];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    if (f)
        fclose(f);
    return found;
}

Test(rebuild, busy_live_table_and_sigterm, .timeout = 300)
{
    h_env e;
    h_env_init(&e, "rebuild_busy");
    fill_log(&e);
    char *sum = sql_text(&e, USERS_SUM), *oid = sql_text(&e, OID_OF("factord.users"));

    /* A transaction holding the live table past the lock timeout (2 s):
     * the final step gives up without changing anything, catches up and
     * tries again once the table is free. */
    PGconn *holder = db(&e);
    PGresult *r = PQexec(holder, "BEGIN; LOCK TABLE factord.users IN ROW SHARE MODE");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(holder));
    PQclear(r);
    pid_t pid = spawn_rebuild(&e, "users", NULL);
    int64_t end = es_clock_mono_ms() + 30000;
    while (!log_has(&e, "the live tables stayed busy") && es_clock_mono_ms() < end)
        es_sleep_ms(100);
    cr_expect(log_has(&e, "the live tables stayed busy"), "the final step did not time out on the lock");
    char *mid = sql_text(&e, OID_OF("factord.users"));
    cr_expect_str_eq(mid, oid, "swapped while the table was locked");
    free(mid);
    PQclear(PQexec(holder, "COMMIT"));
    PQfinish(holder);
    int rc = h_wait(pid, 60000);
    cr_assert_eq(rc, 0, "exit %d", rc);
    char *sum2 = sql_text(&e, USERS_SUM), *oid2 = sql_text(&e, OID_OF("factord.users"));
    cr_expect_str_eq(sum2, sum, "the rebuilt users differ");
    cr_expect_str_neq(oid2, oid, "no swap after the table was free");
    free(sum2);
    free(oid);

    /* SIGTERM between pages (one event a page: slow enough to catch it
     * running): exit 1, the live table as it was, the shadow dropped. */
    oid = oid2;
    pid = spawn_rebuild_page(&e, "users", NULL, "1");
    es_sleep_ms(300);
    rc = h_stop(pid, false);
    cr_expect_eq(rc, 1, "an interrupted rebuild exits 1, not %d", rc);
    sum2 = sql_text(&e, USERS_SUM);
    oid2 = sql_text(&e, OID_OF("factord.users"));
    cr_expect_str_eq(sum2, sum, "the live users table changed");
    cr_expect_str_eq(oid2, oid, "another table is live");
    expect_no_leftovers(&e);
    free(sum);
    free(oid);
    free(sum2);
    free(oid2);
    h_env_done(&e);
}
