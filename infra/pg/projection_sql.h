/*
 * infra/pg/projection_sql.h - the SQL of the read-model projector
 * (infra/components/projector.h): the applied sequences of a projection
 * (factord.projected_sequences), the auth-factor rows (factord.auth_factors)
 * and the reply topics of completed commands (factord.commands).
 *
 * A batch statement carries its rows as one binary array per column
 * (unnest, infra/pg/pgarr.h): one round trip per table, never one per row,
 * no text for the server to parse, and no SQL text built from data. The
 * rows are added straight into those arrays, one statement at a time:
 * es_projsql_begin names the statement and empties the arrays (keeping
 * their memory between batches), the es_projsql_add_* of that statement
 * add its rows, and the statement's run function sends them. A statement
 * without rows is not sent. Every statement names the instance of each
 * row it touches.
 *
 * Ownership: a builder is its caller's (es_projsql_free, NULL-safe), used
 * by one thread; strings added are copied; strings handed to a row
 * callback are borrowed for the call. Errors are the store's
 * (es_store_exec_bin: classified SQLSTATEs, err->sqlstate set).
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PG_PROJECTION_SQL_H
#define FACTORD_INFRA_PG_PROJECTION_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "infra/pg/store.h"

/* The statements, by the rows they take. */
typedef enum {
    ES_PROJSQL_LOAD_SEQUENCES = 1, /* keys: es_projsql_add_key; es_projsql_load_sequences */
    ES_PROJSQL_INSERT_SEQUENCES,   /* new users: es_projsql_add_seq; es_projsql_write */
    ES_PROJSQL_UPDATE_SEQUENCES,   /* users with a row (only forward): es_projsql_add_seq; es_projsql_write */
    ES_PROJSQL_DELETE_FACTORS,     /* es_projsql_add_factor_key; es_projsql_write */
    ES_PROJSQL_PUT_FACTORS,        /* es_projsql_add_factor (an existing row keeps created_at); es_projsql_write */
    ES_PROJSQL_REPLY_TOPICS,       /* es_projsql_add_command; es_projsql_reply_topics */
    ES_PROJSQL_LOAD_VIEWS,         /* user views: es_projsql_add_key; es_projsql_load_views */
    ES_PROJSQL_DELETE_VIEWS,       /* es_projsql_add_key; es_projsql_write */
    ES_PROJSQL_PUT_VIEWS           /* whole rows: es_projsql_add_view; es_projsql_write */
} es_projsql_stmt;

/* One auth-factor row (put, or listed); strings borrowed. */
typedef struct {
    const char *instance_id, *user_id;
    const char *type;            /* the read model's type name, e.g. "otpSms" */
    const char *state;           /* e.g. "AUTH_FACTOR_STATE_READY" */
    const char *resource_owner;
    int64_t sequence, created_at_us, changed_at_us;
} es_projsql_factor;

/* One row of the user read model (factord.user_views); strings and the
 * human borrowed. */
typedef struct {
    const char *instance_id, *user_id, *resource_owner;
    const char *state;           /* e.g. "USER_STATE_ACTIVE" */
    const dom_import *human;     /* user name, profile, e-mail, current phone */
    int64_t sequence, created_at_us, changed_at_us;
} es_projsql_view;

typedef struct es_projsql es_projsql;

/* A builder for the statements of projection (the projected_sequences
 * name; copied). Out of memory aborts. */
es_projsql *es_projsql_new(const char *projection);
void es_projsql_free(es_projsql *q); /* NULL-safe */
/* Run the user-view statements on factord.<table> instead of
 * factord.user_views (rebuild's shadow, "user_views_rebuild"); table is an
 * identifier constant of the caller's. */
void es_projsql_use_views_table(es_projsql *q, const char *table);

/* Empty the rows and start statement s. */
void es_projsql_begin(es_projsql *q, es_projsql_stmt s);
/* Rows added since es_projsql_begin. */
size_t es_projsql_rows(const es_projsql *q);

/* Rows, each for the statements named above. A string that is not valid
 * UTF-8 goes as NULL, which makes the statement refuse the batch (NOT
 * NULL columns). */
void es_projsql_add_key(es_projsql *q, const char *instance_id, const char *user_id);
void es_projsql_add_seq(es_projsql *q, const char *instance_id, const char *user_id, int64_t sequence);
void es_projsql_add_factor_key(es_projsql *q, const char *instance_id, const char *user_id, const char *type);
void es_projsql_add_factor(es_projsql *q, const es_projsql_factor *f);
void es_projsql_add_view(es_projsql *q, const es_projsql_view *v);
/* False, with nothing added, when command_id is not a UUID. */
bool es_projsql_add_command(es_projsql *q, const char *command_id, const char *instance_id);

/* Run ES_PROJSQL_LOAD_SEQUENCES inside the caller's transaction: the
 * applied sequences of the keys that have one, locked FOR UPDATE in key
 * order; row(arg, instance_id, user_id, sequence, err) for each, and its
 * first error ends the run with that result. */
typedef es_result (*es_projsql_seq_fn)(void *arg, const char *instance_id, const char *user_id,
                                       int64_t sequence, es_error *err);
es_result es_projsql_load_sequences(es_projsql *q, es_store *st, es_projsql_seq_fn row, void *arg,
                                    es_error *err) ES_WUR;
/* The user-view columns user_name, first_name, last_name, nick_name,
 * display_name, preferred_language, gender, email, email_verified, phone,
 * phone_verified (11 columns from col, in this order) of a result's row
 * into *h. */
struct pg_result;
void es_projsql_read_human(const struct pg_result *res, int row, int col, dom_import *h);

/* Run ES_PROJSQL_LOAD_VIEWS inside the caller's transaction: row(arg, v,
 * err) for each stored row of the keys (v borrowed for the call); its
 * first error ends the run with that result. */
typedef es_result (*es_projsql_view_fn)(void *arg, const es_projsql_view *v, es_error *err);
es_result es_projsql_load_views(es_projsql *q, es_store *st, es_projsql_view_fn row, void *arg,
                                es_error *err) ES_WUR;
/* Run one of the writing statements. */
es_result es_projsql_write(es_projsql *q, es_store *st, es_error *err) ES_WUR;
/* Run ES_PROJSQL_REPLY_TOPICS: for each command found in its instance,
 * row(arg, command_id, reply_topic, http_status). */
typedef void (*es_projsql_topic_fn)(void *arg, const char *command_id, const char *reply_to, int http_status);
es_result es_projsql_reply_topics(es_projsql *q, es_store *st, es_projsql_topic_fn row, void *arg,
                                  es_error *err) ES_WUR;

/* The auth-factor rows of one user, by type, up to max of them: row(arg,
 * f, err) for each, whose first error ends the run with that result.
 * Outside a transaction of the caller's, a consistent snapshot. */
typedef es_result (*es_projsql_factor_fn)(void *arg, const es_projsql_factor *f, es_error *err);
es_result es_projsql_list_factors(es_store *st, const char *instance_id, const char *user_id, size_t max,
                                  es_projsql_factor_fn row, void *arg, es_error *err) ES_WUR;

#endif
