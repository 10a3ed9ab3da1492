/*
 * infra/kafka/kafka.h - librdkafka 2.0.2 set up the way factord needs it.
 *
 * Configuration: bootstrap servers, Nagle off, librdkafka's logs routed into
 * factord's JSON log, and every FACTORD_RDKAFKA_<property, dots as
 * underscores> environment variable passed through (security settings).
 * Producers are idempotent (acks=all) and partition by murmur2 like Java
 * clients, so a user's commands and events land on the partition any Kafka
 * client would pick. Consumers store offsets explicitly, after PostgreSQL
 * has committed (enable.auto.offset.store=false), and keep the eager
 * range assignor.
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_H
#define FACTORD_INFRA_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/base/backoff.h"
#include "infra/base/config.h"

/* A base configuration. Caller owns the result. */
rd_kafka_conf_t *es_kafka_conf(const char *brokers, const char *client_id, es_error *err) ES_WUR;

/* Set one property on conf; false with err (ES_EINVAL, naming the
 * property) when librdkafka refuses it. */
bool es_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, es_error *err) ES_WUR;

/* How factord creates a topic that is missing. */
typedef struct {
    int partitions;
    int replication; /* replication factor; 0: min(3, brokers in the cluster) */
    int min_insync;  /* min.insync.replicas; 0: replication - 1, at least 1 */
} es_topic_spec;

/* The spec of FACTORD_TOPIC_PARTITIONS, _REPLICATION and _MIN_INSYNC_REPLICAS. */
es_topic_spec es_kafka_topic_spec(const es_config *cfg);

/* Create the topics that are missing, as spec says (a replication factor
 * of 0 is resolved against the brokers the cluster lists now). Topics that
 * exist are left as they are. ES_EINVAL when spec contradicts itself. */
es_result es_kafka_ensure_topics(const char *brokers, const char *const *topics, size_t n,
                                 const es_topic_spec *spec, int timeout_ms, es_error *err) ES_WUR;

/* es_kafka_ensure_topics for a long-running component: retried every 2 s
 * (logged) while the cluster does not answer or refuses, until stop is
 * set (ES_ETRANSIENT then); ES_EINVAL (spec) at once. */
es_result es_kafka_ensure_topics_retry(const char *brokers, const char *const *topics, size_t n,
                                       const es_topic_spec *spec, const es_stop_flag *stop, es_error *err) ES_WUR;

typedef struct es_producer es_producer;

es_result es_producer_new(const char *brokers, const char *client_id, es_producer **out,
                          es_error *err) ES_WUR;
/* Flushes for up to 10 s, then destroys. NULL-safe. */
void es_producer_free(es_producer *p);

/* Enqueue one record (copied). headers_json: {"name":"value",...} or NULL.
 * Waits while the local queue is full. */
es_result es_producer_send(es_producer *p, const char *topic, const void *key, size_t key_len,
                           const void *value, size_t value_len, const char *headers_json,
                           es_error *err) ES_WUR;

/* The same with one header, name = value (both NUL-terminated): no JSON
 * to build and parse per record (the relay's reply-topic header). */
es_result es_producer_send_header(es_producer *p, const char *topic, const void *key, size_t key_len,
                                  const void *value, size_t value_len, const char *name, const char *hvalue,
                                  es_error *err) ES_WUR;

/* Wait until every enqueued record is delivered or failed (timeout_ms).
 * *failed = deliveries that failed since the previous flush. ES_ETRANSIENT
 * on timeout; ES_EFATAL when the producer hit a fatal error and must be
 * recreated (es_producer_recreate). */
es_result es_producer_flush(es_producer *p, int timeout_ms, size_t *failed, es_error *err) ES_WUR;

/* Replace the librdkafka handle after a fatal error (brief §5). */
es_result es_producer_recreate(es_producer *p, es_error *err) ES_WUR;

rd_kafka_t *es_producer_handle(es_producer *p);

/* A partition's first (which = RD_KAFKA_OFFSET_BEGINNING) or end
 * (RD_KAFKA_OFFSET_END: the high watermark) offset, asked of its leader
 * with one ListOffsets that keeps timeout_ms. Use it instead of
 * rd_kafka_query_watermark_offsets, which in librdkafka 2.0.2 ignores its
 * timeout and waits for a dead leader to come back (docs/ha.md). */
rd_kafka_resp_err_t es_kafka_list_offset(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t which,
                                         int timeout_ms, int64_t *offset);

/* Drop every record still queued or in flight (they fail, none is sent
 * later): for a client that gave up on what it sent. */
void es_producer_purge(es_producer *p);

/* Read topic's metadata now (up to timeout_ms), so that the first records
 * for it do not wait for the lookup; a failure is only logged (debug): the
 * records then wait for it as usual. */
void es_producer_prime(es_producer *p, const char *topic, int timeout_ms);

#endif
