/*
 * tests/integration/test_pipeline.c - the write path end to end on the real
 * servers: `factord process` and `factord relay` as child processes, commands
 * produced to Kafka, events and replies read back from Kafka and PostgreSQL.
 *
 * Covers brief §4 invariants 1, 3, 4, 5 and 6 (2 and 8 are in test_store),
 * and the dead-letter path.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"
#include "infra/base/clock.h"
#include "infra/components/processor.h"
#include "tests/integration/harness.h"

#define OWNER "org-1"

static void send_cmd(const h_env *e, const char *type, const char *user, json_t *payload, char *id)
{
    char *c = h_command(e, type, user, OWNER, payload, id);
    h_produce(e, e->commands, user, c, strlen(c));
    free(c);
}

static long count_events(const h_env *e, const char *user, const char *type)
{
    const char *p[] = {e->instance, user, type};
    return h_sql_long(e,
                      "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2 "
                      "AND ($3 = '' OR type = $3)",
                      3, p);
}

/* Wait until the user has n events of type (or the timeout). */
static long wait_events(const h_env *e, const char *user, const char *type, long n, int timeout_ms)
{
    int64_t end = es_clock_mono_ms() + timeout_ms;
    long got;
    while ((got = count_events(e, user, type)) < n && es_clock_mono_ms() < end)
        es_sleep_ms(100);
    return got;
}

static void assert_reply(json_t *replies, const char *cmd_id, int http, const char *body_text)
{
    json_t *rec = h_find_reply(replies, cmd_id);
    cr_assert_not_null(rec, "no reply for command %s", cmd_id);
    json_t *reply = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
    cr_assert_not_null(reply);
    cr_assert_str_eq(json_string_value(json_object_get(reply, "commandId")), cmd_id);
    cr_assert_eq(json_integer_value(json_object_get(reply, "httpStatus")), http);
    json_t *want = json_loads(body_text, 0, NULL);
    cr_assert_not_null(want, "bad expected body in test");
    char *got = json_dumps(json_object_get(reply, "body"), JSON_COMPACT | JSON_SORT_KEYS);
    char *exp = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(got, exp);
    free(got);
    free(exp);
    json_decref(want);
    json_decref(reply);
}

#define BODY_Q54J2 h_data("replies/add_otp_sms_4_not_ready.json")
#define BODY_AD3G2 h_data("replies/add_otp_sms_3_already_ready.json")
#define BODY_QSF2S h_data("replies/add_otp_sms_1_user_id_missing.json")
#define BODY_7FS1E h_data("replies/add_otp_sms_2_token_invalid.json")

Test(pipeline, decides_and_publishes_the_otp_sms_table, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "table");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    char id[37], add_ok[37], add_again[37], add_nophone[37], add_noid[37], add_unknown[37], add_other_org[37];
    send_cmd(&e, "ImportHumanUser", "u-ready", h_import_payload("ready", "+41 79 123 45 67", true), id);
    send_cmd(&e, "ImportHumanUser", "u-nophone", h_import_payload("nophone", NULL, false), id);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u-ready", NULL, add_ok);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u-ready", NULL, add_again);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u-nophone", NULL, add_nophone);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "", NULL, add_noid);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u-never-imported", NULL, add_unknown);
    char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u-nophone", "org-2", NULL, add_other_org);
    h_produce(&e, e.commands, "u-nophone", c, strlen(c));
    free(c);

    json_t *replies = h_read_topic(&e, e.replies, 5, 60000);
    cr_assert_eq(json_array_size(replies), 5, "got %zu replies", json_array_size(replies));
    assert_reply(replies, add_again, 409, BODY_AD3G2);
    assert_reply(replies, add_nophone, 400, BODY_Q54J2);
    assert_reply(replies, add_noid, 400, BODY_QSF2S);
    assert_reply(replies, add_unknown, 401, BODY_7FS1E);
    assert_reply(replies, add_other_org, 401, BODY_7FS1E);
    cr_assert_null(h_find_reply(replies, add_ok), "successes are replied by the projector, not the processor");

    /* The accepted command's event, on PostgreSQL and on the events topic. */
    cr_assert_eq(count_events(&e, "u-ready", "user.human.otp.sms.added"), 1);
    json_t *events = h_read_topic(&e, e.events, 4, 60000); /* added+verified, added, otp */
    cr_assert_eq(json_array_size(events), 4);
    bool saw_otp = false;
    size_t i;
    json_t *rec;
    json_array_foreach(events, i, rec) {
        json_t *ev = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
        cr_assert_not_null(ev);
        cr_assert_str_eq(json_string_value(json_object_get(ev, "aggregateId")),
                         json_string_value(json_object_get(rec, "key")), "events are keyed by user id");
        if (strcmp(json_string_value(json_object_get(ev, "type")), "user.human.otp.sms.added") == 0) {
            saw_otp = true;
            cr_assert_str_eq(json_string_value(json_object_get(ev, "sequence")), "3");
            cr_assert_str_eq(json_string_value(json_object_get(ev, "commandId")), add_ok);
            cr_assert(json_is_true(json_object_get(ev, "lastOfCommand")));
            cr_assert_str_eq(json_string_value(json_object_get(ev, "resourceOwner")), OWNER);
        }
        json_decref(ev);
    }
    cr_assert(saw_otp);
    /* The stored outcome of the accepted command is the success body. */
    const char *p[] = {add_ok};
    cr_assert_eq(h_sql_long(&e, "SELECT http_status FROM factord.commands WHERE id = $1::uuid", 1, p), 200);
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.commands WHERE id = $1::uuid AND "
                            "body->'details'->>'sequence' = '3'",
                            1, p),
                 1);
    json_decref(events);
    json_decref(replies);
    cr_assert_eq(h_stop(proc, false), 0, "process exits 0 on SIGTERM");
    cr_assert_eq(h_stop(relay, false), 0, "relay exits 0 on SIGTERM");
    h_env_done(&e);
}

Test(pipeline, reused_command_id, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "reuse");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    char id[37], add[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", NULL, false), id);
    char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u1", OWNER, NULL, add);
    h_produce(&e, e.commands, "u1", c, strlen(c)); /* rejected: no phone */
    h_produce(&e, e.commands, "u1", c, strlen(c)); /* same id, same content */
    /* same id, other content */
    json_t *j = json_loads(c, 0, NULL);
    json_object_set_new(j, "type", json_string("RemoveMyPhone"));
    char *c2 = json_dumps(j, JSON_COMPACT);
    h_produce(&e, e.commands, "u1", c2, strlen(c2));
    json_t *replies = h_read_topic(&e, e.replies, 3, 60000);
    cr_assert_eq(json_array_size(replies), 3);
    json_t *r0 = json_object_get(json_array_get(replies, 0), "value");
    json_t *r1 = json_object_get(json_array_get(replies, 1), "value");
    cr_assert_str_eq(json_string_value(r0), json_string_value(r1), "a repeated command gets the same reply");
    json_t *r2 = json_loads(json_string_value(json_object_get(json_array_get(replies, 2), "value")), 0, NULL);
    cr_assert_eq(json_integer_value(json_object_get(r2, "httpStatus")), 400);
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r2, "body"), "message")), "FACTORD-Idem1"));
    cr_assert_eq(count_events(&e, "u1", ""), 1, "only user.human.added: nothing appended for the reuses");
    const char *p[] = {add};
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) FROM factord.commands WHERE id = $1::uuid", 1, p), 1);
    json_decref(r2);
    json_decref(j);
    json_decref(replies);
    free(c);
    free(c2);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

/* A user name is unique per instance, case-insensitive: against a name
 * another import of the same batch claimed (decided in memory) and against
 * factord.users (the batch's one look-up of all its imports' names). */
Test(pipeline, user_names_are_unique_within_a_batch_and_against_the_table, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "names");
    char id3[37], id4[37], id5[37], id2[37];
    /* Queued before the processor starts: one batch. */
    send_cmd(&e, "ImportHumanUser", "u3", h_import_payload("same@example.com", NULL, false), id3);
    send_cmd(&e, "ImportHumanUser", "u4", h_import_payload("SAME@example.com", NULL, false), id4);
    send_cmd(&e, "ImportHumanUser", "u5", h_import_payload("other@example.com", NULL, false), id5);
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    cr_assert_eq(wait_events(&e, "u5", "user.human.added", 1, 60000), 1);
    /* A later batch: the name is in the table now. */
    send_cmd(&e, "ImportHumanUser", "u2", h_import_payload("Other@Example.COM", NULL, false), id2);
    json_t *replies = h_read_topic(&e, e.replies, 2, 60000);
    cr_assert_eq(json_array_size(replies), 2, "two rejections, no more");
    const char *ids[] = {id4, id2};
    for (int i = 0; i < 2; i++) {
        json_t *rec = h_find_reply(replies, ids[i]);
        cr_assert_not_null(rec, "the rejection of command %d", i);
        json_t *r = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
        cr_assert_eq(json_integer_value(json_object_get(r, "httpStatus")), 409);
        cr_assert(strstr(json_string_value(json_object_get(json_object_get(r, "body"), "message")), "V3-DKcYh"),
                  "ZITADEL's id for a taken user name");
        json_decref(r);
    }
    cr_assert_eq(count_events(&e, "u3", ""), 1, "the first claim wins");
    cr_assert_eq(count_events(&e, "u4", ""), 0, "nothing appended for a taken name");
    cr_assert_eq(count_events(&e, "u2", ""), 0, "nothing appended for a taken name");
    json_decref(replies);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

Test(pipeline, racing_adds_for_one_user_through_kafka, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "race");
    char id[37], a[37], b[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", "+41791112233", true), id);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, a);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, b);
    /* Two processors in one group, started together. */
    pid_t p1 = h_spawn(&e, "process", NULL), p2 = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    json_t *replies = h_read_topic(&e, e.replies, 1, 60000);
    cr_assert_eq(json_array_size(replies), 1, "exactly one of the two is rejected");
    assert_reply(replies, b, 409, BODY_AD3G2);
    cr_assert_eq(count_events(&e, "u1", "user.human.otp.sms.added"), 1);
    json_decref(replies);
    h_stop(p1, false);
    h_stop(p2, false);
    h_stop(relay, false);
    h_env_done(&e);
}

/* Invariant 3 without Kafka's help: two processors on two connections race
 * for the same users, batch against batch. */
typedef struct {
    const h_env *e;
    es_record *recs;
    size_t n;
    size_t accepted;
} racer;

static void *race_run(void *arg)
{
    racer *r = arg;
    es_store *st = h_store(r->e);
    unsigned char key[32] = {1};
    es_codekey ck;
    es_codekey_init(&ck, key);
    es_processor_opts o = {.replies_topic = r->e->replies, .dlq_topic = r->e->dlq, .dlq_max_bytes = 1000,
                           .code_ttl_s = 60, .code_length = 6, .code_key = &ck};
    es_processor *p = es_processor_new(st, &o);
    es_batch_stats bs;
    es_error err = {0};
    es_result rc = es_processor_run_batch(p, r->recs, r->n, &bs, &err);
    cr_assert_eq(rc, ES_OK, "%s", err.text);
    r->accepted = bs.accepted;
    es_processor_free(p);
    es_store_free(st);
    return NULL;
}

Test(pipeline, racing_processors_never_both_succeed, .timeout = 120)
{
    h_env e;
    h_env_init(&e, "race2");
    enum { USERS = 40 };
    /* Import the users with verified phones, one batch. */
    es_record imp[USERS];
    char *bufs[USERS * 3];
    char name[32], id[37];
    for (int i = 0; i < USERS; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        bufs[i] = h_command(&e, "ImportHumanUser", name, OWNER, h_import_payload(name, "+41791112233", true), id);
        imp[i] = (es_record){.value = bufs[i], .value_len = strlen(bufs[i]), .topic = "x"};
    }
    racer r0 = {.e = &e, .recs = imp, .n = USERS};
    race_run(&r0);
    cr_assert_eq(r0.accepted, USERS);
    /* Each racer adds the factor for every user, in opposite orders. */
    es_record ra[USERS], rb[USERS];
    for (int i = 0; i < USERS; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        bufs[USERS + i] = h_command(&e, "AddMyAuthFactorOTPSMS", name, OWNER, NULL, id);
        ra[i] = (es_record){.value = bufs[USERS + i], .value_len = strlen(bufs[USERS + i]), .topic = "x"};
        snprintf(name, sizeof name, "user-%d", USERS - 1 - i);
        bufs[2 * USERS + i] = h_command(&e, "AddMyAuthFactorOTPSMS", name, OWNER, NULL, id);
        rb[i] = (es_record){.value = bufs[2 * USERS + i], .value_len = strlen(bufs[2 * USERS + i]), .topic = "x"};
    }
    racer a = {.e = &e, .recs = ra, .n = USERS}, b = {.e = &e, .recs = rb, .n = USERS};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race_run, &a);
    pthread_create(&tb, NULL, race_run, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cr_assert_eq(a.accepted + b.accepted, USERS, "a: %zu b: %zu", a.accepted, b.accepted);
    const char *p[] = {e.instance};
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.events WHERE instance_id = $1 "
                            "AND type = 'user.human.otp.sms.added'",
                            1, p),
                 USERS);
    /* Invariant 1: per-user sequences are 1..n without gaps. */
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM (SELECT aggregate_id, max(sequence) m, count(*) c "
                            "FROM factord.events WHERE instance_id = $1 GROUP BY aggregate_id) s "
                            "WHERE m <> c",
                            1, p),
                 0);
    for (int i = 0; i < USERS * 3; i++)
        free(bufs[i]);
    h_env_done(&e);
}

Test(pipeline, processor_killed_between_commit_and_offset_store, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "crash_commit");
    char id[37], rej[37], ok[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", NULL, false), id);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, rej); /* rejected: no phone */
    send_cmd(&e, "SetMyPhone", "u1", json_pack("{s:s}", "phone", "+41795556677"), ok);
    static const char *const fp[] = {"FACTORD_FAILPOINT=process.after_commit", NULL};
    pid_t proc = h_spawn(&e, "process", fp);
    cr_assert_eq(h_wait(proc, 60000), -9, "the failpoint kills the processor after its first commit");
    long events_after_crash = count_events(&e, "u1", "");
    cr_assert_geq(events_after_crash, 1);
    proc = h_spawn(&e, "process", NULL);
    pid_t relay = h_spawn(&e, "relay", NULL);
    /* Everything decided: import (1) + phone.changed + phone.code.added. */
    cr_assert_eq(wait_events(&e, "u1", "", 3, 60000), 3);
    /* Batch committed whole before the crash: the rejection once, then every
     * command of the redelivered batch replied from its stored outcome. */
    size_t want_replies = events_after_crash == 3 ? 4 : 2;
    json_t *replies = h_read_topic(&e, e.replies, want_replies, 30000);
    cr_assert_geq(json_array_size(replies), want_replies);
    size_t i, n_rej = 0;
    json_t *rec;
    const char *first = NULL;
    json_array_foreach(replies, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "key")), rej) != 0)
            continue;
        n_rej++;
        const char *v = json_string_value(json_object_get(rec, "value"));
        if (!first)
            first = v;
        cr_assert_str_eq(v, first, "the redelivered command gets the same reply");
    }
    if (events_after_crash == 3)
        cr_assert_eq(n_rej, 2, "the whole batch was committed before the crash, so it is replied twice");
    else
        cr_assert_geq(n_rej, 1);
    es_sleep_ms(1500); /* let a wrong second decision show up, if there were one */
    cr_assert_eq(count_events(&e, "u1", ""), 3, "redelivery appended nothing");
    const char *p[] = {e.instance};
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.commands c WHERE c.instance_id = $1", 1, p),
                 3, "each command decided once");
    json_decref(replies);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

/* The relay sleeps until a commit notifies it (LISTEN/NOTIFY), not until
 * its idle fallback: with FACTORD_RELAY_IDLE_MS at a minute, committed
 * events still reach the topic within seconds, and SIGTERM still stops it
 * at once. */
Test(pipeline, relay_wakes_on_commit_not_on_idle_fallback, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "notify");
    static const char *const idle[] = {"FACTORD_RELAY_IDLE_MS=60000", NULL};
    pid_t relay = h_spawn(&e, "relay", idle), proc = h_spawn(&e, "process", NULL);
    char id[37], add[37];
    /* Committed after the relay's first (empty) read, most likely: the
     * processor is still joining its group. */
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", "+41791112233", true), id);
    json_t *events = h_read_topic(&e, e.events, 2, 30000);
    cr_assert_eq(json_array_size(events), 2, "the import's events were not published within 30 s");
    json_decref(events);
    es_sleep_ms(1000); /* the relay is surely idle now */
    int64_t sent = es_clock_mono_ms();
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, add);
    events = h_read_topic(&e, e.events, 3, 10000);
    int64_t took = es_clock_mono_ms() - sent;
    cr_assert_eq(json_array_size(events), 3, "the otp event was not published within 10 s (idle 60 s)");
    cr_assert_lt(took, 5000, "published %lld ms after the send: the relay waited for its fallback",
                 (long long)took);
    json_decref(events);
    int64_t stopping = es_clock_mono_ms();
    cr_assert_eq(h_stop(relay, false), 0, "relay exits 0 on SIGTERM");
    cr_assert_lt(es_clock_mono_ms() - stopping, 3000, "the relay's wait ignored SIGTERM");
    h_stop(proc, false);
    h_env_done(&e);
}

Test(pipeline, relay_killed_mid_stream_loses_nothing, .timeout = 240)
{
    h_env e;
    h_env_init(&e, "crash_relay");
    enum { USERS = 150 };
    char name[32], id[37];
    for (int i = 0; i < USERS; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        send_cmd(&e, "ImportHumanUser", name, h_import_payload(name, "+41791112233", true), id);
        send_cmd(&e, "AddMyAuthFactorOTPSMS", name, NULL, id);
    }
    pid_t proc = h_spawn(&e, "process", NULL);
    const char *p[] = {e.instance};
    long want = 0;
    int64_t end = es_clock_mono_ms() + 60000;
    while ((want = h_sql_long(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1", 1, p)) <
               USERS * 3 &&
           es_clock_mono_ms() < end)
        es_sleep_ms(200);
    cr_assert_eq(want, USERS * 3);
    static const char *const fp[] = {"FACTORD_FAILPOINT=relay.after_produce:3", "FACTORD_RELAY_BATCH=40", NULL};
    pid_t relay = h_spawn(&e, "relay", fp);
    cr_assert_eq(h_wait(relay, 60000), -9, "the relay dies in its third page");
    relay = h_spawn(&e, "relay", NULL);
    json_t *events = h_read_topic(&e, e.events, (size_t)want, 90000);
    cr_assert_geq(json_array_size(events), (size_t)want);
    /* Every (user, sequence) of the log is on the topic, and per user the
     * first occurrences come in sequence order. */
    json_t *seen = json_object();
    size_t i;
    json_t *rec;
    json_array_foreach(events, i, rec) {
        json_t *ev = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
        const char *user = json_string_value(json_object_get(ev, "aggregateId"));
        long seq = strtol(json_string_value(json_object_get(ev, "sequence")), NULL, 10);
        json_t *last = json_object_get(seen, user);
        long last_seq = last ? (long)json_integer_value(last) : 0;
        cr_assert(seq <= last_seq + 1, "user %s: sequence %ld after %ld (a gap in order)", user, seq, last_seq);
        if (seq == last_seq + 1)
            json_object_set_new(seen, user, json_integer(seq));
        json_decref(ev);
    }
    cr_assert_eq(json_object_size(seen), USERS);
    const char *k;
    json_t *v;
    json_object_foreach(seen, k, v) cr_assert_eq(json_integer_value(v), 3, "user %s", k);
    json_decref(seen);
    json_decref(events);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

Test(pipeline, malformed_records_are_dead_lettered, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "dlq");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    h_produce(&e, e.commands, "u1", "this is not JSON", 16);
    char bad_id[37];
    char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u1", OWNER, NULL, bad_id);
    json_t *j = json_loads(c, 0, NULL);
    json_object_set_new(j, "instanceId", json_integer(5)); /* wrong type, id readable */
    char *wrong = json_dumps(j, JSON_COMPACT);
    h_produce(&e, e.commands, "u1", wrong, strlen(wrong));
    size_t big_len = 2 * 1024 * 1024;
    char *big = malloc(big_len);
    memset(big, 'x', big_len);
    big[0] = '{';
    h_produce(&e, e.commands, "u1", big, big_len);
    char good[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", NULL, false), good);

    cr_assert_eq(wait_events(&e, "u1", "user.human.added", 1, 60000), 1, "the good command after them is decided");
    json_t *dlq = h_read_topic(&e, e.dlq, 3, 60000);
    cr_assert_eq(json_array_size(dlq), 3);
    json_t *r0 = json_array_get(dlq, 0), *r1 = json_array_get(dlq, 1), *r2 = json_array_get(dlq, 2);
    cr_assert_str_eq(json_string_value(json_object_get(r0, "value")), "this is not JSON");
    cr_assert_str_eq(json_string_value(json_object_get(r0, "key")), "u1");
    cr_assert_not_null(json_object_get(json_object_get(r0, "headers"), "factord-reason"));
    cr_assert_str_eq(json_string_value(json_object_get(r1, "value")), wrong);
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r1, "headers"), "factord-reason")),
                     "instanceId"));
    cr_assert(strstr(json_string_value(json_object_get(json_object_get(r2, "headers"), "factord-reason")),
                     "too large"));
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r2, "headers"), "factord-truncated-from")),
                     "2097152");
    json_t *replies = h_read_topic(&e, e.replies, 1, 30000);
    json_t *rec = h_find_reply(replies, bad_id);
    cr_assert_not_null(rec, "the record whose id could be read is answered");
    json_t *reply = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
    cr_assert_eq(json_integer_value(json_object_get(reply, "httpStatus")), 400);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(reply, "body"), "code")), 3);
    json_decref(reply);
    json_decref(replies);
    json_decref(dlq);
    json_decref(j);
    free(c);
    free(wrong);
    free(big);
    cr_assert_eq(h_stop(proc, false), 0);
    h_stop(relay, false);
    h_env_done(&e);
}
