/*
 * infra/components/audit.c - verify and replay the event log (audit.h).
 *
 * Pages are fetched with libpq's asynchronous calls: as soon as a page
 * arrives, the request for the next one (keyset: after the page's last key)
 * goes out, and the page is checked while the server reads the next. Rows
 * are decoded by the store's own decoder (es_store_row_event), so the
 * canonical bytes verify recomputes are those the writer hashed.
 */
#include "infra/base/util.h"
#include "infra/components/audit.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "domain/user.h"
#include "infra/kafka/kafka.h"

#define AUDIT_PAGE 10000

/* --- small helpers ------------------------------------------------------------ */

static double audit_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int audit_msg_len(const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return n > 400 ? 400 : (int)n;
}

static es_result audit_fail(PGconn *conn, const PGresult *res, const char *what, es_error *err)
{
    const char *msg = res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    es_result rc = PQstatus(conn) == CONNECTION_BAD ? ES_ETRANSIENT : ES_EFATAL;
    es_error_set(err, rc, "%s: %.*s", what, audit_msg_len(msg), msg);
    if (err && state)
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state);
    return rc;
}

static es_result audit_simple(PGconn *conn, const char *sql, const char *what, es_error *err)
{
    PGresult *res = PQexec(conn, sql);
    es_result rc = ES_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = audit_fail(conn, res, what, err);
    PQclear(res);
    return rc;
}

/* One snapshot for the whole run. */
static es_result audit_begin(PGconn *conn, es_error *err)
{
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return es_error_set(err, ES_EINVAL, "audit: a transaction is open on this connection");
    return audit_simple(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "begin", err);
}

static void audit_end(PGconn *conn)
{
    if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
}

static es_result audit_send(PGconn *conn, const char *sql, int n, const char *const *params,
                            const char *what, es_error *err)
{
    if (!PQsendQueryParams(conn, sql, n, NULL, params, NULL, NULL, 0))
        return audit_fail(conn, NULL, what, err);
    return ES_OK;
}

/* The result of the query in flight (and nothing after it). */
static es_result audit_receive(PGconn *conn, const char *what, PGresult **out, es_error *err)
{
    PGresult *res = PQgetResult(conn), *extra;
    es_result rc = ES_OK;
    while ((extra = PQgetResult(conn)) != NULL)
        PQclear(extra);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = audit_fail(conn, res, what, err);
        PQclear(res);
        res = NULL;
    }
    *out = res;
    return rc;
}

static void audit_drain(PGconn *conn)
{
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
}


static void audit_progress(const es_audit_progress_fn fn, void *arg, const char *phase, int64_t rows,
                           int64_t pos, double started, double *last_report)
{
    double now = audit_now();
    if (!fn || now - *last_report < 1.0)
        return;
    *last_report = now;
    es_audit_progress p = {.phase = phase, .rows = rows, .position = pos,
                           .rate = now > started ? (double)rows / (now - started) : 0};
    fn(arg, &p);
}

/* --- verify --------------------------------------------------------------------- */

static void audit_bad(es_verify_report *rep, const dom_evt *evt, int64_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void audit_bad(es_verify_report *rep, const dom_evt *evt, int64_t pos, const char *fmt, ...)
{
    va_list ap;
    rep->ok = false;
    rep->bad_position = pos;
    if (evt) {
        snprintf(rep->bad_instance, sizeof rep->bad_instance, "%s", evt->instance_id);
        snprintf(rep->bad_user, sizeof rep->bad_user, "%s", evt->aggregate_id);
    }
    va_start(ap, fmt);
    vsnprintf(rep->problem, sizeof rep->problem, fmt, ap);
    va_end(ap);
}

/* Columns of the chain pass: the event, its hash, its aggregate type. */
#define AUDIT_CHAIN_SQL                                                                          \
    "SELECT " ES_STORE_EVENT_COLUMNS ", encode(e.hash, 'hex'), e.aggregate_type"                \
    "  FROM factord.events e WHERE e.position > $1::bigint ORDER BY e.position LIMIT $2::bigint"
enum { CC_POSITION = 3, CC_TYPE = 4, CC_PAYLOAD = 11, CC_HASH = ES_STORE_EVENT_NCOLUMNS, CC_AGGTYPE };

typedef struct {
    es_chain_hasher *hasher;
    const es_verify_opts *o;
    es_verify_report *rep;
    unsigned char prev[ES_CHAIN_HASH_LEN];
    int64_t last_position;
    bool chained_seen;
    bool expect_seen;
} chain_state;

/* Members of the JSON object text s (as PostgreSQL prints jsonb): commas
 * at depth 1 outside strings, plus one; (size_t)-1 when s is no object.
 * A scan instead of a parse: the decoder parsed the payload already. */
static size_t audit_members(const char *s)
{
    size_t commas = 0;
    int depth = 0;
    bool in_str = false, any = false;
    while (*s == ' ')
        s++;
    if (*s != '{')
        return (size_t)-1;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (in_str) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            if (depth == 1)
                any = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            commas++;
        }
    }
    return any ? commas + 1 : 0;
}

/* One row of the chain pass; false after recording a problem. */
static bool chain_row(chain_state *cs, const PGresult *res, int r)
{
    es_verify_report *rep = cs->rep;
    dom_evt evt;
    es_error derr = {0};
    int64_t pos = 0;
    memset(&evt, 0, sizeof evt);
    if (!es_parse_i64(PQgetvalue(res, r, CC_POSITION), &pos)) {
        audit_bad(rep, NULL, 0, "an event after position %" PRId64 " has a malformed position",
                  cs->last_position);
        return false;
    }
    snprintf(evt.instance_id, sizeof evt.instance_id, "%s", PQgetvalue(res, r, 0));
    snprintf(evt.aggregate_id, sizeof evt.aggregate_id, "%s", PQgetvalue(res, r, 1));
    if (pos <= cs->last_position) {
        audit_bad(rep, &evt, pos, "position %" PRId64 " appears twice", pos);
        return false;
    }
    cs->last_position = pos;
    rep->events++;
    if (es_store_row_event(res, r, 0, &evt, &derr) != ES_OK) {
        audit_bad(rep, &evt, pos, "the event does not decode: %.300s", derr.text);
        return false;
    }
    /* Columns outside the canonical bytes must hold what they imply. */
    if (strcmp(PQgetvalue(res, r, CC_AGGTYPE), DOM_AGGREGATE_USER) != 0 ||
        strcmp(PQgetvalue(res, r, CC_TYPE), dom_evt_type_name(evt.type)) != 0) {
        audit_bad(rep, &evt, pos, "the event's aggregate type or type name was changed");
        return false;
    }
    /* Every member the type has was decoded into evt and is hashed; one it
     * does not have would be skipped by the decoder: count them. */
    json_t *canon = dom_evt_payload_to_json(&evt);
    bool same = audit_members(PQgetvalue(res, r, CC_PAYLOAD)) == json_object_size(canon);
    json_decref(canon);
    if (!same) {
        audit_bad(rep, &evt, pos, "the payload holds members the event type does not have");
        return false;
    }

    if (PQgetisnull(res, r, CC_HASH)) {
        if (cs->chained_seen) {
            audit_bad(rep, &evt, pos, "an event without a hash after chained events");
            return false;
        }
        if (pos > rep->chain_start) {
            audit_bad(rep, &evt, pos,
                      "an event without a hash above the chain's start (%" PRId64
                      "): written by a binary without the chain, or its hash removed",
                      rep->chain_start);
            return false;
        }
        rep->unchained++;
    } else {
        unsigned char stored_hash[ES_CHAIN_HASH_LEN], want[ES_CHAIN_HASH_LEN];
        if (!es_chain_unhex(PQgetvalue(res, r, CC_HASH), stored_hash, sizeof stored_hash)) {
            audit_bad(rep, &evt, pos, "the event's hash is not 32 bytes");
            return false;
        }
        char *text = es_chain_canonical(&evt);
        if (!text) {
            audit_bad(rep, &evt, pos, "the event cannot be encoded");
            return false;
        }
        es_chain_hash(cs->hasher, cs->prev, text, strlen(text), want);
        free(text);
        if (memcmp(want, stored_hash, sizeof want) != 0) {
            if (!cs->chained_seen)
                audit_bad(rep, &evt, pos,
                          "the first chained event's hash does not verify: the event was "
                          "altered, or the chain key is not the writers' key");
            else
                audit_bad(rep, &evt, pos,
                          "hash mismatch: this event was altered, or an event before it (after "
                          "the chained event at %" PRId64 ") was removed, inserted or moved",
                          rep->head_position);
            return false;
        }
        cs->chained_seen = true;
        memcpy(cs->prev, stored_hash, sizeof cs->prev);
        rep->head_position = pos;
        memcpy(rep->head_hash, stored_hash, sizeof rep->head_hash);
    }
    if (cs->o->expect_head && !cs->expect_seen && pos >= cs->o->expect_position) {
        cs->expect_seen = true;
        if (pos != cs->o->expect_position || PQgetisnull(res, r, CC_HASH)) {
            audit_bad(rep, &evt, pos, "the expected head position %" PRId64 " holds no chained event",
                      cs->o->expect_position);
            return false;
        }
        if (memcmp(rep->head_hash, cs->o->expect_hash, ES_CHAIN_HASH_LEN) != 0) {
            audit_bad(rep, &evt, pos,
                      "the event at the expected head has another hash: the log up to it was "
                      "rewritten");
            return false;
        }
    }
    return true;
}

static es_result verify_chain(PGconn *conn, chain_state *cs, size_t page, es_error *err)
{
    es_verify_report *rep = cs->rep;
    const es_verify_opts *o = cs->o;
    es_result rc = ES_OK;
    PGresult *res = NULL;
    char after_s[24], page_s[24];
    bool in_flight = false;
    double started = audit_now(), last_report = started;

    snprintf(page_s, sizeof page_s, "%zu", page);
    snprintf(after_s, sizeof after_s, "0");
    const char *params[] = {after_s, page_s};
    if ((rc = audit_send(conn, AUDIT_CHAIN_SQL, 2, params, "verify: read events", err)) != ES_OK)
        goto out;
    in_flight = true;
    for (;;) {
        in_flight = false;
        if ((rc = audit_receive(conn, "verify: read events", &res, err)) != ES_OK)
            goto out;
        int n = PQntuples(res);
        if ((size_t)n == page) {
            snprintf(after_s, sizeof after_s, "%s", PQgetvalue(res, n - 1, CC_POSITION));
            if ((rc = audit_send(conn, AUDIT_CHAIN_SQL, 2, params, "verify: read events", err)) != ES_OK)
                goto out;
            in_flight = true;
        }
        for (int r = 0; r < n; r++)
            if (!chain_row(cs, res, r))
                goto out;
        PQclear(res);
        res = NULL;
        audit_progress(o->progress, o->progress_arg, "chain", rep->events, cs->last_position, started,
                       &last_report);
        if (!in_flight)
            break;
    }
out:
    PQclear(res);
    if (in_flight)
        audit_drain(conn);
    return rc;
}

/* The users pass: events in key order with the user's row beside each,
 * found by one primary-key probe per event (LIMIT 1 keeps the LATERAL
 * subquery a probe, whatever the statistics of a just-rebuilt table). */
#define AUDIT_USERS_SELECT                                                                       \
    "SELECT " ES_STORE_EVENT_COLUMNS ", u.user_id IS NOT NULL,"                                 \
    " u.instance_id, u.user_id, u.resource_owner, u.user_name, u.status, u.sequence, u.phone,"  \
    " u.phone_verified, u.verified_phone, u.otp_sms, u.code_enc,"                               \
    " (extract(epoch FROM u.code_expires_at) * 1000000)::bigint,"                               \
    " (extract(epoch FROM u.created_at) * 1000000)::bigint,"                                    \
    " (extract(epoch FROM u.changed_at) * 1000000)::bigint"                                     \
    "  FROM factord.events e LEFT JOIN LATERAL (SELECT * FROM factord.users u"                  \
    "    WHERE u.instance_id = e.instance_id AND u.user_id = e.aggregate_id LIMIT 1) AS u ON true"
#define AUDIT_USERS_ORDER                                                                        \
    " ORDER BY e.instance_id, e.aggregate_type, e.aggregate_id, e.sequence LIMIT $1::bigint"
#define AUDIT_USERS_FIRST_SQL AUDIT_USERS_SELECT AUDIT_USERS_ORDER
#define AUDIT_USERS_NEXT_SQL                                                                     \
    AUDIT_USERS_SELECT                                                                           \
    " WHERE (e.instance_id, e.aggregate_type, e.aggregate_id, e.sequence)"                      \
    "     > ($2, 'user', $3, $4::bigint)" AUDIT_USERS_ORDER
enum { UCOL_HAS = ES_STORE_EVENT_NCOLUMNS, UCOL_USER };

/* The first column where the fold and the row differ, or NULL. */
static const char *audit_user_diff(const dom_user *a, const dom_user *b)
{
    if (strcmp(a->resource_owner, b->resource_owner))
        return "resource_owner";
    if (strcmp(a->user_name, b->user_name))
        return "user_name";
    if (a->status != b->status)
        return "status";
    if (a->sequence != b->sequence)
        return "sequence";
    if (strcmp(a->phone, b->phone))
        return "phone";
    if (a->phone_verified != b->phone_verified)
        return "phone_verified";
    if (strcmp(a->verified_phone, b->verified_phone))
        return "verified_phone";
    if (a->otp_sms != b->otp_sms)
        return "otp_sms";
    if (strcmp(a->code_enc, b->code_enc))
        return "code_enc";
    if (a->code_expires_at_us != b->code_expires_at_us)
        return "code_expires_at";
    if (a->created_at_us != b->created_at_us)
        return "created_at";
    if (a->changed_at_us != b->changed_at_us)
        return "changed_at";
    return NULL;
}

typedef struct {
    es_verify_report *rep;
    bool have;               /* a user is being folded */
    dom_user fold;
    dom_user row;            /* its factord.users row */
    bool row_found;
    dom_evt last;            /* its last event */
} users_state;

/* The user being folded is complete: compare it with its row. */
static bool users_finish(users_state *us)
{
    if (!us->have)
        return true;
    us->have = false;
    us->rep->users++;
    if (!us->row_found) {
        audit_bad(us->rep, &us->last, us->last.position,
                  "the user has events but no row in factord.users");
        return false;
    }
    const char *col = audit_user_diff(&us->fold, &us->row);
    if (col) {
        audit_bad(us->rep, &us->last, us->last.position,
                  "factord.users differs from the fold of the user's events in column %s", col);
        return false;
    }
    return true;
}

static bool users_row(users_state *us, const PGresult *res, int r)
{
    dom_evt evt;
    es_error derr = {0};
    if (es_store_row_event(res, r, 0, &evt, &derr) != ES_OK) {
        audit_bad(us->rep, NULL, 0, "an event does not decode: %.300s", derr.text);
        return false;
    }
    bool same_user = us->have && strcmp(us->last.instance_id, evt.instance_id) == 0 &&
                     strcmp(us->last.aggregate_id, evt.aggregate_id) == 0;
    if (same_user) {
        if (evt.sequence == us->last.sequence) {
            audit_bad(us->rep, &evt, evt.position, "sequence %" PRId64 " appears twice", evt.sequence);
            return false;
        }
        if (evt.sequence != us->last.sequence + 1) {
            audit_bad(us->rep, &evt, evt.position,
                      "sequence gap: %" PRId64 " follows %" PRId64 " (events missing)", evt.sequence,
                      us->last.sequence);
            return false;
        }
    } else {
        if (!users_finish(us))
            return false;
        if (evt.sequence != 1) {
            audit_bad(us->rep, &evt, evt.position,
                      "the user's first event has sequence %" PRId64 " (events missing)", evt.sequence);
            return false;
        }
        us->have = true;
        memset(&us->fold, 0, sizeof us->fold);
        us->row_found = PQgetvalue(res, r, UCOL_HAS)[0] == 't';
        if (us->row_found) {
            if (es_store_row_user(res, r, UCOL_USER, &us->row, &derr) != ES_OK) {
                audit_bad(us->rep, &evt, evt.position, "the user's row does not decode: %.300s",
                          derr.text);
                return false;
            }
        }
    }
    dom_user_apply(&us->fold, &evt);
    us->last = evt;
    return true;
}

static es_result verify_users(PGconn *conn, es_verify_report *rep, const es_verify_opts *o,
                              size_t page, const atomic_bool *stop, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    char page_s[24], inst[DOM_ID_MAX], user[DOM_ID_MAX], seq[24];
    bool in_flight = false;
    int64_t rows = 0;
    double started = audit_now(), last_report = started;
    users_state *us = calloc(1, sizeof *us);
    if (!us)
        abort();
    us->rep = rep;

    snprintf(page_s, sizeof page_s, "%zu", page);
    const char *params[] = {page_s, inst, user, seq};
    if ((rc = audit_send(conn, AUDIT_USERS_FIRST_SQL, 1, params, "verify: read users' events", err)) != ES_OK)
        goto out;
    in_flight = true;
    for (;;) {
        in_flight = false;
        if ((rc = audit_receive(conn, "verify: read users' events", &res, err)) != ES_OK)
            goto out;
        int n = PQntuples(res);
        if ((size_t)n == page) {
            snprintf(inst, sizeof inst, "%s", PQgetvalue(res, n - 1, 0));
            snprintf(user, sizeof user, "%s", PQgetvalue(res, n - 1, 1));
            snprintf(seq, sizeof seq, "%s", PQgetvalue(res, n - 1, 2));
            if ((rc = audit_send(conn, AUDIT_USERS_NEXT_SQL, 4, params, "verify: read users' events",
                                 err)) != ES_OK)
                goto out;
            in_flight = true;
        }
        for (int r = 0; r < n; r++)
            if (!users_row(us, res, r))
                goto out;
        if (stop && atomic_load(stop))
            goto out; /* the chain pass failed already: its problem is reported */
        rows += n;
        PQclear(res);
        res = NULL;
        audit_progress(o->progress, o->progress_arg, "users", rows, 0, started, &last_report);
        if (!in_flight)
            break;
    }
    if (!users_finish(us))
        goto out;

    /* Users with a row but no event: one primary-key probe of the events
     * per user. Written as NOT EXISTS, the plan followed the statistics: on
     * a users table a rebuild had just swapped in (none yet) it became a
     * nested loop over a sequential scan of every event, and verify ran for
     * minutes on 1,000,000 events. LIMIT 1 keeps the LATERAL probe a probe. */
    res = PQexec(conn, "SELECT u.instance_id, u.user_id FROM factord.users u"
                       " LEFT JOIN LATERAL (SELECT true AS found FROM factord.events e"
                       "   WHERE e.instance_id = u.instance_id AND e.aggregate_type = 'user'"
                       "     AND e.aggregate_id = u.user_id LIMIT 1) AS x ON true"
                       " WHERE x.found IS NULL LIMIT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = audit_fail(conn, res, "verify: users without events", err);
        goto out;
    }
    if (PQntuples(res) == 1) {
        dom_evt who;
        memset(&who, 0, sizeof who);
        snprintf(who.instance_id, sizeof who.instance_id, "%s", PQgetvalue(res, 0, 0));
        snprintf(who.aggregate_id, sizeof who.aggregate_id, "%s", PQgetvalue(res, 0, 1));
        audit_bad(rep, &who, 0, "factord.users has a user without events");
    }
out:
    PQclear(res);
    if (in_flight)
        audit_drain(conn);
    free(us);
    return rc;
}

/* The users pass on a second connection that shares the first one's
 * snapshot, so that it runs beside the chain pass (the two use a core each:
 * PostgreSQL's and ours). */
typedef struct {
    PGconn *conn;
    const es_verify_opts *o;
    size_t page;
    const atomic_bool *stop;
    es_verify_report rep;
    es_result rc;
    es_error err;
} users_job;

static void *users_job_main(void *arg)
{
    users_job *j = arg;
    memset(&j->rep, 0, sizeof j->rep);
    j->rep.ok = true;
    j->rc = verify_users(j->conn, &j->rep, j->o, j->page, j->stop, &j->err);
    audit_end(j->conn);
    return NULL;
}

/* A second connection like conn, in a transaction on conn's snapshot;
 * NULL when that cannot be had (the users pass then runs after the chain
 * pass on conn itself). */
static PGconn *audit_second_conn(PGconn *conn)
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

es_result es_audit_verify(es_store *st, const es_chain_key *key, const es_verify_opts *opts,
                          es_verify_report *rep, es_error *err)
{
    static const es_verify_opts no_opts = {0};
    const es_verify_opts *o = opts ? opts : &no_opts;
    PGconn *conn = es_store_conn(st);
    PGresult *res = NULL;
    size_t page = o->page ? o->page : AUDIT_PAGE;
    double started = audit_now();
    chain_state cs;
    unsigned char counter_hash[ES_CHAIN_HASH_LEN];
    int64_t counter_value = 0, counter_head = 0;
    atomic_bool stop = false;
    users_job job = {.o = o, .page = page, .stop = &stop};
    pthread_t users_thread;
    bool threaded = false;

    memset(rep, 0, sizeof *rep);
    memset(&cs, 0, sizeof cs);
    rep->ok = true;
    es_result rc = audit_begin(conn, err);
    if (rc != ES_OK)
        return rc;
    /* The snapshot is exported first, so that it is the one every read of
     * this run sees; a server that refuses (a failed statement aborts the
     * transaction) gets a fresh transaction and the passes one after the
     * other. */
    job.conn = audit_second_conn(conn);
    if (!job.conn && PQtransactionStatus(conn) == PQTRANS_INERROR) {
        audit_end(conn);
        if ((rc = audit_begin(conn, err)) != ES_OK)
            return rc;
    }
    res = PQexec(conn, "SELECT value, head_position, encode(head_hash, 'hex'), chain_start"
                       "  FROM factord.position_counter WHERE id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = audit_fail(conn, res, "verify: the chain head (is the schema migrated?)", err);
        goto out;
    }
    if (PQntuples(res) != 1 || !es_parse_i64(PQgetvalue(res, 0, 0), &counter_value) ||
        !es_parse_i64(PQgetvalue(res, 0, 1), &counter_head) ||
        !es_chain_unhex(PQgetvalue(res, 0, 2), counter_hash, sizeof counter_hash) ||
        !es_parse_i64(PQgetvalue(res, 0, 3), &rep->chain_start)) {
        audit_bad(rep, NULL, 0, "factord.position_counter has no valid row 1");
        goto out;
    }
    PQclear(res);
    res = NULL;

    if (job.conn && pthread_create(&users_thread, NULL, users_job_main, &job) == 0)
        threaded = true;

    cs.hasher = es_chain_hasher_new(key);
    cs.o = o;
    cs.rep = rep;
    rc = verify_chain(conn, &cs, page, err);
    if (rc != ES_OK || !rep->ok)
        goto out;
    if (o->expect_head && !cs.expect_seen) {
        audit_bad(rep, NULL, o->expect_position,
                  "the log ends at position %" PRId64 ", before the expected head %" PRId64
                  ": events were removed from its end",
                  cs.last_position, o->expect_position);
        goto out;
    }
    if (counter_head != rep->head_position ||
        memcmp(counter_hash, rep->head_hash, sizeof counter_hash) != 0) {
        if (counter_head > rep->head_position)
            audit_bad(rep, NULL, counter_head,
                      "the chain head (position %" PRId64 ") is not in the log, whose last chained "
                      "event is at %" PRId64 ": events were removed from its end",
                      counter_head, rep->head_position);
        else
            audit_bad(rep, NULL, rep->head_position,
                      "the log's last chained event (position %" PRId64 ") is not the chain head "
                      "the counter holds (position %" PRId64 ")",
                      rep->head_position, counter_head);
        goto out;
    }
    if (counter_value < cs.last_position) {
        audit_bad(rep, NULL, cs.last_position,
                  "an event's position is above the position counter (%" PRId64 ")", counter_value);
        goto out;
    }
    if (!threaded) {
        es_verify_report *users = &job.rep;
        memset(users, 0, sizeof *users);
        users->ok = true;
        job.rc = verify_users(conn, users, o, page, NULL, &job.err);
    }
out:
    if (rc != ES_OK || !rep->ok)
        atomic_store(&stop, true);
    if (threaded)
        pthread_join(users_thread, NULL);
    PQfinish(job.conn);
    /* The chain's problems first: they are the more fundamental ones. */
    if (rc == ES_OK && rep->ok) { /* then the users pass ran, here or in its thread */
        rep->users = job.rep.users;
        if (job.rc != ES_OK) {
            rc = job.rc;
            if (err)
                *err = job.err;
        } else if (!job.rep.ok) {
            rep->ok = false;
            rep->bad_position = job.rep.bad_position;
            memcpy(rep->bad_instance, job.rep.bad_instance, sizeof rep->bad_instance);
            memcpy(rep->bad_user, job.rep.bad_user, sizeof rep->bad_user);
            memcpy(rep->problem, job.rep.problem, sizeof rep->problem);
        }
    }
    PQclear(res);
    es_chain_hasher_free(cs.hasher);
    audit_end(conn);
    rep->seconds = audit_now() - started;
    return rc;
}

bool es_audit_parse_head(const char *s, int64_t *pos, unsigned char hash[ES_CHAIN_HASH_LEN])
{
    const char *colon = strchr(s, ':');
    char num[24];
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof num)
        return false;
    memcpy(num, s, (size_t)(colon - s));
    num[colon - s] = '\0';
    for (const char *c = num; *c; c++)
        if (!isdigit((unsigned char)*c))
            return false;
    return es_parse_i64(num, pos) && *pos > 0 && es_chain_unhex(colon + 1, hash, ES_CHAIN_HASH_LEN);
}

/* --- replay ------------------------------------------------------------------------ */

/* NULL parameters switch a condition off; the statement is planned with the
 * values (unnamed), so the switched-off ones fold away. */
#define AUDIT_REPLAY_SQL                                                                         \
    "SELECT " ES_STORE_EVENT_COLUMNS ", encode(e.hash, 'hex')"                                  \
    "  FROM factord.events e"                                                                    \
    " WHERE e.position > $1::bigint"                                                             \
    "   AND ($2::bigint IS NULL OR e.position <= $2::bigint)"                                    \
    "   AND ($3::text IS NULL OR e.instance_id = $3)"                                            \
    "   AND ($4::text IS NULL OR (e.aggregate_type = 'user' AND e.aggregate_id = $4))"          \
    "   AND ($5::text IS NULL OR e.resource_owner = $5)"                                         \
    "   AND ($6::text[] IS NULL OR e.type = ANY ($6::text[]))"                                   \
    "   AND ($7::timestamptz IS NULL OR e.created_at >= $7::timestamptz)"                        \
    "   AND ($8::timestamptz IS NULL OR e.created_at < $8::timestamptz)"                         \
    " ORDER BY e.position LIMIT $9::bigint"

/* Each event as its canonical text (the events topic's members, sorted;
 * written directly, infra/crypto/chain.h) with "hash" added before the brace. */
static es_result replay_page(const PGresult *res, FILE *out, int64_t *written, es_error *err)
{
    for (int r = 0; r < PQntuples(res); r++) {
        dom_evt evt;
        es_result rc = es_store_row_event(res, r, 0, &evt, err);
        if (rc != ES_OK)
            return rc;
        char *text = es_chain_canonical(&evt);
        if (!text)
            return es_error_set(err, ES_EFATAL, "replay: the event at %" PRId64 " cannot be encoded",
                                evt.position);
        size_t n = strlen(text);
        bool chained = !PQgetisnull(res, r, ES_STORE_EVENT_NCOLUMNS);
        int w = fprintf(out, "%.*s,\"hash\":%s%s%s}\n", (int)(n - 1), text, chained ? "\"" : "",
                        chained ? PQgetvalue(res, r, ES_STORE_EVENT_NCOLUMNS) : "null", chained ? "\"" : "");
        free(text);
        if (w < 0)
            return es_error_set(err, ES_EFATAL, "replay: cannot write the output: %s", strerror(errno));
        (*written)++;
    }
    return ES_OK;
}

es_result es_audit_replay(es_store *st, const es_replay_filter *f, FILE *out, int64_t *written,
                          es_error *err)
{
    PGconn *conn = es_store_conn(st);
    PGresult *res = NULL;
    size_t page = f->page ? f->page : AUDIT_PAGE;
    char after_s[24], to_s[24], page_s[24], since_s[40], until_s[40];
    char *types = NULL;
    bool in_flight = false;
    int64_t rows = 0;
    double started = audit_now(), last_report = started;
    es_result rc = ES_OK;
    *written = 0;

    if (f->n_types > ES_REPLAY_MAX_TYPES)
        return es_error_set(err, ES_EINVAL, "replay: too many types");
    if (f->n_types) {
        /* Type names are fixed identifiers (dots and letters): no quoting needed,
         * but quote anyway so the literal stays an array of plain strings. */
        size_t cap = 2 + f->n_types * 48;
        types = malloc(cap);
        if (!types)
            abort();
        size_t used = 0;
        types[used++] = '{';
        for (size_t i = 0; i < f->n_types; i++) {
            const char *name = dom_evt_type_name(f->types[i]);
            if (!name || !*name) {
                free(types);
                return es_error_set(err, ES_EINVAL, "replay: unknown event type");
            }
            used += (size_t)snprintf(types + used, cap - used, "%s\"%s\"", i ? "," : "", name);
        }
        snprintf(types + used, cap - used, "}");
    }
    snprintf(after_s, sizeof after_s, "%" PRId64, f->from_position > 0 ? f->from_position - 1 : 0);
    snprintf(to_s, sizeof to_s, "%" PRId64, f->to_position);
    snprintf(page_s, sizeof page_s, "%zu", page);
    if (f->has_since)
        dom_time_format(f->since_us, since_s, sizeof since_s);
    if (f->has_until)
        dom_time_format(f->until_us, until_s, sizeof until_s);
    if ((f->has_since && !since_s[0]) || (f->has_until && !until_s[0])) {
        free(types);
        return es_error_set(err, ES_EINVAL, "replay: a time bound out of range");
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

    if ((rc = audit_begin(conn, err)) != ES_OK)
        goto out;
    if ((rc = audit_send(conn, AUDIT_REPLAY_SQL, 9, params, "replay: read events", err)) != ES_OK)
        goto out;
    in_flight = true;
    for (;;) {
        in_flight = false;
        if ((rc = audit_receive(conn, "replay: read events", &res, err)) != ES_OK)
            goto out;
        int n = PQntuples(res);
        int64_t last = 0;
        if (n > 0)
            (void)es_parse_i64(PQgetvalue(res, n - 1, CC_POSITION), &last);
        if ((size_t)n == page) {
            snprintf(after_s, sizeof after_s, "%" PRId64, last);
            if ((rc = audit_send(conn, AUDIT_REPLAY_SQL, 9, params, "replay: read events", err)) != ES_OK)
                goto out;
            in_flight = true;
        }
        if ((rc = replay_page(res, out, written, err)) != ES_OK)
            goto out;
        rows += n;
        PQclear(res);
        res = NULL;
        audit_progress(f->progress, f->progress_arg, "replay", rows, last, started, &last_report);
        if (!in_flight)
            break;
    }
    if (fflush(out) != 0)
        rc = es_error_set(err, ES_EFATAL, "replay: cannot write the output: %s", strerror(errno));
out:
    PQclear(res);
    if (in_flight)
        audit_drain(conn);
    audit_end(conn);
    free(types);
    return rc;
}

/* --- status ------------------------------------------------------------------------ */

es_result es_audit_status_pg(es_store *st, es_status *s, es_error *err)
{
    PGconn *conn = es_store_conn(st);
    es_result rc = audit_begin(conn, err);
    if (rc != ES_OK)
        return rc;
    PGresult *res = PQexec(conn,
        "SELECT greatest(coalesce((SELECT max(position) FROM factord.events), 0),"
        "                coalesce((SELECT max(position) FROM factord.outbox), 0)),"
        "       c.head_position, encode(c.head_hash, 'hex'),"
        "       coalesce((SELECT position FROM factord.checkpoints WHERE name = 'relay'), 0)"
        "  FROM factord.position_counter c WHERE c.id = 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = audit_fail(conn, res, "status: positions (is the schema migrated?)", err);
        goto out;
    }
    if (!es_parse_i64(PQgetvalue(res, 0, 0), &s->head_position) ||
        !es_parse_i64(PQgetvalue(res, 0, 1), &s->chain_position) ||
        !es_chain_unhex(PQgetvalue(res, 0, 2), s->chain_hash, sizeof s->chain_hash) ||
        !es_parse_i64(PQgetvalue(res, 0, 3), &s->relay_checkpoint)) {
        rc = es_error_set(err, ES_EFATAL, "status: malformed positions");
        goto out;
    }
    s->relay_lag = s->head_position > s->relay_checkpoint ? s->head_position - s->relay_checkpoint : 0;
    PQclear(res);
    char cp[24];
    snprintf(cp, sizeof cp, "%" PRId64, s->relay_checkpoint);
    const char *params[] = {cp};
    res = PQexecParams(conn, "SELECT count(*) FROM factord.events WHERE position > $1::bigint", 1, NULL,
                       params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || !es_parse_i64(PQgetvalue(res, 0, 0), &s->relay_lag_events)) {
        rc = audit_fail(conn, res, "status: relay lag", err);
        goto out;
    }
out:
    PQclear(res);
    audit_end(conn);
    return rc;
}

es_result es_audit_status_kafka(const char *brokers, const char *events_topic,
                                const char *projector_group, const char *commands_topic,
                                const char *processor_group, const char *dlq_topic,
                                int timeout_ms, es_status *s, es_error *err)
{
    es_result rc;
    s->kafka_ok = false;
    s->projector.group = projector_group;
    s->projector.topic = events_topic;
    s->processor.group = processor_group;
    s->processor.topic = commands_topic;
    if ((rc = es_kafka_group_lag(brokers, &s->projector, timeout_ms, err)) != ES_OK ||
        (rc = es_kafka_group_lag(brokers, &s->processor, timeout_ms, err)) != ES_OK)
        goto out;
    /* Dead letters: everything the topic holds. */
    es_group_lag dlq = {.group = NULL, .topic = dlq_topic};
    if ((rc = es_kafka_group_lag(brokers, &dlq, timeout_ms, err)) != ES_OK)
        goto out;
    s->dead_letters = 0;
    for (size_t i = 0; i < dlq.n; i++)
        s->dead_letters += dlq.parts[i].high - dlq.parts[i].low;
    s->kafka_ok = true;
out:
    if (rc != ES_OK)
        snprintf(s->kafka_error, sizeof s->kafka_error, "%s", err ? err->text : "unreachable");
    return rc;
}
