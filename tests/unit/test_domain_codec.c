/*
 * tests/unit/test_domain_codec.c - the command and event codecs, the clock
 * arithmetic and the rejection catalogue.
 *
 * Commands are data-driven: every tests/data/commands/valid/<name>.json must
 * decode and survive encode/decode unchanged (and match its .canonical
 * file when there is one); every tests/data/commands/invalid/<name>.json must
 * be refused with a reason containing its .reason text, keeping the id and
 * replyTo its .readable file names. Records too large for a file are made
 * here.
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
    if (!f)
        return NULL;
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

/* A sidecar file's text without its trailing newline, or NULL. */
static char *sidecar(const char *dir, const char *base, const char *ext)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s", dir, base, ext);
    char *s = slurp(path, NULL);
    if (s) {
        size_t n = strlen(s);
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
            s[--n] = '\0';
    }
    return s;
}

typedef void (*case_fn)(const char *dir, const char *base, int *failures);

/* Run fn for every <base>.json in dir; returns how many ran. */
static int each_json(const char *dir, case_fn fn, int *failures)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char base[512];
        snprintf(base, sizeof base, "%.*s", (int)(len - 5), e->d_name);
        fn(dir, base, failures);
        n++;
    }
    closedir(d);
    return n;
}

static bool cmd_equal(const dom_cmd *a, const dom_cmd *b)
{
    /* decode zeroes the struct and copies strings with their NUL, so two
     * decodes of the same meaning are equal byte for byte. */
    return memcmp(a, b, sizeof *a) == 0;
}

/* --- commands: valid ------------------------------------------------------ */

static void valid_case(const char *dir, const char *base, int *failures)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/%s.json", dir, base);
    char *text = slurp(path, &len);
    dom_cmd cmd, again;
    es_error err = { 0 };

    if (dom_cmd_decode(text, len, &cmd, &err) != ES_OK) {
        cr_log_error("valid/%s: refused: %s", base, err.text);
        (*failures)++;
        free(text);
        return;
    }
    /* Round trip through the wire form, replyTo included. */
    json_t *j = dom_cmd_to_json(&cmd, true);
    char *wire = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (dom_cmd_decode(wire, strlen(wire), &again, &err) != ES_OK || !cmd_equal(&cmd, &again)) {
        cr_log_error("valid/%s: round trip changed the command (%s): %s", base, err.text, wire);
        (*failures)++;
    }
    /* The canonical text: stable, replyTo-free, and itself decodable to the
     * same command minus replyTo. */
    char *canon = dom_cmd_canonical(&cmd);
    char *want = sidecar(dir, base, ".canonical");
    if (want && strcmp(canon, want) != 0) {
        cr_log_error("valid/%s: canonical\n  got  %s\n  want %s", base, canon, want);
        (*failures)++;
    }
    if (strstr(canon, "replyTo")) {
        cr_log_error("valid/%s: canonical text contains replyTo", base);
        (*failures)++;
    }
    dom_cmd from_canon;
    cr_assert_eq(dom_cmd_decode(canon, strlen(canon), &from_canon, &err), ES_OK, "%s", err.text);
    cmd.reply_to[0] = '\0';
    memset(cmd.reply_to, 0, sizeof cmd.reply_to);
    if (!cmd_equal(&cmd, &from_canon)) {
        cr_log_error("valid/%s: canonical text decodes to another command", base);
        (*failures)++;
    }
    char *canon2 = dom_cmd_canonical(&from_canon);
    if (strcmp(canon, canon2) != 0) {
        cr_log_error("valid/%s: canonical text not a fixed point", base);
        (*failures)++;
    }
    free(canon2);
    free(want);
    free(canon);
    free(wire);
    free(text);
}

Test(command_codec, valid_cases)
{
    int failures = 0;
    int n = each_json(DATA "/commands/valid", valid_case, &failures);
    cr_log_info("%d valid command files", n);
    cr_assert_gt(n, 10);
    cr_assert_eq(failures, 0, "%d valid cases failed (see log)", failures);
}

/* --- commands: invalid ---------------------------------------------------- */

static void invalid_case(const char *dir, const char *base, int *failures)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof path, "%s/%s.json", dir, base);
    char *text = slurp(path, &len);
    char *reason = sidecar(dir, base, ".reason");
    char *readable = sidecar(dir, base, ".readable");
    dom_cmd cmd;
    es_error err = { 0 };

    if (!reason) {
        cr_log_error("invalid/%s: no .reason file", base);
        (*failures)++;
    } else if (dom_cmd_decode(text, len, &cmd, &err) != ES_EINVAL) {
        cr_log_error("invalid/%s: accepted", base);
        (*failures)++;
    } else {
        if (!strstr(err.text, reason)) {
            cr_log_error("invalid/%s: reason \"%s\" lacks \"%s\"", base, err.text, reason);
            (*failures)++;
        }
        /* Nothing beyond id and replyTo survives a refusal. */
        dom_cmd rest = cmd;
        memset(rest.id, 0, sizeof rest.id);
        memset(rest.reply_to, 0, sizeof rest.reply_to);
        dom_cmd zero;
        memset(&zero, 0, sizeof zero);
        if (memcmp(&rest, &zero, sizeof zero) != 0) {
            cr_log_error("invalid/%s: fields other than id/replyTo left set", base);
            (*failures)++;
        }
        if (readable) {
            char *nl = strchr(readable, '\n');
            const char *want_reply = nl ? nl + 1 : "";
            if (nl)
                *nl = '\0';
            if (strcmp(cmd.id, readable) != 0 || strcmp(cmd.reply_to, want_reply) != 0) {
                cr_log_error("invalid/%s: readable id \"%s\" replyTo \"%s\", want \"%s\" \"%s\"",
                             base, cmd.id, cmd.reply_to, readable, want_reply);
                (*failures)++;
            }
        }
        /* The reason must be usable in a reply body (valid UTF-8 etc.). */
        json_t *body = dom_rej_body(DOM_REJ_COMMAND_MALFORMED, err.text);
        cr_assert_not_null(body);
        json_decref(body);
    }
    free(readable);
    free(reason);
    free(text);
}

Test(command_codec, invalid_cases)
{
    int failures = 0;
    int n = each_json(DATA "/commands/invalid", invalid_case, &failures);
    cr_log_info("%d invalid command files", n);
    cr_assert_gt(n, 50);
    cr_assert_eq(failures, 0, "%d invalid cases failed (see log)", failures);
}

static const char valid_add[] =
    "{\"id\":\"6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01\",\"type\":\"AddMyAuthFactorOTPSMS\","
    "\"instanceId\":\"default\",\"userId\":\"u1\",\"payload\":{},\"replyTo\":\"r\"}";

Test(command_codec, too_large)
{
    /* One byte over the limit: refused before parsing, whatever it holds. */
    size_t n = DOM_CMD_MAX_BYTES + 1;
    char *buf = malloc(n);
    memcpy(buf, valid_add, sizeof valid_add - 1);
    memset(buf + sizeof valid_add - 1, ' ', n - (sizeof valid_add - 1));
    dom_cmd cmd;
    es_error err;
    cr_assert_eq(dom_cmd_decode(buf, n, &cmd, &err), ES_EINVAL);
    cr_assert_str_eq(err.text, "record too large (65537 bytes, limit 65536)");
    cr_assert_str_eq(cmd.id, "");

    /* Exactly at the limit: fine (trailing whitespace is valid JSON). */
    cr_assert_eq(dom_cmd_decode(buf, n - 1, &cmd, &err), ES_OK, "%s", err.text);
    cr_assert_str_eq(cmd.id, "6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01");

    /* Far over, e.g. a 1 MiB record. */
    char *big = malloc(1 << 20);
    memset(big, 'x', 1 << 20);
    cr_assert_eq(dom_cmd_decode(big, 1 << 20, &cmd, &err), ES_EINVAL);
    cr_assert_str_eq(err.text, "record too large (1048576 bytes, limit 65536)");
    free(big);
    free(buf);
}

Test(command_codec, length_is_respected_not_nul)
{
    /* The buffer is not NUL-terminated at len: only len bytes count. */
    char buf[sizeof valid_add + 8];
    memcpy(buf, valid_add, sizeof valid_add - 1);
    memcpy(buf + sizeof valid_add - 1, "garbage", 8);
    dom_cmd cmd;
    es_error err;
    cr_assert_eq(dom_cmd_decode(buf, sizeof valid_add - 1, &cmd, &err), ES_OK, "%s", err.text);
    cr_assert_eq(dom_cmd_decode(buf, sizeof valid_add + 6, &cmd, &err), ES_EINVAL);
    cr_assert_eq(dom_cmd_decode(NULL, 0, &cmd, &err), ES_EINVAL);
    /* a NULL error struct is allowed */
    cr_assert_eq(dom_cmd_decode("{", 1, &cmd, NULL), ES_EINVAL);
}

Test(command_codec, a_failed_decode_clears_an_earlier_command)
{
    dom_cmd cmd;
    es_error err;
    cr_assert_eq(dom_cmd_decode(valid_add, sizeof valid_add - 1, &cmd, &err), ES_OK);
    cr_assert_eq(dom_cmd_decode("[]", 2, &cmd, &err), ES_EINVAL);
    cr_assert_str_eq(cmd.id, "");
    cr_assert_str_eq(cmd.reply_to, "");
    cr_assert_str_eq(cmd.instance_id, "");
    cr_assert_eq(cmd.type, DOM_CMD_UNKNOWN);
}

Test(command_codec, reply_to_length_limit)
{
    char topic[250];
    memset(topic, 'a', 249);
    topic[249] = '\0';
    char buf[1024];
    snprintf(buf, sizeof buf,
             "{\"id\":\"6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01\",\"type\":\"LockUser\","
             "\"instanceId\":\"i\",\"payload\":{},\"replyTo\":\"%s\"}",
             topic);
    dom_cmd cmd;
    es_error err;
    cr_assert_eq(dom_cmd_decode(buf, strlen(buf), &cmd, &err), ES_OK, "%s", err.text);
    cr_assert_str_eq(cmd.reply_to, topic);
}

Test(command_codec, type_names)
{
    static const char *const names[] = {
        "AddMyAuthFactorOTPSMS", "RemoveMyAuthFactorOTPSMS", "SetMyPhone", "VerifyMyPhone",
        "RemoveMyPhone", "ImportHumanUser", "LockUser", "UnlockUser", "DeactivateUser",
        "ReactivateUser", "RemoveUser", "ResendMyPhoneVerification", "ChallengeOTPSMS",
        "CheckOTPSMS", "RecordCodeDelivery", "CreateSession", "SetSession",
    };
    cr_assert_eq(sizeof names / sizeof names[0], DOM_CMD__COUNT - 1);
    for (int t = DOM_CMD_UNKNOWN + 1; t < DOM_CMD__COUNT; t++) {
        cr_assert_str_eq(dom_cmd_type_name(t), names[t - 1]);
        cr_assert_eq((int)dom_cmd_type_parse(names[t - 1]), t);
    }
    cr_assert_str_eq(dom_cmd_type_name(DOM_CMD_UNKNOWN), "");
    cr_assert_str_eq(dom_cmd_type_name(DOM_CMD__COUNT), "");
    cr_assert_eq(dom_cmd_type_parse(""), DOM_CMD_UNKNOWN);
    cr_assert_eq(dom_cmd_type_parse(NULL), DOM_CMD_UNKNOWN);
    cr_assert_eq(dom_cmd_type_parse("removeuser"), DOM_CMD_UNKNOWN);
}

Test(command_codec, canonical_ignores_reply_to_and_key_order)
{
    const char *a = "{\"id\":\"6F1C1E5E-8D2A-4A57-9A53-2F0D1C7B9E01\",\"type\":\"SetMyPhone\","
                    "\"instanceId\":\"i\",\"userId\":\"u\",\"payload\":{\"phone\":\"+41\","
                    "\"returnCode\":false},\"replyTo\":\"one\"}";
    const char *b = "{\"payload\":{\"phone\":\"+41\"},\"userId\":\"u\",\"replyTo\":\"two\","
                    "\"instanceId\":\"i\",\"type\":\"SetMyPhone\","
                    "\"id\":\"6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01\"}";
    const char *c = "{\"payload\":{\"phone\":\"+42\"},\"userId\":\"u\",\"replyTo\":\"two\","
                    "\"instanceId\":\"i\",\"type\":\"SetMyPhone\","
                    "\"id\":\"6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01\"}";
    dom_cmd ca, cb, cc;
    es_error err;
    cr_assert_eq(dom_cmd_decode(a, strlen(a), &ca, &err), ES_OK, "%s", err.text);
    cr_assert_eq(dom_cmd_decode(b, strlen(b), &cb, &err), ES_OK, "%s", err.text);
    cr_assert_eq(dom_cmd_decode(c, strlen(c), &cc, &err), ES_OK, "%s", err.text);
    char *sa = dom_cmd_canonical(&ca), *sb = dom_cmd_canonical(&cb), *sc = dom_cmd_canonical(&cc);
    cr_assert_str_eq(sa, sb);
    cr_assert_str_neq(sa, sc, "different content must not share a canonical text");
    free(sa);
    free(sb);
    free(sc);
}

Test(command_codec, to_json_without_reply_to)
{
    dom_cmd cmd;
    es_error err;
    cr_assert_eq(dom_cmd_decode(valid_add, sizeof valid_add - 1, &cmd, &err), ES_OK);
    json_t *with = dom_cmd_to_json(&cmd, true), *without = dom_cmd_to_json(&cmd, false);
    cr_assert_str_eq(json_string_value(json_object_get(with, "replyTo")), "r");
    cr_assert_null(json_object_get(without, "replyTo"));
    json_decref(with);
    json_decref(without);
}

/* --- events --------------------------------------------------------------- */

static dom_evt sample_event(dom_evt_type type)
{
    dom_evt e;
    memset(&e, 0, sizeof e);
    e.type = type;
    strcpy(e.instance_id, "default");
    strcpy(e.aggregate_id, "69629026806489455");
    strcpy(e.resource_owner, "69629023906488334");
    strcpy(e.creator, "69629026806489455");
    strcpy(e.command_id, "6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01");
    e.sequence = 9007199254740993; /* above 2^53: why int64 travel as strings */
    e.position = INT64_MAX;
    e.created_at_us = INT64_C(1711533948581123);
    e.revision = 1;
    e.last_of_command = true;
    switch (type) {
    case DOM_EVT_HUMAN_ADDED:
        strcpy(e.human.user_name, "zoë");
        strcpy(e.human.first_name, "Zoë");
        strcpy(e.human.last_name, "\"Quote\" \\ Ω");
        strcpy(e.human.nick_name, "z");
        strcpy(e.human.display_name, "Zoë Q");
        strcpy(e.human.preferred_language, "de-CH");
        strcpy(e.human.gender, "GENDER_DIVERSE");
        strcpy(e.human.email, "zoe@example.ch");
        e.human.is_email_verified = true;
        strcpy(e.human.phone, "+41710000000");
        break;
    case DOM_EVT_PHONE_CHANGED:
        strcpy(e.phone, "+41799999999");
        break;
    case DOM_EVT_PHONE_CODE_ADDED:
        strcpy(e.code_enc, "Y2lwaGVydGV4dA==");
        e.code_expires_at_us = INT64_C(1711537548581123);
        break;
    case DOM_EVT_OTP_SMS_CODE_ADDED:
        strcpy(e.code_enc, "k1:b3RwLWNpcGhlcnRleHQ=");
        e.code_expires_at_us = INT64_C(1711534248581123);
        e.code_returned = true;
        break;
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SENT:
        e.delivery.kind = type == DOM_EVT_PHONE_CODE_SENT ? DOM_CODE_PHONE : DOM_CODE_OTP_SMS;
        e.delivery.sent = true;
        e.delivery.code_sequence = 9007199254740992;
        strcpy(e.delivery.provider, "twilio");
        strcpy(e.delivery.message_id, "SM0123456789abcdef0123456789abcdef");
        break;
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED:
        e.delivery.kind = type == DOM_EVT_PHONE_CODE_SEND_FAILED ? DOM_CODE_PHONE : DOM_CODE_OTP_SMS;
        e.delivery.code_sequence = 3;
        strcpy(e.delivery.provider, "webhook");
        strcpy(e.delivery.reason, "HTTP 400: 21211 Invalid 'To' Phone Number");
        break;
    case DOM_EVT_REMOVED:
        strcpy(e.user_name, "zoë");
        break;
    default:
        break;
    }
    return e;
}

static json_t *through_text(json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    cr_assert_not_null(back, "%s", text);
    free(text);
    return back;
}

Test(event_codec, round_trip_every_type)
{
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        dom_evt e = sample_event(t), got;
        json_t *j = through_text(dom_evt_to_json(&e));
        es_error err = { 0 };
        cr_assert_eq(dom_evt_from_json(j, &got, &err), ES_OK, "%s: %s", dom_evt_type_name(t),
                     err.text);
        cr_assert_eq(memcmp(&e, &got, sizeof e), 0, "%s changed by its JSON form",
                     dom_evt_type_name(t));
        cr_assert_str_eq(json_string_value(json_object_get(j, "sequence")), "9007199254740993");
        cr_assert_str_eq(json_string_value(json_object_get(j, "position")), "9223372036854775807");
        cr_assert_str_eq(json_string_value(json_object_get(j, "createdAt")),
                         "2024-03-27T10:05:48.581123Z");
        cr_assert_str_eq(json_string_value(json_object_get(j, "aggregateType")), "user");
        json_decref(j);
    }
}

Test(event_codec, exact_shape)
{
    dom_evt e = sample_event(DOM_EVT_PHONE_CODE_ADDED);
    e.sequence = 2;
    e.position = 17;
    json_t *j = dom_evt_to_json(&e);
    char *text = json_dumps(j, JSON_COMPACT);
    cr_assert_str_eq(text,
                     "{\"instanceId\":\"default\",\"aggregateType\":\"user\","
                     "\"aggregateId\":\"69629026806489455\",\"sequence\":\"2\",\"position\":\"17\","
                     "\"type\":\"user.human.phone.code.added\",\"revision\":1,"
                     "\"createdAt\":\"2024-03-27T10:05:48.581123Z\","
                     "\"creator\":\"69629026806489455\",\"resourceOwner\":\"69629023906488334\","
                     "\"commandId\":\"6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01\","
                     "\"lastOfCommand\":true,\"payload\":{\"code\":\"Y2lwaGVydGV4dA==\","
                     "\"expiresAt\":\"2024-03-27T11:05:48.581123Z\"}}");
    free(text);
    json_decref(j);
}

Test(event_codec, payload_shapes)
{
    static const struct {
        dom_evt_type type;
        const char *json;
    } want[] = {
        { DOM_EVT_HUMAN_ADDED,
          "{\"userName\":\"zoë\",\"firstName\":\"Zoë\",\"lastName\":\"\\\"Quote\\\" \\\\ Ω\","
          "\"nickName\":\"z\",\"displayName\":\"Zoë Q\",\"preferredLanguage\":\"de-CH\","
          "\"gender\":\"GENDER_DIVERSE\",\"email\":\"zoe@example.ch\",\"isEmailVerified\":true,"
          "\"phone\":\"+41710000000\"}" },
        { DOM_EVT_PHONE_CHANGED, "{\"phone\":\"+41799999999\"}" },
        { DOM_EVT_PHONE_VERIFIED, "{}" },
        { DOM_EVT_PHONE_VERIFICATION_FAILED, "{}" },
        { DOM_EVT_PHONE_REMOVED, "{}" },
        { DOM_EVT_OTP_SMS_ADDED, "{}" },
        { DOM_EVT_OTP_SMS_REMOVED, "{}" },
        { DOM_EVT_LOCKED, "{}" },
        { DOM_EVT_UNLOCKED, "{}" },
        { DOM_EVT_DEACTIVATED, "{}" },
        { DOM_EVT_REACTIVATED, "{}" },
        { DOM_EVT_REMOVED, "{\"userName\":\"zoë\"}" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        dom_evt e = sample_event(want[i].type);
        json_t *p = dom_evt_payload_to_json(&e);
        char *text = json_dumps(p, JSON_COMPACT);
        cr_expect_str_eq(text, want[i].json, "%s", dom_evt_type_name(want[i].type));
        free(text);
        json_decref(p);
    }
    /* Empty strings are left out of user.human.added. */
    dom_evt e = sample_event(DOM_EVT_HUMAN_ADDED);
    memset(&e.human, 0, sizeof e.human);
    strcpy(e.human.user_name, "x");
    json_t *p = dom_evt_payload_to_json(&e);
    char *text = json_dumps(p, JSON_COMPACT);
    cr_assert_str_eq(text, "{\"userName\":\"x\",\"isEmailVerified\":false}");
    free(text);
    json_decref(p);
    /* A code that never expires has no expiresAt. */
    e = sample_event(DOM_EVT_PHONE_CODE_ADDED);
    e.code_expires_at_us = 0;
    p = dom_evt_payload_to_json(&e);
    cr_assert_null(json_object_get(p, "expiresAt"));
    json_decref(p);
}

Test(event_codec, type_names)
{
    static const char *const names[] = {
        "user.human.added", "user.human.phone.changed", "user.human.phone.code.added",
        "user.human.phone.verified", "user.human.phone.verification.failed",
        "user.human.phone.removed", "user.human.otp.sms.added", "user.human.otp.sms.removed",
        "user.locked", "user.unlocked", "user.deactivated", "user.reactivated", "user.removed",
        "user.human.otp.sms.code.added", "user.human.otp.sms.code.sent",
        "user.human.otp.sms.code.send.failed", "user.human.otp.sms.check.succeeded",
        "user.human.otp.sms.check.failed", "user.human.phone.code.sent",
        "user.human.phone.code.send.failed", "user.session.added", "user.session.token.set",
    };
    cr_assert_eq(sizeof names / sizeof names[0], DOM_EVT__COUNT - 1);
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        cr_assert_str_eq(dom_evt_type_name(t), names[t - 1]);
        cr_assert_eq((int)dom_evt_type_parse(names[t - 1]), t);
    }
    cr_assert_eq(dom_evt_type_parse("user.human.mfa.otp.sms.added"), DOM_EVT_OTP_SMS_ADDED);
    cr_assert_eq(dom_evt_type_parse("user.human.mfa.otp.sms.removed"), DOM_EVT_OTP_SMS_REMOVED);
    cr_assert_eq(dom_evt_type_parse("user.human.mfa.otp.added"), DOM_EVT_UNKNOWN);
    cr_assert_eq(dom_evt_type_parse(""), DOM_EVT_UNKNOWN);
    cr_assert_eq(dom_evt_type_parse(NULL), DOM_EVT_UNKNOWN);
    cr_assert_str_eq(dom_evt_type_name(DOM_EVT_UNKNOWN), "");
}

Test(event_codec, zitadel_event_names_and_extra_members)
{
    const char *text =
        "{\"instanceId\":\"i\",\"aggregateType\":\"user\",\"aggregateId\":\"u\","
        "\"sequence\":\"3\",\"type\":\"user.human.mfa.otp.sms.added\","
        "\"createdAt\":\"2024-03-27T11:05:48.5+01:00\",\"payload\":{\"userAgentID\":\"x\"}}";
    json_t *j = json_loads(text, 0, NULL);
    dom_evt e;
    es_error err;
    cr_assert_eq(dom_evt_from_json(j, &e, &err), ES_OK, "%s", err.text);
    cr_assert_eq(e.type, DOM_EVT_OTP_SMS_ADDED);
    cr_assert_eq(e.sequence, 3);
    cr_assert_eq(e.position, 0);
    cr_assert_eq(e.revision, 1);
    cr_assert_eq(e.created_at_us, INT64_C(1711533948500000));
    cr_assert(!e.last_of_command);
    json_decref(j);
}

Test(event_codec, invalid_events)
{
    static const struct {
        const char *patch; /* JSON object merged over a valid event */
        const char *reason;
    } cases[] = {
        { "{\"sequence\":\"0\"}", "\"sequence\": not an integer >= 1" },
        { "{\"sequence\":\"-1\"}", "\"sequence\"" },
        { "{\"sequence\":\"01\"}", "\"sequence\"" },
        { "{\"sequence\":\"\"}", "\"sequence\"" },
        { "{\"sequence\":\"9223372036854775808\"}", "\"sequence\"" },
        { "{\"sequence\":\"99999999999999999999\"}", "\"sequence\"" },
        { "{\"sequence\":5}", "\"sequence\": expected a string of digits" },
        { "{\"sequence\":\" 5\"}", "\"sequence\"" },
        { "{\"position\":\"-1\"}", "\"position\"" },
        { "{\"position\":\"1e3\"}", "\"position\"" },
        { "{\"revision\":0}", "\"revision\"" },
        { "{\"revision\":\"1\"}", "\"revision\"" },
        { "{\"createdAt\":\"2024-03-27\"}", "\"createdAt\": not an RFC 3339 time" },
        { "{\"createdAt\":\"\"}", "\"createdAt\": not an RFC 3339 time" },
        { "{\"createdAt\":1711533948}", "\"createdAt\": expected a string" },
        { "{\"type\":\"user.human.password.changed\"}", "unknown event type" },
        { "{\"type\":null}", "\"type\": expected a string" },
        { "{\"aggregateType\":\"org\"}", "\"aggregateType\": not \"user\"" },
        { "{\"instanceId\":\"\"}", "empty instanceId" },
        { "{\"aggregateId\":7}", "\"aggregateId\": expected a string" },
        { "{\"commandId\":\"6f1c1e5e-8d2a-4a57-9a53-2f0d1c7b9e01-too-long\"}",
          "\"commandId\": too long" },
        { "{\"lastOfCommand\":\"yes\"}", "\"lastOfCommand\": expected a boolean" },
        { "{\"payload\":[]}", "\"payload\": expected an object" },
        { "{\"payload\":{\"phone\":7}}", "\"phone\": expected a string" },
        { "{\"payload\":{}}", "\"phone\": missing" },
        { "{\"payload\":{\"phone\":\"+4179999999999999999999999999999999\"}}",
          "\"phone\": too long" },
    };
    const char *base = "{\"instanceId\":\"i\",\"aggregateType\":\"user\",\"aggregateId\":\"u\","
                       "\"sequence\":\"3\",\"position\":\"9\",\"type\":\"user.human.phone.changed\","
                       "\"revision\":1,\"createdAt\":\"2024-03-27T10:05:48.581123Z\","
                       "\"creator\":\"u\",\"resourceOwner\":\"o\",\"commandId\":\"c\","
                       "\"lastOfCommand\":false,\"payload\":{\"phone\":\"+41799999999\"}}";
    dom_evt e;
    es_error err;
    json_t *ok = json_loads(base, 0, NULL);
    cr_assert_eq(dom_evt_from_json(ok, &e, &err), ES_OK, "%s", err.text);
    json_decref(ok);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j = json_loads(base, 0, NULL);
        json_t *patch = json_loads(cases[i].patch, 0, NULL);
        cr_assert_not_null(patch, "%s", cases[i].patch);
        json_object_update(j, patch);
        cr_expect_eq(dom_evt_from_json(j, &e, &err), ES_EINVAL, "accepted %s", cases[i].patch);
        cr_expect(strstr(err.text, cases[i].reason) != NULL, "%s: \"%s\" lacks \"%s\"",
                  cases[i].patch, err.text, cases[i].reason);
        cr_expect_eq(e.type, DOM_EVT_UNKNOWN, "a refused event must be cleared");
        json_decref(patch);
        json_decref(j);
    }
    /* Missing required members. */
    static const char *const required[] = { "instanceId", "aggregateType", "aggregateId",
                                            "sequence", "type", "createdAt", "payload" };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        json_t *j = json_loads(base, 0, NULL);
        json_object_del(j, required[i]);
        cr_expect_eq(dom_evt_from_json(j, &e, &err), ES_EINVAL, "accepted without %s",
                     required[i]);
        cr_expect(strstr(err.text, "missing") != NULL, "%s", err.text);
        json_decref(j);
    }
    cr_assert_eq(dom_evt_from_json(NULL, &e, &err), ES_EINVAL);
    json_t *arr = json_array();
    cr_assert_eq(dom_evt_from_json(arr, &e, &err), ES_EINVAL);
    json_decref(arr);
}

Test(event_codec, human_added_phone_must_fit_the_state)
{
    dom_evt e;
    memset(&e, 0, sizeof e);
    e.type = DOM_EVT_HUMAN_ADDED;
    json_t *p = json_pack("{s:s}", "phone", "+41 71 000 00 00 00 00 00 00 00 00 00");
    es_error err;
    cr_assert_eq(dom_evt_payload_from_json(&e, p, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "\"phone\": too long"), "%s", err.text);
    json_decref(p);
    p = json_pack("{s:s, s:b, s:i}", "email", "a@b", "isEmailVerified", 1, "unknownExtra", 3);
    cr_assert_eq(dom_evt_payload_from_json(&e, p, &err), ES_OK, "%s", err.text);
    cr_assert(e.human.is_email_verified);
    json_decref(p);
    p = json_pack("{s:s}", "isEmailVerified", "true");
    cr_assert_eq(dom_evt_payload_from_json(&e, p, &err), ES_EINVAL);
    json_decref(p);
    /* ZITADEL's own events carry the gender as its enum number. */
    p = json_pack("{s:i}", "gender", 2);
    cr_assert_eq(dom_evt_payload_from_json(&e, p, &err), ES_OK, "%s", err.text);
    cr_assert_str_eq(e.human.gender, "GENDER_MALE");
    json_decref(p);
    p = json_pack("{s:i}", "gender", 4);
    cr_assert_eq(dom_evt_payload_from_json(&e, p, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "unknown gender 4"), "%s", err.text);
    json_decref(p);
    p = json_pack("{s:b}", "gender", 1);
    cr_assert_eq(dom_evt_payload_from_json(&e, p, &err), ES_EINVAL);
    json_decref(p);
}

/* --- time ------------------------------------------------------------------ */

static void expect_format(int64_t us, const char *want)
{
    char buf[40];
    dom_time_format(us, buf, sizeof buf);
    cr_expect_str_eq(buf, want, "format(%" PRId64 ")", us);
    if (want[0]) {
        int64_t back = 0;
        cr_expect_eq(dom_time_parse(buf, &back), ES_OK, "parse(%s)", buf);
        cr_expect_eq(back, us, "parse(format(%" PRId64 "))", us);
    }
}

Test(time, format)
{
    expect_format(0, "1970-01-01T00:00:00.000000Z");
    expect_format(1, "1970-01-01T00:00:00.000001Z");
    expect_format(-1, "1969-12-31T23:59:59.999999Z");
    expect_format(-1000000, "1969-12-31T23:59:59.000000Z");
    expect_format(INT64_C(1711533948581000), "2024-03-27T10:05:48.581000Z");
    expect_format(INT64_C(951782400000000), "2000-02-29T00:00:00.000000Z");
    expect_format(INT64_C(1709164800000000), "2024-02-29T00:00:00.000000Z");
    expect_format(INT64_C(1709251199999999), "2024-02-29T23:59:59.999999Z");
    expect_format(INT64_C(-2203977600000000), "1900-02-28T00:00:00.000000Z");
    expect_format(INT64_C(-2203891200000000), "1900-03-01T00:00:00.000000Z");
    expect_format(INT64_C(4107542400000000), "2100-03-01T00:00:00.000000Z");
    expect_format(INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z");
    expect_format(INT64_C(-62135596800000000), "0001-01-01T00:00:00.000000Z");
    expect_format(INT64_C(253402300800000000), "");
    expect_format(INT64_C(-62135596800000001), "");
    expect_format(INT64_MAX, "");
    expect_format(INT64_MIN, "");
    cr_assert_eq(DOM_TIME_MAX_US, INT64_C(253402300799999999));
    cr_assert_eq(DOM_TIME_MIN_US, INT64_C(-62135596800000000));

    /* a buffer too small gets "", never a cut time */
    char small[20] = "x";
    dom_time_format(0, small, sizeof small);
    cr_assert_str_eq(small, "");
    dom_time_format(0, NULL, 0); /* no crash */
}

static void expect_parse(const char *s, int64_t want)
{
    int64_t us = -42;
    cr_expect_eq(dom_time_parse(s, &us), ES_OK, "parse(%s) refused", s);
    cr_expect_eq(us, want, "parse(%s) = %" PRId64 ", want %" PRId64, s, us, want);
}

static void expect_refused(const char *s)
{
    int64_t us = 77;
    cr_expect_eq(dom_time_parse(s, &us), ES_EINVAL, "parse(%s) accepted", s);
    cr_expect_eq(us, 77, "parse(%s) wrote a value", s);
}

Test(time, parse)
{
    expect_parse("1970-01-01T00:00:00Z", 0);
    expect_parse("1970-01-01t00:00:00z", 0);
    expect_parse("1970-01-01T01:00:00+01:00", 0);
    expect_parse("1969-12-31T19:00:00-05:00", 0);
    expect_parse("1970-01-01T05:30:00+05:30", 0);
    expect_parse("1970-01-01T00:00:00-00:00", 0);
    expect_parse("2024-03-27T10:05:48.581Z", INT64_C(1711533948581000));
    expect_parse("2024-03-27T10:05:48.5Z", INT64_C(1711533948500000));
    expect_parse("2024-03-27T10:05:48.581123Z", INT64_C(1711533948581123));
    expect_parse("2024-03-27T10:05:48.581123999Z", INT64_C(1711533948581123)); /* truncated */
    expect_parse("2024-03-27T10:05:48.000000001Z", INT64_C(1711533948000000));
    expect_parse("1969-12-31T23:59:59.999999Z", -1);
    expect_parse("2000-02-29T00:00:00Z", INT64_C(951782400000000));
    expect_parse("2024-02-29T12:00:00Z", INT64_C(1709208000000000));
    expect_parse("0001-01-01T00:00:00Z", INT64_C(-62135596800000000));
    expect_parse("9999-12-31T23:59:59.999999Z", INT64_C(253402300799999999));
    expect_parse("9999-12-31T23:59:59.999999+00:01", INT64_C(253402300739999999));
    expect_parse("0001-01-01T00:59:00+00:59", INT64_C(-62135596800000000));

    expect_refused("");
    expect_refused("2024-03-27");
    expect_refused("2024-03-27T10:05:48");           /* no zone */
    expect_refused("2024-03-27 10:05:48Z");          /* space */
    expect_refused("2024-03-27T10:05:48.Z");         /* no fraction digits */
    expect_refused("2024-03-27T10:05:48.1234567890Z"); /* 10 digits */
    expect_refused("2024-03-27T10:05:48ZZ");
    expect_refused("2024-03-27T10:05:48Z ");
    expect_refused("2024-3-27T10:05:48Z");
    expect_refused("24-03-27T10:05:48Z");
    expect_refused("2024-00-27T10:05:48Z");
    expect_refused("2024-13-27T10:05:48Z");
    expect_refused("2024-03-00T10:05:48Z");
    expect_refused("2024-04-31T10:05:48Z");
    expect_refused("2023-02-29T00:00:00Z");
    expect_refused("1900-02-29T00:00:00Z");
    expect_refused("2024-03-27T24:00:00Z");
    expect_refused("2024-03-27T10:60:00Z");
    expect_refused("2016-12-31T23:59:60Z");          /* leap second */
    expect_refused("2024-03-27T10:05:48+24:00");
    expect_refused("2024-03-27T10:05:48+01:60");
    expect_refused("2024-03-27T10:05:48+0100");
    expect_refused("2024-03-27T10:05:48+01");
    expect_refused("0000-12-31T23:59:59Z");
    expect_refused("9999-12-31T23:59:59-00:01");     /* beyond 9999 */
    expect_refused("0001-01-01T00:00:00+00:01");     /* before year 1 */
    expect_refused("+2024-03-27T10:05:48Z");
    expect_refused("2024-03-27T10:05:4aZ");
    cr_assert_eq(dom_time_parse(NULL, &(int64_t){ 0 }), ES_EINVAL);
}

Test(time, round_trip_sweep)
{
    /* Steps that are not multiples of days or seconds walk every field. */
    const int64_t step = INT64_C(86399999937) * 7;
    int n = 0;
    for (int64_t us = DOM_TIME_MIN_US; us <= DOM_TIME_MAX_US - step; us += step, n++) {
        char buf[40];
        int64_t back;
        dom_time_format(us, buf, sizeof buf);
        cr_assert_eq(dom_time_parse(buf, &back), ES_OK, "%s", buf);
        cr_assert_eq(back, us, "%s", buf);
    }
    cr_assert_gt(n, 100000);
}

/* --- errors ---------------------------------------------------------------- */

Test(errors, catalogue_is_complete_and_consistent)
{
    for (int r = DOM_REJ_NONE + 1; r < DOM_REJ__COUNT; r++) {
        const dom_rej_info *row = dom_rej_lookup(r);
        cr_assert_not_null(row);
        cr_expect(row->id && row->id[0], "rejection %d has no id", r);
        cr_expect(row->message && row->message[0], "rejection %d has no text", r);
        cr_expect_neq(row->grpc_code, 0, "rejection %d has code 0", r);
        cr_expect_eq(row->http_status, dom_grpc_http_status(row->grpc_code),
                     "rejection %d (%s): http %d for code %d", r, row->id, row->http_status,
                     row->grpc_code);
        cr_expect_neq(strcmp(row->id, "FACTORD-Rej00"), 0, "rejection %d not in the table", r);
    }
    cr_assert_eq(dom_rej_lookup(DOM_REJ_NONE)->grpc_code, 0);
    cr_assert_str_eq(dom_rej_lookup(DOM_REJ__COUNT)->id, "FACTORD-Rej00");
    cr_assert_str_eq(dom_rej_lookup((dom_rej)-1)->id, "FACTORD-Rej00");
    cr_assert_eq(dom_rej_lookup(DOM_REJ__COUNT)->http_status, 500);
}

Test(errors, factord_rows)
{
    const dom_rej_info *r = dom_rej_lookup(DOM_REJ_COMMAND_ID_REUSED);
    cr_assert_eq(r->grpc_code, 3);
    cr_assert_str_eq(r->id, "FACTORD-Idem1");
    cr_assert_str_eq(r->message, "Command id already used with different content");
    r = dom_rej_lookup(DOM_REJ_COMMAND_MALFORMED);
    cr_assert_eq(r->grpc_code, 3);
    cr_assert_str_eq(r->id, "FACTORD-Dec01");
    cr_assert_str_eq(r->message, "Command is malformed");
}

Test(errors, grpc_gateway_mapping)
{
    static const int want[][2] = {
        { 0, 200 }, { 1, 499 }, { 2, 500 }, { 3, 400 }, { 4, 504 }, { 5, 404 },
        { 6, 409 }, { 7, 403 }, { 8, 429 }, { 9, 400 }, { 10, 409 }, { 11, 400 },
        { 12, 501 }, { 13, 500 }, { 14, 503 }, { 15, 500 }, { 16, 401 }, { 17, 500 },
        { -1, 500 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_expect_eq(dom_grpc_http_status(want[i][0]), want[i][1], "code %d", want[i][0]);
}

Test(errors, status_bodies)
{
    json_t *b = dom_status_body(16, "AUTH-7fs1e", "invalid auth header");
    char *s = json_dumps(b, JSON_COMPACT);
    cr_assert_str_eq(s, "{\"code\":16,\"message\":\"invalid auth header (AUTH-7fs1e)\","
                        "\"details\":[{\"@type\":\"type.googleapis.com/zitadel.v1.ErrorDetail\","
                        "\"id\":\"AUTH-7fs1e\",\"message\":\"invalid auth header\"}]}");
    free(s);
    json_decref(b);

    /* No id: the message stands alone (e.g. "auth header missing"). */
    b = dom_status_body(16, NULL, "auth header missing");
    cr_assert_str_eq(json_string_value(json_object_get(b, "message")), "auth header missing");
    json_decref(b);

    /* A detail is appended to the text, in both places. */
    b = dom_rej_body(DOM_REJ_COMMAND_MALFORMED, "not JSON");
    cr_assert_str_eq(json_string_value(json_object_get(b, "message")),
                     "Command is malformed: not JSON (FACTORD-Dec01)");
    cr_assert_str_eq(json_string_value(json_object_get(
                         json_array_get(json_object_get(b, "details"), 0), "message")),
                     "Command is malformed: not JSON");
    json_decref(b);
    b = dom_rej_body(DOM_REJ_PHONE_INVALID, "");
    cr_assert_str_eq(json_string_value(json_object_get(b, "message")),
                     "Phone is invalid (PHONE-so0wa)");
    json_decref(b);

    /* Invalid UTF-8 in a detail (e.g. a cut reason) never breaks the body. */
    b = dom_rej_body(DOM_REJ_COMMAND_MALFORMED, "bad \xff\xfe byte, cut \xe2\x82");
    cr_assert_not_null(b);
    cr_assert_str_eq(json_string_value(json_object_get(b, "message")),
                     "Command is malformed: bad ?? byte, cut ?? (FACTORD-Dec01)");
    json_decref(b);
    b = dom_rej_body(DOM_REJ_COMMAND_MALFORMED, "overlong \xc0\xaf surrogate \xed\xa0\x80 ok \xc3\xa9");
    cr_assert_str_eq(json_string_value(json_object_get(b, "message")),
                     "Command is malformed: overlong ?? surrogate ??? ok \xc3\xa9 (FACTORD-Dec01)");
    json_decref(b);

    /* A very long detail is cut, still valid. */
    char longer[4000];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    b = dom_rej_body(DOM_REJ_COMMAND_MALFORMED, longer);
    cr_assert_not_null(b);
    cr_assert_lt(strlen(json_string_value(json_object_get(b, "message"))), 1200);
    json_decref(b);
}

Test(errors, es_error_set)
{
    es_error err;
    strcpy(err.sqlstate, "40001");
    cr_assert_eq(es_error_set(&err, ES_ECONFLICT, "retry %d", 3), ES_ECONFLICT);
    cr_assert_str_eq(err.text, "retry 3");
    cr_assert_str_eq(err.sqlstate, "");
    cr_assert_eq(es_error_set(NULL, ES_EINVAL, "x"), ES_EINVAL);
    cr_assert_str_eq(es_result_name(ES_OK), "ok");
    cr_assert_str_eq(es_result_name(ES_EINVAL), "invalid");
    cr_assert_str_eq(es_result_name(ES_ECONFLICT), "conflict");
    cr_assert_str_eq(es_result_name(ES_ETRANSIENT), "transient");
    cr_assert_str_eq(es_result_name(ES_EFATAL), "fatal");
    cr_assert_str_eq(es_result_name((es_result)99), "unknown");
}

/* --- dom_evt_decode: the fast path against jansson ---------------------------- */

/* What jansson and dom_evt_from_json make of text: rc, and evt when OK. */
static es_result full_path(const char *text, size_t len, dom_evt *evt)
{
    es_error err = {0};
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!j) {
        memset(evt, 0, sizeof *evt);
        return ES_EINVAL;
    }
    es_result rc = dom_evt_from_json(j, evt, &err);
    json_decref(j);
    return rc;
}

/* dom_evt_decode must agree with the full path on text, byte for byte. */
static void agree(const char *text, size_t len, const char *what)
{
    dom_evt a, b;
    es_error err = {0};
    memset(&a, 0x5a, sizeof a);
    memset(&b, 0xa5, sizeof b);
    es_result ra = dom_evt_decode(text, len, &a, &err);
    es_result rb = full_path(text, len, &b);
    cr_assert_eq(ra == ES_OK, rb == ES_OK, "%s: decode %d, jansson %d: %.*s", what, ra, rb, (int)len, text);
    if (ra == ES_OK)
        cr_assert(memcmp(&a, &b, sizeof a) == 0, "%s: the events differ: %.*s", what, (int)len, text);
    dom_evt c;
    memset(&c, 0x3c, sizeof c);
    if (dom_evt_decode_plain(text, len, &c)) {
        cr_assert_eq(rb, ES_OK, "%s: the fast path took what jansson refuses: %.*s", what, (int)len, text);
        cr_assert(memcmp(&c, &b, sizeof c) == 0, "%s: the fast path's event differs: %.*s", what, (int)len,
                  text);
    }
}

/* The shapes the relay publishes (plain ASCII), and every event type. */
static char *plain_event_text(dom_evt_type type)
{
    dom_evt e = sample_event(type);
    if (type == DOM_EVT_HUMAN_ADDED) { /* ASCII only, so the fast path takes it */
        strcpy(e.human.user_name, "zoe");
        strcpy(e.human.first_name, "Zoe");
        strcpy(e.human.last_name, "Quote");
        strcpy(e.human.display_name, "Zoe Q");
    }
    if (type == DOM_EVT_REMOVED)
        strcpy(e.user_name, "zoe");
    json_t *j = dom_evt_to_json(&e);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return text;
}

Test(event_decode, agrees_with_jansson_on_every_type)
{
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        char *text = plain_event_text((dom_evt_type)t);
        dom_evt e;
        es_error err = {0};
        cr_assert_eq(dom_evt_decode(text, strlen(text), &e, &err), ES_OK, "%s: %s", err.text, text);
        cr_assert(dom_evt_decode_plain(text, strlen(text), &e), "the relay's shape takes the fast path: %s", text);
        agree(text, strlen(text), "plain");
        /* the non-ASCII sample takes the full path, to the same event */
        dom_evt s = sample_event((dom_evt_type)t);
        json_t *j = dom_evt_to_json(&s);
        char *full = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        agree(full, strlen(full), "indented, non-ASCII");
        free(full);
        free(text);
    }
}

Test(event_decode, refuses_what_jansson_refuses)
{
    static const char *const cases[] = {
        "", "{", "[]", "null", "{}", "{\"type\":\"user.human.otp.sms.added\"}",
        "{\"a\":1,\"a\":2}", " {\"x\":true} junk",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dom_evt e;
        es_error err = {0};
        cr_assert_neq(dom_evt_decode(cases[i], strlen(cases[i]), &e, &err), ES_OK, "case %zu", i);
        agree(cases[i], strlen(cases[i]), "refused");
    }
    dom_evt e;
    es_error err = {0};
    cr_assert_neq(dom_evt_decode(NULL, 0, &e, &err), ES_OK);
}

/* Thousands of small corruptions of valid events (a byte deleted, doubled
 * or replaced by one of JSON's special characters, whitespace inserted):
 * whatever the fast path accepts, jansson accepts the same way. */
Test(event_decode, agrees_with_jansson_on_mutations)
{
    static const char repl[] = {'"', '\\', '{', '}', '[', ',', ':', '0', '1', '-', '.', 'e', 'a', ' ',
                                '\n', '\x01', '\x7f', (char)0xc3, 't', 'n', 'f', '\0'};
    unsigned seed = 20261125;
    size_t tried = 0, accepted = 0;
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        char *text = plain_event_text((dom_evt_type)t);
        size_t n = strlen(text);
        char *buf = malloc(n + 2);
        for (size_t pos = 0; pos < n; pos++) {
            for (int kind = 0; kind < 4; kind++) {
                size_t len = n;
                memcpy(buf, text, n);
                seed = seed * 1103515245u + 12345u;
                char c = repl[(seed >> 16) % sizeof repl];
                if (kind == 0) { /* delete */
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    len = n - 1;
                } else if (kind == 1) { /* double */
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    len = n + 1;
                } else if (kind == 2) { /* replace */
                    buf[pos] = c;
                } else { /* insert */
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = c;
                    len = n + 1;
                }
                dom_evt e;
                if (dom_evt_decode_plain(buf, len, &e))
                    accepted++;
                agree(buf, len, "mutation");
                tried++;
            }
        }
        free(buf);
        free(text);
    }
    cr_log_info("%zu mutations, %zu taken by the fast path", tried, accepted);
    cr_assert_gt(accepted, 0, "some mutations (whitespace, digits) keep a plain event");
}
