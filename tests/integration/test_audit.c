/*
 * tests/integration/test_audit.c - the tamper-evident log, `factord verify`,
 * `factord replay` and `factord status` (infra/components/audit.h, docs/audit.md).
 *
 * Each test gets a database of its own: the chain is global to a database,
 * so another suite's writers must not be in it. A log is written through
 * the store (events and the users rows their fold gives), verified, then
 * tampered with as a superuser the way docs/audit.md's threat model says
 * one can (disabling the append-only triggers), and each alteration must be
 * caught at the right position. The pipeline test writes through the real
 * processor and checks verify, replay and status against it.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "infra/components/audit.h"
#include "infra/crypto/checkpoint.h"
#include "infra/crypto/chain.h"
#include "infra/pg/piikeys.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/base/util.h"
#include "tests/integration/harness.h"
#include "tests/integration/itest.h"

static void assert_ok(es_result rc, const es_error *err, const char *what)
{
    cr_assert_eq(rc, ES_OK, "%s: %s: %s [%s]", what, es_result_name(rc), err->text, err->sqlstate);
}

typedef struct {
    char db[64];
    char conninfo[1024];
    es_store *st;
} scratch;

static void scratch_open(scratch *s)
{
    es_log_init("test", "warn"); /* migrations and the store stay quiet */
    itest_create_database(s->db, sizeof s->db, s->conninfo, sizeof s->conninfo);
    s->st = itest_open_url(s->conninfo);
    es_error err = {0};
    int applied = 0;
    assert_ok(es_store_migrate(s->st, &applied, &err), &err, "migrate");
}

static void scratch_close(scratch *s)
{
    es_store_free(s->st);
    itest_drop_database(s->db);
}

/* n_users users of inst, five events each, written in batches of two users
 * with their users rows (the fold of their events). Returns the events'
 * positions in the order written (caller frees). */
static const dom_evt_type life[] = {DOM_EVT_HUMAN_ADDED, DOM_EVT_PHONE_CHANGED, DOM_EVT_PHONE_CODE_ADDED,
                                    DOM_EVT_PHONE_VERIFIED, DOM_EVT_OTP_SMS_ADDED};
enum { LIFE = sizeof life / sizeof life[0] };

static void seed(es_store *st, const char *inst, const char *org, int n_users, const char *prefix)
{
    es_error err = {0};
    for (int u0 = 0; u0 < n_users; u0 += 2) {
        dom_evt ev[2 * LIFE];
        dom_user us[2];
        size_t ne = 0, nu = 0;
        for (int u = u0; u < u0 + 2 && u < n_users; u++) {
            char uid[32];
            snprintf(uid, sizeof uid, "%s%d", prefix, u);
            memset(&us[nu], 0, sizeof us[nu]);
            for (int k = 0; k < LIFE; k++) {
                itest_event(&ev[ne], inst, uid, k + 1, life[k]);
                if (org)
                    snprintf(ev[ne].resource_owner, sizeof ev[ne].resource_owner, "%s", org);
                ev[ne].last_of_command = k != 0;
                dom_user_apply(&us[nu], &ev[ne]);
                ne++;
            }
            nu++;
        }
        es_write w = {.events = ev, .n_events = ne, .users = us, .n_users = nu};
        assert_ok(itest_write(st, &w, &err), &err, "seed write");
    }
}

/* A run with key (the expected head, when given, too): full, or from the
 * newest checkpoint. */
static es_verify_report verify_run(es_store *st, const es_chain_key *key, const char *expect, bool incremental)
{
    es_verify_report rep;
    es_verify_opts o = {.page = 7, .incremental = incremental}; /* small pages: the paging is exercised too */
    if (expect)
        cr_assert(es_audit_parse_head(expect, &o.expect_position, o.expect_hash), "%s", expect);
    o.expect_head = expect != NULL;
    es_error err = {0};
    assert_ok(es_audit_verify(st, key, &o, &rep, &err), &err, incremental ? "verify (incremental)" : "verify");
    return rep;
}

static es_verify_report verify_with(es_store *st, const es_chain_key *key, const char *expect)
{
    return verify_run(st, key, expect, false);
}

static es_verify_report verify(es_store *st)
{
    es_chain_key pub;
    es_chain_key_public(&pub);
    return verify_with(st, &pub, NULL);
}

static void assert_verified(es_store *st, int64_t events, int64_t users)
{
    es_verify_report rep = verify(st);
    cr_assert(rep.ok, "verify failed at %" PRId64 ": %s", rep.bad_position, rep.problem);
    cr_assert_eq(rep.events, events, "events %" PRId64 ", want %" PRId64, rep.events, events);
    cr_assert_eq(rep.users, users, "users %" PRId64 ", want %" PRId64, rep.users, users);
}

static void assert_caught(es_store *st, int64_t position, const char *words)
{
    es_verify_report rep = verify(st);
    cr_assert_not(rep.ok, "the tampering was not caught");
    cr_assert_eq(rep.bad_position, position, "caught at %" PRId64 ", want %" PRId64 ": %s", rep.bad_position,
                 position, rep.problem);
    cr_assert(strstr(rep.problem, words), "problem '%s' does not say '%s'", rep.problem, words);
}

/* Verify a clean log and write its head as --expect-head takes it
 * ("position:hex"). */
static es_verify_report verified_head(es_store *st, char head[128])
{
    es_verify_report rep = verify(st);
    cr_assert(rep.ok, "%s", rep.problem);
    char hex[65];
    es_chain_hex(rep.head_hash, 32, hex);
    snprintf(head, 128, "%" PRId64 ":%s", rep.head_position, hex);
    return rep;
}

static void exec1(es_store *st, const char *sql, const char *p1)
{
    const char *params[] = {p1};
    itest_exec(st, sql, p1 ? 1 : 0, params);
}

static void exec_pos(es_store *st, const char *sql, int64_t pos)
{
    char s[24];
    snprintf(s, sizeof s, "%" PRId64, pos);
    exec1(st, sql, s);
}

static int64_t sql_i64(es_store *st, const char *sql)
{
    PGresult *res = itest_sql(st, sql, 0, NULL);
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(res));
    int64_t v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* The superuser's first step (docs/audit.md): the append-only triggers off. */
static void disable_triggers(es_store *st)
{
    itest_exec(st, "ALTER TABLE factord.events DISABLE TRIGGER ALL", 0, NULL);
}

/* --- a clean log ------------------------------------------------------------------ */

Test(audit, clean_log_verifies, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 9, "u");
    assert_verified(s.st, 9 * LIFE, 9);
    es_verify_report rep = verify(s.st);
    cr_assert_eq(rep.unchained, 0);
    cr_assert_eq(rep.head_position, 9 * LIFE);
    cr_assert_eq(sql_i64(s.st, "SELECT head_position FROM factord.position_counter"), rep.head_position);
    cr_assert_eq(sql_i64(s.st, "SELECT count(*) FROM factord.events WHERE hash IS NULL"), 0);
    scratch_close(&s);
}

Test(audit, canonical_split_matches_the_whole)
{
    dom_evt e;
    itest_event(&e, "i", "u", 3, DOM_EVT_HUMAN_ADDED);
    snprintf(e.human.first_name, sizeof e.human.first_name, "\"position\":\"0\"");
    snprintf(e.command_id, sizeof e.command_id, "ABCDEF00-0000-4000-8000-00000000000A");
    e.position = 123456;
    es_chain_key pub;
    es_chain_key_public(&pub);
    es_chain_hasher *h = es_chain_hasher_new(&pub);
    unsigned char prev[32] = {0}, a[32], b[32];
    char *text = es_chain_canonical(&e);
    cr_assert(strstr(text, "\"commandId\":\"abcdef00-"), "%s", text);
    es_chain_hash(h, prev, text, strlen(text), a);
    es_chain_canon c;
    es_error err = {0};
    assert_ok(es_chain_canon_prepare(&e, &c, &err), &err, "prepare");
    es_chain_hash_canon(h, prev, &c, 123456, b);
    cr_assert(memcmp(a, b, 32) == 0, "split canonical bytes differ from %s", text);
    /* A secret key gives another hash. */
    unsigned char k[32] = {1}, d[32];
    es_chain_key sec;
    es_chain_key_init(&sec, k, "test");
    es_chain_hasher *h2 = es_chain_hasher_new(&sec);
    es_chain_hash(h2, prev, text, strlen(text), d);
    cr_assert(memcmp(a, d, 32) != 0);
    free(text);
    es_chain_canon_clear(&c);
    es_chain_hasher_free(h);
    es_chain_hasher_free(h2);
}

/* `factord run`'s development key, and how the tools find it. */
Test(audit, development_chain_key)
{
    char dir[] = "/tmp/factord-chain-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    es_config cfg = {0};
    cfg.state_dir = dir;
    es_error err = {0};
    es_chain_key k;
    assert_ok(es_chain_key_load(&cfg, true, &k, &err), &err, "load without a key");
    cr_assert(k.is_public);
    bool created = false;
    assert_ok(es_chain_key_ensure_dev(&cfg, &created, &err), &err, "ensure");
    cr_assert(created);
    cr_assert_not_null(cfg.chain_key_file);
    es_chain_key a, b;
    assert_ok(es_chain_key_load(&cfg, false, &a, &err), &err, "load the file");
    cr_assert_not(a.is_public);
    free(cfg.chain_key_file);
    cfg.chain_key_file = NULL;
    assert_ok(es_chain_key_ensure_dev(&cfg, &created, &err), &err, "ensure again");
    cr_assert_not(created, "the key was made twice");
    free(cfg.chain_key_file);
    cfg.chain_key_file = NULL;
    assert_ok(es_chain_key_load(&cfg, true, &b, &err), &err, "load from the state folder");
    cr_assert_str_eq(a.key_id, b.key_id);
    cfg.chain_key = "0011";
    cr_assert_eq(es_chain_key_load(&cfg, true, &b, &err), ES_EINVAL);
    char path[128];
    snprintf(path, sizeof path, "%s/chain.key", dir);
    unlink(path);
    rmdir(dir);
}

/* es_chain_canonical writes what jansson would, byte for byte. */
Test(audit, canonical_bytes_are_jansson_sorted_compact)
{
    static const char *const texts[] = {"", "plain", "quote\" back\\ slash/", "tab\tnl\ncr\rbs\bff\f",
                                        "ctl\x01\x1f\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                                        "\xe2\x80\xa8 sep", "\"position\":\"0\""};
    enum { NT = sizeof texts / sizeof texts[0] };
    unsigned seed = 42;
    for (int round = 0; round < 400; round++) {
        dom_evt e;
        dom_evt_type type = (dom_evt_type)(1 + rand_r(&seed) % (DOM_EVT__COUNT - 1));
        itest_event(&e, texts[rand_r(&seed) % NT], texts[rand_r(&seed) % NT], 1 + rand_r(&seed) % 1000, type);
        const char *t = texts[rand_r(&seed) % NT];
        snprintf(e.creator, sizeof e.creator, "%s", t);
        snprintf(e.resource_owner, sizeof e.resource_owner, "%s", texts[rand_r(&seed) % NT]);
        snprintf(e.human.first_name, sizeof e.human.first_name, "%s", texts[rand_r(&seed) % NT]);
        snprintf(e.human.display_name, sizeof e.human.display_name, "%s", texts[rand_r(&seed) % NT]);
        snprintf(e.human.gender, sizeof e.human.gender, "%s", rand_r(&seed) % 2 ? "GENDER_FEMALE" : "");
        snprintf(e.human.email, sizeof e.human.email, "%s", texts[rand_r(&seed) % NT]);
        e.human.is_email_verified = rand_r(&seed) % 2;
        snprintf(e.user_name, sizeof e.user_name, "%s", texts[rand_r(&seed) % NT]);
        snprintf(e.session_id, sizeof e.session_id, "%s", texts[rand_r(&seed) % NT]);
        snprintf(e.token_hash, sizeof e.token_hash, "%s", rand_r(&seed) % 2 ? "0123456789abcdef" : "");
        e.code_returned = rand_r(&seed) % 2;
        if (rand_r(&seed) % 3 == 0)
            e.code_expires_at_us = 0;
        if (rand_r(&seed) % 4 == 0)
            e.command_id[0] = '\0';
        e.position = rand_r(&seed) % 3 ? (int64_t)rand_r(&seed) * 1000003 : 0;
        e.last_of_command = rand_r(&seed) % 2;
        json_t *j = dom_evt_to_json(&e);
        char *want = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        char *got = es_chain_canonical(&e);
        cr_assert_not_null(got);
        cr_assert_str_eq(got, want, "round %d", round);
        es_chain_canon c;
        es_error err = {0};
        assert_ok(es_chain_canon_prepare(&e, &c, &err), &err, "prepare");
        char rebuilt[4096];
        snprintf(rebuilt, sizeof rebuilt, "%.*s%lld%s", (int)c.head_len, c.text, (long long)e.position,
                 c.text + c.tail_off);
        cr_assert_str_eq(rebuilt, want, "split, round %d", round);
        es_chain_canon_clear(&c);
        free(got);
        free(want);
    }
    dom_evt bad;
    itest_event(&bad, "i", "u", 1, DOM_EVT_LOCKED);
    snprintf(bad.creator, sizeof bad.creator, "bad \xff utf-8");
    cr_assert_null(es_chain_canonical(&bad));
    snprintf(bad.creator, sizeof bad.creator, "surrogate \xed\xa0\x80");
    cr_assert_null(es_chain_canonical(&bad));
}

/* --- tampering ----------------------------------------------------------------------- */

Test(audit, updated_payload_is_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 6, "u");
    assert_verified(s.st, 6 * LIFE, 6);
    disable_triggers(s.st);
    /* position 12: user u2's phone.changed */
    exec_pos(s.st, "UPDATE factord.events SET payload = '{\"phone\":\"+41790000000\"}' WHERE position = $1", 12);
    assert_caught(s.st, 12, "hash mismatch");
    scratch_close(&s);
}

Test(audit, deleted_middle_event_is_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 6, "u");
    disable_triggers(s.st);
    exec_pos(s.st, "DELETE FROM factord.events WHERE position = $1", 14);
    assert_caught(s.st, 15, "removed");
    scratch_close(&s);
}

Test(audit, forged_event_is_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    /* A new last event for u1, its sequence right, its hash made up, the
     * counter and the user's row moved along: only the chain can tell. */
    itest_exec(s.st,
               "INSERT INTO factord.events (instance_id, aggregate_type, aggregate_id, sequence, position,"
               "  type, revision, created_at, creator, resource_owner, last_of_command, payload, hash)"
               " SELECT 'i1', 'user', 'u1', 6, 21, 'user.human.otp.sms.removed', 1, now(), 'u1',"
               "  'org-i1', true, '{}', sha256('forged')",
               0, NULL);
    itest_exec(s.st, "UPDATE factord.position_counter SET value = 21", 0, NULL);
    itest_exec(s.st, "UPDATE factord.users SET otp_sms = false, sequence = 6 WHERE user_id = 'u1'", 0, NULL);
    assert_caught(s.st, 21, "hash mismatch");
    scratch_close(&s);
}

Test(audit, reordered_events_are_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET position = 1000000 WHERE position = 7", 0, NULL);
    itest_exec(s.st, "UPDATE factord.events SET position = 7 WHERE position = 13", 0, NULL);
    itest_exec(s.st, "UPDATE factord.events SET position = 13 WHERE position = 1000000", 0, NULL);
    assert_caught(s.st, 7, "hash mismatch");
    scratch_close(&s);
}

Test(audit, truncated_tail_is_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    char head[128];
    verified_head(s.st, head);

    disable_triggers(s.st);
    /* The last user's last two events gone, the counter rolled back. */
    itest_exec(s.st, "DELETE FROM factord.events WHERE position > 18", 0, NULL);
    itest_exec(s.st, "UPDATE factord.position_counter SET value = 18", 0, NULL);
    assert_caught(s.st, 20, "removed from its end");

    /* Head rolled back too: the users row no longer matches the fold. */
    itest_exec(s.st,
               "UPDATE factord.position_counter SET head_position = 18,"
               " head_hash = (SELECT hash FROM factord.events WHERE position = 18)",
               0, NULL);
    assert_caught(s.st, 18, "differs from the fold");

    /* And the users row rewritten as well: only a recorded head tells. */
    itest_exec(s.st,
               "UPDATE factord.users SET sequence = 3, phone_verified = false, verified_phone = '',"
               " otp_sms = false, code_enc = e.payload->>'code',"
               " code_expires_at = (e.payload->>'expiresAt')::timestamptz, changed_at = e.created_at"
               " FROM factord.events e WHERE e.position = 18 AND users.user_id = 'u3'",
               0, NULL);
    es_verify_report rep = verify(s.st);
    cr_assert(rep.ok, "a consistent truncation: %s at %" PRId64, rep.problem, rep.bad_position);
    es_chain_key pub;
    es_chain_key_public(&pub);
    rep = verify_with(s.st, &pub, head);
    cr_assert_not(rep.ok);
    cr_assert_eq(rep.bad_position, 20, "%s", rep.problem);
    cr_assert(strstr(rep.problem, "before the expected head"), "%s", rep.problem);
    scratch_close(&s);
}

/* Recompute the hashes of the events from..to with the public key, from
 * the hash of the event before from, as a superuser who rewrote an event
 * can; the counter's head follows. The last hash into hex. */
static void rechain(es_store *st, int64_t from, int64_t to, char hex[65])
{
    es_chain_key pub;
    es_chain_key_public(&pub);
    es_chain_hasher *h = es_chain_hasher_new(&pub);
    dom_evt *evts = NULL;
    size_t n = 0;
    es_error err = {0};
    unsigned char prev[32];
    char p[24];
    snprintf(p, sizeof p, "%" PRId64, from - 1);
    const char *pp[] = {p};
    PGresult *res = itest_sql(st, "SELECT encode(hash, 'hex') FROM factord.events WHERE position = $1::bigint", 1, pp);
    cr_assert(es_chain_unhex(PQgetvalue(res, 0, 0), prev, 32));
    PQclear(res);
    for (int64_t pos = from; pos <= to; pos++) {
        snprintf(p, sizeof p, "%" PRId64, pos);
        const char *params[] = {p};
        res = itest_sql(st, "SELECT aggregate_id, instance_id FROM factord.events WHERE position = $1::bigint", 1,
                        params);
        char user[64], inst[64];
        snprintf(user, sizeof user, "%s", PQgetvalue(res, 0, 0));
        snprintf(inst, sizeof inst, "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
        assert_ok(es_store_user_events(st, inst, user, &evts, &n, &err), &err, "read");
        const dom_evt *e = NULL;
        for (size_t i = 0; i < n; i++)
            if (evts[i].position == pos)
                e = &evts[i];
        cr_assert_not_null(e);
        char *text = es_chain_canonical(e);
        es_chain_hash(h, prev, text, strlen(text), prev);
        free(text);
        free(evts);
        es_chain_hex(prev, 32, hex);
        const char *up[] = {hex, p};
        itest_exec(st, "UPDATE factord.events SET hash = decode($1, 'hex') WHERE position = $2::bigint", 2, up);
    }
    const char *hp[] = {hex};
    itest_exec(st, "UPDATE factord.position_counter SET head_hash = decode($1, 'hex')", 1, hp);
    es_chain_hasher_free(h);
}

Test(audit, expect_head_catches_a_consistent_rewrite_with_the_public_key, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    char head[128];
    es_verify_report before = verified_head(s.st, head);
    char hex[65];

    /* Rewrite user u1's preferred language (the fold does not keep it; the
     * names are sealed, docs/pii.md), then recompute every hash from there
     * with the public key. */
    disable_triggers(s.st);
    itest_exec(s.st,
               "UPDATE factord.events SET payload = jsonb_set(payload, '{preferredLanguage}', '\"xx\"')"
               " WHERE position = 6",
               0, NULL);
    rechain(s.st, 6, before.head_position, hex);
    es_chain_key pub;
    es_chain_key_public(&pub);

    es_verify_report rep = verify(s.st);
    cr_assert(rep.ok, "the rewrite should pass without a recorded head: %s", rep.problem);
    rep = verify_with(s.st, &pub, head);
    cr_assert_not(rep.ok, "--expect-head missed the rewrite");
    cr_assert_eq(rep.bad_position, before.head_position);
    cr_assert(strstr(rep.problem, "rewritten"), "%s", rep.problem);

    /* A secret key the rewriter lacked catches it without a head. */
    unsigned char k[32] = {7};
    es_chain_key sec;
    es_chain_key_init(&sec, k, "test");
    rep = verify_with(s.st, &sec, NULL);
    cr_assert_not(rep.ok);
    cr_assert_eq(rep.bad_position, 1, "%s", rep.problem);
    cr_assert(strstr(rep.problem, "chain key"), "%s", rep.problem);
    scratch_close(&s);
}

Test(audit, sequences_and_users_are_checked, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    PGresult *res = itest_sql(s.st, "SELECT phone FROM factord.users WHERE user_id = 'u2'", 0, NULL);
    char phone[DOM_PHONE_MAX];
    snprintf(phone, sizeof phone, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    itest_exec(s.st, "UPDATE factord.users SET phone = '+41000000000' WHERE user_id = 'u2'", 0, NULL);
    assert_caught(s.st, 15, "column phone");
    const char *restore[] = {phone};
    itest_exec(s.st, "UPDATE factord.users SET phone = $1 WHERE user_id = 'u2'", 1, restore);
    assert_verified(s.st, 20, 4);
    itest_exec(s.st,
               "INSERT INTO factord.users (instance_id, user_id, resource_owner, user_name, status, sequence,"
               "  created_at, changed_at) VALUES ('i1', 'ghost', 'o', 'ghost', 'active', 1, now(), now())",
               0, NULL);
    es_verify_report rep = verify(s.st);
    cr_assert_not(rep.ok);
    cr_assert_str_eq(rep.bad_user, "ghost", "%s", rep.problem);
    itest_exec(s.st, "DELETE FROM factord.users WHERE user_id = 'ghost'", 0, NULL);
    itest_exec(s.st, "DELETE FROM factord.users WHERE user_id = 'u3'", 0, NULL);
    assert_caught(s.st, 20, "no row in factord.users");
    scratch_close(&s);
}

Test(audit, unchained_prefix_is_accepted_and_counted, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 2, "old");
    /* As if written before migration 0009. */
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET hash = NULL", 0, NULL);
    itest_exec(s.st,
               "UPDATE factord.position_counter SET head_position = 0, chain_start = value,"
               " head_hash = '\\x0000000000000000000000000000000000000000000000000000000000000000'",
               0, NULL);
    seed(s.st, "i1", NULL, 2, "new");
    es_verify_report rep = verify(s.st);
    cr_assert(rep.ok, "%s at %" PRId64, rep.problem, rep.bad_position);
    cr_assert_eq(rep.unchained, 2 * LIFE);
    cr_assert_eq(rep.events, 4 * LIFE);
    /* A hash removed above the chain's start is not "old". */
    itest_exec(s.st, "UPDATE factord.events SET hash = NULL WHERE position = 13", 0, NULL);
    assert_caught(s.st, 13, "without a hash");
    scratch_close(&s);
}

/* --- checkpoints: incremental runs ------------------------------------------------- */

static es_verify_report verify_inc_with(es_store *st, const es_chain_key *key, const char *expect)
{
    return verify_run(st, key, expect, true);
}

static es_verify_report verify_inc(es_store *st)
{
    es_chain_key pub;
    es_chain_key_public(&pub);
    return verify_inc_with(st, &pub, NULL);
}

/* Record the checkpoint of a clean run rep, signed with key; its id. */
static int64_t record_with(es_store *st, const es_chain_key *key, const es_verify_report *rep)
{
    es_checkpoint cp;
    int64_t id = 0;
    es_error err = {0};
    cr_assert(rep->ok, "%s at %" PRId64, rep->problem, rep->bad_position);
    assert_ok(es_audit_record_checkpoint(st, key, rep, itest_now_us(), &cp, &id, &err), &err, "record");
    cr_assert_gt(id, 0);
    cr_assert_eq(cp.position, rep->head_position);
    return id;
}

/* A run (incremental when there is a checkpoint) that must be clean, and
 * its checkpoint (public key). */
static int64_t verify_and_record(es_store *st)
{
    es_chain_key pub;
    es_chain_key_public(&pub);
    es_verify_report rep = verify_inc(st);
    return record_with(st, &pub, &rep);
}

static void assert_inc_caught(es_store *st, int64_t position, const char *words)
{
    es_verify_report rep = verify_inc(st);
    cr_assert_not(rep.ok, "the tampering was not caught");
    cr_assert_eq(rep.bad_position, position, "caught at %" PRId64 ", want %" PRId64 ": %s", rep.bad_position,
                 position, rep.problem);
    cr_assert(strstr(rep.problem, words), "problem '%s' does not say '%s'", rep.problem, words);
}

/* One more event for an existing user (user.locked; skip sequences left
 * out before it), its users row moved along, written through the store:
 * the chain stays valid. */
static void append_lock(es_store *st, const char *inst, const char *uid, int64_t skip)
{
    dom_user u;
    bool found = false;
    es_error err = {0};
    memset(&u, 0, sizeof u);
    snprintf(u.instance_id, sizeof u.instance_id, "%s", inst);
    snprintf(u.user_id, sizeof u.user_id, "%s", uid);
    assert_ok(es_store_load_users(st, &u, &found, 1, &err), &err, "load user");
    cr_assert(found, "%s", uid);
    dom_evt e;
    itest_event(&e, inst, uid, u.sequence + 1 + skip, DOM_EVT_LOCKED);
    dom_user_apply(&u, &e);
    es_write w = {.events = &e, .n_events = 1, .users = &u, .n_users = 1};
    assert_ok(itest_write(st, &w, &err), &err, "append");
}

Test(audit, incremental_checks_only_what_was_appended, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    /* No checkpoint yet: from the first event. */
    es_verify_report rep = verify_inc(s.st);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert_not(rep.incremental);
    cr_assert_eq(rep.events, 20);
    es_chain_key pub;
    es_chain_key_public(&pub);
    int64_t id = record_with(s.st, &pub, &rep);

    seed(s.st, "i1", NULL, 2, "v"); /* 21..30: two new users */
    /* 31..33: an old user, whose 8 events span two of the test's pages */
    for (int i = 0; i < 3; i++)
        append_lock(s.st, "i1", "u1", 0);
    rep = verify_inc(s.st);
    cr_assert(rep.ok, "%s at %" PRId64, rep.problem, rep.bad_position);
    cr_assert(rep.incremental);
    cr_assert_eq(rep.from_position, 20);
    cr_assert_eq(rep.checkpoint_id, id);
    cr_assert_eq(rep.events, 13, "events %" PRId64, rep.events);
    cr_assert_eq(rep.users, 3, "users %" PRId64 " (v0, v1, u1)", rep.users);
    cr_assert_eq(rep.head_position, 33);
    id = record_with(s.st, &pub, &rep);

    /* Nothing new: nothing read, the head still checked. */
    rep = verify_inc(s.st);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert_eq(rep.checkpoint_id, id);
    cr_assert_eq(rep.from_position, 33);
    cr_assert_eq(rep.events, 0);
    cr_assert_eq(rep.users, 0);
    cr_assert_eq(rep.head_position, 33);
    /* The full run still sees everything. */
    assert_verified(s.st, 33, 6);
    /* A users row of u1 wrong, then moved along by a new event: the fold
     * of its 9 events across the pages sees it. */
    itest_exec(s.st, "UPDATE factord.users SET otp_sms = false WHERE user_id = 'u1'", 0, NULL);
    append_lock(s.st, "i1", "u1", 0); /* 34 */
    assert_inc_caught(s.st, 34, "column otp_sms");
    scratch_close(&s);
}

Test(audit, incremental_catches_tampering_after_the_checkpoint, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    verify_and_record(s.st);
    seed(s.st, "i1", NULL, 2, "v"); /* 21..30 */
    disable_triggers(s.st);
    /* v0's phone.changed */
    exec_pos(s.st, "UPDATE factord.events SET payload = '{\"phone\":\"+41790000000\"}' WHERE position = $1", 22);
    assert_inc_caught(s.st, 22, "hash mismatch");
    scratch_close(&s);
}

Test(audit, incremental_checks_the_touched_users, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    verify_and_record(s.st);
    /* A users row of a user touched since the checkpoint. */
    append_lock(s.st, "i1", "u2", 0); /* 21 */
    PGresult *res = itest_sql(s.st, "SELECT phone FROM factord.users WHERE user_id = 'u2'", 0, NULL);
    char phone[DOM_PHONE_MAX];
    snprintf(phone, sizeof phone, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    itest_exec(s.st, "UPDATE factord.users SET phone = '+41000000000' WHERE user_id = 'u2'", 0, NULL);
    assert_inc_caught(s.st, 21, "column phone");
    /* the number is sealed in the log (docs/pii.md): restore the row's own */
    const char *restore[] = {phone};
    itest_exec(s.st, "UPDATE factord.users SET phone = $1 WHERE user_id = 'u2'", 1, restore);
    verify_and_record(s.st);
    /* A new event whose sequence does not follow the user's last one
     * before the checkpoint, though its hash is right. */
    append_lock(s.st, "i1", "u3", 2); /* 22: sequence 8 after 5 */
    assert_inc_caught(s.st, 22, "sequence gap: 8 follows 5");
    scratch_close(&s);
}

/* The table refuses edits; a superuser's edit of any field breaks the
 * signature; a forged row is refused, and the run says which. */
Test(audit, tampered_checkpoint_is_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    int64_t id = verify_and_record(s.st);
    cr_assert_eq(id, 1);
    PGresult *res = itest_sql(s.st, "UPDATE factord.verify_checkpoints SET position = 10", 0, NULL);
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "the checkpoints are not append-only");
    cr_assert(strstr(PQresultErrorMessage(res), "append-only"), "%s", PQresultErrorMessage(res));
    PQclear(res);
    res = itest_sql(s.st, "DELETE FROM factord.verify_checkpoints", 0, NULL);
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "the checkpoints are not append-only");
    PQclear(res);

    itest_exec(s.st, "ALTER TABLE factord.verify_checkpoints DISABLE TRIGGER ALL", 0, NULL);
    static const char *const edits[][2] = {
        {"UPDATE factord.verify_checkpoints SET position = 10", "UPDATE factord.verify_checkpoints SET position = 20"},
        {"UPDATE factord.verify_checkpoints SET hash = (SELECT hash FROM factord.events WHERE position = 19)",
         "UPDATE factord.verify_checkpoints SET hash = (SELECT hash FROM factord.events WHERE position = 20)"},
        {"UPDATE factord.verify_checkpoints SET signature = sha256(signature)", NULL},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        itest_exec(s.st, edits[i][0], 0, NULL);
        es_verify_report rep = verify_inc(s.st);
        cr_assert_not(rep.ok, "edit %zu was not caught", i);
        cr_assert(strstr(rep.problem, "checkpoint 1 "), "%s", rep.problem);
        cr_assert(strstr(rep.problem, "a signature that does not verify: it was forged or edited"), "%s", rep.problem);
        cr_assert_not(rep.incremental);
        if (edits[i][1])
            itest_exec(s.st, edits[i][1], 0, NULL);
    }
    /* A row forged from scratch (a later position, a made-up signature). */
    itest_exec(s.st, "DELETE FROM factord.verify_checkpoints", 0, NULL);
    verify_and_record(s.st);
    seed(s.st, "i1", NULL, 2, "v"); /* 21..30 */
    itest_exec(s.st,
               "INSERT INTO factord.verify_checkpoints (position, hash, verified_at, key_id, mode, from_position,"
               "  events, signature) SELECT 30, hash, now(), 'd44c24cb', 'full', 0, 30, sha256('forged')"
               " FROM factord.events WHERE position = 30",
               0, NULL);
    assert_inc_caught(s.st, 30, "signature that does not verify");
    scratch_close(&s);
}

Test(audit, checkpoint_signed_with_another_key_is_refused, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    unsigned char k[32] = {9};
    es_chain_key other;
    es_chain_key_init(&other, k, "test");
    es_verify_report rep = verify(s.st);
    record_with(s.st, &other, &rep);
    rep = verify_inc(s.st);
    cr_assert_not(rep.ok, "a checkpoint of another key was taken");
    cr_assert(strstr(rep.problem, "signed with another key"), "%s", rep.problem);
    cr_assert(strstr(rep.problem, other.key_id), "%s", rep.problem);
    cr_assert(strstr(rep.problem, "refused"), "%s", rep.problem);
    cr_assert_eq(rep.bad_position, 20);
    /* A full run does not read checkpoints; its own makes the next
     * incremental run possible again. */
    es_chain_key pub;
    es_chain_key_public(&pub);
    rep = verify(s.st);
    record_with(s.st, &pub, &rep);
    rep = verify_inc(s.st);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert(rep.incremental);
    scratch_close(&s);
}

/* An event before the checkpoint edited without recomputing the chain:
 * only a full run reads it. */
Test(audit, full_catches_what_incremental_does_not_read, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    verify_and_record(s.st);
    disable_triggers(s.st);
    exec_pos(s.st, "UPDATE factord.events SET payload = '{\"phone\":\"+41790000000\"}' WHERE position = $1", 12);
    es_verify_report rep = verify_inc(s.st);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert(rep.incremental, "an incremental run must not claim to have read the log");
    cr_assert_eq(rep.from_position, 20);
    cr_assert_eq(rep.events, 0);
    assert_caught(s.st, 12, "hash mismatch");
    scratch_close(&s);
}

/* The event at the checkpoint lost its hash, or is gone: the log up to it
 * changed (a rewrite with the key, a cut). */
Test(audit, checkpoint_hash_no_longer_in_the_log_is_caught, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    verify_and_record(s.st);
    seed(s.st, "i1", NULL, 2, "v"); /* 21..30 */
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET hash = sha256(hash) WHERE position = 20", 0, NULL);
    assert_inc_caught(s.st, 20, "the event at checkpoint 1 has another hash: the log up to it was rewritten");
    itest_exec(s.st, "DELETE FROM factord.events WHERE position >= 20", 0, NULL);
    assert_inc_caught(s.st, 20, "checkpoint 1 position 20 holds no chained event: events were removed");
    scratch_close(&s);
}

/* The auditor's own head below the database's checkpoint: the run starts
 * there, so a rewrite with the key after it (and a checkpoint re-signed)
 * is still read. */
Test(audit, expected_head_below_the_checkpoint_is_the_start, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    char head[128];
    verified_head(s.st, head);
    verify_and_record(s.st);
    seed(s.st, "i1", NULL, 2, "v"); /* 21..30 */
    verify_and_record(s.st);
    es_chain_key pub;
    es_chain_key_public(&pub);
    es_verify_report rep = verify_inc_with(s.st, &pub, head);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert_eq(rep.from_position, 20);
    cr_assert_eq(rep.checkpoint_id, 0);
    cr_assert_str_eq(rep.from_what, "the expected head");
    cr_assert_eq(rep.events, 10);
    /* Above it, the checkpoint is a pin: its event must keep its hash. */
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET hash = sha256(hash) WHERE position = 30", 0, NULL);
    itest_exec(s.st, "UPDATE factord.position_counter SET head_hash = (SELECT hash FROM factord.events"
                     " WHERE position = 30)", 0, NULL);
    rep = verify_inc_with(s.st, &pub, head);
    cr_assert_not(rep.ok);
    cr_assert_eq(rep.bad_position, 30, "%s", rep.problem);
    scratch_close(&s);
}

/* Someone with the key (here the public one) rewrites an old event,
 * recomputes the chain and signs a new checkpoint at the rewritten head:
 * the database alone cannot tell, the auditor's checkpoint file can. */
Test(audit, checkpoint_file_catches_a_rewrite_with_the_key, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    es_chain_key pub;
    es_chain_key_public(&pub);
    es_verify_report rep = verify(s.st);
    es_checkpoint file_cp;
    int64_t id = 0;
    es_error err = {0};
    assert_ok(es_audit_record_checkpoint(s.st, &pub, &rep, itest_now_us(), &file_cp, &id, &err), &err, "record");
    seed(s.st, "i1", NULL, 2, "v"); /* 21..30 */
    verify_and_record(s.st);

    disable_triggers(s.st);
    itest_exec(s.st,
               "UPDATE factord.events SET payload = jsonb_set(payload, '{preferredLanguage}', '\"xx\"')"
               " WHERE position = 6", /* the names are sealed (docs/pii.md) */
               0, NULL);
    char hex[65];
    rechain(s.st, 6, 30, hex);
    es_verify_report forged = {.ok = true, .incremental = true, .from_position = 20, .events = 10,
                               .head_position = 30};
    cr_assert(es_chain_unhex(hex, forged.head_hash, 32));
    record_with(s.st, &pub, &forged);

    rep = verify_inc(s.st);
    cr_assert(rep.ok, "%s", rep.problem);
    cr_assert_eq(rep.from_position, 30, "the re-signed checkpoint is the newest");

    es_verify_opts o = {.page = 7, .incremental = true, .has_file_checkpoint = true, .file_checkpoint = file_cp};
    assert_ok(es_audit_verify(s.st, &pub, &o, &rep, &err), &err, "verify with the file");
    cr_assert_not(rep.ok, "the checkpoint file missed the rewrite");
    cr_assert_eq(rep.bad_position, 20, "%s", rep.problem);
    cr_assert(strstr(rep.problem, "the event at the checkpoint file's head has another hash: the log up to it was "
                                  "rewritten"),
              "%s", rep.problem);
    scratch_close(&s);
}

/* --- the binaries ------------------------------------------------------------------------ */

/* Run `factord args...` against conninfo (no chain key, no state
 * folder, warnings only); stdout into *out (malloc'd). */
static int run_factord(const char *conninfo, const char *const *args, char **out, const char *const *extra_env)
{
    char url[512];
    snprintf(url, sizeof url, "FACTORD_DATABASE_URL=%s", conninfo);
    const char *env[16] = {url, "FACTORD_LOG_LEVEL=warn", "FACTORD_CHAIN_KEY", "FACTORD_CHAIN_KEY_FILE"};
    size_t n = 4;
    for (const char *const *x = extra_env; x && *x && n < sizeof env / sizeof env[0] - 1; x++)
        env[n++] = *x;
    h_tool_result r;
    h_tool_run(NULL, args, NULL, env, &r);
    fputs(r.err, stderr);
    free(r.err);
    *out = r.out;
    return r.code;
}

/* Lines of replay output, each parsed back with dom_evt_from_json. */
static size_t replay_count(const char *conninfo, const char *const *args, dom_evt *last)
{
    char *out = NULL;
    const char *argv[32] = {"replay"};
    int n = 1;
    for (const char *const *a = args; a && *a; a++)
        argv[n++] = *a;
    argv[n] = NULL;
    int rc = run_factord(conninfo, argv, &out, NULL);
    cr_assert_eq(rc, 0, "replay exit %d", rc);
    size_t lines = 0;
    int64_t prev = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        cr_assert_not_null(j, "not JSON: %s", line);
        dom_evt e;
        es_error err = {0};
        cr_assert_eq(dom_evt_from_json(j, &e, &err), ES_OK, "%s: %s", err.text, line);
        cr_assert(json_is_string(json_object_get(j, "hash")), "no hash: %s", line);
        cr_assert_gt(e.position, prev, "not in position order");
        prev = e.position;
        if (last)
            *last = e;
        json_decref(j);
        lines++;
    }
    free(out);
    return lines;
}

Test(audit, replay_filters_narrow, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", "orgA", 4, "u");  /* positions 1..20 */
    seed(s.st, "i1", "orgB", 2, "v");  /* 21..30 */
    seed(s.st, "i2", "orgA", 2, "u");  /* 31..40 */
    const char *c = s.conninfo;
    cr_assert_eq(replay_count(c, NULL, NULL), 40);
    cr_assert_eq(replay_count(c, (const char *[]){"--instance", "i1", NULL}, NULL), 30);
    cr_assert_eq(replay_count(c, (const char *[]){"--instance", "i2", NULL}, NULL), 10);
    cr_assert_eq(replay_count(c, (const char *[]){"--user", "u1", NULL}, NULL), 10);
    cr_assert_eq(replay_count(c, (const char *[]){"--instance", "i1", "--user", "u1", NULL}, NULL), 5);
    cr_assert_eq(replay_count(c, (const char *[]){"--org", "orgB", NULL}, NULL), 10);
    cr_assert_eq(replay_count(c, (const char *[]){"--org", "orgA", "--instance", "i1", NULL}, NULL), 20);
    cr_assert_eq(replay_count(c, (const char *[]){"--type", "user.human.added", NULL}, NULL), 8);
    cr_assert_eq(replay_count(c, (const char *[]){"--type", "user.human.added", "--type",
                                                  "user.human.mfa.otp.sms.added", NULL}, NULL), 16);
    cr_assert_eq(replay_count(c, (const char *[]){"--from-position", "5", "--to-position", "12", NULL}, NULL), 8);
    dom_evt last;
    cr_assert_eq(replay_count(c, (const char *[]){"--to-position", "25", NULL}, &last), 25);
    cr_assert_eq(last.position, 25);

    /* Time: move i2's events back a day, then cut at an hour ago. */
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET created_at = created_at - interval '1 day' WHERE instance_id = 'i2'",
               0, NULL);
    char cut[40];
    dom_time_format(itest_now_us() - INT64_C(3600000000), cut, sizeof cut);
    cr_assert_eq(replay_count(c, (const char *[]){"--since", cut, NULL}, NULL), 30);
    cr_assert_eq(replay_count(c, (const char *[]){"--until", cut, NULL}, NULL), 10);
    cr_assert_eq(replay_count(c, (const char *[]){"--until", cut, "--instance", "i1", NULL}, NULL), 0);

    char *out = NULL;
    cr_assert_eq(run_factord(c, (const char *[]){"replay", "--type", "user.nonsense", NULL}, &out, NULL), 2);
    free(out);
    cr_assert_eq(run_factord(c, (const char *[]){"replay", "--since", "yesterday", NULL}, &out, NULL), 2);
    free(out);
    scratch_close(&s);
}

Test(audit, verify_binary_reports_and_exits, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    char *out = NULL;
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", NULL}, &out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "events      20 "), "%s", out);
    char *h = strstr(out, "head        ");
    cr_assert_not_null(h, "%s", out);
    char head[128];
    cr_assert_eq(sscanf(h + 12, "%127s", head), 1);
    free(out);
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--expect-head", head, NULL}, &out, NULL), 0,
                 "%s", out);
    free(out);
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--expect-head", "12", NULL}, &out, NULL), 2);
    free(out);
    /* Another key than the writers': the checkpoint the runs above
     * recorded is refused, and from the first event, the first event
     * already fails. */
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", NULL}, &out,
                             (const char *[]){"FACTORD_CHAIN_KEY=" H_CHAIN_KEY, NULL}),
                 1, "%s", out);
    cr_assert(strstr(out, "signed with another key"), "%s", out);
    cr_assert(strstr(out, "mode        incremental, not started: checkpoint 2, refused\n"), "%s", out);
    free(out);
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--full", NULL}, &out,
                             (const char *[]){"FACTORD_CHAIN_KEY=" H_CHAIN_KEY, NULL}),
                 1, "%s", out);
    cr_assert(strstr(out, "position    1\n"), "%s", out);
    free(out);
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET creator = 'mallory' WHERE position = 9", 0, NULL);
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--full", NULL}, &out, NULL), 1, "%s", out);
    cr_assert(strstr(out, "position    9\n"), "%s", out);
    cr_assert(strstr(out, "instance    i1\n"), "%s", out);
    cr_assert(strstr(out, "user        u1\n"), "%s", out);
    free(out);
    scratch_close(&s);
}

/* The file verify writes for Prometheus (docs/metrics.md). */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s not written", path);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

Test(audit, verify_metrics_file, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    char path[] = "/tmp/factord-verify-metrics-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    char *out = NULL;
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--metrics-file", path, NULL}, &out, NULL), 0,
                 "%s", out);
    free(out);
    const char *m = read_text(path);
    cr_assert(strstr(m, "\nfactord_verify_ok 1\n"), "%s", m);
    cr_assert(strstr(m, "\nfactord_verify_completed 1\n"), "%s", m);
    cr_assert(strstr(m, "\nfactord_verify_events 20\n"), "%s", m);
    cr_assert(strstr(m, "\nfactord_verify_incremental 0\n"), "%s", m);
    cr_assert(strstr(m, "# TYPE factord_verify_last_run_timestamp_seconds gauge\n"), "%s", m);
    /* From the checkpoint that run recorded: nothing new. */
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--metrics-file", path, NULL}, &out, NULL), 0,
                 "%s", out);
    free(out);
    m = read_text(path);
    cr_assert(strstr(m, "\nfactord_verify_events 0\n"), "%s", m);
    cr_assert(strstr(m, "\nfactord_verify_incremental 1\n"), "%s", m);
    cr_assert(strstr(m, "\nfactord_verify_head_position 20\n"), "%s", m);
    /* A bad event (before the checkpoint: --full): ok 0, and no figures of
     * a clean run. */
    disable_triggers(s.st);
    itest_exec(s.st, "UPDATE factord.events SET creator = 'mallory' WHERE position = 4", 0, NULL);
    cr_assert_eq(run_factord(s.conninfo, (const char *[]){"verify", "--full", "--metrics-file", path, NULL}, &out,
                             NULL),
                 1, "%s", out);
    free(out);
    m = read_text(path);
    cr_assert(strstr(m, "\nfactord_verify_ok 0\n"), "%s", m);
    cr_assert(strstr(m, "\nfactord_verify_completed 1\n"), "%s", m);
    cr_assert_null(strstr(m, "factord_verify_events "), "%s", m);
    /* No PostgreSQL: no verdict. */
    cr_assert_eq(run_factord("postgresql://factord@127.0.0.1:1/nowhere?connect_timeout=2",
                             (const char *[]){"verify", "--metrics-file", path, NULL}, &out, NULL),
                 1, "%s", out);
    free(out);
    m = read_text(path);
    cr_assert(strstr(m, "\nfactord_verify_completed 0\n"), "%s", m);
    cr_assert_null(strstr(m, "factord_verify_ok "), "%s", m);
    unlink(path);
    scratch_close(&s);
}

/* The binary's modes, its output and --checkpoint-file. */
Test(audit, verify_binary_incremental_and_checkpoint_file, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u"); /* 1..20 */
    char path[] = "/tmp/factord-verify-checkpoint-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(path); /* a first run creates it */
    const char *c = s.conninfo;
    char *out = NULL;
    cr_assert_eq(run_factord(c, (const char *[]){"verify", "--checkpoint-file", path, NULL}, &out, NULL), 0, "%s",
                 out);
    cr_assert(strstr(out, "mode        full (no checkpoint yet)\n"), "%s", out);
    cr_assert(strstr(out, "events      20 "), "%s", out);
    cr_assert(strstr(out, "checkpoint  1 recorded at position 20\n"), "%s", out);
    free(out);
    /* The file holds the same checkpoint, signed. */
    char *text = NULL;
    size_t len = 0;
    cr_assert_eq(es_read_file(path, 4096, &text, &len), ES_READ_OK);
    es_checkpoint cp;
    char why[200];
    cr_assert(es_checkpoint_parse(text, &cp, why, sizeof why), "%s: %s", why, text);
    es_chain_key pub;
    es_chain_key_public(&pub);
    cr_assert_eq(es_checkpoint_check(&pub, &cp), ES_CHECKPOINT_VALID);
    cr_assert_eq(cp.position, 20);
    cr_assert(cp.full);
    cr_assert_eq(cp.events, 20);

    /* More events; a run without the file moves the database's checkpoint. */
    seed(s.st, "i1", NULL, 2, "v");   /* 21..30 */
    cr_assert_eq(run_factord(c, (const char *[]){"verify", NULL}, &out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "mode        incremental, from position 20: checkpoint 1 (a full verify of "), "%s", out);
    cr_assert(strstr(out, "events      10 checked, above position 20\n"), "%s", out);
    cr_assert(strstr(out, "users       2 "), "%s", out);
    cr_assert(strstr(out, "checkpoint  2 recorded at position 30\n"), "%s", out);
    free(out);
    append_lock(s.st, "i1", "u0", 0); /* 31 */
    /* With the file: from its older head, past the database's checkpoint. */
    cr_assert_eq(run_factord(c, (const char *[]){"verify", "--checkpoint-file", path, NULL}, &out, NULL), 0, "%s",
                 out);
    cr_assert(strstr(out, "mode        incremental, from position 20: the checkpoint file's head\n"), "%s", out);
    cr_assert(strstr(out, "events      11 checked, above position 20\n"), "%s", out);
    cr_assert(strstr(out, "checkpoint  3 recorded at position 31\n"), "%s", out);
    free(out);
    free(text);
    cr_assert_eq(es_read_file(path, 4096, &text, &len), ES_READ_OK);
    cr_assert(strstr(text, "\nposition 31\nhash "), "%s", text);
    cr_assert(strstr(text, "\nmode incremental\nfrom 20\nevents 11\n"), "%s", text);
    /* --full from the first event. */
    cr_assert_eq(run_factord(c, (const char *[]){"verify", "--full", NULL}, &out, NULL), 0, "%s", out);
    cr_assert(strstr(out, "mode        full (--full)\n"), "%s", out);
    cr_assert(strstr(out, "events      31 "), "%s", out);
    free(out);

    /* The file edited: its signature fails. */
    char *pos = strstr(text, "\nposition 31\n");
    pos[11] = '0'; /* 31 -> 30 */
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    cr_assert_eq(run_factord(c, (const char *[]){"verify", "--checkpoint-file", path, NULL}, &out, NULL), 1, "%s",
                 out);
    cr_assert(strstr(out, "FAILED: the checkpoint file's checkpoint (position 30) has a signature that does not "
                          "verify"), "%s", out);
    free(out);
    /* Not a checkpoint at all: a usage error. */
    f = fopen(path, "w");
    fputs("31:abc\n", f);
    fclose(f);
    cr_assert_eq(run_factord(c, (const char *[]){"verify", "--checkpoint-file", path, NULL}, &out, NULL), 2, "%s",
                 out);
    free(out);
    free(text);
    unlink(path);
    scratch_close(&s);
}

/* --- through the real pipeline ---------------------------------------------------------- */

static json_t *import_payload(const char *name)
{
    return json_pack("{s:s, s:{s:s, s:s}, s:{s:s}}", "userName", name, "profile", "firstName", "Ada", "lastName",
                     "Lovelace", "email", "email", "ada@example.com");
}

static void send_cmd(const h_env *e, const char *type, const char *user, json_t *payload)
{
    char *c = h_command(e, type, user, "org-audit", payload, NULL);
    h_produce(e, e->commands, user, c, strlen(c));
    free(c);
}

static json_t *status_json(const h_env *e)
{
    char env[8][300];
    snprintf(env[0], sizeof env[0], "FACTORD_KAFKA_BROKERS=%s", e->brokers);
    snprintf(env[1], sizeof env[1], "FACTORD_COMMANDS_TOPIC=%s", e->commands);
    snprintf(env[2], sizeof env[2], "FACTORD_EVENTS_TOPIC=%s", e->events);
    snprintf(env[3], sizeof env[3], "FACTORD_DLQ_TOPIC=%s", e->dlq);
    snprintf(env[4], sizeof env[4], "FACTORD_PROCESSOR_GROUP=%s", e->group);
    snprintf(env[5], sizeof env[5], "FACTORD_PROJECTOR_GROUP=%s.projector", e->group);
    const char *extra[] = {env[0], env[1], env[2], env[3], env[4], env[5], NULL};
    char *out = NULL;
    int rc = run_factord(e->db_url, (const char *[]){"status", "--json", NULL}, &out, extra);
    cr_assert_eq(rc, 0, "status exit %d: %s", rc, out);
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    cr_assert_not_null(j, "status output is not JSON: %s", out);
    free(out);
    return j;
}

static json_int_t jget(json_t *j, const char *a, const char *b)
{
    json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    cr_assert(json_is_integer(v), "%s.%s missing", a, b ? b : "");
    return json_integer_value(v);
}

Test(audit, pipeline_verify_replay_and_status, .timeout = 300)
{
    h_env e;
    h_env_init(&e, "audit");
    pid_t proc = h_spawn(&e, "process", NULL);
    for (int i = 0; i < 4; i++) {
        char user[16];
        snprintf(user, sizeof user, "p%d", i);
        send_cmd(&e, "ImportHumanUser", user, import_payload(user));
    }
    send_cmd(&e, "SetMyPhone", "p0", json_pack("{s:s, s:b}", "phone", "+41791112233", "returnCode", 1));
    send_cmd(&e, "LockUser", "p1", NULL);
    h_produce(&e, e.commands, "junk", "not a command", 13); /* a dead letter */
    int64_t end = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, "SELECT count(*) FROM factord.commands", 0, NULL) < 6 ||
           h_sql_long(&e, "SELECT count(*) FROM factord.outbox", 0, NULL) < 1) {
        cr_assert_lt(es_clock_mono_ms(), end, "the processor did not decide the commands");
        es_sleep_ms(100);
    }
    cr_assert_eq(h_stop(proc, false), 0);
    long events = h_sql_long(&e, "SELECT count(*) FROM factord.events", 0, NULL);
    long head = h_sql_long(&e, "SELECT max(position) FROM (SELECT position FROM factord.events UNION ALL"
                               " SELECT position FROM factord.outbox) x", 0, NULL);
    cr_assert_geq(events, 6);

    /* The relay stopped: its lag is the whole log. */
    json_t *s = status_json(&e);
    cr_assert_eq(jget(s, "relay", "checkpoint"), 0);
    cr_assert_eq(jget(s, "relay", "lagEvents"), events);
    cr_assert_eq(jget(s, "relay", "lag"), head);
    cr_assert_eq(jget(s, "headPosition", NULL), head);
    cr_assert_eq(jget(s, "processor", "lag"), 0, "the processor's offsets were committed at its stop");
    cr_assert_eq(jget(s, "projector", "lag"), 0);
    cr_assert_eq(jget(s, "deadLetters", NULL), 0);
    /* One broker: every partition has its one replica, in sync, led. */
    cr_assert_eq(jget(s, "underReplicatedPartitions", NULL), 0);
    json_t *parts = json_object_get(json_object_get(s, "processor"), "partitions");
    cr_assert_eq(json_array_size(parts), 4);
    for (size_t i = 0; i < json_array_size(parts); i++) {
        json_t *p = json_array_get(parts, i);
        cr_assert_eq(json_integer_value(json_object_get(p, "replicas")), 1, "partition %zu", i);
        cr_assert_eq(json_integer_value(json_object_get(p, "inSync")), 1, "partition %zu", i);
        cr_assert_geq(json_integer_value(json_object_get(p, "leader")), 0, "partition %zu", i);
    }
    json_decref(s);

    /* The processor chained with the harness's key. */
    char *out = NULL;
    cr_assert_eq(run_factord(e.db_url, (const char *[]){"verify", NULL}, &out,
                             (const char *[]){"FACTORD_CHAIN_KEY=" H_CHAIN_KEY, NULL}),
                 0, "%s", out);
    char want[64];
    snprintf(want, sizeof want, "events      %ld ", events);
    cr_assert(strstr(out, want), "%s", out);
    free(out);
    cr_assert_eq(run_factord(e.db_url, (const char *[]){"verify", NULL}, &out, NULL), 1, "%s", out);
    free(out);
    cr_assert_eq(replay_count(e.db_url, (const char *[]){"--instance", e.instance, NULL}, NULL), (size_t)events);
    cr_assert_eq(replay_count(e.db_url, (const char *[]){"--instance", e.instance, "--user", "p0", NULL}, NULL),
                 (size_t)h_sql_long(&e, "SELECT count(*) FROM factord.events WHERE aggregate_id = 'p0'", 0, NULL));
    cr_assert_eq(replay_count(e.db_url, (const char *[]){"--type", "user.locked", NULL}, NULL), 1);

    /* The relay caught up: the events wait for the projector's group. */
    pid_t relay = h_spawn(&e, "relay", NULL);
    end = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, "SELECT coalesce(max(position), 0) FROM factord.checkpoints", 0, NULL) < head) {
        cr_assert_lt(es_clock_mono_ms(), end, "the relay did not catch up");
        es_sleep_ms(100);
    }
    cr_assert_eq(h_stop(relay, false), 0);
    s = status_json(&e);
    cr_assert_eq(jget(s, "relay", "lag"), 0);
    cr_assert_eq(jget(s, "projector", "lag"), events);
    cr_assert_eq(jget(s, "deadLetters", NULL), 1);
    json_decref(s);
    h_env_done(&e);
}

/* Erasure (docs/pii.md): user.removed destroys the user's key in its own
 * transaction; the user's sealed fields then read as erased, its
 * write-side row holds no personal data, no table holds the plaintext,
 * verify passes over the whole chain (with and without the master key),
 * and the other users still read in clear. */
Test(audit, erasure_destroys_the_key_and_verify_passes, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    seed(s.st, "i1", NULL, 4, "u");
    es_error err = {0};

    /* u1's history with recognisable data, then its removal */
    dom_evt *evts = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(s.st, "i1", "u1", &evts, &n, &err), &err, "read u1");
    cr_assert_eq(n, LIFE);
    dom_user st;
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < n; i++)
        dom_user_apply(&st, &evts[i]);
    free(evts);
    /* a number only u1 ever had, then the removal, in one batch */
    const char *phone = "+41799990001";
    dom_evt ev[2];
    itest_event(&ev[0], "i1", "u1", LIFE + 1, DOM_EVT_PHONE_CHANGED);
    snprintf(ev[0].phone, sizeof ev[0].phone, "%s", phone);
    dom_user_apply(&st, &ev[0]);
    itest_event(&ev[1], "i1", "u1", LIFE + 2, DOM_EVT_REMOVED);
    snprintf(ev[1].user_name, sizeof ev[1].user_name, "%s", st.user_name);
    dom_user_apply(&st, &ev[1]);
    es_write w = {.events = ev, .n_events = 2, .users = &st, .n_users = 1};
    assert_ok(itest_write(s.st, &w, &err), &err, "remove u1");

    PGresult *res = itest_sql(s.st, "SELECT wrapped IS NULL, erased_at IS NOT NULL FROM factord.pii_keys"
                                    " WHERE instance_id = 'i1' AND user_id = 'u1'", 0, NULL);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "t", "the key is destroyed");
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "t");
    PQclear(res);
    res = itest_sql(s.st, "SELECT user_name, phone, verified_phone, status FROM factord.users"
                          " WHERE instance_id = 'i1' AND user_id = 'u1'", 0, NULL);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "");
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "");
    cr_assert_str_eq(PQgetvalue(res, 0, 2), "");
    cr_assert_str_eq(PQgetvalue(res, 0, 3), "removed");
    PQclear(res);
    /* neither the log nor the write side holds u1's number */
    const char *pk[] = {phone};
    res = itest_sql(s.st, "SELECT count(*) FROM factord.events WHERE payload::text LIKE '%' || $1 || '%'", 1, pk);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "%s in the log", phone);
    PQclear(res);
    res = itest_sql(s.st, "SELECT count(*) FROM factord.users u WHERE u::text LIKE '%' || $1 || '%'", 1, pk);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "%s in factord.users", phone);
    PQclear(res);

    /* readers: u1 erased, field by field; u2 in clear */
    assert_ok(es_store_user_events(s.st, "i1", "u1", &evts, &n, &err), &err, "read u1 again");
    cr_assert_eq(n, LIFE + 2);
    for (size_t i = 0; i < n; i++) {
        if (!dom_evt_type_has_pii(evts[i].type))
            continue;
        cr_assert_eq(evts[i].pii_state, DOM_PII_ERASED, "event %zu", i);
        cr_assert_str_eq(evts[i].human.first_name, "");
        cr_assert_str_eq(evts[i].human.user_name, "");
        cr_assert_str_eq(evts[i].phone, "");
        cr_assert_str_eq(evts[i].user_name, "");
    }
    free(evts);
    assert_ok(es_store_user_events(s.st, "i1", "u2", &evts, &n, &err), &err, "read u2");
    cr_assert_eq(evts[0].pii_state, DOM_PII_OPEN);
    cr_assert_str_eq(evts[0].human.last_name, "Lovelace");
    cr_assert_neq(evts[1].phone[0], '\0');
    free(evts);

    /* the chain covers the sealed bytes: verify passes, with the key and
     * without it (then the users with sealed data are counted) */
    assert_verified(s.st, 5 * 4 + 2, 4);
    es_store *bare = NULL;
    assert_ok(es_store_open(s.conninfo, &bare, &err), &err, "open without the key");
    es_verify_report rep = verify(bare);
    cr_assert(rep.ok, "verify without the key failed at %" PRId64 ": %s", rep.bad_position, rep.problem);
    cr_assert_eq(rep.users_sealed, 4, "every user has sealed events: %" PRId64, rep.users_sealed);
    es_store_free(bare);
    scratch_close(&s);
}

/* Events written before sealing (docs/pii.md): a log written in clear,
 * then new sealed events after it; seal-legacy seals the old ones in place
 * under each user's key, re-chains from the first of them, records the
 * run; verify passes (with the old head no longer matching), the fields
 * read back in clear, the append-only trigger holds again, erasure then
 * reaches the old events too, and a second run has nothing to do. */
Test(audit, seal_legacy_seals_old_plain_events_and_rechains, .timeout = 120)
{
    scratch s;
    scratch_open(&s);
    es_error err = {0};
    /* the first users written without a master key: in clear */
    es_store *bare = NULL;
    assert_ok(es_store_open(s.conninfo, &bare, &err), &err, "open without the key");
    seed(bare, "i1", NULL, 4, "u");
    es_store_free(bare);
    /* later users with sealing on */
    seed(s.st, "i1", NULL, 2, "v");
    char head[128];
    es_verify_report before = verified_head(s.st, head);
    PGresult *res = itest_sql(s.st, "SELECT count(*) FROM factord.events WHERE payload ? 'phone'", 0, NULL);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "4", "u0..u3's phone changes are in clear");
    PQclear(res);
    dom_evt *evts = NULL;
    size_t n = 0;
    assert_ok(es_store_user_events(s.st, "i1", "u2", &evts, &n, &err), &err, "read u2 before");
    char phone[DOM_PHONE_MAX];
    snprintf(phone, sizeof phone, "%s", evts[1].phone);
    cr_assert_eq(evts[1].pii_state, DOM_PII_CLEAR);
    free(evts);

    es_chain_key pub;
    es_chain_key_public(&pub);
    es_chain_hasher *h = es_chain_hasher_new(&pub);
    es_pii_rewrite rep;
    assert_ok(es_piikeys_seal_legacy(s.st, h, pub.key_id, "test run", &rep, &err), &err, "seal-legacy");
    cr_assert_eq(rep.first_position, 1);
    cr_assert_eq(rep.events_sealed, 8, "u0..u3: human.added and phone.changed each");
    cr_assert_eq(rep.events_rehashed, before.events);
    cr_assert_eq(rep.head_position, before.head_position);
    cr_assert(memcmp(rep.old_head, before.head_hash, 32) == 0);
    cr_assert(memcmp(rep.new_head, before.head_hash, 32) != 0, "a new head");

    res = itest_sql(s.st, "SELECT count(*) FROM factord.events WHERE payload ? 'phone' OR payload ? 'firstName'", 0,
                    NULL);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "0", "nothing in clear");
    PQclear(res);
    res = itest_sql(s.st, "SELECT count(*), min(note), min(events_sealed) FROM factord.pii_rewrites", 0, NULL);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "1");
    cr_assert_str_eq(PQgetvalue(res, 0, 1), "test run");
    cr_assert_str_eq(PQgetvalue(res, 0, 2), "8");
    PQclear(res);
    assert_verified(s.st, before.events, 6);
    es_verify_report stale = verify_with(s.st, &pub, head);
    cr_assert_not(stale.ok, "the head recorded before the rewrite no longer matches");
    cr_assert(strstr(stale.problem, "factord.pii_rewrites"), "verify points at the record: %s", stale.problem);
    cr_assert_eq(verify(s.st).pii_rewrites, 1);

    assert_ok(es_store_user_events(s.st, "i1", "u2", &evts, &n, &err), &err, "read u2 after");
    cr_assert_eq(evts[1].pii_state, DOM_PII_OPEN);
    cr_assert_str_eq(evts[1].phone, phone);
    cr_assert_str_eq(evts[0].human.last_name, "Lovelace");
    free(evts);
    res = itest_sql(s.st, "UPDATE factord.events SET type = type WHERE position = 1", 0, NULL);
    cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "the append-only trigger is back");
    PQclear(res);

    /* nothing left: a second run records nothing */
    assert_ok(es_piikeys_seal_legacy(s.st, h, pub.key_id, "again", &rep, &err), &err, "seal-legacy again");
    cr_assert_eq(rep.first_position, 0);
    res = itest_sql(s.st, "SELECT count(*) FROM factord.pii_rewrites", 0, NULL);
    cr_assert_str_eq(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    es_chain_hasher_free(h);

    /* the command line: nothing to do on this log */
    h_tool_result r;
    char url[1100];
    snprintf(url, sizeof url, "FACTORD_DATABASE_URL=%s", s.conninfo);
    h_tool_run(NULL, (const char *[]){"pii", "seal-legacy", NULL}, NULL,
               (const char *[]){url, "FACTORD_PII_KEY=" ITEST_PII_KEY, "FACTORD_CHAIN_KEY", NULL}, &r);
    cr_assert_eq(r.code, 0, "%s %s", r.out, r.err);
    cr_assert(strstr(r.out, "nothing to seal"), "%s", r.out);
    h_tool_result_free(&r);
    h_tool_run(NULL, (const char *[]){"pii", "seal-legacy", NULL}, NULL,
               (const char *[]){url, "FACTORD_PII_KEY", "FACTORD_PII_KEY_FILE", NULL}, &r);
    cr_assert_eq(r.code, 2, "no key: %s %s", r.out, r.err);
    h_tool_result_free(&r);
    scratch_close(&s);
}
