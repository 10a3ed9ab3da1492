/*
 * cmd/factord/verify.c - `factord verify`: check that the event log is
 * complete and unaltered (infra/components/verify.h, docs/audit.md).
 *
 * By default the run is incremental: it starts from the newest signed
 * checkpoint (docs/audit.md, "Checkpoints") and checks what was appended
 * since; --full checks from the first event. A clean run records a new
 * checkpoint in the database, and in --checkpoint-file when given (whose
 * previous checkpoint is then an anchor the run must pass).
 *
 * stdout gets the verdict: a summary (which mode, from where, events,
 * users, the chain head as POS:HASH, which an auditor records for a later
 * --expect-head, the checkpoint recorded) and exit 0, or the first bad
 * event (position, instance, user, what is wrong) and exit 1. Progress
 * goes to stderr on long runs.
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

typedef struct {
    const char *metrics_file;
    const char *checkpoint_file;
    bool full;
} verify_args;

/* A path option's value ("--name PATH" or "--name=PATH") into *out; 0 not
 * this option, 1 taken, 2 usage error (printed). */
static int path_arg(int argc, char **argv, int *i, const char *name, const char **out)
{
    size_t n = strlen(name);
    const char *arg = argv[*i];
    if (strncmp(arg, name, n) != 0 || (arg[n] != '=' && arg[n] != '\0'))
        return 0;
    if (arg[n] == '=')
        *out = arg + n + 1;
    else if (*i + 1 < argc)
        *out = argv[++*i];
    else
        *out = "";
    if (!**out) {
        fprintf(stderr, "factord verify: %s: a path, please\n", name);
        return 2;
    }
    return 1;
}

/* 0 parsed, 1 help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, es_verify_opts *o, verify_args *a)
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
                   "factord.users against the fold of the log. By default only what was appended since\n"
                   "the newest signed checkpoint (factord.verify_checkpoints) is checked, continuing the\n"
                   "chain from its hash, with the users touched since; a clean run records a new one.\n"
                   "Exit 0: all holds (summary on stdout); 1: the first bad event is printed, or the\n"
                   "check could not run; 2: usage.\n"
                   "  --full                  check from the first event (catches edits before the\n"
                   "                          checkpoint that an incremental run does not: docs/audit.md)\n"
                   "  --checkpoint-file PATH  also keep the checkpoint in PATH, outside the database: a\n"
                   "                          run starts no later than PATH's checkpoint, which the log must\n"
                   "                          still hold, and replaces it when clean\n"
                   "  --expect-head POS:HASH  the head an auditor recorded earlier (`head` line of an\n"
                   "                          earlier run): the event at POS must still have HASH; an\n"
                   "                          incremental run starts no later than POS\n"
                   "  --metrics-file PATH     also write the result for Prometheus (node_exporter's\n"
                   "                          textfile collector format, replaced atomically; docs/metrics.md)\n");
            return 1;
        }
        int prc = path_arg(argc, argv, &i, "--metrics-file", &a->metrics_file);
        if (!prc)
            prc = path_arg(argc, argv, &i, "--checkpoint-file", &a->checkpoint_file);
        if (prc == 2)
            return 2;
        if (prc == 1)
            continue;
        if (strcmp(arg, "--full") == 0) {
            a->full = true;
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
        es_metric_set(es_metrics_gauge("factord_verify_incremental",
                                       "1 when the last factord verify started from a checkpoint, 0 when it "
                                       "checked from the first event",
                                       ""),
                      rep->incremental ? 1 : 0);
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

/* --checkpoint-file's checkpoint into o, when the file exists (a first run
 * creates it). False (after printing why) when it cannot be read or is no
 * checkpoint. */
static bool read_checkpoint_file(const char *path, es_verify_opts *o)
{
    char *text = NULL;
    size_t len = 0;
    char why[200];
    es_read_status rs = es_read_file(path, ES_CHECKPOINT_FILE_MAX, &text, &len);
    if (rs == ES_READ_OPEN && errno == ENOENT)
        return true;
    if (rs != ES_READ_OK) {
        fprintf(stderr, "factord verify: --checkpoint-file %s: %s\n", path,
                rs == ES_READ_TOO_LARGE ? "too large for a checkpoint" : strerror(errno));
        return false;
    }
    bool ok = strlen(text) == len && es_checkpoint_parse(text, &o->file_checkpoint, why, sizeof why);
    if (!ok)
        fprintf(stderr, "factord verify: --checkpoint-file %s: %s\n", path,
                strlen(text) == len ? why : "not a text file");
    free(text);
    o->has_file_checkpoint = ok;
    return ok;
}

static void print_mode(const es_verify_opts *o, const es_verify_report *rep)
{
    if (rep->incremental)
        printf("mode        incremental, from position %" PRId64 ": %s\n", rep->from_position, rep->from_what);
    else if (rep->from_what[0])
        printf("mode        %s, not started: %s\n", o->incremental ? "incremental" : "full", rep->from_what);
    else
        printf("mode        full%s\n", !o->incremental ? " (--full)" : " (no checkpoint yet)");
}

int fd_verify_main(int argc, char **argv)
{
    es_verify_opts o = {.progress = print_progress};
    verify_args a = {0};
    int prc = parse_args(argc, argv, &o, &a);
    if (prc)
        return prc == 1 ? 0 : 2;
    o.incremental = !a.full;
    es_config cfg;
    if (!fd_load_config(&cfg, "verify"))
        return 2;
    int rc = 1;
    bool completed = false;
    double started_s = (double)es_clock_now_us() / 1e6;
    es_error err = {0};
    es_store *st = NULL;
    es_chain_key key = {0};
    es_pii_master pii = {0};
    es_verify_report rep;
    memset(&rep, 0, sizeof rep);
    if (a.checkpoint_file && !read_checkpoint_file(a.checkpoint_file, &o)) {
        rc = 2;
        goto out;
    }
    if (es_chain_key_load(&cfg, true, &key, &err) != ES_OK) {
        fprintf(stderr, "factord verify: %s\n", err.text);
        rc = 2;
        goto out;
    }
    bool have_pii = false;
    if (es_pii_master_load(&cfg, true, &pii, &have_pii, &err) != ES_OK) {
        fprintf(stderr, "factord verify: %s\n", err.text);
        rc = 2;
        goto out;
    }
    if (es_store_open(cfg.database_url, &st, &err) != ES_OK) {
        fprintf(stderr, "factord verify: cannot connect to PostgreSQL: %s\n", err.text);
        goto out;
    }
    if (have_pii)
        es_store_set_pii_master(st, &pii);
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
        print_mode(&o, &rep);
        printf("chain key   %s (key id %s)\n", key.source, key.key_id);
        goto out;
    }
    /* The checkpoint of this run: in the database (a failure there only
     * costs the next run its head start), then in the file. */
    es_checkpoint cp;
    int64_t cp_id = 0;
    es_error cp_err = {0};
    es_result cp_rc = es_audit_record_checkpoint(st, &key, &rep, es_clock_now_us(), &cp, &cp_id, &cp_err);

    printf("ok: the log is complete and unaltered\n");
    print_mode(&o, &rep);
    if (rep.incremental) {
        printf("events      %" PRId64 " checked, above position %" PRId64 "\n", rep.events, rep.from_position);
        printf("users       %" PRId64 " (those with events above position %" PRId64 ")\n", rep.users,
               rep.from_position);
    } else {
        printf("events      %" PRId64 " (%" PRId64 " unchained, written before the chain)\n", rep.events,
               rep.unchained);
        printf("users       %" PRId64 "\n", rep.users);
    }
    if (rep.pii_rewrites)
        printf("rewrites    %" PRId64 " runs of factord pii seal-legacy re-chained the log (factord.pii_rewrites)\n",
               rep.pii_rewrites);
    if (rep.users_sealed)
        printf("sealed      %" PRId64 " users with sealed personal data: user_name and phone not compared "
               "(no FACTORD_PII_KEY)\n", rep.users_sealed);
    printf("head        %" PRId64 ":%s\n", rep.head_position, hex);
    if (cp_rc != ES_OK)
        printf("checkpoint  not recorded: %s%s%s\n", cp_err.text, cp_err.sqlstate[0] ? " SQLSTATE " : "",
               cp_err.sqlstate);
    else if (cp_id)
        printf("checkpoint  %" PRId64 " recorded at position %" PRId64 "\n", cp_id, cp.position);
    else
        printf("checkpoint  none recorded (no chained event)\n");
    printf("chain key   %s (key id %s)%s\n", key.source, key.key_id,
           key.is_public ? ": public, catches only accidental or naive edits, and anyone can sign a "
                           "checkpoint; use --expect-head or --checkpoint-file"
                         : "");
    printf("took        %.2f s (%.0f events/s)\n", rep.seconds,
           rep.seconds > 0 ? (double)rep.events / rep.seconds : 0.0);
    rc = 0;
    if (a.checkpoint_file && cp.position > 0) {
        char text[ES_CHECKPOINT_FILE_MAX];
        size_t n = es_checkpoint_format(&cp, text, sizeof text);
        if (!n || !es_write_file_atomic(a.checkpoint_file, text, n, 0644)) {
            fprintf(stderr, "factord verify: --checkpoint-file %s: %s\n", a.checkpoint_file,
                    n ? strerror(errno) : "the checkpoint cannot be encoded");
            rc = 1;
        }
    }
out:
    if (fflush(stdout) != 0 && rc == 0)
        rc = 1;
    /* A usage or key error (2) is no run of the check. */
    if (a.metrics_file && rc != 2 && !write_metrics(a.metrics_file, completed, &rep, started_s) && rc == 0)
        rc = 1;
    es_chain_key_wipe(&key);
    es_pii_master_wipe(&pii);
    es_store_free(st);
    es_config_free(&cfg);
    return rc;
}
