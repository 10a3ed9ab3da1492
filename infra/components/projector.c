/*
 * infra/components/projector.c - apply a batch of events to the read models in one
 * transaction (see projector.h).
 *
 * One attempt:
 *   1. order the batch by (instance, user), keeping offset order within a
 *      user (the topic keeps each user's events in sequence order);
 *   2. lock the users' applied sequences (FOR UPDATE, in key order);
 *   3. walk each user's events: an event at or below the applied sequence
 *      is skipped, one above it is applied (a gap is applied and warned
 *      about: the log lost nothing, so a gap means this projector missed
 *      events, e.g. a group that started after the topic's retention);
 *   4. write: first rows of new users (plain INSERT: a racing projector on
 *      the same new user fails one of the two with 23505, decided again),
 *      then the sequences of known users, the deleted factor rows (of known
 *      users only: a new user has none), the put ones;
 *   5. the reply topics of the commands whose last event is in the batch
 *      (applied or skipped): given by the relay beside the event, else
 *      looked up in one query; then COMMIT.
 * Every statement names the instance of each row it touches, and carries
 * its rows as one binary array per column (unnest, infra/pg/pgarr.h): one
 * round trip per table, never one per row, no text for the server to
 * parse, and no SQL text built from data.
 */
#include "infra/base/util.h"
#include "infra/components/projector.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/jsonw.h"
#include "infra/pg/pgarr.h"
#include "infra/base/log.h"

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

static const char SQL_LIST_FACTORS[] =
    "SELECT instance_id, user_id, type, state, sequence,"
    "       (extract(epoch FROM created_at) * 1000000)::bigint,"
    "       (extract(epoch FROM changed_at) * 1000000)::bigint, resource_owner"
    "  FROM factord.auth_factors"
    " WHERE instance_id = $1 AND user_id = $2"
    " ORDER BY type";

typedef struct {
    const char *instance_id, *user_id; /* borrowed from the batch's events */
    int64_t applied;                   /* sequence applied before the batch */
    bool found;                        /* has a projected_sequences row */
    int64_t last;                      /* after the batch */
} user_seq;

typedef struct {
    char id[DOM_UUID_LEN + 1];
    char *topic;
    int http_status;
    bool replied;      /* a reply of this batch is already queued */
} reply_topic;

enum { COLS_MAX = 8 };

struct es_projector {
    es_store *st;
    es_projector_opts o;
    /* buffers grown on demand and kept between batches */
    size_t *order; size_t order_cap;
    user_seq *users; size_t users_cap;
    proj_af_change *changes; size_t changes_cap;
    proj_af_net *nets; size_t nets_cap;
    reply_topic *topics; size_t topics_cap;
    size_t n_topics;
    es_reply *replies; size_t replies_cap;
    size_t n_replies;
    es_pga cols[COLS_MAX]; /* a statement's columns (pgarr.h), kept between batches */
};

#define GROW ES_GROW

static void clear_replies(es_projector *p)
{
    for (size_t i = 0; i < p->n_replies; i++) {
        /* a returnCode reply holds a phone code */
        explicit_bzero((char *)p->replies[i].value, p->replies[i].value_len);
        free((char *)p->replies[i].value);
    }
    p->n_replies = 0;
    for (size_t i = 0; i < p->n_topics; i++)
        free(p->topics[i].topic);
    p->n_topics = 0;
}

es_projector *es_projector_new(es_store *st, const es_projector_opts *opts)
{
    es_projector *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->st = st;
    p->o = *opts;
    if (p->o.max_conflict_retries <= 0)
        p->o.max_conflict_retries = 20;
    return p;
}

void es_projector_free(es_projector *p)
{
    if (!p)
        return;
    clear_replies(p);
    free(p->order);
    free(p->users);
    free(p->changes);
    free(p->nets);
    free(p->topics);
    free(p->replies);
    for (int i = 0; i < COLS_MAX; i++)
        es_pga_free(&p->cols[i]);
    free(p);
}

/* --- helpers --------------------------------------------------------------- */

/* qsort has no context argument; the projector is used by one thread. */
static _Thread_local const dom_evt *sort_evts;

static int order_cmp(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    const dom_evt *ex = &sort_evts[x], *ey = &sort_evts[y];
    int c = strcmp(ex->instance_id, ey->instance_id);
    if (!c)
        c = strcmp(ex->aggregate_id, ey->aggregate_id);
    return c ? c : (x > y) - (x < y);
}

static int user_cmp(const void *a, const void *b)
{
    const user_seq *x = a, *y = b;
    int c = strcmp(x->instance_id, y->instance_id);
    return c ? c : strcmp(x->user_id, y->user_id);
}

static int topic_cmp(const void *a, const void *b)
{
    return strcmp(((const reply_topic *)a)->id, ((const reply_topic *)b)->id);
}

static bool is_uuid(const char *s)
{
    for (int i = 0; i < DOM_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false; /* the store writes ids lowercase */
        }
    }
    return s[DOM_UUID_LEN] == '\0';
}

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        abort();
    return s;
}

/* A statement's rows go as one binary array per column (pgarr.h), the
 * projection's name first for the statements that take it. */
static void cols_begin(es_projector *p, const uint32_t *oids, size_t n) { es_pga_begin_all(p->cols, oids, n); }

/* Ids come from decoded events: valid UTF-8. Should one not be, the NULL
 * makes the statement refuse the batch (NOT NULL columns). */
static void col_text(es_pga *a, const char *v)
{
    if (!es_pga_text(a, v, SIZE_MAX))
        es_pga_null(a);
}

static es_result exec_cols(es_projector *p, const char *what, const char *sql, bool named, int ncols,
                           ExecStatusType want, PGresult **res, es_error *err)
{
    const char *fixed[COLS_MAX + 1] = {PROJ_AUTH_FACTORS}; /* the rest NULL: arrays */
    const char *values[COLS_MAX + 1];
    int lengths[COLS_MAX + 1], formats[COLS_MAX + 1];
    int n = ncols + (named ? 1 : 0);
    es_pga_params(n, named ? fixed : NULL, p->cols, values, lengths, formats);
    return es_store_exec_bin(p->st, what, sql, n, values, lengths, formats, want, res, err);
}

/* --- replies ----------------------------------------------------------------- */

char *es_success_reply(const dom_evt *last, const char *code)
{
    /* {"commandId":...,"httpStatus":200,"body":<the body's text>}: the
     * body is the text the processor stored as the outcome (jansson,
     * compact), so the reply is the stored outcome byte for byte, as the
     * processor's own replies are. */
    es_jw w = {0};
    es_jw_raw(&w, "{\"commandId\":", 13);
    if (!es_jw_str(&w, last->command_id, sizeof last->command_id))
        es_jw_raw(&w, "\"\"", 2); /* not UTF-8: never from a decoded event */
    es_jw_raw(&w, ",\"httpStatus\":200,\"body\":", 25);
    if (!code) {
        /* The common reply, written straight: dom_success_body's members in
         * its order, as jansson prints them compact (test_jsonw compares the
         * two), without a jansson tree per reply. */
        char seq[24], date[40];
        size_t mark = w.len;
        snprintf(seq, sizeof seq, "%" PRId64, last->sequence);
        dom_time_format(last->created_at_us, date, sizeof date);
#define LIT(text) (text), sizeof(text) - 1
        es_jw_raw(&w, LIT("{\"details\":{\"sequence\":"));
        es_jw_str(&w, seq, sizeof seq);
        es_jw_raw(&w, LIT(",\"creationDate\":"));
        es_jw_str(&w, date, sizeof date);
        es_jw_raw(&w, LIT(",\"changeDate\":"));
        es_jw_str(&w, date, sizeof date);
        es_jw_raw(&w, LIT(",\"resourceOwner\":"));
        if (es_jw_str(&w, last->resource_owner, sizeof last->resource_owner)) {
            es_jw_raw(&w, LIT("}}}"));
            return w.p;
        }
#undef LIT
        w.len = mark; /* not UTF-8: jansson decides (as the processor did) */
        w.p[w.len] = '\0';
    }
    json_t *b = dom_success_body(last, code);
    char *body_text = dump(b);
    json_decref(b);
    es_jw_raw(&w, body_text, strlen(body_text));
    es_jw_c(&w, '}');
    if (code)
        explicit_bzero(body_text, strlen(body_text));
    free(body_text);
    return w.p;
}

static reply_topic *find_topic(es_projector *p, const char *id)
{
    if (!p->n_topics)
        return NULL; /* p->topics may be NULL: no bsearch on it */
    reply_topic key;
    snprintf(key.id, sizeof key.id, "%s", id);
    return bsearch(&key, p->topics, p->n_topics, sizeof *p->topics, topic_cmp);
}

/* The reply topic the relay put beside event i, or NULL. */
static const char *given_topic(const char *const *reply_to, size_t i)
{
    return reply_to && reply_to[i] && reply_to[i][0] ? reply_to[i] : NULL;
}

/* The reply topics of the batch's completed commands: the one the relay
 * published beside the event (it read it from the accepted command's row),
 * else looked up in factord.commands, in one query for the whole batch.
 * Then build their replies in event order. */
static es_result prepare_replies(es_projector *p, const dom_evt *evts, const char *const *reply_to,
                                 const size_t *idx, size_t n, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    static const uint32_t topic_cols[] = {ES_PG_UUID, ES_PG_TEXT};
    cols_begin(p, topic_cols, 2);
    for (size_t k = 0; k < n; k++) {
        size_t i = idx ? idx[k] : k;
        const dom_evt *e = &evts[i];
        if (!e->last_of_command)
            continue;
        if (!is_uuid(e->command_id)) {
            es_warn("last event of a command without a usable command id; no reply", "instance",
                    e->instance_id, "user", e->aggregate_id, "sequence", es_log_i64(e->sequence));
            continue;
        }
        if (given_topic(reply_to, i)) {
            GROW(p, topics, p->n_topics + 1);
            reply_topic *t = &p->topics[p->n_topics++];
            snprintf(t->id, sizeof t->id, "%s", e->command_id);
            t->topic = strdup(reply_to[i]);
            if (!t->topic)
                abort();
            t->http_status = 200;
            t->replied = false;
            continue;
        }
        (void)es_pga_uuid(&p->cols[0], e->command_id); /* is_uuid above */
        col_text(&p->cols[1], e->instance_id);
    }
    size_t rows_n = 0;
    if (p->cols[0].n) {
        rc = exec_cols(p, "reply topics", SQL_REPLY_TOPICS, false, 2, PGRES_TUPLES_OK, &res, err);
        if (rc != ES_OK)
            goto out;
        rows_n = (size_t)PQntuples(res);
    }
    GROW(p, topics, p->n_topics + rows_n);
    for (size_t r = 0; r < rows_n; r++) {
        reply_topic *t = &p->topics[p->n_topics];
        snprintf(t->id, sizeof t->id, "%s", PQgetvalue(res, (int)r, 0));
        t->topic = strdup(PQgetvalue(res, (int)r, 1));
        if (!t->topic)
            abort();
        t->http_status = atoi(PQgetvalue(res, (int)r, 2));
        t->replied = false;
        p->n_topics++;
    }
    if (p->n_topics > 1)
        qsort(p->topics, p->n_topics, sizeof *p->topics, topic_cmp);

    GROW(p, replies, n);
    for (size_t k = 0; k < n; k++) {
        size_t i = idx ? idx[k] : k;
        const dom_evt *e = &evts[i];
        if (!e->last_of_command || !is_uuid(e->command_id))
            continue;
        reply_topic *t = find_topic(p, e->command_id);
        if (!t || t->http_status != 200) {
            es_warn("no accepted command for the last event of a command; no reply", "command_id",
                    e->command_id, "instance", e->instance_id, "user", e->aggregate_id);
            continue;
        }
        /* One reply per command and batch, even when the event came twice. */
        if (t->replied)
            continue;
        t->replied = true;
        char code[DOM_CODE_MAX * 2] = "";
        if (e->type == DOM_EVT_PHONE_CODE_ADDED && e->code_returned) {
            es_error derr = {0};
            if (!p->o.code_key || es_code_decrypt(p->o.code_key, e->instance_id, e->aggregate_id, e->code_enc,
                                                  code, sizeof code, &derr) != ES_OK) {
                /* The caller can ask for a new code; the projector must not
                 * stall every read model over one. */
                es_err("cannot decrypt the code of a returnCode reply; replying without it", "command_id",
                       e->command_id, "instance", e->instance_id, "user", e->aggregate_id, "reason",
                       p->o.code_key ? derr.text : "no code key");
                code[0] = '\0';
            }
        }
        char *value = es_success_reply(e, code[0] ? code : NULL);
        explicit_bzero(code, sizeof code);
        es_reply *rp = &p->replies[p->n_replies++];
        rp->topic = t->topic;
        rp->key = e->command_id; /* borrowed from the caller's batch */
        rp->key_len = strlen(e->command_id);
        rp->value = value;
        rp->value_len = strlen(value);
    }
out:
    PQclear(res);
    return rc;
}

/* --- one attempt ------------------------------------------------------------- */

static es_result attempt(es_projector *p, const dom_evt *evts, const char *const *reply_to, const size_t *idx,
                         size_t n, es_project_stats *stats, es_error *err)
{
    es_result rc;
    PGresult *res = NULL;
    size_t n_users = 0, n_changes = 0;
    memset(stats, 0, sizeof *stats);
    clear_replies(p);

    /* 1. Users in key order, each user's events in offset order. */
    GROW(p, order, n);
    for (size_t i = 0; i < n; i++)
        p->order[i] = idx ? idx[i] : i;
    sort_evts = evts;
    qsort(p->order, n, sizeof *p->order, order_cmp);
    GROW(p, users, n);
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &evts[p->order[k]];
        if (n_users && strcmp(p->users[n_users - 1].instance_id, e->instance_id) == 0 &&
            strcmp(p->users[n_users - 1].user_id, e->aggregate_id) == 0)
            continue;
        p->users[n_users++] = (user_seq){.instance_id = e->instance_id, .user_id = e->aggregate_id};
    }

    rc = es_store_begin(p->st, err);
    if (rc != ES_OK)
        return rc;

    /* 2. The applied sequences, locked. */
    static const uint32_t key_cols[] = {ES_PG_TEXT, ES_PG_TEXT};
    cols_begin(p, key_cols, 2);
    for (size_t u = 0; u < n_users; u++) {
        col_text(&p->cols[0], p->users[u].instance_id);
        col_text(&p->cols[1], p->users[u].user_id);
    }
    rc = exec_cols(p, "load sequences", SQL_LOAD_SEQUENCES, true, 2, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto fail;
    for (int r = 0; r < PQntuples(res); r++) {
        user_seq key = {.instance_id = PQgetvalue(res, r, 0), .user_id = PQgetvalue(res, r, 1)};
        user_seq *u = bsearch(&key, p->users, n_users, sizeof *p->users, user_cmp);
        if (!u) {
            rc = es_error_set(err, ES_EFATAL, "load sequences: a row the batch did not ask for");
            goto fail;
        }
        u->found = true;
        u->applied = strtoll(PQgetvalue(res, r, 2), NULL, 10);
    }
    PQclear(res);
    res = NULL;

    /* 3. Apply or skip, user by user. */
    GROW(p, changes, n * PROJ_AF_MAX_CHANGES);
    size_t k = 0;
    for (size_t u = 0; u < n_users; u++) {
        user_seq *us = &p->users[u];
        us->last = us->applied;
        for (; k < n; k++) {
            const dom_evt *e = &evts[p->order[k]];
            if (strcmp(e->instance_id, us->instance_id) != 0 || strcmp(e->aggregate_id, us->user_id) != 0)
                break;
            if (e->sequence <= us->last) {
                stats->skipped++;
                continue;
            }
            if (e->sequence != us->last + 1) {
                stats->gaps++;
                es_warn("gap in a user's events: applying after missing sequences", "instance", e->instance_id,
                        "user", e->aggregate_id, "applied", es_log_i64(us->last), "sequence",
                        es_log_i64(e->sequence));
            }
            n_changes += proj_auth_factors_reduce(e, &p->changes[n_changes]);
            us->last = e->sequence;
            stats->applied++;
        }
    }

    /* 4. Write: new users' sequences first (a racing projector fails here),
     * then the others, then the read-model rows. */
    static const uint32_t seq_cols[] = {ES_PG_TEXT, ES_PG_TEXT, ES_PG_INT8};
    for (int found = 0; found <= 1 && rc == ES_OK; found++) {
        cols_begin(p, seq_cols, 3);
        for (size_t u = 0; u < n_users; u++) {
            const user_seq *us = &p->users[u];
            if (us->last == us->applied || us->found != (bool)found)
                continue;
            col_text(&p->cols[0], us->instance_id);
            col_text(&p->cols[1], us->user_id);
            es_pga_i64(&p->cols[2], us->last);
        }
        if (!p->cols[0].n)
            continue;
        rc = found ? exec_cols(p, "update sequences", SQL_UPDATE_SEQUENCES, true, 3, PGRES_COMMAND_OK, &res, err)
                   : exec_cols(p, "insert sequences", SQL_INSERT_SEQUENCES, true, 3, PGRES_COMMAND_OK, &res, err);
        PQclear(res);
        res = NULL;
    }
    if (rc != ES_OK)
        goto fail;

    GROW(p, nets, n_changes);
    size_t n_nets = proj_af_fold(p->changes, n_changes, p->nets);
    static const uint32_t del_cols[] = {ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT};
    cols_begin(p, del_cols, 3);
    for (size_t i = 0; i < n_nets; i++) {
        const proj_af_net *net = &p->nets[i];
        const proj_auth_factor *f = &net->row;
        /* A user without an applied-sequence row has no read-model rows
         * either (both are written in the same transactions): nothing to
         * delete. Saves a statement's work per new user in a catch-up. */
        user_seq key = {.instance_id = f->instance_id, .user_id = f->user_id};
        const user_seq *owner = bsearch(&key, p->users, n_users, sizeof *p->users, user_cmp);
        if (net->del && (!owner || owner->found)) {
            col_text(&p->cols[0], f->instance_id);
            col_text(&p->cols[1], f->user_id);
            col_text(&p->cols[2], proj_af_type_name(f->type));
        }
    }
    if (p->cols[0].n) {
        rc = exec_cols(p, "delete auth factors", SQL_DELETE_FACTORS, false, 3, PGRES_COMMAND_OK, &res, err);
        PQclear(res);
        res = NULL;
        if (rc != ES_OK)
            goto fail;
    }
    static const uint32_t put_cols[] = {ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT,
                                        ES_PG_INT8, ES_PG_TIMESTAMPTZ, ES_PG_TIMESTAMPTZ, ES_PG_TEXT};
    cols_begin(p, put_cols, 8);
    for (size_t i = 0; i < n_nets; i++) {
        const proj_af_net *net = &p->nets[i];
        const proj_auth_factor *f = &net->row;
        if (!net->put)
            continue;
        col_text(&p->cols[0], f->instance_id);
        col_text(&p->cols[1], f->user_id);
        col_text(&p->cols[2], proj_af_type_name(f->type));
        col_text(&p->cols[3], proj_af_state_name(f->state));
        es_pga_i64(&p->cols[4], f->sequence);
        es_pga_time(&p->cols[5], f->created_at_us);
        es_pga_time(&p->cols[6], f->changed_at_us);
        col_text(&p->cols[7], f->resource_owner);
    }
    if (p->cols[0].n) {
        rc = exec_cols(p, "put auth factors", SQL_PUT_FACTORS, false, 8, PGRES_COMMAND_OK, &res, err);
        PQclear(res);
        res = NULL;
        if (rc != ES_OK)
            goto fail;
    }

    /* 5. Replies due (applied or skipped), then COMMIT. */
    rc = prepare_replies(p, evts, reply_to, idx, n, err);
    if (rc != ES_OK)
        goto fail;
    rc = es_store_commit(p->st, err);
    if (rc != ES_OK) {
        clear_replies(p);
        return rc;
    }
    stats->replies = p->n_replies;
    return ES_OK;
fail:
    PQclear(res);
    es_store_rollback(p->st);
    clear_replies(p);
    return rc;
}

es_result es_projector_run_batch(es_projector *p, const dom_evt *evts, const char *const *reply_to, size_t n,
                                 const es_reply **replies, size_t *n_replies, es_project_stats *stats,
                                 es_error *err)
{
    return es_projector_run_subset(p, evts, reply_to, NULL, n, replies, n_replies, stats, err);
}

es_result es_projector_run_subset(es_projector *p, const dom_evt *evts, const char *const *reply_to,
                                  const size_t *idx, size_t n, const es_reply **replies, size_t *n_replies,
                                  es_project_stats *stats, es_error *err)
{
    *replies = NULL;
    *n_replies = 0;
    if (n == 0) {
        memset(stats, 0, sizeof *stats);
        clear_replies(p);
        return ES_OK;
    }
    for (int tries = 1;; tries++) {
        es_result rc = attempt(p, evts, reply_to, idx, n, stats, err);
        stats->attempts = (size_t)tries;
        if (rc == ES_OK) {
            *replies = p->replies;
            *n_replies = p->n_replies;
            return ES_OK;
        }
        if (rc != ES_ECONFLICT)
            return rc;
        if (tries >= p->o.max_conflict_retries)
            return es_error_set(err, ES_ETRANSIENT, "batch still conflicting after %d attempts: %s", tries,
                                err ? err->text : "");
        es_debug("concurrency conflict, applying the batch again", "attempt", es_log_i64(tries), "sqlstate",
                 err ? err->sqlstate : "");
        es_sleep_ms(tries < 5 ? tries : 5 * tries);
    }
}

/* --- reading ------------------------------------------------------------------ */

static bool copy_col(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

es_result es_auth_factors_list(es_store *st, const char *instance_id, const char *user_id, proj_auth_factor *out,
                               size_t max, size_t *n, es_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {instance_id, user_id};
    *n = 0;
    es_result rc = es_store_exec(st, "list auth factors", SQL_LIST_FACTORS, 2, params, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto out;
    for (int r = 0; r < PQntuples(res) && *n < max; r++) {
        proj_auth_factor *f = &out[*n];
        memset(f, 0, sizeof *f);
        int type = proj_af_type_parse(PQgetvalue(res, r, 2));
        int state = proj_af_state_parse(PQgetvalue(res, r, 3));
        if (type < 0 || state < 0 || !copy_col(f->instance_id, sizeof f->instance_id, PQgetvalue(res, r, 0)) ||
            !copy_col(f->user_id, sizeof f->user_id, PQgetvalue(res, r, 1)) ||
            !copy_col(f->resource_owner, sizeof f->resource_owner, PQgetvalue(res, r, 7))) {
            rc = es_error_set(err, ES_EFATAL, "list auth factors: malformed row");
            goto out;
        }
        f->type = (proj_af_type)type;
        f->state = (proj_af_state)state;
        f->sequence = strtoll(PQgetvalue(res, r, 4), NULL, 10);
        f->created_at_us = strtoll(PQgetvalue(res, r, 5), NULL, 10);
        f->changed_at_us = strtoll(PQgetvalue(res, r, 6), NULL, 10);
        (*n)++;
    }
out:
    PQclear(res);
    return rc;
}
