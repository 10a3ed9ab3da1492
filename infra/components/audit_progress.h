/*
 * infra/components/audit_progress.h - what the auditor's long runs share
 * (verify.h, replay.h): the default page size and the progress reports
 * they give every second or so (for stderr).
 *
 * Ownership: a ticker is caller storage; the progress report passed to a
 * callback is valid only during the call.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_COMPONENTS_AUDIT_PROGRESS_H
#define FACTORD_COMPONENTS_AUDIT_PROGRESS_H

#include <stdint.h>

/* Rows per page when a run's options say 0. */
#define ES_AUDIT_PAGE 10000

/* Progress of a long run, every second or so (for stderr). */
typedef struct {
    const char *phase;     /* "chain", "users" or "replay" */
    int64_t rows;          /* rows read in this phase */
    int64_t position;      /* the last position read (chain, replay) */
    double rate;           /* rows per second in this phase */
} es_audit_progress;
typedef void (*es_audit_progress_fn)(void *arg, const es_audit_progress *p);

/* Seconds on the monotonic clock. */
double es_audit_now(void);

/* One phase's reporting: fn (may be NULL: no reports) at most once a
 * second, with the rate since the phase started. */
typedef struct {
    es_audit_progress_fn fn;
    void *arg;
    const char *phase;     /* static text */
    double started, last_report;
} es_audit_ticker;

/* Start a phase now. */
void es_audit_ticker_start(es_audit_ticker *t, es_audit_progress_fn fn, void *arg, const char *phase);
/* rows read so far in the phase, position the last read (0: none to say):
 * reported when a second has passed since the last report. */
void es_audit_ticker_tick(es_audit_ticker *t, int64_t rows, int64_t position);

#endif
