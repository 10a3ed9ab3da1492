/*
 * infra/components/status.c - `factord status`'s figures (status.h): the
 * log's positions from PostgreSQL and the consumer groups' lags from Kafka.
 */
#include "infra/components/status.h"

#include <stdio.h>
#include <string.h>

#include "infra/pg/logread.h"

es_result es_audit_status_pg(es_store *st, es_status *s, es_error *err)
{
    es_log_positions p = {0};
    es_result rc = es_logread_positions(st, &p, err);
    if (rc != ES_OK)
        return rc;
    s->head_position = p.head_position;
    s->chain_position = p.chain_position;
    memcpy(s->chain_hash, p.chain_hash, sizeof s->chain_hash);
    s->relay_checkpoint = p.relay_checkpoint;
    s->relay_lag = s->head_position > s->relay_checkpoint ? s->head_position - s->relay_checkpoint : 0;
    s->relay_lag_events = p.relay_lag_events;
    return ES_OK;
}

es_result es_audit_status_kafka(const char *brokers, const char *events_topic,
                                const char *projector_group, const char *commands_topic,
                                const char *processor_group, const char *dlq_topic,
                                int timeout_ms, es_status *s, es_error *err)
{
    es_result rc;
    s->kafka_ok = false;
    s->projector.group = projector_group;
    s->projector.topic = events_topic;
    s->processor.group = processor_group;
    s->processor.topic = commands_topic;
    if ((rc = es_kafka_group_lag(brokers, &s->projector, timeout_ms, err)) != ES_OK ||
        (rc = es_kafka_group_lag(brokers, &s->processor, timeout_ms, err)) != ES_OK)
        goto out;
    /* Dead letters: everything the topic holds. */
    es_group_lag dlq = {.group = NULL, .topic = dlq_topic};
    if ((rc = es_kafka_group_lag(brokers, &dlq, timeout_ms, err)) != ES_OK)
        goto out;
    s->dead_letters = 0;
    for (size_t i = 0; i < dlq.n; i++)
        s->dead_letters += dlq.parts[i].high - dlq.parts[i].low;
    s->dlq_under_replicated = dlq.under_replicated;
    s->under_replicated = s->projector.under_replicated + s->processor.under_replicated + dlq.under_replicated;
    s->kafka_ok = true;
out:
    if (rc != ES_OK)
        snprintf(s->kafka_error, sizeof s->kafka_error, "%s", err ? err->text : "unreachable");
    return rc;
}
