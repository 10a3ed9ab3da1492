/*
 * infra/kafka/probe.c - ask the cluster for its metadata (see probe.h).
 */
#include "infra/kafka/probe.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>

#include "infra/kafka/kafka.h"

struct es_kafka_probe {
    rd_kafka_t *rk;
};

es_result es_kafka_probe_new(const char *brokers, const char *client_id, es_kafka_probe **out, es_error *err)
{
    char errstr[256];
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, client_id, err);
    if (!conf)
        return ES_EINVAL;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return es_error_set(err, ES_EFATAL, "kafka probe: %s", errstr);
    }
    es_kafka_probe *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->rk = rk;
    *out = p;
    return ES_OK;
}

void es_kafka_probe_free(es_kafka_probe *p)
{
    if (!p)
        return;
    rd_kafka_destroy(p->rk);
    free(p);
}

bool es_kafka_probe_answers(es_kafka_probe *p, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    rd_kafka_metadata_destroy(md);
    return true;
}

es_result es_kafka_probe_wait(es_kafka_probe *p, int64_t pause_ms, const es_stop_flag *stop, es_error *err)
{
    while (!es_stopping(stop)) {
        if (es_kafka_probe_answers(p, 1000))
            return ES_OK;
        if (!es_sleep_unless_stopped(pause_ms, stop))
            break;
    }
    return es_error_set(err, ES_ETRANSIENT, "stopped while waiting for Kafka to answer");
}
