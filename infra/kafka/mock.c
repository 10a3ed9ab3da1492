/*
 * infra/kafka/mock.c - the embedded broker (see mock.h).
 */
#include "infra/kafka/mock.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdlib.h>

#include "infra/kafka/kafka.h"

struct es_kafka_mock {
    rd_kafka_t *rk; /* only hosts the mock brokers */
    rd_kafka_mock_cluster_t *cluster;
};

es_result es_kafka_mock_start(const char *const *topics, size_t n, int partitions, es_kafka_mock **out,
                              es_error *err)
{
    es_result rc = ES_OK;
    char errstr[256];
    es_kafka_mock *m = calloc(1, sizeof *m);
    if (!m)
        abort();
    rd_kafka_conf_t *conf = es_kafka_conf("", "factord-embedded-broker", err);
    if (!conf) {
        rc = ES_EFATAL;
        goto out;
    }
    /* This handle only hosts the mock brokers: it connects nowhere, so
     * keep its "no bootstrap.servers" notice out of the log. */
    if (!es_kafka_conf_set(conf, "log_level", "4", err)) {
        rd_kafka_conf_destroy(conf);
        rc = ES_EFATAL;
        goto out;
    }
    if (!(m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(conf);
        rc = es_error_set(err, ES_EFATAL, "embedded broker: %s", errstr);
        goto out;
    }
    if (!(m->cluster = rd_kafka_mock_cluster_new(m->rk, 1))) {
        rc = es_error_set(err, ES_EFATAL, "embedded broker: no mock cluster");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        (void)rd_kafka_mock_topic_create(m->cluster, topics[i], partitions, 1);
    *out = m;
    m = NULL;
out:
    es_kafka_mock_stop(m);
    return rc;
}

const char *es_kafka_mock_bootstraps(const es_kafka_mock *m)
{
    return rd_kafka_mock_cluster_bootstraps(m->cluster);
}

void es_kafka_mock_stop(es_kafka_mock *m)
{
    if (!m)
        return;
    if (m->cluster)
        rd_kafka_mock_cluster_destroy(m->cluster);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    free(m);
}
