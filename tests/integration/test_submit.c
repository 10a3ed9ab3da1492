/*
 * tests/integration/test_submit.c - `factord submit` on the real broker.
 *
 * Runs the factord binary as a child with the harness's environment (fresh
 * topics per test) and its stdout and stderr on pipes. The tests play the
 * other side themselves (they read the commands topic and write replies),
 * except the end-to-end test, which runs the real processor and relay.
 * Covers: the reply is matched by key and printed verbatim, and one written
 * before submit started is never taken (the waiter starts at the end);
 * exit codes 0/1/2; the timeout; the command on the wire (keyed by user,
 * decodable, defaults filled in); bad input sends nothing; the broker
 * address recorded by `factord run`; an unreachable broker.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "domain/command.h"
#include "infra/base/clock.h"
#include "tests/integration/harness.h"

typedef struct {
    int code;           /* exit status, -signal when killed */
    char out[65536];    /* stdout */
    char err[65536];    /* stderr */
    int64_t elapsed_ms;
} sub_result;

static void new_id(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

/* Start `factord submit args...` (h_tool_start: the harness's settings,
 * FACTORD_LOG_LEVEL unset so that submit's own default applies). */
static h_tool sub_start(const h_env *e, const char *const *args, const char *stdin_text, const char *const *env)
{
    const char *argv[40] = {"submit"};
    size_t n = 1;
    for (const char *const *a = args; a && *a && n < sizeof argv / sizeof argv[0] - 1; a++)
        argv[n++] = *a;
    return h_tool_start(e, argv, stdin_text, env);
}

/* h_tool_finish into a fixed-size result (nothing to free). */
static void sub_finish(const h_env *e, h_tool *p, int timeout_ms, sub_result *r)
{
    h_tool_result tr;
    h_tool_finish(e, p, timeout_ms, &tr);
    memset(r, 0, sizeof *r);
    r->code = tr.code;
    r->elapsed_ms = tr.elapsed_ms;
    snprintf(r->out, sizeof r->out, "%s", tr.out);
    snprintf(r->err, sizeof r->err, "%s", tr.err);
    h_tool_result_free(&tr);
}

static void run_submit(const h_env *e, const char *const *args, const char *stdin_text, const char *const *env,
                       sub_result *r)
{
    h_tool p = sub_start(e, args, stdin_text, env);
    sub_finish(e, &p, 60000, r);
}

static char *reply_text(const char *cmd_id, int status, const char *body)
{
    size_t n = strlen(cmd_id) + strlen(body) + 64;
    char *s = malloc(n);
    cr_assert_not_null(s);
    snprintf(s, n, "{\"commandId\":\"%s\",\"httpStatus\":%d,\"body\":%s}", cmd_id, status, body);
    return s;
}

/* Start submit with a fixed id, wait until its command is on the commands
 * topic (so its waiter is in place), write a non-matching reply and then
 * the matching one, and collect the result. */
static void submit_against_fake_processor(const h_env *e, const char *id, const char *reply,
                                          const char *const *env, sub_result *r)
{
    const char *args[] = {"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--org", "org-1", "--id", id,
                          "--reply-to", e->replies, "--timeout-ms", "30000", NULL};
    h_tool p = sub_start(e, args, NULL, env);
    json_t *cmds = h_read_topic(e, e->commands, 1, 20000);
    cr_assert_eq(json_array_size(cmds), 1, "the command did not reach %s", e->commands);
    json_decref(cmds);
    char other[37];
    new_id(other);
    char *noise = reply_text(other, 200, "{\"details\":{}}");
    h_produce(e, e->replies, other, noise, strlen(noise));
    free(noise);
    h_produce(e, e->replies, id, reply, strlen(reply));
    sub_finish(e, &p, 40000, r);
}

static const char BODY_OK[] = "{\"details\":{\"sequence\":\"2\",\"creationDate\":\"2024-03-27T10:05:48.581Z\","
                              "\"changeDate\":\"2024-03-27T10:05:48.581Z\",\"resourceOwner\":\"org-1\"}}";
#define BODY_409 h_data("replies/add_otp_sms_3_already_ready.json")

Test(submit, prints_the_matching_reply_and_exits_0)
{
    h_env e;
    h_env_init(&e, "submit_ok");
    char id[37];
    new_id(id);
    /* A reply with this id from "before" submit started: it must be
     * skipped, since the waiter starts at the end of the topic. */
    char *stale = reply_text(id, 500, "{\"code\":13,\"message\":\"stale\",\"details\":[]}");
    h_produce(&e, e.replies, id, stale, strlen(stale));
    free(stale);

    char *reply = reply_text(id, 200, BODY_OK);
    sub_result r;
    submit_against_fake_processor(&e, id, reply, NULL, &r);
    cr_assert_eq(r.code, 0, "exit %d, stderr: %s", r.code, r.err);
    char want[1024];
    snprintf(want, sizeof want, "%s\n", reply);
    cr_assert_str_eq(r.out, want);
    cr_assert_str_eq(r.err, "", "stderr should stay quiet at the default log level: %s", r.err);
    free(reply);
    h_env_done(&e);
}

Test(submit, a_rejection_exits_1)
{
    h_env e;
    h_env_init(&e, "submit_409");
    char id[37];
    new_id(id);
    char *reply = reply_text(id, 409, BODY_409);
    sub_result r;
    submit_against_fake_processor(&e, id, reply, NULL, &r);
    cr_assert_eq(r.code, 1, "exit %d, stderr: %s", r.code, r.err);
    char want[1024];
    snprintf(want, sizeof want, "%s\n", reply);
    cr_assert_str_eq(r.out, want);
    free(reply);
    h_env_done(&e);
}

Test(submit, no_reply_exits_2_after_the_timeout)
{
    h_env e;
    h_env_init(&e, "submit_timeout");
    char id[37];
    new_id(id);
    const char *args[] = {"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--id", id, "--timeout-ms", "1500",
                          NULL};
    sub_result r;
    run_submit(&e, args, NULL, NULL, &r);
    cr_assert_eq(r.code, 2, "exit %d, stderr: %s", r.code, r.err);
    cr_assert_str_eq(r.out, "");
    char want[128];
    snprintf(want, sizeof want, "no reply for command %s within 1500 ms", id);
    cr_assert(strstr(r.err, want), "stderr: %s", r.err);
    cr_assert_geq(r.elapsed_ms, 1500);
    cr_assert_lt(r.elapsed_ms, 1500 + 4000, "took %lld ms", (long long)r.elapsed_ms);
    h_env_done(&e);
}

/* The id that a "no reply" message names. */
static void id_from_message(const char *err, char out[37])
{
    const char *p = strstr(err, "no reply for command ");
    cr_assert_not_null(p, "stderr: %s", err);
    snprintf(out, 37, "%s", p + strlen("no reply for command "));
}

Test(submit, the_command_is_keyed_by_user_and_valid)
{
    h_env e;
    h_env_init(&e, "submit_wire");
    /* From flags: defaults for id and replyTo, the payload passed on. */
    const char *args[] = {"--type", "SetMyPhone", "--user", "u-42", "--org", "org-7", "--instance", "tenant-9",
                          "--payload", "{\"phone\":\"+41 79 123 45 67\",\"returnCode\":true}", "--timeout-ms",
                          "3000", NULL};
    sub_result r;
    run_submit(&e, args, NULL, NULL, &r);
    cr_assert_eq(r.code, 2, "exit %d (nobody replies), stderr: %s", r.code, r.err);
    char flag_id[37];
    id_from_message(r.err, flag_id);

    /* From stdin: no id, no replyTo. */
    const char *in = "{\"type\":\"AddMyAuthFactorOTPSMS\",\"instanceId\":\"tenant-9\",\"userId\":\"u-43\","
                     "\"resourceOwner\":\"org-7\",\"payload\":{}}";
    const char *args2[] = {"-", "--timeout-ms", "3000", NULL};
    run_submit(&e, args2, in, NULL, &r);
    cr_assert_eq(r.code, 2, "exit %d, stderr: %s", r.code, r.err);
    char stdin_id[37];
    id_from_message(r.err, stdin_id);

    json_t *recs = h_read_topic(&e, e.commands, 2, 15000);
    cr_assert_eq(json_array_size(recs), 2);
    for (size_t i = 0; i < 2; i++) {
        json_t *rec = json_array_get(recs, i);
        const char *key = json_string_value(json_object_get(rec, "key"));
        const char *value = json_string_value(json_object_get(rec, "value"));
        dom_cmd cmd;
        es_error err = {0};
        cr_assert_eq(dom_cmd_decode(value, strlen(value), &cmd, &err), ES_OK, "%s: %s", value, err.text);
        cr_assert_str_eq(key, cmd.user_id, "the key is the user id");
        cr_assert_str_eq(cmd.instance_id, "tenant-9");
        cr_assert_str_eq(cmd.resource_owner, "org-7");
        cr_assert_str_eq(cmd.reply_to, e.replies, "replyTo defaults to FACTORD_REPLIES_TOPIC");
        cr_assert_eq(cmd.id[14], '4', "a UUID v4: %s", cmd.id);
        if (strcmp(cmd.user_id, "u-42") == 0) {
            cr_assert_eq(cmd.type, DOM_CMD_SET_PHONE);
            cr_assert_str_eq(cmd.phone, "+41 79 123 45 67");
            cr_assert(cmd.return_code);
            cr_assert_str_eq(cmd.id, flag_id);
        } else {
            cr_assert_str_eq(cmd.user_id, "u-43");
            cr_assert_eq(cmd.type, DOM_CMD_ADD_OTP_SMS);
            cr_assert_str_eq(cmd.id, stdin_id);
        }
    }
    json_decref(recs);
    h_env_done(&e);
}

Test(submit, bad_input_exits_2_and_sends_nothing)
{
    h_env e;
    h_env_init(&e, "submit_bad");
    static const struct {
        const char *args[12];
        const char *stdin_text;
        const char *says;
    } cases[] = {
        {{"--type", "AddMyAuthFactorSMS", "--user", "u-1"}, NULL, "unknown command type \"AddMyAuthFactorSMS\""},
        {{"--type", "SetMyPhone", "--user", "u-1", "--payload", "{\"phone\":"}, NULL, "--payload: not JSON"},
        {{"--type", "SetMyPhone", "--user", "u-1", "--payload", "[]"}, NULL, "--payload: expected a JSON object"},
        {{"--type", "SetMyPhone", "--user", "u-1"}, NULL, "field \"payload.phone\": missing"},
        {{"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--payload", "{\"x\":1}"}, NULL,
         "unknown field \"payload.x\""},
        {{"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--id", "not-a-uuid"}, NULL, "not a UUID"},
        {{"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--reply-to", "no spaces"}, NULL,
         "not a Kafka topic name"},
        {{"--type", "AddMyAuthFactorOTPSMS"}, NULL, "--user is required"},
        {{"--user", "u-1"}, NULL, "--type is required"},
        {{"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--bogus", "1"}, NULL, "unknown argument '--bogus'"},
        {{"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--timeout-ms", "0"}, NULL, "--timeout-ms"},
        {{"--type", "AddMyAuthFactorOTPSMS", "--user"}, NULL, "--user needs a value"},
        {{"-"}, "{\"type\":\"AddMyAuthFactorOTPSMS\",", "stdin: not JSON"},
        {{"-"}, "[1,2]", "stdin: expected a JSON object"},
        {{"-"}, "", "stdin: not JSON"},
        {{"-"}, "{\"type\":\"AddMyAuthFactorOTPSMS\",\"instanceId\":\"i\",\"payload\":{},\"extra\":1}",
         "unknown field \"extra\""},
        {{"-"}, "{\"id\":\"nope\",\"type\":\"AddMyAuthFactorOTPSMS\",\"instanceId\":\"i\",\"payload\":{}}",
         "field \"id\": not a UUID"},
        {{"-"}, "{\"type\":\"Nope\",\"instanceId\":\"i\",\"payload\":{}}", "unknown command type \"Nope\""},
        {{"-", "--type", "AddMyAuthFactorOTPSMS"}, "{}", "cannot be combined with `-`"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sub_result r;
        run_submit(&e, cases[i].args, cases[i].stdin_text, NULL, &r);
        cr_expect_eq(r.code, 2, "case %zu: exit %d, stderr: %s", i, r.code, r.err);
        cr_expect_str_eq(r.out, "", "case %zu", i);
        cr_expect(strstr(r.err, cases[i].says) != NULL, "case %zu: stderr should say '%s': %s", i, cases[i].says,
                  r.err);
    }
    json_t *recs = h_read_topic(&e, e.commands, 1, 3000);
    cr_assert_eq(json_array_size(recs), 0, "bad input reached the commands topic");
    json_decref(recs);

    const char *help[] = {"--help", NULL};
    sub_result r;
    run_submit(&e, help, NULL, NULL, &r);
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "usage: factord submit"), "%s", r.out);
    cr_assert(strstr(r.out, "--timeout-ms N"), "%s", r.out);
    cr_assert(strstr(r.out, "ImportHumanUser"), "%s", r.out);
    h_env_done(&e);
}

Test(submit, end_to_end_unknown_user_gets_401)
{
    h_env e;
    h_env_init(&e, "submit_e2e");
    pid_t proc = h_spawn(&e, "process", NULL);
    pid_t relay = h_spawn(&e, "relay", NULL);
    char id[37];
    new_id(id);
    const char *args[] = {"--type", "AddMyAuthFactorOTPSMS", "--user", "nobody", "--org", "org-1",
                          "--instance", e.instance, "--id", id, "--timeout-ms", "45000", NULL};
    sub_result r;
    run_submit(&e, args, NULL, NULL, &r);
    cr_assert_eq(r.code, 1, "exit %d, stdout: %s, stderr: %s", r.code, r.out, r.err);
    json_t *reply = json_loads(r.out, 0, NULL);
    cr_assert_not_null(reply, "stdout: %s", r.out);
    cr_assert_str_eq(json_string_value(json_object_get(reply, "commandId")), id);
    cr_assert_eq(json_integer_value(json_object_get(reply, "httpStatus")), 401);
    json_t *body = json_object_get(reply, "body");
    cr_assert_eq(json_integer_value(json_object_get(body, "code")), 16);
    cr_assert_str_eq(json_string_value(json_object_get(body, "message")), "Errors.Token.Invalid (AUTH-7fs1e)");
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(body, "details"), 0), "id")),
                     "AUTH-7fs1e");
    json_decref(reply);

    /* The same command again: decided once, the stored outcome replied
     * again, byte for byte. */
    sub_result again;
    const char *args2[] = {"--type", "AddMyAuthFactorOTPSMS", "--user", "nobody", "--org", "org-1",
                           "--instance", e.instance, "--id", id, "--timeout-ms", "30000", NULL};
    run_submit(&e, args2, NULL, NULL, &again);
    cr_assert_eq(again.code, 1, "exit %d, stderr: %s", again.code, again.err);
    cr_assert_str_eq(again.out, r.out);

    cr_assert_eq(h_stop(proc, false), 0);
    cr_assert_eq(h_stop(relay, false), 0);
    h_env_done(&e);
}

Test(submit, uses_the_broker_recorded_by_run)
{
    h_env e;
    h_env_init(&e, "submit_state");
    char dir[] = "/tmp/factord-submit-state-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256], env_dir[300];
    snprintf(path, sizeof path, "%s/kafka.brokers", dir);
    snprintf(env_dir, sizeof env_dir, "FACTORD_STATE_DIR=%s", dir);

    /* Neither FACTORD_KAFKA_BROKERS nor the file: a clear refusal. */
    const char *env[] = {"FACTORD_KAFKA_BROKERS", env_dir, NULL};
    const char *args[] = {"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--timeout-ms", "5000", NULL};
    sub_result r;
    run_submit(&e, args, NULL, env, &r);
    cr_assert_eq(r.code, 2, "exit %d, stderr: %s", r.code, r.err);
    cr_assert(strstr(r.err, "set FACTORD_KAFKA_BROKERS") && strstr(r.err, "factord run"), "stderr: %s", r.err);

    /* The file as `factord run` writes it: one line. */
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s\n", e.brokers);
    fclose(f);
    char id[37];
    new_id(id);
    char *reply = reply_text(id, 200, BODY_OK);
    submit_against_fake_processor(&e, id, reply, env, &r);
    cr_assert_eq(r.code, 0, "exit %d, stderr: %s", r.code, r.err);
    char want[1024];
    snprintf(want, sizeof want, "%s\n", reply);
    cr_assert_str_eq(r.out, want);
    free(reply);
    unlink(path);
    rmdir(dir);
    h_env_done(&e);
}

Test(submit, an_unreachable_broker_fails_fast_and_quietly)
{
    h_env e;
    h_env_init(&e, "submit_down");
    const char *env[] = {"FACTORD_KAFKA_BROKERS=127.0.0.1:1", NULL};
    const char *args[] = {"--type", "AddMyAuthFactorOTPSMS", "--user", "u-1", "--timeout-ms", "20000", NULL};
    sub_result r;
    run_submit(&e, args, NULL, env, &r);
    cr_assert_eq(r.code, 2, "exit %d, stderr: %s", r.code, r.err);
    cr_assert(strstr(r.err, "cannot reach Kafka at 127.0.0.1:1"), "stderr: %s", r.err);
    cr_assert(strstr(r.err, "nothing sent"), "stderr: %s", r.err);
    cr_assert_lt(r.elapsed_ms, 10000, "took %lld ms: should not wait out the timeout", (long long)r.elapsed_ms);
    int lines = 0;
    for (const char *c = r.err; *c; c++)
        lines += *c == '\n';
    cr_assert_leq(lines, 3, "stderr flooded: %s", r.err);
    h_env_done(&e);
}
