/*
 * tests/unit/test_projections.c - the auth-factor reducer and the batch
 * fold (projections/auth_factors.c), without servers.
 *
 * Data-driven: each case is a user's event history (type names as on the
 * wire, ZITADEL's mfa names included) and the factor ListMyAuthFactors must
 * show after it. Every history is applied event by event, as one batch and
 * in batches of two, through the same in-memory stand-in for the SQL the
 * projector runs (delete the net's row first, then put it, keeping an
 * existing row's created_at): the result must not depend on how the
 * consumer cut its batches.
 *
 * The user read model (projections/user_views.c): a user's life, event by
 * event, with what GetMyUser must show after each step; the events that do
 * not touch the view leave it (and its details) alone; a partial change of
 * a row that does not exist changes nothing; the JSON is ZITADEL's shape
 * without unpopulated fields.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "projections/auth_factors.h"
#include "projections/sessions.h"
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

/* --- reduce: one event ------------------------------------------------------ */

typedef struct {
    const char *type;
    size_t n;         /* changes expected */
    proj_af_op op;    /* of the first */
} reduce_case;

static const reduce_case reduce_cases[] = {
    {"user.human.otp.sms.added", 1, PROJ_AF_PUT},
    {"user.human.mfa.otp.sms.added", 1, PROJ_AF_PUT},
    {"user.human.otp.sms.removed", 1, PROJ_AF_DELETE},
    {"user.human.mfa.otp.sms.removed", 1, PROJ_AF_DELETE},
    {"user.human.phone.removed", 1, PROJ_AF_DELETE},
    {"user.removed", 1, PROJ_AF_DELETE},
    {"user.human.added", 1, PROJ_AF_DELETE},
    {"user.human.phone.changed", 0, 0},
    {"user.human.phone.code.added", 0, 0},
    {"user.human.phone.verified", 0, 0},
    {"user.human.phone.verification.failed", 0, 0},
    {"user.locked", 0, 0},
    {"user.unlocked", 0, 0},
    {"user.deactivated", 0, 0},
    {"user.reactivated", 0, 0},
};

Test(projections, reduce_table)
{
    for (size_t i = 0; i < sizeof reduce_cases / sizeof reduce_cases[0]; i++) {
        const reduce_case *c = &reduce_cases[i];
        dom_evt e = ev(c->type, 7);
        proj_af_change out[PROJ_AF_MAX_CHANGES];
        size_t n = proj_auth_factors_reduce(&e, out);
        cr_expect_eq(n, c->n, "%s: %zu changes, expected %zu", c->type, n, c->n);
        if (n == 0 || c->n == 0)
            continue;
        cr_expect_eq(out[0].op, c->op, "%s: op", c->type);
        cr_expect_str_eq(out[0].row.instance_id, "inst-1", "%s", c->type);
        cr_expect_str_eq(out[0].row.user_id, "u1", "%s", c->type);
        cr_expect_eq(out[0].row.type, PROJ_AF_OTP_SMS, "%s", c->type);
        cr_expect_eq(out[0].row.sequence, 7, "%s", c->type);
    }
}

Test(projections, added_row_carries_the_event_details)
{
    dom_evt e = ev("user.human.otp.sms.added", 3);
    proj_af_change out[PROJ_AF_MAX_CHANGES];
    cr_assert_eq(proj_auth_factors_reduce(&e, out), 1);
    const proj_auth_factor *f = &out[0].row;
    cr_assert_eq(f->state, PROJ_AF_STATE_READY);
    cr_assert_eq(f->created_at_us, e.created_at_us);
    cr_assert_eq(f->changed_at_us, e.created_at_us);
    cr_assert_str_eq(f->resource_owner, "org-1");

    json_t *j = proj_auth_factor_to_json(f);
    char *s = json_dumps(j, JSON_COMPACT);
    cr_assert_str_eq(s, "{\"state\":\"AUTH_FACTOR_STATE_READY\",\"otpSms\":{}}");
    free(s);
    json_decref(j);
    j = proj_auth_factor_details_json(f);
    s = json_dumps(j, JSON_COMPACT);
    cr_assert_str_eq(s, "{\"sequence\":\"3\",\"creationDate\":\"2024-03-27T10:05:51.581000Z\","
                        "\"changeDate\":\"2024-03-27T10:05:51.581000Z\",\"resourceOwner\":\"org-1\"}");
    free(s);
    json_decref(j);
}

Test(projections, names_round_trip)
{
    cr_assert_str_eq(proj_af_type_name(PROJ_AF_OTP_SMS), "otpSms");
    cr_assert_eq(proj_af_type_parse("otpSms"), PROJ_AF_OTP_SMS);
    cr_assert_eq(proj_af_type_parse("u2f"), -1);
    cr_assert_str_eq(proj_af_state_name(PROJ_AF_STATE_READY), "AUTH_FACTOR_STATE_READY");
    cr_assert_eq(proj_af_state_parse("AUTH_FACTOR_STATE_NOT_READY"), PROJ_AF_STATE_NOT_READY);
    cr_assert_eq(proj_af_state_parse("READY"), -1);
    cr_assert_str_eq(proj_af_state_name((proj_af_state)0), "");
    cr_assert_str_eq(proj_af_type_name(PROJ_AF__TYPES), "");
}

/* --- histories: what the read model shows after a user's events ------------- */

/* The in-memory stand-in for factord.auth_factors (one user, one type). */
typedef struct {
    bool present;
    proj_auth_factor row;
} table;

static void apply_nets(table *t, const proj_af_net *nets, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (nets[i].del)
            t->present = false;
        if (nets[i].put) {
            int64_t created = t->present ? t->row.created_at_us : nets[i].row.created_at_us;
            t->row = nets[i].row;
            t->row.created_at_us = created; /* ON CONFLICT keeps created_at */
            t->present = true;
        }
    }
}

/* Apply events[0..n) in batches of `batch` through reduce + fold. */
static table run(const dom_evt *events, size_t n, size_t batch)
{
    table t = {0};
    proj_af_change changes[64];
    proj_af_net nets[64];
    for (size_t start = 0; start < n; start += batch) {
        size_t nc = 0;
        for (size_t i = start; i < n && i < start + batch; i++)
            nc += proj_auth_factors_reduce(&events[i], &changes[nc]);
        size_t nn = proj_af_fold(changes, nc, nets);
        cr_assert_leq(nn, nc);
        apply_nets(&t, nets, nn);
    }
    return t;
}

typedef struct {
    const char *name;
    const char *events[12]; /* types, sequences 1, 2, 3 ... */
    bool listed;            /* the factor is there at the end */
    int64_t created_seq;    /* ... added by this event */
    int64_t changed_seq;    /* ... last changed by this one */
} history;

static const history histories[] = {
    {"import with verified phone, add",
     {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added"}, true, 3, 3},
    {"add, remove", {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added",
                     "user.human.otp.sms.removed"}, false, 0, 0},
    {"RemoveMyPhone: phone.removed then otp.sms.removed",
     {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added", "user.human.phone.removed",
      "user.human.otp.sms.removed"}, false, 0, 0},
    {"ZITADEL log: phone removal alone removes the factor",
     {"user.human.added", "user.human.phone.changed", "user.human.phone.verified",
      "user.human.mfa.otp.sms.added", "user.human.phone.removed"}, false, 0, 0},
    {"ZITADEL names", {"user.human.added", "user.human.phone.verified", "user.human.mfa.otp.sms.added"}, true, 3,
     3},
    {"ZITADEL names, removed", {"user.human.added", "user.human.phone.verified", "user.human.mfa.otp.sms.added",
                                "user.human.mfa.otp.sms.removed"}, false, 0, 0},
    {"user removed", {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added", "user.removed"},
     false, 0, 0},
    {"re-added after removal is a new factor",
     {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added", "user.human.otp.sms.removed",
      "user.human.otp.sms.added"}, true, 5, 5},
    {"lock and unlock keep the factor",
     {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added", "user.locked", "user.unlocked",
      "user.deactivated", "user.reactivated"}, true, 3, 3},
    {"phone change keeps the factor (the write side refuses new adds until verified)",
     {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added", "user.human.phone.changed",
      "user.human.phone.code.added", "user.human.phone.verification.failed"}, true, 3, 3},
    {"added twice (an imported log) keeps the first creation date",
     {"user.human.added", "user.human.phone.verified", "user.human.mfa.otp.sms.added",
      "user.human.mfa.otp.sms.added"}, true, 3, 4},
    {"a new life of the user id starts without factors",
     {"user.human.added", "user.human.phone.verified", "user.human.otp.sms.added", "user.removed",
      "user.human.added"}, false, 0, 0},
    {"no phone: nothing", {"user.human.added", "user.locked"}, false, 0, 0},
};

Test(projections, histories_in_any_batching)
{
    for (size_t h = 0; h < sizeof histories / sizeof histories[0]; h++) {
        const history *c = &histories[h];
        dom_evt events[12];
        size_t n = 0;
        while (n < 12 && c->events[n]) {
            events[n] = ev(c->events[n], (int64_t)n + 1);
            n++;
        }
        size_t batchings[] = {1, 2, 3, n};
        for (size_t b = 0; b < sizeof batchings / sizeof batchings[0]; b++) {
            table t = run(events, n, batchings[b]);
            cr_expect_eq(t.present, c->listed, "%s (batches of %zu): listed", c->name, batchings[b]);
            if (!t.present || !c->listed)
                continue;
            cr_expect_eq(t.row.state, PROJ_AF_STATE_READY, "%s", c->name);
            cr_expect_eq(t.row.sequence, c->changed_seq, "%s (batches of %zu): sequence", c->name, batchings[b]);
            cr_expect_eq(t.row.created_at_us, T0 + c->created_seq * 1000000, "%s (batches of %zu): created",
                         c->name, batchings[b]);
            cr_expect_eq(t.row.changed_at_us, T0 + c->changed_seq * 1000000, "%s (batches of %zu): changed",
                         c->name, batchings[b]);
        }
    }
}

/* --- fold: several users in one batch -------------------------------------- */

Test(projections, fold_keeps_users_apart)
{
    /* u1: add; u2: add, remove; u3: remove, add (grouped by user, in order). */
    dom_evt e[5] = {ev("user.human.otp.sms.added", 3), ev("user.human.otp.sms.added", 3),
                    ev("user.human.otp.sms.removed", 4), ev("user.human.otp.sms.removed", 5),
                    ev("user.human.otp.sms.added", 6)};
    snprintf(e[1].aggregate_id, sizeof e[1].aggregate_id, "u2");
    snprintf(e[2].aggregate_id, sizeof e[2].aggregate_id, "u2");
    snprintf(e[3].aggregate_id, sizeof e[3].aggregate_id, "u3");
    snprintf(e[4].aggregate_id, sizeof e[4].aggregate_id, "u3");
    proj_af_change ch[5];
    size_t nc = 0;
    for (int i = 0; i < 5; i++)
        nc += proj_auth_factors_reduce(&e[i], &ch[nc]);
    proj_af_net nets[5];
    size_t nn = proj_af_fold(ch, nc, nets);
    cr_assert_eq(nn, 3);
    cr_assert_str_eq(nets[0].row.user_id, "u1");
    cr_assert(!nets[0].del && nets[0].put);
    cr_assert_str_eq(nets[1].row.user_id, "u2");
    cr_assert(nets[1].del && !nets[1].put);
    cr_assert_eq(nets[1].row.sequence, 4);
    cr_assert_str_eq(nets[2].row.user_id, "u3");
    cr_assert(nets[2].del && nets[2].put, "delete the old row, then write the new one");
    cr_assert_eq(nets[2].row.created_at_us, e[4].created_at_us);
}

Test(projections, same_user_id_in_two_instances_are_two_rows)
{
    dom_evt a = ev("user.human.otp.sms.added", 3), b = ev("user.human.otp.sms.removed", 4);
    snprintf(b.instance_id, sizeof b.instance_id, "inst-2");
    proj_af_change ch[2];
    size_t nc = proj_auth_factors_reduce(&a, ch);
    nc += proj_auth_factors_reduce(&b, &ch[nc]);
    proj_af_net nets[2];
    cr_assert_eq(proj_af_fold(ch, nc, nets), 2);
    cr_assert(!proj_af_same_key(&nets[0].row, &nets[1].row));
    cr_assert(nets[0].put && !nets[0].del);
    cr_assert(nets[1].del && !nets[1].put);
}

/* --- the user read model ------------------------------------------------------ */

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
} life_step;

static void run_life(const life_step *steps, size_t n)
{
    proj_user_view v;
    memset(&v, 0, sizeof v);
    bool exists = false;
    for (size_t i = 0; i < n; i++) {
        const life_step *s = &steps[i];
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
    const life_step life[] = {
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
        /* a removal always deletes: the projector may not have loaded the row */
        {"user.removed", NULL, true, false, NULL, NULL, false, 0},
        /* A new life of the id starts from the added event alone. */
        {NULL, NULL, true, true, ACTIVE, P1, false, 18},
    };
    /* The last step's created date is its own: check it apart. */
    run_life(life, sizeof life / sizeof life[0] - 1);
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
    /* A removal deletes even a row it was not shown: the projector loads no
     * row for a batch whose first view event of the user is the removal. */
    e = ev("user.removed", 6);
    cr_assert(proj_user_view_apply(&v, &exists, &e));
    cr_assert_not(exists);
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

/* --- sessions: the fold of the events that name a session ------------------- */

static dom_evt sev(const char *type, int64_t seq, const char *session, const char *hash)
{
    dom_evt e = ev(type, seq);
    snprintf(e.session_id, sizeof e.session_id, "%s", session);
    snprintf(e.token_hash, sizeof e.token_hash, "%s", hash);
    snprintf(e.creator, sizeof e.creator, "login-client");
    return e;
}

Test(sessions, fold_and_json)
{
    proj_session s;
    memset(&s, 0, sizeof s);
    snprintf(s.session_id, sizeof s.session_id, "s1");
    /* Before its opening, and other sessions' events, count for nothing. */
    dom_evt early = sev("user.human.otp.sms.check.succeeded", 1, "s1", "");
    proj_session_apply(&s, &early);
    cr_assert(!s.found);
    dom_evt evts[] = {
        sev("user.session.added", 2, "s1", "h1"),
        sev("user.human.otp.sms.code.added", 3, "s1", ""),
        sev("user.session.added", 4, "s2", "h9"),
        sev("user.human.otp.sms.check.succeeded", 5, "s2", ""),
        sev("user.session.token.set", 6, "s1", "h2"),
    };
    for (size_t i = 0; i < sizeof evts / sizeof evts[0]; i++)
        proj_session_apply(&s, &evts[i]);
    cr_assert(s.found);
    cr_assert_str_eq(s.user_id, "u1");
    cr_assert_str_eq(s.creator, "login-client");
    cr_assert_str_eq(s.token_hash, "h2");
    cr_assert_eq(s.sequence, 6);
    cr_assert_eq(s.created_at_us, T0 + 2000000);
    cr_assert_eq(s.otp_sms_checked_at_us, 0);

    json_t *j = proj_session_to_json(&s, "alice");
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(text, "{\"changeDate\":\"2024-03-27T10:05:54.581000Z\","
                           "\"creationDate\":\"2024-03-27T10:05:50.581000Z\",\"factors\":{\"user\":"
                           "{\"id\":\"u1\",\"loginName\":\"alice\",\"organizationId\":\"org-1\","
                           "\"verifiedAt\":\"2024-03-27T10:05:50.581000Z\"}},\"id\":\"s1\",\"sequence\":\"6\"}");
    free(text);
    json_decref(j);

    /* The successful check of this session; another user's event with the
     * same id, and a replayed older event, change nothing. */
    dom_evt ok = sev("user.human.otp.sms.check.succeeded", 7, "s1", "");
    proj_session_apply(&s, &ok);
    dom_evt other = sev("user.session.token.set", 8, "s1", "hx");
    snprintf(other.aggregate_id, sizeof other.aggregate_id, "u2");
    proj_session_apply(&s, &other);
    proj_session_apply(&s, &evts[4]);
    cr_assert_eq(s.otp_sms_checked_at_us, T0 + 7000000);
    cr_assert_str_eq(s.token_hash, "h2");
    cr_assert_eq(s.sequence, 7);
    j = proj_session_to_json(&s, "");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(json_object_get(j, "factors"), "otpSms"), "verifiedAt")),
                     "2024-03-27T10:05:55.581000Z");
    cr_assert_null(json_object_get(json_object_get(json_object_get(j, "factors"), "user"), "loginName"));
    json_decref(j);
}
