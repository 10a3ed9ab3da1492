/*
 * infra/pg/readmodel.h - Queries on the read models for the
 * gateway's read calls (ListMyAuthFactors, GetMyUser, GetMyPhone), over small connections of their
 * own: a read call must never wait behind a batch transaction.
 *
 * A connection gives up fast (3 s to connect, 2 s per statement) because
 * an HTTP caller is waiting; it names itself application_name
 * factord-gateway. Ownership: a connection is its caller's
 * (es_readmodel_free, NULL-safe); rows are caller storage.
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_READMODEL_H
#define FACTORD_INFRA_READMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "domain/command.h"
#include "domain/event.h"

typedef struct es_readmodel es_readmodel;

/* Connect (conninfo NULL: libpq's PG* environment); NULL when PostgreSQL
 * cannot be reached or refuses the session settings. */
es_readmodel *es_readmodel_connect(const char *conninfo);
void es_readmodel_free(es_readmodel *rm);
/* False when the connection was lost: free it and connect again. */
bool es_readmodel_usable(const es_readmodel *rm);
/* Keep *rm connected (reconnecting when lost) and ask it a trivial query:
 * true when PostgreSQL answered. */
bool es_readmodel_ping(es_readmodel **rm, const char *conninfo);

#define ES_READMODEL_MAX_FACTORS 32

typedef struct {
    char type[32];  /* e.g. "otpSms" (the read model's factor type) */
    char state[40]; /* e.g. "AUTH_FACTOR_STATE_READY" */
} es_auth_factor_row;

typedef struct {
    bool found;                  /* the user is in factord.users */
    char status[16];             /* its status ("active", "locked", ...) */
    char resource_owner[DOM_ID_MAX];
    size_t n;                    /* factors, by type */
    es_auth_factor_row factors[ES_READMODEL_MAX_FACTORS];
} es_user_auth_factors;

/* The user's state and auth factors (instance-scoped). ES_ETRANSIENT
 * (err with the SQLSTATE) when the query failed: the read model is
 * unavailable. */
es_result es_readmodel_auth_factors(es_readmodel *rm, const char *instance_id, const char *user_id,
                                    es_user_auth_factors *out, es_error *err) ES_WUR;

/* A user for GetMyUser and GetMyPhone: whether the write side knows the
 * user (status, organisation) and the user read model's row (has_view:
 * false while the projector has not yet applied the user's addition). */
typedef struct {
    bool found;                  /* the user is in factord.users */
    char status[16];             /* its status ("active", "locked", ...) */
    char resource_owner[DOM_ID_MAX];
    bool has_view;               /* a factord.user_views row: */
    char view_owner[DOM_ID_MAX];
    char state[24];              /* "USER_STATE_ACTIVE", ... */
    dom_import human;            /* user name, profile, e-mail, current phone */
    int64_t sequence, created_at_us, changed_at_us;
} es_user_view_row;

/* The user's status and read-model row (instance-scoped). ES_ETRANSIENT
 * (err with the SQLSTATE) when the query failed. */
es_result es_readmodel_user_view(es_readmodel *rm, const char *instance_id, const char *user_id,
                                 es_user_view_row *out, es_error *err) ES_WUR;

/* A session (GetSession, SetSession): the events that name it (a
 * sessionId in their payload), read by its id through migration 0015's
 * index, handed to fn one at a time in (user, sequence) order with their
 * user's current name ("" when the user is gone); the caller folds them
 * (projections/sessions.h). No event for an unknown session or one of
 * another instance. ES_ETRANSIENT when the query failed; ES_EINVAL when an
 * event does not decode. */
typedef void (*es_session_event_fn)(void *ctx, const dom_evt *evt, const char *user_name);
es_result es_readmodel_session_events(es_readmodel *rm, const char *instance_id, const char *session_id,
                                      es_session_event_fn fn, void *ctx, es_error *err) ES_WUR;

/* The live user with this login name (the user name, case-insensitively,
 * as factord keeps no organisation domains): *found and user_id. */
es_result es_readmodel_user_by_login_name(es_readmodel *rm, const char *instance_id, const char *login_name,
                                          bool *found, char user_id[DOM_ID_MAX], es_error *err) ES_WUR;

#endif
