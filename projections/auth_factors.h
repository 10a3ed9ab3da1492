/*
 * projections/auth_factors.h - the auth-factor read model: which second
 * factors a user has, as ZITADEL's ListMyAuthFactors shows them.
 *
 * Pure: an event goes in, the row changes it implies come out
 * (proj_auth_factors_reduce); the changes of one batch fold into one net
 * change per row (proj_af_fold), which the projector (infra/components/projector.c)
 * writes in its batch transaction. No I/O, no clock: the dates are the
 * events' own.
 *
 * Row life: user.human.otp.sms.added (or ZITADEL's
 * user.human.mfa.otp.sms.added) puts the OTP-SMS row in state READY;
 * user.human.otp.sms.removed, user.human.phone.removed (the factor cannot
 * work without a phone: factord writes an explicit otp.sms.removed too, but
 * an imported ZITADEL log may not), user.removed and user.human.added (a
 * fresh life of the user id) delete the user's rows. Other events change
 * nothing here.
 *
 * Ownership: every struct is plain and caller-owned.
 *
 * Layer: projections; pure: includes only the domain (docs/architecture.md,
 * "Layers").
 */
#ifndef FACTORD_PROJECTIONS_AUTH_FACTORS_H
#define FACTORD_PROJECTIONS_AUTH_FACTORS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/event.h"

/* The projection's name in factord.projected_sequences. */
#define PROJ_AUTH_FACTORS "auth_factors"

typedef enum {
    PROJ_AF_OTP_SMS = 0, /* "otpSms" */
    PROJ_AF__TYPES
} proj_af_type;

typedef enum {
    PROJ_AF_STATE_NOT_READY = 1, /* "AUTH_FACTOR_STATE_NOT_READY" */
    PROJ_AF_STATE_READY          /* "AUTH_FACTOR_STATE_READY" */
} proj_af_state;

/* ZITADEL's JSON names (also the stored values); "" for values out of range. */
const char *proj_af_type_name(proj_af_type t);
const char *proj_af_state_name(proj_af_state s);
/* -1 for an unknown name. */
int proj_af_type_parse(const char *name);
int proj_af_state_parse(const char *name);

/* One row of factord.auth_factors. */
typedef struct {
    char instance_id[DOM_ID_MAX];
    char user_id[DOM_ID_MAX];
    proj_af_type type;
    proj_af_state state;
    int64_t sequence;       /* of the last event that changed the row */
    int64_t created_at_us;  /* when the factor was added */
    int64_t changed_at_us;  /* when the row last changed */
    char resource_owner[DOM_ID_MAX];
} proj_auth_factor;

typedef enum {
    PROJ_AF_PUT = 1, /* write row (an existing row keeps its created_at) */
    PROJ_AF_DELETE   /* delete the row with row's key, if there is one */
} proj_af_op;

typedef struct {
    proj_af_op op;
    proj_auth_factor row;   /* PUT: the row as of the event (created_at =
                               changed_at = the event's time); DELETE: the
                               key (instance, user, type) and the sequence */
} proj_af_change;

#define PROJ_AF_MAX_CHANGES ((size_t)PROJ_AF__TYPES)

/* The changes evt implies, in out (room for PROJ_AF_MAX_CHANGES); returns
 * how many (0 for events that do not touch the model). */
size_t proj_auth_factors_reduce(const dom_evt *evt, proj_af_change out[PROJ_AF_MAX_CHANGES]);

/* The net effect of several changes on one row (key). */
typedef struct {
    bool del;               /* delete the stored row first */
    bool put;               /* then write row (created_at kept when !del and
                               the row exists) */
    proj_auth_factor row;
} proj_af_net;

/* Fold changes[0..n) into nets, one per key: changes must be grouped by
 * key and in event order within a key (the projector walks a batch user by
 * user, in sequence order). Returns the number of nets written to out
 * (at most n). A PUT after a PUT of the same batch keeps the first one's
 * created_at; a PUT after a DELETE starts a new row. */
size_t proj_af_fold(const proj_af_change *changes, size_t n, proj_af_net *out);

/* Same key: instance, user and type. */
bool proj_af_same_key(const proj_auth_factor *a, const proj_auth_factor *b);

/* A row as ZITADEL's AuthFactor JSON: {"state":"AUTH_FACTOR_STATE_READY",
 * "otpSms":{}}. New reference. */
json_t *proj_auth_factor_to_json(const proj_auth_factor *f);
/* The row's details in ZITADEL's ObjectDetails shape (as in replies):
 * {"sequence":"4","creationDate":"…","changeDate":"…","resourceOwner":"…"}.
 * New reference. */
json_t *proj_auth_factor_details_json(const proj_auth_factor *f);

#endif
