/*
 * infra/base/backoff.c - stop flag, backoff and the retry loop (see
 * backoff.h).
 */
#include "infra/base/backoff.h"

#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"

#define SLICE_MS 200

bool es_stopping(const es_stop_flag *stop) { return stop && *stop; }

bool es_sleep_unless_stopped(int64_t ms, const es_stop_flag *stop)
{
    int64_t end = es_clock_mono_ms() + ms;
    for (;;) {
        if (es_stopping(stop))
            return false;
        int64_t left = end - es_clock_mono_ms();
        if (left <= 0)
            return true;
        es_sleep_ms(left < SLICE_MS ? left : SLICE_MS);
    }
}

int64_t es_backoff_next(es_backoff *b)
{
    if (b->next_ms < b->first_ms)
        b->next_ms = b->first_ms;
    int64_t now = b->next_ms;
    b->next_ms = now * 2 > b->max_ms ? b->max_ms : now * 2;
    return now;
}

void es_backoff_reset(es_backoff *b) { b->next_ms = b->first_ms; }

bool es_backoff_sleep(es_backoff *b, const es_stop_flag *stop)
{
    return es_sleep_unless_stopped(es_backoff_next(b), stop);
}

es_result es_retry_run(const es_retry *r, const es_stop_flag *stop, es_error *err)
{
    es_backoff b = ES_BACKOFF_DEFAULT;
    for (;;) {
        es_result rc = r->attempt(r->ctx, err);
        if (rc != ES_ETRANSIENT)
            return rc;
        int64_t wait = b.next_ms;
        es_warn(r->what, "error", err ? err->text : "", "retry_ms", es_log_i64(wait));
        /* No SQLSTATE: the server was not reached (or it is not PostgreSQL's
         * failure); "" would be an unreadable label. */
        char labels[128];
        es_metrics_labels(labels, sizeof labels, "component", es_log_component(), "sqlstate",
                          err && err->sqlstate[0] ? err->sqlstate : "none", NULL);
        es_metric_inc(es_metrics_counter("factord_retries_total",
                                         "Work retried after a transient failure (PostgreSQL or Kafka away), by "
                                         "component and PostgreSQL's SQLSTATE (none: no answer from the server)",
                                         labels));
        if (!es_backoff_sleep(&b, stop)) {
            if (r->gave_up)
                es_warn(r->gave_up);
            return ES_ETRANSIENT;
        }
        if (r->before_retry) {
            es_error rerr = {0};
            if (r->before_retry(r->ctx, &rerr) != ES_OK)
                es_debug("reconnect failed", "error", rerr.text);
        }
    }
}
