/*
 * infra/pg/store.h - factord's PostgreSQL event store.
 *
 * Owns one libpq connection. Schema `factord` (migrations/): the append-only
 * event log, the command table (id, content hash, stored outcome), the
 * write-side user projection, the outbox of replies and dead letters, the
 * global position counter and the relay's checkpoint. Every statement is
 * parameterised; user data is always addressed by instance id.
 *
 * Positions: the batch transaction takes the single counter row
 * (UPDATE ... RETURNING) after deciding and holds its lock to COMMIT, so
 * positions become visible in commit order (brief §4.2): a reader that saw
 * position P never later finds a new one below P.
 *
 * Ownership: the caller owns every struct it passes in; functions that fill
 * out-arrays write into caller-provided storage; strings returned inside
 * es_outbound rows are owned by the row and freed by es_outbound_clear.
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_STORE_H
#define FACTORD_INFRA_STORE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "domain/event.h"
#include "domain/user.h"
#include "infra/base/backoff.h"
#include "infra/crypto/chain.h"
#include "infra/crypto/pii.h"

typedef struct es_store es_store;

/* Connect (conninfo may be NULL or "": libpq's PG* environment applies). */
es_result es_store_open(const char *conninfo, es_store **out, es_error *err) ES_WUR;
void es_store_free(es_store *st);          /* NULL-safe */
PGconn *es_store_conn(es_store *st);       /* borrowed; for tools and tests */
/* Connect for a long-running component: retry with backoff (logged) while
 * PostgreSQL is away, until it answers or stop is set, then check that the
 * schema is at least min_schema (1: any factord schema). ES_OK with *out;
 * ES_EFATAL when the schema is missing or older (err says to run `factord
 * migrate`) or PostgreSQL refuses us (bad password, no database);
 * ES_ETRANSIENT when stopped before it answered. */
es_result es_store_connect(const char *conninfo, int min_schema, const es_stop_flag *stop, es_store **out,
                           es_error *err) ES_WUR;
/* True while st's connection is up (as far as libpq knows). */
bool es_store_connected(es_store *st);
/* This session's commits do not wait for the WAL flush
 * (synchronous_commit = off): for a session whose writes may be lost in a
 * crash, such as the relay's checkpoint. Again after every reconnect. */
es_result es_store_session_async_commit(es_store *st, es_error *err) ES_WUR;
/* Reconnect after a lost connection (PQreset); ES_ETRANSIENT while away. */
es_result es_store_reset(es_store *st, es_error *err) ES_WUR;

/* The key es_store_write chains events with (infra/crypto/chain.h; copied). Until
 * it is set, the public key is used. Every writer of one database must use
 * the same key, or `factord verify` fails at the first event of another. */
void es_store_set_chain_key(es_store *st, const es_chain_key *key);

/* The personal-data master key (infra/crypto/pii.h; copied; NULL: none).
 * With one, es_store_write seals every event's PII fields under its user's
 * data key (infra/pg/piikeys.h), destroys the key of every user it writes
 * user.removed for (erasure), and es_store_user_events opens them (the
 * fields of an erased user stay empty: DOM_PII_ERASED). Events are given
 * to es_store_write unsealed; one already sealed (pii set) is written as
 * it is, so a caller that retries a rolled-back write must pass fresh
 * events (the key of the first try went with its transaction);
 * without, events are written in clear and a sealed one read back is an
 * error (docs/pii.md). Needs the schema at ES_STORE_PII_SCHEMA. */
#define ES_STORE_PII_SCHEMA 17
void es_store_set_pii_master(es_store *st, const es_pii_master *m);
const es_pii_master *es_store_pii_master(const es_store *st); /* NULL: none */

/* Apply every migration not yet applied, each in its own transaction, under
 * an advisory lock so concurrent migrators wait. *applied = how many ran. */
es_result es_store_migrate(es_store *st, int *applied, es_error *err) ES_WUR;
/* Highest applied migration version (0 = none). */
es_result es_store_schema_version(es_store *st, int *version, es_error *err) ES_WUR;

/* Transactions. Errors classify SQLSTATEs: 40001/40P01/23505 -> ES_ECONFLICT,
 * connection loss (08*, PQstatus bad), server shutdown (57P01-57P03), too
 * many connections (53300) and statement timeout (57014) -> ES_ETRANSIENT,
 * else ES_EFATAL. err->sqlstate gets the SQLSTATE. */
es_result es_store_begin(es_store *st, es_error *err) ES_WUR;
es_result es_store_commit(es_store *st, es_error *err) ES_WUR;
void es_store_rollback(es_store *st);      /* best effort, never fails */

/* One parameterised statement of a module with SQL of its own (the
 * read-model projector, infra/pg/projection_sql.c): text parameters and results,
 * unnamed (parsed per call; batch statements, so that is cheap). ES_OK when
 * the result status is want; otherwise err is filled and classified like
 * the store's own statements (above). *res is set either way: the caller
 * PQclears it. what names the statement in err->text. */
es_result es_store_exec(es_store *st, const char *what, const char *sql, int nparams,
                        const char *const *params, ExecStatusType want, PGresult **res,
                        es_error *err) ES_WUR;
/* The same with each parameter's length and format (0 text, 1 binary: see
 * infra/pg/pgarr.h for arrays); lengths matter for binary ones only. */
es_result es_store_exec_bin(es_store *st, const char *what, const char *sql, int nparams,
                            const char *const *values, const int *lengths, const int *formats,
                            ExecStatusType want, PGresult **res, es_error *err) ES_WUR;

/* --- deciding a batch (inside one transaction) --------------------------- */

typedef struct {
    bool found;
    char instance_id[DOM_ID_MAX];
    unsigned char hash[32];
    int http_status;
    char *body;       /* stored reply body JSON, malloc'd; NULL when !found.
                         Byte for byte as written (a json column), so a
                         repeated reply is identical to the first. */
} es_known_cmd;
void es_known_cmd_clear(es_known_cmd *k);  /* frees body, NULL-safe */

/* Look up command ids (n of them); out[i] describes ids[i]. */
es_result es_store_find_commands(es_store *st, const char *const *ids, size_t n,
                                 es_known_cmd *out, es_error *err) ES_WUR;

/* Load the write-side state of users[i] (instance_id and user_id set by the
 * caller) FOR UPDATE, in the order given (the caller sorts, to avoid
 * deadlocks). Missing users keep status DOM_USER_NONE and found[i]=false. */
es_result es_store_load_users(es_store *st, dom_user *users, bool *found, size_t n,
                              es_error *err) ES_WUR;

/* One user name to look up: is it held by a live (not removed) user of the
 * instance other than except_user_id ("" or NULL: any user)? */
typedef struct {
    const char *instance_id;
    const char *user_name;
    const char *except_user_id;
} es_name_probe;

/* taken[i] for probes[i], case-insensitive as ZITADEL, all n in one query
 * (one index probe each): the processor asks once per batch for every
 * import's name, not once per import. */
es_result es_store_names_taken(es_store *st, const es_name_probe *probes, size_t n, bool *taken,
                               es_error *err) ES_WUR;

/* What one batch writes. */
typedef struct {
    const dom_cmd *cmd;
    const unsigned char *hash;   /* 32 bytes */
    int http_status;
    const char *body;            /* outcome body JSON (reply body) */
    const char *reply_to;        /* the topic the reply goes to (the command's
                                    replyTo or the default): the read-model
                                    projector replies there on success */
} es_cmd_outcome;

typedef struct {
    const char *instance_id;     /* "" when unknown (dead letters) */
    const char *topic;
    const char *key; size_t key_len;
    const char *value; size_t value_len;
    const char *headers_json;    /* {"name":"value",...} or NULL */
} es_outbox_msg;

typedef struct {
    dom_evt *events; size_t n_events;          /* positions filled on success */
    const dom_user *users; size_t n_users;     /* final states to upsert */
    const es_cmd_outcome *outcomes; size_t n_outcomes; /* new command rows */
    const es_outbox_msg *outbox; size_t n_outbox;      /* replies, dead letters */
} es_write;

/* Take n_events + n_outbox positions from the counter (held to commit),
 * append the events (in array order), upsert the users, insert the command
 * rows and the outbox rows. Positions: events first in array order, then
 * outbox rows. Each event gets its hash in the chain (infra/crypto/chain.h) from
 * the head the counter row holds, and the head moves to the batch's last
 * event, in the same transaction. ES_ECONFLICT on a unique violation (a
 * racing writer).
 * Users still in DOM_USER_NONE are skipped (nothing happened to them);
 * with no events and no outbox rows the counter is not taken. When it is
 * taken, the transaction also notifies ES_STORE_OUTBOUND_CHANNEL (below),
 * delivered when the caller commits. */
es_result es_store_write(es_store *st, es_write *w, es_error *err) ES_WUR;

/* --- reading the log ----------------------------------------------------- */

/* The columns of an event row, for reads with SQL of their own
 * (infra/pg/logread.c): "SELECT " ES_STORE_EVENT_COLUMNS " FROM factord.events e",
 * then es_store_row_event decodes row r from column base on, exactly as the
 * relay reads events (so the chain's canonical bytes can be recomputed).
 * es_store_event_col numbers them from base. */
#define ES_STORE_EVENT_COLUMNS                                                \
    "e.instance_id, e.aggregate_id, e.sequence, e.position, e.type, "        \
    "e.revision, (extract(epoch FROM e.created_at) * 1000000)::bigint, "     \
    "e.creator, e.resource_owner, coalesce(e.command_id::text, ''), "        \
    "e.last_of_command, e.payload::text"
#define ES_STORE_EVENT_NCOLUMNS 12
typedef enum {
    ES_EVT_COL_INSTANCE, ES_EVT_COL_AGGREGATE, ES_EVT_COL_SEQUENCE, ES_EVT_COL_POSITION,
    ES_EVT_COL_TYPE, ES_EVT_COL_REVISION, ES_EVT_COL_CREATED, ES_EVT_COL_CREATOR,
    ES_EVT_COL_OWNER, ES_EVT_COL_COMMAND, ES_EVT_COL_LAST, ES_EVT_COL_PAYLOAD, ES_EVT_COL__COUNT
} es_store_event_col;
_Static_assert(ES_EVT_COL__COUNT == ES_STORE_EVENT_NCOLUMNS, "ES_STORE_EVENT_COLUMNS's columns");
es_result es_store_row_event(const PGresult *res, int r, int base, dom_evt *evt,
                             es_error *err) ES_WUR;
/* Likewise for factord.users: "SELECT " ES_STORE_USER_COLUMNS " FROM
 * factord.users", decoded from column base on by es_store_row_user;
 * es_store_user_col numbers them from base. */
#define ES_STORE_USER_COLUMNS                                                 \
    "instance_id, user_id, resource_owner, user_name, status, sequence, "    \
    "phone, phone_verified, verified_phone, otp_sms, code_enc, "             \
    "(extract(epoch FROM code_expires_at) * 1000000)::bigint, "              \
    "(extract(epoch FROM created_at) * 1000000)::bigint, "                   \
    "(extract(epoch FROM changed_at) * 1000000)::bigint, "                   \
    "otp_code_enc, (extract(epoch FROM otp_code_expires_at) * 1000000)::bigint, " \
    "otp_failed, otp_code_session"
#define ES_STORE_USER_NCOLUMNS 18
typedef enum {
    ES_USER_COL_INSTANCE, ES_USER_COL_USER, ES_USER_COL_OWNER, ES_USER_COL_NAME,
    ES_USER_COL_STATUS, ES_USER_COL_SEQUENCE, ES_USER_COL_PHONE, ES_USER_COL_PHONE_VERIFIED,
    ES_USER_COL_VERIFIED_PHONE, ES_USER_COL_OTP_SMS, ES_USER_COL_CODE_ENC,
    ES_USER_COL_CODE_EXPIRES, ES_USER_COL_CREATED, ES_USER_COL_CHANGED, ES_USER_COL_OTP_CODE_ENC,
    ES_USER_COL_OTP_CODE_EXPIRES, ES_USER_COL_OTP_FAILED, ES_USER_COL_OTP_CODE_SESSION, ES_USER_COL__COUNT
} es_store_user_col;
_Static_assert(ES_USER_COL__COUNT == ES_STORE_USER_NCOLUMNS, "ES_STORE_USER_COLUMNS's columns");
es_result es_store_row_user(const PGresult *res, int r, int base, dom_user *u,
                            es_error *err) ES_WUR;


/* Events of one user in sequence order (for tests, rebuild and tools).
 * *out is malloc'd (NULL when *n == 0): the caller free()s it. */
es_result es_store_user_events(es_store *st, const char *instance_id, const char *user_id,
                               dom_evt **out, size_t *n, es_error *err) ES_WUR;

/* The Kafka header that the relay puts on the last event of an accepted
 * command: the command's reply topic, so that a projector need not look it
 * up (infra/components/projector.h). */
#define ES_REPLY_TO_HEADER "factord-reply-to"

/* One row the relay publishes: an event or an outbox message. */
typedef struct {
    int64_t position;
    bool is_event;
    char *topic;        /* NULL for events: the relay uses its events topic */
    char *key; size_t key_len;
    char *value; size_t value_len;  /* event JSON (dom_evt_to_json) or outbox value */
    char *headers_json; /* outbox only: {"name":"value",...} or NULL */
    char *reply_to;     /* events only: the accepted command's reply topic
                           on its last event (sent as ES_REPLY_TO_HEADER),
                           else NULL */
} es_outbound;
void es_outbound_clear(es_outbound *rows, size_t n); /* frees members */

/* Up to max rows with position > after, in position order. */
es_result es_store_read_outbound(es_store *st, int64_t after, size_t max,
                                 es_outbound *rows, size_t *n, es_error *err) ES_WUR;

/* Durable checkpoints by name (relay). Missing = 0. */
es_result es_store_checkpoint_get(es_store *st, const char *name, int64_t *pos,
                                  es_error *err) ES_WUR;
es_result es_store_checkpoint_set(es_store *st, const char *name, int64_t pos,
                                  es_error *err) ES_WUR;

/* Session-level advisory lock by name (one active relay); false when held
 * elsewhere. */
es_result es_store_try_lock(es_store *st, const char *name, bool *got, es_error *err) ES_WUR;

/* Highest committed position (0 when empty). */
es_result es_store_head(es_store *st, int64_t *pos, es_error *err) ES_WUR;
/* What the relay has still to publish after position after: *rows
 * positions (events and outbox rows) and the age in seconds of the oldest
 * of them (0 when none). Across instances, as the relay publishes. */
es_result es_store_outbound_lag(es_store *st, int64_t after, int64_t *rows, double *oldest_age_s,
                                es_error *err) ES_WUR;

/* --- waking on commits (LISTEN/NOTIFY) ----------------------------------- */

/* The channel es_store_write notifies in every transaction that takes
 * positions (events or outbox rows), so a reader of the log (the relay) can
 * sleep until something is committed. PostgreSQL delivers it at COMMIT
 * (never for a rollback), once per transaction however many rows, and only
 * to listeners connected to the same database: deployments in other
 * databases of one server never see each other's notifications (and one
 * database holds one deployment: the schema is always `factord`). */
#define ES_STORE_OUTBOUND_CHANNEL "factord_outbound"

/* LISTEN on channel from this connection (outside a transaction: it takes
 * effect at once). A connection made later (es_store_open, es_store_reset)
 * listens on nothing: call again after every (re)connect. Notifications
 * committed before the LISTEN are not delivered: read what is committed
 * after listening, not before. */
es_result es_store_listen(es_store *st, const char *channel, es_error *err) ES_WUR;

/* Drain every notification received so far; when there was none, wait on
 * the connection's socket up to timeout_ms (0: do not wait) for one to
 * arrive and drain again. *notified tells whether any was drained. Returns
 * early, ES_OK with *notified false, when a signal interrupts the wait or
 * the server sent something else; callers bound timeout_ms to stay
 * responsive to their stop flag (a signal may go to another thread).
 * ES_ETRANSIENT when the connection is lost. Call it outside a transaction
 * (the server delivers notifications only between transactions). Draining
 * is the point: a notification means a commit happened before it, so a
 * read made after the drain sees that commit. */
es_result es_store_wait_notify(es_store *st, int timeout_ms, bool *notified,
                               es_error *err) ES_WUR;

#endif
