/*
 * infra/pg/projection_sql.c - the read-model projector's SQL
 * (projection_sql.h).
 *
 * The shapes of the statements are their plans: each comment says which
 * plan the shape forces and why the obvious one was slower.
 */
#include "infra/pg/projection_sql.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/pg/pgarr.h"

/* One primary-key probe per user, locked in key order. The shape is the
 * plan: FOR UPDATE keeps the LATERAL subquery from being flattened into a
 * join, so PostgreSQL can only walk the sorted users and probe the index for
 * each. As a plain join, a table whose statistics lag behind it (a fresh
 * projection, a catch-up after TRUNCATE: autovacuum has not analysed it)
 * was planned as a hash join over a bitmap scan of the whole projection,
 * per batch: 23 ms per batch at 100,000 users, growing with the table. */
static const char SQL_LOAD_SEQUENCES[] =
    "SELECT s.instance_id, s.user_id, s.sequence"
    "  FROM (SELECT r.i, r.u FROM unnest($2::text[], $3::text[]) AS r(i, u)"
    "         ORDER BY r.i, r.u) AS r"
    " CROSS JOIN LATERAL (SELECT s.instance_id, s.user_id, s.sequence"
    "                       FROM factord.projected_sequences s"
    "                      WHERE s.projection = $1 AND s.instance_id = r.i AND s.user_id = r.u"
    "                        FOR UPDATE) AS s"
    " ORDER BY r.i, r.u";

static const char SQL_INSERT_SEQUENCES[] =
    "INSERT INTO factord.projected_sequences (projection, instance_id, user_id, sequence)"
    " SELECT $1, r.i, r.u, r.s"
    "   FROM unnest($2::text[], $3::text[], $4::bigint[]) AS r(i, u, s)"
    "  ORDER BY r.i, r.u";

/* Rows the load found and locked. Written as an upsert (every row is there
 * and conflicts) so that each row is reached through the primary key, one
 * probe each: an UPDATE ... FROM unnest(...) is a join, planned with the
 * arrays' real lengths, and for a batch of 1,000 users a hash join over a
 * sequential scan of the projection looked cheaper to the planner (it was
 * not: the projector's session used 2.7 times the CPU). "sequence <
 * EXCLUDED.sequence": a sequence never goes back. */
static const char SQL_UPDATE_SEQUENCES[] =
    "INSERT INTO factord.projected_sequences AS s (projection, instance_id, user_id, sequence)"
    " SELECT $1, r.i, r.u, r.s"
    "   FROM unnest($2::text[], $3::text[], $4::bigint[]) AS r(i, u, s)"
    "  ORDER BY r.i, r.u"
    " ON CONFLICT (projection, instance_id, user_id) DO UPDATE"
    "    SET sequence = EXCLUDED.sequence, updated_at = now()"
    "  WHERE s.sequence < EXCLUDED.sequence";

/* The rows' places found by one primary-key probe each (LIMIT 1 keeps the
 * LATERAL subquery a probe: it cannot become a join), then deleted by
 * place (a TID scan), for the reason given above. */
static const char SQL_DELETE_FACTORS[] =
    "DELETE FROM factord.auth_factors"
    " WHERE ctid = ANY (ARRAY("
    "   SELECT f.ctid FROM unnest($1::text[], $2::text[], $3::text[]) AS r(i, u, t)"
    "    CROSS JOIN LATERAL (SELECT f.ctid FROM factord.auth_factors f"
    "                         WHERE f.instance_id = r.i AND f.user_id = r.u AND f.type = r.t"
    "                         LIMIT 1) AS f))";

/* An existing row keeps its created_at: the factor was added then. */
static const char SQL_PUT_FACTORS[] =
    "INSERT INTO factord.auth_factors AS f (instance_id, user_id, type, state, sequence,"
    "    created_at, changed_at, resource_owner)"
    " SELECT r.i, r.u, r.t, r.state, r.s, r.created, r.changed, r.owner"
    "   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],"
    "    $6::timestamptz[], $7::timestamptz[], $8::text[])"
    "     AS r(i, u, t, state, s, created, changed, owner)"
    "  ORDER BY r.i, r.u, r.t"
    " ON CONFLICT (instance_id, user_id, type) DO UPDATE SET state = EXCLUDED.state,"
    "    sequence = EXCLUDED.sequence, changed_at = EXCLUDED.changed_at,"
    "    resource_owner = EXCLUDED.resource_owner";

/* Command ids are global keys; the instance is matched too, so an event of
 * one instance can never reply on another's command. */
static const char SQL_REPLY_TOPICS[] =
    "SELECT c.id::text, c.reply_to, c.http_status"
    "  FROM unnest($1::uuid[], $2::text[]) AS r(id, i)"
    " CROSS JOIN LATERAL (SELECT c.id, c.reply_to, c.http_status FROM factord.commands c"
    "                      WHERE c.id = r.id AND c.instance_id = r.i LIMIT 1) AS c";

/* The user read model (projections/user_views.h). Its rows are loaded only
 * for users whose applied-sequence rows the batch holds locked, so the load
 * takes no lock of its own; load, delete and put reach each row through
 * the primary key, as above. */
#define VIEW_COLS                                                                                       \
    "instance_id, user_id, resource_owner, state, user_name, first_name, last_name, nick_name,"       \
    " display_name, preferred_language, gender, email, email_verified, phone, phone_verified, sequence"

static const char SQL_LOAD_VIEWS[] =
    "SELECT v.instance_id, v.user_id, v.resource_owner, v.state, v.user_name, v.first_name, v.last_name,"
    "       v.nick_name, v.display_name, v.preferred_language, v.gender, v.email, v.email_verified, v.phone,"
    "       v.phone_verified, v.sequence, (extract(epoch FROM v.created_at) * 1000000)::bigint,"
    "       (extract(epoch FROM v.changed_at) * 1000000)::bigint"
    "  FROM unnest($1::text[], $2::text[]) AS r(i, u)"
    " CROSS JOIN LATERAL (SELECT * FROM factord.user_views v"
    "                      WHERE v.instance_id = r.i AND v.user_id = r.u LIMIT 1) AS v";

static const char SQL_DELETE_VIEWS[] =
    "DELETE FROM factord.user_views"
    " WHERE ctid = ANY (ARRAY("
    "   SELECT v.ctid FROM unnest($1::text[], $2::text[]) AS r(i, u)"
    "    CROSS JOIN LATERAL (SELECT v.ctid FROM factord.user_views v"
    "                         WHERE v.instance_id = r.i AND v.user_id = r.u LIMIT 1) AS v))";

/* Rows are written whole: the projector folded them from the stored row. */
static const char SQL_PUT_VIEWS[] =
    "INSERT INTO factord.user_views (" VIEW_COLS ", created_at, changed_at)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    "    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::bool[], $14::text[],"
    "    $15::bool[], $16::bigint[], $17::timestamptz[], $18::timestamptz[])"
    "     AS r(i, u, o, st, un, fn, ln, nn, dn, pl, g, em, ev, ph, pv, s, created, changed)"
    "  ORDER BY 1, 2"
    " ON CONFLICT (instance_id, user_id) DO UPDATE SET resource_owner = EXCLUDED.resource_owner,"
    "    state = EXCLUDED.state, user_name = EXCLUDED.user_name, first_name = EXCLUDED.first_name,"
    "    last_name = EXCLUDED.last_name, nick_name = EXCLUDED.nick_name,"
    "    display_name = EXCLUDED.display_name, preferred_language = EXCLUDED.preferred_language,"
    "    gender = EXCLUDED.gender, email = EXCLUDED.email, email_verified = EXCLUDED.email_verified,"
    "    phone = EXCLUDED.phone, phone_verified = EXCLUDED.phone_verified, sequence = EXCLUDED.sequence,"
    "    created_at = EXCLUDED.created_at, changed_at = EXCLUDED.changed_at";

static const char SQL_LIST_FACTORS[] =
    "SELECT instance_id, user_id, type, state, sequence,"
    "       (extract(epoch FROM created_at) * 1000000)::bigint,"
    "       (extract(epoch FROM changed_at) * 1000000)::bigint, resource_owner"
    "  FROM factord.auth_factors"
    " WHERE instance_id = $1 AND user_id = $2"
    " ORDER BY type";

enum { PROJSQL_COLS_MAX = 18 };

/* What each statement is: its SQL, whether the projection's name comes
 * first, its columns' types, what it returns, and its name in errors. */
typedef struct {
    const char *sql;
    bool named;
    int ncols;
    uint32_t oids[PROJSQL_COLS_MAX];
    ExecStatusType want;
    const char *what;
} projsql_def;

static const projsql_def projsql_defs[] = {
    [ES_PROJSQL_LOAD_SEQUENCES] = {SQL_LOAD_SEQUENCES, true, 2, {ES_PG_TEXT, ES_PG_TEXT}, PGRES_TUPLES_OK,
                                   "load sequences"},
    [ES_PROJSQL_INSERT_SEQUENCES] = {SQL_INSERT_SEQUENCES, true, 3, {ES_PG_TEXT, ES_PG_TEXT, ES_PG_INT8},
                                     PGRES_COMMAND_OK, "insert sequences"},
    [ES_PROJSQL_UPDATE_SEQUENCES] = {SQL_UPDATE_SEQUENCES, true, 3, {ES_PG_TEXT, ES_PG_TEXT, ES_PG_INT8},
                                     PGRES_COMMAND_OK, "update sequences"},
    [ES_PROJSQL_DELETE_FACTORS] = {SQL_DELETE_FACTORS, false, 3, {ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT},
                                   PGRES_COMMAND_OK, "delete auth factors"},
    [ES_PROJSQL_PUT_FACTORS] = {SQL_PUT_FACTORS, false, 8,
                                {ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_INT8, ES_PG_TIMESTAMPTZ,
                                 ES_PG_TIMESTAMPTZ, ES_PG_TEXT},
                                PGRES_COMMAND_OK, "put auth factors"},
    [ES_PROJSQL_REPLY_TOPICS] = {SQL_REPLY_TOPICS, false, 2, {ES_PG_UUID, ES_PG_TEXT}, PGRES_TUPLES_OK,
                                 "reply topics"},
    [ES_PROJSQL_LOAD_VIEWS] = {SQL_LOAD_VIEWS, false, 2, {ES_PG_TEXT, ES_PG_TEXT}, PGRES_TUPLES_OK,
                               "load user views"},
    [ES_PROJSQL_DELETE_VIEWS] = {SQL_DELETE_VIEWS, false, 2, {ES_PG_TEXT, ES_PG_TEXT}, PGRES_COMMAND_OK,
                                 "delete user views"},
    [ES_PROJSQL_PUT_VIEWS] = {SQL_PUT_VIEWS, false, 18,
                              {ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT,
                               ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_BOOL, ES_PG_TEXT,
                               ES_PG_BOOL, ES_PG_INT8, ES_PG_TIMESTAMPTZ, ES_PG_TIMESTAMPTZ},
                              PGRES_COMMAND_OK, "put user views"},
};

struct es_projsql {
    char *projection;
    es_projsql_stmt stmt;
    es_pga cols[PROJSQL_COLS_MAX]; /* the statement's columns, kept between batches */
    /* The user-view statements on another table than factord.user_views
     * (es_projsql_use_views_table): their SQL with its name; NULL: the
     * defaults. */
    char *view_sql[ES_PROJSQL_PUT_VIEWS + 1];
};

static bool is_view_stmt(es_projsql_stmt s)
{
    return s == ES_PROJSQL_LOAD_VIEWS || s == ES_PROJSQL_DELETE_VIEWS || s == ES_PROJSQL_PUT_VIEWS;
}

void es_projsql_use_views_table(es_projsql *q, const char *table)
{
    static const char live[] = "factord.user_views";
    for (int st = ES_PROJSQL_LOAD_VIEWS; st <= ES_PROJSQL_PUT_VIEWS; st++) {
        /* Each statement names the table once or twice; the name is one of
         * the caller's constants (an identifier), never data. */
        const char *tmpl = projsql_defs[st].sql;
        size_t cap = strlen(tmpl) * 2 + 3 * strlen(table) + 1, n = 0;
        char *out = malloc(cap);
        if (!out)
            abort();
        for (const char *at = tmpl; *at;) {
            const char *hit = strstr(at, live);
            size_t keep = hit ? (size_t)(hit - at) : strlen(at);
            memcpy(out + n, at, keep);
            n += keep;
            at += keep;
            if (hit) {
                n += (size_t)snprintf(out + n, cap - n, "factord.%s", table);
                at += sizeof live - 1;
            }
        }
        out[n] = '\0';
        free(q->view_sql[st]);
        q->view_sql[st] = out;
    }
}

es_projsql *es_projsql_new(const char *projection)
{
    es_projsql *q = calloc(1, sizeof *q);
    if (!q)
        abort();
    q->projection = strdup(projection);
    if (!q->projection)
        abort();
    return q;
}

void es_projsql_free(es_projsql *q)
{
    if (!q)
        return;
    for (int i = 0; i < PROJSQL_COLS_MAX; i++)
        es_pga_free(&q->cols[i]);
    for (size_t i = 0; i < sizeof q->view_sql / sizeof q->view_sql[0]; i++)
        free(q->view_sql[i]);
    free(q->projection);
    free(q);
}

void es_projsql_begin(es_projsql *q, es_projsql_stmt s)
{
    const projsql_def *d = &projsql_defs[s];
    q->stmt = s;
    es_pga_begin_all(q->cols, d->oids, (size_t)d->ncols);
}

size_t es_projsql_rows(const es_projsql *q) { return q->cols[0].n; }

/* Ids come from decoded events: valid UTF-8. Should one not be, the NULL
 * makes the statement refuse the batch (NOT NULL columns). */
static void projsql_text(es_pga *a, const char *v)
{
    if (!es_pga_text(a, v, SIZE_MAX))
        es_pga_null(a);
}

void es_projsql_add_key(es_projsql *q, const char *instance_id, const char *user_id)
{
    projsql_text(&q->cols[0], instance_id);
    projsql_text(&q->cols[1], user_id);
}

void es_projsql_add_seq(es_projsql *q, const char *instance_id, const char *user_id, int64_t sequence)
{
    projsql_text(&q->cols[0], instance_id);
    projsql_text(&q->cols[1], user_id);
    es_pga_i64(&q->cols[2], sequence);
}

void es_projsql_add_factor_key(es_projsql *q, const char *instance_id, const char *user_id, const char *type)
{
    projsql_text(&q->cols[0], instance_id);
    projsql_text(&q->cols[1], user_id);
    projsql_text(&q->cols[2], type);
}

void es_projsql_add_factor(es_projsql *q, const es_projsql_factor *f)
{
    projsql_text(&q->cols[0], f->instance_id);
    projsql_text(&q->cols[1], f->user_id);
    projsql_text(&q->cols[2], f->type);
    projsql_text(&q->cols[3], f->state);
    es_pga_i64(&q->cols[4], f->sequence);
    es_pga_time(&q->cols[5], f->created_at_us);
    es_pga_time(&q->cols[6], f->changed_at_us);
    projsql_text(&q->cols[7], f->resource_owner);
}

bool es_projsql_add_command(es_projsql *q, const char *command_id, const char *instance_id)
{
    if (!es_pga_uuid(&q->cols[0], command_id))
        return false;
    projsql_text(&q->cols[1], instance_id);
    return true;
}

void es_projsql_add_view(es_projsql *q, const es_projsql_view *v)
{
    const dom_import *h = v->human;
    const char *text[] = {v->instance_id, v->user_id, v->resource_owner, v->state, h->user_name,
                          h->first_name, h->last_name, h->nick_name, h->display_name, h->preferred_language,
                          h->gender, h->email};
    size_t c = 0;
    for (; c < sizeof text / sizeof text[0]; c++)
        projsql_text(&q->cols[c], text[c]);
    es_pga_bool(&q->cols[c++], h->is_email_verified);
    projsql_text(&q->cols[c++], h->phone);
    es_pga_bool(&q->cols[c++], h->is_phone_verified);
    es_pga_i64(&q->cols[c++], v->sequence);
    es_pga_time(&q->cols[c++], v->created_at_us);
    es_pga_time(&q->cols[c], v->changed_at_us);
}

/* Send the begun statement with its rows; *res for the caller to PQclear
 * (NULL when there were no rows: nothing was sent). */
static es_result projsql_run(es_projsql *q, es_store *st, PGresult **res, es_error *err)
{
    const projsql_def *d = &projsql_defs[q->stmt];
    const char *fixed[PROJSQL_COLS_MAX + 1] = {q->projection}; /* the rest NULL: arrays */
    const char *values[PROJSQL_COLS_MAX + 1];
    int lengths[PROJSQL_COLS_MAX + 1], formats[PROJSQL_COLS_MAX + 1];
    int n = d->ncols + (d->named ? 1 : 0);
    *res = NULL;
    if (!q->cols[0].n)
        return ES_OK;
    es_pga_params(n, d->named ? fixed : NULL, q->cols, values, lengths, formats);
    const char *sql = is_view_stmt(q->stmt) && q->view_sql[q->stmt] ? q->view_sql[q->stmt] : d->sql;
    return es_store_exec_bin(st, d->what, sql, n, values, lengths, formats, d->want, res, err);
}

es_result es_projsql_load_sequences(es_projsql *q, es_store *st, es_projsql_seq_fn row, void *arg, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = projsql_run(q, st, &res, err);
    for (int r = 0; rc == ES_OK && res && r < PQntuples(res); r++)
        rc = row(arg, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), strtoll(PQgetvalue(res, r, 2), NULL, 10),
                 err);
    PQclear(res);
    return rc;
}

void es_projsql_read_human(const PGresult *res, int row, int col, dom_import *h)
{
    char *const dst[] = {h->user_name, h->first_name, h->last_name, h->nick_name, h->display_name,
                         h->preferred_language, h->gender, h->email};
    const size_t size[] = {sizeof h->user_name, sizeof h->first_name, sizeof h->last_name,
                           sizeof h->nick_name, sizeof h->display_name, sizeof h->preferred_language,
                           sizeof h->gender, sizeof h->email};
    int c = 0;
    for (; c < 8; c++)
        snprintf(dst[c], size[c], "%s", PQgetvalue(res, row, col + c));
    h->is_email_verified = PQgetvalue(res, row, col + c++)[0] == 't';
    snprintf(h->phone, sizeof h->phone, "%s", PQgetvalue(res, row, col + c++));
    h->is_phone_verified = PQgetvalue(res, row, col + c)[0] == 't';
}

es_result es_projsql_load_views(es_projsql *q, es_store *st, es_projsql_view_fn row, void *arg, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = projsql_run(q, st, &res, err);
    dom_import *h = rc == ES_OK && res ? calloc(1, sizeof *h) : NULL;
    if (rc == ES_OK && res && !h)
        abort();
    for (int r = 0; rc == ES_OK && res && r < PQntuples(res); r++) {
        es_projsql_read_human(res, r, 4, h);
        es_projsql_view v = {.instance_id = PQgetvalue(res, r, 0),
                             .user_id = PQgetvalue(res, r, 1),
                             .resource_owner = PQgetvalue(res, r, 2),
                             .state = PQgetvalue(res, r, 3),
                             .human = h,
                             .sequence = strtoll(PQgetvalue(res, r, 15), NULL, 10),
                             .created_at_us = strtoll(PQgetvalue(res, r, 16), NULL, 10),
                             .changed_at_us = strtoll(PQgetvalue(res, r, 17), NULL, 10)};
        rc = row(arg, &v, err);
    }
    free(h);
    PQclear(res);
    return rc;
}

es_result es_projsql_write(es_projsql *q, es_store *st, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = projsql_run(q, st, &res, err);
    PQclear(res);
    return rc;
}

es_result es_projsql_reply_topics(es_projsql *q, es_store *st, es_projsql_topic_fn row, void *arg,
                                  es_error *err)
{
    PGresult *res = NULL;
    es_result rc = projsql_run(q, st, &res, err);
    for (int r = 0; rc == ES_OK && res && r < PQntuples(res); r++)
        row(arg, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), atoi(PQgetvalue(res, r, 2)));
    PQclear(res);
    return rc;
}

es_result es_projsql_list_factors(es_store *st, const char *instance_id, const char *user_id, size_t max,
                                  es_projsql_factor_fn row, void *arg, es_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {instance_id, user_id};
    es_result rc = es_store_exec(st, "list auth factors", SQL_LIST_FACTORS, 2, params, PGRES_TUPLES_OK, &res, err);
    for (int r = 0; rc == ES_OK && r < PQntuples(res) && (size_t)r < max; r++) {
        es_projsql_factor f = {.instance_id = PQgetvalue(res, r, 0),
                               .user_id = PQgetvalue(res, r, 1),
                               .type = PQgetvalue(res, r, 2),
                               .state = PQgetvalue(res, r, 3),
                               .sequence = strtoll(PQgetvalue(res, r, 4), NULL, 10),
                               .created_at_us = strtoll(PQgetvalue(res, r, 5), NULL, 10),
                               .changed_at_us = strtoll(PQgetvalue(res, r, 6), NULL, 10),
                               .resource_owner = PQgetvalue(res, r, 7)};
        rc = row(arg, &f, err);
    }
    PQclear(res);
    return rc;
}
