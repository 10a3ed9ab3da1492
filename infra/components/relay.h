/*
 * infra/components/relay.h - the outbox relay: events and outbox rows, in
 * position order after a durable checkpoint, produced and acknowledged by
 * Kafka before the checkpoint moves (docs/architecture.md, "The relay").
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_RELAY_H
#define FACTORD_INFRA_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/base/backoff.h"
#include "infra/kafka/kafka.h"

typedef struct {
    const char *database_url; /* the relay opens (and reopens) its own connection */
    const char *events_topic;
    size_t batch;             /* rows per page (FACTORD_RELAY_BATCH) */
    int64_t idle_ms;          /* longest sleep without a notification (FACTORD_RELAY_IDLE_MS) */
} es_relay_opts;

typedef struct {
    unsigned long long published; /* rows acknowledged this run */
    int64_t checkpoint;           /* the last position published */
} es_relay_stats;

/* Take the relay lock (waiting as a standby while another relay holds it),
 * then publish with prod (borrowed) until stop is set, retrying with
 * backoff while PostgreSQL or Kafka is away and taking the lock again
 * after a lost connection. ES_OK: stopped. Otherwise the error that
 * stopped it (logged). *stats is filled either way. */
es_result es_relay_run(const es_relay_opts *o, es_producer *prod, const es_stop_flag *stop, es_relay_stats *stats,
                       es_error *err) ES_WUR;

#endif
