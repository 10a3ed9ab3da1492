/*
 * infra/base/metrics.c - the process's metrics registry and its exposition
 * text (metrics.h).
 *
 * Families and children live in arrays of pointers under one mutex, taken
 * only to find or create a child and to render; a child's value is an
 * atomic (counters, gauges) or guarded by the child's own mutex
 * (histograms), so updates never wait on a scrape.
 */
#include "infra/base/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/util.h"

typedef enum { FAM_COUNTER, FAM_GAUGE, FAM_HISTOGRAM } fam_type;

typedef struct {
    const char *name, *help;
    fam_type type;
    double *bounds;
    size_t n_bounds;
} family;

struct es_metric {
    size_t fam;
    char *labels;
    _Atomic uint64_t count;    /* counter */
    _Atomic double value;      /* gauge */
    _Atomic bool present;      /* gauge: set since created or unset */
    pthread_mutex_t mu;        /* histogram: */
    const double *bounds;      /* the family's (never moved or freed) */
    size_t n_bounds;
    uint64_t *buckets;         /* per bucket (not cumulative), n_bounds + 1 */
    uint64_t observed;
    double sum;
};

static struct {
    pthread_mutex_t mu;
    family *fams;
    size_t n_fams, fams_cap;
    es_metric **kids;
    size_t n_kids, kids_cap;
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

const double es_metrics_seconds_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5,     10,  30};
const size_t es_metrics_seconds_buckets_n = sizeof es_metrics_seconds_buckets / sizeof es_metrics_seconds_buckets[0];

static es_metric *child(const char *name, const char *help, fam_type type, const char *labels, const double *bounds,
                        size_t n_bounds)
{
    if (!labels)
        labels = "";
    pthread_mutex_lock(&reg.mu);
    size_t f = 0;
    while (f < reg.n_fams && strcmp(reg.fams[f].name, name) != 0)
        f++;
    if (f == reg.n_fams) {
        ES_GROW(&reg, fams, reg.n_fams + 1);
        family *fm = &reg.fams[reg.n_fams++];
        *fm = (family){.name = name, .help = help, .type = type};
        if (type == FAM_HISTOGRAM) {
            fm->bounds = malloc((n_bounds ? n_bounds : 1) * sizeof *fm->bounds);
            if (!fm->bounds)
                abort();
            memcpy(fm->bounds, bounds, n_bounds * sizeof *bounds);
            fm->n_bounds = n_bounds;
        }
    }
    if (reg.fams[f].type != type)
        abort(); /* one name, two types: a programming error */
    es_metric *m = NULL;
    for (size_t i = 0; i < reg.n_kids && !m; i++)
        if (reg.kids[i]->fam == f && strcmp(reg.kids[i]->labels, labels) == 0)
            m = reg.kids[i];
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m || !(m->labels = strdup(labels)))
            abort();
        m->fam = f;
        if (type == FAM_HISTOGRAM) {
            pthread_mutex_init(&m->mu, NULL);
            m->bounds = reg.fams[f].bounds;
            m->n_bounds = reg.fams[f].n_bounds;
            m->buckets = calloc(m->n_bounds + 1, sizeof *m->buckets);
            if (!m->buckets)
                abort();
        }
        ES_GROW(&reg, kids, reg.n_kids + 1);
        reg.kids[reg.n_kids++] = m;
    }
    pthread_mutex_unlock(&reg.mu);
    return m;
}

es_metric *es_metrics_counter(const char *name, const char *help, const char *labels)
{
    return child(name, help, FAM_COUNTER, labels, NULL, 0);
}

es_metric *es_metrics_gauge(const char *name, const char *help, const char *labels)
{
    return child(name, help, FAM_GAUGE, labels, NULL, 0);
}

es_metric *es_metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds,
                                size_t n_bounds)
{
    return child(name, help, FAM_HISTOGRAM, labels, bounds, n_bounds);
}

void es_metric_add(es_metric *m, uint64_t n) { atomic_fetch_add_explicit(&m->count, n, memory_order_relaxed); }

void es_metric_set(es_metric *m, double v)
{
    atomic_store_explicit(&m->value, v, memory_order_relaxed);
    atomic_store_explicit(&m->present, true, memory_order_relaxed);
}

void es_metric_unset(es_metric *m) { atomic_store_explicit(&m->present, false, memory_order_relaxed); }

void es_metric_observe(es_metric *m, double v)
{
    size_t b = 0;
    while (b < m->n_bounds && v > m->bounds[b])
        b++;
    pthread_mutex_lock(&m->mu);
    m->buckets[b]++;
    m->observed++;
    m->sum += v;
    pthread_mutex_unlock(&m->mu);
}

void es_metrics_labels(char *buf, size_t size, ...)
{
    va_list ap;
    va_start(ap, size);
    size_t n = 0;
    bool first = true;
    buf[0] = '\0';
    for (const char *k; (k = va_arg(ap, const char *)) != NULL;) {
        const char *v = va_arg(ap, const char *);
        int w = snprintf(buf + n, size - n, "%s%s=\"", first ? "" : ",", k);
        if (w < 0 || (size_t)w + 2 >= size - n) {
            buf[n] = '\0'; /* no room for this pair: the pairs before it stand */
            break;
        }
        n += (size_t)w;
        first = false;
        for (; v && *v && n + 3 < size; v++) {
            if (*v == '\\' || *v == '"' || *v == '\n') {
                buf[n++] = '\\';
                buf[n++] = *v == '\n' ? 'n' : *v;
            } else
                buf[n++] = *v;
        }
        if (n + 2 > size)
            n = size - 2;
        buf[n++] = '"';
        buf[n] = '\0';
    }
    va_end(ap);
}

typedef struct {
    char *s;
    size_t n, s_cap;
} out_buf;

static void put(out_buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_buf *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = o->s_cap - o->n;
        int w = vsnprintf(o->s ? o->s + o->n : NULL, o->s ? room : 0, fmt, ap);
        va_end(ap);
        if (w < 0)
            abort();
        if (o->s && (size_t)w < room) {
            o->n += (size_t)w;
            return;
        }
        ES_GROW(o, s, o->n + (size_t)w + 1);
    }
}

/* A sample value: integers as integers, the rest as Go's float parser
 * reads them (NaN and infinities by name). */
static void put_value(out_buf *o, double v)
{
    if (isnan(v))
        put(o, "NaN");
    else if (isinf(v))
        put(o, v > 0 ? "+Inf" : "-Inf");
    else
        put(o, "%.15g", v);
}

static void put_sample(out_buf *o, const char *name, const char *suffix, const char *labels, const char *extra)
{
    bool any = labels[0] || extra[0];
    put(o, "%s%s%s%s%s%s%s ", name, suffix, any ? "{" : "", labels, labels[0] && extra[0] ? "," : "", extra,
        any ? "}" : "");
}

char *es_metrics_render(void)
{
    out_buf o = {0};
    put(&o, "%s", "");
    pthread_mutex_lock(&reg.mu);
    for (size_t f = 0; f < reg.n_fams; f++) {
        const family *fm = &reg.fams[f];
        static const char *const type_names[] = {"counter", "gauge", "histogram"};
        put(&o, "# HELP %s %s\n# TYPE %s %s\n", fm->name, fm->help, fm->name, type_names[fm->type]);
        for (size_t i = 0; i < reg.n_kids; i++) {
            es_metric *m = reg.kids[i];
            if (m->fam != f)
                continue;
            if (fm->type == FAM_COUNTER) {
                put_sample(&o, fm->name, "", m->labels, "");
                put(&o, "%llu\n", (unsigned long long)atomic_load_explicit(&m->count, memory_order_relaxed));
            } else if (fm->type == FAM_GAUGE) {
                if (!atomic_load_explicit(&m->present, memory_order_relaxed))
                    continue;
                put_sample(&o, fm->name, "", m->labels, "");
                put_value(&o, atomic_load_explicit(&m->value, memory_order_relaxed));
                put(&o, "\n");
            } else {
                pthread_mutex_lock(&m->mu);
                uint64_t cum = 0;
                char le[48];
                for (size_t b = 0; b <= fm->n_bounds; b++) {
                    cum += m->buckets[b];
                    if (b < fm->n_bounds)
                        snprintf(le, sizeof le, "le=\"%g\"", fm->bounds[b]);
                    else
                        snprintf(le, sizeof le, "le=\"+Inf\"");
                    put_sample(&o, fm->name, "_bucket", m->labels, le);
                    put(&o, "%llu\n", (unsigned long long)cum);
                }
                put_sample(&o, fm->name, "_sum", m->labels, "");
                put_value(&o, m->sum);
                put(&o, "\n");
                put_sample(&o, fm->name, "_count", m->labels, "");
                put(&o, "%llu\n", (unsigned long long)m->observed);
                pthread_mutex_unlock(&m->mu);
            }
        }
    }
    pthread_mutex_unlock(&reg.mu);
    return o.s;
}
