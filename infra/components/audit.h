/*
 * infra/components/audit.h - the auditor's tools over the event log: verify that it is
 * complete and unaltered, and replay it filtered (brief §7; docs/audit.md).
 *
 * Both stream the log in pages (keyset pagination on position, 10,000 rows
 * a page, the next page requested while the current one is checked) inside
 * one REPEATABLE READ READ ONLY transaction, so they see one snapshot of a
 * log that writers keep appending to, and hold at most two pages in memory.
 *
 * es_audit_verify checks, in this order, and stops at the first problem:
 *  1. in position order: positions strictly increasing; unchained events
 *     (hash NULL, written before migration 0009) only as a prefix at or below
 *     the chain's start; every other event's hash is HMAC(key, previous hash
 *     || canonical bytes) (infra/crypto/chain.h); the stored row holds nothing the
 *     event does not (the type's canonical name, aggregate type "user", no
 *     foreign payload members); the expected head, when given, is in the
 *     log with that hash; the last chained event is the counter's head;
 *  2. in (instance, user, sequence) order: each user's sequences are 1..n
 *     without gap or duplicate, and the write-side projection
 *     (factord.users) equals the fold of the user's events through
 *     dom_user_apply, every column; users without events are errors too.
 *
 * Ownership: the store is borrowed (its connection runs the transaction,
 * which is closed again before return); reports are caller storage.
 */
#ifndef FACTORD_INFRA_AUDIT_H
#define FACTORD_INFRA_AUDIT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "domain/errors.h"
#include "domain/event.h"
#include "infra/crypto/chain.h"
#include "infra/kafka/lag.h"
#include "infra/pg/store.h"

/* Progress of a long run, every second or so (for stderr). */
typedef struct {
    const char *phase;     /* "chain", "users" or "replay" */
    int64_t rows;          /* rows read in this phase */
    int64_t position;      /* the last position read (chain, replay) */
    double rate;           /* rows per second in this phase */
} es_audit_progress;
typedef void (*es_audit_progress_fn)(void *arg, const es_audit_progress *p);

typedef struct {
    bool expect_head;      /* --expect-head POS:HASH */
    int64_t expect_position;
    unsigned char expect_hash[ES_CHAIN_HASH_LEN];
    size_t page;           /* rows per page; 0 = 10,000 */
    es_audit_progress_fn progress; /* may be NULL */
    void *progress_arg;
} es_verify_opts;

typedef struct {
    bool ok;                        /* every check held */
    /* what was checked */
    int64_t events;                 /* events read in position order */
    int64_t unchained;              /* events without a hash (a prefix) */
    int64_t users;                  /* users folded and compared */
    int64_t head_position;          /* the last chained event (0: none) */
    unsigned char head_hash[ES_CHAIN_HASH_LEN];
    int64_t chain_start;            /* the counter's value at migration 0009 */
    double seconds;
    /* the first problem (when !ok) */
    int64_t bad_position;           /* 0 when the problem has no event */
    char bad_instance[DOM_ID_MAX];
    char bad_user[DOM_ID_MAX];
    char problem[512];
} es_verify_report;

/* Verify the log with key. ES_OK when the checks ran (rep->ok tells whether
 * they held); another result when they could not (PostgreSQL away, schema
 * too old): err says why. */
es_result es_audit_verify(es_store *st, const es_chain_key *key, const es_verify_opts *opts,
                          es_verify_report *rep, es_error *err) ES_WUR;

#define ES_REPLAY_MAX_TYPES 32

typedef struct {
    const char *instance_id;       /* NULL = every instance */
    const char *user_id;           /* aggregate id; NULL = every user */
    const char *resource_owner;    /* organisation; NULL = every one */
    dom_evt_type types[ES_REPLAY_MAX_TYPES];
    size_t n_types;                /* 0 = every type */
    bool has_since, has_until;
    int64_t since_us, until_us;    /* createdAt >= since, < until */
    int64_t from_position;         /* position >= from (0 = start) */
    int64_t to_position;           /* position <= to (0 = no bound) */
    size_t page;                   /* rows per page; 0 = 10,000 */
    es_audit_progress_fn progress; /* may be NULL */
    void *progress_arg;
} es_replay_filter;

/* Write the matching events to out as JSON lines in position order: the
 * dom_evt_to_json members (sorted by name: the chain's canonical text)
 * plus "hash" (hex, or null for an unchained event).
 * *written = lines written. */
es_result es_audit_replay(es_store *st, const es_replay_filter *f, FILE *out, int64_t *written,
                          es_error *err) ES_WUR;

/* --- status -------------------------------------------------------------- */

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
} es_status;

/* The log's side of the status, from PostgreSQL. */
es_result es_audit_status_pg(es_store *st, es_status *s, es_error *err) ES_WUR;
/* The Kafka side: consumer-group lags and the dead-letter count. On
 * ES_ETRANSIENT (brokers unreachable) s->kafka_error says why. */
es_result es_audit_status_kafka(const char *brokers, const char *events_topic,
                                const char *projector_group, const char *commands_topic,
                                const char *processor_group, const char *dlq_topic,
                                int timeout_ms, es_status *s, es_error *err) ES_WUR;

/* "POS:HASH" (decimal position, 64 hex digits) for --expect-head. */
bool es_audit_parse_head(const char *s, int64_t *pos, unsigned char hash[ES_CHAIN_HASH_LEN]);

#endif
