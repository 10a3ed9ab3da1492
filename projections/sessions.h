/*
 * projections/sessions.h - a session as ZITADEL's session service shows it
 * (GetSession), folded from the events that name it.
 *
 * A session lives on its user (docs/contracts.md, "Sessions"): it is the
 * user.session.added event that opens it and every later event of the same
 * user that carries its id in the payload (user.session.token.set, the
 * user.human.otp.sms.code.added of a challenge, the
 * user.human.otp.sms.check.succeeded of a check). The gateway reads those
 * events by the session id (migration 0015's index) and folds them here,
 * in sequence order; nothing else is stored, so there is no read model to
 * keep or rebuild, and the session is always as fresh as the log.
 *
 * Pure: no I/O, no clock; the dates are the events' own. Ownership: every
 * struct is plain and caller-owned; JSON results are new references.
 *
 * Layer: projections; pure: includes only the domain (docs/architecture.md,
 * "Layers").
 */
#ifndef FACTORD_PROJECTIONS_SESSIONS_H
#define FACTORD_PROJECTIONS_SESSIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "domain/event.h"

typedef struct {
    char session_id[DOM_ID_MAX];       /* set by the caller before folding */
    bool found;                        /* its user.session.added was folded */
    char instance_id[DOM_ID_MAX];
    char user_id[DOM_ID_MAX];          /* the session's user (its aggregate) */
    char resource_owner[DOM_ID_MAX];   /* the user's organisation */
    char creator[DOM_ID_MAX];          /* who created it (the caller's sub) */
    char token_hash[DOM_TOKEN_HASH_LEN + 1]; /* the current token's hash */
    int64_t created_at_us;             /* = the user check's time */
    int64_t changed_at_us;
    int64_t sequence;                  /* of the last event that named it */
    int64_t otp_sms_checked_at_us;     /* 0 = no successful OTP-SMS check */
} proj_session;

/* Fold one event into s: events of other sessions, of another user than
 * the one that opened it, and anything before its opening are ignored. */
void proj_session_apply(proj_session *s, const dom_evt *evt);

/* GetSessionResponse's session ({"id","creationDate","changeDate",
 * "sequence","factors":{"user":{…},"otpSms":{"verifiedAt"}}}); login_name
 * may be "" (left out). s must be found. */
json_t *proj_session_to_json(const proj_session *s, const char *login_name);

#endif
