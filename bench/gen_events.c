/*
 * bench/gen_events.c - fill a factord database with N events fast, for the
 * audit tools' benchmark (bench/audit.sh).
 *
 * Writes batches straight through es_store_write (no Kafka, no decisions):
 * each user gets user.human.added, user.human.phone.changed,
 * user.human.phone.verified and user.human.otp.sms.added, every third one
 * also user.human.otp.sms.removed, so both projections have work. The
 * users' write-side rows are folded with dom_user_apply and written in the
 * same transaction, as the processor would. Commands are not recorded
 * (the events carry no command id).
 *
 * Usage: FACTORD_DATABASE_URL=... factord_bench_gen [--events N] [--instance I]
 *        FACTORD_DATABASE_URL=... factord_bench_gen --lock-existing N [--step S] [--instance I]
 * The schema must be migrated. Prints "<events> events in <s> s".
 *
 * --lock-existing appends one user.locked to N users written before (user
 * numbers 0, S, 2S, ...: spread over the log when S is the user count over
 * N), with their rows moved along: appended events of old users, whose
 * whole history an incremental verify folds again (docs/audit.md).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/pg/store.h"

#define USERS_PER_BATCH 250
#define EVENTS_PER_USER_MAX 5

static void fill(dom_evt *e, const char *inst, const char *user, int64_t seq, dom_evt_type type, int64_t now)
{
    memset(e, 0, sizeof *e);
    e->type = type;
    snprintf(e->instance_id, sizeof e->instance_id, "%s", inst);
    snprintf(e->aggregate_id, sizeof e->aggregate_id, "%s", user);
    snprintf(e->resource_owner, sizeof e->resource_owner, "org-bench");
    snprintf(e->creator, sizeof e->creator, "%s", user);
    e->sequence = seq;
    e->created_at_us = now;
    e->revision = DOM_EVT_REVISION;
}

/* One user.locked for each of n users u(k*step), k < n, of inst; their
 * rows loaded and moved along in the same transactions. 0 or 1. */
static int lock_existing(es_store *st, const char *inst, long long n, long long step)
{
    dom_evt *evts = calloc(USERS_PER_BATCH, sizeof *evts);
    dom_user *users = calloc(USERS_PER_BATCH, sizeof *users);
    bool found[USERS_PER_BATCH];
    es_error err = {0};
    int rc = 0;
    long long done = 0, k = 0;
    if (!evts || !users)
        abort();
    int64_t t0 = es_clock_mono_ms();
    while (k < n) {
        size_t nu = 0, ne = 0;
        int64_t now = es_clock_now_us();
        for (; nu < USERS_PER_BATCH && k < n; nu++, k++) {
            memset(&users[nu], 0, sizeof users[nu]);
            snprintf(users[nu].instance_id, sizeof users[nu].instance_id, "%s", inst);
            snprintf(users[nu].user_id, sizeof users[nu].user_id, "u%08lld", k * step);
        }
        if (es_store_begin(st, &err) != ES_OK || es_store_load_users(st, users, found, nu, &err) != ES_OK)
            goto fail;
        for (size_t i = 0; i < nu; i++) {
            if (!found[i])
                continue;
            fill(&evts[ne], inst, users[i].user_id, users[i].sequence + 1, DOM_EVT_LOCKED, now);
            evts[ne].last_of_command = true;
            dom_user_apply(&users[i], &evts[ne]);
            ne++;
        }
        es_write w = {.events = evts, .n_events = ne, .users = users, .n_users = nu};
        if (es_store_write(st, &w, &err) != ES_OK || es_store_commit(st, &err) != ES_OK)
            goto fail;
        done += (long long)ne;
    }
    printf("%lld events (user.locked of existing users) in %.1f s\n", done,
           (double)(es_clock_mono_ms() - t0) / 1000.0);
    goto out;
fail:
    es_store_rollback(st);
    fprintf(stderr, "factord_bench_gen: %s\n", err.text);
    rc = 1;
out:
    free(evts);
    free(users);
    return rc;
}

int main(int argc, char **argv)
{
    long long want = 1000000, lock = 0, step = 1;
    const char *inst = "bench";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) {
            want = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--instance") == 0 && i + 1 < argc) {
            inst = argv[++i];
        } else if (strcmp(argv[i], "--lock-existing") == 0 && i + 1 < argc) {
            lock = strtoll(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--step") == 0 && i + 1 < argc) {
            step = strtoll(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: factord_bench_gen [--events N] [--instance I]\n"
                            "       factord_bench_gen --lock-existing N [--step S] [--instance I]\n");
            return 2;
        }
    }
    if (lock < 0 || step < 1) {
        fprintf(stderr, "factord_bench_gen: --lock-existing and --step take positive numbers\n");
        return 2;
    }
    es_log_init("bench-gen", "warn");
    es_store *st = NULL;
    es_error err = {0};
    if (es_store_open(getenv("FACTORD_DATABASE_URL"), &st, &err) != ES_OK) {
        fprintf(stderr, "factord_bench_gen: %s\n", err.text);
        return 1;
    }
    if (lock > 0) {
        int lrc = lock_existing(st, inst, lock, step);
        es_store_free(st);
        return lrc;
    }
    dom_evt *evts = calloc(USERS_PER_BATCH * EVENTS_PER_USER_MAX, sizeof *evts);
    dom_user *users = calloc(USERS_PER_BATCH, sizeof *users);
    if (!evts || !users)
        abort();
    long long written = 0, user_no = 0;
    int64_t t0 = es_clock_mono_ms();
    int rc = 0;
    while (written < want) {
        size_t n = 0, nu = 0;
        int64_t now = es_clock_now_us();
        while (nu < USERS_PER_BATCH && written + (long long)n < want) {
            char user[32];
            snprintf(user, sizeof user, "u%08lld", user_no);
            size_t first = n;
            fill(&evts[n], inst, user, 1, DOM_EVT_HUMAN_ADDED, now);
            snprintf(evts[n].human.user_name, sizeof evts[n].human.user_name, "%s", user);
            snprintf(evts[n].human.first_name, sizeof evts[n].human.first_name, "Ada");
            snprintf(evts[n].human.last_name, sizeof evts[n].human.last_name, "Lovelace");
            snprintf(evts[n].human.email, sizeof evts[n].human.email, "%s@example.com", user);
            n++;
            fill(&evts[n], inst, user, 2, DOM_EVT_PHONE_CHANGED, now);
            snprintf(evts[n].phone, sizeof evts[n].phone, "+4179%07lld", user_no % 10000000);
            n++;
            fill(&evts[n++], inst, user, 3, DOM_EVT_PHONE_VERIFIED, now);
            fill(&evts[n++], inst, user, 4, DOM_EVT_OTP_SMS_ADDED, now);
            if (user_no % 3 == 0)
                fill(&evts[n++], inst, user, 5, DOM_EVT_OTP_SMS_REMOVED, now);
            evts[n - 1].last_of_command = true;
            memset(&users[nu], 0, sizeof users[nu]);
            for (size_t k = first; k < n; k++)
                dom_user_apply(&users[nu], &evts[k]);
            nu++;
            user_no++;
        }
        es_write w = {.events = evts, .n_events = n, .users = users, .n_users = nu};
        if (es_store_begin(st, &err) != ES_OK || es_store_write(st, &w, &err) != ES_OK ||
            es_store_commit(st, &err) != ES_OK) {
            es_store_rollback(st);
            fprintf(stderr, "factord_bench_gen: %s\n", err.text);
            rc = 1;
            break;
        }
        written += (long long)n;
    }
    double secs = (double)(es_clock_mono_ms() - t0) / 1000.0;
    printf("%lld events (%lld users) in %.1f s\n", written, user_no, secs);
    free(evts);
    free(users);
    es_store_free(st);
    return rc;
}
