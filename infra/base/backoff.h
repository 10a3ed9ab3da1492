/*
 * infra/base/backoff.h - Waiting out an outage the same way
 * everywhere: a stop flag every long-running loop takes as a parameter,
 * bounded exponential backoff, and one retry loop for work that fails with
 * ES_ETRANSIENT while a server is away.
 *
 * The stop flag is the caller's (a signal handler sets it: house style);
 * every wait here sleeps in slices of at most 200 ms and looks at it in
 * between, so a stop is honoured within that time.
 *
 * Layer: base; includes only the domain (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_BACKOFF_H
#define FACTORD_INFRA_BACKOFF_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "domain/errors.h"

/* Set (to non-zero) by whoever wants a loop to stop; never cleared by it. */
typedef volatile sig_atomic_t es_stop_flag;

/* True when stop is set (NULL: never). */
bool es_stopping(const es_stop_flag *stop);

/* Sleep ms, in slices, returning early (false) when stop is set; true when
 * the whole time passed. */
bool es_sleep_unless_stopped(int64_t ms, const es_stop_flag *stop);

/* Bounded exponential backoff: first, 2 * first, ... up to max (ms). */
typedef struct {
    int64_t first_ms, max_ms, next_ms;
} es_backoff;

/* The backoff factord uses against PostgreSQL and Kafka: 100 ms to 5 s. */
#define ES_BACKOFF_DEFAULT ((es_backoff){.first_ms = 100, .max_ms = 5000, .next_ms = 100})

/* The wait to use now; the next call returns twice it (bounded). */
int64_t es_backoff_next(es_backoff *b);
/* Start from first again (after a success). */
void es_backoff_reset(es_backoff *b);
/* Sleep es_backoff_next(b); false when stop interrupted it. */
bool es_backoff_sleep(es_backoff *b, const es_stop_flag *stop);

/* One attempt of the work es_retry repeats. */
typedef es_result (*es_retry_fn)(void *ctx, es_error *err);

typedef struct {
    const char *what;          /* logged on each retry, e.g. "PostgreSQL unavailable, retrying the batch" */
    const char *gave_up;       /* logged (warn) when a stop ends the retries; NULL: nothing */
    es_retry_fn attempt;       /* the work */
    es_retry_fn before_retry;  /* after the sleep, before the next attempt (reconnect); NULL: none.
                                  Its failure is logged at debug and the attempt runs anyway. */
    void *ctx;
} es_retry;

/* Run r->attempt until it returns anything but ES_ETRANSIENT, sleeping with
 * bounded backoff (100 ms .. 5 s) in between. Returns ES_OK, the first
 * non-transient error (err filled), or ES_ETRANSIENT when stop was set
 * while the work was failing (err: the last failure). */
es_result es_retry_run(const es_retry *r, const es_stop_flag *stop, es_error *err) ES_WUR;

#endif
