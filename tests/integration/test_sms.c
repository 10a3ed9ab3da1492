/*
 * tests/integration/test_sms.c - the SMS providers (infra/sms) against the
 * stand-in provider of sms_fake.c: the exact requests Twilio and a webhook
 * get, how each answer (201, 500, 429 with Retry-After, a Twilio error, no
 * server, a server that never answers) becomes an outcome, and that bad
 * settings are refused naming the setting. Needs no PostgreSQL or Kafka.
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "infra/base/config.h"
#include "infra/base/log.h"
#include "infra/sms/sms.h"
#include "sms_fake.h"

#define TOKEN "tok3n-s3cret-value"
#define SID "AC0123456789abcdef0123456789abcdef"

static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (const char *const *e = fake_env; e && *e; e += 2)
        if (strcmp(e[0], name) == 0)
            return e[1];
    return NULL;
}

/* The configuration the given NAME, value, ... pairs (NULL-terminated) make, defaults otherwise. */
static es_config config_of(const char *const *env)
{
    fake_env = env;
    es_config cfg;
    es_error err = {0};
    cr_assert_eq(es_config_load(&cfg, fake_getenv, &err), ES_OK, "%s", err.text);
    return cfg;
}

static char token_file[64];

static void write_token_file(void)
{
    snprintf(token_file, sizeof token_file, "/tmp/factord-sms-token-XXXXXX");
    int fd = mkstemp(token_file);
    cr_assert(fd >= 0);
    const char text[] = TOKEN "\n";
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
}

static sms_fake *fake;
static es_sms_provider *prov;
static char *url;

static void twilio_with(const char *base, const char *from, const char *timeout_ms)
{
    write_token_file();
    const char *env[] = {"FACTORD_SMS_PROVIDER", "twilio", "FACTORD_SMS_TWILIO_URL", base,
                         "FACTORD_SMS_TWILIO_ACCOUNT_SID", SID, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE", token_file,
                         "FACTORD_SMS_TWILIO_FROM", from, "FACTORD_SMS_TIMEOUT_MS", timeout_ms, NULL};
    es_config cfg = config_of(env);
    es_error err = {0};
    cr_assert_eq(es_sms_provider_new(&cfg, &prov, &err), ES_OK, "%s", err.text);
    cr_assert_eq(es_sms_provider_kind(prov), ES_SMS_TWILIO);
    es_config_free(&cfg);
    unlink(token_file);
}

static void webhook_with(const char *hook, const char *sender)
{
    const char *env[] = {"FACTORD_SMS_PROVIDER", "webhook", "FACTORD_SMS_WEBHOOK_URL", hook,
                         "FACTORD_SMS_SENDER", sender, NULL};
    es_config cfg = config_of(env);
    es_error err = {0};
    cr_assert_eq(es_sms_provider_new(&cfg, &prov, &err), ES_OK, "%s", err.text);
    cr_assert_eq(es_sms_provider_kind(prov), ES_SMS_WEBHOOK);
    es_config_free(&cfg);
}

static void start_fake(void)
{
    fake = sms_fake_start();
    cr_assert_not_null(fake);
    url = sms_fake_url(fake, "");
}

static void stop_all(void)
{
    es_sms_provider_free(prov);
    prov = NULL;
    sms_fake_stop(fake);
    fake = NULL;
    free(url);
    url = NULL;
}

static void setup_twilio(void)
{
    start_fake();
    twilio_with(url, "+15005550006", "10000");
}

static void setup_webhook(void)
{
    start_fake();
    char *hook = sms_fake_url(fake, "/hooks/sms?tenant=a");
    webhook_with(hook, "+15005550006");
    free(hook);
}

static es_sms_msg msg(const char *key)
{
    return (es_sms_msg){.to = "+41791234567",
                        .body = "Your code is 123456 & valid for 5 min",
                        .idempotency_key = key,
                        .instance_id = "inst-1",
                        .user_id = "user-9"};
}

static sms_fake_req request(size_t i)
{
    sms_fake_req q;
    cr_assert(sms_fake_wait(fake, i + 1, 5000), "no request %zu", i);
    cr_assert(sms_fake_get(fake, i, &q));
    return q;
}

/* --- request shapes ----------------------------------------------------------- */

TestSuite(sms_twilio, .init = setup_twilio, .fini = stop_all);

Test(sms_twilio, request_shape_and_sent_with_sid)
{
    es_sms_msg m = msg("code-evt-1");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    cr_expect_eq(out.http_status, 201);
    cr_expect_str_eq(out.message_id, "SM00000000000000000000000000000001");
    cr_expect_str_empty(out.reason);

    sms_fake_req q = request(0);
    cr_expect_str_eq(q.method, "POST");
    cr_expect_str_eq(q.path, "/2010-04-01/Accounts/" SID "/Messages.json");
    /* base64("AC0123456789abcdef0123456789abcdef:tok3n-s3cret-value"), the token file's newline trimmed */
    cr_expect_str_eq(q.authorization,
                     "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0b2szbi1zM2NyZXQtdmFsdWU=");
    cr_expect_str_eq(q.idempotency_key, "code-evt-1");
    cr_expect(strncmp(q.content_type, "application/x-www-form-urlencoded", 33) == 0, "%s", q.content_type);
    cr_expect_str_eq(q.body, "To=%2B41791234567&From=%2B15005550006&Body=Your+code+is+123456+%26+valid+for+5+min");
    free(q.body);
}

Test(sms_twilio, sends_in_a_row_on_one_provider)
{
    /* The easy handle is reused: the second send must not carry anything of
     * the first (key, body) and still work. */
    es_sms_msg m = msg("k-1");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    m.idempotency_key = "k-2";
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    cr_expect_str_eq(out.message_id, "SM00000000000000000000000000000002");
    sms_fake_req q = request(1);
    cr_expect_str_eq(q.idempotency_key, "k-2");
    free(q.body);
}

Test(sms_twilio, messaging_service_sid_as_sender)
{
    es_sms_provider_free(prov);
    twilio_with(url, "MG0123456789abcdef0123456789abcdef", "10000");
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    sms_fake_req q = request(0);
    cr_expect(strstr(q.body, "&MessagingServiceSid=MG0123456789abcdef0123456789abcdef&"), "%s", q.body);
    cr_expect_null(strstr(q.body, "From="));
    free(q.body);
}

Test(sms_twilio, status_500_then_201)
{
    sms_fake_push(fake, 500, "{\"code\":20500,\"message\":\"Internal Server Error\"}", NULL, 2);
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 500);
    cr_expect_eq(out.retry_after_s, -1);
    cr_expect_str_empty(out.message_id);
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    cr_expect_str_eq(out.message_id, "SM00000000000000000000000000000003");
    /* every attempt carried the same key */
    for (size_t i = 0; i < 3; i++) {
        sms_fake_req q = request(i);
        cr_expect_str_eq(q.idempotency_key, "k");
        free(q.body);
    }
}

Test(sms_twilio, status_429_retry_after)
{
    sms_fake_push(fake, 429, "{\"code\":20429,\"message\":\"Too Many Requests\",\"status\":429}", "7", 1);
    sms_fake_push(fake, 503, "{}", "86400", 1);
    sms_fake_push(fake, 408, "{}", NULL, 1);
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 429);
    cr_expect_eq(out.retry_after_s, 7);
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 503);
    cr_expect_eq(out.retry_after_s, ES_SMS_RETRY_AFTER_MAX_S);
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 408);
    cr_expect_eq(out.retry_after_s, -1, "a Retry-After of an earlier answer must not stick");
}

Test(sms_twilio, status_400_twilio_error_is_permanent)
{
    sms_fake_push(fake, 400,
                  "{\"code\":21211,\"message\":\"The 'To' number +41791234567 is not a valid phone number.\","
                  "\"more_info\":\"https://www.twilio.com/docs/errors/21211\",\"status\":400}",
                  NULL, 1);
    sms_fake_push(fake, 401, "{\"code\":20003,\"message\":\"Authenticate\",\"status\":401}", NULL, 1);
    sms_fake_push(fake, 404, "not json", NULL, 1);
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect_eq(out.http_status, 400);
    cr_expect_eq(out.provider_code, 21211);
    cr_expect(strstr(out.reason, "21211"), "%s", out.reason);
    cr_expect(strstr(out.reason, "is not a valid phone number"), "%s", out.reason);
    cr_expect_null(strstr(out.reason, TOKEN));
    cr_expect_null(strstr(out.reason, "123456 &"), "the message body stays out of the reason");

    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect_eq(out.provider_code, 20003);
    cr_expect(strstr(out.reason, "Authenticate"), "%s", out.reason);

    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect_eq(out.http_status, 404);
    cr_expect_eq(out.provider_code, 0);
    cr_expect(strstr(out.reason, "404"), "%s", out.reason);
}

Test(sms_twilio, malformed_messages_send_nothing)
{
    es_sms_outcome out;
    es_sms_msg m = msg("k");
    m.to = "0791234567";
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect(strstr(out.reason, "E.164"), "%s", out.reason);
    m = msg("key\r\nX-Injected: 1");
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect(strstr(out.reason, "idempotency key"), "%s", out.reason);
    m = msg("");
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    m = msg("k");
    m.body = "";
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    m.body = "\xff\xfe";
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    m = msg("k");
    m.user_id = "\xc3(";
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect(strstr(out.reason, "UTF-8"), "%s", out.reason);
    m = msg("k");
    json_t *not_object = json_string("x");
    m.args = not_object;
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    json_decref(not_object);
    cr_expect_eq(out.http_status, 0);
    cr_expect_eq(sms_fake_count(fake), 0);
}

/* Everything written to stderr so far (closes it: call once, at the end). */
static char *stderr_text(void)
{
    fflush(stderr);
    fclose(stderr);
    FILE *r = cr_get_redirected_stderr();
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    size_t got;
    while ((got = fread(text + len, 1, cap - 1 - len, r)) > 0) {
        len += got;
        if (len + 1 == cap) {
            cap *= 2;
            text = realloc(text, cap);
            cr_assert_not_null(text);
        }
    }
    text[len] = '\0';
    return text;
}

static void setup_twilio_debug_log(void)
{
    cr_redirect_stderr();
    es_log_init("test", "debug");
    setup_twilio();
}

Test(sms_twilio, debug_log_holds_no_token_body_or_code, .init = setup_twilio_debug_log, .fini = stop_all)
{
    sms_fake_push(fake, 400, "{\"code\":21211,\"message\":\"The 'To' number is not valid.\",\"status\":400}", NULL, 1);
    es_sms_msg m = msg("code-evt-3");
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    es_sms_provider_free(prov);
    prov = NULL;
    sms_fake_stop(fake); /* its thread logs too: stop it before stderr closes */
    fake = NULL;
    char *text = stderr_text();
    cr_expect(strstr(text, "\"msg\":\"sms send\""), "the sends are logged at debug: %s", text);
    cr_expect(strstr(text, "code-evt-3"), "%s", text);
    cr_expect(strstr(text, "21211"), "%s", text);
    cr_expect_null(strstr(text, TOKEN), "%s", text);
    cr_expect_null(strstr(text, "code is"), "nor the body (with its code): %s", text);
    cr_expect_null(strstr(text, "valid+for"), "nor the encoded body: %s", text);
    cr_expect_null(strstr(text, "+41791234567"), "nor the recipient: %s", text);
    free(text);
}

/* --- the webhook ------------------------------------------------------------------ */

TestSuite(sms_webhook, .init = setup_webhook, .fini = stop_all);

Test(sms_webhook, json_shape_and_sent)
{
    sms_fake_set_default(fake, 200, "{\"ok\":true}");
    json_t *td = json_pack("{s:s, s:s, s:s}", "title", "Verify your phone", "subject", "Verify your phone",
                           "text", "replaced by the body");
    json_t *args = json_pack("{s:s, s:s}", "code", "123456", "preferredLoginName", "ada@example.com");
    es_sms_msg m = msg("code-evt-7");
    m.event_type = "user.human.phone.code.added";
    m.template_data = td;
    m.args = args;
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    cr_expect_eq(out.http_status, 200);
    cr_expect_str_empty(out.message_id);
    json_decref(td);
    json_decref(args);

    sms_fake_req q = request(0);
    cr_expect_str_eq(q.method, "POST");
    cr_expect_str_eq(q.path, "/hooks/sms");
    cr_expect_str_eq(q.content_type, "application/json");
    cr_expect_str_eq(q.idempotency_key, "code-evt-7");
    cr_expect_str_empty(q.authorization);
    json_error_t jerr;
    json_t *j = json_loads(q.body, 0, &jerr);
    cr_assert_not_null(j, "%s: %s", jerr.text, q.body);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "recipientPhoneNumber")),
                     "+41791234567");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "eventType")),
                     "user.human.phone.code.added");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "senderPhoneNumber")),
                     "+15005550006");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "instanceId")), "inst-1");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "contextInfo"), "userId")), "user-9");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "templateData"), "text")),
                     "Your code is 123456 & valid for 5 min");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "templateData"), "title")),
                     "Verify your phone");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(j, "args"), "code")), "123456");
    cr_expect_eq(json_object_size(j), 3);
    json_decref(j);
    free(q.body);
}

Test(sms_webhook, minimal_message)
{
    sms_fake_set_default(fake, 204, "");
    es_sms_msg m = msg("k");
    m.user_id = NULL;
    es_sms_outcome out;
    cr_assert_eq(es_sms_send(prov, &m, &out), ES_SMS_SENT, "%s", out.reason);
    cr_expect_eq(out.http_status, 204);
    sms_fake_req q = request(0);
    json_t *j = json_loads(q.body, 0, NULL);
    cr_assert_not_null(j, "%s", q.body);
    cr_expect_null(json_object_get(j, "args"));
    cr_expect_null(json_object_get(json_object_get(j, "contextInfo"), "userId"));
    cr_expect_null(json_object_get(json_object_get(j, "contextInfo"), "eventType"));
    cr_expect_eq(json_object_size(json_object_get(j, "templateData")), 1);
    json_decref(j);
    free(q.body);
}

Test(sms_webhook, statuses)
{
    sms_fake_push(fake, 502, "{}", NULL, 1);
    sms_fake_push(fake, 429, "{}", "Wed, 21 Oct 2015 07:28:00 GMT", 1);
    sms_fake_push(fake, 400, "{\"code\":21211,\"message\":\"secret stuff\"}", NULL, 1);
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 502);
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.retry_after_s, 0, "a date in the past means now");
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_PERMANENT);
    cr_expect_eq(out.http_status, 400);
    cr_expect_eq(out.provider_code, 0, "only Twilio's errors are read");
    cr_expect_null(strstr(out.reason, "secret stuff"), "a webhook's answer body stays out: %s", out.reason);
}

/* --- no server, a silent server --------------------------------------------------- */

/* A port on 127.0.0.1 that was free a moment ago, and a socket that listens on
 * it when listen_too (the kernel completes connections, nothing ever answers). */
static int local_port(bool listen_too, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    if (listen_too)
        cr_assert_eq(listen(fd, 8), 0);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

Test(sms_transport, closed_port_is_retry)
{
    int fd;
    int port = local_port(false, &fd);
    close(fd); /* nothing listens there now */
    char base[64];
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
    twilio_with(base, "+15005550006", "5000");
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 0);
    cr_expect_eq(out.retry_after_s, -1);
    cr_expect(strstr(out.reason, "twilio: "), "%s", out.reason);
    es_sms_provider_free(prov);
    prov = NULL;
}

Test(sms_transport, silent_server_is_retry_after_the_timeout)
{
    int fd;
    int port = local_port(true, &fd);
    char hook[64];
    snprintf(hook, sizeof hook, "http://127.0.0.1:%d/sms", port);
    const char *env[] = {"FACTORD_SMS_PROVIDER", "webhook", "FACTORD_SMS_WEBHOOK_URL", hook,
                         "FACTORD_SMS_TIMEOUT_MS", "300", NULL};
    es_config cfg = config_of(env);
    es_error err = {0};
    cr_assert_eq(es_sms_provider_new(&cfg, &prov, &err), ES_OK, "%s", err.text);
    es_config_free(&cfg);
    es_sms_msg m = msg("k");
    es_sms_outcome out;
    cr_expect_eq(es_sms_send(prov, &m, &out), ES_SMS_RETRY);
    cr_expect_eq(out.http_status, 0);
    cr_expect(strstr(out.reason, "imeout") || strstr(out.reason, "timed out"), "%s", out.reason);
    es_sms_provider_free(prov);
    prov = NULL;
    close(fd);
}

/* --- settings ----------------------------------------------------------------------- */

static es_error refused(const char *const *env)
{
    es_config cfg = config_of(env);
    es_error err = {0};
    es_sms_provider *p = NULL;
    cr_assert_eq(es_sms_provider_new(&cfg, &p, &err), ES_EINVAL);
    cr_assert_null(p);
    es_config_free(&cfg);
    return err;
}

Test(sms_config, none_is_refused)
{
    static const char *const env[] = {NULL};
    es_error err = refused(env);
    cr_expect(strstr(err.text, "FACTORD_SMS_PROVIDER"), "%s", err.text);
    static const char *const other[] = {"FACTORD_SMS_PROVIDER", "carrier-pigeon", NULL};
    err = refused(other);
    cr_expect(strstr(err.text, "FACTORD_SMS_PROVIDER"), "%s", err.text);
    cr_expect(strstr(err.text, "carrier-pigeon"), "%s", err.text);
}

Test(sms_config, twilio_missing_everything_reported_at_once)
{
    static const char *const env[] = {"FACTORD_SMS_PROVIDER", "twilio", NULL};
    es_error err = refused(env);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_ACCOUNT_SID"), "%s", err.text);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_AUTH_TOKEN"), "%s", err.text);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_FROM"), "%s", err.text);
    cr_expect_null(strstr(err.text, "FACTORD_SMS_TWILIO_URL"), "the default URL is fine: %s", err.text);
}

Test(sms_config, twilio_bad_values)
{
    static const char *const env[] = {"FACTORD_SMS_PROVIDER", "twilio", "FACTORD_SMS_TWILIO_URL", "ftp://api.example",
                                      "FACTORD_SMS_TWILIO_ACCOUNT_SID", "AC/../x", "FACTORD_SMS_TWILIO_AUTH_TOKEN",
                                      TOKEN, "FACTORD_SMS_TWILIO_FROM", "Factord", NULL};
    es_error err = refused(env);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_URL"), "%s", err.text);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_ACCOUNT_SID"), "%s", err.text);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_FROM"), "%s", err.text);
    cr_expect_null(strstr(err.text, TOKEN), "the token never appears in an error: %s", err.text);
}

Test(sms_config, twilio_unreadable_token_file)
{
    static const char *const env[] = {"FACTORD_SMS_PROVIDER", "twilio", "FACTORD_SMS_TWILIO_ACCOUNT_SID", SID,
                                      "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE", "/nonexistent/factord/token",
                                      "FACTORD_SMS_TWILIO_FROM", "+15005550006", NULL};
    es_error err = refused(env);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE"), "%s", err.text);
    cr_expect(strstr(err.text, "/nonexistent/factord/token"), "%s", err.text);
}

Test(sms_config, twilio_token_file_too_long)
{
    write_token_file();
    FILE *f = fopen(token_file, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 300; i++)
        fputc('a', f);
    fclose(f);
    const char *env[] = {"FACTORD_SMS_PROVIDER", "twilio", "FACTORD_SMS_TWILIO_ACCOUNT_SID", SID,
                         "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE", token_file, "FACTORD_SMS_TWILIO_FROM",
                         "+15005550006", NULL};
    es_error err = refused(env);
    unlink(token_file);
    cr_expect(strstr(err.text, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE"), "%s", err.text);
    cr_expect(strstr(err.text, "more than 255"), "%s", err.text);
}

Test(sms_config, twilio_token_from_the_environment)
{
    static const char *const env[] = {"FACTORD_SMS_PROVIDER", "twilio", "FACTORD_SMS_TWILIO_ACCOUNT_SID", SID,
                                      "FACTORD_SMS_TWILIO_AUTH_TOKEN", TOKEN, "FACTORD_SMS_TWILIO_FROM",
                                      "+15005550006", NULL};
    es_config cfg = config_of(env);
    es_error err = {0};
    es_sms_provider *p = NULL;
    cr_expect_eq(es_sms_provider_new(&cfg, &p, &err), ES_OK, "%s", err.text);
    es_sms_provider_free(p);
    es_config_free(&cfg);
}

Test(sms_config, webhook_needs_an_http_url)
{
    static const char *const none[] = {"FACTORD_SMS_PROVIDER", "webhook", NULL};
    es_error err = refused(none);
    cr_expect(strstr(err.text, "FACTORD_SMS_WEBHOOK_URL"), "%s", err.text);
    static const char *const ftp[] = {"FACTORD_SMS_PROVIDER", "webhook", "FACTORD_SMS_WEBHOOK_URL",
                                      "ftp://hooks.example/sms?token=s3cr3t", NULL};
    err = refused(ftp);
    cr_expect(strstr(err.text, "FACTORD_SMS_WEBHOOK_URL"), "%s", err.text);
    cr_expect_null(strstr(err.text, "s3cr3t"), "the URL may hold a token: %s", err.text);
    static const char *const file[] = {"FACTORD_SMS_PROVIDER", "webhook", "FACTORD_SMS_WEBHOOK_URL",
                                       "file:///etc/passwd", NULL};
    err = refused(file);
    cr_expect(strstr(err.text, "FACTORD_SMS_WEBHOOK_URL"), "%s", err.text);
    static const char *const junk[] = {"FACTORD_SMS_PROVIDER", "webhook", "FACTORD_SMS_WEBHOOK_URL", "not a url",
                                       "FACTORD_SMS_SENDER", "sender", NULL};
    err = refused(junk);
    cr_expect(strstr(err.text, "FACTORD_SMS_WEBHOOK_URL"), "%s", err.text);
    cr_expect(strstr(err.text, "FACTORD_SMS_SENDER"), "%s", err.text);
}

Test(sms_config, timeout_bounds)
{
    static const char *const env[] = {"FACTORD_SMS_TIMEOUT_MS", "5", NULL};
    fake_env = env;
    es_config cfg;
    es_error err = {0};
    cr_assert_eq(es_config_load(&cfg, fake_getenv, &err), ES_EINVAL);
    cr_expect(strstr(err.text, "FACTORD_SMS_TIMEOUT_MS"), "%s", err.text);
}
