/*
 * infra/pg/store.c - factord's PostgreSQL event store over libpq (store.h).
 *
 * Every statement that carries data is parameterised and prepared lazily,
 * once per connection (a bit per statement in st->prepared; PQreset clears
 * it). Batches cost one round trip per table, never one per row: rows travel
 * as one binary array per column (infra/pg/pgarr.h, read with unnest), which
 * the server takes without parsing any text.
 *
 * es_store_write orders its statements so that the global counter row is
 * held as briefly as possible: everything is encoded first, the user upsert
 * and the command rows (which may wait on other writers' locks) go next, and
 * only then is the counter taken (UPDATE ... RETURNING); the events and the
 * outbox rows that need its positions follow, and the caller's COMMIT
 * releases it. Holding the counter to COMMIT makes positions visible in
 * commit order (brief §4.2). The events' hash chain (infra/crypto/chain.h) rides
 * on the same lock: the counter's UPDATE returns the chain head, the
 * hashes are computed here (the canonical bytes were built before the
 * lock), and the events' INSERT moves the head in the same statement.
 *
 * Timestamps are written as binary timestamptz (microseconds) and read back
 * as exact integer microseconds (extract(epoch ...) is numeric in
 * PostgreSQL 15).
 * Error texts use only the server's primary message and the constraint name,
 * never DETAIL lines, which may quote row values.
 */
#include "infra/base/util.h"
#include "infra/pg/store.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "infra/crypto/chain.h"
#include "infra/pg/piikeys.h"
#include "infra/base/jsonw.h"
#include "infra/base/log.h"
#include "infra/pg/migrations.h"
#include "infra/pg/pgarr.h"

/* Advisory lock keys, two-int form, so they never meet an application's
 * single-bigint keys: class 'fact' for named locks (es_store_try_lock),
 * class 'fmig' for the migrator. */
#define STORE_LOCK_CLASS_NAMED "1717658484"    /* 0x66616374 'fact' */
#define STORE_LOCK_CLASS_MIGRATE "1718446439"  /* 0x666d6967 'fmig' */

/* The columns of an event row, in this order, in every event query, and
 * of a user row (ES_STORE_EVENT_COLUMNS with es_store_event_col and
 * ES_STORE_USER_COLUMNS with es_store_user_col, store.h). */
#define STORE_EVENT_COLUMNS ES_STORE_EVENT_COLUMNS
#define STORE_USER_COLUMNS ES_STORE_USER_COLUMNS

typedef enum {
    Q_FIND_COMMANDS,
    Q_LOAD_USERS,
    Q_NAME_TAKEN,
    Q_UPSERT_USERS,
    Q_INSERT_COMMANDS,
    Q_TAKE_POSITIONS,
    Q_INSERT_EVENTS,
    Q_INSERT_OUTBOX,
    Q_USER_EVENTS,
    Q_READ_OUTBOUND,
    Q_CHECKPOINT_GET,
    Q_CHECKPOINT_SET,
    Q_TRY_LOCK,
    Q_HEAD,
    Q_OUTBOUND_LAG,
    Q_RECORD_MIGRATION,
    Q__COUNT
} store_q;

typedef struct {
    const char *name;
    int nparams;
    const char *sql;
} store_stmt;

static const store_stmt store_stmts[Q__COUNT] = {
    [Q_FIND_COMMANDS] = {"factord_find_commands", 1,
        "SELECT id::text, instance_id, encode(content_hash, 'hex'), http_status, body::text"
        "  FROM factord.commands WHERE id = ANY ($1::uuid[])"},
    /* Rows are locked in key order, the same in every transaction, so two
     * batches never deadlock on user rows. One primary-key probe per user,
     * whatever the batch's size: FOR UPDATE keeps the LATERAL subquery from
     * becoming a join, which the planner may make a hash join over the whole
     * table when it sees a long array (projector.c, the same lesson). */
    [Q_LOAD_USERS] = {"factord_load_users", 2,
        "SELECT u.* FROM (SELECT DISTINCT r.i, r.u FROM unnest($1::text[], $2::text[]) AS r(i, u)"
        "                  ORDER BY r.i, r.u) AS r"
        " CROSS JOIN LATERAL (SELECT " STORE_USER_COLUMNS " FROM factord.users"
        "                      WHERE instance_id = r.i AND user_id = r.u FOR UPDATE) AS u"
        " ORDER BY r.i, r.u"},
    /* Same predicate as the partial unique index users_user_name_key; the
     * LIMIT keeps the LATERAL subquery an index probe per name rather than
     * a join the planner could turn into a scan of the whole table. Returns
     * the (1-based) ordinals of the names that are taken. */
    [Q_NAME_TAKEN] = {"factord_names_taken", 3,
        "SELECT r.n FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS r(i, name, u, n)"
        " CROSS JOIN LATERAL (SELECT 1 FROM factord.users"
        "   WHERE instance_id = r.i AND lower(user_name) = lower(r.name)"
        "     AND status <> 'removed' AND user_id <> r.u LIMIT 1) AS t"},
    /* DISTINCT ON keeps the last state given for a user, so a batch that
     * lists a user twice cannot trip "ON CONFLICT cannot affect row a second
     * time"; inserting in key order keeps lock order stable. */
    [Q_UPSERT_USERS] = {"factord_upsert_users", 18,
        "INSERT INTO factord.users AS u (instance_id, user_id, resource_owner, user_name,"
        "    status, sequence, phone, phone_verified, verified_phone, otp_sms, code_enc,"
        "    code_expires_at, created_at, changed_at, otp_code_enc, otp_code_expires_at,"
        "    otp_failed, otp_code_session)"
        " SELECT DISTINCT ON (r.instance_id, r.user_id) r.instance_id, r.user_id,"
        "    r.resource_owner, r.user_name, r.status, r.sequence, r.phone, r.phone_verified,"
        "    r.verified_phone, r.otp_sms, r.code_enc, r.code_expires_at, r.created_at,"
        "    r.changed_at, r.otp_code_enc, r.otp_code_expires_at, r.otp_failed, r.otp_code_session"
        "   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
        "    $6::bigint[], $7::text[], $8::boolean[], $9::text[], $10::boolean[], $11::text[],"
        "    $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::text[],"
        "    $16::timestamptz[], $17::integer[], $18::text[]) WITH ORDINALITY"
        "     AS r(instance_id, user_id, resource_owner, user_name, status, sequence, phone,"
        "    phone_verified, verified_phone, otp_sms, code_enc, code_expires_at, created_at,"
        "    changed_at, otp_code_enc, otp_code_expires_at, otp_failed, otp_code_session, ord)"
        "  ORDER BY r.instance_id, r.user_id, r.ord DESC"
        " ON CONFLICT (instance_id, user_id) DO UPDATE SET"
        "    resource_owner = EXCLUDED.resource_owner, user_name = EXCLUDED.user_name,"
        "    status = EXCLUDED.status, sequence = EXCLUDED.sequence,"
        "    phone = EXCLUDED.phone, phone_verified = EXCLUDED.phone_verified,"
        "    verified_phone = EXCLUDED.verified_phone, otp_sms = EXCLUDED.otp_sms,"
        "    code_enc = EXCLUDED.code_enc, code_expires_at = EXCLUDED.code_expires_at,"
        "    created_at = EXCLUDED.created_at, changed_at = EXCLUDED.changed_at,"
        "    otp_code_enc = EXCLUDED.otp_code_enc,"
        "    otp_code_expires_at = EXCLUDED.otp_code_expires_at, otp_failed = EXCLUDED.otp_failed,"
        "    otp_code_session = EXCLUDED.otp_code_session"
        /* An unchanged user (a rejected command) costs no new row version. */
        "  WHERE (u.resource_owner, u.user_name, u.status, u.sequence, u.phone,"
        "    u.phone_verified, u.verified_phone, u.otp_sms, u.code_enc, u.code_expires_at,"
        "    u.created_at, u.changed_at, u.otp_code_enc, u.otp_code_expires_at, u.otp_failed,"
        "    u.otp_code_session)"
        "    IS DISTINCT FROM (EXCLUDED.resource_owner, EXCLUDED.user_name, EXCLUDED.status,"
        "    EXCLUDED.sequence, EXCLUDED.phone, EXCLUDED.phone_verified,"
        "    EXCLUDED.verified_phone, EXCLUDED.otp_sms, EXCLUDED.code_enc,"
        "    EXCLUDED.code_expires_at, EXCLUDED.created_at, EXCLUDED.changed_at,"
        "    EXCLUDED.otp_code_enc, EXCLUDED.otp_code_expires_at, EXCLUDED.otp_failed,"
        "    EXCLUDED.otp_code_session)"},
    [Q_INSERT_COMMANDS] = {"factord_insert_commands", 8,
        "INSERT INTO factord.commands (id, instance_id, type, user_id, content_hash,"
        "    http_status, body, reply_to)"
        " SELECT r.id, r.instance_id, r.type, r.user_id, r.content_hash, r.http_status,"
        "    r.body::json, r.reply_to"
        "   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::int[],"
        "    $7::text[], $8::text[])"
        "     AS r(id, instance_id, type, user_id, content_hash, http_status, body, reply_to)"},
    /* The chain's head comes with the positions: the hashes of the batch's
     * events follow from it (infra/crypto/chain.h). The same statement queues the
     * transaction's notification for the relay (store.h): no round trip of
     * its own, and it is issued exactly when positions are taken. At COMMIT
     * PostgreSQL serialises notifying transactions on one lock; the counter
     * row already serialises this database's writers through COMMIT. */
    [Q_TAKE_POSITIONS] = {"factord_take_positions", 1,
        "UPDATE factord.position_counter SET value = value + $1::bigint WHERE id = 1"
        " RETURNING value, encode(head_hash, 'hex'),"
        "   pg_notify('" ES_STORE_OUTBOUND_CHANNEL "', '')"},
    /* The events ($2..$13, one array per column), their hashes ($14: in
     * event order) and the new chain head ($15, $16) in one statement: no
     * extra round trip while the counter is held. */
    [Q_INSERT_EVENTS] = {"factord_insert_events", 16,
        "WITH ins AS ("
        " INSERT INTO factord.events (instance_id, aggregate_type, aggregate_id, sequence,"
        "    position, type, revision, created_at, creator, resource_owner, command_id,"
        "    last_of_command, payload, hash)"
        " SELECT r.instance_id, r.aggregate_type, r.aggregate_id, r.sequence,"
        "    $1::bigint + r.ord - 1, r.type, r.revision, r.created_at, r.creator,"
        "    r.resource_owner, r.command_id, r.last_of_command, r.payload, r.hash"
        "   FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],"
        "    $7::smallint[], $8::timestamptz[], $9::text[], $10::text[], $11::uuid[],"
        "    $12::boolean[], $13::jsonb[], $14::bytea[]) WITH ORDINALITY"
        "     AS r(instance_id, aggregate_type, aggregate_id, sequence, type, revision,"
        "    created_at, creator, resource_owner, command_id, last_of_command, payload, hash,"
        "    ord)"
        "  ORDER BY r.ord)"
        " UPDATE factord.position_counter SET head_position = $15::bigint,"
        "    head_hash = $16::bytea WHERE id = 1"},
    [Q_INSERT_OUTBOX] = {"factord_insert_outbox", 6,
        "INSERT INTO factord.outbox (position, instance_id, topic, key, value, headers)"
        " SELECT $1::bigint + r.ord - 1, r.instance_id, r.topic, r.key, r.value, r.headers"
        "   FROM unnest($2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::jsonb[])"
        "     WITH ORDINALITY AS r(instance_id, topic, key, value, headers, ord)"
        "  ORDER BY r.ord"},
    [Q_USER_EVENTS] = {"factord_user_events", 2,
        "SELECT " STORE_EVENT_COLUMNS
        "  FROM factord.events e"
        " WHERE e.instance_id = $1 AND e.aggregate_type = 'user' AND e.aggregate_id = $2"
        " ORDER BY e.sequence"},
    /* Each branch walks its position index and stops after $2 rows; the
     * merged result is cut to $2 again. One statement, one snapshot: a
     * batch's events and outbox rows appear together or not at all. */
    [Q_READ_OUTBOUND] = {"factord_read_outbound", 2,
        "SELECT * FROM ("
        " (SELECT e.position AS pos, true AS is_event, " STORE_EVENT_COLUMNS ","
        "         NULL::text AS topic, NULL::text AS key, NULL::text AS value,"
        /* The reply topic of an accepted command, beside its last event
         * (ES_REPLY_TO_HEADER): one primary-key probe per command here
         * instead of one in every projector. A correlated subquery, not a
         * join: a join's generic plan turned into a hash join over a
         * sequential scan of every command, per page (the relay's
         * PostgreSQL session then used 6 s of CPU per 100,000 events);
         * a subquery is always the probe, skipped for other events. */
        "         NULL::text AS headers,"
        "         (SELECT c.reply_to FROM factord.commands c"
        "           WHERE e.last_of_command AND c.id = e.command_id"
        "             AND c.instance_id = e.instance_id AND c.http_status = 200) AS reply_to"
        "    FROM (SELECT * FROM factord.events WHERE position > $1::bigint"
        "           ORDER BY position LIMIT $2::bigint) e)"
        " UNION ALL"
        " (SELECT o.position, false, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        "         NULL, NULL, NULL, NULL, o.topic, encode(o.key, 'hex'),"
        "         encode(o.value, 'hex'), o.headers::text, NULL"
        "    FROM factord.outbox o WHERE o.position > $1::bigint"
        "   ORDER BY o.position LIMIT $2::bigint)"
        ") x ORDER BY pos LIMIT $2::bigint"},
    [Q_CHECKPOINT_GET] = {"factord_checkpoint_get", 1,
        "SELECT position FROM factord.checkpoints WHERE name = $1"},
    [Q_CHECKPOINT_SET] = {"factord_checkpoint_set", 2,
        "INSERT INTO factord.checkpoints (name, position, updated_at)"
        " VALUES ($1, $2::bigint, now())"
        " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position,"
        "    updated_at = EXCLUDED.updated_at"},
    [Q_TRY_LOCK] = {"factord_try_lock", 1,
        "SELECT pg_try_advisory_lock(" STORE_LOCK_CLASS_NAMED ", hashtext($1))"},
    /* Committed rows only: the counter also counts positions of open (and
     * rolled-back) transactions. Both maxima are backward index scans. */
    [Q_HEAD] = {"factord_head", 0,
        "SELECT greatest(coalesce((SELECT max(position) FROM factord.events), 0),"
        "                coalesce((SELECT max(position) FROM factord.outbox), 0))"},
    /* What is still to publish after a position: rows (the positions
     * between it and the head) and the age of the oldest, in seconds
     * (0 when none). Each part is a probe of a position index. */
    [Q_OUTBOUND_LAG] = {"factord_outbound_lag", 1,
        "SELECT greatest(greatest(coalesce((SELECT max(position) FROM factord.events), 0),"
        "                         coalesce((SELECT max(position) FROM factord.outbox), 0)) - $1::bigint, 0),"
        "       coalesce(extract(epoch FROM clock_timestamp() - least("
        "           (SELECT created_at FROM factord.events WHERE position > $1::bigint ORDER BY position LIMIT 1),"
        "           (SELECT created_at FROM factord.outbox WHERE position > $1::bigint ORDER BY position LIMIT 1))),"
        "         0)::float8"},
    [Q_RECORD_MIGRATION] = {"factord_record_migration", 2,
        "INSERT INTO factord.schema_migrations (version, name) VALUES ($1::int, $2)"},
};

#define STORE_FIELD(buf) (buf), sizeof(buf)

/* Binary arrays (pgarr.h), kept between batches: es_store_write's events'
 * columns, the outbox's, one table's rows at a time, the hashes; the keys
 * of es_store_load_users and es_store_find_commands reuse the first ones
 * (a connection runs one statement at a time). */
#define STORE_COLS (12 + 5 + 18 + 1)

struct es_store {
    PGconn *conn;
    es_pga cols[STORE_COLS];
    uint32_t prepared;   /* bit q: store_stmts[q] is prepared on conn */
    es_chain_hasher *chain; /* the chain key's hasher; NULL until the first
                               write or es_store_set_chain_key */
    es_pii_master pii;      /* the personal-data master key, when has_pii */
    bool has_pii;
};
_Static_assert(Q__COUNT <= 32, "es_store.prepared has a bit per statement");

/* --- memory and small buffers --------------------------------------------- */

/* Out of memory aborts (house style): callers never see a NULL. */
static void *store_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* Decode n hex characters into out (n/2 bytes); false on a bad digit. */
static bool store_hex_decode(const char *hex, size_t n, unsigned char *out)
{
    if (n % 2)
        return false;
    for (size_t i = 0; i < n; i += 2) {
        int hi = es_hex_value(hex[i]), lo = es_hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* A canonical UUID: 8-4-4-4-12 hex digits. Checked before an id is put
 * into an array literal, so no id can smuggle in a quote or a comma. */
static bool store_is_uuid(const char *s)
{
    for (int i = 0; i < DOM_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (es_hex_value(c) < 0) {
            return false;
        }
    }
    return s[DOM_UUID_LEN] == '\0';
}


/* Copy a column into a fixed field; false when it does not fit. */
static bool store_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

/* --- errors ---------------------------------------------------------------- */

/* SQLSTATE -> result. 40001/40P01/23505: a racing writer, decide again.
 * Connection loss (class 08, or the connection is bad), server shutdown
 * (57P01-57P03), too many connections (53300) and a statement timeout or
 * cancel (57014): the server is away or busy, retry later. */
static es_result store_classify(const es_store *st, const char *state)
{
    if (PQstatus(st->conn) == CONNECTION_BAD)
        return ES_ETRANSIENT;
    if (!state || !*state)
        return ES_EFATAL;
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "23505"))
        return ES_ECONFLICT;
    if (!strncmp(state, "08", 2) || !strcmp(state, "57P01") || !strcmp(state, "57P02") ||
        !strcmp(state, "57P03") || !strcmp(state, "53300") || !strcmp(state, "57014"))
        return ES_ETRANSIENT;
    return ES_EFATAL;
}

/* Length of s without trailing newlines/blanks (libpq messages end in \n). */
static int store_trimmed_len(const char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        n--;
    return n > 4096 ? 4096 : (int)n;
}

/* Fill err from a failed result (res may be NULL) and classify it. */
static es_result store_fail(const es_store *st, const PGresult *res, es_error *err,
                            const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *constraint = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
    es_result rc = store_classify(st, state);
    if (!msg || !*msg)
        msg = res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res)
                                                : PQerrorMessage(st->conn);
    if (!*msg)
        msg = "unexpected result";
    es_error_set(err, rc, "%s: %.*s%s%s%s", what, store_trimmed_len(msg), msg,
                 constraint ? " (constraint " : "", constraint ? constraint : "",
                 constraint ? ")" : "");
    if (err && state)
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state);
    return rc;
}

/* libpq writes server notices to stderr by default, which would break the
 * one-JSON-object-per-line log. Warnings go to the log instead; notices are
 * silenced by client_min_messages. */
static void store_notice(void *arg, const char *message)
{
    (void)arg;
    char text[512];
    snprintf(text, sizeof text, "%.*s", store_trimmed_len(message), message);
    es_warn("postgresql notice", "notice", text);
}

/* --- connection -------------------------------------------------------------- */

static es_result store_setup_session(es_store *st, es_error *err)
{
    PQsetNoticeProcessor(st->conn, store_notice, NULL);
    /* Constant text, no data: a simple query is fine. */
    PGresult *res = PQexec(st->conn,
                           "SET TIME ZONE 'UTC'; SET datestyle = ISO;"
                           " SET bytea_output = hex; SET client_min_messages = warning");
    es_result rc = ES_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = store_fail(st, res, err, "session setup");
    PQclear(res);
    st->prepared = 0;
    return rc;
}

es_result es_store_open(const char *conninfo, es_store **out, es_error *err)
{
    es_result rc = ES_OK;
    es_store *st = NULL;
    *out = NULL;

    if (conninfo && *conninfo) {
        char *perr = NULL;
        PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
        if (!opts) {
            rc = es_error_set(err, ES_EINVAL, "database connection string: %.*s",
                              perr ? store_trimmed_len(perr) : 7, perr ? perr : "invalid");
            PQfreemem(perr);
            goto out;
        }
        PQconninfoFree(opts);
    }

    st = store_xmalloc(sizeof *st);
    memset(st, 0, sizeof *st);
    /* dbname last: values in the caller's string override our defaults.
     * A bounded connect (10 s unless the string or PGCONNECT_TIMEOUT says
     * otherwise; an empty value leaves libpq's own lookup): libpq would
     * otherwise wait for TCP to give up. */
    const char *const keys[] = {"fallback_application_name", "client_encoding",
                                "connect_timeout", "dbname", NULL};
    /* "factord-process", "factord-relay" ...: pg_stat_activity tells the
     * components' sessions apart (and bench/run their CPU time). */
    char app[80];
    snprintf(app, sizeof app, "factord-%s", es_log_component());
    const char *const vals[] = {strcmp(es_log_component(), "factord") ? app : "factord", "UTF8",
                                getenv("PGCONNECT_TIMEOUT") ? "" : "10", conninfo ? conninfo : "", NULL};
    st->conn = PQconnectdbParams(keys, vals, 1);
    if (!st->conn)
        abort();
    if (PQstatus(st->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(st->conn);
        rc = es_error_set(err, ES_ETRANSIENT, "connect to PostgreSQL: %.*s",
                          store_trimmed_len(m), m);
        goto out;
    }
    rc = store_setup_session(st, err);
    if (rc != ES_OK)
        goto out;
    *out = st;
    st = NULL;
out:
    es_store_free(st);
    return rc;
}

void es_store_free(es_store *st)
{
    if (!st)
        return;
    PQfinish(st->conn);
    es_chain_hasher_free(st->chain);
    es_pii_master_wipe(&st->pii);
    for (int i = 0; i < STORE_COLS; i++)
        es_pga_free(&st->cols[i]);
    free(st);
}

void es_store_set_chain_key(es_store *st, const es_chain_key *key)
{
    es_chain_hasher_free(st->chain);
    st->chain = es_chain_hasher_new(key);
}

void es_store_set_pii_master(es_store *st, const es_pii_master *m)
{
    es_pii_master_wipe(&st->pii);
    st->has_pii = m != NULL;
    if (m)
        st->pii = *m;
}

const es_pii_master *es_store_pii_master(const es_store *st)
{
    return st->has_pii ? &st->pii : NULL;
}

PGconn *es_store_conn(es_store *st) { return st->conn; }

bool es_store_connected(es_store *st) { return st && PQstatus(st->conn) == CONNECTION_OK; }

es_result es_store_session_async_commit(es_store *st, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, "session", "SET synchronous_commit = off", 0, NULL, PGRES_COMMAND_OK, &res, err);
    PQclear(res);
    return rc;
}

es_result es_store_reset(es_store *st, es_error *err)
{
    PQreset(st->conn);
    st->prepared = 0;
    if (PQstatus(st->conn) != CONNECTION_OK) {
        const char *m = PQerrorMessage(st->conn);
        return es_error_set(err, ES_ETRANSIENT, "reconnect to PostgreSQL: %.*s",
                            store_trimmed_len(m), m);
    }
    return store_setup_session(st, err);
}

/* Run prepared statement q (preparing it first on this connection). Text
 * results; parameters in text, or as given by lengths and formats (binary
 * arrays, pgarr.h) when those are not NULL. Never returns NULL (libpq only
 * does on OOM or a dead connection; then an error result stands in). */
static PGresult *store_run(es_store *st, store_q q, const char *const *params, const int *lengths,
                           const int *formats)
{
    const store_stmt *s = &store_stmts[q];
    if (!(st->prepared & (UINT32_C(1) << q))) {
        PGresult *res = PQprepare(st->conn, s->name, s->sql, s->nparams, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            return res ? res : PQmakeEmptyPGresult(st->conn, PGRES_FATAL_ERROR);
        PQclear(res);
        st->prepared |= UINT32_C(1) << q;
    }
    PGresult *res = PQexecPrepared(st->conn, s->name, s->nparams, params, lengths, formats, 0);
    return res ? res : PQmakeEmptyPGresult(st->conn, PGRES_FATAL_ERROR);
}

/* Run q and expect `want`; on anything else fill err. *res is set either
 * way (the caller PQclears it at out:). */
static es_result store_query_bin(es_store *st, store_q q, const char *const *params, const int *lengths,
                                 const int *formats, ExecStatusType want, PGresult **res, es_error *err)
{
    *res = store_run(st, q, params, lengths, formats);
    if (PQresultStatus(*res) != want)
        return store_fail(st, *res, err, store_stmts[q].name + sizeof "factord_" - 1);
    return ES_OK;
}

static es_result store_query(es_store *st, store_q q, const char *const *params,
                             ExecStatusType want, PGresult **res, es_error *err)
{
    return store_query_bin(st, q, params, NULL, NULL, want, res, err);
}

/* Statement q with parameters 0..n-1: fixed[i] as text where given, else
 * the next binary array of cols. */
static es_result store_query_cols(es_store *st, store_q q, const char *const *fixed, es_pga *cols,
                                  ExecStatusType want, PGresult **res, es_error *err)
{
    enum { MAXP = 20 };
    const char *values[MAXP];
    int lengths[MAXP], formats[MAXP];
    int n = store_stmts[q].nparams;
    if (n > MAXP)
        abort();
    es_pga_params(n, fixed, cols, values, lengths, formats);
    return store_query_bin(st, q, values, lengths, formats, want, res, err);
}

/* A constant statement without parameters (transaction control, locks). */
static es_result store_simple(es_store *st, const char *sql, const char *what, es_error *err)
{
    PGresult *res = PQexec(st->conn, sql);
    es_result rc = ES_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = store_fail(st, res, err, what);
    PQclear(res);
    return rc;
}

es_result es_store_exec(es_store *st, const char *what, const char *sql, int nparams,
                        const char *const *params, ExecStatusType want, PGresult **res,
                        es_error *err)
{
    return es_store_exec_bin(st, what, sql, nparams, params, NULL, NULL, want, res, err);
}

es_result es_store_exec_bin(es_store *st, const char *what, const char *sql, int nparams,
                            const char *const *values, const int *lengths, const int *formats,
                            ExecStatusType want, PGresult **res, es_error *err)
{
    *res = PQexecParams(st->conn, sql, nparams, NULL, values, lengths, formats, 0);
    if (!*res)
        *res = PQmakeEmptyPGresult(st->conn, PGRES_FATAL_ERROR);
    if (PQresultStatus(*res) != want)
        return store_fail(st, *res, err, what);
    return ES_OK;
}

/* --- transactions ------------------------------------------------------------ */

es_result es_store_begin(es_store *st, es_error *err)
{
    return store_simple(st, "BEGIN", "begin", err);
}

es_result es_store_commit(es_store *st, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = PQexec(st->conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        /* A lost connection here leaves the outcome unknown: ES_ETRANSIENT,
         * and the redelivered batch finds its command rows if it did commit. */
        rc = store_fail(st, res, err, "commit");
        goto out;
    }
    /* COMMIT of a failed transaction "succeeds" with the tag ROLLBACK. */
    if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
        rc = es_error_set(err, ES_EFATAL, "commit: the transaction had failed and was rolled back");
out:
    PQclear(res);
    return rc;
}

void es_store_rollback(es_store *st)
{
    /* Nothing to undo when idle (and the server would warn about it). */
    if (PQstatus(st->conn) != CONNECTION_OK || PQtransactionStatus(st->conn) == PQTRANS_IDLE)
        return;
    PQclear(PQexec(st->conn, "ROLLBACK"));
}

/* --- migrations -------------------------------------------------------------- */

static bool store_version_applied(const int *versions, size_t n, int v)
{
    for (size_t i = 0; i < n; i++)
        if (versions[i] == v)
            return true;
    return false;
}

static es_result store_apply_migration(es_store *st, const es_migration *m, es_error *err)
{
    char what[160];
    char version[16];
    snprintf(what, sizeof what, "migration %04d_%s", m->version, m->name);
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = {version, m->name};
    PGresult *res = NULL;

    es_result rc = store_simple(st, "BEGIN", what, err);
    if (rc != ES_OK)
        return rc;
    /* The migration is trusted text compiled into the binary, possibly
     * several statements: a simple query. */
    res = PQexec(st->conn, m->sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = store_fail(st, res, err, what);
        goto out;
    }
    PQclear(res);
    rc = store_query(st, Q_RECORD_MIGRATION, params, PGRES_COMMAND_OK, &res, err);
    if (rc != ES_OK)
        goto out;
    rc = es_store_commit(st, err);
out:
    PQclear(res);
    if (rc != ES_OK)
        es_store_rollback(st);
    return rc;
}

es_result es_store_migrate(es_store *st, int *applied, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    int *versions = NULL;
    size_t n_versions = 0;
    bool locked = false;
    *applied = 0;

    if (PQtransactionStatus(st->conn) != PQTRANS_IDLE) {
        rc = es_error_set(err, ES_EINVAL, "migrate: a transaction is open on this connection");
        goto out;
    }
    rc = store_simple(st, "SELECT pg_advisory_lock(" STORE_LOCK_CLASS_MIGRATE ", 0)",
                      "migrate: advisory lock", err);
    if (rc != ES_OK)
        goto out;
    locked = true;
    rc = store_simple(st,
                      "CREATE SCHEMA IF NOT EXISTS factord;"
                      " CREATE TABLE IF NOT EXISTS factord.schema_migrations ("
                      "  version int PRIMARY KEY,"
                      "  name text NOT NULL,"
                      "  applied_at timestamptz NOT NULL DEFAULT now())",
                      "migrate: schema_migrations", err);
    if (rc != ES_OK)
        goto out;
    res = PQexec(st->conn, "SELECT version FROM factord.schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = store_fail(st, res, err, "migrate: applied versions");
        goto out;
    }
    n_versions = (size_t)PQntuples(res);
    versions = store_xmalloc(n_versions * sizeof *versions);
    for (size_t i = 0; i < n_versions; i++)
        versions[i] = atoi(PQgetvalue(res, (int)i, 0));
    PQclear(res);
    res = NULL;

    int newest = 0;
    for (size_t i = 0; i < n_versions; i++)
        newest = versions[i] > newest ? versions[i] : newest;
    for (size_t i = 0; i < es_migrations_count; i++) {
        const es_migration *m = &es_migrations[i];
        if (store_version_applied(versions, n_versions, m->version))
            continue;
        /* Forward-only: a migration older than one already applied (two
         * branches numbered theirs alike) would run out of order. */
        if (m->version < newest) {
            rc = es_error_set(err, ES_EFATAL,
                              "migrate: %04d_%s is not applied but version %d is; "
                              "renumber it after %d",
                              m->version, m->name, newest, newest);
            goto out;
        }
        rc = store_apply_migration(st, m, err);
        if (rc != ES_OK)
            goto out;
        (*applied)++;
        es_info("migration applied", "version",
                es_log_i64(m->version), "name", m->name);
    }
    if (es_migrations_count && newest > es_migrations[es_migrations_count - 1].version)
        es_warn("the database schema is newer than this binary", "schema_version",
                es_log_i64(newest), "binary_version",
                es_log_i64(es_migrations[es_migrations_count - 1].version));
out:
    PQclear(res);
    free(versions);
    if (locked && PQstatus(st->conn) == CONNECTION_OK)
        PQclear(PQexec(st->conn,
                       "SELECT pg_advisory_unlock(" STORE_LOCK_CLASS_MIGRATE ", 0)"));
    return rc;
}

es_result es_store_schema_version(es_store *st, int *version, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    *version = 0;

    /* Two statements: the second would not parse without the table. */
    res = PQexec(st->conn, "SELECT to_regclass('factord.schema_migrations') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = store_fail(st, res, err, "schema version");
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
        goto out;
    PQclear(res);
    res = PQexec(st->conn, "SELECT coalesce(max(version), 0) FROM factord.schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = store_fail(st, res, err, "schema version");
        goto out;
    }
    *version = atoi(PQgetvalue(res, 0, 0));
out:
    PQclear(res);
    return rc;
}

es_result es_store_connect(const char *conninfo, int min_schema, const es_stop_flag *stop, es_store **out,
                           es_error *err)
{
    es_backoff b = ES_BACKOFF_DEFAULT;
    *out = NULL;
    for (;;) {
        es_store *st = NULL;
        int version = 0;
        es_result rc = es_store_open(conninfo, &st, err);
        if (rc == ES_OK)
            rc = es_store_schema_version(st, &version, err);
        if (rc == ES_OK && version >= min_schema) {
            *out = st;
            return ES_OK;
        }
        es_store_free(st);
        if (rc == ES_OK && version == 0)
            return es_error_set(err, ES_EFATAL, "the factord schema is missing: run `factord migrate` first");
        if (rc == ES_OK)
            return es_error_set(err, ES_EFATAL,
                                "the factord schema is at version %d, this needs %d: run `factord migrate` first",
                                version, min_schema);
        if (rc != ES_ETRANSIENT)
            return rc;
        es_warn("PostgreSQL is not reachable, retrying", "error", err->text, "retry_ms", es_log_i64(b.next_ms));
        if (!es_backoff_sleep(&b, stop))
            return ES_ETRANSIENT;
    }
}

/* --- commands ---------------------------------------------------------------- */

void es_known_cmd_clear(es_known_cmd *k)
{
    if (!k)
        return;
    free(k->body);
    k->body = NULL;
    k->found = false;
}

es_result es_store_find_commands(es_store *st, const char *const *ids, size_t n,
                                 es_known_cmd *out, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    es_pga *arr = &st->cols[0];

    for (size_t i = 0; i < n; i++)
        memset(&out[i], 0, sizeof out[i]);
    if (n == 0)
        goto out;

    es_pga_begin(arr, ES_PG_UUID);
    for (size_t i = 0; i < n; i++) {
        if (!ids[i] || !store_is_uuid(ids[i]) || !es_pga_uuid(arr, ids[i])) {
            rc = es_error_set(err, ES_EINVAL, "find commands: id %zu is not a canonical UUID", i);
            goto out;
        }
    }
    rc = store_query_cols(st, Q_FIND_COMMANDS, NULL, arr, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto out;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, 0);
        const char *hash = PQgetvalue(res, r, 2);
        const char *body = PQgetvalue(res, r, 4);
        /* Every caller slot with this id (a batch may repeat an id). */
        for (size_t i = 0; i < n; i++) {
            if (strcasecmp(ids[i], id) != 0)
                continue;
            es_known_cmd *k = &out[i];
            if (strlen(hash) != 64 || !store_hex_decode(hash, 64, k->hash) ||
                !store_copy(k->instance_id, sizeof k->instance_id, PQgetvalue(res, r, 1))) {
                rc = es_error_set(err, ES_EFATAL, "find commands: malformed row for %s", id);
                goto out;
            }
            k->http_status = atoi(PQgetvalue(res, r, 3));
            free(k->body);
            k->body = es_memdup(body, strlen(body));
            k->found = true;
        }
    }
out:
    PQclear(res);
    if (rc != ES_OK)
        for (size_t i = 0; i < n; i++)
            es_known_cmd_clear(&out[i]);
    return rc;
}

/* --- users --------------------------------------------------------------------- */

static es_result store_row_to_user(const PGresult *res, int r, dom_user *u, es_error *err)
{
    return es_store_row_user(res, r, 0, u, err);
}

es_result es_store_row_user(const PGresult *res, int r, int base, dom_user *u, es_error *err)
{
    const char *status = PQgetvalue(res, r, base + ES_USER_COL_STATUS);
    memset(u, 0, sizeof *u);
    if (!store_copy(u->instance_id, sizeof u->instance_id, PQgetvalue(res, r, base + ES_USER_COL_INSTANCE)) ||
        !store_copy(u->user_id, sizeof u->user_id, PQgetvalue(res, r, base + ES_USER_COL_USER)) ||
        !store_copy(u->resource_owner, sizeof u->resource_owner, PQgetvalue(res, r, base + ES_USER_COL_OWNER)) ||
        !store_copy(u->user_name, sizeof u->user_name, PQgetvalue(res, r, base + ES_USER_COL_NAME)) ||
        !store_copy(u->phone, sizeof u->phone, PQgetvalue(res, r, base + ES_USER_COL_PHONE)) ||
        !store_copy(u->verified_phone, sizeof u->verified_phone,
                    PQgetvalue(res, r, base + ES_USER_COL_VERIFIED_PHONE)) ||
        !store_copy(u->code_enc, sizeof u->code_enc, PQgetvalue(res, r, base + ES_USER_COL_CODE_ENC)) ||
        !store_copy(u->otp_code_enc, sizeof u->otp_code_enc,
                    PQgetvalue(res, r, base + ES_USER_COL_OTP_CODE_ENC)) ||
        !store_copy(u->otp_code_session, sizeof u->otp_code_session,
                    PQgetvalue(res, r, base + ES_USER_COL_OTP_CODE_SESSION)))
        return es_error_set(err, ES_EFATAL, "load users: a column of a users row is too long");
    u->status = dom_user_status_parse(status);
    if (u->status == DOM_USER_NONE && strcmp(status, dom_user_status_name(DOM_USER_NONE)) != 0)
        return es_error_set(err, ES_EFATAL, "load users: unknown status '%.32s'", status);
    if (!es_parse_i64(PQgetvalue(res, r, base + ES_USER_COL_SEQUENCE), &u->sequence) ||
        !es_parse_i64(PQgetvalue(res, r, base + ES_USER_COL_CREATED), &u->created_at_us) ||
        !es_parse_i64(PQgetvalue(res, r, base + ES_USER_COL_CHANGED), &u->changed_at_us) ||
        (!PQgetisnull(res, r, base + ES_USER_COL_CODE_EXPIRES) &&
         !es_parse_i64(PQgetvalue(res, r, base + ES_USER_COL_CODE_EXPIRES), &u->code_expires_at_us)) ||
        (!PQgetisnull(res, r, base + ES_USER_COL_OTP_CODE_EXPIRES) &&
         !es_parse_i64(PQgetvalue(res, r, base + ES_USER_COL_OTP_CODE_EXPIRES), &u->otp_code_expires_at_us)))
        return es_error_set(err, ES_EFATAL, "load users: malformed number in a users row");
    int64_t failed = 0;
    if (!es_parse_i64(PQgetvalue(res, r, base + ES_USER_COL_OTP_FAILED), &failed) || failed < 0 ||
        failed > INT32_MAX)
        return es_error_set(err, ES_EFATAL, "load users: malformed otp_failed in a users row");
    u->otp_failed = (int32_t)failed;
    u->phone_verified = PQgetvalue(res, r, base + ES_USER_COL_PHONE_VERIFIED)[0] == 't';
    u->otp_sms = PQgetvalue(res, r, base + ES_USER_COL_OTP_SMS)[0] == 't';
    return ES_OK;
}

/* The caller's users, sorted by (instance_id, user_id) with strcmp, to map
 * result rows back (the server sorts by its own collation). */
typedef struct {
    const char *instance_id;
    const char *user_id;
    size_t idx;
} store_user_key;

static int store_user_key_cmp(const void *a, const void *b)
{
    const store_user_key *x = a, *y = b;
    int c = strcmp(x->instance_id, y->instance_id);
    return c ? c : strcmp(x->user_id, y->user_id);
}

es_result es_store_load_users(es_store *st, dom_user *users, bool *found, size_t n,
                              es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    es_pga *cols = st->cols;
    store_user_key *keys = NULL;

    for (size_t i = 0; i < n; i++) {
        found[i] = false;
        /* Bounded: the fields are fixed arrays. */
        users[i].instance_id[sizeof users[i].instance_id - 1] = '\0';
        users[i].user_id[sizeof users[i].user_id - 1] = '\0';
    }
    if (n == 0)
        goto out;

    keys = store_xmalloc(n * sizeof *keys);
    es_pga_begin(&cols[0], ES_PG_TEXT);
    es_pga_begin(&cols[1], ES_PG_TEXT);
    for (size_t i = 0; i < n; i++) {
        if (!es_pga_text(&cols[0], STORE_FIELD(users[i].instance_id)) ||
            !es_pga_text(&cols[1], STORE_FIELD(users[i].user_id))) {
            rc = es_error_set(err, ES_EINVAL, "load users: user %zu: invalid UTF-8", i);
            goto out;
        }
        keys[i] = (store_user_key){users[i].instance_id, users[i].user_id, i};
    }
    qsort(keys, n, sizeof *keys, store_user_key_cmp);

    rc = store_query_cols(st, Q_LOAD_USERS, NULL, cols, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto out;

    for (int r = 0; r < PQntuples(res); r++) {
        dom_user row;
        rc = store_row_to_user(res, r, &row, err);
        if (rc != ES_OK)
            goto out;
        store_user_key probe = {row.instance_id, row.user_id, 0};
        store_user_key *hit = bsearch(&probe, keys, n, sizeof *keys, store_user_key_cmp);
        if (!hit) {
            rc = es_error_set(err, ES_EFATAL, "load users: the server returned a user not asked for");
            goto out;
        }
        /* A repeated (instance, user) gets the row in every slot. */
        while (hit > keys && store_user_key_cmp(hit - 1, &probe) == 0)
            hit--;
        for (; hit < keys + n && store_user_key_cmp(hit, &probe) == 0; hit++) {
            users[hit->idx] = row;
            found[hit->idx] = true;
        }
    }
    /* Missing users: only the ids the caller set, status DOM_USER_NONE. */
    for (size_t i = 0; i < n; i++) {
        if (found[i])
            continue;
        dom_user blank;
        memset(&blank, 0, sizeof blank);
        memcpy(blank.instance_id, users[i].instance_id, sizeof blank.instance_id);
        memcpy(blank.user_id, users[i].user_id, sizeof blank.user_id);
        users[i] = blank;
    }
out:
    PQclear(res);
    free(keys);
    return rc;
}

es_result es_store_names_taken(es_store *st, const es_name_probe *probes, size_t n, bool *taken,
                               es_error *err)
{
    PGresult *res = NULL;
    es_pga *cols = st->cols;
    for (size_t i = 0; i < n; i++)
        taken[i] = false;
    if (n == 0)
        return ES_OK;
    for (int c = 0; c < 3; c++)
        es_pga_begin(&cols[c], ES_PG_TEXT);
    for (size_t i = 0; i < n; i++) {
        const es_name_probe *pr = &probes[i];
        const char *except = pr->except_user_id ? pr->except_user_id : "";
        if (!pr->instance_id || !pr->user_name || !es_pga_text(&cols[0], pr->instance_id, SIZE_MAX) ||
            !es_pga_text(&cols[1], pr->user_name, SIZE_MAX) || !es_pga_text(&cols[2], except, SIZE_MAX))
            return es_error_set(err, ES_EINVAL, "names taken: name %zu is missing or not UTF-8", i);
    }
    es_result rc = store_query_cols(st, Q_NAME_TAKEN, NULL, cols, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK) {
        for (int r = 0; r < PQntuples(res); r++) {
            long long k = strtoll(PQgetvalue(res, r, 0), NULL, 10);
            if (k < 1 || (unsigned long long)k > n) {
                rc = es_error_set(err, ES_EFATAL, "names taken: the server returned ordinal %lld of %zu", k, n);
                break;
            }
            taken[k - 1] = true;
        }
    }
    PQclear(res);
    return rc;
}

/* --- writing a batch -------------------------------------------------------- */

/* Each table's rows travel as one binary array per column (pgarr.h),
 * read by the statement with unnest(...) WITH ORDINALITY. Text is checked
 * for UTF-8 here (the caller's data: a clear error, not a server one),
 * times for RFC 3339's years 1..9999 (what dom_time_format can print back). */
static bool store_time_ok(int64_t us) { return us >= DOM_TIME_MIN_US && us <= DOM_TIME_MAX_US; }

enum { EV_INSTANCE, EV_AGGTYPE, EV_AGGREGATE, EV_SEQUENCE, EV_TYPE, EV_REVISION, EV_CREATED, EV_CREATOR,
       EV_OWNER, EV_COMMAND, EV_LAST, EV_PAYLOAD, EV__COUNT };
static const uint32_t store_event_oids[EV__COUNT] = {
    ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_INT8, ES_PG_TEXT, ES_PG_INT2,
    ES_PG_TIMESTAMPTZ, ES_PG_TEXT, ES_PG_TEXT, ES_PG_UUID, ES_PG_BOOL, ES_PG_JSONB};

static es_result store_encode_events(const es_write *w, es_pga *cols, es_error *err)
{
    es_pga_begin_all(cols, store_event_oids, EV__COUNT);
    for (size_t i = 0; i < w->n_events; i++) {
        const dom_evt *e = &w->events[i];
        const char *type = dom_evt_type_name(e->type);
        if (!type || !*type)
            return es_error_set(err, ES_EINVAL, "write: event %zu has no known type", i);
        if (!store_time_ok(e->created_at_us))
            return es_error_set(err, ES_EINVAL, "write: event %zu: creation time out of range", i);
        if (e->command_id[0] && !store_is_uuid(e->command_id))
            return es_error_set(err, ES_EINVAL, "write: event %zu: command id is not a UUID", i);
        if (!es_pga_text(&cols[EV_INSTANCE], STORE_FIELD(e->instance_id)) ||
            !es_pga_text(&cols[EV_AGGREGATE], STORE_FIELD(e->aggregate_id)) ||
            !es_pga_text(&cols[EV_CREATOR], STORE_FIELD(e->creator)) ||
            !es_pga_text(&cols[EV_OWNER], STORE_FIELD(e->resource_owner)))
            return es_error_set(err, ES_EINVAL, "write: event %zu: invalid UTF-8 or payload", i);
        /* Most events carry an empty payload: no jansson text for those. */
        json_t *payload = dom_evt_payload_to_json(e);
        if (!payload)
            return es_error_set(err, ES_EINVAL, "write: event %zu: invalid UTF-8 or payload", i);
        if (json_object_size(payload) == 0) {
            es_pga_jsonb(&cols[EV_PAYLOAD], "{}", 2);
        } else {
            char *text = json_dumps(payload, JSON_COMPACT);
            if (!text)
                abort();
            es_pga_jsonb(&cols[EV_PAYLOAD], text, strlen(text)); /* jansson's output: UTF-8 */
            free(text);
        }
        json_decref(payload);
        es_pga_text(&cols[EV_AGGTYPE], DOM_AGGREGATE_USER, SIZE_MAX);
        es_pga_text(&cols[EV_TYPE], type, SIZE_MAX);
        es_pga_i64(&cols[EV_SEQUENCE], e->sequence);
        es_pga_i16(&cols[EV_REVISION], (int16_t)e->revision);
        es_pga_time(&cols[EV_CREATED], e->created_at_us);
        if (e->command_id[0])
            es_pga_uuid(&cols[EV_COMMAND], e->command_id);
        else
            es_pga_null(&cols[EV_COMMAND]);
        es_pga_bool(&cols[EV_LAST], e->last_of_command);
    }
    return ES_OK;
}

enum { US_INSTANCE, US_USER, US_OWNER, US_NAME, US_STATUS, US_SEQUENCE, US_PHONE, US_PHONE_VERIFIED,
       US_VERIFIED_PHONE, US_OTP_SMS, US_CODE_ENC, US_CODE_EXPIRES, US_CREATED, US_CHANGED,
       US_OTP_CODE_ENC, US_OTP_CODE_EXPIRES, US_OTP_FAILED, US_OTP_CODE_SESSION, US__COUNT };
static const uint32_t store_user_oids[US__COUNT] = {
    ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_INT8, ES_PG_TEXT, ES_PG_BOOL,
    ES_PG_TEXT, ES_PG_BOOL, ES_PG_TEXT, ES_PG_TIMESTAMPTZ, ES_PG_TIMESTAMPTZ, ES_PG_TIMESTAMPTZ,
    ES_PG_TEXT, ES_PG_TIMESTAMPTZ, ES_PG_INT4, ES_PG_TEXT};

/* Users still in DOM_USER_NONE (a command for an unknown user was
 * rejected) have no events and nothing to store: they are skipped, so the
 * table holds only users that exist. *any is false when none is left. */
static es_result store_encode_users(const es_write *w, es_pga *cols, bool *any, es_error *err)
{
    es_pga_begin_all(cols, store_user_oids, US__COUNT);
    *any = false;
    for (size_t i = 0; i < w->n_users; i++) {
        const dom_user *u = &w->users[i];
        if (u->status == DOM_USER_NONE)
            continue;
        if ((u->code_expires_at_us && !store_time_ok(u->code_expires_at_us)) ||
            (u->otp_code_expires_at_us && !store_time_ok(u->otp_code_expires_at_us)) ||
            !store_time_ok(u->created_at_us) || !store_time_ok(u->changed_at_us) || u->otp_failed < 0)
            return es_error_set(err, ES_EINVAL, "write: user %zu: a time out of range", i);
        if (!es_pga_text(&cols[US_INSTANCE], STORE_FIELD(u->instance_id)) ||
            !es_pga_text(&cols[US_USER], STORE_FIELD(u->user_id)) ||
            !es_pga_text(&cols[US_OWNER], STORE_FIELD(u->resource_owner)) ||
            !es_pga_text(&cols[US_NAME], STORE_FIELD(u->user_name)) ||
            !es_pga_text(&cols[US_PHONE], STORE_FIELD(u->phone)) ||
            !es_pga_text(&cols[US_VERIFIED_PHONE], STORE_FIELD(u->verified_phone)) ||
            !es_pga_text(&cols[US_CODE_ENC], STORE_FIELD(u->code_enc)) ||
            !es_pga_text(&cols[US_OTP_CODE_ENC], STORE_FIELD(u->otp_code_enc)) ||
            !es_pga_text(&cols[US_OTP_CODE_SESSION], STORE_FIELD(u->otp_code_session)))
            return es_error_set(err, ES_EINVAL, "write: user %zu: invalid UTF-8", i);
        es_pga_text(&cols[US_STATUS], dom_user_status_name(u->status), SIZE_MAX);
        es_pga_i64(&cols[US_SEQUENCE], u->sequence);
        es_pga_bool(&cols[US_PHONE_VERIFIED], u->phone_verified);
        es_pga_bool(&cols[US_OTP_SMS], u->otp_sms);
        if (u->code_expires_at_us)
            es_pga_time(&cols[US_CODE_EXPIRES], u->code_expires_at_us);
        else
            es_pga_null(&cols[US_CODE_EXPIRES]);
        es_pga_time(&cols[US_CREATED], u->created_at_us);
        es_pga_time(&cols[US_CHANGED], u->changed_at_us);
        if (u->otp_code_expires_at_us)
            es_pga_time(&cols[US_OTP_CODE_EXPIRES], u->otp_code_expires_at_us);
        else
            es_pga_null(&cols[US_OTP_CODE_EXPIRES]);
        es_pga_i32(&cols[US_OTP_FAILED], u->otp_failed);
        *any = true;
    }
    return ES_OK;
}

enum { CM_ID, CM_INSTANCE, CM_TYPE, CM_USER, CM_HASH, CM_STATUS, CM_BODY, CM_REPLY_TO, CM__COUNT };
static const uint32_t store_command_oids[CM__COUNT] = {
    ES_PG_UUID, ES_PG_TEXT, ES_PG_TEXT, ES_PG_TEXT, ES_PG_BYTEA, ES_PG_INT4, ES_PG_TEXT, ES_PG_TEXT};

static es_result store_encode_commands(const es_write *w, es_pga *cols, es_error *err)
{
    es_pga_begin_all(cols, store_command_oids, CM__COUNT);
    for (size_t i = 0; i < w->n_outcomes; i++) {
        const es_cmd_outcome *c = &w->outcomes[i];
        if (!c->cmd || !c->hash || !c->body || !store_is_uuid(c->cmd->id))
            return es_error_set(err, ES_EINVAL, "write: outcome %zu needs a command with a UUID, a hash and a body",
                                i);
        const char *type = dom_cmd_type_name(c->cmd->type);
        if (!es_pga_text(&cols[CM_INSTANCE], STORE_FIELD(c->cmd->instance_id)) ||
            !es_pga_text(&cols[CM_USER], STORE_FIELD(c->cmd->user_id)) ||
            !es_pga_text(&cols[CM_TYPE], type ? type : "", DOM_TEXT_MAX) ||
            !es_pga_text(&cols[CM_REPLY_TO], c->reply_to ? c->reply_to : "", DOM_TOPIC_MAX) ||
            !es_pga_text(&cols[CM_BODY], c->body, SIZE_MAX))
            return es_error_set(err, ES_EINVAL, "write: outcome %zu: invalid UTF-8", i);
        es_pga_uuid(&cols[CM_ID], c->cmd->id);
        es_pga_bytes(&cols[CM_HASH], c->hash, 32);
        es_pga_i32(&cols[CM_STATUS], c->http_status);
    }
    return ES_OK;
}

enum { OB_INSTANCE, OB_TOPIC, OB_KEY, OB_VALUE, OB_HEADERS, OB__COUNT };
static const uint32_t store_outbox_oids[OB__COUNT] = {ES_PG_TEXT, ES_PG_TEXT, ES_PG_BYTEA, ES_PG_BYTEA,
                                                      ES_PG_JSONB};

static es_result store_encode_outbox(const es_write *w, es_pga *cols, es_error *err)
{
    es_pga_begin_all(cols, store_outbox_oids, OB__COUNT);
    for (size_t i = 0; i < w->n_outbox; i++) {
        const es_outbox_msg *m = &w->outbox[i];
        if (!m->topic || !*m->topic || (!m->value && m->value_len) || (!m->key && m->key_len))
            return es_error_set(err, ES_EINVAL, "write: outbox message %zu needs a topic", i);
        if (!es_pga_text(&cols[OB_INSTANCE], m->instance_id ? m->instance_id : "", SIZE_MAX) ||
            !es_pga_text(&cols[OB_TOPIC], m->topic, SIZE_MAX) ||
            (m->headers_json && !es_pga_jsonb(&cols[OB_HEADERS], m->headers_json, strlen(m->headers_json))))
            return es_error_set(err, ES_EINVAL, "write: outbox message %zu: invalid UTF-8", i);
        if (!m->headers_json)
            es_pga_null(&cols[OB_HEADERS]);
        /* Binary-safe: dead letters carry whatever bytes the record had. */
        es_pga_bytes(&cols[OB_VALUE], m->value ? m->value : "", m->value_len);
        if (m->key)
            es_pga_bytes(&cols[OB_KEY], m->key, m->key_len);
        else
            es_pga_null(&cols[OB_KEY]);
    }
    return ES_OK;
}

es_result es_store_write(es_store *st, es_write *w, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    size_t total = w->n_events + w->n_outbox;
    int64_t first = 0;
    char count_s[24], first_s[24], head_s[24];
    unsigned char head[ES_CHAIN_HASH_LEN];
    es_chain_canon *canon = NULL;
    _Static_assert(EV__COUNT + OB__COUNT + US__COUNT + 1 == STORE_COLS, "es_store.cols");
    _Static_assert((int)US__COUNT >= (int)CM__COUNT, "rows holds the commands' columns too");
    es_pga *ev = st->cols, *ob = ev + EV__COUNT, *rows = ob + OB__COUNT, *hashes = rows + US__COUNT;

    if (w->n_events && !st->chain) {
        es_chain_key pub;
        es_chain_key_public(&pub);
        st->chain = es_chain_hasher_new(&pub);
    }
    /* Personal data is sealed before the canonical bytes are built: the
     * chain covers the sealed bytes (docs/pii.md). */
    if (w->n_events && st->has_pii && (rc = es_piikeys_seal(st, &st->pii, w->events, w->n_events, err)) != ES_OK)
        goto out;
    /* Erasure: a removed user's key is destroyed in the transaction of its
     * user.removed, after that event was sealed with it. */
    if (w->n_events && st->has_pii && (rc = es_piikeys_erase(st, w->events, w->n_events, NULL, err)) != ES_OK)
        goto out;
    /* Encode what follows the counter before touching it, the events'
     * canonical bytes (without their positions) included. */
    if (w->n_events) {
        canon = store_xmalloc(w->n_events * sizeof *canon);
        memset(canon, 0, w->n_events * sizeof *canon);
        for (size_t i = 0; i < w->n_events; i++) {
            if ((rc = es_chain_canon_prepare(&w->events[i], &canon[i], err)) != ES_OK) {
                char why[sizeof err->text];
                snprintf(why, sizeof why, "%s", err ? err->text : "");
                rc = es_error_set(err, rc, "write: event %zu: %s", i, why);
                goto out;
            }
        }
        if ((rc = store_encode_events(w, ev, err)) != ES_OK)
            goto out;
    }
    if (w->n_outbox && (rc = store_encode_outbox(w, ob, err)) != ES_OK)
        goto out;

    bool any_user = false;
    if (w->n_users && (rc = store_encode_users(w, rows, &any_user, err)) != ES_OK)
        goto out;
    if (any_user) {
        rc = store_query_cols(st, Q_UPSERT_USERS, NULL, rows, PGRES_COMMAND_OK, &res, err);
        if (rc != ES_OK)
            goto out;
        PQclear(res);
        res = NULL;
    }
    if (w->n_outcomes) {
        if ((rc = store_encode_commands(w, rows, err)) != ES_OK)
            goto out;
        rc = store_query_cols(st, Q_INSERT_COMMANDS, NULL, rows, PGRES_COMMAND_OK, &res, err);
        if (rc != ES_OK)
            goto out;
        PQclear(res);
        res = NULL;
    }
    if (total == 0)
        goto out;

    /* The counter row: held from here to COMMIT (store.h). */
    snprintf(count_s, sizeof count_s, "%zu", total);
    {
        const char *params[] = {count_s};
        int64_t last;
        rc = store_query(st, Q_TAKE_POSITIONS, params, PGRES_TUPLES_OK, &res, err);
        if (rc != ES_OK)
            goto out;
        if (PQntuples(res) != 1 || !es_parse_i64(PQgetvalue(res, 0, 0), &last) ||
            !es_chain_unhex(PQgetvalue(res, 0, 1), head, sizeof head)) {
            rc = es_error_set(err, ES_EFATAL, "write: factord.position_counter has no row 1");
            goto out;
        }
        first = last - (int64_t)total + 1;
        PQclear(res);
        res = NULL;
    }
    if (w->n_events) {
        /* The chain, in position order, from the head the counter held. */
        es_pga_begin(hashes, ES_PG_BYTEA);
        for (size_t i = 0; i < w->n_events; i++) {
            es_chain_hash_canon(st->chain, head, &canon[i], first + (int64_t)i, head);
            es_pga_bytes(hashes, head, sizeof head);
        }
        snprintf(first_s, sizeof first_s, "%" PRId64, first);
        snprintf(head_s, sizeof head_s, "%" PRId64, first + (int64_t)w->n_events - 1);
        /* $1 and $15 in text, the columns and the hashes as arrays, the
         * new head ($16) as a plain bytea's bytes. */
        const char *values[EV__COUNT + 4];
        int lengths[EV__COUNT + 4], formats[EV__COUNT + 4];
        values[0] = first_s, lengths[0] = 0, formats[0] = 0;
        for (int i = 0; i < EV__COUNT; i++)
            values[1 + i] = es_pga_finish(&ev[i], &lengths[1 + i]), formats[1 + i] = 1;
        values[EV__COUNT + 1] = es_pga_finish(hashes, &lengths[EV__COUNT + 1]);
        formats[EV__COUNT + 1] = 1;
        values[EV__COUNT + 2] = head_s, lengths[EV__COUNT + 2] = 0, formats[EV__COUNT + 2] = 0;
        values[EV__COUNT + 3] = (const char *)head, lengths[EV__COUNT + 3] = (int)sizeof head;
        formats[EV__COUNT + 3] = 1;
        _Static_assert(EV__COUNT + 4 == 16, "factord_insert_events takes 16 parameters");
        rc = store_query_bin(st, Q_INSERT_EVENTS, values, lengths, formats, PGRES_COMMAND_OK, &res, err);
        if (rc != ES_OK)
            goto out;
        PQclear(res);
        res = NULL;
    }
    if (w->n_outbox) {
        snprintf(first_s, sizeof first_s, "%" PRId64, first + (int64_t)w->n_events);
        const char *fixed[OB__COUNT + 1] = {first_s};
        rc = store_query_cols(st, Q_INSERT_OUTBOX, fixed, ob, PGRES_COMMAND_OK, &res, err);
        if (rc != ES_OK)
            goto out;
    }
    for (size_t i = 0; i < w->n_events; i++)
        w->events[i].position = first + (int64_t)i;
out:
    PQclear(res);
    for (size_t i = 0; canon && i < w->n_events; i++)
        es_chain_canon_clear(&canon[i]);
    free(canon);
    return rc;
}

/* --- reading the log ----------------------------------------------------------- */

/* Columns base..base+ES_EVT_COL__COUNT-1 of row r into evt. */
static es_result store_row_to_event(const PGresult *res, int r, int base, dom_evt *evt,
                                    es_error *err)
{
    return es_store_row_event(res, r, base, evt, err);
}

es_result es_store_row_event(const PGresult *res, int r, int base, dom_evt *evt, es_error *err)
{
    const char *type = PQgetvalue(res, r, base + ES_EVT_COL_TYPE);
    const char *payload = PQgetvalue(res, r, base + ES_EVT_COL_PAYLOAD);
    int64_t revision = 0;
    json_t *j = NULL;
    json_error_t jerr;
    es_result rc = ES_OK;

    memset(evt, 0, sizeof *evt);
    if (!store_copy(evt->instance_id, sizeof evt->instance_id, PQgetvalue(res, r, base + ES_EVT_COL_INSTANCE)) ||
        !store_copy(evt->aggregate_id, sizeof evt->aggregate_id, PQgetvalue(res, r, base + ES_EVT_COL_AGGREGATE)) ||
        !store_copy(evt->creator, sizeof evt->creator, PQgetvalue(res, r, base + ES_EVT_COL_CREATOR)) ||
        !store_copy(evt->resource_owner, sizeof evt->resource_owner, PQgetvalue(res, r, base + ES_EVT_COL_OWNER)) ||
        !store_copy(evt->command_id, sizeof evt->command_id, PQgetvalue(res, r, base + ES_EVT_COL_COMMAND)) ||
        !es_parse_i64(PQgetvalue(res, r, base + ES_EVT_COL_SEQUENCE), &evt->sequence) ||
        !es_parse_i64(PQgetvalue(res, r, base + ES_EVT_COL_POSITION), &evt->position) ||
        !es_parse_i64(PQgetvalue(res, r, base + ES_EVT_COL_CREATED), &evt->created_at_us) ||
        !es_parse_i64(PQgetvalue(res, r, base + ES_EVT_COL_REVISION), &revision)) {
        rc = es_error_set(err, ES_EFATAL, "read events: malformed events row");
        goto out;
    }
    evt->revision = (int)revision;
    evt->last_of_command = PQgetvalue(res, r, base + ES_EVT_COL_LAST)[0] == 't';
    evt->type = dom_evt_type_parse(type);
    if (evt->type == DOM_EVT_UNKNOWN) {
        rc = es_error_set(err, ES_EFATAL, "read events: unknown type '%.64s' at position %" PRId64,
                          type, evt->position);
        goto out;
    }
    j = json_loads(payload, JSON_DECODE_ANY, &jerr);
    if (!j) {
        rc = es_error_set(err, ES_EFATAL, "read events: payload at position %" PRId64 ": %s",
                          evt->position, jerr.text);
        goto out;
    }
    if (dom_evt_payload_from_json(evt, j, err) != ES_OK) {
        char why[sizeof err->text];
        snprintf(why, sizeof why, "%s", err ? err->text : "");
        rc = es_error_set(err, ES_EFATAL, "read events: payload at position %" PRId64 ": %.400s",
                          evt->position, why);
        goto out;
    }
out:
    json_decref(j);
    return rc;
}

es_result es_store_user_events(es_store *st, const char *instance_id, const char *user_id,
                               dom_evt **out, size_t *n, es_error *err)
{
    PGresult *res = NULL;
    dom_evt *evts = NULL;
    const char *params[] = {instance_id, user_id};
    *out = NULL;
    *n = 0;

    es_result rc = store_query(st, Q_USER_EVENTS, params, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto out;
    size_t rows = (size_t)PQntuples(res);
    if (rows == 0)
        goto out;
    evts = store_xmalloc(rows * sizeof *evts);
    for (size_t i = 0; i < rows; i++) {
        rc = store_row_to_event(res, (int)i, 0, &evts[i], err);
        if (rc != ES_OK)
            goto out;
    }
    PQclear(res);
    res = NULL;
    if ((rc = es_piikeys_open(st, es_store_pii_master(st), evts, rows, err)) != ES_OK)
        goto out;
    *out = evts;
    *n = rows;
    evts = NULL;
out:
    PQclear(res);
    free(evts);
    return rc;
}

void es_outbound_clear(es_outbound *rows, size_t n)
{
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++) {
        free(rows[i].topic);
        free(rows[i].key);
        free(rows[i].value);
        free(rows[i].headers_json);
        free(rows[i].reply_to);
        memset(&rows[i], 0, sizeof rows[i]);
    }
}

/* Column layout of Q_READ_OUTBOUND. */
enum { OC_POS, OC_IS_EVENT, OC_EVENT, OC_TOPIC = OC_EVENT + ES_EVT_COL__COUNT, OC_KEY, OC_VALUE,
       OC_HEADERS, OC_REPLY_TO };

/* Hex column into a malloc'd buffer (NUL-terminated for convenience). */
static bool store_hex_column(const PGresult *res, int r, int col, char **out, size_t *len)
{
    const char *hex = PQgetvalue(res, r, col);
    size_t n = strlen(hex);
    *out = store_xmalloc(n / 2 + 1);
    *len = n / 2;
    (*out)[n / 2] = '\0';
    return store_hex_decode(hex, n, (unsigned char *)*out);
}

static es_result store_row_to_outbound(const PGresult *res, int r, es_outbound *row,
                                       es_error *err)
{
    memset(row, 0, sizeof *row);
    if (!es_parse_i64(PQgetvalue(res, r, OC_POS), &row->position))
        return es_error_set(err, ES_EFATAL, "read outbound: malformed position");
    row->is_event = PQgetvalue(res, r, OC_IS_EVENT)[0] == 't';
    if (row->is_event) {
        dom_evt evt;
        es_result rc = store_row_to_event(res, r, OC_EVENT, &evt, err);
        if (rc != ES_OK)
            return rc;
        json_t *j = dom_evt_to_json(&evt);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!text)
            return es_error_set(err, ES_EFATAL, "read outbound: cannot encode the event at %" PRId64,
                                row->position);
        row->value = text;
        row->value_len = strlen(text);
        row->key_len = strlen(evt.aggregate_id);
        row->key = es_memdup(evt.aggregate_id, row->key_len);
        if (!PQgetisnull(res, r, OC_REPLY_TO) && PQgetvalue(res, r, OC_REPLY_TO)[0])
            row->reply_to = es_memdup(PQgetvalue(res, r, OC_REPLY_TO), strlen(PQgetvalue(res, r, OC_REPLY_TO)));
        return ES_OK;
    }
    row->topic = es_memdup(PQgetvalue(res, r, OC_TOPIC), strlen(PQgetvalue(res, r, OC_TOPIC)));
    if (!PQgetisnull(res, r, OC_HEADERS))
        row->headers_json = es_memdup(PQgetvalue(res, r, OC_HEADERS),
                                          strlen(PQgetvalue(res, r, OC_HEADERS)));
    if (!store_hex_column(res, r, OC_VALUE, &row->value, &row->value_len) ||
        (!PQgetisnull(res, r, OC_KEY) &&
         !store_hex_column(res, r, OC_KEY, &row->key, &row->key_len)))
        return es_error_set(err, ES_EFATAL, "read outbound: malformed bytea at %" PRId64,
                            row->position);
    return ES_OK;
}

es_result es_store_read_outbound(es_store *st, int64_t after, size_t max,
                                 es_outbound *rows, size_t *n, es_error *err)
{
    es_result rc = ES_OK;
    PGresult *res = NULL;
    char after_s[24], max_s[24];
    size_t got = 0;
    *n = 0;

    if (max == 0)
        goto out;
    snprintf(after_s, sizeof after_s, "%" PRId64, after);
    snprintf(max_s, sizeof max_s, "%zu", max);
    const char *params[] = {after_s, max_s};
    rc = store_query(st, Q_READ_OUTBOUND, params, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto out;
    if ((size_t)PQntuples(res) > max) {
        rc = es_error_set(err, ES_EFATAL, "read outbound: more rows than asked for");
        goto out;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        rc = store_row_to_outbound(res, r, &rows[got], err);
        got++;   /* a half-filled row is cleared below */
        if (rc != ES_OK)
            goto out;
    }
    *n = got;
out:
    PQclear(res);
    if (rc != ES_OK)
        es_outbound_clear(rows, got);
    return rc;
}

/* --- checkpoints, locks, head ------------------------------------------------ */

es_result es_store_checkpoint_get(es_store *st, const char *name, int64_t *pos, es_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {name};
    *pos = 0;
    es_result rc = store_query(st, Q_CHECKPOINT_GET, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && PQntuples(res) == 1 && !es_parse_i64(PQgetvalue(res, 0, 0), pos))
        rc = es_error_set(err, ES_EFATAL, "checkpoint get: malformed position");
    PQclear(res);
    return rc;
}

es_result es_store_checkpoint_set(es_store *st, const char *name, int64_t pos, es_error *err)
{
    PGresult *res = NULL;
    char pos_s[24];
    snprintf(pos_s, sizeof pos_s, "%" PRId64, pos);
    const char *params[] = {name, pos_s};
    es_result rc = store_query(st, Q_CHECKPOINT_SET, params, PGRES_COMMAND_OK, &res, err);
    PQclear(res);
    return rc;
}

es_result es_store_try_lock(es_store *st, const char *name, bool *got, es_error *err)
{
    PGresult *res = NULL;
    const char *params[] = {name};
    *got = false;
    es_result rc = store_query(st, Q_TRY_LOCK, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK)
        *got = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return rc;
}

es_result es_store_head(es_store *st, int64_t *pos, es_error *err)
{
    PGresult *res = NULL;
    *pos = 0;
    es_result rc = store_query(st, Q_HEAD, NULL, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && !es_parse_i64(PQgetvalue(res, 0, 0), pos))
        rc = es_error_set(err, ES_EFATAL, "head: malformed position");
    PQclear(res);
    return rc;
}

es_result es_store_outbound_lag(es_store *st, int64_t after, int64_t *rows, double *oldest_age_s, es_error *err)
{
    PGresult *res = NULL;
    char pos[24];
    snprintf(pos, sizeof pos, "%lld", (long long)after);
    const char *params[] = {pos};
    *rows = 0;
    *oldest_age_s = 0;
    es_result rc = store_query(st, Q_OUTBOUND_LAG, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && !es_parse_i64(PQgetvalue(res, 0, 0), rows))
        rc = es_error_set(err, ES_EFATAL, "outbound lag: malformed count");
    if (rc == ES_OK)
        *oldest_age_s = strtod(PQgetvalue(res, 0, 1), NULL);
    PQclear(res);
    return rc;
}

/* --- waking on commits ------------------------------------------------------- */

es_result es_store_listen(es_store *st, const char *channel, es_error *err)
{
    /* LISTEN takes an identifier, not a parameter: quoted by libpq. */
    char *ident = PQescapeIdentifier(st->conn, channel, strlen(channel));
    if (!ident) {
        const char *m = PQerrorMessage(st->conn);
        return es_error_set(err, PQstatus(st->conn) == CONNECTION_OK ? ES_EINVAL : ES_ETRANSIENT,
                            "listen: %.*s", store_trimmed_len(m), m);
    }
    size_t len = strlen(ident) + sizeof "LISTEN ";
    char *sql = store_xmalloc(len);
    snprintf(sql, len, "LISTEN %s", ident);
    PQfreemem(ident);
    es_result rc = store_simple(st, sql, "listen", err);
    free(sql);
    return rc;
}

/* Free every notification libpq has parsed; true when there was one. */
static bool store_drain_notifies(es_store *st)
{
    bool any = false;
    PGnotify *n;
    while ((n = PQnotifies(st->conn)) != NULL) {
        any = true;
        PQfreemem(n);
    }
    return any;
}

static es_result store_consume(es_store *st, es_error *err)
{
    if (PQconsumeInput(st->conn))
        return ES_OK;
    const char *m = PQerrorMessage(st->conn);
    return es_error_set(err, ES_ETRANSIENT, "wait for notifications: %.*s", store_trimmed_len(m), m);
}

es_result es_store_wait_notify(es_store *st, int timeout_ms, bool *notified, es_error *err)
{
    *notified = false;
    /* What already arrived first: libpq parses notifications while it reads
     * any result, and the socket may hold more. */
    es_result rc = store_consume(st, err);
    if (rc != ES_OK)
        return rc;
    *notified = store_drain_notifies(st);
    if (*notified || timeout_ms <= 0)
        return ES_OK;
    int fd = PQsocket(st->conn);
    if (fd < 0)
        return es_error_set(err, ES_ETRANSIENT, "wait for notifications: no connection");
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int n = poll(&pfd, 1, timeout_ms);
    if (n < 0 && errno == EINTR)
        return ES_OK; /* a signal: the caller checks its stop flag */
    if (n < 0)
        return es_error_set(err, ES_ETRANSIENT, "wait for notifications: poll: %s", strerror(errno));
    if (n == 0)
        return ES_OK;
    /* Readable: a notification, another message, or the connection closing
     * (then PQconsumeInput fails). */
    rc = store_consume(st, err);
    if (rc == ES_OK)
        *notified = store_drain_notifies(st);
    return rc;
}
