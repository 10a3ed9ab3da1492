/*
 * infra/kafka/lag.h - How far a consumer group is behind on
 * a topic, partition by partition, in the form kafka_exporter users know
 * (committed offset, watermarks, lag), for `factord status`.
 *
 * The client never joins the group: committed offsets are read with the
 * group's id; nothing is consumed or committed.
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_LAG_H
#define FACTORD_INFRA_KAFKA_LAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

#define ES_STATUS_MAX_PARTITIONS 256

typedef struct {
    int32_t partition;
    int64_t committed;   /* the group's committed offset; -1 = none */
    int64_t low, high;   /* watermarks */
    int64_t lag;         /* high - committed (high - low when none) */
    int32_t leader;      /* the leading broker's id; -1: none */
    int replicas, isr;   /* assigned replicas, of which in sync */
} es_partition_lag;

typedef struct {
    const char *group, *topic;          /* borrowed from the caller */
    bool ok;                            /* read from Kafka */
    int64_t lag;                        /* sum over partitions */
    size_t under_replicated;            /* partitions with isr < replicas (or no leader) */
    size_t n;
    es_partition_lag parts[ES_STATUS_MAX_PARTITIONS];
} es_group_lag;

/* Fill g (g->group and g->topic set by the caller; group NULL: no group,
 * lag = everything the topic holds) from Kafka at brokers, each request
 * waiting up to timeout_ms. ES_ETRANSIENT when Kafka does not answer;
 * a topic that does not exist has no partitions. */
es_result es_kafka_group_lag(const char *brokers, es_group_lag *g, int timeout_ms, es_error *err) ES_WUR;

#endif
