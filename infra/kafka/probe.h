/*
 * infra/kafka/probe.h - does Kafka answer? A small client that asks the
 * cluster for its metadata, for a component that waits out an outage
 * before it starts for real (the gateway at start).
 *
 * The probe is a producer handle that never produces: it joins no group
 * and leaves nothing on the brokers. One probe is meant to be kept across
 * the whole wait, so that librdkafka reconnects on its own instead of
 * starting over at every question.
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_PROBE_H
#define FACTORD_INFRA_KAFKA_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/base/backoff.h"

typedef struct es_kafka_probe es_kafka_probe;

/* Make a probe for the cluster at brokers (it connects lazily).
 * ES_EINVAL: a property librdkafka refuses (FACTORD_RDKAFKA_*);
 * ES_EFATAL: librdkafka could not make the handle. On success the caller
 * owns *out. */
es_result es_kafka_probe_new(const char *brokers, const char *client_id, es_kafka_probe **out,
                             es_error *err) ES_WUR;

/* Destroy. NULL-safe. */
void es_kafka_probe_free(es_kafka_probe *p);

/* Does the cluster answer a metadata request within timeout_ms? */
bool es_kafka_probe_answers(es_kafka_probe *p, int timeout_ms);

/* Ask (each question waiting up to 1 s), and again every pause_ms, until
 * the cluster answers (ES_OK) or stop is set (ES_ETRANSIENT, err says
 * so). */
es_result es_kafka_probe_wait(es_kafka_probe *p, int64_t pause_ms, const es_stop_flag *stop, es_error *err) ES_WUR;

#endif
