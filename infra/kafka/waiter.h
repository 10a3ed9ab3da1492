/*
 * infra/kafka/waiter.h - wait for one record, by key, on a topic: how `factord
 * submit` awaits the reply to the command it sends.
 *
 * No race by construction: es_waiter_new positions a consumer at the
 * current end (high watermark) of every partition of the topic, and the
 * caller produces the command only after that. The reply can only be
 * written after the command, so it lies at or beyond those positions on
 * whichever partition it lands. The consumer reads with explicit offsets
 * (assign): it joins no group, commits nothing and leaves no trace on the
 * brokers.
 *
 * Unreachable brokers fail es_waiter_new early (as soon as librdkafka
 * reports every broker down) instead of waiting out the deadline.
 * Deadlines are absolute, on es_clock_mono_ms().
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_WAITER_H
#define FACTORD_INFRA_WAITER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

typedef struct es_waiter es_waiter;

/* Position a waiter at the end of every partition of topic. A topic that
 * does not exist yet is created: by the broker's auto-creation where it
 * allows it, else with create_partitions partitions. ES_ETRANSIENT: the
 * brokers are unreachable or the deadline passed; ES_EINVAL: a bad
 * librdkafka property (FACTORD_RDKAFKA_*); ES_EFATAL: anything else (the
 * topic is not readable, ...). On success the caller owns *out. */
es_result es_waiter_new(const char *brokers, const char *topic, int create_partitions, int64_t deadline_ms,
                        es_waiter **out, es_error *err) ES_WUR;

/* Read until a record whose key is key (key_len bytes) arrives, skipping
 * every other record. On ES_OK *value is a malloc'd, NUL-terminated copy of
 * the record's value (the caller frees it) and *value_len its length.
 * ES_ETRANSIENT when deadline_ms passes or *stop (may be NULL) turns
 * nonzero first; err then names the last Kafka error seen, if any. */
es_result es_waiter_wait(es_waiter *w, const void *key, size_t key_len, int64_t deadline_ms,
                         const volatile sig_atomic_t *stop, char **value, size_t *value_len,
                         es_error *err) ES_WUR;

/* The last error librdkafka reported during es_waiter_wait ("" if none),
 * for messages. Borrowed, valid until the next call on w. */
const char *es_waiter_last_error(const es_waiter *w);

/* Destroy without a consumer close (there is no group to leave and nothing
 * to commit). NULL-safe. */
void es_waiter_free(es_waiter *w);

#endif
