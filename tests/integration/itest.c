/*
 * tests/integration/itest.c - shared helpers of the integration tests
 * (itest.h): the test database, fresh ids, quick users, events and
 * commands, raw SQL.
 */
#include "tests/integration/itest.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <uuid/uuid.h>

const char *itest_database_url(void)
{
    const char *url = getenv("FACTORD_TEST_DATABASE_URL");
    if (!url || !*url)
        cr_assert_fail("FACTORD_TEST_DATABASE_URL is not set: integration tests need a "
                       "PostgreSQL 15 server (scripts/pg.sh start; eval \"$(scripts/pg.sh env)\")");
    return url;
}

void itest_set_pii_key(es_store *st)
{
    es_pii_master m;
    cr_assert_eq(es_pii_master_from_hex(ITEST_PII_KEY, &m, NULL), ES_OK);
    es_store_set_pii_master(st, &m);
    es_pii_master_wipe(&m);
}

es_store *itest_open_url(const char *url)
{
    es_store *st = NULL;
    es_error err = {0};
    es_result rc = es_store_open(url, &st, &err);
    cr_assert_eq(rc, ES_OK, "cannot connect to the test database: %s (%s)", err.text,
                 es_result_name(rc));
    itest_set_pii_key(st);
    return st;
}

es_store *itest_open(void)
{
    es_store *st = itest_open_url(itest_database_url());
    es_error err = {0};
    int applied = 0;
    /* Cheap when up to date; idempotent, and serialised by the migrator's lock. */
    es_result rc = es_store_migrate(st, &applied, &err);
    cr_assert_eq(rc, ES_OK, "migrate: %s", err.text);
    return st;
}

void itest_id(char *buf, size_t len, const char *prefix)
{
    unsigned char r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        abort();
    snprintf(buf, len, "%s-%02x%02x%02x%02x%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7]);
}

void itest_instance(char buf[DOM_ID_MAX]) { itest_id(buf, DOM_ID_MAX, "t"); }

void itest_uuid(char out[DOM_UUID_LEN + 1])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

int64_t itest_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void itest_user(dom_user *u, const char *instance_id, const char *user_id, int64_t seq)
{
    memset(u, 0, sizeof *u);
    snprintf(u->instance_id, sizeof u->instance_id, "%s", instance_id);
    snprintf(u->user_id, sizeof u->user_id, "%s", user_id);
    snprintf(u->resource_owner, sizeof u->resource_owner, "org-%s", instance_id);
    snprintf(u->user_name, sizeof u->user_name, "%s", user_id);
    u->status = DOM_USER_ACTIVE;
    u->sequence = seq;
    u->created_at_us = itest_now_us();
    u->changed_at_us = u->created_at_us;
}

void itest_event(dom_evt *e, const char *instance_id, const char *user_id, int64_t seq,
                 dom_evt_type type)
{
    memset(e, 0, sizeof *e);
    e->type = type;
    snprintf(e->instance_id, sizeof e->instance_id, "%s", instance_id);
    snprintf(e->aggregate_id, sizeof e->aggregate_id, "%s", user_id);
    snprintf(e->resource_owner, sizeof e->resource_owner, "org-%s", instance_id);
    snprintf(e->creator, sizeof e->creator, "%s", user_id);
    itest_uuid(e->command_id);
    e->sequence = seq;
    e->created_at_us = itest_now_us();
    e->revision = DOM_EVT_REVISION;
    e->last_of_command = true;
    switch (type) {
    case DOM_EVT_HUMAN_ADDED:
        snprintf(e->human.user_name, sizeof e->human.user_name, "%s", user_id);
        snprintf(e->human.first_name, sizeof e->human.first_name, "Ada");
        snprintf(e->human.last_name, sizeof e->human.last_name, "Lovelace");
        break;
    case DOM_EVT_PHONE_CHANGED:
        snprintf(e->phone, sizeof e->phone, "+4171%07lld", (long long)(seq % 10000000));
        break;
    case DOM_EVT_PHONE_CODE_ADDED:
        snprintf(e->code_enc, sizeof e->code_enc, "c2VjcmV0LWNpcGhlcnRleHQ=");
        e->code_expires_at_us = e->created_at_us + 600 * INT64_C(1000000);
        break;
    default:
        break;
    }
}

void itest_cmd(dom_cmd *c, const char *instance_id, const char *user_id, dom_cmd_type type)
{
    memset(c, 0, sizeof *c);
    itest_uuid(c->id);
    c->type = type;
    snprintf(c->instance_id, sizeof c->instance_id, "%s", instance_id);
    snprintf(c->user_id, sizeof c->user_id, "%s", user_id);
    snprintf(c->resource_owner, sizeof c->resource_owner, "org-%s", instance_id);
}

es_result itest_write(es_store *st, es_write *w, es_error *err)
{
    es_result rc = es_store_begin(st, err);
    if (rc != ES_OK)
        return rc;
    rc = es_store_write(st, w, err);
    if (rc == ES_OK)
        rc = es_store_commit(st, err);
    if (rc != ES_OK)
        es_store_rollback(st);
    return rc;
}

es_result itest_write_events(es_store *st, dom_evt *evts, size_t n, es_error *err)
{
    es_write w = {.events = evts, .n_events = n};
    return itest_write(st, &w, err);
}

PGresult *itest_sql(es_store *st, const char *sql, int nparams, const char *const *params)
{
    return PQexecParams(es_store_conn(st), sql, nparams, NULL, params, NULL, NULL, 0);
}

void itest_exec(es_store *st, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = itest_sql(st, sql, nparams, params);
    ExecStatusType s = PQresultStatus(res);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
    PQclear(res);
    cr_assert(s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK, "%s: %s", sql, msg);
}

void itest_create_database(char *name, size_t name_len, char *conninfo, size_t conninfo_len)
{
    char id[40];
    itest_id(id, sizeof id, "factord_t");
    for (char *p = id; *p; p++)
        if (*p == '-')
            *p = '_';
    snprintf(name, name_len, "%s", id);

    es_store *st = itest_open_url(itest_database_url());
    char sql[128];
    /* A name we made from hex digits: safe to splice (CREATE DATABASE takes
     * no parameters). */
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PGresult *res = itest_sql(st, sql, 0, NULL);
    ExecStatusType s = PQresultStatus(res);
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool denied = state && strcmp(state, "42501") == 0;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
    PQclear(res);
    es_store_free(st);
    if (denied)
        cr_skip_test("the test role may not create databases: %s", msg);
    cr_assert_eq(s, PGRES_COMMAND_OK, "%s: %s", sql, msg);

    /* The test url with dbname replaced: a keyword=value string. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(itest_database_url(), &perr);
    cr_assert_not_null(opts, "FACTORD_TEST_DATABASE_URL: %s", perr ? perr : "invalid");
    size_t off = 0;
    conninfo[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *val = strcmp(o->keyword, "dbname") == 0 ? name : o->val;
        if (!val)
            continue;
        off += (size_t)snprintf(conninfo + off, off < conninfo_len ? conninfo_len - off : 0,
                                "%s%s='", off ? " " : "", o->keyword);
        for (const char *c = val; *c && off + 3 < conninfo_len; c++) {
            if (*c == '\'' || *c == '\\')
                conninfo[off++] = '\\';
            conninfo[off++] = *c;
        }
        off += (size_t)snprintf(conninfo + off, off < conninfo_len ? conninfo_len - off : 0, "'");
    }
    PQconninfoFree(opts);
    cr_assert_lt(off, conninfo_len, "conninfo too long");
}

void itest_drop_database(const char *name)
{
    es_store *st = itest_open_url(itest_database_url());
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    itest_exec(st, sql, 0, NULL);
    es_store_free(st);
}
