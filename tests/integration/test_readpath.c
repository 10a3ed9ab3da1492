/*
 * tests/integration/test_readpath.c - the read path end to end on the real
 * servers: `factord process`, `relay` and `project` as child processes,
 * commands produced to Kafka, replies read back from Kafka, the read model
 * from PostgreSQL.
 *
 * Covers brief §4.7 (successes replied by the projector after it applied
 * the event, so the caller reads its own write; rejections from the stored
 * outcome, never a success reply for them), exactly-once application by
 * (instance, user, sequence) across a projector crash, the byte-identity of
 * the projector's reply and the stored outcome, tenant isolation, the
 * factor's removal with the phone, and returnCode replies.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "domain/event.h"
#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/components/projector.h"
#include "tests/integration/harness.h"

#define OWNER "org-1"

/* --- helpers ------------------------------------------------------------------ */

/* Send a command of e's instance for user (owner org); id gets its id. */
static void send_as(const h_env *e, const char *type, const char *user, const char *org, json_t *payload, char *id)
{
    char *c = h_command(e, type, user, org, payload, id);
    h_produce(e, e->commands, user, c, strlen(c));
    free(c);
}

static void send_cmd(const h_env *e, const char *type, const char *user, json_t *payload, char *id)
{
    send_as(e, type, user, OWNER, payload, id);
}

/* A reader of the replies topic from the beginning that keeps everything
 * it has seen: {"key","value"} records in arrival order. */
typedef struct {
    rd_kafka_t *rk;
    json_t *recs;
} tail;

static void tail_open(tail *t, const h_env *e, const char *topic)
{
    es_error err = {0};
    char errstr[256];
    rd_kafka_conf_t *conf = es_kafka_conf(e->brokers, "factord-test-tail", &err);
    cr_assert_not_null(conf, "%s", err.text);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "factord-test-tail", errstr, sizeof errstr);
    t->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    cr_assert_not_null(t->rk, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = h_partitions_from_start(t->rk, topic);
    cr_assert_eq(rd_kafka_assign(t->rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);
    t->recs = json_array();
}

static void tail_poll(tail *t, int ms)
{
    int64_t end = es_clock_mono_ms() + ms;
    do {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, 50);
        if (!m)
            continue;
        if (!m->err) {
            json_t *rec = json_pack("{s:s%, s:s%}", "key", m->key ? (const char *)m->key : "",
                                    m->key ? m->key_len : 0, "value", m->payload ? (const char *)m->payload : "",
                                    m->payload ? m->len : 0);
            cr_assert_not_null(rec, "a reply that is not UTF-8 text");
            json_array_append_new(t->recs, rec);
        }
        rd_kafka_message_destroy(m);
    } while (es_clock_mono_ms() < end);
}

static size_t tail_count(const tail *t, const char *key)
{
    size_t i, n = 0;
    json_t *rec;
    json_array_foreach(t->recs, i, rec) n += strcmp(json_string_value(json_object_get(rec, "key")), key) == 0;
    return n;
}

/* The first reply to command key (its value text), waiting up to timeout. */
static const char *tail_wait(tail *t, const char *key, int timeout_ms)
{
    int64_t end = es_clock_mono_ms() + timeout_ms;
    for (;;) {
        size_t i;
        json_t *rec;
        json_array_foreach(t->recs, i, rec) {
            if (strcmp(json_string_value(json_object_get(rec, "key")), key) == 0)
                return json_string_value(json_object_get(rec, "value"));
        }
        if (es_clock_mono_ms() >= end)
            return NULL;
        tail_poll(t, 100);
    }
}

static void tail_close(tail *t)
{
    rd_kafka_consumer_close(t->rk);
    rd_kafka_destroy(t->rk);
    json_decref(t->recs);
}

/* The reply for id, parsed (new reference); fails when none comes. */
static json_t *reply_of(tail *t, const char *id, int http)
{
    const char *v = tail_wait(t, id, 60000);
    cr_assert_not_null(v, "no reply for command %s", id);
    json_t *r = json_loads(v, 0, NULL);
    cr_assert_not_null(r, "reply is not JSON: %s", v);
    cr_assert_str_eq(json_string_value(json_object_get(r, "commandId")), id);
    cr_assert_eq(json_integer_value(json_object_get(r, "httpStatus")), http, "command %s: reply %s", id, v);
    return r;
}

static size_t list_factors(const h_env *e, const char *instance, const char *user, proj_auth_factor *out,
                           size_t max)
{
    es_store *st = h_store(e);
    size_t n = 0;
    es_error err = {0};
    cr_assert_eq(es_auth_factors_list(st, instance, user, out, max, &n, &err), ES_OK, "%s", err.text);
    es_store_free(st);
    return n;
}

/* Wait until the user lists want factors. */
static size_t wait_factors(const h_env *e, const char *instance, const char *user, size_t want, int timeout_ms)
{
    proj_auth_factor f[4];
    int64_t end = es_clock_mono_ms() + timeout_ms;
    size_t n;
    while ((n = list_factors(e, instance, user, f, 4)) != want && es_clock_mono_ms() < end)
        es_sleep_ms(100);
    return n;
}

/* What the stored outcome of a success command replies, byte for byte
 * (the processor's repeated reply): {"commandId","httpStatus","body"}. */
static char *stored_reply(PGconn *c, const char *id)
{
    const char *p[] = {id};
    PGresult *r = PQexecParams(c, "SELECT http_status, body::text FROM factord.commands WHERE id = $1::uuid", 1, NULL,
                               p, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    cr_assert_eq(PQntuples(r), 1, "no command row for %s", id);
    size_t len = strlen(id) + strlen(PQgetvalue(r, 0, 1)) + 64;
    char *s = malloc(len);
    cr_assert_not_null(s);
    snprintf(s, len, "{\"commandId\":\"%s\",\"httpStatus\":%s,\"body\":%s}", id, PQgetvalue(r, 0, 0),
             PQgetvalue(r, 0, 1));
    PQclear(r);
    return s;
}

static PGconn *db(const h_env *e)
{
    PGconn *c = PQconnectdb(e->db_url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    return c;
}

static void assert_body(json_t *reply, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);
    cr_assert_not_null(want, "bad expected body in test");
    char *got = json_dumps(json_object_get(reply, "body"), JSON_COMPACT | JSON_SORT_KEYS);
    char *exp = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(got, exp);
    free(got);
    free(exp);
    json_decref(want);
}

static const char *details(json_t *reply, const char *field)
{
    return json_string_value(json_object_get(json_object_get(json_object_get(reply, "body"), "details"), field));
}

/* --- (a) the happy path -------------------------------------------------------- */

Test(readpath, add_otp_sms_replies_details_and_lists_the_factor, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "rp_add");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL);
    tail t;
    tail_open(&t, &e, e.replies);
    char imp[37], add[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("ada", "+41 79 123 45 67", true), imp);
    char *add_cmd = h_command(&e, "AddMyAuthFactorOTPSMS", "u1", OWNER, NULL, add);
    h_produce(&e, e.commands, "u1", add_cmd, strlen(add_cmd));

    json_t *r = reply_of(&t, imp, 200);
    cr_assert_str_eq(details(r, "sequence"), "2", "import: human.added + phone.verified");
    json_decref(r);
    r = reply_of(&t, add, 200);
    /* Read your write: the reply came after the read model's commit. */
    proj_auth_factor f[4];
    cr_assert_eq(list_factors(&e, e.instance, "u1", f, 4), 1, "the factor is listed when the reply arrives");
    cr_assert_eq(f[0].type, PROJ_AF_OTP_SMS);
    cr_assert_eq(f[0].state, PROJ_AF_STATE_READY);
    json_t *zj = proj_auth_factor_to_json(&f[0]);
    char *zs = json_dumps(zj, JSON_COMPACT);
    cr_assert_str_eq(zs, "{\"state\":\"AUTH_FACTOR_STATE_READY\",\"otpSms\":{}}");
    free(zs);
    json_decref(zj);

    /* The details are the appended event's. */
    PGconn *c = db(&e);
    const char *p[] = {e.instance, add};
    PGresult *ev = PQexecParams(c,
                                "SELECT sequence, (extract(epoch FROM created_at) * 1000000)::bigint,"
                                " resource_owner, type FROM factord.events"
                                " WHERE instance_id = $1 AND command_id = $2::uuid",
                                2, NULL, p, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(ev), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    cr_assert_eq(PQntuples(ev), 1);
    cr_assert_str_eq(PQgetvalue(ev, 0, 3), "user.human.otp.sms.added");
    char date[40];
    dom_time_format(strtoll(PQgetvalue(ev, 0, 1), NULL, 10), date, sizeof date);
    cr_assert_str_eq(details(r, "sequence"), PQgetvalue(ev, 0, 0));
    cr_assert_str_eq(details(r, "sequence"), "3");
    cr_assert_str_eq(details(r, "creationDate"), date);
    cr_assert_str_eq(details(r, "changeDate"), date);
    cr_assert_str_eq(details(r, "resourceOwner"), PQgetvalue(ev, 0, 2));
    cr_assert_str_eq(details(r, "resourceOwner"), OWNER);
    PQclear(ev);
    /* ... and the read-model row's. */
    json_t *dj = proj_auth_factor_details_json(&f[0]);
    char *ds = json_dumps(dj, JSON_COMPACT);
    char *rs = json_dumps(json_object_get(json_object_get(r, "body"), "details"), JSON_COMPACT);
    cr_assert_str_eq(ds, rs);
    free(ds);
    free(rs);
    json_decref(dj);
    json_decref(r);

    /* The projector's reply is the stored outcome byte for byte ... */
    char *stored = stored_reply(c, add);
    cr_assert_str_eq(tail_wait(&t, add, 1000), stored);
    free(stored);
    /* ... so a redelivered command, answered by the processor from the
     * stored outcome, gets the identical reply. */
    h_produce(&e, e.commands, "u1", add_cmd, strlen(add_cmd));
    int64_t end = es_clock_mono_ms() + 60000;
    while (tail_count(&t, add) < 2 && es_clock_mono_ms() < end)
        tail_poll(&t, 200);
    cr_assert_eq(tail_count(&t, add), 2);
    size_t i;
    json_t *rec;
    json_array_foreach(t.recs, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "key")), add) == 0)
            cr_assert_str_eq(json_string_value(json_object_get(rec, "value")), tail_wait(&t, add, 0));
    }
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1", 1, p), 3,
                 "the redelivery appended nothing");
    PQfinish(c);
    free(add_cmd);
    tail_close(&t);
    cr_assert_eq(h_stop(proj, false), 0, "project exits 0 on SIGTERM");
    cr_assert_eq(h_stop(proc, false), 0);
    cr_assert_eq(h_stop(relay, false), 0);
    h_env_done(&e);
}

/* --- (b) every rejection of brief §1 through the whole flow ------------------- */

#define BODY_Q54J2 h_data("replies/add_otp_sms_4_not_ready.json")
#define BODY_AD3G2 h_data("replies/add_otp_sms_3_already_ready.json")
#define BODY_QSF2S h_data("replies/add_otp_sms_1_user_id_missing.json")
#define BODY_7FS1E h_data("replies/add_otp_sms_2_token_invalid.json")

Test(readpath, rejections_reach_the_caller_and_get_no_success_reply, .timeout = 240)
{
    h_env e;
    h_env_init(&e, "rp_rej");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL);
    tail t;
    tail_open(&t, &e, e.replies);
    enum { SETUP = 9 };
    char setup[SETUP][37];
    send_cmd(&e, "ImportHumanUser", "u-ready", h_import_payload("ready", "+41791112233", true), setup[0]);
    send_cmd(&e, "ImportHumanUser", "u-nophone", h_import_payload("nophone", NULL, false), setup[1]);
    send_cmd(&e, "ImportHumanUser", "u-unverified", h_import_payload("unverified", "+41791112244", false), setup[2]);
    send_cmd(&e, "ImportHumanUser", "u-locked", h_import_payload("locked", "+41791112255", true), setup[3]);
    send_cmd(&e, "LockUser", "u-locked", NULL, setup[4]);
    send_cmd(&e, "ImportHumanUser", "u-inactive", h_import_payload("inactive", "+41791112266", true), setup[5]);
    send_cmd(&e, "DeactivateUser", "u-inactive", NULL, setup[6]);
    send_cmd(&e, "ImportHumanUser", "u-removed", h_import_payload("removed", "+41791112277", true), setup[7]);
    send_cmd(&e, "RemoveUser", "u-removed", NULL, setup[8]);

    struct {
        const char *user, *org;
        int http;
        const char *body; /* NULL: success */
        char id[37];
    } rows[] = {
        {"u-ready", OWNER, 200, NULL, ""},           /* row 5: accepted */
        {"u-ready", OWNER, 409, BODY_AD3G2, ""},     /* row 3: already added */
        {"u-nophone", OWNER, 400, BODY_Q54J2, ""},   /* row 4: no phone */
        {"u-unverified", OWNER, 400, BODY_Q54J2, ""},/* row 4: not verified */
        {"", OWNER, 400, BODY_QSF2S, ""},            /* row 1: user id missing */
        {"u-never", OWNER, 401, BODY_7FS1E, ""},     /* row 2: unknown */
        {"u-nophone", "org-2", 401, BODY_7FS1E, ""}, /* row 2: other organisation */
        {"u-locked", OWNER, 401, BODY_7FS1E, ""},    /* row 2: locked */
        {"u-inactive", OWNER, 401, BODY_7FS1E, ""},  /* row 2: deactivated */
        {"u-removed", OWNER, 401, BODY_7FS1E, ""},   /* row 2: removed */
    };
    size_t n_rows = sizeof rows / sizeof rows[0];
    for (size_t i = 0; i < n_rows; i++)
        send_as(&e, "AddMyAuthFactorOTPSMS", rows[i].user, rows[i].org, NULL, rows[i].id);

    for (int i = 0; i < SETUP; i++)
        json_decref(reply_of(&t, setup[i], 200));
    for (size_t i = 0; i < n_rows; i++) {
        json_t *r = reply_of(&t, rows[i].id, rows[i].http);
        if (rows[i].body)
            assert_body(r, rows[i].body);
        else
            cr_assert_str_eq(details(r, "sequence"), "3");
        json_decref(r);
    }
    /* Let a wrong extra reply (a success for a rejection) show up, if any. */
    tail_poll(&t, 3000);
    for (size_t i = 0; i < n_rows; i++)
        cr_assert_eq(tail_count(&t, rows[i].id), 1, "command %zu (%s, HTTP %d) got %zu replies", i, rows[i].user,
                     rows[i].http, tail_count(&t, rows[i].id));
    cr_assert_eq(json_array_size(t.recs), SETUP + n_rows, "one reply per command, nothing else");
    proj_auth_factor f[4];
    cr_assert_eq(list_factors(&e, e.instance, "u-ready", f, 4), 1);
    const char *users[] = {"u-nophone", "u-unverified", "u-locked", "u-inactive", "u-removed", "u-never"};
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        cr_assert_eq(list_factors(&e, e.instance, users[i], f, 4), 0, "%s has no factor", users[i]);
    tail_close(&t);
    cr_assert_eq(h_stop(proj, false), 0);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

/* --- (c) a projector killed mid-stream ---------------------------------------- */

Test(readpath, projector_killed_mid_stream_applies_once_and_replies_all, .timeout = 300)
{
    h_env e;
    h_env_init(&e, "rp_crash");
    enum { USERS = 250 };
    char (*ids)[37] = calloc(2 * USERS, sizeof *ids);
    char name[32];
    for (int i = 0; i < USERS; i++) {
        snprintf(name, sizeof name, "user-%d", i);
        send_cmd(&e, "ImportHumanUser", name, h_import_payload(name, "+41791112233", true), ids[2 * i]);
        send_cmd(&e, "AddMyAuthFactorOTPSMS", name, NULL, ids[2 * i + 1]);
    }
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    /* Killed right after its third commit, before that batch's replies
     * and offsets: the restarted projector must skip those events in
     * PostgreSQL and still send their replies. Batches of 40 split in two
     * halves on two connections (SPLIT_MIN=2): the random kill below can
     * land between the halves' commits, one half applied, the other not. */
    static const char *const fp[] = {"FACTORD_FAILPOINT=project.after_commit:3", "FACTORD_PROJECTOR_BATCH_MAX=40",
                                     "FACTORD_PROJECTOR_SPLIT_MIN=2", NULL};
    static const char *const small[] = {"FACTORD_PROJECTOR_BATCH_MAX=40", "FACTORD_PROJECTOR_SPLIT_MIN=2", NULL};
    pid_t proj = h_spawn(&e, "project", fp);
    cr_assert_eq(h_wait(proj, 90000), -9, "the failpoint kills the projector after its third commit");
    /* Then SIGKILL at a random moment once it is applying again (it first
     * waits for the dead member's session to expire). */
    const char *p[] = {e.instance};
    const char *applied_sql = "SELECT coalesce(sum(sequence), 0) FROM factord.projected_sequences"
                              " WHERE instance_id = $1";
    long before = h_sql_long(&e, applied_sql, 1, p);
    proj = h_spawn(&e, "project", small);
    int64_t until = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, applied_sql, 1, p) == before && es_clock_mono_ms() < until)
        es_sleep_ms(5);
    srand((unsigned)getpid());
    es_sleep_ms(rand() % 150);
    cr_assert_eq(h_stop(proj, true), -9);
    cr_log_info("events applied before the first kill: %ld, before the second: %ld", before,
                h_sql_long(&e, applied_sql, 1, p));
    proj = h_spawn(&e, "project", small);

    int64_t end = es_clock_mono_ms() + 120000;
    long listed = 0;
    while ((listed = h_sql_long(&e, "SELECT count(*) FROM factord.auth_factors WHERE instance_id = $1", 1, p)) <
               USERS &&
           es_clock_mono_ms() < end)
        es_sleep_ms(200);
    cr_assert_eq(listed, USERS, "every factor listed (the primary key makes it once per user)");
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.projected_sequences"
                            " WHERE instance_id = $1 AND projection = 'auth_factors' AND sequence = 3",
                            1, p),
                 USERS, "every user's three events applied, and nothing beyond");
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.auth_factors WHERE instance_id = $1"
                            " AND sequence = 3 AND state = 'AUTH_FACTOR_STATE_READY'",
                            1, p),
                 USERS);

    /* Every success replied at least once; every copy identical to the
     * stored outcome. */
    tail t;
    tail_open(&t, &e, e.replies);
    PGconn *c = db(&e);
    for (int i = 0; i < 2 * USERS; i++) {
        const char *v = tail_wait(&t, ids[i], 60000);
        cr_assert_not_null(v, "command %d (%s) never replied", i, ids[i]);
    }
    tail_poll(&t, 1000);
    size_t dup = 0;
    for (int i = 0; i < 2 * USERS; i++) {
        char *want = stored_reply(c, ids[i]);
        size_t k;
        json_t *rec;
        json_array_foreach(t.recs, k, rec) {
            if (strcmp(json_string_value(json_object_get(rec, "key")), ids[i]) == 0)
                cr_assert_str_eq(json_string_value(json_object_get(rec, "value")), want, "command %d", i);
        }
        dup += tail_count(&t, ids[i]) - 1;
        free(want);
    }
    /* Duplicates come from batches whose offsets were stored but not yet
     * committed when a projector died; how many depends on timing. */
    cr_log_info("replies: %zu, duplicates: %zu", json_array_size(t.recs), dup);
    PQfinish(c);
    tail_close(&t);
    free(ids);
    cr_assert_eq(h_stop(proj, false), 0);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

/* --- (d) removal ------------------------------------------------------------------ */

/* An event as an imported ZITADEL log would put it on the events topic:
 * no command id, ZITADEL's factor names. */
static void produce_event(const h_env *e, const char *user, int64_t seq, const char *type, json_t *payload)
{
    char seqs[24], pos[24];
    snprintf(seqs, sizeof seqs, "%lld", (long long)seq);
    snprintf(pos, sizeof pos, "%lld", (long long)(1000 + seq));
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:o}", "instanceId", e->instance,
                          "aggregateType", "user", "aggregateId", user, "sequence", seqs, "position", pos, "type",
                          type, "revision", 1, "createdAt", "2024-03-27T10:05:48.581Z", "creator", user,
                          "resourceOwner", OWNER, "payload", payload ? payload : json_object());
    char *s = json_dumps(j, JSON_COMPACT);
    h_produce(e, e->events, user, s, strlen(s));
    free(s);
    json_decref(j);
}

Test(readpath, phone_removal_removes_the_factor, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "rp_remove");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL);
    tail t;
    tail_open(&t, &e, e.replies);
    char imp[37], add[37], rm[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", "+41791112233", true), imp);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, add);
    json_decref(reply_of(&t, add, 200));
    proj_auth_factor f[4];
    cr_assert_eq(list_factors(&e, e.instance, "u1", f, 4), 1);
    send_cmd(&e, "RemoveMyPhone", "u1", NULL, rm);
    json_t *r = reply_of(&t, rm, 200);
    cr_assert_str_eq(details(r, "sequence"), "5", "phone.removed and otp.sms.removed");
    cr_assert_eq(list_factors(&e, e.instance, "u1", f, 4), 0, "gone when the reply arrives");
    json_decref(r);

    /* An imported ZITADEL log: the phone's removal alone removes the factor. */
    produce_event(&e, "z1", 1, "user.human.added", json_pack("{s:s}", "userName", "z1"));
    produce_event(&e, "z1", 2, "user.human.phone.changed", json_pack("{s:s}", "phone", "+41791112299"));
    produce_event(&e, "z1", 3, "user.human.phone.verified", NULL);
    produce_event(&e, "z1", 4, "user.human.mfa.otp.sms.added", NULL);
    cr_assert_eq(wait_factors(&e, e.instance, "z1", 1, 60000), 1, "ZITADEL's factor name is accepted");
    produce_event(&e, "z1", 4, "user.human.mfa.otp.sms.added", NULL); /* a duplicate: skipped */
    produce_event(&e, "z1", 5, "user.human.phone.removed", NULL);
    cr_assert_eq(wait_factors(&e, e.instance, "z1", 0, 60000), 0);
    const char *p[] = {e.instance, "z1"};
    cr_assert_eq(h_sql_long(&e,
                            "SELECT sequence FROM factord.projected_sequences WHERE instance_id = $1"
                            " AND user_id = $2",
                            2, p),
                 5);
    tail_close(&t);
    cr_assert_eq(h_stop(proj, false), 0);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&e);
}

/* --- (d2) reply topics ------------------------------------------------------------ */

static const char *header_of(json_t *rec, const char *name)
{
    return json_string_value(json_object_get(json_object_get(rec, "headers"), name));
}

/* The relay puts the command's reply topic beside the last event of an
 * accepted command (factord-reply-to), so the projector need not look it
 * up; an event without it (as published before that header existed) is
 * still replied, through the lookup in factord.commands. */
Test(readpath, reply_topic_travels_with_the_event_or_is_looked_up, .timeout = 240)
{
    h_env e;
    h_env_init(&e, "rp_replyto");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL);
    char imp[37], add[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", "+41791112233", true), imp);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, add);
    json_t *recs = h_read_topic(&e, e.events, 3, 60000);
    cr_assert_eq(json_array_size(recs), 3, "import (2 events) and the factor");
    size_t with = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *rec = json_array_get(recs, i);
        json_t *evt = json_loads(json_string_value(json_object_get(rec, "value")), 0, NULL);
        cr_assert_not_null(evt);
        const char *topic = header_of(rec, ES_REPLY_TO_HEADER);
        if (json_is_true(json_object_get(evt, "lastOfCommand"))) {
            cr_assert_not_null(topic, "the last event of %s carries the reply topic",
                               json_string_value(json_object_get(evt, "type")));
            cr_assert_str_eq(topic, e.replies);
            with++;
        } else {
            cr_assert_null(topic, "only the last event of a command carries it");
        }
        json_decref(evt);
    }
    cr_assert_eq(with, 2);
    json_decref(recs);

    /* u2's events reach the topic without the header (the relay is
     * stopped; they are produced as an older relay did). */
    cr_assert_eq(h_stop(relay, false), 0);
    char imp2[37], add2[37];
    send_cmd(&e, "ImportHumanUser", "u2", h_import_payload("u2", "+41791112234", true), imp2);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u2", NULL, add2);
    const char *p2[] = {e.instance, "u2"};
    int64_t deadline = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2", 2,
                      p2) < 3) {
        cr_assert_lt(es_clock_mono_ms(), deadline, "u2's commands decided");
        es_sleep_ms(50);
    }
    es_store *st = h_store(&e);
    dom_evt *evts = NULL;
    size_t n = 0;
    es_error err = {0};
    cr_assert_eq(es_store_user_events(st, e.instance, "u2", &evts, &n, &err), ES_OK, "%s", err.text);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++) {
        json_t *j = dom_evt_to_json(&evts[i]);
        char *v = json_dumps(j, JSON_COMPACT);
        h_produce(&e, e.events, "u2", v, strlen(v));
        free(v);
        json_decref(j);
    }
    free(evts);
    es_store_free(st);

    tail t;
    tail_open(&t, &e, e.replies);
    pid_t proj = h_spawn(&e, "project", NULL);
    json_t *r;
    r = reply_of(&t, add, 200);
    cr_assert_str_eq(details(r, "sequence"), "3", "by the header");
    json_decref(r);
    r = reply_of(&t, add2, 200);
    cr_assert_str_eq(details(r, "sequence"), "3", "by the lookup");
    json_decref(r);
    json_decref(reply_of(&t, imp2, 200));
    tail_close(&t);
    cr_assert_eq(h_stop(proj, false), 0);
    h_stop(proc, false);
    h_env_done(&e);
}

/* --- (e) tenants ------------------------------------------------------------------ */

Test(readpath, instances_with_the_same_user_id_stay_apart, .timeout = 180)
{
    h_env a;
    h_env_init(&a, "rp_tenant");
    h_env b = a; /* same servers, database and topics; another instance */
    snprintf(b.instance, sizeof b.instance, "%.40s-b", a.instance);
    pid_t proc = h_spawn(&a, "process", NULL), relay = h_spawn(&a, "relay", NULL),
          proj = h_spawn(&a, "project", NULL);
    tail t;
    tail_open(&t, &a, a.replies);
    char ia[37], ib[37], adda[37], addb[37], rma[37];
    send_as(&a, "ImportHumanUser", "u1", "org-a", h_import_payload("same", "+41791112233", true), ia);
    send_as(&b, "ImportHumanUser", "u1", "org-b", h_import_payload("same", "+41791114455", true), ib);
    send_as(&a, "AddMyAuthFactorOTPSMS", "u1", "org-a", NULL, adda);
    json_decref(reply_of(&t, ib, 200));
    json_t *r = reply_of(&t, adda, 200);
    cr_assert_str_eq(details(r, "resourceOwner"), "org-a");
    json_decref(r);
    proj_auth_factor f[4];
    cr_assert_eq(list_factors(&a, a.instance, "u1", f, 4), 1);
    cr_assert_str_eq(f[0].resource_owner, "org-a");
    cr_assert_eq(list_factors(&b, b.instance, "u1", f, 4), 0, "instance b sees nothing of a's factor");

    send_as(&b, "AddMyAuthFactorOTPSMS", "u1", "org-b", NULL, addb);
    r = reply_of(&t, addb, 200);
    cr_assert_str_eq(details(r, "resourceOwner"), "org-b");
    cr_assert_str_eq(details(r, "sequence"), "3", "b's own sequence");
    json_decref(r);
    cr_assert_eq(list_factors(&b, b.instance, "u1", f, 4), 1);
    cr_assert_str_eq(f[0].resource_owner, "org-b");

    send_as(&a, "RemoveMyPhone", "u1", "org-a", NULL, rma);
    json_decref(reply_of(&t, rma, 200));
    cr_assert_eq(list_factors(&a, a.instance, "u1", f, 4), 0);
    cr_assert_eq(list_factors(&b, b.instance, "u1", f, 4), 1, "a's removal leaves b's factor");
    cr_assert_eq(f[0].sequence, 3);
    const char *p[] = {"u1"};
    cr_assert_eq(h_sql_long(&a, "SELECT count(*) FROM factord.projected_sequences WHERE user_id = $1", 1, p), 2);
    tail_close(&t);
    cr_assert_eq(h_stop(proj, false), 0);
    h_stop(proc, false);
    h_stop(relay, false);
    h_env_done(&a);
}

/* --- (f) returnCode ---------------------------------------------------------------- */

Test(readpath, set_phone_with_return_code_then_verify, .timeout = 180)
{
    h_env e;
    h_env_init(&e, "rp_code");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL);
    tail t;
    tail_open(&t, &e, e.replies);
    char imp[37], set[37], verify[37], add[37];
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", NULL, false), imp);
    send_cmd(&e, "SetMyPhone", "u1", json_pack("{s:s, s:b}", "phone", "+41 79 555 66 77", "returnCode", true), set);
    json_t *r = reply_of(&t, set, 200);
    const char *code = json_string_value(json_object_get(json_object_get(r, "body"), "code"));
    cr_assert_not_null(code, "the reply carries the code");
    cr_assert_eq(strlen(code), 6);
    cr_assert_eq(strspn(code, "0123456789"), 6, "six digits: %s", code);
    cr_assert_str_eq(details(r, "sequence"), "3", "phone.changed + phone.code.added");
    char code_copy[16];
    snprintf(code_copy, sizeof code_copy, "%s", code);
    /* Apart from the code, the stored outcome (which never holds it). */
    json_t *body = json_deep_copy(json_object_get(r, "body"));
    json_object_del(body, "code");
    PGconn *c = db(&e);
    char *stored = stored_reply(c, set);
    json_t *sj = json_loads(stored, 0, NULL);
    cr_assert(json_equal(body, json_object_get(sj, "body")));
    cr_assert_null(strstr(stored, code_copy), "the stored outcome holds no code");
    json_decref(sj);
    json_decref(body);
    free(stored);
    PQfinish(c);
    json_decref(r);

    send_cmd(&e, "VerifyMyPhone", "u1", json_pack("{s:s}", "code", code_copy), verify);
    r = reply_of(&t, verify, 200);
    cr_assert_null(json_object_get(json_object_get(r, "body"), "code"));
    json_decref(r);
    send_cmd(&e, "AddMyAuthFactorOTPSMS", "u1", NULL, add);
    json_decref(reply_of(&t, add, 200));
    proj_auth_factor f[4];
    cr_assert_eq(list_factors(&e, e.instance, "u1", f, 4), 1);
    tail_close(&t);
    cr_assert_eq(h_stop(proj, false), 0);
    h_stop(proc, false);
    h_stop(relay, false);

    /* No component logged the code (past each line's timestamp). */
    FILE *lf = fopen(e.log_path, "r");
    cr_assert_not_null(lf);
    char line[8192];
    while (fgets(line, sizeof line, lf)) {
        const char *rest = strlen(line) > 40 ? line + 40 : line;
        cr_assert_null(strstr(rest, code_copy), "the code is in the log: %s", line);
    }
    fclose(lf);
    h_env_done(&e);
}
