/*
 * bench/append.c - the append path on its own: events/s through factord's
 * event store (es_store_write, infra/pg/store.c) from W concurrent writers.
 *
 * Each writer has its own connection and its own batch-size set of users,
 * and commits one transaction per batch the way the processor does after
 * deciding: BEGIN, es_store_write (user upserts, command rows, the position
 * counter, the events), COMMIT. Every batch is one command per user: one
 * event (the user's next sequence: user.human.added first, then
 * user.human.otp.sms.added), one user row upserted (the fold of its events,
 * so `factord verify` passes), one command row with its stored reply.
 * Events are chained with the configured chain key, as a processor's. Nothing is read first
 * (no command look-up, no FOR UPDATE load): this measures the write, the
 * counter row held to COMMIT, and the WAL flush. Runs for --seconds, then
 * prints one JSON object: writers, batch, events, seconds, events_per_s.
 *
 * With --phone 1 each event is a user.human.phone.changed with a number
 * (personal data) instead: with FACTORD_PII_KEY set (64 hex digits) the
 * store seals it under the user's key (docs/pii.md), without it writes it
 * in clear, so the two runs give the cost of sealing on the append path.
 *
 * Usage: factord_bench_append --writers W [--batch 500] [--seconds 10]
 *        [--instance ID] [--phone 1]   (FACTORD_DATABASE_URL names the
 *        database; the schema must be migrated)
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/config.h"
#include "infra/base/log.h"
#include "infra/crypto/chain.h"
#include "infra/pg/store.h"

static bool phone_events;     /* --phone 1 */
static es_pii_master pii;     /* FACTORD_PII_KEY, when has_pii */
static bool has_pii;

typedef struct {
    int id, of;   /* writer id, of how many */
    unsigned run; /* 24 random bits: command ids differ between runs into one database */
    const char *conninfo, *instance;
    const es_chain_key *chain_key;
    long batch;
    int64_t end_ns;
    pthread_barrier_t *start;
    long events, batches, conflicts;
    int failed;
} writer;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *run_writer(void *arg)
{
    writer *w = arg;
    es_error err = {0};
    es_store *st = NULL;
    size_t n = (size_t)w->batch;
    dom_evt *evts = calloc(n, sizeof *evts);
    dom_user *users = calloc(n, sizeof *users);
    dom_cmd *cmds = calloc(n, sizeof *cmds);
    es_cmd_outcome *outs = calloc(n, sizeof *outs);
    char **bodies = calloc(n, sizeof *bodies);
    unsigned char hash[32];
    if (!evts || !users || !cmds || !outs || !bodies)
        abort();
    memset(hash, 0xab, sizeof hash);
    if (es_store_open(w->conninfo, &st, &err) != ES_OK) {
        fprintf(stderr, "append: writer %d: %s\n", w->id, err.text);
        w->failed = 1;
        pthread_barrier_wait(w->start);
        pthread_barrier_wait(w->start);
        goto out;
    }
    es_store_set_chain_key(st, w->chain_key);
    if (has_pii)
        es_store_set_pii_master(st, &pii);
    for (size_t i = 0; i < n; i++) {
        dom_user *u = &users[i];
        snprintf(u->instance_id, sizeof u->instance_id, "%s", w->instance);
        snprintf(u->user_id, sizeof u->user_id, "w%d-u%zu", w->id, i);
        snprintf(u->resource_owner, sizeof u->resource_owner, "org-bench");
    }
    pthread_barrier_wait(w->start); /* ready */
    pthread_barrier_wait(w->start); /* end_ns set: go */
    for (int64_t seq = 1; now_ns() < w->end_ns; seq++) {
        int64_t t = es_clock_now_us();
        for (size_t i = 0; i < n; i++) {
            dom_cmd *c = &cmds[i];
            memset(c, 0, sizeof *c);
            char id[64];
            snprintf(id, sizeof id, "%08x-%04x-4%03x-8%03x-%012" PRIx64, (unsigned)(w->of << 16 | w->id),
                     (unsigned)(i & 0xffff), w->run >> 12 & 0xfff, w->run & 0xfff,
                     (uint64_t)seq & UINT64_C(0xffffffffffff));
            memcpy(c->id, id, DOM_UUID_LEN);
            c->id[DOM_UUID_LEN] = '\0';
            c->type = DOM_CMD_ADD_OTP_SMS;
            snprintf(c->instance_id, sizeof c->instance_id, "%s", w->instance);
            snprintf(c->user_id, sizeof c->user_id, "%s", users[i].user_id);
            snprintf(c->resource_owner, sizeof c->resource_owner, "org-bench");
            dom_evt *e = &evts[i];
            memset(e, 0, sizeof *e);
            /* A user's first event creates it, every later one adds the
             * factor again (or, with --phone 1, changes its number): one
             * event per user per batch either way. */
            e->type = seq == 1 ? DOM_EVT_HUMAN_ADDED : phone_events ? DOM_EVT_PHONE_CHANGED : DOM_EVT_OTP_SMS_ADDED;
            if (seq == 1)
                snprintf(e->human.user_name, sizeof e->human.user_name, "%s", users[i].user_id);
            if (e->type == DOM_EVT_PHONE_CHANGED)
                snprintf(e->phone, sizeof e->phone, "+417912%05lld", (long long)((seq * 7919 + (int64_t)i) % 100000));
            snprintf(e->instance_id, sizeof e->instance_id, "%s", w->instance);
            snprintf(e->aggregate_id, sizeof e->aggregate_id, "%s", users[i].user_id);
            snprintf(e->resource_owner, sizeof e->resource_owner, "org-bench");
            snprintf(e->creator, sizeof e->creator, "%s", users[i].user_id);
            snprintf(e->command_id, sizeof e->command_id, "%s", c->id);
            e->sequence = seq;
            e->created_at_us = t;
            e->revision = 1;
            e->last_of_command = true;
            /* The row is the fold of the user's events, as the processor
             * writes it, so `factord verify` passes over the result
             * (bench/growth.sh verifies after appending). A batch retried
             * after a conflict applies the same event again, which leaves
             * the same row: both event types overwrite what they set. */
            dom_user_apply(&users[i], e);
            json_t *b = dom_success_body(e, NULL);
            free(bodies[i]);
            bodies[i] = json_dumps(b, JSON_COMPACT);
            json_decref(b);
            outs[i] = (es_cmd_outcome){.cmd = c, .hash = hash, .http_status = 200, .body = bodies[i],
                                       .reply_to = "factord.replies"};
        }
        es_write wr = {.events = evts, .n_events = n, .users = users, .n_users = n, .outcomes = outs,
                       .n_outcomes = n};
        es_result rc = es_store_begin(st, &err);
        if (rc == ES_OK)
            rc = es_store_write(st, &wr, &err);
        if (rc == ES_OK)
            rc = es_store_commit(st, &err);
        if (rc == ES_ECONFLICT) {
            es_store_rollback(st);
            w->conflicts++;
            seq--;
            continue;
        }
        if (rc != ES_OK) {
            es_store_rollback(st);
            fprintf(stderr, "append: writer %d: %s (%s)\n", w->id, err.text, err.sqlstate);
            w->failed = 1;
            goto out;
        }
        w->events += (long)n;
        w->batches++;
    }
out:
    es_store_free(st);
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    free(evts);
    free(users);
    free(cmds);
    free(outs);
    return NULL;
}

static long arg_long(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v <= 0) {
        fprintf(stderr, "usage: factord_bench_append --writers W [--batch N] [--seconds S] [--instance ID] [--phone 1]\n");
        exit(2);
    }
    return v;
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

int main(int argc, char **argv)
{
    long writers = 1, batch = 500, seconds = 10;
    const char *instance = "bench-append";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--writers"))
            writers = arg_long(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch"))
            batch = arg_long(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = arg_long(argv[i + 1]);
        else if (!strcmp(argv[i], "--instance"))
            instance = argv[i + 1];
        else if (!strcmp(argv[i], "--phone"))
            phone_events = arg_long(argv[i + 1]) != 0;
        else
            arg_long("");
    }
    if (argc % 2 == 0 || writers > 256 || batch > 100000)
        arg_long("");
    es_log_init("bench", "warn");
    const char *pii_hex = getenv("FACTORD_PII_KEY");
    if (pii_hex && *pii_hex) {
        es_error kerr = {0};
        if (es_pii_master_from_hex(pii_hex, &pii, &kerr) != ES_OK) {
            fprintf(stderr, "append: %s\n", kerr.text);
            return 2;
        }
        has_pii = true;
    }
    const char *conninfo = getenv("FACTORD_DATABASE_URL");
    /* The chain key of the processors (FACTORD_CHAIN_KEY, ..._FILE, else the
     * public key): an HMAC costs the same with either, and with the same key
     * `factord verify` passes over what this wrote. */
    es_config cfg;
    es_chain_key chain_key;
    es_error err = {0};
    if (es_config_load(&cfg, env_get, &err) != ES_OK || es_chain_key_load(&cfg, false, &chain_key, &err) != ES_OK) {
        fprintf(stderr, "append: %s\n", err.text);
        return 2;
    }
    writer *ws = calloc((size_t)writers, sizeof *ws);
    pthread_t *th = calloc((size_t)writers, sizeof *th);
    pthread_barrier_t start;
    if (!ws || !th || pthread_barrier_init(&start, NULL, (unsigned)writers + 1) != 0)
        abort();
    unsigned run = 0;
    FILE *rnd = fopen("/dev/urandom", "rb");
    if (!rnd || fread(&run, sizeof run, 1, rnd) != 1)
        abort();
    fclose(rnd);
    for (long i = 0; i < writers; i++) {
        ws[i] = (writer){.id = (int)i, .run = run, .of = (int)writers, .conninfo = conninfo, .instance = instance, .batch = batch,
                         .chain_key = &chain_key, .start = &start};
    }
    for (long i = 0; i < writers; i++)
        if (pthread_create(&th[i], NULL, run_writer, &ws[i]) != 0)
            abort();
    /* Two waits: every writer connected and ready, then the end is set and
     * all start together. */
    pthread_barrier_wait(&start);
    int64_t t0 = now_ns();
    for (long i = 0; i < writers; i++)
        ws[i].end_ns = t0 + seconds * 1000000000;
    pthread_barrier_wait(&start);
    long events = 0, batches = 0, conflicts = 0;
    int failed = 0;
    for (long i = 0; i < writers; i++) {
        pthread_join(th[i], NULL);
        events += ws[i].events;
        batches += ws[i].batches;
        conflicts += ws[i].conflicts;
        failed |= ws[i].failed;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    printf("{\"writers\":%ld,\"batch\":%ld,\"events\":%ld,\"batches\":%ld,\"conflicts\":%ld,"
           "\"seconds\":%.3f,\"events_per_s\":%.0f,\"phone\":%s,\"sealed\":%s}\n",
           writers, batch, events, batches, conflicts, secs, (double)events / secs, phone_events ? "true" : "false",
           phone_events && has_pii ? "true" : "false");
    pthread_barrier_destroy(&start);
    es_chain_key_wipe(&chain_key);
    es_config_free(&cfg);
    free(ws);
    free(th);
    return failed ? 1 : 0;
}
