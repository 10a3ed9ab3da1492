/*
 * infra/kafka/tracked.h - an idempotent producer that reports every
 * record's delivery, with the sender's tag, to one callback: how the
 * gateway learns whether the command a caller waits on reached Kafka.
 *
 * Records go out with acks=all, murmur2 partitioning (as kafka.h's
 * producer) and a delivery timeout: a record is either in Kafka when that
 * timeout ends, or reported undelivered then. Reports are served by
 * es_tracked_poll, called from one thread; es_tracked_send may be called
 * from any number of threads meanwhile, also while es_tracked_recreate
 * replaces the librdkafka handle (it waits for the replacement).
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_TRACKED_H
#define FACTORD_INFRA_KAFKA_TRACKED_H

#include <stdbool.h>
#include <stddef.h>

#include "domain/errors.h"

/* One record's report: tag as given to es_tracked_send (the sender's, now
 * handed back), delivered or not, and librdkafka's reason when not
 * (borrowed, valid during the call). Runs on the thread that calls
 * es_tracked_poll, es_tracked_recreate or es_tracked_free; it must not
 * call the producer. */
typedef void (*es_tracked_report_cb)(void *ctx, void *tag, bool delivered, const char *error);

typedef struct {
    const char *brokers;
    const char *client_id;
    int delivery_timeout_ms;        /* message.timeout.ms; requests wait at most 30 s within it */
    es_tracked_report_cb on_report; /* required */
    void *ctx;                      /* passed to on_report */
} es_tracked_opts;

typedef struct es_tracked_producer es_tracked_producer;

/* Make the producer (o is copied). ES_EINVAL: a property librdkafka
 * refuses (FACTORD_RDKAFKA_*); ES_EFATAL: librdkafka could not make it.
 * On success the caller owns *out. */
es_result es_tracked_new(const es_tracked_opts *o, es_tracked_producer **out, es_error *err) ES_WUR;

/* Drop what is still queued (its reports say undelivered), serve the
 * remaining reports for up to 2 s, and destroy. NULL-safe. */
void es_tracked_free(es_tracked_producer *p);

/* Enqueue one record (key and value copied) whose report will carry tag.
 * ES_OK: enqueued, on_report will be called once for tag. ES_ETRANSIENT:
 * the local queue is full or there is no handle (a recreate failed); try
 * again shortly. Anything else: refused. Not ES_OK: no report will come,
 * tag stays the caller's; err's text is librdkafka's reason. */
es_result es_tracked_send(es_tracked_producer *p, const char *topic, const void *key, size_t key_len,
                          const void *value, size_t value_len, void *tag, es_error *err) ES_WUR;

/* Serve reports for up to timeout_ms. ES_EFATAL when the producer hit a
 * fatal error (librdkafka 2.0.2's idempotence bugs) and must be recreated
 * with es_tracked_recreate; ES_OK otherwise. */
es_result es_tracked_poll(es_tracked_producer *p, int timeout_ms, es_error *err) ES_WUR;

/* Replace the librdkafka handle: purge everything queued or in flight
 * (their reports say undelivered), serve the reports for up to 1 s, and
 * make a new handle. Sends wait meanwhile. On failure there is no handle
 * (sends get ES_ETRANSIENT) until a later call succeeds. */
es_result es_tracked_recreate(es_tracked_producer *p, es_error *err) ES_WUR;

/* Is Kafka reachable (a metadata request answered within timeout_ms)? */
bool es_tracked_ping(es_tracked_producer *p, int timeout_ms);

#endif
