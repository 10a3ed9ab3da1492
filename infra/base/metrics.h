/*
 * infra/base/metrics.h - the process's metrics, in Prometheus' text
 * exposition format (version 0.0.4), for `FACTORD_METRICS_ADDR`
 * (docs/metrics.md).
 *
 * One registry per process: the components of `factord run` share it, so a
 * scrape shows them all. A metric is a family (name, help, type) and one
 * child per label set; es_metrics_counter & co. return the child for
 * (name, labels), creating it on first use, so a caller may ask again
 * instead of keeping the pointer. Updates are lock-free (atomics), cheap
 * enough for every command; histograms take a short mutex.
 *
 * Names and units follow Prometheus' conventions: factord_ prefix, base
 * units (seconds, bytes), counters end in _total. Labels are passed
 * rendered, `name="value",name2="value2"`, built with es_metrics_labels
 * (which escapes the values) or written as constants.
 *
 * Ownership: the registry and its metrics live until the process exits;
 * pointers stay valid. es_metrics_render returns a malloc'd string.
 *
 * Layer: base; no I/O (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_METRICS_H
#define FACTORD_INFRA_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct es_metric es_metric;

/* A counter child (created at 0). name and help are constants. */
es_metric *es_metrics_counter(const char *name, const char *help, const char *labels);
void es_metric_add(es_metric *m, uint64_t n);
static inline void es_metric_inc(es_metric *m) { es_metric_add(m, 1); }

/* A gauge child; it is shown from its first es_metric_set on, and hidden
 * again by es_metric_unset (a series that no longer applies, such as the
 * lag of a partition this process no longer consumes) until the next set. */
es_metric *es_metrics_gauge(const char *name, const char *help, const char *labels);
void es_metric_set(es_metric *m, double v);
void es_metric_unset(es_metric *m);

/* A histogram child with the family's bucket upper bounds (ascending,
 * +Inf implied); the bounds of the first call for a name hold for all. */
es_metric *es_metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds,
                                size_t n_bounds);
void es_metric_observe(es_metric *m, double v);

/* Seconds buckets from 0.5 ms to 30 s, for latencies and durations. */
extern const double es_metrics_seconds_buckets[];
extern const size_t es_metrics_seconds_buckets_n;

/* Render `k1="v1",k2="v2"` into buf (pairs of name, value, ending with
 * NULL), escaping \, " and newlines in values; values cut to fit. */
void es_metrics_labels(char *buf, size_t size, ...);

/* The whole registry as exposition text, families in registration order,
 * children in creation order. Caller frees. */
char *es_metrics_render(void);

#endif
