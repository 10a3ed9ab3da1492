/*
 * infra/pg/logread.c - the auditor's reads of the event log over libpq
 * (logread.h).
 *
 * One scan engine serves the three scans: it sends the first page's query,
 * and for every page that arrives sends the next one (keyset: after the
 * page's last key) before handing the page's rows to the visitor, so the
 * server reads page k+1 while the caller checks page k. A scan stopped by
 * its caller drains the query still in flight, so the connection can run
 * the next statement.
 */
#include "infra/pg/logread.h"

#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/util.h"
#include "infra/pg/piikeys.h"

struct es_logread {
    PGconn *conn;
    const es_pii_master *pii; /* the store's personal-data master key, or NULL */
    bool own_conn;   /* a shared reader's connection, finished by es_logread_end */
};

/* --- statements ------------------------------------------------------------------ */

static int logread_msg_len(const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return n > 400 ? 400 : (int)n;
}

static es_result logread_fail(PGconn *conn, const PGresult *res, const char *what, es_error *err)
{
    const char *msg = res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    es_result rc = PQstatus(conn) == CONNECTION_BAD ? ES_ETRANSIENT : ES_EFATAL;
    es_error_set(err, rc, "%s: %.*s", what, logread_msg_len(msg), msg);
    if (err && state)
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state);
    return rc;
}

static es_result logread_simple(PGconn *conn, const char *sql, const char *what, es_error *err)
{
    PGresult *res = PQexec(conn, sql);
    es_result rc = ES_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = logread_fail(conn, res, what, err);
    PQclear(res);
    return rc;
}

/* One snapshot for the whole run. */
static es_result logread_tx_begin(PGconn *conn, es_error *err)
{
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return es_error_set(err, ES_EINVAL, "audit: a transaction is open on this connection");
    return logread_simple(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "begin", err);
}

static void logread_tx_end(PGconn *conn)
{
    if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
}

static es_result logread_send(PGconn *conn, const char *sql, int n, const char *const *params,
                              const char *what, es_error *err)
{
    if (!PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0))
        return logread_fail(conn, NULL, what, err);
    return ES_OK;
}

/* The result of the query in flight (and nothing after it). */
static es_result logread_receive(PGconn *conn, const char *what, PGresult **out, es_error *err)
{
    PGresult *res = PQgetResult(conn), *extra;
    es_result rc = ES_OK;
    while ((extra = PQgetResult(conn)) != NULL)
        PQclear(extra);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = logread_fail(conn, res, what, err);
        PQclear(res);
        res = NULL;
    }
    *out = res;
    return rc;
}

static void logread_drain(PGconn *conn)
{
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
}

/* --- readers ---------------------------------------------------------------------- */

static es_logread *logread_new(PGconn *conn, bool own_conn)
{
    es_logread *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->conn = conn;
    r->own_conn = own_conn;
    return r;
}

es_result es_logread_begin(es_store *st, es_logread **out, es_error *err)
{
    PGconn *conn = es_store_conn(st);
    *out = NULL;
    es_result rc = logread_tx_begin(conn, err);
    if (rc == ES_OK) {
        *out = logread_new(conn, false);
        (*out)->pii = es_store_pii_master(st);
    }
    return rc;
}

void es_logread_end(es_logread *r)
{
    if (!r)
        return;
    logread_tx_end(r->conn);
    if (r->own_conn)
        PQfinish(r->conn);
    free(r);
}

/* A second connection like conn, in a transaction on conn's snapshot;
 * NULL when that cannot be had. */
static PGconn *logread_second_conn(PGconn *conn)
{
    PQconninfoOption *opts = PQconninfo(conn);
    PGconn *c2 = NULL;
    PGresult *res = NULL;
    char sql[160];
    if (!opts)
        return NULL;
    const char *keys[64], *vals[64];
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword && n < 62; o++)
        if (o->val && *o->val) {
            keys[n] = o->keyword;
            vals[n++] = o->val;
        }
    keys[n] = vals[n] = NULL;
    c2 = PQconnectdbParams(keys, vals, 0);
    PQconninfoFree(opts);
    if (!c2 || PQstatus(c2) != CONNECTION_OK)
        goto fail;
    res = PQexec(conn, "SELECT pg_export_snapshot()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        goto fail;
    /* The id is the server's own [0-9A-F-] text: safe to splice. */
    snprintf(sql, sizeof sql,
             "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '%.64s'",
             PQgetvalue(res, 0, 0));
    PQclear(res);
    res = PQexec(c2, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        goto fail;
    PQclear(res);
    return c2;
fail:
    PQclear(res);
    PQfinish(c2);
    return NULL;
}

es_result es_logread_share(es_logread *r, es_logread **out, es_error *err)
{
    PGconn *c2 = logread_second_conn(r->conn);
    *out = NULL;
    if (c2) {
        *out = logread_new(c2, true);
        (*out)->pii = r->pii;
        return ES_OK;
    }
    if (PQtransactionStatus(r->conn) != PQTRANS_INERROR)
        return ES_OK;
    logread_tx_end(r->conn);
    return logread_tx_begin(r->conn, err);
}

/* --- the position counter ---------------------------------------------------------- */

es_result es_logread_counter(es_logread *r, es_log_counter *c, es_error *err)
{
    es_result rc = ES_OK;
    memset(c, 0, sizeof *c);
    PGresult *res = PQexec(r->conn, "SELECT value, head_position, encode(head_hash, 'hex'), chain_start"
                                    "  FROM factord.position_counter WHERE id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = logread_fail(r->conn, res, "verify: the chain head (is the schema migrated?)", err);
        goto out;
    }
    c->valid = PQntuples(res) == 1 && es_parse_i64(PQgetvalue(res, 0, 0), &c->value) &&
               es_parse_i64(PQgetvalue(res, 0, 1), &c->head_position) &&
               es_chain_unhex(PQgetvalue(res, 0, 2), c->head_hash, sizeof c->head_hash) &&
               es_parse_i64(PQgetvalue(res, 0, 3), &c->chain_start);
    PQclear(res);
    /* The rewrites' record exists from migration 0017 on (docs/pii.md). */
    res = PQexec(r->conn, "SELECT to_regclass('factord.pii_rewrites') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = logread_fail(r->conn, res, "verify: the rewrites' record", err);
        goto out;
    }
    if (PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't') {
        PQclear(res);
        res = PQexec(r->conn, "SELECT count(*) FROM factord.pii_rewrites");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = logread_fail(r->conn, res, "verify: the rewrites' record", err);
            goto out;
        }
        if (PQntuples(res) != 1 || !es_parse_i64(PQgetvalue(res, 0, 0), &c->pii_rewrites))
            c->valid = false;
    }
out:
    PQclear(res);
    return rc;
}

/* --- the scan engine ----------------------------------------------------------------- */

typedef enum { SCAN_CHAIN, SCAN_USERS, SCAN_REPLAY } logread_kind;

/* Columns after the event's (ES_STORE_EVENT_COLUMNS) in each scan. */
enum { CHAIN_HASH = ES_STORE_EVENT_NCOLUMNS, CHAIN_AGGTYPE };
enum { REPLAY_HASH = ES_STORE_EVENT_NCOLUMNS, REPLAY_KEY };
enum { USERS_HAS = ES_STORE_EVENT_NCOLUMNS, USERS_USER, USERS_KEY = USERS_USER + ES_STORE_USER_NCOLUMNS };
/* The user's factord.pii_keys row beside each event of the replay and
 * users scans (docs/pii.md): whether there is one, the wrapped key in hex
 * (NULL: a tombstone), the master key's id. */
#define LOGREAD_KEY_COLUMNS ", k.found IS NOT NULL, encode(k.wrapped, 'hex'), k.master_id"
#define LOGREAD_KEY_JOIN                                                                         \
    " LEFT JOIN LATERAL (SELECT true AS found, k.wrapped, k.master_id FROM factord.pii_keys k"  \
    "   WHERE k.instance_id = e.instance_id AND k.user_id = e.aggregate_id LIMIT 1) AS k ON true"

typedef struct {
    logread_kind kind;
    const es_pii_master *pii;  /* replay and users scans: opens sealed personal data */
    const char *what;          /* names the statement in errors */
    const char *first_sql;     /* the first page */
    int n_first;
    const char *next_sql;      /* the pages after it */
    int n_next;
    const char *const *params; /* both statements' parameters */
    char *after;               /* SCAN_CHAIN, SCAN_REPLAY: params' keyset position */
    size_t after_len;
    char *key_instance, *key_user, *key_sequence; /* SCAN_USERS: params' keyset */
    /* SCAN_USERS: the previous row's user, to decode each user's row once */
    char prev_instance[DOM_ID_MAX], prev_user[DOM_ID_MAX];
    bool prev_valid;
} logread_scan;

/* Point the parameters at the key after row n - 1 of res. */
static void scan_next_key(logread_scan *s, const PGresult *res, int n)
{
    if (s->kind == SCAN_CHAIN) {
        snprintf(s->after, s->after_len, "%s", PQgetvalue(res, n - 1, ES_EVT_COL_POSITION));
    } else if (s->kind == SCAN_REPLAY) {
        int64_t last = 0;
        (void)es_parse_i64(PQgetvalue(res, n - 1, ES_EVT_COL_POSITION), &last);
        snprintf(s->after, s->after_len, "%" PRId64, last);
    } else {
        snprintf(s->key_instance, DOM_ID_MAX, "%s", PQgetvalue(res, n - 1, ES_EVT_COL_INSTANCE));
        snprintf(s->key_user, DOM_ID_MAX, "%s", PQgetvalue(res, n - 1, ES_EVT_COL_AGGREGATE));
        snprintf(s->key_sequence, 24, "%s", PQgetvalue(res, n - 1, ES_EVT_COL_SEQUENCE));
    }
}

/* A decoded event's sealed personal data opened with the key row read
 * beside it (LOGREAD_KEY_COLUMNS from column base), or marked erased; a
 * failure becomes the row's decode error. */
static void scan_open(const logread_scan *s, const PGresult *res, int r, int base, es_log_row *row)
{
    if (row->decoded != ES_OK)
        return;
    bool has_row = PQgetvalue(res, r, base)[0] == 't';
    const char *hex = PQgetisnull(res, r, base + 1) ? NULL : PQgetvalue(res, r, base + 1);
    row->decoded = es_piikeys_open_row(s->pii, &row->evt, has_row, hex, PQgetvalue(res, r, base + 2),
                                       &row->decode_err);
}

static void scan_row(logread_scan *s, const PGresult *res, int r, es_log_row *row)
{
    row->position_ok = es_parse_i64(PQgetvalue(res, r, ES_EVT_COL_POSITION), &row->position);
    row->instance_id = PQgetvalue(res, r, ES_EVT_COL_INSTANCE);
    row->aggregate_id = PQgetvalue(res, r, ES_EVT_COL_AGGREGATE);
    row->type = PQgetvalue(res, r, ES_EVT_COL_TYPE);
    row->payload = PQgetvalue(res, r, ES_EVT_COL_PAYLOAD);
    row->aggregate_type = NULL;
    row->hash_hex = NULL;
    row->decode_err.text[0] = '\0';
    row->decode_err.sqlstate[0] = '\0';
    row->decoded = es_store_row_event(res, r, 0, &row->evt, &row->decode_err);
    row->has_user = false;
    row->user_decoded = false;
    row->user_rc = ES_OK;
    switch (s->kind) {
    case SCAN_CHAIN:
        row->aggregate_type = PQgetvalue(res, r, CHAIN_AGGTYPE);
        if (!PQgetisnull(res, r, CHAIN_HASH))
            row->hash_hex = PQgetvalue(res, r, CHAIN_HASH);
        break;
    case SCAN_REPLAY:
        if (!PQgetisnull(res, r, REPLAY_HASH))
            row->hash_hex = PQgetvalue(res, r, REPLAY_HASH);
        scan_open(s, res, r, REPLAY_KEY, row);
        break;
    case SCAN_USERS: {
        /* Every event of one user carries the same users row (one
         * snapshot): decode it on the user's first event only. */
        bool first = !s->prev_valid || strcmp(s->prev_instance, row->instance_id) != 0 ||
                     strcmp(s->prev_user, row->aggregate_id) != 0;
        s->prev_valid = strlen(row->instance_id) < sizeof s->prev_instance &&
                        strlen(row->aggregate_id) < sizeof s->prev_user;
        if (s->prev_valid) {
            strcpy(s->prev_instance, row->instance_id);
            strcpy(s->prev_user, row->aggregate_id);
        }
        row->has_user = PQgetvalue(res, r, USERS_HAS)[0] == 't';
        scan_open(s, res, r, USERS_KEY, row);
        if (first && row->has_user) {
            row->user_decoded = true;
            row->user_err.text[0] = '\0';
            row->user_err.sqlstate[0] = '\0';
            row->user_rc = es_store_row_user(res, r, USERS_USER, &row->user, &row->user_err);
        }
        break;
    }
    }
}

static es_result logread_scan_run(PGconn *conn, logread_scan *s, size_t page, es_log_row_fn row_fn,
                                  es_log_page_fn page_fn, void *arg, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    bool in_flight = false;
    es_log_row *row = malloc(sizeof *row);
    if (!row)
        abort();

    if ((rc = logread_send(conn, s->first_sql, s->n_first, s->params, s->what, err)) != ES_OK)
        goto out;
    in_flight = true;
    for (;;) {
        in_flight = false;
        if ((rc = logread_receive(conn, s->what, &res, err)) != ES_OK)
            goto out;
        int n = PQntuples(res);
        int64_t last = 0;
        if (n > 0 && s->kind != SCAN_USERS)
            (void)es_parse_i64(PQgetvalue(res, n - 1, ES_EVT_COL_POSITION), &last);
        if ((size_t)n == page) {
            scan_next_key(s, res, n);
            if ((rc = logread_send(conn, s->next_sql, s->n_next, s->params, s->what, err)) != ES_OK)
                goto out;
            in_flight = true;
        }
        for (int r = 0; r < n; r++) {
            scan_row(s, res, r, row);
            if (!row_fn(arg, row))
                goto out;
        }
        PQclear(res);
        res = NULL;
        if (page_fn && !page_fn(arg, (size_t)n, last))
            goto out;
        if (!in_flight)
            break;
    }
out:
    PQclear(res);
    if (in_flight)
        logread_drain(conn);
    free(row);
    return rc;
}

/* --- the chain scan ----------------------------------------------------------------- */

#define LOGREAD_CHAIN_SQL                                                                        \
    "SELECT " ES_STORE_EVENT_COLUMNS ", encode(e.hash, 'hex'), e.aggregate_type"                \
    "  FROM factord.events e WHERE e.position > $1::bigint ORDER BY e.position LIMIT $2::bigint"

es_result es_logread_chain(es_logread *r, int64_t after, size_t page, es_log_row_fn row,
                           es_log_page_fn page_done, void *arg, es_error *err)
{
    char after_s[24], page_s[24];
    snprintf(page_s, sizeof page_s, "%zu", page);
    snprintf(after_s, sizeof after_s, "%" PRId64, after > 0 ? after : 0);
    const char *params[] = {after_s, page_s};
    logread_scan s = {.kind = SCAN_CHAIN, .what = "verify: read events",
                      .first_sql = LOGREAD_CHAIN_SQL, .n_first = 2,
                      .next_sql = LOGREAD_CHAIN_SQL, .n_next = 2,
                      .params = params, .after = after_s, .after_len = sizeof after_s};
    return logread_scan_run(r->conn, &s, page, row, page_done, arg, err);
}

/* --- the users scan ----------------------------------------------------------------- */

/* ES_STORE_USER_COLUMNS qualified by the alias u, after an event's columns
 * and whether the user has a row (u.user_id IS NOT NULL). */
#define LOGREAD_USER_COLUMNS                                                                     \
    " u.instance_id, u.user_id, u.resource_owner, u.user_name, u.status, u.sequence, u.phone,"  \
    " u.phone_verified, u.verified_phone, u.otp_sms, u.code_enc,"                               \
    " (extract(epoch FROM u.code_expires_at) * 1000000)::bigint,"                               \
    " (extract(epoch FROM u.created_at) * 1000000)::bigint,"                                    \
    " (extract(epoch FROM u.changed_at) * 1000000)::bigint,"                                    \
    " u.otp_code_enc, (extract(epoch FROM u.otp_code_expires_at) * 1000000)::bigint,"          \
    " u.otp_failed, u.otp_code_session"

/* Events in key order with the user's row beside each, found by one
 * primary-key probe per event (LIMIT 1 keeps the LATERAL subquery a probe,
 * whatever the statistics of a just-rebuilt table). The users columns are
 * ES_STORE_USER_COLUMNS qualified by the join's alias. */
#define LOGREAD_USERS_SELECT                                                                     \
    "SELECT " ES_STORE_EVENT_COLUMNS ", u.user_id IS NOT NULL,"                                 \
    LOGREAD_USER_COLUMNS LOGREAD_KEY_COLUMNS                                                     \
    "  FROM factord.events e LEFT JOIN LATERAL (SELECT * FROM factord.users u"                  \
    "    WHERE u.instance_id = e.instance_id AND u.user_id = e.aggregate_id LIMIT 1) AS u ON true" \
    LOGREAD_KEY_JOIN
#define LOGREAD_USERS_ORDER                                                                      \
    " ORDER BY e.instance_id, e.aggregate_type, e.aggregate_id, e.sequence LIMIT $1::bigint"
#define LOGREAD_USERS_FIRST_SQL LOGREAD_USERS_SELECT LOGREAD_USERS_ORDER
#define LOGREAD_USERS_NEXT_SQL                                                                   \
    LOGREAD_USERS_SELECT                                                                         \
    " WHERE (e.instance_id, e.aggregate_type, e.aggregate_id, e.sequence)"                      \
    "     > ($2, 'user', $3, $4::bigint)" LOGREAD_USERS_ORDER

es_result es_logread_users(es_logread *r, size_t page, es_log_row_fn row, es_log_page_fn page_done,
                           void *arg, es_error *err)
{
    char page_s[24], inst[DOM_ID_MAX], user[DOM_ID_MAX], seq[24];
    snprintf(page_s, sizeof page_s, "%zu", page);
    const char *params[] = {page_s, inst, user, seq};
    logread_scan *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->kind = SCAN_USERS;
    s->pii = r->pii;
    s->what = "verify: read users' events";
    s->first_sql = LOGREAD_USERS_FIRST_SQL;
    s->n_first = 1;
    s->next_sql = LOGREAD_USERS_NEXT_SQL;
    s->n_next = 4;
    s->params = params;
    s->key_instance = inst;
    s->key_user = user;
    s->key_sequence = seq;
    es_result rc = logread_scan_run(r->conn, s, page, row, page_done, arg, err);
    free(s);
    return rc;
}

/* The users with an event above $1 (found through the position index,
 * sorted once), each joined to all its events through the primary key and
 * to its row, in key order. The LATERAL keeps the per-user probe a probe
 * (as a plain join the planner hashed the whole log); the order is the
 * users' order, which the nested loop keeps, then each user's sequence: an
 * incremental sort of one user's events at a time, so the rows stream. */
#define LOGREAD_SINCE_SQL                                                                        \
    "DECLARE factord_verify_since NO SCROLL CURSOR FOR"                                          \
    " SELECT " ES_STORE_EVENT_COLUMNS ", u.user_id IS NOT NULL,"                                \
    LOGREAD_USER_COLUMNS LOGREAD_KEY_COLUMNS                                                     \
    "  FROM (SELECT DISTINCT t.instance_id, t.aggregate_type, t.aggregate_id"                   \
    "          FROM factord.events t WHERE t.position > $1::bigint ORDER BY 1, 2, 3) AS w"       \
    " CROSS JOIN LATERAL (SELECT * FROM factord.events e0 WHERE e0.instance_id = w.instance_id"  \
    "     AND e0.aggregate_type = w.aggregate_type AND e0.aggregate_id = w.aggregate_id"         \
    "     ORDER BY e0.sequence) AS e"                                                            \
    " LEFT JOIN LATERAL (SELECT * FROM factord.users u"                                          \
    "    WHERE u.instance_id = e.instance_id AND u.user_id = e.aggregate_id LIMIT 1) AS u ON true" \
    LOGREAD_KEY_JOIN                                                                             \
    " ORDER BY w.instance_id, w.aggregate_type, w.aggregate_id, e.sequence"

es_result es_logread_users_since(es_logread *r, int64_t after, size_t page, es_log_row_fn row,
                                 es_log_page_fn page_done, void *arg, es_error *err)
{
    char after_s[24], fetch[64], inst[DOM_ID_MAX], user[DOM_ID_MAX], seq[24];
    es_result rc = ES_OK;
    snprintf(after_s, sizeof after_s, "%" PRId64, after > 0 ? after : 0);
    /* A cursor in the reader's snapshot, read a page at a time: one pass
     * over the events above after and the touched users' histories. Keyset
     * pages would find the touched users again for every page (the events
     * above after read each time: quadratic in a large append). The cursor
     * is planned for its whole result, not for its first rows. */
    if ((rc = logread_simple(r->conn, "SET LOCAL cursor_tuple_fraction = 1", "verify: plan the users' read",
                             err)) != ES_OK)
        return rc;
    const char *params[] = {after_s};
    PGresult *res = PQexecParams(r->conn, LOGREAD_SINCE_SQL, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = logread_fail(r->conn, res, "verify: the users touched since the checkpoint", err);
    PQclear(res);
    if (rc != ES_OK)
        return rc;
    /* The page size is our own number: safe to splice (FETCH takes no
     * parameters). */
    snprintf(fetch, sizeof fetch, "FETCH FORWARD %zu FROM factord_verify_since", page);
    logread_scan *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    s->kind = SCAN_USERS;
    s->pii = r->pii;
    s->what = "verify: read the events of the users touched since the checkpoint";
    s->first_sql = fetch;
    s->next_sql = fetch;
    s->key_instance = inst; /* the keyset the engine keeps is unused here */
    s->key_user = user;
    s->key_sequence = seq;
    rc = logread_scan_run(r->conn, s, page, row, page_done, arg, err);
    free(s);
    if (rc == ES_OK && PQtransactionStatus(r->conn) == PQTRANS_INTRANS)
        rc = logread_simple(r->conn, "CLOSE factord_verify_since", "verify: close the users' cursor", err);
    return rc;
}

es_result es_logread_event_hash(es_logread *r, int64_t pos, bool *found, bool *chained,
                                unsigned char hash[ES_CHAIN_HASH_LEN], es_error *err)
{
    char pos_s[24];
    es_result rc = ES_OK;
    snprintf(pos_s, sizeof pos_s, "%" PRId64, pos);
    const char *params[] = {pos_s};
    *found = *chained = false;
    PGresult *res = PQexecParams(r->conn, "SELECT encode(hash, 'hex') FROM factord.events WHERE position = $1::bigint",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = logread_fail(r->conn, res, "verify: the event at the checkpoint", err);
        goto out;
    }
    if (PQntuples(res) == 1) {
        *found = true;
        *chained = !PQgetisnull(res, 0, 0) && es_chain_unhex(PQgetvalue(res, 0, 0), hash, ES_CHAIN_HASH_LEN);
    }
out:
    PQclear(res);
    return rc;
}

es_result es_logread_user_without_events(es_logread *r, bool *found, es_log_user_key *who,
                                         es_error *err)
{
    es_result rc = ES_OK;
    *found = false;
    /* One primary-key probe of the events per user. Written as NOT EXISTS,
     * the plan followed the statistics: on a users table a rebuild had just
     * swapped in (none yet) it became a nested loop over a sequential scan
     * of every event, and verify ran for minutes on 1,000,000 events.
     * LIMIT 1 keeps the LATERAL probe a probe. */
    PGresult *res = PQexec(r->conn, "SELECT u.instance_id, u.user_id FROM factord.users u"
                                    " LEFT JOIN LATERAL (SELECT true AS found FROM factord.events e"
                                    "   WHERE e.instance_id = u.instance_id AND e.aggregate_type = 'user'"
                                    "     AND e.aggregate_id = u.user_id LIMIT 1) AS x ON true"
                                    " WHERE x.found IS NULL LIMIT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = logread_fail(r->conn, res, "verify: users without events", err);
        goto out;
    }
    if (PQntuples(res) == 1) {
        *found = true;
        snprintf(who->instance_id, sizeof who->instance_id, "%s", PQgetvalue(res, 0, 0));
        snprintf(who->user_id, sizeof who->user_id, "%s", PQgetvalue(res, 0, 1));
    }
out:
    PQclear(res);
    return rc;
}

/* --- the replay scan ---------------------------------------------------------------- */

/* NULL parameters switch a condition off; the statement is planned with the
 * values (unnamed), so the switched-off ones fold away. */
#define LOGREAD_REPLAY_SQL                                                                       \
    "SELECT " ES_STORE_EVENT_COLUMNS ", encode(e.hash, 'hex')" LOGREAD_KEY_COLUMNS              \
    "  FROM factord.events e" LOGREAD_KEY_JOIN                                                   \
    " WHERE e.position > $1::bigint"                                                             \
    "   AND ($2::bigint IS NULL OR e.position <= $2::bigint)"                                    \
    "   AND ($3::text IS NULL OR e.instance_id = $3)"                                            \
    "   AND ($4::text IS NULL OR (e.aggregate_type = 'user' AND e.aggregate_id = $4))"          \
    "   AND ($5::text IS NULL OR e.resource_owner = $5)"                                         \
    "   AND ($6::text[] IS NULL OR e.type = ANY ($6::text[]))"                                   \
    "   AND ($7::timestamptz IS NULL OR e.created_at >= $7::timestamptz)"                        \
    "   AND ($8::timestamptz IS NULL OR e.created_at < $8::timestamptz)"                         \
    " ORDER BY e.position LIMIT $9::bigint"

/* The types as a text[] literal, malloc'd; NULL for an unknown type. */
static char *logread_types_literal(const dom_evt_type *types, size_t n)
{
    /* Type names are fixed identifiers (dots and letters): no quoting needed,
     * but quote anyway so the literal stays an array of plain strings. */
    size_t cap = 2 + n * 48, used = 0;
    char *lit = malloc(cap);
    if (!lit)
        abort();
    lit[used++] = '{';
    for (size_t i = 0; i < n; i++) {
        const char *name = dom_evt_type_name(types[i]);
        if (!name || !*name) {
            free(lit);
            return NULL;
        }
        used += (size_t)snprintf(lit + used, cap - used, "%s\"%s\"", i ? "," : "", name);
    }
    snprintf(lit + used, cap - used, "}");
    return lit;
}

es_result es_logread_replay(es_store *st, const es_log_filter *f, size_t page, es_log_row_fn row,
                            es_log_page_fn page_done, void *arg, es_error *err)
{
    char after_s[24], to_s[24], page_s[24], since_s[40], until_s[40];
    char *types = NULL;
    es_logread *r = NULL;
    es_result rc = ES_OK;

    if (f->n_types && !(types = logread_types_literal(f->types, f->n_types)))
        return es_error_set(err, ES_EINVAL, "replay: unknown event type");
    snprintf(after_s, sizeof after_s, "%" PRId64, f->from_position > 0 ? f->from_position - 1 : 0);
    snprintf(to_s, sizeof to_s, "%" PRId64, f->to_position);
    snprintf(page_s, sizeof page_s, "%zu", page);
    if (f->has_since)
        dom_time_format(f->since_us, since_s, sizeof since_s);
    if (f->has_until)
        dom_time_format(f->until_us, until_s, sizeof until_s);
    if ((f->has_since && !since_s[0]) || (f->has_until && !until_s[0])) {
        rc = es_error_set(err, ES_EINVAL, "replay: a time bound out of range");
        goto out;
    }
    const char *params[] = {after_s,
                            f->to_position > 0 ? to_s : NULL,
                            f->instance_id,
                            f->user_id,
                            f->resource_owner,
                            types,
                            f->has_since ? since_s : NULL,
                            f->has_until ? until_s : NULL,
                            page_s};
    logread_scan s = {.kind = SCAN_REPLAY, .pii = es_store_pii_master(st), .what = "replay: read events",
                      .first_sql = LOGREAD_REPLAY_SQL, .n_first = 9,
                      .next_sql = LOGREAD_REPLAY_SQL, .n_next = 9,
                      .params = params, .after = after_s, .after_len = sizeof after_s};
    if ((rc = es_logread_begin(st, &r, err)) != ES_OK)
        goto out;
    rc = logread_scan_run(r->conn, &s, page, row, page_done, arg, err);
out:
    es_logread_end(r);
    free(types);
    return rc;
}

/* --- verify's checkpoints ---------------------------------------------------------- */

es_result es_logread_checkpoint_latest(es_logread *r, bool *found, int64_t *id, es_checkpoint *cp,
                                       es_error *err)
{
    es_result rc = ES_OK;
    *found = false;
    memset(cp, 0, sizeof *cp);
    PGresult *res = PQexec(r->conn,
        "SELECT id, position, encode(hash, 'hex'),"
        "       (extract(epoch FROM verified_at) * 1000000)::bigint,"
        "       key_id, mode, from_position, events, encode(signature, 'hex')"
        "  FROM factord.verify_checkpoints ORDER BY id DESC LIMIT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = logread_fail(r->conn, res, "verify: the latest checkpoint (is the schema migrated?)", err);
        goto out;
    }
    if (PQntuples(res) != 1)
        goto out;
    /* The columns' checks hold the shapes; a key id too long is left
     * empty, which es_checkpoint_check reports as malformed. */
    if (!es_parse_i64(PQgetvalue(res, 0, 0), id) || !es_parse_i64(PQgetvalue(res, 0, 1), &cp->position) ||
        !es_chain_unhex(PQgetvalue(res, 0, 2), cp->hash, sizeof cp->hash) ||
        !es_parse_i64(PQgetvalue(res, 0, 3), &cp->verified_at_us) ||
        !es_parse_i64(PQgetvalue(res, 0, 6), &cp->from_position) ||
        !es_parse_i64(PQgetvalue(res, 0, 7), &cp->events) ||
        !es_chain_unhex(PQgetvalue(res, 0, 8), cp->signature, sizeof cp->signature)) {
        rc = es_error_set(err, ES_EFATAL, "verify: the latest checkpoint row is malformed");
        goto out;
    }
    if (strlen(PQgetvalue(res, 0, 4)) < sizeof cp->key_id)
        snprintf(cp->key_id, sizeof cp->key_id, "%s", PQgetvalue(res, 0, 4));
    cp->full = strcmp(PQgetvalue(res, 0, 5), "full") == 0;
    *found = true;
out:
    PQclear(res);
    return rc;
}

es_result es_logread_record_checkpoint(es_store *st, const es_checkpoint *cp, int64_t *id, es_error *err)
{
    PGconn *conn = es_store_conn(st);
    char pos[24], hash[2 * ES_CHAIN_HASH_LEN + 1], at[24], from[24], events[24], sig[2 * ES_CHAIN_HASH_LEN + 1];
    es_result rc = ES_OK;
    *id = 0;
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return es_error_set(err, ES_EINVAL, "verify: a transaction is open on this connection");
    snprintf(pos, sizeof pos, "%" PRId64, cp->position);
    es_chain_hex(cp->hash, sizeof cp->hash, hash);
    snprintf(at, sizeof at, "%" PRId64, cp->verified_at_us);
    snprintf(from, sizeof from, "%" PRId64, cp->from_position);
    snprintf(events, sizeof events, "%" PRId64, cp->events);
    es_chain_hex(cp->signature, sizeof cp->signature, sig);
    const char *params[] = {pos, hash, at, cp->key_id, cp->full ? "full" : "incremental", from, events, sig};
    /* The time is added to the epoch as an interval of microseconds: exact,
     * where to_timestamp(double) may round. */
    PGresult *res = PQexecParams(conn,
        "INSERT INTO factord.verify_checkpoints"
        "  (position, hash, verified_at, key_id, mode, from_position, events, signature)"
        " VALUES ($1::bigint, decode($2, 'hex'),"
        "         'epoch'::timestamptz + $3::bigint * interval '1 microsecond',"
        "         $4, $5, $6::bigint, $7::bigint, decode($8, 'hex'))"
        " RETURNING id",
        8, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || !es_parse_i64(PQgetvalue(res, 0, 0), id))
        rc = logread_fail(conn, res, "verify: record the checkpoint", err);
    PQclear(res);
    return rc;
}

/* --- positions -------------------------------------------------------------------- */

es_result es_logread_positions(es_store *st, es_log_positions *p, es_error *err)
{
    es_logread *r = NULL;
    PGresult *res = NULL;
    es_result rc = es_logread_begin(st, &r, err);
    if (rc != ES_OK)
        return rc;
    PGconn *conn = r->conn;
    res = PQexec(conn,
        "SELECT greatest(coalesce((SELECT max(position) FROM factord.events), 0),"
        "                coalesce((SELECT max(position) FROM factord.outbox), 0)),"
        "       c.head_position, encode(c.head_hash, 'hex'),"
        "       coalesce((SELECT position FROM factord.checkpoints WHERE name = 'relay'), 0)"
        "  FROM factord.position_counter c WHERE c.id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = logread_fail(conn, res, "status: positions (is the schema migrated?)", err);
        goto out;
    }
    if (!es_parse_i64(PQgetvalue(res, 0, 0), &p->head_position) ||
        !es_parse_i64(PQgetvalue(res, 0, 1), &p->chain_position) ||
        !es_chain_unhex(PQgetvalue(res, 0, 2), p->chain_hash, sizeof p->chain_hash) ||
        !es_parse_i64(PQgetvalue(res, 0, 3), &p->relay_checkpoint)) {
        rc = es_error_set(err, ES_EFATAL, "status: malformed positions");
        goto out;
    }
    PQclear(res);
    char cp[24];
    snprintf(cp, sizeof cp, "%" PRId64, p->relay_checkpoint);
    const char *params[] = {cp};
    res = PQexecParams(conn, "SELECT count(*) FROM factord.events WHERE position > $1::bigint", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || !es_parse_i64(PQgetvalue(res, 0, 0), &p->relay_lag_events)) {
        rc = logread_fail(conn, res, "status: relay lag", err);
        goto out;
    }
out:
    PQclear(res);
    es_logread_end(r);
    return rc;
}
