/*
 * cmd/factord/rebuild.c - `factord rebuild users|auth-factors`: rebuild a
 * projection from the PostgreSQL log while factord keeps serving, and swap
 * it in atomically (infra/components/rebuild.c; docs/operations.md, "Rebuilding
 * projections").
 *
 * Progress goes to stderr: a bar redrawn a few times a second when stderr
 * is a terminal, a log line every few seconds otherwise. SIGINT/SIGTERM
 * stop between pages; the live table is left as it was. The summary goes
 * to stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/factord/cmd.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/components/rebuild.h"

typedef struct {
    const char *name;
    bool tty;
    int64_t last_ms;
    bool drawn;
} progress_ui;

static const char *phase_name(es_rebuild_phase ph)
{
    switch (ph) {
    case ES_REBUILD_LOAD: return "load";
    case ES_REBUILD_CATCH_UP: return "catch-up";
    case ES_REBUILD_SWAP: return "swap";
    case ES_REBUILD_DONE: return "done";
    }
    return "";
}

static void on_progress(void *arg, const es_rebuild_progress *p)
{
    progress_ui *ui = arg;
    int64_t now = es_clock_mono_ms();
    bool final = p->phase == ES_REBUILD_DONE;
    if (!final && now - ui->last_ms < (ui->tty ? 250 : 5000))
        return;
    ui->last_ms = now;
    double secs = (double)p->elapsed_ms / 1000.0;
    double rate = secs > 0 ? (double)p->events / secs : 0;           /* events/s */
    double pos_rate = secs > 0 ? (double)p->position / secs : 0;     /* positions/s */
    int64_t left = p->head > p->position ? p->head - p->position : 0;
    long long eta = pos_rate > 0 ? (long long)((double)left / pos_rate + 0.5) : -1;
    /* The head counts outbox rows too: the last ones may follow the last event. */
    int pct = final || p->head <= 0 ? 100 : (int)(100.0 * (double)p->position / (double)p->head);
    if (!ui->tty) {
        es_info("rebuild progress", "projection", ui->name, "phase", phase_name(p->phase), "position",
                es_log_i64(p->position), "head", es_log_i64(p->head), "events", es_log_i64(p->events),
                "events_per_s", es_log_i64((long long)rate), "eta_s", es_log_i64(eta));
        return;
    }
    char bar[31];
    int fill = pct * 30 / 100;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = '\0';
    char eta_s[32] = "--:--";
    if (eta >= 0)
        snprintf(eta_s, sizeof eta_s, "%lld:%02lld", eta / 60, eta % 60);
    fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld  %.0f events/s  ETA %s  %-8s", ui->name, bar, pct,
            (long long)p->position, (long long)p->head, rate, eta_s, phase_name(p->phase));
    if (final)
        fputc('\n', stderr);
    fflush(stderr);
    ui->drawn = !final;
}

int fd_rebuild_main(int argc, char **argv)
{
    bool bad = false;
    const char *which = NULL;
    long page_size = 0;
    long long max_rate = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--page-size") == 0 && i + 1 < argc) {
            char *end;
            page_size = strtol(argv[++i], &end, 10);
            if (*end || page_size < 1 || page_size > 100000) {
                fprintf(stderr, "factord rebuild: --page-size takes 1..100000\n");
                return 2;
            }
            continue;
        }
        if (strcmp(argv[i], "--max-rate") == 0 && i + 1 < argc) {
            char *end;
            max_rate = strtoll(argv[++i], &end, 10);
            if (*end || max_rate < 1 || max_rate > 100000000) {
                fprintf(stderr, "factord rebuild: --max-rate takes events per second, 1..100000000\n");
                return 2;
            }
            continue;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0 || argv[i][0] == '-' || which) {
            char *help[] = {argv[0], argv[i]};
            fd_wants_help(2, help, "rebuild", &bad);
            return bad ? 2 : 0;
        }
        which = argv[i];
    }
    es_rebuild_target target = es_rebuild_target_parse(which);
    if (!target) {
        fprintf(stderr, "factord rebuild: name the projection: users or auth-factors (try --help)\n");
        return 2;
    }
    es_config cfg;
    if (!fd_load_config(&cfg, "rebuild"))
        return 2;
    fd_install_signals();
    int exit_code = 1;
    es_pii_master pii = {0};
    bool have_pii = false;
    int min_schema = 1;
    es_store *st = NULL;
    if (!fd_load_pii_key(&cfg, &pii, &have_pii, &min_schema)) {
        exit_code = 2;
        goto out;
    }
    st = fd_open_store(&cfg, min_schema);
    if (!st)
        goto out;
    if (have_pii)
        es_store_set_pii_master(st, &pii);

    progress_ui ui = {.name = es_rebuild_target_name(target), .tty = isatty(2) == 1, .last_ms = -100000};
    es_rebuild_opts opts = {.target = target, .page_size = (int)page_size, .max_rate = max_rate, .progress = on_progress,
                            .progress_arg = &ui, .stop = &fd_stop};
    es_rebuild_stats stats;
    es_error err = {0};
    int64_t t0 = es_clock_mono_ms();
    es_result rc = es_rebuild_run(st, &opts, &stats, &err);
    double secs = (double)(es_clock_mono_ms() - t0) / 1000.0;
    if (ui.drawn)
        fputc('\n', stderr);
    if (rc != ES_OK) {
        es_err("rebuild failed; the live projection is untouched", "projection", ui.name, "error", err.text,
               "sqlstate", err.sqlstate);
        goto out;
    }
    es_info("rebuild done", "projection", ui.name, "events", es_log_i64(stats.events), "rows",
            es_log_i64(stats.rows), "position", es_log_i64(stats.position), "passes", es_log_i64(stats.passes),
            "final_events", es_log_i64(stats.final_events),
            "swap_attempts", es_log_i64(stats.swap_attempts), "locked_ms", es_log_i64(stats.swap_ms));
    printf("rebuilt %s: %lld events folded up to position %lld in %.1f s (%.0f events/s), %lld rows; "
           "live tables locked %lld ms\n",
           ui.name, (long long)stats.events, (long long)stats.position, secs,
           secs > 0 ? (double)stats.events / secs : 0.0, (long long)stats.rows, (long long)stats.swap_ms);
    exit_code = 0;
out:
    es_store_free(st);
    es_pii_master_wipe(&pii);
    es_config_free(&cfg);
    return exit_code;
}
