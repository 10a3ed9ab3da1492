/*
 * tests/integration/test_poison.c - bad input on the commands topic, through
 * the real processor and relay (brief §2; docs/poison-input.md has the
 * table this test checks, row by row).
 *
 * Every row is produced to the commands topic with a key of its own
 * ("poison-<row>"), followed by one good command. The processor must decide
 * the good command (it is not stuck behind the bad ones), keep running, and
 * exit 0 on SIGTERM; every bad row must be on the dead-letter topic with
 * its original key and a factord-reason naming the problem, and get a
 * FACTORD-Dec01 reply exactly when its id and replyTo could be read. A
 * well-formed command for an instance factord has never seen is no poison:
 * it is decided like any other (factord has no instance registry) and its
 * unknown user gets AUTH-7fs1e (LockUser: COMMAND-5M9fs).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "tests/integration/harness.h"

#define OWNER "org-1"
#define DLQ_MAX 100000            /* FACTORD_DLQ_MAX_BYTES of this test */
#define BIG (10 * 1024 * 1024)    /* the 10 MB record (the test broker takes 16 MB) */

typedef struct {
    const char *name;
    char *value;            /* malloc'd */
    size_t len;
    const char *reason;     /* substring of factord-reason; NULL: not a dead letter */
    char id[37];            /* "" when no reply is expected */
    int http;               /* the reply's httpStatus when one is expected */
    const char *err_id;     /* its ZITADEL/factord error id */
} row;

static char *text(const char *s, size_t *len)
{
    char *v = strdup(s);
    cr_assert_not_null(v);
    *len = strlen(v);
    return v;
}

/* A command built by the harness with one member set (value NULL: removed). */
static char *with_member(const h_env *e, const char *type, const char *user, const char *key, json_t *value,
                         char *id, size_t *len)
{
    char *c = h_command(e, type, user, OWNER, NULL, id);
    json_t *j = json_loads(c, 0, NULL);
    free(c);
    if (value)
        json_object_set_new(j, key, value);
    else
        json_object_del(j, key);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    *len = strlen(s);
    return s;
}

/* The command's JSON with `splice` inserted right after its opening brace. */
static char *spliced(const h_env *e, const char *type, const char *splice, char *id, size_t *len)
{
    char *c = h_command(e, type, "u-poison", OWNER, NULL, id);
    size_t n = strlen(c) + strlen(splice) + 1;
    char *s = malloc(n);
    cr_assert_not_null(s);
    snprintf(s, n, "{%s%s", splice, c + 1);
    free(c);
    *len = strlen(s);
    return s;
}

Test(poison, every_bad_record_is_dead_lettered_and_the_processor_goes_on, .timeout = 300)
{
    h_env e;
    h_env_init(&e, "poison");
    char dlq_max[64];
    snprintf(dlq_max, sizeof dlq_max, "FACTORD_DLQ_MAX_BYTES=%d", DLQ_MAX);
    const char *extra[] = {dlq_max, NULL};
    pid_t proc = h_spawn(&e, "process", extra), relay = h_spawn(&e, "relay", extra);

    row rows[32];
    size_t n = 0;
    char id[37];
#define ROW(nm, val, ln, rsn, rid, st, eid)                                                                  \
    do {                                                                                                     \
        rows[n] = (row){.name = (nm), .value = (val), .len = (ln), .reason = (rsn), .http = (st), .err_id = (eid)}; \
        snprintf(rows[n].id, sizeof rows[n].id, "%s", (rid));                                                \
        n++;                                                                                                 \
    } while (0)
    size_t len;
    char *v;

    v = text("this is not JSON", &len);
    ROW("not-json", v, len, "not JSON", "", 0, NULL);

    v = text("", &len);
    ROW("empty", v, 0, "not JSON", "", 0, NULL);

    /* 5000 nested arrays: jansson stops at its depth limit (2048). */
    {
        size_t depth = 5000;
        char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u-poison", OWNER, NULL, id);
        size_t cl = strlen(c), cap = cl + 2 * depth + 16;
        v = malloc(cap);
        cr_assert_not_null(v);
        memcpy(v, c, cl - 1); /* without the closing brace */
        len = cl - 1;
        len += (size_t)snprintf(v + len, cap - len, ",\"x\":");
        memset(v + len, '[', depth);
        len += depth;
        memset(v + len, ']', depth);
        len += depth;
        v[len++] = '}';
        free(c);
        ROW("deep-nesting", v, len, "not JSON", "", 0, NULL);
    }

    /* A 60,000-byte user id: inside the 64 KiB record limit, over the field's. */
    {
        char *huge = malloc(60001);
        memset(huge, 'u', 60000);
        huge[60000] = '\0';
        v = with_member(&e, "AddMyAuthFactorOTPSMS", "u-poison", "userId", json_string(huge), id, &len);
        free(huge);
        ROW("huge-string", v, len, "field \"userId\": too long", id, 400, "FACTORD-Dec01");
    }

    /* Invalid UTF-8 (a lone continuation byte) in a string: no lenient
     * reading either, so no reply. */
    {
        char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u-poison", OWNER, NULL, id);
        char *at = strstr(c, "u-poison");
        at[1] = (char)0x80;
        v = c;
        len = strlen(c);
        ROW("invalid-utf8", v, len, "not JSON", "", 0, NULL);
    }

    /* An escaped NUL in the user id: refused, but the id is readable. */
    v = with_member(&e, "AddMyAuthFactorOTPSMS", "u-poison", "userId", json_stringn("u\0x", 3), id, &len);
    ROW("nul-escaped", v, len, "NUL", id, 400, "FACTORD-Dec01");

    /* A raw NUL byte inside the record. */
    {
        char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u-poison", OWNER, NULL, id);
        len = strlen(c); /* the whole record, the NUL included */
        strstr(c, "u-poison")[1] = '\0';
        v = c;
        ROW("nul-raw", v, len, "not JSON", "", 0, NULL);
    }

    v = spliced(&e, "AddMyAuthFactorOTPSMS", "\"userId\":\"someone-else\",", id, &len);
    ROW("duplicate-key", v, len, "duplicate", id, 400, "FACTORD-Dec01");

    v = with_member(&e, "AddMyAuthFactorOTPSMS", "u-poison", "type", json_string("DropAllTables"), id, &len);
    ROW("unknown-type", v, len, "unknown command type", id, 400, "FACTORD-Dec01");

    v = with_member(&e, "AddMyAuthFactorOTPSMS", "u-poison", "instanceId", NULL, id, &len);
    ROW("missing-field", v, len, "field \"instanceId\": missing", id, 400, "FACTORD-Dec01");

    v = with_member(&e, "AddMyAuthFactorOTPSMS", "u-poison", "instanceId", json_integer(5), id, &len);
    ROW("mistyped-field", v, len, "field \"instanceId\": expected a string", id, 400, "FACTORD-Dec01");

    v = with_member(&e, "AddMyAuthFactorOTPSMS", "u-poison", "id", NULL, id, &len);
    ROW("missing-id", v, len, "field \"id\": missing", "", 0, NULL);

    /* An unknown member whose name is cut inside a character in the reason:
     * before the fix the reason was invalid UTF-8 and the processor aborted
     * on this record, again at every redelivery (found by fuzz_command). */
    v = spliced(&e, "AddMyAuthFactorOTPSMS",
                "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\":1,", id, &len);
    ROW("unknown-field-utf8-cut", v, len, "unknown field", id, 400, "FACTORD-Dec01");

    /* 10 MB: refused by size before parsing (no reply), copied truncated. */
    v = malloc(BIG);
    cr_assert_not_null(v);
    memset(v, ' ', BIG);
    {
        char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u-poison", OWNER, NULL, id);
        memcpy(v, c, strlen(c));
        free(c);
    }
    ROW("10mb", v, BIG, "too large", "", 0, NULL);

    /* Not poison: well-formed commands for an instance nobody has used. */
    {
        char *c = h_command(&e, "AddMyAuthFactorOTPSMS", "u-nobody", OWNER, NULL, id);
        json_t *j = json_loads(c, 0, NULL);
        free(c);
        json_object_set_new(j, "instanceId", json_string("instance-that-does-not-exist"));
        v = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        ROW("unknown-instance", v, strlen(v), NULL, id, 401, "AUTH-7fs1e");
        c = h_command(&e, "LockUser", "u-nobody", OWNER, NULL, id);
        j = json_loads(c, 0, NULL);
        free(c);
        json_object_set_new(j, "instanceId", json_string("instance-that-does-not-exist"));
        v = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        ROW("unknown-instance-admin", v, strlen(v), NULL, id, 404, "COMMAND-5M9fs");
    }

    size_t want_dlq = 0, want_replies = 0;
    for (size_t i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "poison-%s", rows[i].name);
        h_produce(&e, e.commands, key, rows[i].value, rows[i].len);
        want_dlq += rows[i].reason != NULL;
        want_replies += rows[i].id[0] != '\0';
    }
    char good[37];
    json_t *imp = json_pack("{s:s, s:{s:s, s:s}, s:{s:s}}", "userName", "poison-good", "profile", "firstName", "Ada",
                            "lastName", "Lovelace", "email", "email", "ada@example.com");
    char *c = h_command(&e, "ImportHumanUser", "u-good", OWNER, imp, good);
    h_produce(&e, e.commands, "u-good", c, strlen(c));
    free(c);

    const char *p[] = {e.instance, "u-good"};
    long got = 0;
    for (int64_t end = es_clock_mono_ms() + 90000; es_clock_mono_ms() < end; es_sleep_ms(200))
        if ((got = h_sql_long(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2",
                              2, p)) > 0)
            break;
    cr_assert_eq(got, 1, "the good command after the poison is decided");

    json_t *dlq = h_read_topic(&e, e.dlq, want_dlq, 90000);
    /* One more than expected, so that an extra reply would show (waits 15 s). */
    json_t *replies = h_read_topic(&e, e.replies, want_replies + 1, 15000);
    cr_expect_eq(json_array_size(dlq), want_dlq, "dead letters: %zu, want %zu", json_array_size(dlq), want_dlq);
    for (size_t i = 0; i < n; i++) {
        const row *r = &rows[i];
        char key[64];
        snprintf(key, sizeof key, "poison-%s", r->name);
        json_t *rec = NULL, *x;
        size_t k;
        json_array_foreach(dlq, k, x) {
            if (strcmp(json_string_value(json_object_get(x, "key")), key) == 0)
                rec = x;
        }
        if (!r->reason) {
            cr_expect_null(rec, "%s: not a dead letter", r->name);
        } else if (!rec) {
            cr_expect_fail("%s: not on the dead-letter topic", r->name);
        } else {
            json_t *h = json_object_get(rec, "headers");
            const char *reason = json_string_value(json_object_get(h, "factord-reason"));
            cr_expect(reason && strstr(reason, r->reason), "%s: reason \"%s\" lacks \"%s\"", r->name,
                      reason ? reason : "(none)", r->reason);
            const char *value = json_string_value(json_object_get(rec, "value"));
            size_t vlen = json_string_length(json_object_get(rec, "value"));
            if (r->len > DLQ_MAX) {
                char from[32];
                snprintf(from, sizeof from, "%zu", r->len);
                cr_expect_str_eq(json_string_value(json_object_get(h, "factord-truncated-from")), from, "%s", r->name);
                cr_expect_eq(vlen, (size_t)DLQ_MAX, "%s: truncated to FACTORD_DLQ_MAX_BYTES", r->name);
            } else if (value && strcmp(value, "<binary>") != 0) {
                cr_expect_null(json_object_get(h, "factord-truncated-from"), "%s", r->name);
                cr_expect_eq(vlen, r->len, "%s: the original value", r->name);
                cr_expect(memcmp(value, r->value, r->len) == 0, "%s: the original value", r->name);
            }
        }
        json_t *reply = r->id[0] ? h_find_reply(replies, r->id) : NULL;
        if (!r->id[0])
            continue;
        if (!reply)
            cr_expect_fail("%s: no reply", r->name);
        else {
            json_t *b = json_loads(json_string_value(json_object_get(reply, "value")), 0, NULL);
            cr_expect_eq(json_integer_value(json_object_get(b, "httpStatus")), r->http, "%s", r->name);
            json_t *det = json_array_get(json_object_get(json_object_get(b, "body"), "details"), 0);
            cr_expect_str_eq(json_string_value(json_object_get(det, "id")), r->err_id, "%s", r->name);
            json_decref(b);
        }
    }
    cr_expect_eq(json_array_size(replies), want_replies, "replies: exactly the readable ones");
    json_decref(dlq);
    json_decref(replies);
    for (size_t i = 0; i < n; i++)
        free(rows[i].value);
    cr_expect_eq(h_stop(proc, false), 0, "the processor is still running and stops cleanly");
    cr_expect_eq(h_stop(relay, false), 0);
    h_env_done(&e);
}
