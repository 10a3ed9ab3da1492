/*
 * infra/components/replies.h - send a command and wait for its reply, many at a time,
 * with one producer and one reply consumer per process.
 *
 * es_replies_send registers a waiter under the command id, then produces
 * the command (idempotent producer, acks=all, delivery timeout = the wait
 * timeout). One consumer thread reads the reply topic from its end (every
 * partition assigned at the high watermark taken at start, so a reply
 * produced after the start is never missed; partitions added later are
 * read from their beginning) and hands each reply to the waiter of its
 * command id; replies for other ids (another gateway's, or late ones) are
 * skipped without being parsed. A second thread serves delivery reports and
 * deadlines. Every waiter's callback runs exactly once:
 *
 *   ES_REPLY_OK           the reply arrived: its httpStatus, and its body
 *                         as the exact bytes it has on the topic
 *   ES_REPLY_TIMEOUT      delivered, but no reply within the timeout
 *   ES_REPLY_UNAVAILABLE  not delivered: Kafka refused it, or did not
 *                         acknowledge it within the timeout
 *   ES_REPLY_MALFORMED    a reply came but is not {"httpStatus":..,"body":..}
 *   ES_REPLY_SHUTDOWN     es_replies_free ran first
 *
 * Callbacks run on the library's threads (or in es_replies_send itself),
 * never under its locks; they must not block.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_REPLIES_H
#define FACTORD_INFRA_REPLIES_H

#include <stdbool.h>
#include <stddef.h>

#include "domain/errors.h"

typedef enum {
    ES_REPLY_OK = 0,
    ES_REPLY_TIMEOUT,
    ES_REPLY_UNAVAILABLE,
    ES_REPLY_MALFORMED,
    ES_REPLY_SHUTDOWN
} es_reply_outcome;

/* body/body_len: the reply's body (only with ES_REPLY_OK), valid during the
 * call only. */
typedef void (*es_reply_cb)(void *ctx, es_reply_outcome outcome, int http_status, const char *body,
                            size_t body_len);

typedef struct {
    const char *brokers;
    const char *reply_topic;   /* where replies for this process arrive */
    int timeout_ms;            /* the whole wait, from send to reply */
    const char *client_id;
} es_replies_opts;

typedef struct es_replies es_replies;

/* Connect, position the consumer at the end of the reply topic and start
 * the threads. ES_ETRANSIENT when Kafka cannot be reached (retry later);
 * the reply topic must exist. */
es_result es_replies_new(const es_replies_opts *o, es_replies **out, es_error *err) ES_WUR;
/* Answer every pending waiter with ES_REPLY_SHUTDOWN, stop the threads,
 * flush briefly and close. NULL-safe. */
void es_replies_free(es_replies *r);

/* Wait for the reply to cmd_id (a canonical UUID) and produce value to
 * topic under key. ES_ECONFLICT when a waiter for cmd_id is pending already
 * (cb is not called). ES_OK otherwise: cb is called exactly once, possibly
 * before this returns. */
es_result es_replies_send(es_replies *r, const char *topic, const char *key, size_t key_len,
                          const char *value, size_t value_len, const char *cmd_id, es_reply_cb cb,
                          void *ctx, es_error *err) ES_WUR;

/* Is Kafka reachable (a metadata request answered within timeout_ms)? */
bool es_replies_ping(es_replies *r, int timeout_ms);

/* Waiters pending right now. */
size_t es_replies_pending(es_replies *r);

#endif
