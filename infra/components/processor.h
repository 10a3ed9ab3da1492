/*
 * infra/components/processor.h - deciding a batch of command records in one
 * PostgreSQL transaction.
 *
 * es_processor_loop polls the commands topic and hands each batch to
 * es_processor_run_batch, which decodes the records, looks up their
 * command ids, loads the latest state of every user they touch (FOR
 * UPDATE, sorted), decides each command in record order against that state, and writes the events, the new user
 * states, the command outcomes and the outbox rows (rejection replies,
 * repeated replies, dead letters) in one transaction. On a concurrency
 * conflict it rolls back and decides the whole batch again on fresh state
 * (brief §4.3). Only after ES_OK may the caller store the Kafka offsets
 * (brief §4.5).
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PROCESSOR_H
#define FACTORD_INFRA_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "infra/base/backoff.h"
#include "infra/crypto/codecrypt.h"
#include "infra/kafka/consumer.h"
#include "infra/pg/store.h"


typedef struct {
    const char *replies_topic;  /* default reply topic */
    const char *dlq_topic;
    int64_t dlq_max_bytes;
    int64_t code_ttl_s;
    int code_length;
    int64_t otp_sms_code_ttl_s; /* ChallengeOTPSMS's codes */
    int otp_sms_code_length;
    int max_otp_attempts;       /* lockout policy; 0: never lock */
    const es_codekey *code_key;
    int64_t (*now_us)(void);    /* NULL: the wall clock */
    int max_conflict_retries;   /* 0: 20 */
} es_processor_opts;

/* What became of a decoded command (its metrics' outcome label). */
typedef enum { ES_OUTCOME_ACCEPTED, ES_OUTCOME_REJECTED, ES_OUTCOME_REPLAYED, ES_OUTCOME__N } es_outcome;

typedef struct {
    size_t accepted, rejected, replayed, dead, events, attempts;
    uint32_t by_type[DOM_CMD__COUNT][ES_OUTCOME__N]; /* decoded commands */
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

/* `factord process`'s loop: poll batches from c (at most batch_max records:
 * what is queued, or arrives within linger_ms of the first), decide each
 * with es_processor_run_batch (retried with backoff while PostgreSQL is
 * away, st reset in between), and only after its COMMIT store its offsets.
 * A progress line every 10 s; *total sums every committed batch.
 * ES_OK: stop was set (a batch undecided at the stop is abandoned: it is
 * redelivered). Otherwise the non-transient error of a batch (logged). */
es_result es_processor_loop(es_processor *p, es_store *st, es_consumer *c, size_t batch_max, int64_t linger_ms,
                            const es_stop_flag *stop, es_batch_stats *total, es_error *err) ES_WUR;

#endif
