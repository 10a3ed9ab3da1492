/*
 * tests/unit/test_user_views.c - the user read model's reducer and JSON
 * (projections/user_views.c), without servers.
 *
 * A user's life, event by event, with what GetMyUser must show after each
 * step; the events that do not touch the view leave it (and its details)
 * alone; a partial change of a row that does not exist changes nothing;
 * and the JSON is ZITADEL's shape without unpopulated fields.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "projections/user_views.h"

#define T0 INT64_C(1711533948581000) /* 2024-03-27T10:05:48.581Z */

static dom_evt ev(const char *type, int64_t seq)
{
    dom_evt e;
    memset(&e, 0, sizeof e);
    e.type = dom_evt_type_parse(type);
    cr_assert_neq(e.type, DOM_EVT_UNKNOWN, "unknown event type %s in a test case", type);
    snprintf(e.instance_id, sizeof e.instance_id, "inst-1");
    snprintf(e.aggregate_id, sizeof e.aggregate_id, "u1");
    snprintf(e.resource_owner, sizeof e.resource_owner, "org-1");
    e.sequence = seq;
    e.created_at_us = T0 + seq * 1000000;
    return e;
}

static dom_evt added(int64_t seq, const char *phone)
{
    dom_evt e = ev("user.human.added", seq);
    snprintf(e.human.user_name, sizeof e.human.user_name, "ada");
    snprintf(e.human.first_name, sizeof e.human.first_name, "Ada");
    snprintf(e.human.last_name, sizeof e.human.last_name, "Lovelace");
    snprintf(e.human.gender, sizeof e.human.gender, "GENDER_FEMALE");
    snprintf(e.human.email, sizeof e.human.email, "ada@example.com");
    e.human.is_email_verified = true;
    snprintf(e.human.phone, sizeof e.human.phone, "%s", phone);
    e.human.is_phone_verified = true; /* never taken from the added event */
    return e;
}

typedef struct {
    const char *type;   /* NULL: user.human.added with +41791234567 */
    const char *phone;  /* for user.human.phone.changed */
    bool changes;       /* apply says the row changed */
    bool exists;        /* after */
    const char *state, *shown_phone;
    bool verified;
    int64_t sequence;   /* the row's details after */
} step;

static void run(const step *steps, size_t n)
{
    proj_user_view v;
    memset(&v, 0, sizeof v);
    bool exists = false;
    for (size_t i = 0; i < n; i++) {
        const step *s = &steps[i];
        int64_t seq = (int64_t)i + 1;
        dom_evt e = s->type ? ev(s->type, seq) : added(seq, "+41791234567");
        if (s->phone)
            snprintf(e.phone, sizeof e.phone, "%s", s->phone);
        const char *what = s->type ? s->type : "user.human.added";
        cr_assert_eq(proj_user_view_apply(&v, &exists, &e), s->changes, "step %zu (%s): changed", i, what);
        cr_assert_eq(exists, s->exists, "step %zu (%s): exists", i, what);
        if (!exists)
            continue;
        cr_assert_str_eq(v.state, s->state, "step %zu (%s)", i, what);
        cr_assert_str_eq(v.human.phone, s->shown_phone, "step %zu (%s)", i, what);
        cr_assert_eq(v.human.is_phone_verified, s->verified, "step %zu (%s)", i, what);
        cr_assert_eq(v.sequence, s->sequence, "step %zu (%s)", i, what);
        cr_assert_eq(v.changed_at_us, T0 + s->sequence * 1000000, "step %zu (%s)", i, what);
        cr_assert_eq(v.created_at_us, T0 + 1000000, "step %zu (%s): added at 1", i, what);
        cr_assert_str_eq(v.human.user_name, "ada", "step %zu", i);
    }
}

#define ACTIVE PROJ_UV_STATE_ACTIVE
#define P1 "+41791234567"
#define P2 "+41797654321"

Test(user_views, a_users_life)
{
    const step life[] = {
        {NULL, NULL, true, true, ACTIVE, P1, false, 1},
        {"user.human.phone.verified", NULL, true, true, ACTIVE, P1, true, 2},
        {"user.human.otp.sms.added", NULL, false, true, ACTIVE, P1, true, 2},
        {"user.human.phone.changed", P2, true, true, ACTIVE, P2, false, 4},
        {"user.human.phone.code.added", NULL, false, true, ACTIVE, P2, false, 4},
        {"user.human.phone.verification.failed", NULL, false, true, ACTIVE, P2, false, 4},
        {"user.human.phone.verified", NULL, true, true, ACTIVE, P2, true, 7},
        {"user.locked", NULL, true, true, PROJ_UV_STATE_LOCKED, P2, true, 8},
        {"user.unlocked", NULL, true, true, ACTIVE, P2, true, 9},
        {"user.deactivated", NULL, true, true, PROJ_UV_STATE_INACTIVE, P2, true, 10},
        {"user.reactivated", NULL, true, true, ACTIVE, P2, true, 11},
        {"user.human.otp.sms.code.added", NULL, false, true, ACTIVE, P2, true, 11},
        {"user.human.otp.sms.check.failed", NULL, false, true, ACTIVE, P2, true, 11},
        {"user.human.phone.removed", NULL, true, true, ACTIVE, "", false, 14},
        {"user.removed", NULL, true, false, NULL, NULL, false, 0},
        {"user.human.phone.changed", P1, false, false, NULL, NULL, false, 0},
        {"user.removed", NULL, false, false, NULL, NULL, false, 0},
        /* A new life of the id starts from the added event alone. */
        {NULL, NULL, true, true, ACTIVE, P1, false, 18},
    };
    /* The last step's created date is its own: check it apart. */
    run(life, sizeof life / sizeof life[0] - 1);
    proj_user_view v;
    bool exists = false;
    dom_evt e = added(18, P1);
    cr_assert(proj_user_view_apply(&v, &exists, &e));
    cr_assert(exists);
    cr_assert_eq(v.created_at_us, e.created_at_us);
    cr_assert_eq(v.sequence, 18);
}

Test(user_views, only_partial_changes_need_the_stored_row)
{
    /* The phone and state events change part of a row; the addition and
     * the removal replace it whole; nothing else touches it. */
    const dom_evt_type partial[] = {DOM_EVT_PHONE_CHANGED, DOM_EVT_PHONE_VERIFIED, DOM_EVT_PHONE_REMOVED,
                                    DOM_EVT_LOCKED,        DOM_EVT_UNLOCKED,       DOM_EVT_DEACTIVATED,
                                    DOM_EVT_REACTIVATED};
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        dom_evt_type type = (dom_evt_type)t;
        bool is_partial = false;
        for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++)
            is_partial |= partial[i] == type;
        bool whole = type == DOM_EVT_HUMAN_ADDED || type == DOM_EVT_REMOVED;
        cr_expect_eq(proj_user_view_needs_row(type), is_partial, "%s", dom_evt_type_name(type));
        cr_expect_eq(proj_user_view_touches(type), is_partial || whole, "%s", dom_evt_type_name(type));
    }
    /* A partial change of a user the view never saw changes nothing. */
    proj_user_view v;
    memset(&v, 0, sizeof v);
    bool exists = false;
    dom_evt e = ev("user.locked", 5);
    cr_assert_not(proj_user_view_apply(&v, &exists, &e));
    cr_assert_not(exists);
    cr_assert_str_eq(v.state, "");
}

Test(user_views, zitadels_json_without_unpopulated_fields)
{
    proj_user_view v;
    bool exists = false;
    dom_evt e = added(1, P1);
    cr_assert(proj_user_view_apply(&v, &exists, &e));
    e = ev("user.human.phone.verified", 2);
    cr_assert(proj_user_view_apply(&v, &exists, &e));

    json_t *j = proj_user_view_to_json(&v);
    char *s = json_dumps(j, JSON_COMPACT);
    cr_assert_str_eq(s, "{\"id\":\"u1\",\"details\":{\"sequence\":\"2\",\"creationDate\":\"2024-03-27T10:05:49.581000Z\","
                        "\"changeDate\":\"2024-03-27T10:05:50.581000Z\",\"resourceOwner\":\"org-1\"},"
                        "\"state\":\"USER_STATE_ACTIVE\",\"userName\":\"ada\",\"loginNames\":[\"ada\"],"
                        "\"preferredLoginName\":\"ada\",\"human\":{\"profile\":{\"firstName\":\"Ada\","
                        "\"lastName\":\"Lovelace\",\"gender\":\"GENDER_FEMALE\"},\"email\":{\"email\":"
                        "\"ada@example.com\",\"isEmailVerified\":true},\"phone\":{\"phone\":\"+41791234567\","
                        "\"isPhoneVerified\":true}}}");
    free(s);
    json_decref(j);

    /* No phone, unverified e-mail, unspecified gender: left out. */
    e = ev("user.human.phone.removed", 3);
    cr_assert(proj_user_view_apply(&v, &exists, &e));
    v.human.is_email_verified = false;
    snprintf(v.human.gender, sizeof v.human.gender, "GENDER_UNSPECIFIED");
    j = proj_user_view_phone_json(&v);
    s = json_dumps(j, JSON_COMPACT);
    cr_assert_str_eq(s, "{}");
    free(s);
    json_decref(j);
    j = proj_user_view_to_json(&v);
    json_t *human = json_object_get(j, "human");
    cr_assert_eq(json_object_size(json_object_get(human, "phone")), 0);
    cr_assert_null(json_object_get(json_object_get(human, "profile"), "gender"));
    cr_assert_null(json_object_get(json_object_get(human, "email"), "isEmailVerified"));
    json_decref(j);
}
