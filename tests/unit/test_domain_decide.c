/*
 * tests/unit/test_domain_decide.c - the decision tables and the aggregate.
 *
 * Two halves. The data-driven half runs tests/data/decide/<Command>.json:
 * every row of every command's table (docs/errors.md), in order, with
 * states that break several rows at once so that the first row must win,
 * and the accepted paths with their exact events. The hand-written half
 * follows whole stories through decide + apply (the phone-change rule, a
 * failed verification that still writes its event, RemoveMyPhone taking
 * the factor with it), checks the reply bodies byte for byte against
 * tests/data/replies, and rebuilds a user from its log.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "domain/event.h"
#include "domain/user.h"

#define DATA FACTORD_TEST_DATA

/* --- helpers ------------------------------------------------------------- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static int64_t parse_time(const char *s)
{
    int64_t us = 0;
    cr_assert_eq(dom_time_parse(s, &us), ES_OK, "bad time in test data: %s", s);
    return us;
}

static void set_str(char *dst, size_t size, const json_t *v)
{
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    cr_assert_lt(strlen(s), size);
    strcpy(dst, s);
}
#define SET_STR(dst, v) set_str((dst), sizeof(dst), (v))

/* Overwrite the fields of st that j names. */
static void state_from_json(dom_user *st, const json_t *j)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        if (!strcmp(key, "instanceId")) SET_STR(st->instance_id, v);
        else if (!strcmp(key, "userId")) SET_STR(st->user_id, v);
        else if (!strcmp(key, "resourceOwner")) SET_STR(st->resource_owner, v);
        else if (!strcmp(key, "userName")) SET_STR(st->user_name, v);
        else if (!strcmp(key, "status")) st->status = dom_user_status_parse(json_string_value(v));
        else if (!strcmp(key, "sequence")) st->sequence = json_integer_value(v);
        else if (!strcmp(key, "phone")) SET_STR(st->phone, v);
        else if (!strcmp(key, "phoneVerified")) st->phone_verified = json_is_true(v);
        else if (!strcmp(key, "verifiedPhone")) SET_STR(st->verified_phone, v);
        else if (!strcmp(key, "otpSms")) st->otp_sms = json_is_true(v);
        else if (!strcmp(key, "codeEnc")) SET_STR(st->code_enc, v);
        else if (!strcmp(key, "codeExpiresAt"))
            st->code_expires_at_us = json_is_string(v) ? parse_time(json_string_value(v)) : 0;
        else if (!strcmp(key, "otpCodeEnc")) SET_STR(st->otp_code_enc, v);
        else if (!strcmp(key, "otpCodeExpiresAt"))
            st->otp_code_expires_at_us = json_is_string(v) ? parse_time(json_string_value(v)) : 0;
        else if (!strcmp(key, "otpFailed")) st->otp_failed = (int32_t)json_integer_value(v);
        else if (!strcmp(key, "otpCodeSession")) SET_STR(st->otp_code_session, v);
        else cr_assert_fail("unknown state field %s in test data", key);
    }
}

/* Check the fields of st that j names. */
static int state_check(const dom_user *st, const json_t *j, const char *where)
{
    const char *key;
    json_t *v;
    int bad = 0;
#define CHECK_STR(field)                                                                       \
    do {                                                                                       \
        if (strcmp(st->field, json_string_value(v)) != 0) {                                    \
            cr_log_error("%s: after.%s = \"%s\", want \"%s\"", where, key, st->field,          \
                         json_string_value(v));                                                \
            bad++;                                                                             \
        }                                                                                      \
    } while (0)
#define CHECK_INT(expr, want)                                                                  \
    do {                                                                                       \
        if ((int64_t)(expr) != (int64_t)(want)) {                                              \
            cr_log_error("%s: after.%s = %" PRId64 ", want %" PRId64, where, key,              \
                         (int64_t)(expr), (int64_t)(want));                                    \
            bad++;                                                                             \
        }                                                                                      \
    } while (0)
    json_object_foreach((json_t *)j, key, v) {
        if (!strcmp(key, "instanceId")) CHECK_STR(instance_id);
        else if (!strcmp(key, "userId")) CHECK_STR(user_id);
        else if (!strcmp(key, "resourceOwner")) CHECK_STR(resource_owner);
        else if (!strcmp(key, "userName")) CHECK_STR(user_name);
        else if (!strcmp(key, "phone")) CHECK_STR(phone);
        else if (!strcmp(key, "verifiedPhone")) CHECK_STR(verified_phone);
        else if (!strcmp(key, "codeEnc")) CHECK_STR(code_enc);
        else if (!strcmp(key, "status"))
            CHECK_INT(st->status, dom_user_status_parse(json_string_value(v)));
        else if (!strcmp(key, "sequence")) CHECK_INT(st->sequence, json_integer_value(v));
        else if (!strcmp(key, "phoneVerified")) CHECK_INT(st->phone_verified, json_is_true(v));
        else if (!strcmp(key, "otpSms")) CHECK_INT(st->otp_sms, json_is_true(v));
        else if (!strcmp(key, "codeExpiresAt"))
            CHECK_INT(st->code_expires_at_us, parse_time(json_string_value(v)));
        else if (!strcmp(key, "otpCodeEnc")) CHECK_STR(otp_code_enc);
        else if (!strcmp(key, "otpCodeExpiresAt"))
            CHECK_INT(st->otp_code_expires_at_us,
                      json_is_string(v) ? parse_time(json_string_value(v)) : 0);
        else if (!strcmp(key, "otpFailed")) CHECK_INT(st->otp_failed, json_integer_value(v));
        else if (!strcmp(key, "otpCodeSession")) CHECK_STR(otp_code_session);
        else cr_assert_fail("unknown after field %s in test data", key);
    }
#undef CHECK_STR
#undef CHECK_INT
    return bad;
}

/* ctx strings point into j, which outlives the decision. */
static void ctx_from_json(dom_ctx *ctx, const json_t *j)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        if (!strcmp(key, "now")) ctx->now_us = parse_time(json_string_value(v));
        else if (!strcmp(key, "newCode")) ctx->new_code = json_string_value(v);
        else if (!strcmp(key, "newCodeEnc")) ctx->new_code_enc = json_string_value(v);
        else if (!strcmp(key, "codeTtlSeconds")) ctx->code_ttl_us = json_integer_value(v) * 1000000;
        else if (!strcmp(key, "storedCode")) ctx->stored_code = json_string_value(v); /* null -> NULL */
        else if (!strcmp(key, "userNameTaken")) ctx->user_name_taken = json_is_true(v);
        else if (!strcmp(key, "maxOtpAttempts")) ctx->max_otp_attempts = (int32_t)json_integer_value(v);
        else cr_assert_fail("unknown ctx field %s in test data", key);
    }
}

/* A copy of base with over's members replacing base's (shallow). */
static json_t *merged(const json_t *base, const json_t *over)
{
    json_t *m = json_deep_copy(base);
    if (over)
        cr_assert_eq(json_object_update(m, (json_t *)over), 0);
    return m;
}

static void decode_ok(const json_t *j, dom_cmd *cmd)
{
    char *text = json_dumps(j, JSON_COMPACT);
    es_error err = { 0 };
    es_result rc = dom_cmd_decode(text, strlen(text), cmd, &err);
    cr_assert_eq(rc, ES_OK, "test command does not decode: %s (%s)", err.text, text);
    free(text);
}

/* Event survives its JSON form unchanged (what the store and the topic do). */
static void check_evt_round_trip(const dom_evt *evt)
{
    json_t *j = dom_evt_to_json(evt);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    json_t *back = json_loads(text, 0, NULL);
    cr_assert_not_null(back);
    dom_evt got;
    es_error err = { 0 };
    cr_assert_eq(dom_evt_from_json(back, &got, &err), ES_OK, "%s: %s", err.text, text);
    cr_assert_eq(memcmp(&got, evt, sizeof got), 0, "event changed by its JSON form: %s", text);
    json_decref(back);
    free(text);
}

static int run_case(const char *file, const json_t *doc, const json_t *c)
{
    const char *name = json_string_value(json_object_get(c, "name"));
    char where[512];
    snprintf(where, sizeof where, "%s: %s", file, name ? name : "?");
    int bad = 0;

    json_t *sj = merged(json_object_get(doc, "state"), json_object_get(c, "state"));
    json_t *cj = merged(json_object_get(doc, "command"), json_object_get(c, "command"));
    json_t *xj = merged(json_object_get(doc, "ctx"), json_object_get(c, "ctx"));
    dom_user st;
    memset(&st, 0, sizeof st);
    state_from_json(&st, sj);
    dom_cmd cmd;
    decode_ok(cj, &cmd);
    dom_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx_from_json(&ctx, xj);

    dom_decision dec;
    dom_user_decide(&st, &cmd, &ctx, &dec);

    const json_t *expect = json_object_get(c, "expect");
    const json_t *want_rej = json_object_get(expect, "reject");
    const json_t *want_events = json_object_get(expect, "events");
    const json_t *want_payloads = json_object_get(expect, "payloads");
    const json_t *want_code = json_object_get(expect, "code");

    if (want_rej) {
        const char *got = dec.accepted ? "(accepted)" : dom_rej_lookup(dec.rej)->id;
        if (dec.accepted || strcmp(got, json_string_value(want_rej)) != 0) {
            cr_log_error("%s: got %s, want rejection %s", where, got, json_string_value(want_rej));
            bad++;
        }
        if (dec.code[0]) {
            cr_log_error("%s: a rejection carries a code", where);
            bad++;
        }
    } else if (!dec.accepted) {
        cr_log_error("%s: rejected with %s, want accepted", where, dom_rej_lookup(dec.rej)->id);
        bad++;
    }

    size_t n_want = want_events ? json_array_size(want_events) : 0;
    if (dec.n_events != n_want) {
        cr_log_error("%s: %zu events, want %zu", where, dec.n_events, n_want);
        bad++;
    }
    const char *creator = cmd.creator[0] ? cmd.creator : cmd.user_id;
    bool creates = cmd.type == DOM_CMD_IMPORT_HUMAN;
    for (size_t i = 0; i < dec.n_events && i < n_want; i++) {
        const dom_evt *e = &dec.events[i];
        const char *want_type = json_string_value(json_array_get(want_events, i));
        if (strcmp(dom_evt_type_name(e->type), want_type) != 0) {
            cr_log_error("%s: event %zu is %s, want %s", where, i, dom_evt_type_name(e->type),
                         want_type);
            bad++;
        }
        bool want_last = dec.accepted && i + 1 == dec.n_events;
        if (e->sequence != st.sequence + 1 + (int64_t)i || e->last_of_command != want_last ||
            e->created_at_us != ctx.now_us || e->position != 0 ||
            e->revision != DOM_EVT_REVISION || strcmp(e->command_id, cmd.id) != 0 ||
            strcmp(e->aggregate_id, cmd.user_id) != 0 || strcmp(e->creator, creator) != 0 ||
            strcmp(e->instance_id, creates ? cmd.instance_id : st.instance_id) != 0 ||
            strcmp(e->resource_owner, creates ? cmd.resource_owner : st.resource_owner) != 0) {
            cr_log_error("%s: event %zu headers: seq %" PRId64 " last %d at %" PRId64
                         " cmd %s agg %s creator %s inst %s owner %s",
                         where, i, e->sequence, e->last_of_command, e->created_at_us,
                         e->command_id, e->aggregate_id, e->creator, e->instance_id,
                         e->resource_owner);
            bad++;
        }
        const json_t *wp = want_payloads ? json_array_get(want_payloads, i) : NULL;
        if (wp && !json_is_null(wp)) {
            json_t *p = dom_evt_payload_to_json(e);
            if (!json_equal(p, (json_t *)wp)) {
                char *got = json_dumps(p, JSON_COMPACT | JSON_SORT_KEYS);
                char *want = json_dumps(wp, JSON_COMPACT | JSON_SORT_KEYS);
                cr_log_error("%s: event %zu payload %s, want %s", where, i, got, want);
                free(got);
                free(want);
                bad++;
            }
            json_decref(p);
        }
        check_evt_round_trip(e);
    }
    if (want_code && strcmp(dec.code, json_string_value(want_code)) != 0) {
        cr_log_error("%s: code \"%s\", want \"%s\"", where, dec.code, json_string_value(want_code));
        bad++;
    }

    /* What the processor does next: append and apply (even a rejection's
     * verification.failed event). */
    const json_t *after = json_object_get(c, "after");
    if (after) {
        dom_user next = st;
        for (size_t i = 0; i < dec.n_events; i++)
            dom_user_apply(&next, &dec.events[i]);
        bad += state_check(&next, after, where);
    }

    json_decref(sj);
    json_decref(cj);
    json_decref(xj);
    return bad;
}

static void run_table(const char *command)
{
    char path[512];
    snprintf(path, sizeof path, "%s/decide/%s.json", DATA, command);
    json_error_t jerr;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    cr_assert_not_null(doc, "%s: %s (line %d)", path, jerr.text, jerr.line);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(doc, "command"), "type")),
                     command);
    const json_t *cases = json_object_get(doc, "cases");
    cr_assert_gt(json_array_size(cases), 0);
    int bad = 0;
    size_t i;
    const json_t *c;
    json_array_foreach(cases, i, c) bad += run_case(command, doc, c);
    cr_log_info("%s: %zu cases", command, json_array_size(cases));
    cr_assert_eq(bad, 0, "%s: %d failed checks (see log)", command, bad);
    json_decref(doc);
}

/* --- the decision tables, data-driven ------------------------------------ */

Test(decide_table, AddMyAuthFactorOTPSMS) { run_table("AddMyAuthFactorOTPSMS"); }
Test(decide_table, RemoveMyAuthFactorOTPSMS) { run_table("RemoveMyAuthFactorOTPSMS"); }
Test(decide_table, SetMyPhone) { run_table("SetMyPhone"); }
Test(decide_table, VerifyMyPhone) { run_table("VerifyMyPhone"); }
Test(decide_table, RemoveMyPhone) { run_table("RemoveMyPhone"); }
Test(decide_table, ImportHumanUser) { run_table("ImportHumanUser"); }
Test(decide_table, LockUser) { run_table("LockUser"); }
Test(decide_table, UnlockUser) { run_table("UnlockUser"); }
Test(decide_table, DeactivateUser) { run_table("DeactivateUser"); }
Test(decide_table, ReactivateUser) { run_table("ReactivateUser"); }
Test(decide_table, RemoveUser) { run_table("RemoveUser"); }
Test(decide_table, ResendMyPhoneVerification) { run_table("ResendMyPhoneVerification"); }
Test(decide_table, ChallengeOTPSMS) { run_table("ChallengeOTPSMS"); }
Test(decide_table, CheckOTPSMS) { run_table("CheckOTPSMS"); }
Test(decide_table, RecordCodeDelivery) { run_table("RecordCodeDelivery"); }
Test(decide_table, CreateSession) { run_table("CreateSession"); }
Test(decide_table, SetSession) { run_table("SetSession"); }

/* Every command type has a table, and every table file is run above. */
Test(decide_table, every_command_has_a_table)
{
    for (int t = DOM_CMD_UNKNOWN + 1; t < DOM_CMD__COUNT; t++) {
        char path[512];
        snprintf(path, sizeof path, "%s/decide/%s.json", DATA, dom_cmd_type_name(t));
        FILE *f = fopen(path, "r");
        cr_expect_not_null(f, "no decision table for %s", dom_cmd_type_name(t));
        if (f)
            fclose(f);
    }
    DIR *d = opendir(DATA "/decide");
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        char type[128];
        snprintf(type, sizeof type, "%.*s", (int)(n - 5), e->d_name);
        cr_expect_neq(dom_cmd_type_parse(type), DOM_CMD_UNKNOWN, "stray table %s", e->d_name);
    }
    closedir(d);
}

/* --- stories through decide + apply -------------------------------------- */

#define T0 INT64_C(1711533948581000) /* 2024-03-27T10:05:48.581Z */
#define HOUR INT64_C(3600000000)

static int cmd_counter;

static dom_cmd mk(dom_cmd_type type, const char *user_id)
{
    dom_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    snprintf(cmd.id, sizeof cmd.id, "00000000-0000-4000-8000-%012d", ++cmd_counter);
    cmd.type = type;
    strcpy(cmd.instance_id, "default");
    strcpy(cmd.user_id, user_id);
    strcpy(cmd.resource_owner, "69629023906488334");
    return cmd;
}

static dom_cmd mk_import(const char *user_id, const char *user_name, const char *phone,
                         bool phone_verified)
{
    dom_cmd cmd = mk(DOM_CMD_IMPORT_HUMAN, user_id);
    strcpy(cmd.creator, "admin");
    strcpy(cmd.import.user_name, user_name);
    strcpy(cmd.import.first_name, "Minnie");
    strcpy(cmd.import.last_name, "Mouse");
    strcpy(cmd.import.email, "minnie@mouse.com");
    strcpy(cmd.import.phone, phone);
    cmd.import.is_phone_verified = phone_verified;
    return cmd;
}

/* A user's log, as the store keeps it. */
typedef struct {
    dom_evt events[64];
    size_t n;
} log_t;

/* Decide at now and append + apply whatever the decision writes. */
static dom_decision step(dom_user *st, log_t *log, const dom_cmd *cmd, const dom_ctx *ctx)
{
    dom_decision dec;
    dom_user_decide(st, cmd, ctx, &dec);
    for (size_t i = 0; i < dec.n_events; i++) {
        cr_assert_lt(log->n, 64);
        log->events[log->n++] = dec.events[i];
        dom_user_apply(st, &dec.events[i]);
    }
    return dec;
}

static void expect_accepted(const dom_decision *dec, const char *what)
{
    cr_assert(dec->accepted, "%s: rejected with %s", what, dom_rej_lookup(dec->rej)->id);
}

static void expect_rejected(const dom_decision *dec, const char *id, const char *what)
{
    cr_assert(!dec->accepted, "%s: accepted, want %s", what, id);
    cr_assert_str_eq(dom_rej_lookup(dec->rej)->id, id, "%s", what);
}

static dom_ctx at(int64_t now)
{
    dom_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.now_us = now;
    ctx.new_code = "K7Q2ZP";
    ctx.new_code_enc = "Y2lwaGVydGV4dA==";
    ctx.code_ttl_us = HOUR;
    return ctx;
}

#define PHONE_A "+41 71 000 00 00"
#define PHONE_A_E164 "+41710000000"
#define PHONE_B "079 999 99 99"
#define PHONE_B_E164 "+41799999999"

static bool users_equal(const dom_user *a, const dom_user *b)
{
    return !strcmp(a->instance_id, b->instance_id) && !strcmp(a->user_id, b->user_id) &&
           !strcmp(a->resource_owner, b->resource_owner) && !strcmp(a->user_name, b->user_name) &&
           a->status == b->status && a->sequence == b->sequence && !strcmp(a->phone, b->phone) &&
           a->phone_verified == b->phone_verified &&
           !strcmp(a->verified_phone, b->verified_phone) && a->otp_sms == b->otp_sms &&
           !strcmp(a->code_enc, b->code_enc) && a->code_expires_at_us == b->code_expires_at_us &&
           a->created_at_us == b->created_at_us && a->changed_at_us == b->changed_at_us;
}

/* Invariant 9: the state rebuilt from the log (through the events' JSON
 * form, as a rebuild reads them) equals the state kept along the way. */
static void check_rebuild(const log_t *log, const dom_user *live)
{
    dom_user rebuilt;
    memset(&rebuilt, 0, sizeof rebuilt);
    for (size_t i = 0; i < log->n; i++) {
        json_t *j = dom_evt_to_json(&log->events[i]);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        json_t *back = json_loads(text, 0, NULL);
        dom_evt evt;
        es_error err;
        cr_assert_eq(dom_evt_from_json(back, &evt, &err), ES_OK, "%s", err.text);
        cr_assert_eq(evt.sequence, (int64_t)i + 1, "sequence gap or duplicate in the log");
        dom_user_apply(&rebuilt, &evt);
        json_decref(back);
        free(text);
    }
    cr_assert(users_equal(&rebuilt, live), "rebuilt state differs from the live one");
}

Test(story, phone_change_rule_end_to_end)
{
    dom_user a, b;
    log_t la = { .n = 0 }, lb = { .n = 0 };
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    dom_ctx ctx = at(T0);
    dom_decision dec;
    dom_cmd cmd;

    /* User a: imported with verified phone A, adds the factor. */
    cmd = mk_import("u-a", "anna", PHONE_A, true);
    dec = step(&a, &la, &cmd, &ctx);
    expect_accepted(&dec, "import a");
    cr_assert_eq(dec.n_events, 2);
    cr_assert_str_eq(a.phone, PHONE_A_E164);
    cr_assert(a.phone_verified);
    cr_assert_str_eq(a.verified_phone, PHONE_A_E164);
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u-a");
    dec = step(&a, &la, &cmd, &ctx);
    expect_accepted(&dec, "add otp a");
    cr_assert_eq(dec.events[0].sequence, 3);

    /* a switches to B: the factor stays, codes still go to A. */
    cmd = mk(DOM_CMD_SET_PHONE, "u-a");
    strcpy(cmd.phone, PHONE_B);
    dec = step(&a, &la, &cmd, &ctx);
    expect_accepted(&dec, "set phone B for a");
    cr_assert_str_eq(a.phone, PHONE_B_E164);
    cr_assert(!a.phone_verified);
    cr_assert_str_eq(a.verified_phone, PHONE_A_E164);
    cr_assert(a.otp_sms);
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u-a");
    dec = step(&a, &la, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-Ad3g2", "a adds again");

    /* User b in the same situation but without the factor: refused until B
     * is verified. */
    cmd = mk_import("u-b", "bert", PHONE_A, true);
    dec = step(&b, &lb, &cmd, &ctx);
    expect_accepted(&dec, "import b");
    cmd = mk(DOM_CMD_SET_PHONE, "u-b");
    strcpy(cmd.phone, PHONE_B);
    dec = step(&b, &lb, &cmd, &ctx);
    expect_accepted(&dec, "set phone B for b");
    cr_assert_str_eq(b.verified_phone, PHONE_A_E164);
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u-b");
    dec = step(&b, &lb, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-Q54j2", "b adds with B unverified");
    cr_assert_eq(dec.n_events, 0);

    /* A wrong code: rejected, but the failure is in the log. */
    ctx.stored_code = "K7Q2ZP";
    cmd = mk(DOM_CMD_VERIFY_PHONE, "u-b");
    strcpy(cmd.code, "WRONG1");
    int64_t seq_before = b.sequence;
    dec = step(&b, &lb, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-sM0cs", "b verifies with a wrong code");
    cr_assert_eq(dec.n_events, 1);
    cr_assert_eq(dec.events[0].type, DOM_EVT_PHONE_VERIFICATION_FAILED);
    cr_assert_eq(dec.events[0].sequence, seq_before + 1);
    cr_assert(!dec.events[0].last_of_command, "a rejection's event must not trigger a success reply");
    cr_assert_eq(b.sequence, seq_before + 1);
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u-b");
    dec = step(&b, &lb, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-Q54j2", "b adds after a failed verification");

    /* The right code verifies B; now the factor can be added. */
    cmd = mk(DOM_CMD_VERIFY_PHONE, "u-b");
    strcpy(cmd.code, "K7Q2ZP");
    dec = step(&b, &lb, &cmd, &ctx);
    expect_accepted(&dec, "b verifies B");
    cr_assert_str_eq(b.verified_phone, PHONE_B_E164);
    cr_assert(b.phone_verified);
    cr_assert_str_eq(b.code_enc, "");
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u-b");
    dec = step(&b, &lb, &cmd, &ctx);
    expect_accepted(&dec, "b adds with B verified");
    cr_assert(b.otp_sms);

    check_rebuild(&la, &a);
    check_rebuild(&lb, &b);
}

Test(story, verify_failure_carries_one_event)
{
    dom_user st;
    log_t log = { .n = 0 };
    memset(&st, 0, sizeof st);
    dom_ctx ctx = at(T0);
    dom_cmd cmd = mk_import("u1", "carla", PHONE_A, false);
    dom_decision dec = step(&st, &log, &cmd, &ctx);
    expect_accepted(&dec, "import");
    cmd = mk(DOM_CMD_SET_PHONE, "u1");
    strcpy(cmd.phone, PHONE_B);
    dec = step(&st, &log, &cmd, &ctx);
    expect_accepted(&dec, "set phone");
    cr_assert_eq(st.code_expires_at_us, T0 + HOUR);

    /* Expired: the same answer as a wrong code, with the same event. */
    dom_ctx later = at(T0 + HOUR + 1);
    later.stored_code = "K7Q2ZP";
    cmd = mk(DOM_CMD_VERIFY_PHONE, "u1");
    strcpy(cmd.code, "K7Q2ZP");
    dec = step(&st, &log, &cmd, &later);
    expect_rejected(&dec, "COMMAND-sM0cs", "expired code");
    cr_assert_eq(dec.n_events, 1);
    cr_assert_eq(dec.events[0].type, DOM_EVT_PHONE_VERIFICATION_FAILED);
    cr_assert_str_eq(dec.events[0].command_id, cmd.id);
    cr_assert_eq(dec.events[0].created_at_us, T0 + HOUR + 1);
    /* the pending code is not consumed by a failure */
    cr_assert_str_neq(st.code_enc, "");
    cr_assert_eq(st.changed_at_us, T0 + HOUR + 1);

    /* Every other rejection writes nothing. */
    cmd = mk(DOM_CMD_VERIFY_PHONE, "u1");
    dec = step(&st, &log, &cmd, &later);
    expect_rejected(&dec, "COMMAND-wMe9f", "empty code");
    cr_assert_eq(dec.n_events, 0);
    check_rebuild(&log, &st);
}

Test(story, remove_phone_removes_the_factor_in_the_same_command)
{
    dom_user st;
    log_t log = { .n = 0 };
    memset(&st, 0, sizeof st);
    dom_ctx ctx = at(T0);
    dom_cmd cmd = mk_import("u1", "dora", PHONE_A, true);
    dom_decision dec = step(&st, &log, &cmd, &ctx);
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u1");
    dec = step(&st, &log, &cmd, &ctx);
    expect_accepted(&dec, "add otp");
    cr_assert_eq(st.sequence, 3);

    cmd = mk(DOM_CMD_REMOVE_PHONE, "u1");
    dec = step(&st, &log, &cmd, &ctx);
    expect_accepted(&dec, "remove phone");
    cr_assert_eq(dec.n_events, 2);
    cr_assert_eq(dec.events[0].type, DOM_EVT_PHONE_REMOVED);
    cr_assert_eq(dec.events[0].sequence, 4);
    cr_assert(!dec.events[0].last_of_command);
    cr_assert_eq(dec.events[1].type, DOM_EVT_OTP_SMS_REMOVED);
    cr_assert_eq(dec.events[1].sequence, 5);
    cr_assert(dec.events[1].last_of_command);
    cr_assert_str_eq(dec.events[0].command_id, dec.events[1].command_id);
    cr_assert(!st.otp_sms);
    cr_assert_str_eq(st.phone, "");
    cr_assert_str_eq(st.verified_phone, "");

    cmd = mk(DOM_CMD_REMOVE_OTP_SMS, "u1");
    dec = step(&st, &log, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-Sr3h3", "factor already gone");
    cmd = mk(DOM_CMD_ADD_OTP_SMS, "u1");
    dec = step(&st, &log, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-Q54j2", "no phone any more");
    check_rebuild(&log, &st);
}

Test(story, admin_lifecycle)
{
    dom_user st;
    log_t log = { .n = 0 };
    memset(&st, 0, sizeof st);
    dom_ctx ctx = at(T0);
    dom_cmd cmd = mk_import("u1", "emil", "", false);
    dom_decision dec = step(&st, &log, &cmd, &ctx);
    expect_accepted(&dec, "import");
    cr_assert_eq(dec.n_events, 1);

    static const struct {
        dom_cmd_type type;
        const char *rej; /* NULL = accepted */
        dom_user_status after;
    } steps[] = {
        { DOM_CMD_LOCK, NULL, DOM_USER_LOCKED },
        { DOM_CMD_ADD_OTP_SMS, "AUTH-7fs1e", DOM_USER_LOCKED },
        { DOM_CMD_LOCK, "COMMAND-3NN8v", DOM_USER_LOCKED },
        { DOM_CMD_DEACTIVATE, NULL, DOM_USER_INACTIVE },
        { DOM_CMD_UNLOCK, "COMMAND-4M0ds", DOM_USER_INACTIVE },
        { DOM_CMD_LOCK, "COMMAND-3NN8v", DOM_USER_INACTIVE },
        { DOM_CMD_DEACTIVATE, "COMMAND-5M0sf", DOM_USER_INACTIVE },
        { DOM_CMD_REACTIVATE, NULL, DOM_USER_ACTIVE },
        { DOM_CMD_REACTIVATE, "COMMAND-6M0sf", DOM_USER_ACTIVE },
        { DOM_CMD_LOCK, NULL, DOM_USER_LOCKED },
        { DOM_CMD_UNLOCK, NULL, DOM_USER_ACTIVE },
        { DOM_CMD_REMOVE_USER, NULL, DOM_USER_REMOVED },
        { DOM_CMD_REMOVE_USER, "COMMAND-m9od", DOM_USER_REMOVED },
        { DOM_CMD_REACTIVATE, "COMMAND-4M0sd", DOM_USER_REMOVED },
        { DOM_CMD_SET_PHONE, "AUTH-7fs1e", DOM_USER_REMOVED },
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        cmd = mk(steps[i].type, "u1");
        strcpy(cmd.creator, "admin-7");
        strcpy(cmd.phone, PHONE_B);
        dec = step(&st, &log, &cmd, &ctx);
        if (steps[i].rej) {
            expect_rejected(&dec, steps[i].rej, dom_cmd_type_name(steps[i].type));
            cr_assert_eq(dec.n_events, 0);
        } else {
            expect_accepted(&dec, dom_cmd_type_name(steps[i].type));
            cr_assert_str_eq(dec.events[0].creator, "admin-7");
        }
        cr_assert_eq(st.status, steps[i].after, "step %zu (%s)", i,
                     dom_cmd_type_name(steps[i].type));
    }
    cr_assert_eq(log.events[log.n - 1].type, DOM_EVT_REMOVED);
    cr_assert_str_eq(log.events[log.n - 1].user_name, "emil");
    /* a removed id is never imported again */
    cmd = mk_import("u1", "emil", "", false);
    dec = step(&st, &log, &cmd, &ctx);
    expect_rejected(&dec, "COMMAND-ziuna", "re-import");
    check_rebuild(&log, &st);
}

/* --- headers and determinism --------------------------------------------- */

Test(decide, headers_of_an_import_come_from_the_command)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    dom_cmd cmd = mk_import("u7", "fritz", PHONE_A, true);
    strcpy(cmd.instance_id, "tenant-9");
    strcpy(cmd.resource_owner, "org-9");
    dom_ctx ctx = at(T0);
    dom_decision dec;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_accepted(&dec, "import");
    for (size_t i = 0; i < dec.n_events; i++) {
        cr_assert_str_eq(dec.events[i].instance_id, "tenant-9");
        cr_assert_str_eq(dec.events[i].resource_owner, "org-9");
        cr_assert_str_eq(dec.events[i].aggregate_id, "u7");
        cr_assert_str_eq(dec.events[i].creator, "admin");
        cr_assert_eq(dec.events[i].sequence, (int64_t)i + 1);
    }
    /* The verified flag is carried by the phone.verified event only. */
    cr_assert(!dec.events[0].human.is_phone_verified);
    cr_assert_str_eq(dec.events[0].human.phone, PHONE_A_E164);
}

Test(decide, creator_defaults_to_the_user)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    strcpy(st.instance_id, "default");
    strcpy(st.user_id, "u1");
    strcpy(st.resource_owner, "69629023906488334");
    st.status = DOM_USER_ACTIVE;
    st.sequence = 41;
    strcpy(st.phone, PHONE_A_E164);
    st.phone_verified = true;
    dom_cmd cmd = mk(DOM_CMD_ADD_OTP_SMS, "u1");
    dom_ctx ctx = at(T0);
    dom_decision dec, again;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_accepted(&dec, "add");
    cr_assert_str_eq(dec.events[0].creator, "u1");
    cr_assert_eq(dec.events[0].sequence, 42);
    cr_assert(dec.events[0].last_of_command);
    /* Pure: the same inputs give the same decision, byte for byte, whatever
     * the decision struct held before (only the events it sets count). */
    memset(&again, 0xa5, sizeof again);
    dom_user_decide(&st, &cmd, &ctx, &again);
    cr_assert_eq(again.accepted, dec.accepted);
    cr_assert_eq(again.rej, dec.rej);
    cr_assert_str_eq(again.rej_detail, dec.rej_detail);
    cr_assert_str_eq(again.code, dec.code);
    cr_assert_eq(again.n_events, dec.n_events);
    cr_assert_eq(memcmp(again.events, dec.events, dec.n_events * sizeof dec.events[0]), 0);
}

Test(decide, a_state_of_another_user_is_never_decided_on)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    strcpy(st.instance_id, "default");
    strcpy(st.user_id, "someone-else");
    strcpy(st.resource_owner, "69629023906488334");
    st.status = DOM_USER_ACTIVE;
    strcpy(st.phone, PHONE_A_E164);
    st.phone_verified = true;
    dom_cmd cmd = mk(DOM_CMD_ADD_OTP_SMS, "u1");
    dom_ctx ctx = at(T0);
    dom_decision dec;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_rejected(&dec, "AUTH-7fs1e", "wrong user row");
    cmd = mk(DOM_CMD_LOCK, "u1");
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_rejected(&dec, "COMMAND-5M9fs", "wrong user row (admin)");
}

Test(decide, unknown_command_type_is_malformed)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    dom_cmd cmd = mk(DOM_CMD_UNKNOWN, "u1");
    dom_ctx ctx = at(T0);
    dom_decision dec;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_rejected(&dec, "FACTORD-Dec01", "unknown type");
    cr_assert_eq(dec.n_events, 0);
}

Test(decide, code_expiry_saturates_at_the_last_writable_instant)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    strcpy(st.instance_id, "default");
    strcpy(st.user_id, "u1");
    strcpy(st.resource_owner, "69629023906488334");
    st.status = DOM_USER_ACTIVE;
    dom_cmd cmd = mk(DOM_CMD_SET_PHONE, "u1");
    strcpy(cmd.phone, PHONE_A);
    dom_ctx ctx = at(T0);
    ctx.code_ttl_us = INT64_MAX;
    dom_decision dec;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_accepted(&dec, "set phone");
    cr_assert_eq(dec.events[1].code_expires_at_us, DOM_TIME_MAX_US);
    check_evt_round_trip(&dec.events[1]);
}

/* --- apply ---------------------------------------------------------------- */

static dom_evt evt_of(dom_evt_type type, int64_t seq)
{
    dom_evt evt;
    memset(&evt, 0, sizeof evt);
    evt.type = type;
    strcpy(evt.instance_id, "default");
    strcpy(evt.aggregate_id, "u1");
    strcpy(evt.resource_owner, "org1");
    evt.sequence = seq;
    evt.created_at_us = T0 + seq;
    evt.revision = 1;
    return evt;
}

/* Erasure (docs/pii.md): a removed user's write-side state keeps no
 * personal data, only its ids, status, sequence and dates. */
Test(apply, removal_clears_the_personal_columns)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    dom_evt e = evt_of(DOM_EVT_HUMAN_ADDED, 1);
    strcpy(e.human.user_name, "gina");
    strcpy(e.human.phone, PHONE_A_E164);
    dom_user_apply(&st, &e);
    e = evt_of(DOM_EVT_PHONE_VERIFIED, 2);
    dom_user_apply(&st, &e);
    e = evt_of(DOM_EVT_PHONE_CODE_ADDED, 3);
    strcpy(e.code_enc, "k:c2VjcmV0");
    dom_user_apply(&st, &e);
    cr_assert_str_eq(st.verified_phone, PHONE_A_E164);
    e = evt_of(DOM_EVT_REMOVED, 4);
    strcpy(e.user_name, "gina");
    dom_user_apply(&st, &e);
    cr_assert_eq(st.status, DOM_USER_REMOVED);
    cr_assert_str_eq(st.user_name, "");
    cr_assert_str_eq(st.phone, "");
    cr_assert_str_eq(st.verified_phone, "");
    cr_assert_str_eq(st.code_enc, "");
    cr_assert_not(st.phone_verified);
    cr_assert_eq(st.sequence, 4);
    cr_assert_str_eq(st.user_id, "u1");
    cr_assert_eq(st.created_at_us, T0 + 1);
}

Test(apply, zitadel_log_without_explicit_factor_removal)
{
    /* ZITADEL's names, and its implicit rule: phone removal un-adds OTP SMS. */
    dom_user st;
    memset(&st, 0, sizeof st);
    dom_evt e = evt_of(DOM_EVT_HUMAN_ADDED, 1);
    strcpy(e.human.user_name, "gina");
    strcpy(e.human.phone, PHONE_A_E164);
    dom_user_apply(&st, &e);
    cr_assert_eq(st.created_at_us, T0 + 1);
    e = evt_of(DOM_EVT_PHONE_VERIFIED, 2);
    dom_user_apply(&st, &e);
    e = evt_of(dom_evt_type_parse("user.human.mfa.otp.sms.added"), 3);
    cr_assert_eq(e.type, DOM_EVT_OTP_SMS_ADDED);
    dom_user_apply(&st, &e);
    cr_assert(st.otp_sms);
    e = evt_of(DOM_EVT_PHONE_REMOVED, 4);
    dom_user_apply(&st, &e);
    cr_assert(!st.otp_sms);
    cr_assert_str_eq(st.verified_phone, "");
    cr_assert_eq(st.sequence, 4);
    cr_assert_eq(st.created_at_us, T0 + 1);
    cr_assert_eq(st.changed_at_us, T0 + 4);
    cr_assert_str_eq(st.instance_id, "default");
    cr_assert_str_eq(st.user_id, "u1");
    cr_assert_str_eq(st.resource_owner, "org1");
    cr_assert_str_eq(st.user_name, "gina");
}

Test(apply, every_event_type)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    dom_evt e = evt_of(DOM_EVT_HUMAN_ADDED, 1);
    strcpy(e.human.phone, PHONE_A_E164);
    dom_user_apply(&st, &e);
    cr_assert_eq(st.status, DOM_USER_ACTIVE);
    cr_assert(!st.phone_verified);

    e = evt_of(DOM_EVT_PHONE_CODE_ADDED, 2);
    strcpy(e.code_enc, "c1");
    e.code_expires_at_us = T0 + HOUR;
    dom_user_apply(&st, &e);
    cr_assert_str_eq(st.code_enc, "c1");
    cr_assert_eq(st.code_expires_at_us, T0 + HOUR);

    e = evt_of(DOM_EVT_PHONE_VERIFICATION_FAILED, 3);
    dom_user_apply(&st, &e);
    cr_assert_str_eq(st.code_enc, "c1");
    cr_assert_eq(st.sequence, 3);

    e = evt_of(DOM_EVT_PHONE_VERIFIED, 4);
    dom_user_apply(&st, &e);
    cr_assert(st.phone_verified);
    cr_assert_str_eq(st.verified_phone, PHONE_A_E164);
    cr_assert_str_eq(st.code_enc, "");
    cr_assert_eq(st.code_expires_at_us, 0);

    e = evt_of(DOM_EVT_PHONE_CHANGED, 5);
    strcpy(e.phone, PHONE_B_E164);
    dom_user_apply(&st, &e);
    cr_assert_str_eq(st.phone, PHONE_B_E164);
    cr_assert(!st.phone_verified);
    cr_assert_str_eq(st.verified_phone, PHONE_A_E164);

    e = evt_of(DOM_EVT_OTP_SMS_ADDED, 6);
    dom_user_apply(&st, &e);
    cr_assert(st.otp_sms);
    e = evt_of(DOM_EVT_OTP_SMS_REMOVED, 7);
    dom_user_apply(&st, &e);
    cr_assert(!st.otp_sms);

    static const struct {
        dom_evt_type type;
        dom_user_status status;
    } states[] = {
        { DOM_EVT_LOCKED, DOM_USER_LOCKED },       { DOM_EVT_UNLOCKED, DOM_USER_ACTIVE },
        { DOM_EVT_DEACTIVATED, DOM_USER_INACTIVE }, { DOM_EVT_REACTIVATED, DOM_USER_ACTIVE },
        { DOM_EVT_OTP_SMS_ADDED, DOM_USER_ACTIVE }, { DOM_EVT_REMOVED, DOM_USER_REMOVED },
    };
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
        e = evt_of(states[i].type, 8 + (int64_t)i);
        dom_user_apply(&st, &e);
        cr_assert_eq(st.status, states[i].status, "after %s", dom_evt_type_name(states[i].type));
    }
    cr_assert(!st.otp_sms, "a removed user has no factor");
    cr_assert_eq(st.sequence, 13);
}

Test(apply, status_names)
{
    for (int s = DOM_USER_NONE; s <= DOM_USER_REMOVED; s++)
        cr_assert_eq((int)dom_user_status_parse(dom_user_status_name((dom_user_status)s)), s);
    cr_assert_str_eq(dom_user_status_name(DOM_USER_INACTIVE), "inactive");
    cr_assert_eq(dom_user_status_parse("bogus"), DOM_USER_NONE);
    cr_assert_eq(dom_user_status_parse(NULL), DOM_USER_NONE);
}

/* --- reply bodies, byte for byte ------------------------------------------ */

static void expect_body(json_t *body, const char *file)
{
    char path[512];
    snprintf(path, sizeof path, "%s/replies/%s", DATA, file);
    char *want = slurp(path, NULL);
    char *got = json_dumps(body, JSON_COMPACT);
    cr_assert_str_eq(got, want, "%s", file);
    free(got);
    free(want);
    json_decref(body);
}

Test(replies, add_otp_sms_rejections_are_byte_exact)
{
    dom_user st;
    memset(&st, 0, sizeof st);
    strcpy(st.instance_id, "default");
    strcpy(st.user_id, "69629026806489455");
    strcpy(st.resource_owner, "69629023906488334");
    st.status = DOM_USER_ACTIVE;
    st.sequence = 1;
    dom_ctx ctx = at(T0);
    dom_decision dec;

    dom_cmd cmd = mk(DOM_CMD_ADD_OTP_SMS, "");
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_body(dom_rej_body(dec.rej, NULL), "add_otp_sms_1_user_id_missing.json");
    cr_assert_eq(dom_rej_lookup(dec.rej)->http_status, 400);

    cmd = mk(DOM_CMD_ADD_OTP_SMS, "69629026806489455");
    st.status = DOM_USER_LOCKED;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_body(dom_rej_body(dec.rej, NULL), "add_otp_sms_2_token_invalid.json");
    cr_assert_eq(dom_rej_lookup(dec.rej)->http_status, 401);

    st.status = DOM_USER_ACTIVE;
    st.otp_sms = true;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_body(dom_rej_body(dec.rej, NULL), "add_otp_sms_3_already_ready.json");
    cr_assert_eq(dom_rej_lookup(dec.rej)->http_status, 409);

    st.otp_sms = false;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_body(dom_rej_body(dec.rej, NULL), "add_otp_sms_4_not_ready.json");
    cr_assert_eq(dom_rej_lookup(dec.rej)->http_status, 400);

    strcpy(st.phone, PHONE_A_E164);
    st.phone_verified = true;
    dom_user_decide(&st, &cmd, &ctx, &dec);
    expect_accepted(&dec, "row 5");
    expect_body(dom_success_body(&dec.events[dec.n_events - 1], dec.code),
                "add_otp_sms_5_success.json");
}

Test(replies, success_body_with_code_keeps_microseconds)
{
    dom_evt e = evt_of(DOM_EVT_PHONE_CODE_ADDED, 5);
    e.created_at_us = T0 + 123;
    strcpy(e.resource_owner, "69629023906488334");
    expect_body(dom_success_body(&e, "K7Q2ZP"), "set_phone_success_return_code.json");
}

Test(replies, factord_rows)
{
    expect_body(dom_rej_body(DOM_REJ_COMMAND_ID_REUSED, NULL), "command_id_reused.json");
    expect_body(dom_rej_body(DOM_REJ_COMMAND_MALFORMED, "field \"instanceId\": expected a string"),
                "command_malformed_with_detail.json");
}

/* The bodies the integration tests expect over HTTP (tests/data/replies). */
Test(replies, remove_otp_sms_and_verify_phone_rejections)
{
    expect_body(dom_rej_body(DOM_REJ_OTP_SMS_NOT_ADDED, NULL), "remove_otp_sms_not_found.json");
    expect_body(dom_rej_body(DOM_REJ_CODE_INVALID, NULL), "verify_phone_code_invalid.json");
}
