/*
 * infra/kafka/mock.h - the embedded Kafka broker of `factord run` without
 * FACTORD_KAFKA_BROKERS: librdkafka's mock cluster, one broker on
 * 127.0.0.1, data in memory only.
 *
 * The mock cluster answers producers and consumers (groups included) but
 * has no CreateTopics: the topics are made here, at the start.
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_MOCK_H
#define FACTORD_INFRA_KAFKA_MOCK_H

#include <stddef.h>

#include "domain/errors.h"

typedef struct es_kafka_mock es_kafka_mock;

/* Start the broker with topics[0..n) (partitions each, replication 1).
 * ES_EFATAL when librdkafka cannot make it. On success the caller owns
 * *out (es_kafka_mock_stop). */
es_result es_kafka_mock_start(const char *const *topics, size_t n, int partitions, es_kafka_mock **out,
                              es_error *err) ES_WUR;

/* The broker's address for bootstrap.servers; borrowed, valid until
 * es_kafka_mock_stop. */
const char *es_kafka_mock_bootstraps(const es_kafka_mock *m);

/* Stop the broker: everything it held is gone. NULL-safe. */
void es_kafka_mock_stop(es_kafka_mock *m);

#endif
