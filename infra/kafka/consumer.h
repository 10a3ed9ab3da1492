/*
 * infra/kafka/consumer.h - the group consumer the processor and the
 * projector read their topics with, in batches.
 *
 * Offsets are stored explicitly, only after the caller has finished with
 * what it polled (enable.auto.offset.store=false; librdkafka commits what
 * was stored every 500 ms and at es_consumer_free). The assignor is the
 * eager range one unless the caller names another (cooperative-sticky);
 * a stable group.instance.id makes the member static: a restart within
 * the session timeout takes its partitions back without a rebalance. Records come as es_record views of an es_kafka_msg the
 * caller frees; neither exposes librdkafka.
 *
 * Threads: es_consumer_next from one thread at a time; es_consumer_store
 * from any thread.
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_CONSUMER_H
#define FACTORD_INFRA_KAFKA_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

typedef struct es_consumer es_consumer;

/* One polled record, owned by the caller until es_kafka_msg_free. */
typedef struct es_kafka_msg es_kafka_msg;

/* A view of a record; its pointers live as long as its es_kafka_msg (or,
 * where a caller builds one, as long as the caller says). */
typedef struct {
    const char *value; size_t value_len;
    const char *key; size_t key_len;
    const char *topic; int32_t partition; int64_t offset;
    int64_t timestamp_ms; /* the record's create time (ms since the epoch); 0: unknown */
} es_record;

/* The next offsets to store: per partition, one past the highest record
 * noted. */
typedef struct es_offsets es_offsets;

/* How a consumer joins its group. */
typedef struct {
    const char *group;        /* group.id */
    int session_timeout_ms;   /* session.timeout.ms */
    const char *instance_id;  /* group.instance.id (static membership); NULL or "": none */
    const char *assignor;     /* partition.assignment.strategy; NULL or "": "range,roundrobin" */
} es_consumer_opts;

/* A consumer as o says, subscribed to topics (a bounded pre-fetch: see
 * consumer.c). *out is the caller's (es_consumer_free). ES_EINVAL (err
 * naming the property) when librdkafka refuses a setting. */
es_result es_consumer_new(const char *brokers, const es_consumer_opts *o, const char *const *topics, size_t n,
                          es_consumer **out, es_error *err) ES_WUR;

/* Leave the group cleanly (committing what was stored) and free c. NULL is
 * a no-op. */
void es_consumer_free(es_consumer *c);

/* The next record of a batch being filled: waits up to 200 ms for the first
 * one (got == 0), then until linger_ms after the first, then takes what is
 * already queued without waiting (linger 0: a batch is what arrived while
 * the previous one was being committed). NULL: nothing yet (got == 0; the
 * caller checks its stop flag and asks again) or the batch is complete
 * (got > 0; the count bound is the caller's). Consumer errors are logged
 * and skipped. Fills *rec with a view of the record. May block for one
 * ListOffsets round trip to wake librdkafka's fetcher (consumer.c). */
es_kafka_msg *es_consumer_next(es_consumer *c, size_t got, int64_t linger_ms, es_record *rec);

/* How often es_consumer_next woke the fetcher (for the stop log line). */
unsigned long long es_consumer_wakeups(const es_consumer *c);

/* Free a polled record (NULL: no-op). */
void es_kafka_msg_free(es_kafka_msg *m);

/* The last value of header name on m: true with *val, *size (borrowed from
 * m); false when m has no such header. */
bool es_kafka_msg_header(const es_kafka_msg *m, const char *name, const void **val, size_t *size);

/* An empty set of offsets; the caller's (es_offsets_free, NULL-safe). */
es_offsets *es_offsets_new(void);
void es_offsets_free(es_offsets *o);
/* Note rec: its partition's offset to store becomes at least rec's + 1. */
void es_offsets_note(es_offsets *o, const es_record *rec);

/* Store o for the next commit. A partition revoked meanwhile is logged and
 * skipped: its next owner reads it again. */
void es_consumer_store(es_consumer *c, const es_offsets *o);
/* es_consumer_store of the offsets of recs[0..n). */
void es_consumer_store_records(es_consumer *c, const es_record *recs, size_t n);

#endif
