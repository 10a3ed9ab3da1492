/*
 * tests/integration/test_run.c - `factord run`: every component in one
 * process, on the embedded broker when no brokers are configured and on the
 * real one when they are, with one shutdown path.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infra/base/clock.h"
#include "tests/integration/harness.h"

static json_t *import_payload(const char *name)
{
    return json_pack("{s:s, s:{s:s, s:s}, s:{s:s}, s:{s:s, s:b}}", "userName", name, "profile", "firstName", "Ada",
                     "lastName", "Lovelace", "email", "email", "ada@example.com", "phone", "phone", "+41791234567",
                     "isPhoneVerified", 1);
}

/* Import a user, add the factor, and expect the success reply. */
static void add_factor_and_expect_reply(const h_env *e)
{
    char id[37], add[37];
    char *c = h_command(e, "ImportHumanUser", "run-user", "org-run", import_payload("run-user"), id);
    h_produce(e, e->commands, "run-user", c, strlen(c));
    free(c);
    c = h_command(e, "AddMyAuthFactorOTPSMS", "run-user", "org-run", NULL, add);
    h_produce(e, e->commands, "run-user", c, strlen(c));
    free(c);
    json_t *replies = h_read_topic(e, e->replies, 2, 60000);
    json_t *rec = h_find_reply(replies, add);
    cr_assert_not_null(rec, "no reply for AddMyAuthFactorOTPSMS (%zu replies)", json_array_size(replies));
    json_t *reply = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
    cr_assert_eq(json_integer_value(json_object_get(reply, "httpStatus")), 200);
    json_t *details = json_object_get(json_object_get(reply, "body"), "details");
    cr_assert_str_eq(json_string_value(json_object_get(details, "sequence")), "3");
    cr_assert_str_eq(json_string_value(json_object_get(details, "resourceOwner")), "org-run");
    json_decref(reply);
    json_decref(replies);
}

static bool read_file_line(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(buf, (int)len, f) != NULL;
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
    return ok && buf[0];
}

Test(run, embedded_broker_when_none_is_configured, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "run_embedded");
    char state[256], brokers_file[300], env_state[300], env_http[64];
    snprintf(state, sizeof state, "/tmp/factord-run-test-%s", e.instance);
    snprintf(brokers_file, sizeof brokers_file, "%s/kafka.brokers", state);
    snprintf(env_state, sizeof env_state, "FACTORD_STATE_DIR=%s", state);
    snprintf(env_http, sizeof env_http, "FACTORD_HTTP_ADDR=127.0.0.1:%d", 20000 + (int)(getpid() % 20000));
    const char *extra[] = {"FACTORD_KAFKA_BROKERS=", "FACTORD_CODE_KEY=", env_state, env_http, NULL};
    pid_t run = h_spawn(&e, "run", extra);

    char brokers[256] = "";
    int64_t end = es_clock_mono_ms() + 30000;
    while (!read_file_line(brokers_file, brokers, sizeof brokers) && es_clock_mono_ms() < end)
        es_sleep_ms(100);
    cr_assert(brokers[0], "factord run wrote no %s", brokers_file);
    cr_assert_neq(strcmp(brokers, e.brokers), 0, "the embedded broker is not the configured real one");
    char key_file[300];
    snprintf(key_file, sizeof key_file, "%s/code.key", state);
    cr_assert_eq(access(key_file, R_OK), 0, "a development code key was created");

    h_env emb = e;
    snprintf(emb.brokers, sizeof emb.brokers, "%s", brokers);
    add_factor_and_expect_reply(&emb);

    cr_assert_eq(h_stop(run, false), 0, "run exits 0 on SIGTERM");
    cr_assert_neq(access(brokers_file, F_OK), 0, "the embedded broker's address is removed on exit");
    /* It said loudly that Kafka data lives in memory only. */
    FILE *f = fopen(e.log_path, "r");
    cr_assert_not_null(f);
    char line[4096];
    bool loud = false;
    while (fgets(line, sizeof line, f))
        loud = loud || strstr(line, "EMBEDDED KAFKA BROKER") != NULL;
    fclose(f);
    cr_assert(loud);
    unlink(key_file);
    rmdir(state);
    h_env_done(&e);
}

Test(run, real_broker_when_configured, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "run_real");
    char state[256], env_state[300], env_http[64], brokers_file[300];
    snprintf(state, sizeof state, "/tmp/factord-run-test-%s", e.instance);
    snprintf(env_state, sizeof env_state, "FACTORD_STATE_DIR=%s", state);
    snprintf(brokers_file, sizeof brokers_file, "%s/kafka.brokers", state);
    snprintf(env_http, sizeof env_http, "FACTORD_HTTP_ADDR=127.0.0.1:%d", 40000 + (int)(getpid() % 20000));
    const char *extra[] = {env_state, env_http, NULL};
    pid_t run = h_spawn(&e, "run", extra);
    add_factor_and_expect_reply(&e); /* on the real broker's topics */
    cr_assert_neq(access(brokers_file, F_OK), 0, "no embedded broker when brokers are configured");
    cr_assert_eq(h_stop(run, false), 0);
    rmdir(state);
    h_env_done(&e);
}

/* A min.insync.replicas above the replication factor can never take a
 * write: each component says so and exits 2 instead of retrying forever.
 * (h_env_init created the harness's own topics; these are new.) */
Test(run, contradictory_topic_settings_stop_a_component, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "run_min_isr");
    char commands[300], events[300];
    snprintf(commands, sizeof commands, "FACTORD_COMMANDS_TOPIC=%s.isr", e.commands);
    snprintf(events, sizeof events, "FACTORD_EVENTS_TOPIC=%s.isr", e.events);
    const char *env[] = {commands, events, "FACTORD_TOPIC_REPLICATION=1", "FACTORD_TOPIC_MIN_INSYNC_REPLICAS=2",
                         NULL};
    const char *subs[] = {"process", "relay", "project"};
    for (size_t i = 0; i < 3; i++) {
        pid_t p = h_spawn(&e, subs[i], env);
        cr_assert_eq(h_wait(p, 60000), 2, "factord %s", subs[i]);
    }
    FILE *f = fopen(e.log_path, "r");
    cr_assert_not_null(f);
    char line[2048];
    int said = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "cannot create the topics") && strstr(line, "exceeds the replication factor (1)"))
            said++;
    fclose(f);
    cr_assert_eq(said, 3, "each component names the setting");
    h_env_done(&e);
}

/* The group a processor joins with FACTORD_GROUP_INSTANCE_ID and
 * FACTORD_PARTITION_ASSIGNMENT, as the group coordinator describes it:
 * "member instance-id assignor" once it is stable with one member, or ""
 * (polled for up to 60 s). */
static void describe_group(const h_env *e, char *out, size_t cap)
{
    out[0] = '\0';
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", e->brokers, errstr, sizeof errstr), RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    const char *groups[] = {e->group};
    for (int64_t end = es_clock_mono_ms() + 60000; !out[0] && es_clock_mono_ms() < end;) {
        rd_kafka_DescribeConsumerGroups(rk, groups, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 10000);
        const rd_kafka_DescribeConsumerGroups_result_t *res = ev ? rd_kafka_event_DescribeConsumerGroups_result(ev) : NULL;
        size_t n = 0;
        const rd_kafka_ConsumerGroupDescription_t **gd = res ? rd_kafka_DescribeConsumerGroups_result_groups(res, &n) : NULL;
        if (n == 1 && !rd_kafka_ConsumerGroupDescription_error(gd[0]) &&
            rd_kafka_ConsumerGroupDescription_state(gd[0]) == RD_KAFKA_CONSUMER_GROUP_STATE_STABLE &&
            rd_kafka_ConsumerGroupDescription_member_count(gd[0]) == 1) {
            const rd_kafka_MemberDescription_t *m = rd_kafka_ConsumerGroupDescription_member(gd[0], 0);
            const char *iid = rd_kafka_MemberDescription_group_instance_id(m);
            snprintf(out, cap, "member %s %s", iid ? iid : "(none)",
                     rd_kafka_ConsumerGroupDescription_partition_assignor(gd[0]));
        }
        if (ev)
            rd_kafka_event_destroy(ev);
        if (!out[0])
            es_sleep_ms(500);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
}

/* Wait until e's log holds n "processor started" lines (signals are set
 * up by then: a SIGTERM before that would kill rather than stop it). */
static void wait_started(const h_env *e, int n)
{
    for (int64_t end = es_clock_mono_ms() + 60000; es_clock_mono_ms() < end; es_sleep_ms(100)) {
        FILE *f = fopen(e->log_path, "r");
        int seen = 0;
        char line[4096];
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "\"processor started\""))
                seen++;
        if (f)
            fclose(f);
        if (seen >= n)
            return;
    }
    cr_assert_fail("the processor did not start (%d)", n);
}

Test(run, static_membership_and_the_assignor_reach_the_group, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "run_static");
    const char *env[] = {"FACTORD_GROUP_INSTANCE_ID=factord-test-process-1",
                         "FACTORD_PARTITION_ASSIGNMENT=cooperative-sticky", NULL};
    pid_t p = h_spawn(&e, "process", env);
    wait_started(&e, 1);
    char got[256];
    describe_group(&e, got, sizeof got);
    cr_assert_str_eq(got, "member factord-test-process-1 cooperative-sticky");
    /* Killed and back under the same id: still one member, the same one. */
    cr_assert_eq(h_stop(p, true), -9);
    p = h_spawn(&e, "process", env);
    wait_started(&e, 2);
    describe_group(&e, got, sizeof got);
    cr_assert_str_eq(got, "member factord-test-process-1 cooperative-sticky");
    cr_assert_eq(h_stop(p, false), 0);
    h_env_done(&e);
}
