/*
 * tests/unit/test_metrics.c - the metrics registry and its exposition text
 * (infra/base/metrics.c), without servers: families and children, label
 * escaping, cumulative histogram buckets, hidden gauges, and many threads
 * counting at once. tests/integration/metrics.sh checks the endpoints with
 * promtool and a real Prometheus.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/metrics.h"

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

Test(metrics, counters_gauges_and_one_help_per_family)
{
    es_metric *a = es_metrics_counter("t1_things_total", "Things.", "kind=\"a\"");
    es_metric *b = es_metrics_counter("t1_things_total", "Things.", "kind=\"b\"");
    cr_assert_neq(a, b);
    cr_assert_eq(es_metrics_counter("t1_things_total", "Things.", "kind=\"a\""), a, "the same child again");
    es_metric_add(a, 3);
    es_metric_inc(a);
    es_metric_inc(b);
    es_metric *g = es_metrics_gauge("t1_level", "A level.", "");
    char *text = es_metrics_render();
    cr_assert(has_line(text, "t1_things_total{kind=\"a\"} 4"), "%s", text);
    cr_assert(has_line(text, "t1_things_total{kind=\"b\"} 1"), "%s", text);
    cr_assert(has_line(text, "# TYPE t1_things_total counter"), "%s", text);
    cr_assert_eq(strstr(strstr(text, "# HELP t1_things_total") + 1, "# HELP t1_things_total"), NULL,
                 "one HELP per family");
    cr_assert_null(strstr(text, "\nt1_level "), "a gauge never set is not shown: %s", text);
    free(text);
    es_metric_set(g, 2.5);
    text = es_metrics_render();
    cr_assert(has_line(text, "t1_level 2.5"), "%s", text);
    free(text);
    es_metric_unset(g);
    text = es_metrics_render();
    cr_assert_null(strstr(text, "\nt1_level "), "an unset gauge is hidden: %s", text);
    free(text);
}

Test(metrics, histogram_buckets_are_cumulative)
{
    static const double bounds[] = {0.1, 1, 10};
    es_metric *h = es_metrics_histogram("t2_seconds", "Durations.", "op=\"x\"", bounds, 3);
    es_metric_observe(h, 0.05);
    es_metric_observe(h, 0.1); /* on the bound: in its bucket */
    es_metric_observe(h, 5);
    es_metric_observe(h, 50);
    char *text = es_metrics_render();
    cr_assert(has_line(text, "t2_seconds_bucket{op=\"x\",le=\"0.1\"} 2"), "%s", text);
    cr_assert(has_line(text, "t2_seconds_bucket{op=\"x\",le=\"1\"} 2"), "%s", text);
    cr_assert(has_line(text, "t2_seconds_bucket{op=\"x\",le=\"10\"} 3"), "%s", text);
    cr_assert(has_line(text, "t2_seconds_bucket{op=\"x\",le=\"+Inf\"} 4"), "%s", text);
    cr_assert(has_line(text, "t2_seconds_sum{op=\"x\"} 55.15"), "%s", text);
    cr_assert(has_line(text, "t2_seconds_count{op=\"x\"} 4"), "%s", text);
    free(text);
}

Test(metrics, label_values_are_escaped_and_bounded)
{
    char buf[64];
    es_metrics_labels(buf, sizeof buf, "a", "x\"y\\z\nw", "b", "plain", NULL);
    cr_assert_str_eq(buf, "a=\"x\\\"y\\\\z\\nw\",b=\"plain\"");
    char small[16];
    es_metrics_labels(small, sizeof small, "name", "a very long value indeed", NULL);
    cr_assert_lt(strlen(small), sizeof small);
    cr_assert_eq(small[strlen(small) - 1], '"', "still a closed label: %s", small);
    es_metrics_labels(small, sizeof small, "a", "b", "another_name", "x", NULL);
    cr_assert_str_eq(small, "a=\"b\"", "a pair without room is left out whole");
}

static void *count_many(void *arg)
{
    es_metric *m = arg;
    for (int i = 0; i < 100000; i++)
        es_metric_inc(m);
    return NULL;
}

Test(metrics, concurrent_counting_loses_nothing)
{
    es_metric *m = es_metrics_counter("t3_hits_total", "Hits.", "");
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, count_many, m), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *text = es_metrics_render();
    cr_assert(has_line(text, "t3_hits_total 400000"), "%s", text);
    free(text);
}
