/*
 * infra/pg/readmodel.c - read-model queries for the gateway (see
 * readmodel.h).
 */
#include "infra/pg/readmodel.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/pg/projection_sql.h"
#include "infra/pg/store.h"


struct es_readmodel {
    PGconn *conn;
};

es_readmodel *es_readmodel_connect(const char *conninfo)
{
    const char *kw[4] = {NULL}, *val[4] = {NULL};
    int i = 0;
    if (conninfo) {
        kw[i] = "dbname"; /* expanded: a URI or key=value string */
        val[i++] = conninfo;
    }
    kw[i] = "connect_timeout";
    val[i++] = "3";
    kw[i] = "application_name";
    val[i++] = "factord-gateway";
    PGconn *c = PQconnectdbParams(kw, val, 1);
    PGresult *r = NULL;
    if (PQstatus(c) != CONNECTION_OK)
        goto fail;
    r = PQexec(c, "SET statement_timeout = 2000");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(r);
    es_readmodel *rm = calloc(1, sizeof *rm);
    if (!rm)
        abort();
    rm->conn = c;
    return rm;
fail:
    PQclear(r);
    PQfinish(c);
    return NULL;
}

void es_readmodel_free(es_readmodel *rm)
{
    if (!rm)
        return;
    PQfinish(rm->conn);
    free(rm);
}

bool es_readmodel_usable(const es_readmodel *rm) { return rm && PQstatus(rm->conn) == CONNECTION_OK; }

bool es_readmodel_ping(es_readmodel **rm, const char *conninfo)
{
    if (*rm && !es_readmodel_usable(*rm)) {
        es_readmodel_free(*rm);
        *rm = NULL;
    }
    if (!*rm && !(*rm = es_readmodel_connect(conninfo)))
        return false;
    PGresult *r = PQexec((*rm)->conn, "SELECT 1");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static void copy_col(char *dst, size_t size, const PGresult *r, int row, int col)
{
    snprintf(dst, size, "%s", PQgetvalue(r, row, col));
}

/* A failed query: ES_ETRANSIENT with its text and SQLSTATE. */
static es_result query_failed(es_readmodel *rm, PGresult *r, const char *what, es_error *err)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    es_error_set(err, ES_ETRANSIENT, "%s: %s", what, PQerrorMessage(rm->conn));
    if (err)
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state ? state : "");
    PQclear(r);
    return ES_ETRANSIENT;
}

es_result es_readmodel_auth_factors(es_readmodel *rm, const char *instance_id, const char *user_id,
                                    es_user_auth_factors *out, es_error *err)
{
    enum { COL_STATUS, COL_OWNER, COL_TYPE, COL_STATE };
    memset(out, 0, sizeof *out);
    const char *params[] = {instance_id, user_id};
    PGresult *r = PQexecParams(rm->conn,
                               "SELECT u.status, u.resource_owner, f.type, f.state "
                               "FROM factord.users u LEFT JOIN factord.auth_factors f "
                               "ON f.instance_id = u.instance_id AND f.user_id = u.user_id "
                               "WHERE u.instance_id = $1 AND u.user_id = $2 ORDER BY f.type",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return query_failed(rm, r, "auth factors of a user", err);
    int n = PQntuples(r);
    if (n > 0) {
        out->found = true;
        copy_col(out->status, sizeof out->status, r, 0, COL_STATUS);
        copy_col(out->resource_owner, sizeof out->resource_owner, r, 0, COL_OWNER);
    }
    for (int i = 0; i < n && out->n < ES_READMODEL_MAX_FACTORS; i++) {
        if (PQgetisnull(r, i, COL_TYPE))
            continue; /* the LEFT JOIN's row of a user without factors */
        es_auth_factor_row *f = &out->factors[out->n++];
        copy_col(f->type, sizeof f->type, r, i, COL_TYPE);
        copy_col(f->state, sizeof f->state, r, i, COL_STATE);
    }
    PQclear(r);
    return ES_OK;
}

es_result es_readmodel_user_view(es_readmodel *rm, const char *instance_id, const char *user_id,
                                 es_user_view_row *out, es_error *err)
{
    enum {
        COL_STATUS, COL_OWNER, COL_VIEW_OWNER, COL_STATE,
        COL_USER_NAME, /* the 11 columns es_projsql_read_human reads */
        COL_SEQUENCE = COL_USER_NAME + 11, COL_CREATED, COL_CHANGED
    };
    memset(out, 0, sizeof *out);
    const char *params[] = {instance_id, user_id};
    /* The write side says whether the caller may see the user at all (as
     * for ListMyAuthFactors); the read model what it shows. */
    PGresult *r = PQexecParams(rm->conn,
                               "SELECT u.status, u.resource_owner, v.resource_owner, v.state, v.user_name,"
                               "       v.first_name, v.last_name, v.nick_name, v.display_name,"
                               "       v.preferred_language, v.gender, v.email, v.email_verified, v.phone,"
                               "       v.phone_verified, v.sequence,"
                               "       (extract(epoch FROM v.created_at) * 1000000)::bigint,"
                               "       (extract(epoch FROM v.changed_at) * 1000000)::bigint"
                               "  FROM factord.users u LEFT JOIN factord.user_views v"
                               "    ON v.instance_id = u.instance_id AND v.user_id = u.user_id"
                               " WHERE u.instance_id = $1 AND u.user_id = $2",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return query_failed(rm, r, "user view", err);
    if (PQntuples(r) > 0) {
        out->found = true;
        copy_col(out->status, sizeof out->status, r, 0, COL_STATUS);
        copy_col(out->resource_owner, sizeof out->resource_owner, r, 0, COL_OWNER);
        out->has_view = !PQgetisnull(r, 0, COL_STATE);
    }
    if (out->has_view) {
        es_projsql_read_human(r, 0, COL_USER_NAME, &out->human);
        copy_col(out->view_owner, sizeof out->view_owner, r, 0, COL_VIEW_OWNER);
        copy_col(out->state, sizeof out->state, r, 0, COL_STATE);
        out->sequence = strtoll(PQgetvalue(r, 0, COL_SEQUENCE), NULL, 10);
        out->created_at_us = strtoll(PQgetvalue(r, 0, COL_CREATED), NULL, 10);
        out->changed_at_us = strtoll(PQgetvalue(r, 0, COL_CHANGED), NULL, 10);
    }
    PQclear(r);
    return ES_OK;
}

es_result es_readmodel_session_events(es_readmodel *rm, const char *instance_id, const char *session_id,
                                      es_session_event_fn fn, void *ctx, es_error *err)
{
    const char *params[] = {instance_id, session_id};
    /* The predicate "payload ? 'sessionId'" is the partial index's. */
    PGresult *r = PQexecParams(rm->conn,
                               "SELECT " ES_STORE_EVENT_COLUMNS ", coalesce(u.user_name, '')"
                               "  FROM factord.events e LEFT JOIN factord.users u"
                               "    ON u.instance_id = e.instance_id AND u.user_id = e.aggregate_id"
                               "   AND u.status <> 'removed'"
                               " WHERE e.instance_id = $1 AND e.payload ? 'sessionId'"
                               "   AND e.payload->>'sessionId' = $2 AND e.aggregate_type = 'user'"
                               " ORDER BY e.aggregate_id, e.sequence",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return query_failed(rm, r, "session", err);
    dom_evt *evt = malloc(sizeof *evt);
    if (!evt)
        abort();
    es_result rc = ES_OK;
    for (int i = 0; i < PQntuples(r) && rc == ES_OK; i++)
        if ((rc = es_store_row_event(r, i, 0, evt, err)) == ES_OK)
            fn(ctx, evt, PQgetvalue(r, i, ES_STORE_EVENT_NCOLUMNS));
    free(evt);
    PQclear(r);
    return rc;
}

es_result es_readmodel_user_by_login_name(es_readmodel *rm, const char *instance_id, const char *login_name,
                                          bool *found, char user_id[DOM_ID_MAX], es_error *err)
{
    *found = false;
    user_id[0] = '\0';
    const char *params[] = {instance_id, login_name};
    /* users_user_name_key's expression and predicate. */
    PGresult *r = PQexecParams(rm->conn,
                               "SELECT user_id FROM factord.users"
                               " WHERE instance_id = $1 AND lower(user_name) = lower($2) AND status <> 'removed'",
                               2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return query_failed(rm, r, "user by login name", err);
    if (PQntuples(r) == 1) {
        *found = true;
        copy_col(user_id, DOM_ID_MAX, r, 0, 0);
    }
    PQclear(r);
    return ES_OK;
}
