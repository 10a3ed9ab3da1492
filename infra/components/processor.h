/*
 * infra/components/processor.h - deciding a batch of command records in one
 * PostgreSQL transaction.
 *
 * The Kafka loop (cmd/factord/process.c) hands over the records it polled;
 * this module decodes them, looks up their command ids, loads the latest
 * state of every user they touch (FOR UPDATE, sorted), decides each command
 * in record order against that state, and writes the events, the new user
 * states, the command outcomes and the outbox rows (rejection replies,
 * repeated replies, dead letters) in one transaction. On a concurrency
 * conflict it rolls back and decides the whole batch again on fresh state
 * (brief §4.3). Only after ES_OK may the caller store the Kafka offsets
 * (brief §4.5).
 */
#ifndef FACTORD_INFRA_PROCESSOR_H
#define FACTORD_INFRA_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/crypto/codecrypt.h"
#include "infra/pg/store.h"

/* One polled record; borrowed for the duration of the call. */
typedef struct {
    const char *value; size_t value_len;
    const char *key; size_t key_len;
    const char *topic; int32_t partition; int64_t offset;
} es_record;

typedef struct {
    const char *replies_topic;  /* default reply topic */
    const char *dlq_topic;
    int64_t dlq_max_bytes;
    int64_t code_ttl_s;
    int code_length;
    const es_codekey *code_key;
    int64_t (*now_us)(void);    /* NULL: the wall clock */
    int max_conflict_retries;   /* 0: 20 */
} es_processor_opts;

typedef struct {
    size_t accepted, rejected, replayed, dead, events, attempts;
} es_batch_stats;

typedef struct es_processor es_processor;

/* The processor borrows st and the strings/key in opts for its lifetime. */
es_processor *es_processor_new(es_store *st, const es_processor_opts *opts);
void es_processor_free(es_processor *p);

/* Decide and commit n records. ES_OK: committed (stats filled).
 * ES_ETRANSIENT: PostgreSQL is away; nothing committed, retry the same
 * records after es_store_reset. ES_EFATAL: a bug or an unusable schema. */
es_result es_processor_run_batch(es_processor *p, const es_record *recs, size_t n,
                                 es_batch_stats *stats, es_error *err) ES_WUR;

#endif
