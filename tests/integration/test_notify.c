/*
 * tests/integration/test_notify.c - the OTP-SMS factor at sign-in, end to
 * end: the processor, relay, projector and notifier as child processes on
 * the real servers, and a stand-in SMS provider (sms_fake) in the test.
 *
 * What must hold (issue 15, docs/notifier.md): a challenge's code reaches
 * the provider and checks once; wrong codes lock the user at the lockout
 * policy's limit; a provider that fails for a while gets the code on a
 * later try with the same idempotency key; a provider that refuses (400)
 * gets one request and the refusal is an event; a notifier that crashes
 * after its row says sent does not send again; bad input gets ZITADEL's
 * errors.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infra/base/clock.h"
#include "tests/integration/harness.h"
#include "tests/integration/sms_fake.h"

#define OWNER "org-1"
#define PHONE "+41791234567"

typedef struct {
    h_env e;
    sms_fake *fake;
    char token_file[256];
    char url_env[600], token_env[320];
    pid_t proc, relay, project, notify;
} rig;

static const char *const notify_env_base[] = {
    "FACTORD_SMS_PROVIDER=twilio", "FACTORD_SMS_TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001",
    "FACTORD_SMS_TWILIO_FROM=+15005550006", "FACTORD_NOTIFY_RETRY_FIRST_MS=50", "FACTORD_NOTIFY_RETRY_MAX_MS=200",
    "FACTORD_SMS_TIMEOUT_MS=2000",
};

static pid_t spawn_notify(rig *r, const char *extra)
{
    const char *env[16];
    size_t n = 0;
    for (size_t i = 0; i < sizeof notify_env_base / sizeof notify_env_base[0]; i++)
        env[n++] = notify_env_base[i];
    env[n++] = r->url_env;
    env[n++] = r->token_env;
    if (extra)
        env[n++] = extra;
    env[n] = NULL;
    return h_spawn(&r->e, "notify", env);
}

static void rig_start(rig *r, const char *name, const char *process_extra, const char *notify_extra)
{
    memset(r, 0, sizeof *r);
    h_env_init(&r->e, name);
    r->fake = sms_fake_start();
    cr_assert_not_null(r->fake, "the stand-in SMS provider did not start");
    snprintf(r->token_file, sizeof r->token_file, "/tmp/factord-test-%s-twilio-token", r->e.instance);
    FILE *f = fopen(r->token_file, "w");
    cr_assert_not_null(f);
    fputs("test-auth-token\n", f);
    fclose(f);
    char *url = sms_fake_url(r->fake, "");
    snprintf(r->url_env, sizeof r->url_env, "FACTORD_SMS_TWILIO_URL=%s", url);
    free(url);
    snprintf(r->token_env, sizeof r->token_env, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE=%s", r->token_file);
    const char *penv[] = {process_extra, NULL};
    r->proc = h_spawn(&r->e, "process", process_extra ? penv : NULL);
    r->relay = h_spawn(&r->e, "relay", NULL);
    r->project = h_spawn(&r->e, "project", NULL);
    r->notify = spawn_notify(r, notify_extra);
}

static void rig_stop(rig *r)
{
    pid_t *pids[] = {&r->notify, &r->project, &r->relay, &r->proc};
    for (size_t i = 0; i < sizeof pids / sizeof pids[0]; i++)
        if (*pids[i] > 0)
            cr_expect_eq(h_stop(*pids[i], false), 0, "a component did not stop cleanly (see %s)", r->e.log_path);
    sms_fake_stop(r->fake);
    if (r->token_file[0])
        unlink(r->token_file);
    h_env_done(&r->e);
}

static void send_cmd(rig *r, const char *type, const char *user, json_t *payload, char *id)
{
    char *c = h_command(&r->e, type, user, OWNER, payload, id);
    h_produce(&r->e, r->e.commands, user, c, strlen(c));
    free(c);
}

/* The reply to command id: {"httpStatus", "body"} as JSON (new reference). */
static json_t *wait_reply(rig *r, const char *id)
{
    int64_t end = es_clock_mono_ms() + 60000;
    while (es_clock_mono_ms() < end) {
        json_t *all = h_read_topic(&r->e, r->e.replies, 100000, 1500);
        json_t *rec = h_find_reply(all, id);
        if (rec) {
            json_t *reply = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
            json_decref(all);
            cr_assert_not_null(reply);
            return reply;
        }
        json_decref(all);
    }
    cr_assert_fail("no reply for command %s", id);
    return NULL;
}

/* Send a command and wait for its reply; its error id ("" for a success). */
static char *run_cmd(rig *r, const char *type, const char *user, json_t *payload, int *http)
{
    char id[37];
    send_cmd(r, type, user, payload, id);
    json_t *reply = wait_reply(r, id);
    if (http)
        *http = (int)json_integer_value(json_object_get(reply, "httpStatus"));
    json_t *details = json_object_get(json_object_get(reply, "body"), "details");
    const char *err_id = json_is_array(details)
                             ? json_string_value(json_object_get(json_array_get(details, 0), "id"))
                             : "";
    char *out = strdup(err_id ? err_id : "");
    json_decref(reply);
    return out;
}

static void expect_cmd(rig *r, const char *type, const char *user, json_t *payload, const char *want_id)
{
    int http = 0;
    char *got = run_cmd(r, type, user, payload, &http);
    cr_assert_str_eq(got, want_id, "%s for %s: got \"%s\" (HTTP %d), want \"%s\"", type, user, got, http,
                     want_id);
    if (want_id[0] == '\0')
        cr_assert_eq(http, 200);
    free(got);
}

static long sql_count(rig *r, const char *sql, const char *user)
{
    const char *p[] = {r->e.instance, user};
    return h_sql_long(&r->e, sql, 2, p);
}

static long events_of(rig *r, const char *user, const char *type)
{
    const char *p[] = {r->e.instance, user, type};
    return h_sql_long(&r->e,
                      "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2 AND type = $3",
                      3, p);
}

static long wait_events_of(rig *r, const char *user, const char *type, long n)
{
    int64_t end = es_clock_mono_ms() + 60000;
    long got;
    while ((got = events_of(r, user, type)) < n && es_clock_mono_ms() < end)
        es_sleep_ms(100);
    return got;
}

/* A user with a verified phone and the OTP-SMS factor. */
static void ready_user(rig *r, const char *user)
{
    expect_cmd(r, "ImportHumanUser", user, h_import_payload(user, PHONE, true), "");
    expect_cmd(r, "AddMyAuthFactorOTPSMS", user, NULL, "");
}

/* The digits of the Body parameter of a Twilio-shaped request. */
static void code_of(const sms_fake_req *q, char *code, size_t len)
{
    const char *b = strstr(q->body, "Body=");
    cr_assert_not_null(b, "no Body in %s", q->body);
    b += 5;
    while (*b && !isdigit((unsigned char)*b) && *b != '&')
        b++;
    size_t n = 0;
    while (isdigit((unsigned char)b[n]) && n + 1 < len) {
        code[n] = b[n];
        n++;
    }
    code[n] = '\0';
    cr_assert_eq(n, 8, "an 8-digit code in the message, got \"%s\" in %s", code, q->body);
}

static json_t *code_payload(const char *code)
{
    return json_pack("{s:s}", "code", code);
}

Test(notify, challenge_sms_check_succeeds_once, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-happy", NULL, NULL);
    ready_user(&r, "u1");

    expect_cmd(&r, "ChallengeOTPSMS", "u1", NULL, "");
    cr_assert(sms_fake_wait(r.fake, 1, 60000), "the provider got no request (see %s)", r.e.log_path);
    sms_fake_req q;
    cr_assert(sms_fake_get(r.fake, 0, &q));
    cr_assert_str_eq(q.method, "POST");
    cr_assert_str_eq(q.path, "/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json");
    cr_assert(strstr(q.body, "To=%2B41791234567") != NULL, "the verified number: %s", q.body);
    cr_assert_neq(q.idempotency_key[0], '\0', "an idempotency key per code event");
    char code[16];
    code_of(&q, code, sizeof code);
    free(q.body);

    /* The delivery is recorded as an event of the user. */
    cr_assert_eq(wait_events_of(&r, "u1", "user.human.otp.sms.code.sent", 1), 1);
    cr_assert_eq(sql_count(&r,
                           "SELECT count(*) FROM factord.code_deliveries WHERE instance_id = $1 AND user_id = $2"
                           " AND state = 'sent' AND recorded AND attempts = 1",
                           "u1"),
                 1);

    /* A wrong code first: it fails and counts; the right one then succeeds. */
    char wrong[16];
    snprintf(wrong, sizeof wrong, "%08d", (atoi(code) + 1) % 100000000);
    expect_cmd(&r, "CheckOTPSMS", "u1", code_payload(wrong), "CODE-woT0xc");
    expect_cmd(&r, "CheckOTPSMS", "u1", code_payload(code), "");
    cr_assert_eq(events_of(&r, "u1", "user.human.otp.sms.check.succeeded"), 1);
    /* The code is spent. */
    expect_cmd(&r, "CheckOTPSMS", "u1", code_payload(code), "COMMAND-S34gh");
    cr_assert_eq(sms_fake_count(r.fake), 1, "one code, one SMS");
    rig_stop(&r);
}

Test(notify, wrong_codes_lock_the_user, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-lock", "FACTORD_LOCKOUT_MAX_OTP_ATTEMPTS=3", NULL);
    ready_user(&r, "u2");
    expect_cmd(&r, "ChallengeOTPSMS", "u2", NULL, "");
    cr_assert(sms_fake_wait(r.fake, 1, 60000));
    sms_fake_req q;
    cr_assert(sms_fake_get(r.fake, 0, &q));
    char code[16];
    code_of(&q, code, sizeof code);
    free(q.body);
    char wrong[16];
    snprintf(wrong, sizeof wrong, "%08d", (atoi(code) + 7) % 100000000);

    expect_cmd(&r, "CheckOTPSMS", "u2", code_payload(wrong), "CODE-woT0xc");
    expect_cmd(&r, "CheckOTPSMS", "u2", code_payload("not-a-code"), "CODE-woT0xc");
    cr_assert_eq(sql_count(&r, "SELECT count(*) FROM factord.users WHERE instance_id = $1 AND user_id = $2"
                               " AND status = 'active' AND otp_failed = 2", "u2"),
                 1);
    expect_cmd(&r, "CheckOTPSMS", "u2", code_payload(wrong), "CODE-woT0xc"); /* the third: locks */
    cr_assert_eq(events_of(&r, "u2", "user.locked"), 1);
    /* Locked: even the right code is refused, and no new code is sent. */
    expect_cmd(&r, "CheckOTPSMS", "u2", code_payload(code), "COMMAND-S6h4R");
    expect_cmd(&r, "ChallengeOTPSMS", "u2", NULL, "AUTH-SF3gb");
    /* An administrator unlocks: the failures are forgiven, the code works. */
    expect_cmd(&r, "UnlockUser", "u2", NULL, "");
    expect_cmd(&r, "CheckOTPSMS", "u2", code_payload(code), "");
    cr_assert_eq(sms_fake_count(r.fake), 1);
    rig_stop(&r);
}

Test(notify, provider_down_then_delivered_with_one_key, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-retry", NULL, NULL);
    sms_fake_push(r.fake, 500, "{\"message\":\"upstream\"}", NULL, 2);
    sms_fake_push(r.fake, 429, "{\"code\":20429,\"message\":\"Too Many Requests\"}", "0", 1);
    ready_user(&r, "u3");
    expect_cmd(&r, "ChallengeOTPSMS", "u3", NULL, "");
    cr_assert_eq(wait_events_of(&r, "u3", "user.human.otp.sms.code.sent", 1), 1, "delivered in the end (see %s)",
                 r.e.log_path);
    cr_assert_eq(sms_fake_count(r.fake), 4, "three failures, then the delivery");
    sms_fake_req first, q;
    cr_assert(sms_fake_get(r.fake, 0, &first));
    for (size_t i = 1; i < 4; i++) {
        cr_assert(sms_fake_get(r.fake, i, &q));
        cr_assert_str_eq(q.idempotency_key, first.idempotency_key, "every try of one code carries one key");
        free(q.body);
    }
    free(first.body);
    cr_assert_eq(sql_count(&r, "SELECT attempts FROM factord.code_deliveries WHERE instance_id = $1"
                               " AND user_id = $2", "u3"),
                 4);
    rig_stop(&r);
}

Test(notify, provider_refusal_is_an_event_and_no_storm, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-400", NULL, NULL);
    sms_fake_push(r.fake, 400,
                  "{\"code\":21211,\"message\":\"The 'To' number is not a valid phone number.\",\"status\":400}",
                  NULL, 1);
    ready_user(&r, "u4");
    expect_cmd(&r, "ChallengeOTPSMS", "u4", NULL, "");
    cr_assert_eq(wait_events_of(&r, "u4", "user.human.otp.sms.code.send.failed", 1), 1, "see %s", r.e.log_path);
    es_sleep_ms(1500); /* room for a retry that must not come */
    cr_assert_eq(sms_fake_count(r.fake), 1, "a permanent refusal is not retried");
    cr_assert_eq(events_of(&r, "u4", "user.human.otp.sms.code.sent"), 0);
    /* The reason may quote the number: it is sealed (docs/pii.md), and
     * reads back in clear through the store. */
    cr_assert_eq(sql_count(&r, "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2"
                               " AND type = 'user.human.otp.sms.code.send.failed'"
                               " AND payload ? 'pii' AND NOT payload ? 'reason'", "u4"),
                 1, "the reason is sealed");
    es_store *st = h_store(&r.e);
    dom_evt *evts = NULL;
    size_t n = 0, found = 0;
    es_error err = {0};
    cr_assert_eq(es_store_user_events(st, r.e.instance, "u4", &evts, &n, &err), ES_OK, "%s", err.text);
    for (size_t i = 0; i < n; i++)
        if (evts[i].type == DOM_EVT_OTP_SMS_CODE_SEND_FAILED && strstr(evts[i].delivery.reason, "21211"))
            found++;
    free(evts);
    es_store_free(st);
    cr_assert_eq(found, 1, "the provider's error code is in the event");
    rig_stop(&r);
}

Test(notify, a_crash_after_the_row_says_sent_sends_nothing_again, .timeout = 240)
{
    rig r;
    /* The first notifier dies between its row (sent) and its record. */
    rig_start(&r, "notify-crash", NULL, "FACTORD_FAILPOINT=notify.before_record");
    ready_user(&r, "u5");
    expect_cmd(&r, "ChallengeOTPSMS", "u5", NULL, "");
    cr_assert(sms_fake_wait(r.fake, 1, 60000));
    cr_assert_eq(h_wait(r.notify, 30000), -9, "the failpoint kills the notifier");
    cr_assert_eq(events_of(&r, "u5", "user.human.otp.sms.code.sent"), 0, "not recorded yet");

    r.notify = spawn_notify(&r, NULL);
    cr_assert_eq(wait_events_of(&r, "u5", "user.human.otp.sms.code.sent", 1), 1, "the restart records it");
    es_sleep_ms(1000);
    cr_assert_eq(sms_fake_count(r.fake), 1, "and sends nothing again");
    rig_stop(&r);
}

Test(notify, bad_input_gets_zitadels_errors, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-bad", NULL, NULL);
    expect_cmd(&r, "ImportHumanUser", "u6", h_import_payload("u6", PHONE, true), "");
    /* No factor yet: no challenge, no check. */
    expect_cmd(&r, "ChallengeOTPSMS", "u6", NULL, "COMMAND-SFD52");
    expect_cmd(&r, "CheckOTPSMS", "u6", code_payload("12345678"), "COMMAND-d2r52");
    /* Unknown user. */
    expect_cmd(&r, "ChallengeOTPSMS", "u-nobody", NULL, "COMMAND-SFD52");
    expect_cmd(&r, "CheckOTPSMS", "u-nobody", code_payload("12345678"), "COMMAND-d2r52");
    /* The factor, but no challenge yet; then an empty code. */
    expect_cmd(&r, "AddMyAuthFactorOTPSMS", "u6", NULL, "");
    expect_cmd(&r, "CheckOTPSMS", "u6", code_payload("12345678"), "COMMAND-S34gh");
    expect_cmd(&r, "CheckOTPSMS", "u6", code_payload(""), "COMMAND-SJl2g");
    /* A check without its code field is malformed: a clear reply, no event. */
    long before = sql_count(&r, "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2",
                            "u6");
    expect_cmd(&r, "CheckOTPSMS", "u6", json_object(), "FACTORD-Dec01");
    cr_assert_eq(sql_count(&r, "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2",
                           "u6"),
                 before);
    cr_assert_eq(sms_fake_count(r.fake), 0, "nothing was ever sent");
    rig_stop(&r);
}

/* The digits after "Body=" of a request, any length (phone codes have 6). */
static void phone_code_of(const sms_fake_req *q, char *code, size_t len)
{
    const char *b = strstr(q->body, "Body=");
    cr_assert_not_null(b, "no Body in %s", q->body);
    b += 5;
    size_t n = 0;
    while (isdigit((unsigned char)b[n]) && n + 1 < len) {
        code[n] = b[n];
        n++;
    }
    code[n] = '\0';
    cr_assert_eq(n, 6, "the message starts with the 6-digit code: %s", q->body);
}

Test(notify, phone_codes_are_sent_to_the_new_number_and_verify, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-phone", NULL, NULL);
    expect_cmd(&r, "ImportHumanUser", "u7", h_import_payload("u7", PHONE, true), "");
    expect_cmd(&r, "SetMyPhone", "u7", json_pack("{s:s}", "phone", "+41 79 765 43 21"), "");
    cr_assert(sms_fake_wait(r.fake, 1, 60000), "see %s", r.e.log_path);
    sms_fake_req q;
    cr_assert(sms_fake_get(r.fake, 0, &q));
    cr_assert(strstr(q.body, "To=%2B41797654321") != NULL, "a phone code goes to the new number: %s", q.body);
    char first[16];
    phone_code_of(&q, first, sizeof first);
    free(q.body);
    cr_assert_eq(wait_events_of(&r, "u7", "user.human.phone.code.sent", 1), 1);

    /* A resend: a new code, a second SMS; the first code no longer works. */
    expect_cmd(&r, "ResendMyPhoneVerification", "u7", NULL, "");
    cr_assert(sms_fake_wait(r.fake, 2, 60000));
    cr_assert(sms_fake_get(r.fake, 1, &q));
    char second[16];
    phone_code_of(&q, second, sizeof second);
    free(q.body);
    if (strcmp(first, second) != 0)
        expect_cmd(&r, "VerifyMyPhone", "u7", code_payload(first), "COMMAND-sM0cs");
    expect_cmd(&r, "VerifyMyPhone", "u7", code_payload(second), "");
    expect_cmd(&r, "ResendMyPhoneVerification", "u7", NULL, "COMMAND-2M9sf");
    cr_assert_eq(wait_events_of(&r, "u7", "user.human.phone.code.sent", 2), 2);
    cr_assert_eq(sms_fake_count(r.fake), 2);
    rig_stop(&r);
}

Test(notify, a_crash_before_the_row_says_sent_sends_once_more_with_the_same_key, .timeout = 240)
{
    rig r;
    rig_start(&r, "notify-crash2", NULL, "FACTORD_FAILPOINT=notify.after_send");
    ready_user(&r, "u8");
    expect_cmd(&r, "ChallengeOTPSMS", "u8", NULL, "");
    cr_assert(sms_fake_wait(r.fake, 1, 60000));
    cr_assert_eq(h_wait(r.notify, 30000), -9, "the failpoint kills the notifier");
    r.notify = spawn_notify(&r, NULL);
    cr_assert_eq(wait_events_of(&r, "u8", "user.human.otp.sms.code.sent", 1), 1, "see %s", r.e.log_path);
    /* The documented duplicate: the answer was not written, so it is sent
     * again, with the key a provider can drop it by. */
    cr_assert_eq(sms_fake_count(r.fake), 2);
    sms_fake_req a, b;
    cr_assert(sms_fake_get(r.fake, 0, &a));
    cr_assert(sms_fake_get(r.fake, 1, &b));
    cr_assert_str_eq(a.idempotency_key, b.idempotency_key);
    cr_assert_str_eq(a.body, b.body, "the same code, the same text");
    free(a.body);
    free(b.body);
    rig_stop(&r);
}

Test(notify, the_webhook_provider_gets_zitadels_shape, .timeout = 240)
{
    rig r;
    memset(&r, 0, sizeof r);
    h_env_init(&r.e, "notify-webhook");
    r.fake = sms_fake_start();
    cr_assert_not_null(r.fake);
    sms_fake_set_default(r.fake, 200, "{}");
    char *url = sms_fake_url(r.fake, "/sms-hook");
    char url_env[600];
    snprintf(url_env, sizeof url_env, "FACTORD_SMS_WEBHOOK_URL=%s", url);
    free(url);
    const char *env[] = {"FACTORD_SMS_PROVIDER=webhook", url_env, "FACTORD_SMS_SENDER=+15005550006", NULL};
    r.proc = h_spawn(&r.e, "process", NULL);
    r.relay = h_spawn(&r.e, "relay", NULL);
    r.project = h_spawn(&r.e, "project", NULL);
    r.notify = h_spawn(&r.e, "notify", env);
    ready_user(&r, "u9");
    expect_cmd(&r, "ChallengeOTPSMS", "u9", NULL, "");
    cr_assert(sms_fake_wait(r.fake, 1, 60000), "see %s", r.e.log_path);
    sms_fake_req q;
    cr_assert(sms_fake_get(r.fake, 0, &q));
    cr_assert_str_eq(q.path, "/sms-hook");
    json_t *j = json_loads(q.body, 0, NULL);
    cr_assert_not_null(j, "JSON body: %s", q.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "recipientPhoneNumber")),
                     PHONE);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "eventType")),
                     "user.human.otp.sms.code.added");
    const char *text = json_string_value(json_object_get(json_object_get(j, "templateData"), "text"));
    cr_assert(text && strstr(text, "is your one-time password"), "the rendered text: %s", q.body);
    json_decref(j);
    free(q.body);
    cr_assert_eq(wait_events_of(&r, "u9", "user.human.otp.sms.code.sent", 1), 1);
    r.token_file[0] = '\0';
    rig_stop(&r);
}
