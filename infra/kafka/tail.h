/*
 * infra/kafka/tail.h - a consumer that reads a topic from its end, without
 * a group, and grows with the topic's new partitions: how the gateway reads
 * the replies to the commands it sends.
 *
 * es_tail_new assigns every partition at its high watermark, taken at the
 * start, so every record produced after es_tail_new returns is read and no
 * older one. Partitions added later are noticed within 10 s and read from
 * their beginning (every record in them is newer than the start). The
 * consumer reads with explicit offsets (assign): the group id librdkafka
 * wants is never joined, nothing is committed. Prefetch queues are small,
 * for a process that keeps its memory small.
 *
 * Layer: kafka; includes only the domain, base and librdkafka (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_KAFKA_TAIL_H
#define FACTORD_INFRA_KAFKA_TAIL_H

#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

typedef struct {
    const char *brokers;
    const char *client_id;
    const char *group;  /* librdkafka's group.id: never joined or committed */
    const char *topic;
    const char *what;   /* names the topic in errors and logs: "<what> topic",
                           "<what> consumer", "new <what> partitions" */
    int max_partitions; /* more than this is refused at start, ignored later */
} es_tail_opts;

/* One record, borrowed: valid during the callback only. */
typedef struct {
    const void *key;     /* NULL when the record has none */
    size_t key_len;
    const char *value;   /* NULL when the record has none; not NUL-terminated */
    size_t value_len;
    const char *topic;
    int32_t partition;
    int64_t offset;
} es_tail_record;

typedef void (*es_tail_cb)(void *ctx, const es_tail_record *rec);

typedef struct es_tail es_tail;

/* Make the consumer (o is copied) and assign the topic at its end.
 * ES_EINVAL: the consumer could not be made (a bad FACTORD_RDKAFKA_*
 * property), or the topic has more than max_partitions; ES_ETRANSIENT:
 * Kafka does not answer, or the topic does not exist (yet); ES_EFATAL: the
 * assignment failed. On success the caller owns *out. */
es_result es_tail_new(const es_tail_opts *o, es_tail **out, es_error *err) ES_WUR;

/* Close and destroy. NULL-safe. */
void es_tail_free(es_tail *t);

/* The partitions read now. */
int es_tail_partitions(const es_tail *t);

/* Wait up to timeout_ms for the next record and hand it to cb, then
 * destroy it; consumer errors are logged (warn) and skipped. Every 10 s it
 * also looks for new partitions (up to 2 s). One thread at a time. */
void es_tail_poll(es_tail *t, int timeout_ms, es_tail_cb cb, void *ctx);

#endif
