/*
 * cmd/factord/verify.c - `factord verify`: check that the event log is
 * complete and unaltered (infra/components/verify.h, docs/audit.md).
 *
 * stdout gets the verdict: a summary (events, users, the chain head as
 * POS:HASH, which an auditor records for a later --expect-head) and exit 0,
 * or the first bad event (position, instance, user, what is wrong) and exit
 * 1. Progress goes to stderr on long runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/components/verify.h"
#include "infra/crypto/chain.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"
#include "infra/base/util.h"
#include "infra/pg/store.h"

static void print_progress(void *arg, const es_audit_progress *p)
{
    (void)arg;
    if (p->position)
        fprintf(stderr, "verify: %s: %" PRId64 " events, position %" PRId64 ", %.0f events/s\n",
                p->phase, p->rows, p->position, p->rate);
    else
        fprintf(stderr, "verify: %s: %" PRId64 " events, %.0f events/s\n", p->phase, p->rows, p->rate);
}

/* 0 parsed, 1 help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, es_verify_opts *o, const char **metrics_file)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            bool bad;
            char name[] = "verify", help[] = "--help";
            char *hargv[] = {name, help};
            (void)fd_wants_help(2, hargv, "verify", &bad);
            printf("\nChecks, in one snapshot: the hash chain (FACTORD_CHAIN_KEY; unset: the public key),\n"
                   "positions, each user's sequences 1..n, the chain head against the counter, and\n"
                   "factord.users against the fold of the log. Exit 0: all holds (summary on stdout);\n"
                   "1: the first bad event is printed, or the check could not run; 2: usage.\n"
                   "  --expect-head POS:HASH  the head an auditor recorded earlier (`head` line of an\n"
                   "                          earlier run): the event at POS must still have HASH\n"
                   "  --metrics-file PATH     also write the result for Prometheus (node_exporter's\n"
                   "                          textfile collector format, replaced atomically; docs/metrics.md)\n");
            return 1;
        }
        if (strncmp(arg, "--metrics-file=", 15) == 0 || (strcmp(arg, "--metrics-file") == 0 && i + 1 < argc)) {
            *metrics_file = arg[14] == '=' ? arg + 15 : argv[++i];
            if (!**metrics_file) {
                fprintf(stderr, "factord verify: --metrics-file: a path, please\n");
                return 2;
            }
            continue;
        }
        const char *value = NULL;
        if (strncmp(arg, "--expect-head=", 14) == 0)
            value = arg + 14;
        else if (strcmp(arg, "--expect-head") == 0 && i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "factord verify: unknown argument '%s' (try --help)\n", arg);
            return 2;
        }
        if (!es_audit_parse_head(value, &o->expect_position, o->expect_hash)) {
            fprintf(stderr, "factord verify: --expect-head: expected POS:HASH (64 hex digits), got '%s'\n",
                    value);
            return 2;
        }
        o->expect_head = true;
    }
    return 0;
}

/* The run's result for Prometheus: completed (a verdict was reached), ok,
 * and for a clean log its size and head. False (after printing why) when
 * the file cannot be written. */
static bool write_metrics(const char *path, bool completed, const es_verify_report *rep, double started_s)
{
    es_metric_set(es_metrics_gauge("factord_verify_last_run_timestamp_seconds",
                                   "When factord verify last ran (Unix time)", ""),
                  started_s);
    es_metric_set(es_metrics_gauge("factord_verify_completed",
                                   "1 when the last factord verify reached a verdict, 0 when it could not run", ""),
                  completed ? 1 : 0);
    if (completed) {
        es_metric_set(es_metrics_gauge("factord_verify_ok",
                                       "1 when the last factord verify found the log complete and unaltered, 0 when "
                                       "it found a bad event",
                                       ""),
                      rep->ok ? 1 : 0);
        es_metric_set(es_metrics_gauge("factord_verify_duration_seconds", "How long the last factord verify took",
                                       ""),
                      rep->seconds);
    }
    if (completed && rep->ok) {
        es_metric_set(es_metrics_gauge("factord_verify_events", "Events the last clean factord verify checked", ""),
                      (double)rep->events);
        es_metric_set(es_metrics_gauge("factord_verify_head_position",
                                       "Log position of the chain head the last clean factord verify reached", ""),
                      (double)rep->head_position);
    }
    char *text = es_metrics_render();
    bool ok = es_write_file_atomic(path, text, strlen(text), 0644);
    if (!ok)
        fprintf(stderr, "factord verify: --metrics-file %s: %s\n", path, strerror(errno));
    free(text);
    return ok;
}

int fd_verify_main(int argc, char **argv)
{
    es_verify_opts o = {.progress = print_progress};
    const char *metrics_file = NULL;
    int prc = parse_args(argc, argv, &o, &metrics_file);
    if (prc)
        return prc == 1 ? 0 : 2;
    es_config cfg;
    if (!fd_load_config(&cfg, "verify"))
        return 2;
    int rc = 1;
    bool completed = false;
    double started_s = (double)es_clock_now_us() / 1e6;
    es_error err = {0};
    es_store *st = NULL;
    es_chain_key key = {0};
    es_verify_report rep;
    memset(&rep, 0, sizeof rep);
    if (es_chain_key_load(&cfg, true, &key, &err) != ES_OK) {
        fprintf(stderr, "factord verify: %s\n", err.text);
        rc = 2;
        goto out;
    }
    if (es_store_open(cfg.database_url, &st, &err) != ES_OK) {
        fprintf(stderr, "factord verify: cannot connect to PostgreSQL: %s\n", err.text);
        goto out;
    }
    if (es_audit_verify(st, &key, &o, &rep, &err) != ES_OK) {
        fprintf(stderr, "factord verify: cannot verify: %s%s%s\n", err.text, err.sqlstate[0] ? " SQLSTATE " : "",
                err.sqlstate);
        goto out;
    }
    completed = true;
    char hex[2 * ES_CHAIN_HASH_LEN + 1];
    es_chain_hex(rep.head_hash, sizeof rep.head_hash, hex);
    if (!rep.ok) {
        printf("FAILED: %s\n", rep.problem);
        printf("position    %" PRId64 "\n", rep.bad_position);
        printf("instance    %s\n", rep.bad_instance);
        printf("user        %s\n", rep.bad_user);
        printf("chain key   %s (key id %s)\n", key.source, key.key_id);
        goto out;
    }
    printf("ok: the log is complete and unaltered\n");
    printf("events      %" PRId64 " (%" PRId64 " unchained, written before the chain)\n", rep.events,
           rep.unchained);
    printf("users       %" PRId64 "\n", rep.users);
    printf("head        %" PRId64 ":%s\n", rep.head_position, hex);
    printf("chain key   %s (key id %s)%s\n", key.source, key.key_id,
           key.is_public ? ": public, catches only accidental or naive edits; use --expect-head" : "");
    printf("took        %.2f s (%.0f events/s)\n", rep.seconds,
           rep.seconds > 0 ? (double)rep.events / rep.seconds : 0.0);
    rc = 0;
out:
    if (fflush(stdout) != 0 && rc == 0)
        rc = 1;
    /* A usage or key error (2) is no run of the check. */
    if (metrics_file && rc != 2 && !write_metrics(metrics_file, completed, &rep, started_s) && rc == 0)
        rc = 1;
    es_chain_key_wipe(&key);
    es_store_free(st);
    es_config_free(&cfg);
    return rc;
}
