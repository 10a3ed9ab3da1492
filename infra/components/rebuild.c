/*
 * infra/components/rebuild.c - rebuild a projection from the log into a shadow table
 * and swap it in (rebuild.h).
 *
 * A page is one keyset query (position > reached ORDER BY position LIMIT
 * page), folded in memory and written to the shadow with one statement per
 * table (json_to_recordset), so a page costs a few round trips whatever
 * its size. The user projection needs each touched user's state before the
 * page: it is read back from the shadow in one query per page, so memory
 * stays bounded by the page, not by the number of users. The auth-factor
 * model needs no read: its row changes (delete, put keeping created_at,
 * sequence only forward) are written exactly as the projector writes them.
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

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/base/log.h"
#include "projections/auth_factors.h"

/* Advisory lock class 'frbd' (two-int form, like the store's): one
 * rebuild per projection and database at a time. */
#define RB_LOCK_CLASS "1718772324"

/* --- the tables of each target ------------------------------------------- */

typedef struct {
    const char *live;     /* factord.<live> */
    const char *shadow;   /* factord.<live>_rebuild */
    const char *retired;  /* factord.<live>_retired, between swap and drop */
} rb_table;

static const rb_table rb_users_tables[] = {{"users", "users_rebuild", "users_retired"}};
/* Lock order: the projector locks projected_sequences rows first. */
static const rb_table rb_af_tables[] = {
    {"projected_sequences", "projected_sequences_rebuild", "projected_sequences_retired"},
    {"auth_factors", "auth_factors_rebuild", "auth_factors_retired"},
};

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

/* --- SQL --------------------------------------------------------------------- */

/* Every event of the page, whatever its aggregate (the fold skips what is
 * not a user's): a filter on aggregate_type here made the planner, on a
 * log never analysed, guess that few rows match and read the whole table
 * and sort it for every page instead of walking the position index. */
static const char SQL_READ_PAGE[] =
    "SELECT e.instance_id, e.aggregate_id, e.sequence, e.position, e.type, e.revision,"
    "       (extract(epoch FROM e.created_at) * 1000000)::bigint, e.creator, e.resource_owner,"
    "       coalesce(e.command_id::text, ''), e.last_of_command, e.payload::text,"
    "       e.aggregate_type = 'user'"
    "  FROM factord.events e"
    " WHERE e.position > $1::bigint"
    " ORDER BY e.position LIMIT $2::bigint";
enum { EC_INSTANCE, EC_AGGREGATE, EC_SEQUENCE, EC_POSITION, EC_TYPE, EC_REVISION, EC_CREATED,
       EC_CREATOR, EC_OWNER, EC_COMMAND, EC_LAST, EC_PAYLOAD, EC_IS_USER };

/* One primary-key probe per user (LIMIT 1 keeps the LATERAL subquery from
 * becoming a join): the shadow is new and grows during the rebuild, so its
 * statistics lag, and a join was planned as a hash join over a sequential
 * scan of the whole shadow, once per page (a rebuild of 1,000,000 events
 * ran at 33,000 events/s instead of 150,000). */
static const char SQL_LOAD_USERS[] =
    "SELECT u.* FROM json_to_recordset($1::json) AS r(i text, u text)"
    " CROSS JOIN LATERAL ("
    "   SELECT u.instance_id, u.user_id, u.resource_owner, u.user_name, u.status, u.sequence,"
    "          u.phone, u.phone_verified, u.verified_phone, u.otp_sms, u.code_enc,"
    "          (extract(epoch FROM u.code_expires_at) * 1000000)::bigint,"
    "          (extract(epoch FROM u.created_at) * 1000000)::bigint,"
    "          (extract(epoch FROM u.changed_at) * 1000000)::bigint"
    "     FROM factord.users_rebuild u WHERE u.instance_id = r.i AND u.user_id = r.u LIMIT 1) AS u";
enum { UC_INSTANCE, UC_USER, UC_OWNER, UC_NAME, UC_STATUS, UC_SEQUENCE, UC_PHONE,
       UC_PHONE_VERIFIED, UC_VERIFIED_PHONE, UC_OTP_SMS, UC_CODE_ENC, UC_CODE_EXPIRES,
       UC_CREATED, UC_CHANGED };

/* Removed users first: a name a page frees (user.removed) must be free in
 * the partial unique index before another user of the page takes it. */
static const char SQL_PUT_USERS[] =
    "INSERT INTO factord.users_rebuild AS u (instance_id, user_id, resource_owner, user_name,"
    "    status, sequence, phone, phone_verified, verified_phone, otp_sms, code_enc,"
    "    code_expires_at, created_at, changed_at)"
    " SELECT r.instance_id, r.user_id, r.resource_owner, r.user_name, r.status, r.sequence,"
    "    r.phone, r.phone_verified, r.verified_phone, r.otp_sms, r.code_enc,"
    "    r.code_expires_at, r.created_at, r.changed_at"
    "   FROM json_to_recordset($1::json) AS r(instance_id text, user_id text,"
    "    resource_owner text, user_name text, status text, sequence bigint, phone text,"
    "    phone_verified boolean, verified_phone text, otp_sms boolean, code_enc text,"
    "    code_expires_at timestamptz, created_at timestamptz, changed_at timestamptz)"
    "  ORDER BY r.status <> 'removed', r.instance_id, r.user_id"
    " ON CONFLICT (instance_id, user_id) DO UPDATE SET"
    "    resource_owner = EXCLUDED.resource_owner, user_name = EXCLUDED.user_name,"
    "    status = EXCLUDED.status, sequence = EXCLUDED.sequence, phone = EXCLUDED.phone,"
    "    phone_verified = EXCLUDED.phone_verified, verified_phone = EXCLUDED.verified_phone,"
    "    otp_sms = EXCLUDED.otp_sms, code_enc = EXCLUDED.code_enc,"
    "    code_expires_at = EXCLUDED.code_expires_at, created_at = EXCLUDED.created_at,"
    "    changed_at = EXCLUDED.changed_at";

/* As the projector's statements (infra/components/projector.c), on the shadows. */
static const char SQL_PUT_SEQUENCES[] =
    "INSERT INTO factord.projected_sequences_rebuild AS s (projection, instance_id, user_id, sequence)"
    " SELECT $1, r.i, r.u, r.s FROM json_to_recordset($2::json) AS r(i text, u text, s bigint)"
    " ON CONFLICT (projection, instance_id, user_id) DO UPDATE SET sequence = EXCLUDED.sequence,"
    "    updated_at = now() WHERE s.sequence < EXCLUDED.sequence";

static const char SQL_DELETE_FACTORS[] =
    "DELETE FROM factord.auth_factors_rebuild"
    " WHERE ctid = ANY (ARRAY("
    "   SELECT f.ctid FROM json_to_recordset($1::json) AS r(i text, u text, t text)"
    "    CROSS JOIN LATERAL (SELECT f.ctid FROM factord.auth_factors_rebuild f"
    "                         WHERE f.instance_id = r.i AND f.user_id = r.u AND f.type = r.t"
    "                         LIMIT 1) AS f))";

static const char SQL_PUT_FACTORS[] =
    "INSERT INTO factord.auth_factors_rebuild AS f (instance_id, user_id, type, state, sequence,"
    "    created_at, changed_at, resource_owner)"
    " SELECT r.i, r.u, r.t, r.state, r.s, r.created, r.changed, r.owner"
    "   FROM json_to_recordset($1::json) AS r(i text, u text, t text, state text, s bigint,"
    "    created timestamptz, changed timestamptz, owner text)"
    " ON CONFLICT (instance_id, user_id, type) DO UPDATE SET state = EXCLUDED.state,"
    "    sequence = EXCLUDED.sequence, changed_at = EXCLUDED.changed_at,"
    "    resource_owner = EXCLUDED.resource_owner";

/* --- context ------------------------------------------------------------------ */

typedef struct {
    es_store *st;
    es_rebuild_opts o;
    const rb_table *tables;
    size_t n_tables;
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
} rb_ctx;

static void *rb_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static char *rb_dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        abort();
    return s;
}

static void rb_jset(json_t *o, const char *key, json_t *v)
{
    /* Values come from decoded events and rows (valid UTF-8): only OOM fails. */
    if (!v || json_object_set_new(o, key, v) != 0)
        abort();
}

static json_t *rb_jtime(int64_t us)
{
    char buf[40];
    dom_time_format(us, buf, sizeof buf);
    return buf[0] ? json_string(buf) : json_null();
}

/* One statement without data (DDL, locks, settings). */
static es_result rb_exec(rb_ctx *c, const char *what, const char *sql, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = es_store_exec(c->st, what, sql, 0, NULL, PGRES_COMMAND_OK, &res, err);
    if (rc != ES_OK && PQresultStatus(res) == PGRES_TUPLES_OK)
        rc = ES_OK; /* SELECT ... FOR UPDATE and friends */
    PQclear(res);
    return rc;
}

/* Same for each table of c, with {L}, {S} and {R} in tmpl replaced by
 * its live, shadow and retired names (this file's constants). */
static es_result rb_exec_each(rb_ctx *c, const char *what, const char *tmpl, es_error *err)
{
    for (size_t i = 0; i < c->n_tables; i++) {
        char sql[4096];
        size_t len = 0;
        const rb_table *t = &c->tables[i];
        for (const char *p = tmpl; *p && len + 64 < sizeof sql;) {
            const char *name = NULL;
            if (p[0] == '{' && p[1] && p[2] == '}')
                name = p[1] == 'L' ? t->live : p[1] == 'S' ? t->shadow : p[1] == 'R' ? t->retired : NULL;
            if (name) {
                len += (size_t)snprintf(sql + len, sizeof sql - len, "%s", name);
                p += 3;
            } else {
                sql[len++] = *p++;
            }
        }
        sql[len] = '\0';
        es_result rc = rb_exec(c, what, sql, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
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

/* --- reading a page --------------------------------------------------------------- */

static bool rb_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}


static es_result rb_row_to_event(const PGresult *res, int r, dom_evt *evt, es_error *err)
{
    int64_t revision = 0;
    json_error_t jerr;
    memset(evt, 0, sizeof *evt);
    if (!rb_copy(evt->instance_id, sizeof evt->instance_id, PQgetvalue(res, r, EC_INSTANCE)) ||
        !rb_copy(evt->aggregate_id, sizeof evt->aggregate_id, PQgetvalue(res, r, EC_AGGREGATE)) ||
        !rb_copy(evt->creator, sizeof evt->creator, PQgetvalue(res, r, EC_CREATOR)) ||
        !rb_copy(evt->resource_owner, sizeof evt->resource_owner, PQgetvalue(res, r, EC_OWNER)) ||
        !rb_copy(evt->command_id, sizeof evt->command_id, PQgetvalue(res, r, EC_COMMAND)) ||
        !es_parse_i64(PQgetvalue(res, r, EC_SEQUENCE), &evt->sequence) ||
        !es_parse_i64(PQgetvalue(res, r, EC_POSITION), &evt->position) ||
        !es_parse_i64(PQgetvalue(res, r, EC_CREATED), &evt->created_at_us) ||
        !es_parse_i64(PQgetvalue(res, r, EC_REVISION), &revision))
        return es_error_set(err, ES_EFATAL, "rebuild: malformed events row");
    evt->revision = (int)revision;
    evt->last_of_command = PQgetvalue(res, r, EC_LAST)[0] == 't';
    evt->type = dom_evt_type_parse(PQgetvalue(res, r, EC_TYPE));
    if (evt->type == DOM_EVT_UNKNOWN)
        return es_error_set(err, ES_EFATAL, "rebuild: unknown event type '%.64s' at position %" PRId64,
                            PQgetvalue(res, r, EC_TYPE), evt->position);
    json_t *j = json_loads(PQgetvalue(res, r, EC_PAYLOAD), JSON_DECODE_ANY, &jerr);
    if (!j)
        return es_error_set(err, ES_EFATAL, "rebuild: payload at position %" PRId64 ": %s", evt->position,
                            jerr.text);
    es_error perr = {0};
    es_result rc = dom_evt_payload_from_json(evt, j, &perr);
    json_decref(j);
    if (rc != ES_OK)
        return es_error_set(err, ES_EFATAL, "rebuild: payload at position %" PRId64 ": %.400s", evt->position,
                            perr.text);
    return ES_OK;
}

/* The next page_size events after c->reached: *rows of them read, the
 * last at *last; the users' events of them into c->evts, *n of them. */
static es_result rb_read_page(rb_ctx *c, size_t *rows, int64_t *last, size_t *n, es_error *err)
{
    char after[24], limit[24];
    PGresult *res = NULL;
    *n = *rows = 0;
    snprintf(after, sizeof after, "%" PRId64, c->reached);
    snprintf(limit, sizeof limit, "%d", c->o.page_size);
    const char *params[] = {after, limit};
    es_result rc = es_store_exec(c->st, "rebuild: read events", SQL_READ_PAGE, 2, params, PGRES_TUPLES_OK, &res,
                                 err);
    if (rc != ES_OK)
        goto out;
    size_t got = (size_t)PQntuples(res), k = 0;
    for (size_t i = 0; i < got && rc == ES_OK; i++) {
        if (PQgetvalue(res, (int)i, EC_IS_USER)[0] != 't')
            continue;
        rc = rb_row_to_event(res, (int)i, &c->evts[k++], err);
    }
    if (rc == ES_OK && got && !es_parse_i64(PQgetvalue(res, (int)got - 1, EC_POSITION), last))
        rc = es_error_set(err, ES_EFATAL, "rebuild: read events: malformed position");
    if (rc == ES_OK) {
        *rows = got;
        *n = k;
    }
out:
    PQclear(res);
    return rc;
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

static int rb_user_cmp(const void *a, const void *b)
{
    const dom_user *x = a, *y = b;
    int d = strcmp(x->instance_id, y->instance_id);
    return d ? d : strcmp(x->user_id, y->user_id);
}

static es_result rb_row_to_user(const PGresult *res, int r, dom_user *u, es_error *err)
{
    const char *status = PQgetvalue(res, r, UC_STATUS);
    if (!rb_copy(u->resource_owner, sizeof u->resource_owner, PQgetvalue(res, r, UC_OWNER)) ||
        !rb_copy(u->user_name, sizeof u->user_name, PQgetvalue(res, r, UC_NAME)) ||
        !rb_copy(u->phone, sizeof u->phone, PQgetvalue(res, r, UC_PHONE)) ||
        !rb_copy(u->verified_phone, sizeof u->verified_phone, PQgetvalue(res, r, UC_VERIFIED_PHONE)) ||
        !rb_copy(u->code_enc, sizeof u->code_enc, PQgetvalue(res, r, UC_CODE_ENC)) ||
        !es_parse_i64(PQgetvalue(res, r, UC_SEQUENCE), &u->sequence) ||
        !es_parse_i64(PQgetvalue(res, r, UC_CREATED), &u->created_at_us) ||
        !es_parse_i64(PQgetvalue(res, r, UC_CHANGED), &u->changed_at_us) ||
        (!PQgetisnull(res, r, UC_CODE_EXPIRES) &&
         !es_parse_i64(PQgetvalue(res, r, UC_CODE_EXPIRES), &u->code_expires_at_us)))
        return es_error_set(err, ES_EFATAL, "rebuild: malformed row in the users shadow");
    u->status = dom_user_status_parse(status);
    u->phone_verified = PQgetvalue(res, r, UC_PHONE_VERIFIED)[0] == 't';
    u->otp_sms = PQgetvalue(res, r, UC_OTP_SMS)[0] == 't';
    return ES_OK;
}

/* The users of the page: their shadow rows, each user's events folded
 * through dom_user_apply, the results upserted. */
static es_result rb_fold_users(rb_ctx *c, size_t n, es_error *err)
{
    PGresult *res = NULL;
    size_t n_users = 0;
    es_result rc;

    rb_sort_page(c, n);
    json_t *keys = json_array();
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        if (k && rb_same_user(e, &c->evts[c->order[k - 1]]))
            continue;
        dom_user *u = &c->users[n_users++];
        memset(u, 0, sizeof *u);
        memcpy(u->instance_id, e->instance_id, sizeof u->instance_id);
        memcpy(u->user_id, e->aggregate_id, sizeof u->user_id);
        json_t *r = json_object();
        rb_jset(r, "i", json_string(e->instance_id));
        rb_jset(r, "u", json_string(e->aggregate_id));
        json_array_append_new(keys, r);
    }
    char *text = rb_dump(keys);
    const char *p1[] = {text};
    rc = es_store_exec(c->st, "rebuild: load users", SQL_LOAD_USERS, 1, p1, PGRES_TUPLES_OK, &res, err);
    free(text);
    if (rc != ES_OK)
        goto out;
    /* c->users is in strcmp order of (instance, user), as the page was sorted. */
    for (int r = 0; r < PQntuples(res); r++) {
        dom_user probe;
        if (!rb_copy(probe.instance_id, sizeof probe.instance_id, PQgetvalue(res, r, UC_INSTANCE)) ||
            !rb_copy(probe.user_id, sizeof probe.user_id, PQgetvalue(res, r, UC_USER))) {
            rc = es_error_set(err, ES_EFATAL, "rebuild: malformed row in the users shadow");
            goto out;
        }
        dom_user *u = bsearch(&probe, c->users, n_users, sizeof *c->users, rb_user_cmp);
        if (!u) {
            rc = es_error_set(err, ES_EFATAL, "rebuild: the shadow returned a user not asked for");
            goto out;
        }
        rc = rb_row_to_user(res, r, u, err);
        if (rc != ES_OK)
            goto out;
    }
    PQclear(res);
    res = NULL;

    size_t u = 0;
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        if (k && !rb_same_user(e, &c->evts[c->order[k - 1]]))
            u++;
        dom_user_apply(&c->users[u], e);
    }

    json_t *rows = json_array();
    for (size_t i = 0; i < n_users; i++) {
        const dom_user *s = &c->users[i];
        if (s->status == DOM_USER_NONE)
            continue; /* as the store: only users that exist have a row */
        json_t *o = json_object();
        rb_jset(o, "instance_id", json_string(s->instance_id));
        rb_jset(o, "user_id", json_string(s->user_id));
        rb_jset(o, "resource_owner", json_string(s->resource_owner));
        rb_jset(o, "user_name", json_string(s->user_name));
        rb_jset(o, "status", json_string(dom_user_status_name(s->status)));
        rb_jset(o, "sequence", json_integer(s->sequence));
        rb_jset(o, "phone", json_string(s->phone));
        rb_jset(o, "phone_verified", json_boolean(s->phone_verified));
        rb_jset(o, "verified_phone", json_string(s->verified_phone));
        rb_jset(o, "otp_sms", json_boolean(s->otp_sms));
        rb_jset(o, "code_enc", json_string(s->code_enc));
        if (s->code_expires_at_us)
            rb_jset(o, "code_expires_at", rb_jtime(s->code_expires_at_us));
        rb_jset(o, "created_at", rb_jtime(s->created_at_us));
        rb_jset(o, "changed_at", rb_jtime(s->changed_at_us));
        json_array_append_new(rows, o);
    }
    if (json_array_size(rows) == 0) {
        json_decref(rows);
        goto out;
    }
    text = rb_dump(rows);
    const char *p2[] = {text};
    rc = es_store_exec(c->st, "rebuild: write users", SQL_PUT_USERS, 1, p2, PGRES_COMMAND_OK, &res, err);
    free(text);
out:
    PQclear(res);
    return rc;
}

static es_result rb_exec_rows(rb_ctx *c, const char *what, const char *sql, bool named, json_t *rows,
                              es_error *err)
{
    if (json_array_size(rows) == 0) {
        json_decref(rows);
        return ES_OK;
    }
    PGresult *res = NULL;
    char *text = rb_dump(rows);
    const char *params[] = {PROJ_AUTH_FACTORS, text};
    es_result rc = es_store_exec(c->st, what, sql, named ? 2 : 1, named ? params : params + 1,
                                 PGRES_COMMAND_OK, &res, err);
    free(text);
    PQclear(res);
    return rc;
}

/* The page through the auth-factor reducer, user by user, in sequence
 * order; the net row changes and each user's last sequence written. */
static es_result rb_fold_auth_factors(rb_ctx *c, size_t n, es_error *err)
{
    size_t n_changes = 0;
    json_t *seqs = json_array();
    rb_sort_page(c, n);
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &c->evts[c->order[k]];
        n_changes += proj_auth_factors_reduce(e, &c->changes[n_changes]);
        if (k + 1 < n && rb_same_user(e, &c->evts[c->order[k + 1]]))
            continue;
        json_t *r = json_object();
        rb_jset(r, "i", json_string(e->instance_id));
        rb_jset(r, "u", json_string(e->aggregate_id));
        rb_jset(r, "s", json_integer(e->sequence));
        json_array_append_new(seqs, r);
    }
    size_t n_nets = proj_af_fold(c->changes, n_changes, c->nets);
    json_t *dels = json_array(), *puts = json_array();
    for (size_t i = 0; i < n_nets; i++) {
        const proj_af_net *net = &c->nets[i];
        const proj_auth_factor *f = &net->row;
        json_t *r = json_object();
        rb_jset(r, "i", json_string(f->instance_id));
        rb_jset(r, "u", json_string(f->user_id));
        rb_jset(r, "t", json_string(proj_af_type_name(f->type)));
        if (net->del)
            json_array_append(dels, r);
        if (net->put) {
            rb_jset(r, "state", json_string(proj_af_state_name(f->state)));
            rb_jset(r, "s", json_integer(f->sequence));
            rb_jset(r, "created", rb_jtime(f->created_at_us));
            rb_jset(r, "changed", rb_jtime(f->changed_at_us));
            rb_jset(r, "owner", json_string(f->resource_owner));
            json_array_append(puts, r);
        }
        json_decref(r);
    }
    es_result rc = rb_exec_rows(c, "rebuild: write sequences", SQL_PUT_SEQUENCES, true, seqs, err);
    if (rc == ES_OK)
        rc = rb_exec_rows(c, "rebuild: delete auth factors", SQL_DELETE_FACTORS, false, dels, err);
    else
        json_decref(dels);
    if (rc == ES_OK)
        rc = rb_exec_rows(c, "rebuild: put auth factors", SQL_PUT_FACTORS, false, puts, err);
    else
        json_decref(puts);
    return rc;
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
        es_result rc = rb_read_page(c, &rows, &last, &n, err);
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
        es_error herr = {0};
        if (es_store_head(c->st, &c->head, &herr) != ES_OK)
            c->head = c->reached;
        rb_report(c);
        if (rows < (size_t)c->o.page_size)
            return ES_OK;
    }
}

/* --- set-up, swap, clean-up ----------------------------------------------------------- */

/* Shadow tables shaped like the live ones, with the live tables' storage
 * options (fillfactor), comment and grants, which LIKE does not copy. */
static es_result rb_create_shadows(rb_ctx *c, es_error *err)
{
    es_result rc = rb_exec_each(c, "rebuild: drop stale tables",
                                "DROP TABLE IF EXISTS factord.{S}, factord.{R}", err);
    if (rc == ES_OK)
        rc = rb_exec_each(c, "rebuild: create shadow",
                          "CREATE TABLE factord.{S} (LIKE factord.{L} INCLUDING ALL)", err);
    if (rc == ES_OK)
        rc = rb_exec_each(
            c, "rebuild: copy table properties",
            "DO $rebuild$ DECLARE r record; live regclass := 'factord.{L}'; BEGIN"
            "  SELECT c.reloptions, obj_description(c.oid, 'pg_class') AS comment INTO r"
            "    FROM pg_class c WHERE c.oid = live;"
            "  IF r.reloptions IS NOT NULL THEN"
            "    EXECUTE format('ALTER TABLE factord.{S} SET (%s)', array_to_string(r.reloptions, ', '));"
            "  END IF;"
            "  IF r.comment IS NOT NULL THEN"
            "    EXECUTE format('COMMENT ON TABLE factord.{S} IS %L', r.comment);"
            "  END IF;"
            "  FOR r IN SELECT a.privilege_type, a.grantee, a.is_grantable"
            "             FROM pg_class c, aclexplode(c.relacl) a"
            "            WHERE c.oid = live AND a.grantee <> c.relowner LOOP"
            "    EXECUTE format('GRANT %s ON factord.{S} TO %s%s', r.privilege_type,"
            "      CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r.grantee)) END,"
            "      CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);"
            "  END LOOP;"
            " END $rebuild$",
            err);
    return rc;
}

/* Inside the final transaction, after the delta: live -> retired, shadow ->
 * live, and the index names (constraints follow their index) swapped
 * between the two, matched by definition, so the live table keeps the
 * names migrations and error messages know. */
static es_result rb_swap(rb_ctx *c, es_error *err)
{
    es_result rc = rb_exec_each(c, "rebuild: retire the live table",
                                "ALTER TABLE factord.{L} RENAME TO {R}", err);
    if (rc == ES_OK)
        rc = rb_exec_each(c, "rebuild: rename the shadow", "ALTER TABLE factord.{S} RENAME TO {L}", err);
    if (rc == ES_OK)
        rc = rb_exec_each(
            c, "rebuild: swap index names",
            "DO $rebuild$ DECLARE r record; BEGIN"
            "  FOR r IN SELECT o.relname AS old_name, n.relname AS new_name"
            "    FROM (SELECT c.relname, i.indisunique,"
            "                 regexp_replace(pg_get_indexdef(i.indexrelid), '^.*? USING ', '') AS def"
            "            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            "           WHERE i.indrelid = 'factord.{R}'::regclass) o"
            "    JOIN (SELECT c.relname, i.indisunique,"
            "                 regexp_replace(pg_get_indexdef(i.indexrelid), '^.*? USING ', '') AS def"
            "            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            "           WHERE i.indrelid = 'factord.{L}'::regclass) n USING (indisunique, def)"
            "  LOOP"
            "    EXECUTE format('ALTER INDEX factord.%I RENAME TO factord_rebuild_swap', r.old_name);"
            "    EXECUTE format('ALTER INDEX factord.%I RENAME TO %I', r.new_name, r.old_name);"
            "    EXECUTE format('ALTER INDEX factord.factord_rebuild_swap RENAME TO %I', r.new_name);"
            "  END LOOP;"
            " END $rebuild$",
            err);
    return rc;
}

/* The locked final step: one transaction. ES_ECONFLICT: a lock was not
 * granted within the lock timeout (nothing changed; catch up and retry). */
static es_result rb_final(rb_ctx *c, es_error *err)
{
    char sql[256];
    int64_t locked_at = 0;
    err->sqlstate[0] = '\0';
    es_result rc = es_store_begin(c->st, err);
    if (rc != ES_OK)
        return rc;
    snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %d", c->o.lock_timeout_ms);
    rc = rb_exec(c, "rebuild: lock timeout", sql, err);
    if (rc == ES_OK)
        rc = rb_exec(c, "rebuild: synchronous commit", "SET LOCAL synchronous_commit = on", err);
    /* The live tables first (the processor locks user rows before the
     * counter; the projector locks sequences before factors), then the
     * counter: from here no event commits until we do. */
    if (rc == ES_OK)
        rc = rb_exec(c, "rebuild: lock the live tables",
                     c->o.target == ES_REBUILD_USERS
                         ? "LOCK TABLE factord.users IN ACCESS EXCLUSIVE MODE"
                         : "LOCK TABLE factord.projected_sequences, factord.auth_factors IN ACCESS EXCLUSIVE MODE",
                     err);
    if (rc == ES_OK)
        rc = rb_exec(c, "rebuild: lock the position counter",
                     "SELECT value FROM factord.position_counter WHERE id = 1 FOR UPDATE", err);
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
        rc = rb_exec(c, "rebuild: keep other projections' sequences",
                     "INSERT INTO factord.projected_sequences_rebuild"
                     " SELECT * FROM factord.projected_sequences WHERE projection <> '" PROJ_AUTH_FACTORS "'",
                     err);
        if (rc != ES_OK)
            goto fail;
    }
    es_failpoint("rebuild.before_swap");
    rc = rb_swap(c, err);
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

static es_result rb_lock(rb_ctx *c, bool lock, es_error *err)
{
    char sql[160];
    PGresult *res = NULL;
    const char *name = es_rebuild_target_name(c->o.target);
    snprintf(sql, sizeof sql, "SELECT pg_%sadvisory_%slock(" RB_LOCK_CLASS ", hashtext($1))",
             lock ? "try_" : "", lock ? "" : "un");
    const char *params[] = {name};
    es_result rc = es_store_exec(c->st, "rebuild: advisory lock", sql, 1, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && lock && PQgetvalue(res, 0, 0)[0] != 't')
        rc = es_error_set(err, ES_EINVAL, "another rebuild of %s is running on this database", name);
    PQclear(res);
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
        c.tables = rb_users_tables;
        c.n_tables = sizeof rb_users_tables / sizeof rb_users_tables[0];
    } else if (c.o.target == ES_REBUILD_AUTH_FACTORS) {
        c.tables = rb_af_tables;
        c.n_tables = sizeof rb_af_tables / sizeof rb_af_tables[0];
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
    }

    rc = rb_lock(&c, true, err);
    if (rc != ES_OK)
        goto out;
    locked = true;
    /* 1-2. A fresh shadow. The shadow is disposable until the swap. */
    rc = rb_create_shadows(&c, err);
    if (rc == ES_OK)
        rc = rb_exec(&c, "rebuild: synchronous commit", "SET synchronous_commit = off", err);
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
    rc = rb_exec_each(&c, "rebuild: analyze the shadow", "ANALYZE factord.{S}", err);
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
    if (rb_exec_each(&c, "rebuild: drop the retired table", "DROP TABLE factord.{R}", &derr) != ES_OK)
        es_warn("rebuild: cannot drop the retired table; the next rebuild drops it", "error", derr.text);
    PGresult *res = NULL;
    if (es_store_exec(st, "rebuild: count",
                      c.o.target == ES_REBUILD_USERS ? "SELECT count(*) FROM factord.users"
                                                     : "SELECT count(*) FROM factord.auth_factors",
                      0, NULL, PGRES_TUPLES_OK, &res, &derr) == ES_OK)
        stats->rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
out:
    /* Without the lock the shadow is another rebuild's: leave it alone. */
    if (rc != ES_OK && locked && PQstatus(es_store_conn(st)) == CONNECTION_OK) {
        es_store_rollback(st);
        es_error derr2 = {0};
        if (rb_exec_each(&c, "rebuild: drop the shadow", "DROP TABLE IF EXISTS factord.{S}", &derr2) != ES_OK)
            es_warn("rebuild: cannot drop the shadow; the next rebuild drops it", "error", derr2.text);
    }
    if (PQstatus(es_store_conn(st)) == CONNECTION_OK) {
        es_error uerr = {0};
        if (locked && rb_lock(&c, false, &uerr) != ES_OK)
            es_debug("rebuild: advisory unlock failed", "error", uerr.text);
        es_store_rollback(st);
        PQclear(PQexec(es_store_conn(st), "RESET synchronous_commit"));
    }
    free(c.evts);
    free(c.order);
    free(c.users);
    free(c.changes);
    free(c.nets);
    return rc;
}
