/*
 * tests/integration/test_store.c - infra/pg/store.c against a real PostgreSQL.
 *
 * Each test makes its own instance id, so the database may hold anything
 * else and other suites may run at the same time; global facts (positions)
 * are checked only on the rows this test wrote. The invariant tests (brief
 * §4.1, §4.2, §4.8) are built so that a store that broke them would fail:
 * the tail reader runs beside eight writers that linger between taking
 * their positions and committing, which is exactly when a sequence-based
 * position would become visible out of order.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infra/pg/migrations.h"
#include "infra/pg/piikeys.h"
#include "infra/base/log.h"
#include "infra/pg/pgarr.h"
#include "infra/components/projector.h"
#include "tests/integration/itest.h"

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void assert_ok(es_result rc, const es_error *err, const char *what)
{
    cr_assert_eq(rc, ES_OK, "%s: %s: %s [%s]", what, es_result_name(rc), err->text, err->sqlstate);
}

/* --- migrations ------------------------------------------------------------ */

Test(store, embedded_migrations_are_sorted)
{
    cr_assert_gt(es_migrations_count, 0);
    for (size_t i = 0; i < es_migrations_count; i++) {
        cr_assert_gt(es_migrations[i].version, 0);
        cr_assert(es_migrations[i].sql && *es_migrations[i].sql);
        if (i)
            cr_assert_gt(es_migrations[i].version, es_migrations[i - 1].version);
    }
    cr_assert_eq(es_migrations[0].version, 1);
    cr_assert_str_eq(es_migrations[0].name, "create_event_store");
}

Test(store, migrate_twice_is_idempotent)
{
    es_store *st = itest_open(); /* migrated once already */
    es_error err = {0};
    int applied = -1, version = -1;
    assert_ok(es_store_migrate(st, &applied, &err), &err, "migrate");
    cr_assert_eq(applied, 0, "a second migrate applied %d migrations", applied);
    assert_ok(es_store_schema_version(st, &version, &err), &err, "schema version");
    cr_assert_eq(version, es_migrations[es_migrations_count - 1].version);
    es_store_free(st);
}

typedef struct {
    const char *conninfo;
    atomic_int *go;
    es_result rc;
    int applied;
    es_error err;
} migrator_arg;

static void *migrator_main(void *p)
{
    migrator_arg *a = p;
    es_store *st = NULL;
    a->rc = es_store_open(a->conninfo, &st, &a->err);
    if (a->rc != ES_OK)
        return NULL;
    while (!atomic_load(a->go))
        ;
    a->rc = es_store_migrate(st, &a->applied, &a->err);
    es_store_free(st);
    return NULL;
}

/* On a fresh database: four migrators at once, each migration applied once. */
Test(store, concurrent_migrators_do_not_clash, .timeout = 120)
{
    char db[64], conninfo[1024];
    itest_create_database(db, sizeof db, conninfo, sizeof conninfo);

    enum { N = 4 };
    atomic_int go = 0;
    pthread_t th[N];
    migrator_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (migrator_arg){.conninfo = conninfo, .go = &go};
        pthread_create(&th[i], NULL, migrator_main, &args[i]);
    }
    atomic_store(&go, 1);
    int total = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        total += args[i].applied;
    }
    es_store *st = itest_open_url(conninfo);
    es_error err = {0};
    int version = 0;
    es_result vrc = es_store_schema_version(st, &version, &err);
    PGresult *res = itest_sql(st, "SELECT count(*) FROM factord.schema_migrations", 0, NULL);
    int rows = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    es_store_free(st);
    itest_drop_database(db);

    for (int i = 0; i < N; i++)
        cr_assert_eq(args[i].rc, ES_OK, "migrator %d: %s", i, args[i].err.text);
    cr_assert_eq(total, (int)es_migrations_count, "applied %d in all, want %zu", total,
                 es_migrations_count);
    cr_assert_eq(vrc, ES_OK);
    cr_assert_eq(version, es_migrations[es_migrations_count - 1].version);
    cr_assert_eq(rows, (int)es_migrations_count);
}

/* --- round trips ----------------------------------------------------------- */

Test(store, events_and_users_round_trip)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);

    dom_evt ev[4];
    itest_event(&ev[0], inst, "u1", 1, DOM_EVT_HUMAN_ADDED);
    ev[0].last_of_command = false;
    ev[0].command_id[0] = '\0'; /* imported: no command */
    itest_event(&ev[1], inst, "u1", 2, DOM_EVT_PHONE_CHANGED);
    itest_event(&ev[2], inst, "u1", 3, DOM_EVT_PHONE_CODE_ADDED);
    ev[2].created_at_us = INT64_C(1711533948581123); /* 2024-03-27T10:05:48.581123Z */
    itest_event(&ev[3], inst, "u2", 1, DOM_EVT_LOCKED);

    dom_user us[2];
    itest_user(&us[0], inst, "u1", 3);
    snprintf(us[0].phone, sizeof us[0].phone, "%s", ev[1].phone);
    us[0].phone_verified = false;
    snprintf(us[0].verified_phone, sizeof us[0].verified_phone, "+41790000000");
    us[0].otp_sms = true;
    snprintf(us[0].code_enc, sizeof us[0].code_enc, "%s", ev[2].code_enc);
    us[0].code_expires_at_us = ev[2].code_expires_at_us;
    us[0].created_at_us = ev[0].created_at_us;
    us[0].changed_at_us = ev[2].created_at_us;
    itest_user(&us[1], inst, "u2", 1);
    us[1].status = DOM_USER_LOCKED;

    es_write w = {.events = ev, .n_events = 4, .users = us, .n_users = 2};
    assert_ok(itest_write(st, &w, &err), &err, "write");
    for (int i = 0; i < 4; i++)
        cr_assert_gt(ev[i].position, 0);

    dom_evt *got = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(st, inst, "u1", &got, &n, &err), &err, "user events");
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        const dom_evt *a = &ev[i], *b = &got[i];
        cr_assert_eq(b->type, a->type);
        cr_assert_str_eq(b->instance_id, a->instance_id);
        cr_assert_str_eq(b->aggregate_id, a->aggregate_id);
        cr_assert_str_eq(b->resource_owner, a->resource_owner);
        cr_assert_str_eq(b->creator, a->creator);
        cr_assert_str_eq(b->command_id, a->command_id);
        cr_assert_eq(b->sequence, a->sequence);
        cr_assert_eq(b->position, a->position);
        cr_assert_eq(b->created_at_us, a->created_at_us, "created_at %lld != %lld",
                     (long long)b->created_at_us, (long long)a->created_at_us);
        cr_assert_eq(b->revision, a->revision);
        cr_assert_eq(b->last_of_command, a->last_of_command);
    }
    cr_assert_str_eq(got[0].human.user_name, "u1");
    cr_assert_str_eq(got[0].human.last_name, "Lovelace");
    cr_assert_str_eq(got[1].phone, ev[1].phone);
    cr_assert_str_eq(got[2].code_enc, ev[2].code_enc);
    cr_assert_eq(got[2].code_expires_at_us, ev[2].code_expires_at_us);
    free(got);

    /* Users: every field back, in the caller's order, with a missing one. */
    dom_user ld[3];
    bool found[3];
    memset(ld, 0x5a, sizeof ld); /* garbage the store must overwrite */
    const char *ids[3] = {"u2", "nobody", "u1"};
    for (int i = 0; i < 3; i++) {
        snprintf(ld[i].instance_id, sizeof ld[i].instance_id, "%s", inst);
        snprintf(ld[i].user_id, sizeof ld[i].user_id, "%s", ids[i]);
    }
    assert_ok(es_store_begin(st, &err), &err, "begin");
    assert_ok(es_store_load_users(st, ld, found, 3, &err), &err, "load users");
    es_store_rollback(st);
    cr_assert(found[0] && !found[1] && found[2]);
    cr_assert_eq(ld[1].status, DOM_USER_NONE);
    cr_assert_eq(ld[1].sequence, 0);
    cr_assert_str_eq(ld[1].user_id, "nobody");
    cr_assert_str_eq(ld[1].instance_id, inst);
    cr_assert_str_eq(ld[1].phone, "");
    const dom_user *a = &us[0], *b = &ld[2];
    cr_assert_str_eq(b->instance_id, a->instance_id);
    cr_assert_str_eq(b->user_id, a->user_id);
    cr_assert_str_eq(b->resource_owner, a->resource_owner);
    cr_assert_str_eq(b->user_name, a->user_name);
    cr_assert_eq(b->status, a->status);
    cr_assert_eq(b->sequence, a->sequence);
    cr_assert_str_eq(b->phone, a->phone);
    cr_assert_eq(b->phone_verified, a->phone_verified);
    cr_assert_str_eq(b->verified_phone, a->verified_phone);
    cr_assert_eq(b->otp_sms, a->otp_sms);
    cr_assert_str_eq(b->code_enc, a->code_enc);
    cr_assert_eq(b->code_expires_at_us, a->code_expires_at_us);
    cr_assert_eq(b->created_at_us, a->created_at_us);
    cr_assert_eq(b->changed_at_us, a->changed_at_us);
    cr_assert_eq(ld[0].status, DOM_USER_LOCKED);
    cr_assert_eq(ld[0].code_expires_at_us, 0);

    /* The upsert replaces a user's row. */
    us[1].status = DOM_USER_ACTIVE;
    us[1].sequence = 2;
    dom_evt unlock;
    itest_event(&unlock, inst, "u2", 2, DOM_EVT_UNLOCKED);
    es_write w2 = {.events = &unlock, .n_events = 1, .users = &us[1], .n_users = 1};
    assert_ok(itest_write(st, &w2, &err), &err, "write 2");
    assert_ok(es_store_begin(st, &err), &err, "begin");
    assert_ok(es_store_load_users(st, ld, found, 1, &err), &err, "load users");
    es_store_rollback(st);
    cr_assert_eq(ld[0].status, DOM_USER_ACTIVE);
    cr_assert_eq(ld[0].sequence, 2);
    es_store_free(st);
}

/* Ids that would break a naively built array literal. */
Test(store, load_users_maps_awkward_ids)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    static const char *const ids[] = {
        "a\"b", "c\\d", "e,f", "{g}", "NULL", " h ", "\xc3\xbc-\xc3\x9f", "'q'", "\\\"", "",
    };
    enum { N = sizeof ids / sizeof ids[0] };
    dom_user us[N];
    for (int i = 0; i < N; i++) {
        itest_user(&us[i], inst, ids[i], i + 1);
        snprintf(us[i].user_name, sizeof us[i].user_name, "name-%d", i);
    }
    es_write w = {.users = us, .n_users = N};
    assert_ok(itest_write(st, &w, &err), &err, "write");

    /* Reverse order, one id twice, one unknown. */
    dom_user ld[N + 2];
    bool found[N + 2];
    for (int i = 0; i < N; i++) {
        memset(&ld[i], 0, sizeof ld[i]);
        snprintf(ld[i].instance_id, sizeof ld[i].instance_id, "%s", inst);
        snprintf(ld[i].user_id, sizeof ld[i].user_id, "%s", ids[N - 1 - i]);
    }
    ld[N] = ld[0];
    memset(&ld[N + 1], 0, sizeof ld[N + 1]);
    snprintf(ld[N + 1].instance_id, sizeof ld[N + 1].instance_id, "%s", inst);
    snprintf(ld[N + 1].user_id, sizeof ld[N + 1].user_id, "a\"b\\");
    assert_ok(es_store_begin(st, &err), &err, "begin");
    assert_ok(es_store_load_users(st, ld, found, N + 2, &err), &err, "load users");
    es_store_rollback(st);
    for (int i = 0; i < N; i++) {
        int src = N - 1 - i;
        cr_assert(found[i], "user %d ('%s') not found", i, ids[src]);
        cr_assert_str_eq(ld[i].user_id, ids[src]);
        cr_assert_eq(ld[i].sequence, src + 1, "user '%s' got the row of another", ids[src]);
    }
    cr_assert(found[N]);
    cr_assert_eq(ld[N].sequence, ld[0].sequence);
    cr_assert_not(found[N + 1]);
    es_store_free(st);
}

/* --- invariant 1: one event per (instance, aggregate, sequence) --------------- */

Test(store, same_sequence_twice_is_a_conflict)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_evt a, b;
    itest_event(&a, inst, "u", 1, DOM_EVT_HUMAN_ADDED);
    itest_event(&b, inst, "u", 1, DOM_EVT_LOCKED);
    assert_ok(itest_write_events(st, &a, 1, &err), &err, "first");
    es_result rc = itest_write_events(st, &b, 1, &err);
    cr_assert_eq(rc, ES_ECONFLICT, "got %s: %s", es_result_name(rc), err.text);
    cr_assert_str_eq(err.sqlstate, "23505");
    cr_assert_eq(b.position, 0, "positions are filled only on success");

    /* The same inside one batch. */
    dom_evt two[2];
    itest_event(&two[0], inst, "v", 1, DOM_EVT_HUMAN_ADDED);
    itest_event(&two[1], inst, "v", 1, DOM_EVT_LOCKED);
    rc = itest_write_events(st, two, 2, &err);
    cr_assert_eq(rc, ES_ECONFLICT, "got %s: %s", es_result_name(rc), err.text);

    /* A sequence below 1 is refused by the schema (not a conflict). */
    dom_evt zero;
    itest_event(&zero, inst, "w", 0, DOM_EVT_HUMAN_ADDED);
    rc = itest_write_events(st, &zero, 1, &err);
    cr_assert_eq(rc, ES_EFATAL, "got %s: %s", es_result_name(rc), err.text);
    cr_assert_str_eq(err.sqlstate, "23514");

    dom_evt *got = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(st, inst, "u", &got, &n, &err), &err, "read");
    cr_assert_eq(n, 1);
    cr_assert_eq(got[0].type, DOM_EVT_HUMAN_ADDED);
    free(got);
    es_store_free(st);
}

typedef struct {
    es_store *st;
    dom_evt *evts;
    size_t n;
    es_result rc;
    es_error err;
    atomic_int done;
} writer_arg;

static void *conflicting_writer(void *p)
{
    writer_arg *a = p;
    a->rc = itest_write_events(a->st, a->evts, a->n, &a->err);
    atomic_store(&a->done, 1);
    return NULL;
}

/* Two writers append the same sequence at the same time: the second waits
 * for the first and then fails with a conflict, not a second event. */
Test(store, racing_writers_same_sequence_conflict)
{
    es_store *a = itest_open(), *b = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_evt ea, eb;
    itest_event(&ea, inst, "u", 1, DOM_EVT_HUMAN_ADDED);
    itest_event(&eb, inst, "u", 1, DOM_EVT_HUMAN_ADDED);

    assert_ok(es_store_begin(a, &err), &err, "begin a");
    es_write w = {.events = &ea, .n_events = 1};
    assert_ok(es_store_write(a, &w, &err), &err, "write a");

    writer_arg arg = {.st = b, .evts = &eb, .n = 1};
    pthread_t th;
    pthread_create(&th, NULL, conflicting_writer, &arg);
    sleep_us(200000);
    int early = atomic_load(&arg.done);
    assert_ok(es_store_commit(a, &err), &err, "commit a");
    pthread_join(th, NULL);

    cr_assert_not(early, "the second writer did not wait for the first");
    cr_assert_eq(arg.rc, ES_ECONFLICT, "second writer: %s: %s", es_result_name(arg.rc),
                 arg.err.text);
    cr_assert_str_eq(arg.err.sqlstate, "23505");
    dom_evt *got = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(a, inst, "u", &got, &n, &err), &err, "read");
    cr_assert_eq(n, 1);
    cr_assert_eq(got[0].position, ea.position);
    free(got);
    es_store_free(a);
    es_store_free(b);
}

/* --- invariant 8: append-only ------------------------------------------------ */

static void assert_refused(es_store *st, const char *sql, const char *inst, bool replica)
{
    const char *params[] = {inst};
    itest_exec(st, "BEGIN", 0, NULL);
    itest_exec(st, "SET LOCAL lock_timeout = '10s'", 0, NULL);
    /* Replica mode skips ordinary triggers (restores, logical replication). */
    if (replica)
        itest_exec(st, "SET LOCAL session_replication_role = replica", 0, NULL);
    PGresult *res = itest_sql(st, sql, strstr(sql, "$1") ? 1 : 0, params);
    ExecStatusType s = PQresultStatus(res);
    char msg[256] = "", state[8] = "";
    if (PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
        snprintf(msg, sizeof msg, "%s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    if (PQresultErrorField(res, PG_DIAG_SQLSTATE))
        snprintf(state, sizeof state, "%s", PQresultErrorField(res, PG_DIAG_SQLSTATE));
    PQclear(res);
    /* Whatever happened, undo it: the log may hold other tests' events. */
    itest_exec(st, "ROLLBACK", 0, NULL);
    cr_assert_eq(s, PGRES_FATAL_ERROR, "%s was accepted", sql);
    cr_assert_str_eq(msg, "factord.events is append-only", "%s: %s", sql, msg);
    cr_assert_str_eq(state, "23001");
}

Test(store, events_are_append_only)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_evt e;
    itest_event(&e, inst, "u", 1, DOM_EVT_PHONE_CHANGED);
    assert_ok(itest_write_events(st, &e, 1, &err), &err, "write");

    for (int replica = 0; replica < 2; replica++) {
        if (replica) {
            /* Setting the role needs a superuser; skip that half otherwise. */
            PGresult *res = itest_sql(st, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
                                      0, NULL);
            bool super = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
            PQclear(res);
            if (!super) {
                cr_log_warn("not a superuser: replica-mode refusals not checked");
                break;
            }
        }
        assert_refused(st, "UPDATE factord.events SET type = 'user.removed' WHERE instance_id = $1",
                       inst, replica);
        assert_refused(st, "UPDATE factord.events SET payload = '{}' WHERE instance_id = $1", inst,
                       replica);
        assert_refused(st, "DELETE FROM factord.events WHERE instance_id = $1", inst, replica);
        assert_refused(st, "TRUNCATE factord.events", inst, replica);
    }

    dom_evt *got = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(st, inst, "u", &got, &n, &err), &err, "read");
    cr_assert_eq(n, 1);
    cr_assert_eq(got[0].type, DOM_EVT_PHONE_CHANGED);
    cr_assert_str_eq(got[0].phone, e.phone);
    free(got);
    es_store_free(st);
}

/* --- positions ----------------------------------------------------------------- */

static es_outbox_msg outbox_msg(const char *inst, const char *topic, const char *key,
                                const char *value, size_t value_len)
{
    return (es_outbox_msg){.instance_id = inst, .topic = topic, .key = key,
                           .key_len = key ? strlen(key) : 0, .value = value,
                           .value_len = value_len, .headers_json = NULL};
}

Test(store, positions_unique_and_increasing_across_batches)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX], topic[DOM_TOPIC_MAX];
    itest_instance(inst);
    snprintf(topic, sizeof topic, "itest.%s", inst);
    int64_t prev = 0;
    for (int b = 0; b < 5; b++) {
        dom_evt ev[3];
        char user[16];
        snprintf(user, sizeof user, "u%d", b);
        for (int i = 0; i < 3; i++)
            itest_event(&ev[i], inst, user, i + 1, DOM_EVT_LOCKED);
        es_outbox_msg ob[2] = {outbox_msg(inst, topic, "k", "v1", 2),
                               outbox_msg(inst, topic, "k", "v2", 2)};
        es_write w = {.events = ev, .n_events = 3, .outbox = ob, .n_outbox = 2};
        assert_ok(itest_write(st, &w, &err), &err, "write");
        cr_assert_gt(ev[0].position, prev);
        cr_assert_eq(ev[1].position, ev[0].position + 1);
        cr_assert_eq(ev[2].position, ev[1].position + 1);

        /* Outbox rows follow the batch's events. */
        char pos[24];
        snprintf(pos, sizeof pos, "%lld", (long long)ev[2].position);
        const char *params[] = {topic, pos};
        PGresult *res = itest_sql(st,
                                  "SELECT position - $2::bigint FROM factord.outbox"
                                  " WHERE topic = $1 AND position > $2::bigint ORDER BY position",
                                  2, params);
        cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
        cr_assert_eq(PQntuples(res), 2);
        cr_assert_str_eq(PQgetvalue(res, 0, 0), "1");
        cr_assert_str_eq(PQgetvalue(res, 1, 0), "2");
        PQclear(res);
        prev = ev[2].position + 2;
    }
    const char *params[] = {inst};
    PGresult *res = itest_sql(st,
                              "SELECT count(*) FROM factord.events e JOIN factord.outbox o"
                              " USING (position) WHERE e.instance_id = $1 OR o.instance_id = $1",
                              1, params);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "an event and an outbox row share a position");
    PQclear(res);

    int64_t head = 0;
    assert_ok(es_store_head(st, &head, &err), &err, "head");
    cr_assert_geq(head, prev);
    es_store_free(st);
}

/* A write without events or outbox rows takes no positions, so it does not
 * hold the counter: another writer gets through while it is open. */
Test(store, write_without_positions_leaves_counter_free)
{
    es_store *a = itest_open(), *b = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_user u;
    itest_user(&u, inst, "u", 0);
    dom_cmd c;
    itest_cmd(&c, inst, "u", DOM_CMD_LOCK);
    unsigned char hash[32] = {1};
    es_cmd_outcome oc = {.cmd = &c, .hash = hash, .http_status = 404, .body = "{\"code\":5}"};
    es_write w = {.users = &u, .n_users = 1, .outcomes = &oc, .n_outcomes = 1};
    assert_ok(es_store_begin(a, &err), &err, "begin");
    assert_ok(es_store_write(a, &w, &err), &err, "write");

    itest_exec(b, "SET lock_timeout = '2s'", 0, NULL);
    dom_evt e;
    itest_event(&e, inst, "other", 1, DOM_EVT_HUMAN_ADDED);
    es_result rc = itest_write_events(b, &e, 1, &err);
    es_store_rollback(a);
    cr_assert_eq(rc, ES_OK, "a write behind an open position-less write: %s", err.text);
    es_store_free(a);
    es_store_free(b);
}

/* --- invariant 2: positions visible in commit order ---------------------------- */

enum { TAIL_WRITERS = 8, TAIL_BATCHES = 60, TAIL_MAX_EVENTS = 4 };

typedef struct {
    es_store *st;
    const char *inst;
    const char *topic;
    int id;
    es_result rc;
    es_error err;
    int64_t *positions; /* committed, events and outbox rows */
    size_t n_positions;
    size_t conflicts;
} tail_writer;

static void *tail_writer_main(void *p)
{
    tail_writer *a = p;
    unsigned seed = (unsigned)a->id * 7919u + 1;
    int64_t seq[3] = {0, 0, 0};
    a->positions = malloc(sizeof(int64_t) * TAIL_BATCHES * (TAIL_MAX_EVENTS + 1));
    for (int b = 0; b < TAIL_BATCHES; b++) {
        dom_evt ev[TAIL_MAX_EVENTS];
        size_t n = 1 + (size_t)(rand_r(&seed) % TAIL_MAX_EVENTS);
        int user = rand_r(&seed) % 3;
        char uid[32];
        snprintf(uid, sizeof uid, "w%d-u%d", a->id, user);
        for (size_t i = 0; i < n; i++)
            itest_event(&ev[i], a->inst, uid, seq[user] + 1 + (int64_t)i, DOM_EVT_LOCKED);
        bool with_outbox = rand_r(&seed) % 2;
        es_outbox_msg ob = outbox_msg(a->inst, a->topic, uid, "reply", 5);
        es_write w = {.events = ev, .n_events = n, .outbox = &ob, .n_outbox = with_outbox};

        a->rc = es_store_begin(a->st, &a->err);
        if (a->rc == ES_OK)
            a->rc = es_store_write(a->st, &w, &a->err);
        if (a->rc == ES_OK) {
            /* Linger between taking positions and committing: a store whose
             * positions could commit out of order shows it here. */
            sleep_us(rand_r(&seed) % 400);
            a->rc = es_store_commit(a->st, &a->err);
        }
        if (a->rc != ES_OK) {
            es_store_rollback(a->st);
            if (a->rc == ES_ECONFLICT) {
                a->conflicts++;
                continue;
            }
            return NULL;
        }
        seq[user] += (int64_t)n;
        for (size_t i = 0; i < n; i++)
            a->positions[a->n_positions++] = ev[i].position;
        if (with_outbox)
            a->positions[a->n_positions++] = ev[n - 1].position + 1;
    }
    return NULL;
}

typedef struct {
    es_store *st;
    int64_t start;
    atomic_int *writers_done;
    es_result rc;
    es_error err;
    int64_t *seen;
    size_t n_seen, cap;
    size_t regressions;     /* a row at or below the last position read */
    int64_t first_regression, regression_after;
    size_t reads_during_writes;
} tail_reader;

static void *tail_reader_main(void *p)
{
    tail_reader *r = p;
    int64_t last = r->start;
    es_outbound rows[64];
    for (;;) {
        int done = atomic_load(r->writers_done);
        size_t n = 0;
        r->rc = es_store_read_outbound(r->st, last, 64, rows, &n, &r->err);
        if (r->rc != ES_OK)
            return NULL;
        if (!done && n)
            r->reads_during_writes++;
        for (size_t i = 0; i < n; i++) {
            if (rows[i].position <= last) {
                if (!r->regressions++) {
                    r->first_regression = rows[i].position;
                    r->regression_after = last;
                }
                continue;
            }
            if (r->n_seen == r->cap) {
                r->cap = r->cap ? 2 * r->cap : 1024;
                r->seen = realloc(r->seen, r->cap * sizeof *r->seen);
            }
            r->seen[r->n_seen++] = rows[i].position;
            last = rows[i].position;
        }
        es_outbound_clear(rows, n);
        /* One more full read after the writers are done drains the tail. */
        if (done && n == 0)
            return NULL;
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

Test(store, tail_reader_never_sees_a_position_below_one_read, .timeout = 300)
{
    es_error err = {0};
    char inst[DOM_ID_MAX], topic[DOM_TOPIC_MAX];
    itest_instance(inst);
    snprintf(topic, sizeof topic, "itest.%s", inst);

    es_store *reader_st = itest_open();
    tail_reader reader = {.st = reader_st};
    assert_ok(es_store_head(reader_st, &reader.start, &err), &err, "head");
    atomic_int writers_done = 0;
    reader.writers_done = &writers_done;

    tail_writer w[TAIL_WRITERS];
    pthread_t wt[TAIL_WRITERS], rt;
    for (int i = 0; i < TAIL_WRITERS; i++)
        w[i] = (tail_writer){.st = itest_open(), .inst = inst, .topic = topic, .id = i};
    pthread_create(&rt, NULL, tail_reader_main, &reader);
    for (int i = 0; i < TAIL_WRITERS; i++)
        pthread_create(&wt[i], NULL, tail_writer_main, &w[i]);
    for (int i = 0; i < TAIL_WRITERS; i++)
        pthread_join(wt[i], NULL);
    atomic_store(&writers_done, 1);
    pthread_join(rt, NULL);

    for (int i = 0; i < TAIL_WRITERS; i++)
        cr_assert_eq(w[i].rc, ES_OK, "writer %d: %s: %s", i, es_result_name(w[i].rc),
                     w[i].err.text);
    cr_assert_eq(reader.rc, ES_OK, "reader: %s", reader.err.text);
    cr_assert_eq(reader.regressions, 0,
                 "%zu rows at or below the last position read (first: %lld after %lld)",
                 reader.regressions, (long long)reader.first_regression,
                 (long long)reader.regression_after);
    cr_assert_gt(reader.reads_during_writes, 5, "the reader did not overlap the writers");

    /* Every committed position seen exactly once: the reader's positions
     * are strictly increasing (checked above), so a committed one that is
     * missing was committed below a position the reader had already read. */
    size_t committed = 0, missing = 0;
    int64_t first_missing = 0;
    for (int i = 0; i < TAIL_WRITERS; i++) {
        for (size_t k = 0; k < w[i].n_positions; k++) {
            committed++;
            if (!bsearch(&w[i].positions[k], reader.seen, reader.n_seen, sizeof(int64_t),
                         cmp_i64) && !missing++)
                first_missing = w[i].positions[k];
        }
    }
    cr_assert_eq(missing, 0, "%zu of %zu committed positions never read (first: %lld)", missing,
                 committed, (long long)first_missing);
    cr_assert_gt(committed, TAIL_WRITERS * TAIL_BATCHES / 2);
    cr_log_info("tail reader: %zu committed positions, %zu reads during writes", committed,
                reader.reads_during_writes);

    for (int i = 0; i < TAIL_WRITERS; i++) {
        free(w[i].positions);
        es_store_free(w[i].st);
    }
    free(reader.seen);
    es_store_free(reader_st);
}

/* --- the relay's reads ------------------------------------------------------------ */

/* Rows of this test only (other suites may write at the same time). */
static bool ours(const es_outbound *r, const char *inst, const char *topic)
{
    if (!r->is_event)
        return strcmp(r->topic, topic) == 0;
    json_t *j = json_loads(r->value, 0, NULL);
    bool mine = j && strcmp(json_string_value(json_object_get(j, "instanceId")), inst) == 0;
    json_decref(j);
    return mine;
}

Test(store, read_outbound_merges_events_and_outbox_in_position_order)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX], topic[DOM_TOPIC_MAX];
    itest_instance(inst);
    snprintf(topic, sizeof topic, "itest.%s", inst);

    dom_evt e1[2], e2[1];
    itest_event(&e1[0], inst, "ua", 1, DOM_EVT_HUMAN_ADDED);
    itest_event(&e1[1], inst, "ua", 2, DOM_EVT_PHONE_CHANGED);
    itest_event(&e2[0], inst, "ub", 1, DOM_EVT_LOCKED);
    static const char binary[] = {'{', 0, '\xff', '"', '}'};
    es_outbox_msg o1[2] = {outbox_msg(inst, topic, "cmd-1", "{\"r\":1}", 7),
                           outbox_msg(inst, topic, NULL, binary, sizeof binary)};
    o1[0].headers_json = "{\"error\":\"bad json\"}";
    es_outbox_msg o2[1] = {outbox_msg("", topic, "cmd-3", "{\"r\":3}", 7)};
    es_write w1 = {.events = e1, .n_events = 2, .outbox = o1, .n_outbox = 2};
    es_write w2 = {.events = e2, .n_events = 1, .outbox = o2, .n_outbox = 1};
    assert_ok(itest_write(st, &w1, &err), &err, "write 1");
    assert_ok(itest_write(st, &w2, &err), &err, "write 2");

    /* Page through with a small page, collecting our rows. */
    const int64_t want[6] = {e1[0].position, e1[1].position, e1[1].position + 1,
                             e1[1].position + 2, e2[0].position, e2[0].position + 1};
    const bool want_event[6] = {true, true, false, false, true, false};
    int64_t after = e1[0].position - 1;
    size_t k = 0;
    es_outbound rows[3];
    while (k < 6) {
        size_t n = 0;
        assert_ok(es_store_read_outbound(st, after, 3, rows, &n, &err), &err, "read");
        cr_assert_gt(n, 0, "rows missing after position %lld", (long long)after);
        for (size_t i = 0; i < n; i++) {
            const es_outbound *r = &rows[i];
            cr_assert_gt(r->position, after, "position order broken");
            after = r->position;
            if (!ours(r, inst, topic))
                continue;
            cr_assert_lt(k, 6);
            cr_assert_eq(r->position, want[k], "row %zu at %lld, want %lld", k,
                         (long long)r->position, (long long)want[k]);
            cr_assert_eq(r->is_event, want_event[k]);
            if (r->is_event) {
                cr_assert_null(r->topic);
                const dom_evt *e = k < 2 ? &e1[k] : &e2[0];
                cr_assert_eq(r->key_len, strlen(e->aggregate_id));
                cr_assert(memcmp(r->key, e->aggregate_id, r->key_len) == 0);
                json_t *j = json_loads(r->value, 0, NULL);
                cr_assert_not_null(j, "event value is not JSON: %s", r->value);
                cr_assert_eq(strlen(r->value), r->value_len);
                dom_evt back;
                es_error derr = {0};
                cr_assert_eq(dom_evt_from_json(j, &back, &derr), ES_OK, "%s", derr.text);
                json_decref(j);
                /* personal data leaves sealed (docs/pii.md) and opens with the user's key */
                if (dom_evt_type_has_pii(e->type)) {
                    cr_assert_eq(back.pii_state, DOM_PII_SEALED, "%s", r->value);
                    if (e->phone[0])
                        cr_assert_null(strstr(r->value, e->phone), "%s", r->value);
                    assert_ok(es_piikeys_open(st, es_store_pii_master(st), &back, 1, &derr), &derr, "open");
                }
                cr_assert_eq(back.position, e->position);
                cr_assert_eq(back.sequence, e->sequence);
                cr_assert_eq(back.type, e->type);
                cr_assert_eq(back.created_at_us, e->created_at_us);
                cr_assert_str_eq(back.command_id, e->command_id);
                if (e->type == DOM_EVT_PHONE_CHANGED)
                    cr_assert_str_eq(back.phone, e->phone);
            } else {
                cr_assert_str_eq(r->topic, topic);
                if (k == 2) {
                    cr_assert_eq(r->key_len, 5);
                    cr_assert(memcmp(r->key, "cmd-1", 5) == 0);
                    cr_assert_eq(r->value_len, 7);
                    cr_assert(memcmp(r->value, "{\"r\":1}", 7) == 0);
                    json_t *h = json_loads(r->headers_json, 0, NULL);
                    cr_assert_str_eq(json_string_value(json_object_get(h, "error")), "bad json");
                    json_decref(h);
                } else if (k == 3) {
                    cr_assert_null(r->key);
                    cr_assert_eq(r->key_len, 0);
                    cr_assert_eq(r->value_len, sizeof binary);
                    cr_assert(memcmp(r->value, binary, sizeof binary) == 0);
                    cr_assert_null(r->headers_json);
                } else {
                    cr_assert(memcmp(r->value, "{\"r\":3}", 7) == 0);
                }
            }
            k++;
        }
        es_outbound_clear(rows, n);
    }
    size_t n = 99;
    assert_ok(es_store_read_outbound(st, after, 0, rows, &n, &err), &err, "read 0");
    cr_assert_eq(n, 0);
    es_store_free(st);
}

Test(store, checkpoints)
{
    es_store *st = itest_open();
    es_error err = {0};
    char name[64];
    itest_id(name, sizeof name, "itest-relay");
    int64_t pos = -1;
    assert_ok(es_store_checkpoint_get(st, name, &pos, &err), &err, "get");
    cr_assert_eq(pos, 0);
    assert_ok(es_store_checkpoint_set(st, name, 42, &err), &err, "set");
    assert_ok(es_store_checkpoint_get(st, name, &pos, &err), &err, "get");
    cr_assert_eq(pos, 42);
    assert_ok(es_store_checkpoint_set(st, name, INT64_C(9007199254740993), &err), &err, "set");
    assert_ok(es_store_checkpoint_get(st, name, &pos, &err), &err, "get");
    cr_assert_eq(pos, INT64_C(9007199254740993));

    /* Inside a rolled-back transaction the checkpoint does not move. */
    assert_ok(es_store_begin(st, &err), &err, "begin");
    assert_ok(es_store_checkpoint_set(st, name, 7, &err), &err, "set");
    es_store_rollback(st);
    assert_ok(es_store_checkpoint_get(st, name, &pos, &err), &err, "get");
    cr_assert_eq(pos, INT64_C(9007199254740993));
    es_store_free(st);
}

/* --- commands ---------------------------------------------------------------------- */

Test(store, find_commands_returns_stored_outcomes)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_cmd c1, c2;
    itest_cmd(&c1, inst, "u1", DOM_CMD_ADD_OTP_SMS);
    itest_cmd(&c2, inst, "u2", DOM_CMD_UNKNOWN);
    unsigned char h1[32], h2[32];
    for (int i = 0; i < 32; i++) {
        h1[i] = (unsigned char)i;
        h2[i] = (unsigned char)(255 - i);
    }
    const char *b1 = "{\"details\":{\"sequence\":\"2\",\"resourceOwner\":\"org\"}}";
    const char *b2 = "{\"code\":3,\"message\":\"bad \\\"x\\\" (COMMAND-x)\",\"details\":[]}";
    es_cmd_outcome oc[2] = {{.cmd = &c1, .hash = h1, .http_status = 200, .body = b1},
                            {.cmd = &c2, .hash = h2, .http_status = 400, .body = b2}};
    es_write w = {.outcomes = oc, .n_outcomes = 2};
    assert_ok(itest_write(st, &w, &err), &err, "write");

    char unknown[DOM_UUID_LEN + 1];
    itest_uuid(unknown);
    const char *ids[4] = {c2.id, unknown, c1.id, c2.id};
    es_known_cmd k[4];
    assert_ok(es_store_find_commands(st, ids, 4, k, &err), &err, "find");
    cr_assert(k[0].found && !k[1].found && k[2].found && k[3].found);
    cr_assert_null(k[1].body);
    cr_assert_eq(k[2].http_status, 200);
    cr_assert_eq(k[0].http_status, 400);
    cr_assert_str_eq(k[2].instance_id, inst);
    cr_assert(memcmp(k[2].hash, h1, 32) == 0);
    cr_assert(memcmp(k[0].hash, h2, 32) == 0);
    json_t *want = json_loads(b1, 0, NULL), *got = json_loads(k[2].body, 0, NULL);
    cr_assert(json_equal(want, got), "body %s, want %s", k[2].body, b1);
    json_decref(want);
    json_decref(got);
    want = json_loads(b2, 0, NULL);
    got = json_loads(k[3].body, 0, NULL);
    cr_assert(json_equal(want, got), "body %s, want %s", k[3].body, b2);
    json_decref(want);
    json_decref(got);
    for (int i = 0; i < 4; i++)
        es_known_cmd_clear(&k[i]);

    /* A command id is decided once: a second row is a conflict. */
    es_write again = {.outcomes = oc, .n_outcomes = 1};
    es_result rc = itest_write(st, &again, &err);
    cr_assert_eq(rc, ES_ECONFLICT, "%s", err.text);

    /* Ids are validated before they reach the array literal. */
    const char *bad[2] = {c1.id, "00000000-0000-0000-0000-00000000000\"}"};
    es_known_cmd kb[2];
    rc = es_store_find_commands(st, bad, 2, kb, &err);
    cr_assert_eq(rc, ES_EINVAL);
    cr_assert(!kb[0].found && !kb[0].body);
    assert_ok(es_store_find_commands(st, NULL, 0, NULL, &err), &err, "empty");
    es_store_free(st);
}

/* --- invariant 3: decisions on locked state ----------------------------------------- */

typedef struct {
    es_store *st;
    dom_user *u;
    es_result rc;
    es_error err;
    atomic_int loaded;
    int64_t waited_us;
    int64_t seen_sequence;
} loader_arg;

static void *second_loader(void *p)
{
    loader_arg *a = p;
    bool found = false;
    int64_t t0 = mono_us();
    a->rc = es_store_begin(a->st, &a->err);
    if (a->rc == ES_OK)
        a->rc = es_store_load_users(a->st, a->u, &found, 1, &a->err);
    a->waited_us = mono_us() - t0;
    a->seen_sequence = a->u->sequence;
    atomic_store(&a->loaded, 1);
    es_store_rollback(a->st);
    return NULL;
}

Test(store, load_users_for_update_blocks_a_second_transaction)
{
    es_store *a = itest_open(), *b = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_user u;
    itest_user(&u, inst, "u", 1);
    es_write w = {.users = &u, .n_users = 1};
    assert_ok(itest_write(a, &w, &err), &err, "write");
    itest_exec(b, "SET lock_timeout = '20s'", 0, NULL);

    dom_user ua, ub;
    bool found = false;
    memset(&ua, 0, sizeof ua);
    snprintf(ua.instance_id, sizeof ua.instance_id, "%s", inst);
    snprintf(ua.user_id, sizeof ua.user_id, "u");
    ub = ua;
    assert_ok(es_store_begin(a, &err), &err, "begin");
    assert_ok(es_store_load_users(a, &ua, &found, 1, &err), &err, "load a");
    cr_assert(found);

    loader_arg arg = {.st = b, .u = &ub};
    pthread_t th;
    pthread_create(&th, NULL, second_loader, &arg);
    sleep_us(300000);
    int early = atomic_load(&arg.loaded);
    /* The holder moves the user on; the waiter must see the new state. */
    ua.sequence = 2;
    dom_evt e;
    itest_event(&e, inst, "u", 2, DOM_EVT_LOCKED);
    es_write w2 = {.events = &e, .n_events = 1, .users = &ua, .n_users = 1};
    assert_ok(es_store_write(a, &w2, &err), &err, "write a");
    assert_ok(es_store_commit(a, &err), &err, "commit a");
    pthread_join(th, NULL);

    cr_assert_not(early, "the second FOR UPDATE load did not wait");
    cr_assert_eq(arg.rc, ES_OK, "%s", arg.err.text);
    cr_assert_geq(arg.waited_us, 250000);
    cr_assert_eq(arg.seen_sequence, 2, "the waiter decided on a stale state");
    es_store_free(a);
    es_store_free(b);
}

Test(store, user_name_taken_and_unique)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX], other[DOM_ID_MAX];
    itest_instance(inst);
    itest_instance(other);
    dom_user u;
    itest_user(&u, inst, "u1", 1);
    snprintf(u.user_name, sizeof u.user_name, "Alice@Example.com");
    es_write w = {.users = &u, .n_users = 1};
    assert_ok(itest_write(st, &w, &err), &err, "write");

    /* One query for all: other case, the user's own name, another instance,
     * a free name. */
    es_name_probe probes[] = {
        {inst, "alice@example.COM", NULL},
        {inst, "alice@example.com", "u1"},
        {other, "alice@example.com", NULL},
        {inst, "bob@example.com", ""},
        {inst, "ALICE@EXAMPLE.COM", "u9"},
    };
    bool taken[5] = {false, true, true, true, false};
    assert_ok(es_store_names_taken(st, probes, 5, taken, &err), &err, "taken");
    cr_assert(taken[0], "case-insensitive");
    cr_assert_not(taken[1], "a user's own name is not taken by another");
    cr_assert_not(taken[2], "names are per instance");
    cr_assert_not(taken[3], "a name nobody holds");
    cr_assert(taken[4], "held by u1, asked for u9");
    assert_ok(es_store_names_taken(st, probes, 0, taken, &err), &err, "no names");

    /* A second live user with the same name (other case) is refused. */
    dom_user dup;
    itest_user(&dup, inst, "u2", 1);
    snprintf(dup.user_name, sizeof dup.user_name, "ALICE@example.com");
    es_write wd = {.users = &dup, .n_users = 1};
    es_result rc = itest_write(st, &wd, &err);
    cr_assert_eq(rc, ES_ECONFLICT, "%s", err.text);
    cr_assert_str_eq(err.sqlstate, "23505");

    /* Once removed, the name is free again. */
    u.status = DOM_USER_REMOVED;
    u.sequence = 2;
    assert_ok(itest_write(st, &w, &err), &err, "remove");
    assert_ok(es_store_names_taken(st, probes, 1, taken, &err), &err, "taken");
    cr_assert_not(taken[0], "a removed user's name is free");
    assert_ok(itest_write(st, &wd, &err), &err, "reuse the name");
    es_store_free(st);
}

/* --- sessions ----------------------------------------------------------------------- */

Test(store, try_lock_is_exclusive_per_session)
{
    es_store *a = itest_open(), *b = itest_open();
    es_error err = {0};
    char name[64];
    itest_id(name, sizeof name, "itest-lock");
    bool got = false;
    assert_ok(es_store_try_lock(a, name, &got, &err), &err, "lock a");
    cr_assert(got);
    assert_ok(es_store_try_lock(b, name, &got, &err), &err, "lock b");
    cr_assert_not(got);
    es_store_free(a); /* the session ends, the lock goes with it... */
    /* ...once the server has processed the disconnect, a moment later. */
    int64_t until = mono_us() + 5000000;
    do {
        assert_ok(es_store_try_lock(b, name, &got, &err), &err, "lock b again");
        if (!got)
            sleep_us(10000);
    } while (!got && mono_us() < until);
    cr_assert(got, "the lock outlived its session");
    es_store_free(b);
}

/* A committed write wakes a listener (the relay's LISTEN/NOTIFY, store.h);
 * a connection that does not listen waits out its timeout. */
Test(store, committed_write_notifies_listeners)
{
    es_store *listener = itest_open(), *deaf = itest_open(), *writer = itest_open();
    es_error err = {0};
    bool notified = false;
    assert_ok(es_store_listen(listener, ES_STORE_OUTBOUND_CHANNEL, &err), &err, "listen");
    /* Other tests share the database and may have notified already. */
    assert_ok(es_store_wait_notify(listener, 0, &notified, &err), &err, "drain");

    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_evt e;
    itest_event(&e, inst, "u", 1, DOM_EVT_HUMAN_ADDED);
    assert_ok(itest_write_events(writer, &e, 1, &err), &err, "write");
    int64_t t0 = mono_us();
    assert_ok(es_store_wait_notify(listener, 5000, &notified, &err), &err, "wait");
    cr_assert(notified, "no notification within 5 s of a commit");
    cr_assert_lt(mono_us() - t0, 2000000);

    t0 = mono_us();
    assert_ok(es_store_wait_notify(deaf, 300, &notified, &err), &err, "wait without listening");
    cr_assert_not(notified);
    cr_assert_geq(mono_us() - t0, 250000, "returned before its timeout");
    es_store_free(listener);
    es_store_free(deaf);
    es_store_free(writer);
}

Test(store, lost_connection_is_transient_and_reset_recovers)
{
    es_store *st = itest_open(), *killer = itest_open();
    es_error err = {0};
    int64_t head = 0;
    assert_ok(es_store_head(st, &head, &err), &err, "head"); /* prepared */
    PGresult *res = itest_sql(st, "SELECT pg_backend_pid()::text", 0, NULL);
    char pid[16];
    snprintf(pid, sizeof pid, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    const char *params[] = {pid};
    itest_exec(killer, "SELECT pg_terminate_backend($1::int)", 1, params);
    sleep_us(100000);

    es_result rc = es_store_head(st, &head, &err);
    cr_assert_eq(rc, ES_ETRANSIENT, "got %s: %s", es_result_name(rc), err.text);
    assert_ok(es_store_reset(st, &err), &err, "reset");
    assert_ok(es_store_head(st, &head, &err), &err, "head after reset");
    es_store_free(st);
    es_store_free(killer);
}

Test(store, bad_connection_string_is_invalid)
{
    es_store *st = NULL;
    es_error err = {0};
    es_result rc = es_store_open("postgresql://a b c:x@[", &st, &err);
    cr_assert_eq(rc, ES_EINVAL, "%s", err.text);
    cr_assert_null(st);
    rc = es_store_open("host=127.0.0.1 port=1 connect_timeout=2", &st, &err);
    cr_assert_eq(rc, ES_ETRANSIENT, "%s", err.text);
    cr_assert_null(st);
}

/* Binary arrays (infra/pg/pgarr.h) as the server reads them: every element
 * type the statements use, NULLs, empty text, non-ASCII text, extreme
 * integers and times around both epochs; each printed back by PostgreSQL
 * in its text form. Refusals happen on the client: not UTF-8, not a UUID. */
static char *array_as_text(es_store *st, const char *type, es_pga *a)
{
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT string_agg(coalesce(x::text, 'NULL'), '|' ORDER BY o)"
             "  FROM unnest($1::%s[]) WITH ORDINALITY AS r(x, o)", type);
    int len;
    const char *values[] = {es_pga_finish(a, &len)};
    int lengths[] = {len}, formats[] = {1};
    PGresult *res = NULL;
    es_error err = {0};
    assert_ok(es_store_exec_bin(st, type, sql, 1, values, lengths, formats, PGRES_TUPLES_OK, &res, &err), &err,
              type);
    char *out = strdup(PQgetisnull(res, 0, 0) ? "(empty)" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return out;
}

static void assert_array(es_store *st, const char *type, es_pga *a, const char *want)
{
    char *got = array_as_text(st, type, a);
    cr_assert_str_eq(got, want, "%s[]", type);
    free(got);
}

Test(store, binary_arrays_reach_the_server_intact)
{
    es_store *st = itest_open();
    es_error err = {0};
    PGresult *res = NULL;
    assert_ok(es_store_exec(st, "utc", "SET TIME ZONE 'UTC'", 0, NULL, PGRES_COMMAND_OK, &res, &err), &err, "utc");
    PQclear(res);
    es_pga a = {0};

    es_pga_begin(&a, ES_PG_TEXT);
    cr_assert(es_pga_text(&a, "user-1", SIZE_MAX));
    cr_assert(es_pga_text(&a, "", SIZE_MAX));
    es_pga_null(&a);
    cr_assert(es_pga_text(&a, "Zo\xc3\xab \xe2\x82\xac|x", SIZE_MAX));
    cr_assert(es_pga_text(&a, "abcdef", 3));
    cr_assert_not(es_pga_text(&a, "bad \xc3(", SIZE_MAX));
    cr_assert_eq(a.n, 5);
    assert_array(st, "text", &a, "user-1||NULL|Zo\xc3\xab \xe2\x82\xac|x|abc");

    es_pga_begin(&a, ES_PG_INT8);
    es_pga_i64(&a, 0);
    es_pga_i64(&a, -1);
    es_pga_i64(&a, INT64_MAX);
    es_pga_i64(&a, INT64_MIN);
    es_pga_i64(&a, 4294967296);
    assert_array(st, "bigint", &a, "0|-1|9223372036854775807|-9223372036854775808|4294967296");

    es_pga_begin(&a, ES_PG_INT4);
    es_pga_i32(&a, 200);
    es_pga_i32(&a, -2147483647 - 1);
    es_pga_begin(&a, ES_PG_INT4); /* begin empties a reused builder */
    es_pga_i32(&a, 422);
    es_pga_i32(&a, -7);
    assert_array(st, "int", &a, "422|-7");

    es_pga_begin(&a, ES_PG_INT2);
    es_pga_i16(&a, 1);
    es_pga_i16(&a, -32768);
    es_pga_i16(&a, 32767);
    assert_array(st, "smallint", &a, "1|-32768|32767");

    es_pga_begin(&a, ES_PG_BOOL);
    es_pga_bool(&a, true);
    es_pga_bool(&a, false);
    es_pga_null(&a);
    assert_array(st, "boolean", &a, "true|false|NULL");

    es_pga_begin(&a, ES_PG_TIMESTAMPTZ);
    es_pga_time(&a, 0);
    es_pga_time(&a, INT64_C(946684800000000));
    es_pga_time(&a, INT64_C(1795651200123456)); /* 2026-11-26 00:00:00.123456 */
    es_pga_time(&a, -1);
    assert_array(st, "timestamptz", &a,
                 "1970-01-01 00:00:00+00|2000-01-01 00:00:00+00|2026-11-26 00:00:00.123456+00|"
                 "1969-12-31 23:59:59.999999+00");

    es_pga_begin(&a, ES_PG_UUID);
    cr_assert(es_pga_uuid(&a, "0189a7e2-7b6c-4d1e-9f00-aabbccddeeff"));
    cr_assert(es_pga_uuid(&a, "0189A7E2-7B6C-4D1E-9F00-AABBCCDDEEF0"));
    cr_assert_not(es_pga_uuid(&a, "0189a7e2-7b6c-4d1e-9f00-aabbccddeef"));   /* short */
    cr_assert_not(es_pga_uuid(&a, "0189a7e2-7b6c-4d1e-9f00-aabbccddeeff0")); /* long */
    cr_assert_not(es_pga_uuid(&a, "0189a7e2x7b6c-4d1e-9f00-aabbccddeeff"));
    cr_assert_not(es_pga_uuid(&a, "0189a7e2-7b6c-4d1e-9f00-aabbccddeegf"));
    assert_array(st, "uuid", &a, "0189a7e2-7b6c-4d1e-9f00-aabbccddeeff|0189a7e2-7b6c-4d1e-9f00-aabbccddeef0");

    es_pga_begin(&a, ES_PG_BYTEA);
    es_pga_bytes(&a, "\x00\x01\xff", 3);
    es_pga_bytes(&a, "", 0);
    assert_array(st, "bytea", &a, "\\x0001ff|\\x");

    es_pga_begin(&a, ES_PG_JSONB);
    const char *doc = "{\"b\": 1, \"a\": [true, null]}";
    cr_assert(es_pga_jsonb(&a, doc, strlen(doc)));
    cr_assert_not(es_pga_jsonb(&a, "\"\xff\"", 3));
    cr_assert(es_pga_jsonb(&a, "{}", 2));
    assert_array(st, "jsonb", &a, "{\"a\": [true, null], \"b\": 1}|{}");

    es_pga_begin(&a, ES_PG_TEXT);
    assert_array(st, "text", &a, "(empty)");

    es_pga_free(&a);
    es_store_free(st);
}

/* Bad data in a batch is refused before any statement runs on it: a clear
 * ES_EINVAL naming the row, and nothing of the batch in the tables. */
Test(store, write_refuses_bad_rows_with_a_clear_error)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    struct {
        const char *what, *want;
    } cases[] = {
        {"creator not UTF-8", "write: event 1: chain: an event holds invalid UTF-8"},
        {"event time before year 1", "event 0: creation time out of range"},
        {"command id not a UUID", "event 1: command id is not a UUID"},
        {"user name not UTF-8", "user 0: invalid UTF-8"},
        {"user time after year 9999", "user 0: a time out of range"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        dom_evt ev[2];
        itest_event(&ev[0], inst, "u1", 1, DOM_EVT_HUMAN_ADDED);
        itest_event(&ev[1], inst, "u1", 2, DOM_EVT_PHONE_CHANGED);
        dom_user u;
        itest_user(&u, inst, "u1", 2);
        switch (c) {
        case 0: snprintf(ev[1].creator, sizeof ev[1].creator, "bad \xc3("); break;
        case 1: ev[0].created_at_us = DOM_TIME_MIN_US - 1; break;
        case 2: snprintf(ev[1].command_id, sizeof ev[1].command_id, "not-a-uuid"); break;
        case 3: snprintf(u.user_name, sizeof u.user_name, "\xff\xfe"); break;
        default: u.changed_at_us = DOM_TIME_MAX_US + 1; break;
        }
        es_write w = {.events = ev, .n_events = 2, .users = &u, .n_users = 1};
        es_result rc = itest_write(st, &w, &err);
        cr_assert_eq(rc, ES_EINVAL, "%s: %d (%s)", cases[c].what, rc, err.text);
        cr_assert(strstr(err.text, cases[c].want), "%s: \"%s\"", cases[c].what, err.text);
    }
    dom_evt *got = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(st, inst, "u1", &got, &n, &err), &err, "user events");
    cr_assert_eq(n, 0, "a refused batch left %zu events", n);
    free(got);
    dom_user ld;
    bool found = true;
    snprintf(ld.instance_id, sizeof ld.instance_id, "%s", inst);
    snprintf(ld.user_id, sizeof ld.user_id, "u1");
    assert_ok(es_store_load_users(st, &ld, &found, 1, &err), &err, "load");
    cr_assert_not(found, "a refused batch left its user");
    es_store_free(st);
}

/* --- plans -------------------------------------------------------------------- */

/* The batch statements reach rows by key whatever a batch's size or the
 * tables' statistics. Their rows travel as arrays whose lengths the planner
 * sees; as joins, with 1,000-2,000 keys against a table of 100,000 rows,
 * they were planned as hash joins over sequential scans of the whole table
 * (docs/performance.md). auto_explain hands each executed statement's plan
 * back as a notice, and none may scan a keyed table or join by hashing or
 * merging. Needs a superuser (LOAD), as scripts/pg.sh's user is. */
typedef struct {
    char *text;
    size_t len, plans;
} plan_log;

static void plan_notice(void *arg, const PGresult *res)
{
    plan_log *l = arg;
    const char *m = PQresultErrorMessage(res);
    if (!strstr(m, "Query Text:"))
        return;
    size_t n = strlen(m);
    l->text = realloc(l->text, l->len + n + 1);
    memcpy(l->text + l->len, m, n + 1);
    l->len += n;
    l->plans++;
}

static bool plan_has(const plan_log *l, const char *what) { return l->text && strstr(l->text, what); }

Test(store, keyed_batch_statements_probe_by_key_at_any_size, .timeout = 120)
{
    es_log_init("test", "error"); /* the replies' look-ups find no commands: warnings */
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    enum { KNOWN = 100000, BATCH = 2000, NEW = 500 };
    const char *params[] = {inst};
    /* 100,000 users the projector has seen (sequence 1), 2,000 with an
     * SMS factor; the users table as big; then statistics that say so. */
    itest_exec(st,
               "INSERT INTO factord.projected_sequences (projection, instance_id, user_id, sequence)"
               " SELECT 'auth_factors', $1, 'u' || g, 1 FROM generate_series(1, 100000) g",
               1, params);
    itest_exec(st,
               "INSERT INTO factord.auth_factors (instance_id, user_id, type, state, sequence, created_at,"
               "    changed_at, resource_owner)"
               " SELECT $1, 'u' || g, 'otpSms', 'AUTH_FACTOR_STATE_READY', 1, now(), now(), 'org'"
               "   FROM generate_series(1, 2000) g",
               1, params);
    itest_exec(st,
               "INSERT INTO factord.users (instance_id, user_id, resource_owner, user_name, status, sequence,"
               "    created_at, changed_at)"
               " SELECT $1, 'u' || g, 'org', 'u' || g, 'active', 1, now(), now()"
               "   FROM generate_series(1, 100000) g",
               1, params);
    itest_exec(st, "ANALYZE factord.projected_sequences, factord.auth_factors, factord.users", 0, NULL);

    plan_log log = {0};
    PGconn *conn = es_store_conn(st);
    PQnoticeReceiver old = PQsetNoticeReceiver(conn, plan_notice, &log);
    itest_exec(st, "LOAD 'auto_explain'", 0, NULL);
    itest_exec(st, "SET auto_explain.log_min_duration = 0", 0, NULL);
    itest_exec(st, "SET auto_explain.log_level = 'notice'", 0, NULL);
    itest_exec(st, "SET client_min_messages = notice", 0, NULL); /* the store's sessions say warning */

    /* The projector: 2,000 known users (1,000 factors removed, 1,000 added)
     * and 500 new ones, in one batch. */
    dom_evt *ev = calloc(BATCH + NEW, sizeof *ev);
    for (int i = 0; i < BATCH + NEW; i++) {
        char user[32];
        snprintf(user, sizeof user, "u%d", i < BATCH ? i + 1 : KNOWN + i);
        itest_event(&ev[i], inst, user, i < BATCH ? 2 : 1,
                    i < BATCH / 2 ? DOM_EVT_OTP_SMS_REMOVED : DOM_EVT_OTP_SMS_ADDED);
    }
    es_projector *p = es_projector_new(st, &(es_projector_opts){0});
    const es_reply *replies;
    size_t n_replies;
    es_project_stats stats;
    assert_ok(es_projector_run_batch(p, ev, NULL, BATCH + NEW, &replies, &n_replies, &stats, &err), &err,
              "projector batch");
    cr_assert_eq(stats.applied, BATCH + NEW);
    es_projector_free(p);

    /* The processor's keyed reads: the users, locked; the command ids. */
    dom_user *us = calloc(BATCH, sizeof *us);
    bool *found = calloc(BATCH, sizeof *found);
    char (*ids)[DOM_UUID_LEN + 1] = calloc(BATCH, sizeof *ids);
    const char **idp = calloc(BATCH, sizeof *idp);
    es_known_cmd *known = calloc(BATCH, sizeof *known);
    for (int i = 0; i < BATCH; i++) {
        snprintf(us[i].instance_id, sizeof us[i].instance_id, "%s", inst);
        snprintf(us[i].user_id, sizeof us[i].user_id, "u%d", i * 50 + 1);
        itest_uuid(ids[i]);
        idp[i] = ids[i];
    }
    assert_ok(es_store_begin(st, &err), &err, "begin");
    assert_ok(es_store_load_users(st, us, found, BATCH, &err), &err, "load users");
    cr_assert(found[0] && found[BATCH - 1]);
    assert_ok(es_store_find_commands(st, idp, BATCH, known, &err), &err, "find commands");
    es_store_rollback(st);

    size_t ours = log.plans;
    cr_assert_geq(ours, 6, "auto_explain reported %zu plans; is the test's user a superuser?", ours);
    /* (factord.commands is small here: its id = ANY(...) look-up, no join,
     * may rightly scan it.) */
    for (const char *bad = "Seq Scan on projected_sequences\0Seq Scan on auth_factors\0Seq Scan on users\0"
                           "Hash Join\0Merge Join\0Bitmap Heap Scan on projected\0";
         *bad; bad += strlen(bad) + 1)
        cr_assert_not(plan_has(&log, bad), "a keyed statement's plan has \"%s\":\n%s", bad, log.text);

    PQsetNoticeReceiver(conn, old, NULL);
    free(log.text);
    /* 200,000 rows are too many to leave in a shared test database. */
    itest_exec(st, "DELETE FROM factord.projected_sequences WHERE instance_id = $1", 1, params);
    itest_exec(st, "DELETE FROM factord.auth_factors WHERE instance_id = $1", 1, params);
    itest_exec(st, "DELETE FROM factord.users WHERE instance_id = $1", 1, params);
    for (int i = 0; i < BATCH; i++)
        es_known_cmd_clear(&known[i]);
    free(known);
    free(idp);
    free(ids);
    free(found);
    free(us);
    free(ev);
    es_store_free(st);
}

/* Personal data (docs/pii.md): a user's first event creates its key in the
 * same transaction; the stored payloads hold no plaintext; the store reads
 * them back in clear; a store without the master key, another master key,
 * or a key row moved to another user refuses to read them; a batch without
 * PII events writes no key. */
Test(store, personal_data_is_sealed_with_a_key_per_user)
{
    es_store *st = itest_open();
    es_error err = {0};
    char inst[DOM_ID_MAX];
    itest_instance(inst);
    dom_evt ev[4];
    itest_event(&ev[0], inst, "ada", 1, DOM_EVT_HUMAN_ADDED);
    snprintf(ev[0].human.email, sizeof ev[0].human.email, "ada@example.org");
    itest_event(&ev[1], inst, "ada", 2, DOM_EVT_PHONE_CHANGED);
    snprintf(ev[1].phone, sizeof ev[1].phone, "+41791112233");
    itest_event(&ev[2], inst, "bob", 1, DOM_EVT_HUMAN_ADDED);
    snprintf(ev[2].human.first_name, sizeof ev[2].human.first_name, "Roberto");
    itest_event(&ev[3], inst, "bob", 2, DOM_EVT_LOCKED);
    assert_ok(itest_write_events(st, ev, 4, &err), &err, "write");

    const char *p[] = {inst};
    PGresult *res = itest_sql(st, "SELECT string_agg(payload::text, ' ') FROM factord.events WHERE instance_id = $1",
                              1, p);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
    const char *all = PQgetvalue(res, 0, 0);
    static const char *const plain[] = {"ada@example.org", "+41791112233", "Lovelace", "Roberto", "\"Ada\""};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        cr_assert_null(strstr(all, plain[i]), "%s in %s", plain[i], all);
    cr_assert_not_null(strstr(all, "pii:v1:"), "%s", all);
    PQclear(res);
    res = itest_sql(st, "SELECT count(*), min(octet_length(wrapped)) FROM factord.pii_keys WHERE instance_id = $1",
                    1, p);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "2", "one key per user");
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "60");
    PQclear(res);

    dom_evt *got = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(st, inst, "ada", &got, &n, &err), &err, "read");
    cr_assert_eq(n, 2);
    cr_assert_eq(got[0].pii_state, DOM_PII_OPEN);
    cr_assert_str_eq(got[0].human.email, "ada@example.org");
    cr_assert_str_eq(got[0].human.last_name, "Lovelace");
    cr_assert_str_eq(got[1].phone, "+41791112233");
    free(got);

    /* a later batch reuses the key */
    dom_evt more;
    itest_event(&more, inst, "ada", 3, DOM_EVT_PHONE_CHANGED);
    assert_ok(itest_write_events(st, &more, 1, &err), &err, "write again");
    assert_ok(es_store_user_events(st, inst, "ada", &got, &n, &err), &err, "read again");
    cr_assert_eq(n, 3);
    cr_assert_str_eq(got[2].phone, more.phone);
    free(got);

    /* without the master key, with another one: refused, not shown empty */
    es_store *bare = NULL;
    assert_ok(es_store_open(itest_database_url(), &bare, &err), &err, "open");
    cr_assert_eq(es_store_user_events(bare, inst, "ada", &got, &n, &err), ES_EFATAL);
    cr_assert(strstr(err.text, "FACTORD_PII_KEY"), "%s", err.text);
    es_pii_master other;
    assert_ok(es_pii_master_from_hex("ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100", &other, &err),
              &err, "key");
    es_store_set_pii_master(bare, &other);
    cr_assert_eq(es_store_user_events(bare, inst, "ada", &got, &n, &err), ES_EFATAL);
    cr_assert(strstr(err.text, other.key_id), "%s", err.text);
    es_store_free(bare);

    /* bob's wrapped key copied onto ada's row does not unwrap there */
    itest_exec(st, "UPDATE factord.pii_keys a SET wrapped = b.wrapped FROM factord.pii_keys b"
                   " WHERE a.instance_id = $1 AND a.user_id = 'ada' AND b.instance_id = $1 AND b.user_id = 'bob'",
               1, p);
    cr_assert_eq(es_store_user_events(st, inst, "ada", &got, &n, &err), ES_EFATAL);
    cr_assert(strstr(err.text, "does not unwrap"), "%s", err.text);
    assert_ok(es_store_user_events(st, inst, "bob", &got, &n, &err), &err, "bob still reads");
    cr_assert_str_eq(got[0].human.first_name, "Roberto");
    free(got);

    /* events without personal data make no key */
    dom_evt plain_evt;
    itest_event(&plain_evt, inst, "carol", 1, DOM_EVT_LOCKED);
    assert_ok(itest_write_events(st, &plain_evt, 1, &err), &err, "write carol");
    res = itest_sql(st, "SELECT count(*) FROM factord.pii_keys WHERE instance_id = $1 AND user_id = 'carol'", 1, p);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    es_store_free(st);
}
