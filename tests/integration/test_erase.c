/*
 * tests/integration/test_erase.c - erasure by crypto-shredding, end to end
 * (docs/pii.md): process, relay and project on the real servers, with
 * sealing on; one user is removed while other users' commands flow
 * (imports with personal data, phone changes, locks); then every copy the
 * test can make is searched for the removed user's plaintext: a pg_dump of
 * the test's database, the events topic, the replies topic. The commands
 * topic does hold it (callers send it in clear; its retention is the
 * operator's bound, docs/pii.md), which also shows the search finds
 * plaintext where there is some. verify passes over the whole chain, and
 * the other users still read in clear through the store and the read model.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "tests/integration/harness.h"

#define OWNER "org-erase"
#define OTHERS 24
#define ROUNDS 6

/* The removed user's data, each recognisable wherever it lands. */
#define GONE "u-gone"
#define GONE_NAME "gone.user.zq"
#define GONE_FIRST "Zebedee"
#define GONE_LAST "Quixotic"
#define GONE_EMAIL "zebedee.quixotic@example.net"
#define GONE_PHONE_IN "+41 79 555 01 23"
#define GONE_PHONE "+41795550123"
#define GONE_PHONE2_IN "+41 79 555 98 76"
#define GONE_PHONE2 "+41795559876"
static const char *const needles[] = {GONE_NAME, GONE_FIRST, GONE_LAST, GONE_EMAIL, GONE_PHONE, GONE_PHONE2};
#define N_NEEDLES (sizeof needles / sizeof needles[0])

static void send_cmd(const h_env *e, const char *type, const char *user, json_t *payload, char *id)
{
    char *c = h_command(e, type, user, OWNER, payload, id);
    h_produce(e, e->commands, user, c, strlen(c));
    free(c);
}

static long count_sql(const h_env *e, const char *sql)
{
    const char *p[] = {e->instance};
    return h_sql_long(e, sql, 1, p);
}

static void wait_for(const h_env *e, const char *sql, long want, const char *what)
{
    int64_t end = es_clock_mono_ms() + 90000;
    long got = -1;
    while ((got = count_sql(e, sql)) != want && es_clock_mono_ms() < end)
        es_sleep_ms(100);
    cr_assert_eq(got, want, "%s: %ld, want %ld (see %s)", what, got, want, e->log_path);
}

/* Which needles occur in text. */
static void search(const char *where, const char *text, bool found[N_NEEDLES])
{
    for (size_t i = 0; i < N_NEEDLES; i++) {
        found[i] = strstr(text, needles[i]) != NULL;
        if (found[i])
            cr_log_info("%s holds %s", where, needles[i]);
    }
}

static void assert_none(const char *where, const char *text)
{
    bool found[N_NEEDLES];
    search(where, text, found);
    for (size_t i = 0; i < N_NEEDLES; i++)
        cr_assert_not(found[i], "%s holds the erased user's %s", where, needles[i]);
}

/* Every record's value of a topic, one per line. */
static char *topic_text(const h_env *e, const char *topic, size_t want)
{
    json_t *recs = h_read_topic(e, topic, want, 60000);
    cr_assert_geq(json_array_size(recs), want, "%s: %zu records, want %zu", topic, json_array_size(recs), want);
    size_t cap = 1, len = 0;
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) cap += strlen(json_string_value(json_object_get(r, "value"))) + 1;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    json_array_foreach(recs, i, r)
    {
        const char *v = json_string_value(json_object_get(r, "value"));
        size_t n = strlen(v);
        memcpy(out + len, v, n);
        out[len + n] = '\n';
        len += n + 1;
    }
    out[len] = '\0';
    json_decref(recs);
    return out;
}

/* The whole database as a plain-text dump (what a backup holds). */
static char *dump_database(const h_env *e)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "pg_dump --no-owner --no-privileges '%s'", e->db_url);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    buf[len] = '\0';
    cr_assert_eq(pclose(p), 0, "pg_dump failed");
    cr_assert(strstr(buf, "factord.events"), "the dump holds the log");
    return buf;
}

Test(erase, removed_user_leaves_no_plaintext_and_verify_passes, .timeout = 420)
{
    h_env e;
    h_env_init(&e, "erase");
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL), proj = h_spawn(&e, "project", NULL);

    json_t *gone = json_pack("{s:s, s:{s:s, s:s, s:s}, s:{s:s, s:b}, s:{s:s, s:b}}", "userName", GONE_NAME,
                             "profile", "firstName", GONE_FIRST, "lastName", GONE_LAST, "displayName",
                             GONE_FIRST " " GONE_LAST, "email", "email", GONE_EMAIL, "isEmailVerified", true,
                             "phone", "phone", GONE_PHONE_IN, "isPhoneVerified", true);
    send_cmd(&e, "ImportHumanUser", GONE, gone, NULL);
    for (int k = 0; k < OTHERS; k++) {
        char user[32], name[32], phone[32];
        snprintf(user, sizeof user, "u-keep-%02d", k);
        snprintf(name, sizeof name, "keep-%02d", k);
        snprintf(phone, sizeof phone, "+41 79 444 %02d %02d", k, k);
        send_cmd(&e, "ImportHumanUser", user, h_import_payload(name, phone, true), NULL);
    }
    /* the removed user changes its number once more before it goes */
    send_cmd(&e, "SetMyPhone", GONE, json_pack("{s:s}", "phone", GONE_PHONE2_IN), NULL);
    long sent = 1 + OTHERS + 1;

    /* Load: rounds of commands for the other users, the removal in the
     * middle of them, so that it shares batches with their work. */
    char remove_id[40] = "";
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < OTHERS; k++) {
            char user[32], phone[32];
            snprintf(user, sizeof user, "u-keep-%02d", k);
            if (round % 3 == 2) {
                snprintf(phone, sizeof phone, "+41 79 333 %02d %02d", k, round);
                send_cmd(&e, "SetMyPhone", user, json_pack("{s:s}", "phone", phone), NULL);
            } else {
                send_cmd(&e, round % 3 == 0 ? "LockUser" : "UnlockUser", user, NULL, NULL);
            }
            sent++;
            if (round == ROUNDS / 2 && k == OTHERS / 2) {
                send_cmd(&e, "RemoveUser", GONE, NULL, remove_id);
                sent++;
            }
        }
    }
    wait_for(&e, "SELECT count(*) FROM factord.commands WHERE instance_id = $1", sent, "commands decided");
    const char *rp[] = {remove_id};
    cr_assert_eq(h_sql_long(&e, "SELECT http_status FROM factord.commands WHERE id = $1::uuid", 1, rp), 200,
                 "RemoveUser accepted");
    /* the read models caught up: the removed user's view is gone, the others' are there */
    long events = count_sql(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1");
    wait_for(&e,
             "SELECT coalesce(sum(sequence), 0) FROM factord.projected_sequences WHERE instance_id = $1",
             count_sql(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1"), "events projected");
    cr_assert_eq(count_sql(&e, "SELECT count(*) FROM factord.user_views WHERE instance_id = $1 AND user_id = '" GONE "'"),
                 0);
    cr_assert_eq(count_sql(&e, "SELECT count(*) FROM factord.user_views WHERE instance_id = $1"), OTHERS);
    cr_assert_eq(count_sql(&e, "SELECT count(*) FROM factord.pii_keys WHERE instance_id = $1 AND wrapped IS NULL"
                               " AND user_id = '" GONE "'"),
                 1, "the removed user's key is destroyed");
    cr_assert_eq(count_sql(&e, "SELECT count(*) FROM factord.pii_keys WHERE instance_id = $1 AND wrapped IS NOT NULL"),
                 OTHERS, "the others keep theirs");
    cr_assert_eq(h_stop(proc, false), 0);
    cr_assert_eq(h_stop(relay, false), 0);
    cr_assert_eq(h_stop(proj, false), 0);

    /* 1. the database, as a backup would copy it */
    char *dump = dump_database(&e);
    assert_none("pg_dump of the database", dump);
    cr_assert(strstr(dump, "pii:v1:"), "the dump holds sealed values");
    cr_assert(strstr(dump, "+41794440707"), "the dump holds a kept user's number (its read model)");
    free(dump);

    /* 2. the events topic: every event, sealed */
    char *evts = topic_text(&e, e.events, (size_t)events);
    assert_none("the events topic", evts);
    cr_assert(strstr(evts, "\"pii\":\"pii:v1:"), "the topic carries sealed values");
    cr_assert_null(strstr(evts, "+41794440707"), "no kept user's number on the topic either");
    free(evts);

    /* 3. the replies topic */
    char *replies = topic_text(&e, e.replies, (size_t)sent);
    assert_none("the replies topic", replies);
    free(replies);

    /* 4. the commands topic holds what callers sent in clear: the search
     * finds plaintext where there is some (retention bounds it) */
    char *cmds = topic_text(&e, e.commands, (size_t)sent);
    bool found[N_NEEDLES];
    search("the commands topic", cmds, found);
    cr_assert(found[1] && found[3], "the search finds the import's names and e-mail in the commands topic");
    free(cmds);

    /* 5. verify passes over the whole chain */
    h_tool_result r;
    h_tool_run(&e, (const char *[]){"verify", NULL}, NULL, NULL, &r);
    cr_assert_eq(r.code, 0, "verify: %s %s", r.out, r.err);
    cr_assert(strstr(r.out, "ok: the log is complete"), "%s", r.out);
    cr_assert_null(strstr(r.out, "sealed "), "verify had the key: %s", r.out);
    h_tool_result_free(&r);

    /* 6. replay --open: the removed user reads as erased, the others in clear */
    h_tool_run(&e, (const char *[]){"replay", "--open", "--instance", e.instance, "--user", GONE, NULL}, NULL, NULL, &r);
    cr_assert_eq(r.code, 0, "replay: %s", r.err);
    assert_none("replay --open of the removed user", r.out);
    cr_assert(strstr(r.out, "\"pii\":\"erased\""), "%s", r.out);
    h_tool_result_free(&r);
    h_tool_run(&e, (const char *[]){"replay", "--open", "--instance", e.instance, "--user", "u-keep-07", NULL}, NULL,
               NULL, &r);
    cr_assert_eq(r.code, 0, "replay: %s", r.err);
    cr_assert(strstr(r.out, "\"email\":\"ada@example.com\""), "%s", r.out);
    cr_assert(strstr(r.out, "+41794440707"), "%s", r.out);
    h_tool_result_free(&r);

    /* 7. the other users still read in clear through the store */
    es_store *st = h_store(&e);
    dom_evt *ev = NULL;
    size_t n = 0;
    es_error err = {0};
    cr_assert_eq(es_store_user_events(st, e.instance, "u-keep-03", &ev, &n, &err), ES_OK, "%s", err.text);
    cr_assert_gt(n, 1);
    cr_assert_eq(ev[0].pii_state, DOM_PII_OPEN);
    cr_assert_str_eq(ev[0].human.last_name, "Lovelace");
    cr_assert_str_eq(ev[0].human.phone, "+41794440303");
    free(ev);
    cr_assert_eq(es_store_user_events(st, e.instance, GONE, &ev, &n, &err), ES_OK, "%s", err.text);
    for (size_t i = 0; i < n; i++)
        if (dom_evt_type_has_pii(ev[i].type))
            cr_assert_eq(ev[i].pii_state, DOM_PII_ERASED, "%s", dom_evt_type_name(ev[i].type));
    free(ev);
    es_store_free(st);
    h_env_done(&e);
}
