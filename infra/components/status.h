/*
 * infra/components/status.h - `factord status`'s figures: positions and
 * lags at a glance (docs/audit.md). The PostgreSQL side comes from
 * infra/pg/logread.h, the Kafka side from infra/kafka/lag.h.
 *
 * Ownership: the store is borrowed; the status is caller storage, and its
 * group and topic names are borrowed from the caller's strings.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_COMPONENTS_STATUS_H
#define FACTORD_COMPONENTS_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/crypto/chain.h"
#include "infra/kafka/lag.h"
#include "infra/pg/store.h"

typedef struct {
    /* PostgreSQL */
    int64_t head_position;       /* highest committed position (events and outbox) */
    int64_t chain_position;      /* the chain head */
    unsigned char chain_hash[ES_CHAIN_HASH_LEN];
    int64_t relay_checkpoint;
    int64_t relay_lag;           /* head_position - relay_checkpoint */
    int64_t relay_lag_events;    /* events above the checkpoint */
    /* Kafka */
    bool kafka_ok;
    char kafka_error[512];
    es_group_lag projector;      /* FACTORD_PROJECTOR_GROUP on the events topic */
    es_group_lag processor;      /* FACTORD_PROCESSOR_GROUP on the commands topic */
    int64_t dead_letters;        /* sum of (high - low) over the DLQ's partitions */
    size_t dlq_under_replicated; /* the DLQ's partitions with isr < replicas */
    size_t under_replicated;     /* over the commands, events and DLQ topics */
} es_status;

/* The log's side of the status, from PostgreSQL, in one snapshot. */
es_result es_audit_status_pg(es_store *st, es_status *s, es_error *err) ES_WUR;
/* The Kafka side: consumer-group lags and the dead-letter count. On
 * ES_ETRANSIENT (brokers unreachable) s->kafka_error says why. */
es_result es_audit_status_kafka(const char *brokers, const char *events_topic,
                                const char *projector_group, const char *commands_topic,
                                const char *processor_group, const char *dlq_topic,
                                int timeout_ms, es_status *s, es_error *err) ES_WUR;

#endif
