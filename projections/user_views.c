/*
 * projections/user_views.c - the user read model's reducer and its JSON
 * (user_views.h).
 *
 * The fields follow the user's events as the write side folds them
 * (domain/user.c): the phone is the current number, unverified after a
 * change until its own phone.verified event; an unlock or a reactivation
 * makes the user active again.
 */
#include "projections/user_views.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounded copy that zero-fills, so equal rows are equal byte for byte. */
static void copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, size - n);
}

bool proj_user_view_touches(dom_evt_type t)
{
    switch (t) {
    case DOM_EVT_HUMAN_ADDED:
    case DOM_EVT_REMOVED:
        return true;
    default:
        return proj_user_view_needs_row(t);
    }
}

bool proj_user_view_needs_row(dom_evt_type t)
{
    switch (t) {
    case DOM_EVT_PHONE_CHANGED:
    case DOM_EVT_PHONE_VERIFIED:
    case DOM_EVT_PHONE_REMOVED:
    case DOM_EVT_LOCKED:
    case DOM_EVT_UNLOCKED:
    case DOM_EVT_DEACTIVATED:
    case DOM_EVT_REACTIVATED:
        return true;
    default:
        return false;
    }
}

bool proj_user_view_apply(proj_user_view *v, bool *exists, const dom_evt *evt)
{
    if (evt->type == DOM_EVT_HUMAN_ADDED) {
        memset(v, 0, sizeof *v);
        copy(v->instance_id, sizeof v->instance_id, evt->instance_id);
        copy(v->user_id, sizeof v->user_id, evt->aggregate_id);
        copy(v->resource_owner, sizeof v->resource_owner, evt->resource_owner);
        copy(v->state, sizeof v->state, PROJ_UV_STATE_ACTIVE);
        v->human = evt->human;
        v->human.is_phone_verified = false; /* its own event follows if it is */
        v->created_at_us = evt->created_at_us;
        v->sequence = evt->sequence;
        v->changed_at_us = evt->created_at_us;
        *exists = true;
        return true;
    }
    if (evt->type == DOM_EVT_REMOVED) {
        /* Whatever *exists says: a batch whose first view event of the user
         * is the removal does not load the stored row (the removal needs
         * none), so the row may be there unseen. Deleting a missing row
         * costs nothing; keeping a removed user's row would keep its
         * personal data (docs/pii.md). */
        *exists = false;
        return true;
    }
    if (!*exists || !proj_user_view_needs_row(evt->type))
        return false;
    dom_import *h = &v->human;
    switch (evt->type) {
    case DOM_EVT_PHONE_CHANGED:
        copy(h->phone, sizeof h->phone, evt->phone);
        h->is_phone_verified = false;
        break;
    case DOM_EVT_PHONE_VERIFIED:
        h->is_phone_verified = true;
        break;
    case DOM_EVT_PHONE_REMOVED:
        memset(h->phone, 0, sizeof h->phone);
        h->is_phone_verified = false;
        break;
    case DOM_EVT_LOCKED:
        copy(v->state, sizeof v->state, PROJ_UV_STATE_LOCKED);
        break;
    case DOM_EVT_DEACTIVATED:
        copy(v->state, sizeof v->state, PROJ_UV_STATE_INACTIVE);
        break;
    default: /* unlocked, reactivated */
        copy(v->state, sizeof v->state, PROJ_UV_STATE_ACTIVE);
        break;
    }
    v->sequence = evt->sequence;
    v->changed_at_us = evt->created_at_us;
    return true;
}

static json_t *object(void)
{
    json_t *j = json_object();
    if (!j)
        abort();
    return j;
}

/* protojson leaves out empty strings and false. Values come from decoded
 * events or the database's text columns: valid UTF-8; a string that is
 * not is left out rather than failing the whole answer. */
static void set_str(json_t *o, const char *key, const char *v)
{
    if (v[0] != '\0')
        json_object_set_new(o, key, json_string(v));
}

static void set_true(json_t *o, const char *key, bool v)
{
    if (v)
        json_object_set_new(o, key, json_true());
}

json_t *proj_user_view_details_json(const proj_user_view *v)
{
    char seq[24], created[40], changed[40];
    snprintf(seq, sizeof seq, "%" PRId64, v->sequence);
    dom_time_format(v->created_at_us, created, sizeof created);
    dom_time_format(v->changed_at_us, changed, sizeof changed);
    json_t *j = object();
    set_str(j, "sequence", seq);
    set_str(j, "creationDate", created);
    set_str(j, "changeDate", changed);
    set_str(j, "resourceOwner", v->resource_owner);
    return j;
}

json_t *proj_user_view_phone_json(const proj_user_view *v)
{
    json_t *j = object();
    set_str(j, "phone", v->human.phone);
    set_true(j, "isPhoneVerified", v->human.is_phone_verified);
    return j;
}

json_t *proj_user_view_to_json(const proj_user_view *v)
{
    const dom_import *h = &v->human;
    json_t *profile = object(), *email = object(), *human = object(), *user = object();
    set_str(profile, "firstName", h->first_name);
    set_str(profile, "lastName", h->last_name);
    set_str(profile, "nickName", h->nick_name);
    set_str(profile, "displayName", h->display_name);
    set_str(profile, "preferredLanguage", h->preferred_language);
    /* GENDER_UNSPECIFIED is the enum's zero value: left out like the rest. */
    if (strcmp(h->gender, "GENDER_UNSPECIFIED") != 0)
        set_str(profile, "gender", h->gender);
    set_str(email, "email", h->email);
    set_true(email, "isEmailVerified", h->is_email_verified);
    json_object_set_new(human, "profile", profile);
    json_object_set_new(human, "email", email);
    json_object_set_new(human, "phone", proj_user_view_phone_json(v));

    set_str(user, "id", v->user_id);
    json_object_set_new(user, "details", proj_user_view_details_json(v));
    set_str(user, "state", v->state);
    set_str(user, "userName", h->user_name);
    if (h->user_name[0] != '\0') {
        json_t *names = json_array();
        if (!names)
            abort();
        json_array_append_new(names, json_string(h->user_name));
        json_object_set_new(user, "loginNames", names);
        set_str(user, "preferredLoginName", h->user_name);
    }
    json_object_set_new(user, "human", human);
    return user;
}
