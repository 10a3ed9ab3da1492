/*
 * cmd/factord/replay.c - `factord replay`: the event log as JSON lines,
 * filtered (infra/components/replay.h, docs/audit.md).
 *
 * stdout carries only data: one event per line in position order, in the
 * events topic's shape (docs/contracts.md) plus "hash". Progress goes to
 * stderr, and only when stderr is a terminal.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/factord/cmd.h"
#include "infra/components/replay.h"
#include "infra/base/log.h"
#include "infra/pg/store.h"

enum { F_INSTANCE, F_USER, F_ORG, F_TYPE, F_SINCE, F_UNTIL, F_FROM, F_TO, F__COUNT };

static const struct {
    const char *name, *arg, *help;
} flags[F__COUNT] = {
    [F_INSTANCE] = {"instance", "I", "only this instance's events"},
    [F_USER] = {"user", "U", "only this user's events (aggregate id; with --instance for one user)"},
    [F_ORG] = {"org", "O", "only events of this organisation (resourceOwner)"},
    [F_TYPE] = {"type", "T", "only events of this type (repeatable; ZITADEL's mfa names accepted)"},
    [F_SINCE] = {"since", "TIME", "createdAt at or after TIME (RFC 3339)"},
    [F_UNTIL] = {"until", "TIME", "createdAt before TIME (RFC 3339)"},
    [F_FROM] = {"from-position", "N", "position at or above N"},
    [F_TO] = {"to-position", "N", "position at or below N"},
};

static void print_progress(void *arg, const es_audit_progress *p)
{
    (void)arg;
    fprintf(stderr, "\rreplay: %" PRId64 " events, position %" PRId64 ", %.0f events/s ", p->rows, p->position,
            p->rate);
}

static void print_help(void)
{
    char name[] = "replay", help[] = "--help";
    char *hargv[] = {name, help};
    bool bad;
    (void)fd_wants_help(2, hargv, "replay", &bad);
    printf("\nFlags (all optional; together they narrow):\n");
    for (int f = 0; f < F__COUNT; f++) {
        char left[32];
        snprintf(left, sizeof left, "--%s %s", flags[f].name, flags[f].arg);
        printf("  %-22s %s\n", left, flags[f].help);
    }
    printf("  %-22s %s\n", "--open", "personal data in clear (FACTORD_PII_KEY; erased users: \"pii\":\"erased\")");
    printf("\nstdout: one event per line, position order, the events topic's JSON plus \"hash\" (hex;\n"
           "null before the chain); personal data sealed as stored unless --open (docs/pii.md).\n"
           "Exit 0: done; 1: PostgreSQL failed; 2: usage or no key for --open.\n");
}

static bool parse_pos(const char *s, int64_t *v)
{
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end || x < 1)
        return false;
    *v = x;
    return true;
}

/* 0 parsed, 1 help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, es_replay_filter *f)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help();
            return 1;
        }
        if (strcmp(arg, "--open") == 0) {
            f->open = true;
            continue;
        }
        int k = F__COUNT;
        const char *value = NULL;
        if (strncmp(arg, "--", 2) == 0) {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            for (k = 0; k < F__COUNT; k++)
                if (strlen(flags[k].name) == n && strncmp(flags[k].name, name, n) == 0)
                    break;
            if (k < F__COUNT && eq)
                value = eq + 1;
        }
        if (k == F__COUNT) {
            fprintf(stderr, "factord replay: unknown argument '%s' (try --help)\n", arg);
            return 2;
        }
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "factord replay: --%s needs a value (try --help)\n", flags[k].name);
                return 2;
            }
            value = argv[++i];
        }
        bool ok = true;
        switch (k) {
        case F_INSTANCE: f->instance_id = value; break;
        case F_USER: f->user_id = value; break;
        case F_ORG: f->resource_owner = value; break;
        case F_TYPE: {
            dom_evt_type t = dom_evt_type_parse(value);
            ok = t != DOM_EVT_UNKNOWN && f->n_types < ES_REPLAY_MAX_TYPES;
            if (ok)
                f->types[f->n_types++] = t;
            break;
        }
        case F_SINCE: ok = dom_time_parse(value, &f->since_us) == ES_OK; f->has_since = true; break;
        case F_UNTIL: ok = dom_time_parse(value, &f->until_us) == ES_OK; f->has_until = true; break;
        case F_FROM: ok = parse_pos(value, &f->from_position); break;
        case F_TO: ok = parse_pos(value, &f->to_position); break;
        default: break;
        }
        if (!ok) {
            fprintf(stderr, "factord replay: --%s: invalid value '%s' (try --help)\n", flags[k].name, value);
            return 2;
        }
    }
    return 0;
}

int fd_replay_main(int argc, char **argv)
{
    es_replay_filter f = {0};
    int prc = parse_args(argc, argv, &f);
    if (prc)
        return prc == 1 ? 0 : 2;
    es_config cfg;
    if (!fd_load_config(&cfg, "replay"))
        return 2;
    int rc = 1;
    es_error err = {0};
    es_store *st = NULL;
    int64_t written = 0;
    static char outbuf[1 << 16];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    if (isatty(STDERR_FILENO))
        f.progress = print_progress;
    es_pii_master pii = {0};
    bool have_pii = false;
    if (f.open && (es_pii_master_load(&cfg, true, &pii, &have_pii, &err) != ES_OK || !have_pii)) {
        fprintf(stderr, "factord replay: --open: %s\n",
                have_pii || err.text[0] ? err.text : "no FACTORD_PII_KEY or FACTORD_PII_KEY_FILE");
        rc = 2;
        goto out;
    }
    if (es_store_open(cfg.database_url, &st, &err) != ES_OK) {
        fprintf(stderr, "factord replay: cannot connect to PostgreSQL: %s\n", err.text);
        goto out;
    }
    if (have_pii)
        es_store_set_pii_master(st, &pii);
    if (es_audit_replay(st, &f, stdout, &written, &err) != ES_OK) {
        fprintf(stderr, "factord replay: %s%s%s\n", err.text, err.sqlstate[0] ? " SQLSTATE " : "", err.sqlstate);
        goto out;
    }
    if (f.progress)
        fprintf(stderr, "\rreplay: %" PRId64 " events                              \n", written);
    rc = 0;
out:
    fflush(stdout);
    es_pii_master_wipe(&pii);
    es_store_free(st);
    es_config_free(&cfg);
    return rc;
}
