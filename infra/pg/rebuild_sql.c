/*
 * infra/pg/rebuild_sql.c - the SQL of `factord rebuild` (rebuild_sql.h).
 *
 * The statements without data (DDL, locks, settings) are written once per
 * table set, with {L}, {S} and {R} standing for each table's live, shadow
 * and retired names; the page statements carry their rows as one JSON
 * array (json_to_recordset). The plans matter at a million events: see
 * the comments at each statement.
 */
#include "infra/pg/rebuild_sql.h"

#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/util.h"
#include "infra/pg/piikeys.h"

/* Advisory lock class 'frbd' (two-int form, like the store's): one
 * rebuild per projection and database at a time. */
#define RBSQL_LOCK_CLASS "1718772324"

/* --- the tables of each set ------------------------------------------------- */

typedef struct {
    const char *live;     /* factord.<live> */
    const char *shadow;   /* factord.<live>_rebuild */
    const char *retired;  /* factord.<live>_retired, between swap and drop */
} rbsql_table;

static const rbsql_table rbsql_users[] = {{"users", "users_rebuild", "users_retired"}};
/* Lock order: the projector locks projected_sequences rows first, then
 * writes auth_factors, then user_views. */
static const rbsql_table rbsql_af[] = {
    {"projected_sequences", "projected_sequences_rebuild", "projected_sequences_retired"},
    {"auth_factors", "auth_factors_rebuild", "auth_factors_retired"},
    {"user_views", "user_views_rebuild", "user_views_retired"},
};

static const rbsql_table *rbsql_tables_of(es_rbsql_tables t, size_t *n)
{
    if (t == ES_RBSQL_USERS) {
        *n = sizeof rbsql_users / sizeof rbsql_users[0];
        return rbsql_users;
    }
    if (t == ES_RBSQL_AUTH_FACTORS) {
        *n = sizeof rbsql_af / sizeof rbsql_af[0];
        return rbsql_af;
    }
    *n = 0;
    return NULL;
}

/* --- statements -------------------------------------------------------------- */

/* Every event of the page, whatever its aggregate (the fold skips what is
 * not a user's): a filter on aggregate_type here made the planner, on a
 * log never analysed, guess that few rows match and read the whole table
 * and sort it for every page instead of walking the position index. */
static const char SQL_READ_PAGE[] =
    "SELECT " ES_STORE_EVENT_COLUMNS ", e.aggregate_type = 'user'"
    "  FROM factord.events e"
    " WHERE e.position > $1::bigint"
    " ORDER BY e.position LIMIT $2::bigint";
enum { RBSQL_COL_IS_USER = ES_STORE_EVENT_NCOLUMNS };

/* One primary-key probe per user (LIMIT 1 keeps the LATERAL subquery from
 * becoming a join): the shadow is new and grows during the rebuild, so its
 * statistics lag, and a join was planned as a hash join over a sequential
 * scan of the whole shadow, once per page (a rebuild of 1,000,000 events
 * ran at 33,000 events/s instead of 150,000). */
static const char SQL_LOAD_USERS[] =
    "SELECT u.* FROM json_to_recordset($1::json) AS r(i text, u text)"
    " CROSS JOIN LATERAL ("
    "   SELECT " ES_STORE_USER_COLUMNS
    "     FROM factord.users_rebuild u WHERE u.instance_id = r.i AND u.user_id = r.u LIMIT 1) AS u";

/* Removed users first: a name a page frees (user.removed) must be free in
 * the partial unique index before another user of the page takes it. */
static const char SQL_PUT_USERS[] =
    "INSERT INTO factord.users_rebuild AS u (instance_id, user_id, resource_owner, user_name,"
    "    status, sequence, phone, phone_verified, verified_phone, otp_sms, code_enc,"
    "    code_expires_at, created_at, changed_at, otp_code_enc, otp_code_expires_at, otp_failed,"
    "    otp_code_session)"
    " SELECT r.instance_id, r.user_id, r.resource_owner, r.user_name, r.status, r.sequence,"
    "    r.phone, r.phone_verified, r.verified_phone, r.otp_sms, r.code_enc,"
    "    r.code_expires_at, r.created_at, r.changed_at, r.otp_code_enc, r.otp_code_expires_at,"
    "    r.otp_failed, coalesce(r.otp_code_session, '')"
    "   FROM json_to_recordset($1::json) AS r(instance_id text, user_id text,"
    "    resource_owner text, user_name text, status text, sequence bigint, phone text,"
    "    phone_verified boolean, verified_phone text, otp_sms boolean, code_enc text,"
    "    code_expires_at timestamptz, created_at timestamptz, changed_at timestamptz,"
    "    otp_code_enc text, otp_code_expires_at timestamptz, otp_failed integer,"
    "    otp_code_session text)"
    "  ORDER BY r.status <> 'removed', r.instance_id, r.user_id"
    " ON CONFLICT (instance_id, user_id) DO UPDATE SET"
    "    resource_owner = EXCLUDED.resource_owner, user_name = EXCLUDED.user_name,"
    "    status = EXCLUDED.status, sequence = EXCLUDED.sequence, phone = EXCLUDED.phone,"
    "    phone_verified = EXCLUDED.phone_verified, verified_phone = EXCLUDED.verified_phone,"
    "    otp_sms = EXCLUDED.otp_sms, code_enc = EXCLUDED.code_enc,"
    "    code_expires_at = EXCLUDED.code_expires_at, created_at = EXCLUDED.created_at,"
    "    changed_at = EXCLUDED.changed_at, otp_code_enc = EXCLUDED.otp_code_enc,"
    "    otp_code_expires_at = EXCLUDED.otp_code_expires_at, otp_failed = EXCLUDED.otp_failed,"
    "    otp_code_session = EXCLUDED.otp_code_session";

/* As the projector's statements (infra/pg/projection_sql.c), on the shadows. */
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


static const char SQL_KEEP_OTHER_SEQUENCES[] =
    "INSERT INTO factord.projected_sequences_rebuild"
    " SELECT * FROM factord.projected_sequences WHERE projection <> $1";

/* --- helpers -------------------------------------------------------------------- */

static char *rbsql_dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        abort();
    return s;
}

static void rbsql_jset(json_t *o, const char *key, json_t *v)
{
    /* Values come from decoded events and rows (valid UTF-8): only OOM fails. */
    if (!v || json_object_set_new(o, key, v) != 0)
        abort();
}

static json_t *rbsql_jtime(int64_t us)
{
    char buf[40];
    dom_time_format(us, buf, sizeof buf);
    return buf[0] ? json_string(buf) : json_null();
}

/* One statement without data (DDL, locks, settings). */
static es_result rbsql_exec(es_store *st, const char *what, const char *sql, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, what, sql, 0, NULL, PGRES_COMMAND_OK, &res, err);
    if (rc != ES_OK && PQresultStatus(res) == PGRES_TUPLES_OK)
        rc = ES_OK; /* SELECT ... FOR UPDATE and friends */
    PQclear(res);
    return rc;
}

/* Same for each table of t, with {L}, {S} and {R} in tmpl replaced by
 * its live, shadow and retired names (this file's constants). */
static es_result rbsql_exec_each(es_store *st, es_rbsql_tables t, const char *what, const char *tmpl,
                                 es_error *err)
{
    size_t n_tables = 0;
    const rbsql_table *tables = rbsql_tables_of(t, &n_tables);
    if (!tables)
        return es_error_set(err, ES_EINVAL, "rebuild: unknown projection");
    for (size_t i = 0; i < n_tables; i++) {
        char sql[4096];
        size_t len = 0;
        const rbsql_table *tb = &tables[i];
        for (const char *p = tmpl; *p && len + 64 < sizeof sql;) {
            const char *name = NULL;
            if (p[0] == '{' && p[1] && p[2] == '}')
                name = p[1] == 'L' ? tb->live : p[1] == 'S' ? tb->shadow : p[1] == 'R' ? tb->retired : NULL;
            if (name) {
                len += (size_t)snprintf(sql + len, sizeof sql - len, "%s", name);
                p += 3;
            } else {
                sql[len++] = *p++;
            }
        }
        sql[len] = '\0';
        es_result rc = rbsql_exec(st, what, sql, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}

/* A statement whose one data parameter is a JSON array of rows (taken and
 * freed), after the projection's name when projection is not NULL. No rows:
 * no statement. */
static es_result rbsql_exec_rows(es_store *st, const char *what, const char *sql, const char *projection,
                                 json_t *rows, es_error *err)
{
    if (json_array_size(rows) == 0) {
        json_decref(rows);
        return ES_OK;
    }
    PGresult *res = NULL;
    char *text = rbsql_dump(rows);
    const char *params[] = {projection, text};
    es_result rc = es_store_exec(st, what, sql, projection ? 2 : 1, projection ? params : params + 1,
                                 PGRES_COMMAND_OK, &res, err);
    free(text);
    PQclear(res);
    return rc;
}

/* --- the advisory lock ------------------------------------------------------ */

static es_result rbsql_advisory(es_store *st, const char *name, bool lock, bool *got, es_error *err)
{
    char sql[160];
    PGresult *res = NULL;
    snprintf(sql, sizeof sql, "SELECT pg_%sadvisory_%slock(" RBSQL_LOCK_CLASS ", hashtext($1))",
             lock ? "try_" : "", lock ? "" : "un");
    const char *params[] = {name};
    es_result rc = es_store_exec(st, "rebuild: advisory lock", sql, 1, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && got)
        *got = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return rc;
}

es_result es_rbsql_lock(es_store *st, const char *name, bool *got, es_error *err)
{
    *got = false;
    return rbsql_advisory(st, name, true, got, err);
}

es_result es_rbsql_unlock(es_store *st, const char *name, es_error *err)
{
    return rbsql_advisory(st, name, false, NULL, err);
}

/* --- the shadows ------------------------------------------------------------ */

es_result es_rbsql_create_shadows(es_store *st, es_rbsql_tables t, es_error *err)
{
    es_result rc = rbsql_exec_each(st, t, "rebuild: drop stale tables",
                                "DROP TABLE IF EXISTS factord.{S}, factord.{R}", err);
    if (rc == ES_OK)
        rc = rbsql_exec_each(st, t, "rebuild: create shadow",
                          "CREATE TABLE factord.{S} (LIKE factord.{L} INCLUDING ALL)", err);
    if (rc == ES_OK)
        rc = rbsql_exec_each(
            st, t, "rebuild: copy table properties",
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

es_result es_rbsql_sync_commit_off(es_store *st, es_error *err)
{
    return rbsql_exec(st, "rebuild: synchronous commit", "SET synchronous_commit = off", err);
}

void es_rbsql_sync_commit_reset(es_store *st)
{
    PQclear(PQexec(es_store_conn(st), "RESET synchronous_commit"));
}

es_result es_rbsql_analyze_shadows(es_store *st, es_rbsql_tables t, es_error *err)
{
    return rbsql_exec_each(st, t, "rebuild: analyze the shadow", "ANALYZE factord.{S}", err);
}

es_result es_rbsql_drop_shadows(es_store *st, es_rbsql_tables t, es_error *err)
{
    return rbsql_exec_each(st, t, "rebuild: drop the shadow", "DROP TABLE IF EXISTS factord.{S}", err);
}

es_result es_rbsql_drop_retired(es_store *st, es_rbsql_tables t, es_error *err)
{
    return rbsql_exec_each(st, t, "rebuild: drop the retired table", "DROP TABLE factord.{R}", err);
}

/* --- a page ------------------------------------------------------------------- */

es_result es_rbsql_read_page(es_store *st, int64_t after, int limit, dom_evt *evts, size_t *rows,
                             int64_t *last, size_t *n, es_error *err)
{
    char after_s[24], limit_s[24];
    PGresult *res = NULL;
    *n = *rows = 0;
    snprintf(after_s, sizeof after_s, "%" PRId64, after);
    snprintf(limit_s, sizeof limit_s, "%d", limit);
    const char *params[] = {after_s, limit_s};
    es_result rc = es_store_exec(st, "rebuild: read events", SQL_READ_PAGE, 2, params, PGRES_TUPLES_OK, &res,
                                 err);
    if (rc != ES_OK)
        goto out;
    size_t got = (size_t)PQntuples(res), k = 0;
    for (size_t i = 0; i < got && rc == ES_OK; i++) {
        if (PQgetvalue(res, (int)i, RBSQL_COL_IS_USER)[0] != 't')
            continue;
        rc = es_store_row_event(res, (int)i, 0, &evts[k++], err);
        if (rc != ES_OK) {
            char why[sizeof err->text];
            snprintf(why, sizeof why, "%s", err ? err->text : "");
            rc = es_error_set(err, rc, "rebuild: %s", why);
        }
    }
    if (rc == ES_OK && got && !es_parse_i64(PQgetvalue(res, (int)got - 1, ES_EVT_COL_POSITION), last))
        rc = es_error_set(err, ES_EFATAL, "rebuild: read events: malformed position");
    /* Personal data in clear for the fold, one key read per page (docs/pii.md). */
    if (rc == ES_OK && (rc = es_piikeys_open(st, es_store_pii_master(st), evts, k, err)) != ES_OK) {
        char why[sizeof err->text];
        snprintf(why, sizeof why, "%s", err ? err->text : "");
        rc = es_error_set(err, rc, "rebuild: %s", why);
    }
    if (rc == ES_OK) {
        *rows = got;
        *n = k;
    }
out:
    PQclear(res);
    return rc;
}

static int rbsql_user_cmp(const void *a, const void *b)
{
    const dom_user *x = a, *y = b;
    int d = strcmp(x->instance_id, y->instance_id);
    return d ? d : strcmp(x->user_id, y->user_id);
}

es_result es_rbsql_load_users(es_store *st, dom_user *users, size_t n, es_error *err)
{
    PGresult *res = NULL;
    json_t *keys = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_object();
        rbsql_jset(r, "i", json_string(users[i].instance_id));
        rbsql_jset(r, "u", json_string(users[i].user_id));
        json_array_append_new(keys, r);
    }
    char *text = rbsql_dump(keys);
    const char *params[] = {text};
    es_result rc = es_store_exec(st, "rebuild: load users", SQL_LOAD_USERS, 1, params, PGRES_TUPLES_OK, &res, err);
    free(text);
    if (rc != ES_OK)
        goto out;
    for (int r = 0; r < PQntuples(res); r++) {
        dom_user row;
        rc = es_store_row_user(res, r, 0, &row, err);
        if (rc != ES_OK) {
            char why[sizeof err->text];
            snprintf(why, sizeof why, "%s", err ? err->text : "");
            rc = es_error_set(err, rc, "rebuild: the users shadow: %s", why);
            goto out;
        }
        dom_user *u = bsearch(&row, users, n, sizeof *users, rbsql_user_cmp);
        if (!u) {
            rc = es_error_set(err, ES_EFATAL, "rebuild: the shadow returned a user not asked for");
            goto out;
        }
        *u = row;
    }
out:
    PQclear(res);
    return rc;
}

es_result es_rbsql_put_users(es_store *st, const dom_user *users, size_t n, es_error *err)
{
    json_t *rows = json_array();
    for (size_t i = 0; i < n; i++) {
        const dom_user *s = &users[i];
        if (s->status == DOM_USER_NONE)
            continue; /* as the store: only users that exist have a row */
        json_t *o = json_object();
        rbsql_jset(o, "instance_id", json_string(s->instance_id));
        rbsql_jset(o, "user_id", json_string(s->user_id));
        rbsql_jset(o, "resource_owner", json_string(s->resource_owner));
        rbsql_jset(o, "user_name", json_string(s->user_name));
        rbsql_jset(o, "status", json_string(dom_user_status_name(s->status)));
        rbsql_jset(o, "sequence", json_integer(s->sequence));
        rbsql_jset(o, "phone", json_string(s->phone));
        rbsql_jset(o, "phone_verified", json_boolean(s->phone_verified));
        rbsql_jset(o, "verified_phone", json_string(s->verified_phone));
        rbsql_jset(o, "otp_sms", json_boolean(s->otp_sms));
        rbsql_jset(o, "code_enc", json_string(s->code_enc));
        if (s->code_expires_at_us)
            rbsql_jset(o, "code_expires_at", rbsql_jtime(s->code_expires_at_us));
        rbsql_jset(o, "created_at", rbsql_jtime(s->created_at_us));
        rbsql_jset(o, "changed_at", rbsql_jtime(s->changed_at_us));
        rbsql_jset(o, "otp_code_enc", json_string(s->otp_code_enc));
        if (s->otp_code_expires_at_us)
            rbsql_jset(o, "otp_code_expires_at", rbsql_jtime(s->otp_code_expires_at_us));
        rbsql_jset(o, "otp_failed", json_integer(s->otp_failed));
        rbsql_jset(o, "otp_code_session", json_string(s->otp_code_session));
        json_array_append_new(rows, o);
    }
    return rbsql_exec_rows(st, "rebuild: write users", SQL_PUT_USERS, NULL, rows, err);
}

es_result es_rbsql_put_factors(es_store *st, const char *projection, const es_rbsql_seq *seqs, size_t n_seqs,
                               const es_rbsql_factor *rows, size_t n_rows, es_error *err)
{
    json_t *js = json_array(), *dels = json_array(), *puts = json_array();
    for (size_t i = 0; i < n_seqs; i++) {
        json_t *r = json_object();
        rbsql_jset(r, "i", json_string(seqs[i].instance_id));
        rbsql_jset(r, "u", json_string(seqs[i].user_id));
        rbsql_jset(r, "s", json_integer(seqs[i].sequence));
        json_array_append_new(js, r);
    }
    for (size_t i = 0; i < n_rows; i++) {
        const es_projsql_factor *f = &rows[i].row;
        json_t *r = json_object();
        rbsql_jset(r, "i", json_string(f->instance_id));
        rbsql_jset(r, "u", json_string(f->user_id));
        rbsql_jset(r, "t", json_string(f->type));
        if (rows[i].del)
            json_array_append(dels, r);
        if (rows[i].put) {
            /* r may be in dels too: the extra keys are ignored there */
            rbsql_jset(r, "state", json_string(f->state));
            rbsql_jset(r, "s", json_integer(f->sequence));
            rbsql_jset(r, "created", rbsql_jtime(f->created_at_us));
            rbsql_jset(r, "changed", rbsql_jtime(f->changed_at_us));
            rbsql_jset(r, "owner", json_string(f->resource_owner));
            json_array_append(puts, r);
        }
        json_decref(r);
    }
    es_result rc = rbsql_exec_rows(st, "rebuild: write sequences", SQL_PUT_SEQUENCES, projection, js, err);
    if (rc == ES_OK)
        rc = rbsql_exec_rows(st, "rebuild: delete auth factors", SQL_DELETE_FACTORS, NULL, dels, err);
    else
        json_decref(dels);
    if (rc == ES_OK)
        rc = rbsql_exec_rows(st, "rebuild: put auth factors", SQL_PUT_FACTORS, NULL, puts, err);
    else
        json_decref(puts);
    return rc;
}

/* --- the locked final step ---------------------------------------------------- */

es_result es_rbsql_lock_live(es_store *st, es_rbsql_tables t, int lock_timeout_ms, es_error *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %d", lock_timeout_ms);
    es_result rc = rbsql_exec(st, "rebuild: lock timeout", sql, err);
    if (rc == ES_OK)
        rc = rbsql_exec(st, "rebuild: synchronous commit", "SET LOCAL synchronous_commit = on", err);
    /* The live tables first (the processor locks user rows before the
     * counter; the projector locks sequences before factors), then the
     * counter: from here no event commits until the caller does. */
    if (rc == ES_OK)
        rc = rbsql_exec(st, "rebuild: lock the live tables",
                        t == ES_RBSQL_USERS
                            ? "LOCK TABLE factord.users IN ACCESS EXCLUSIVE MODE"
                            : "LOCK TABLE factord.projected_sequences, factord.auth_factors, factord.user_views"
                              " IN ACCESS EXCLUSIVE MODE",
                        err);
    if (rc == ES_OK)
        rc = rbsql_exec(st, "rebuild: lock the position counter",
                        "SELECT value FROM factord.position_counter WHERE id = 1 FOR UPDATE", err);
    return rc;
}

es_result es_rbsql_keep_other_sequences(es_store *st, const char *projection, es_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {projection};
    es_result rc = es_store_exec(st, "rebuild: keep other projections' sequences", SQL_KEEP_OTHER_SEQUENCES, 1,
                                 params, PGRES_COMMAND_OK, &res, err);
    PQclear(res);
    return rc;
}

es_result es_rbsql_swap(es_store *st, es_rbsql_tables t, es_error *err)
{
    es_result rc = rbsql_exec_each(st, t, "rebuild: retire the live table",
                                "ALTER TABLE factord.{L} RENAME TO {R}", err);
    if (rc == ES_OK)
        rc = rbsql_exec_each(st, t, "rebuild: rename the shadow", "ALTER TABLE factord.{S} RENAME TO {L}", err);
    if (rc == ES_OK)
        rc = rbsql_exec_each(
            st, t, "rebuild: swap index names",
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

/* --- after ------------------------------------------------------------------- */

es_result es_rbsql_count(es_store *st, es_rbsql_tables t, int64_t *rows, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, "rebuild: count",
                                 t == ES_RBSQL_USERS ? "SELECT count(*) FROM factord.users"
                                                     : "SELECT count(*) FROM factord.auth_factors",
                                 0, NULL, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK)
        *rows = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return rc;
}

bool es_rbsql_connected(es_store *st) { return PQstatus(es_store_conn(st)) == CONNECTION_OK; }
