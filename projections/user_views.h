/*
 * projections/user_views.h - the user read model: the user as ZITADEL's
 * GetMyUser and GetMyPhone show it (user name, profile, e-mail, the current
 * phone and whether it is verified, the state), one row per user in
 * factord.user_views.
 *
 * Pure: proj_user_view_apply folds one event into a row. The projector
 * (infra/components/projector.c) loads the stored rows of the users whose
 * batch needs them (proj_user_view_needs_row), folds the batch's events
 * into them and writes each changed row whole, in its batch transaction.
 * No I/O, no clock: the dates are the events' own.
 *
 * Row life: user.human.added writes a fresh row (a new life of the id
 * keeps nothing of an earlier one); the phone events and the state events
 * (locked, unlocked, deactivated, reactivated) change it; user.removed
 * deletes it. Only these events touch the row, and each of them sets its
 * details (sequence, change date) to its own: the row's sequence is that
 * of the last event that changed what GetMyUser shows. The OTP-SMS and
 * code events change nothing here (ListMyAuthFactors shows the factor).
 *
 * Ownership: every struct is plain and caller-owned.
 *
 * Layer: projections; pure: includes only the domain (docs/architecture.md,
 * "Layers").
 */
#ifndef FACTORD_PROJECTIONS_USER_VIEWS_H
#define FACTORD_PROJECTIONS_USER_VIEWS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "domain/event.h"

/* ZITADEL's user states (zitadel.user.v1.UserState), the stored values. */
#define PROJ_UV_STATE_ACTIVE "USER_STATE_ACTIVE"
#define PROJ_UV_STATE_INACTIVE "USER_STATE_INACTIVE"
#define PROJ_UV_STATE_LOCKED "USER_STATE_LOCKED"

/* One row of factord.user_views. The human's phone is the current number
 * (verified or not), as GetMyPhone shows it. */
typedef struct {
    char instance_id[DOM_ID_MAX];
    char user_id[DOM_ID_MAX];
    char resource_owner[DOM_ID_MAX];
    char state[24];          /* PROJ_UV_STATE_* */
    dom_import human;        /* user name, profile, e-mail, phone */
    int64_t sequence;        /* of the last event that changed the row */
    int64_t created_at_us;   /* when the user was added */
    int64_t changed_at_us;   /* when the row last changed */
} proj_user_view;

/* Whether evt changes the row at all. */
bool proj_user_view_touches(dom_evt_type t);

/* Whether folding evt needs the stored row: true for the events that
 * change part of a row (phone, state); false for those that replace or
 * delete it whole (user.human.added, user.removed) and those that do not
 * touch it. A batch needs a user's stored row when the first of its
 * events that touches the row needs it. */
bool proj_user_view_needs_row(dom_evt_type t);

/* Fold evt into *v; *exists says whether the user has a row, before and
 * after. An event that changes part of a row that does not exist changes
 * nothing (a user the model never saw added). Returns whether the row
 * changed (and must be written, or deleted when *exists is false); a
 * removal always returns true (delete), since the caller may not have
 * loaded the row it removes. */
bool proj_user_view_apply(proj_user_view *v, bool *exists, const dom_evt *evt);

/* The row as ZITADEL's user JSON (zitadel.user.v1.User, protojson without
 * unpopulated fields): {"id","details","state","userName","loginNames",
 * "preferredLoginName","human":{"profile","email","phone"}}. factord has no
 * organisation domains, so the login name is the user name. New reference. */
json_t *proj_user_view_to_json(const proj_user_view *v);
/* ZITADEL's Phone message: {"phone":"+41…","isPhoneVerified":true}, {}
 * without a phone. New reference. */
json_t *proj_user_view_phone_json(const proj_user_view *v);
/* The row's ObjectDetails: {"sequence","creationDate","changeDate",
 * "resourceOwner"}. New reference. */
json_t *proj_user_view_details_json(const proj_user_view *v);

#endif
