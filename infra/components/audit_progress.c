/*
 * infra/components/audit_progress.c - progress reports of the auditor's
 * long runs (audit_progress.h).
 */
#include "infra/components/audit_progress.h"

#include <time.h>

double es_audit_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void es_audit_ticker_start(es_audit_ticker *t, es_audit_progress_fn fn, void *arg, const char *phase)
{
    t->fn = fn;
    t->arg = arg;
    t->phase = phase;
    t->started = t->last_report = es_audit_now();
}

void es_audit_ticker_tick(es_audit_ticker *t, int64_t rows, int64_t position)
{
    double now = es_audit_now();
    if (!t->fn || now - t->last_report < 1.0)
        return;
    t->last_report = now;
    es_audit_progress p = {.phase = t->phase, .rows = rows, .position = position,
                           .rate = now > t->started ? (double)rows / (now - t->started) : 0};
    t->fn(t->arg, &p);
}
