/*
 * infra/pg/deliveries.h - the notifier's delivery record
 * (factord.code_deliveries, migration 0013) and the lookups it makes of the
 * write side (factord.users) before it sends a code.
 *
 * One row per code event, keyed by (instance, user, code sequence). The
 * notifier (infra/components/notifier.c) reads a row before it sends,
 * writes state sending (attempts + 1) before each try, the final state
 * (sent, failed, skipped) after the provider's answer, and recorded once
 * its RecordCodeDelivery command is on the commands topic. Each call is
 * one autocommitted statement: a crash leaves at most the one step it was
 * in undone. Every statement is parameterised and names the instance.
 *
 * Errors are the store's (es_store_exec: classified SQLSTATEs).
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PG_DELIVERIES_H
#define FACTORD_INFRA_PG_DELIVERIES_H

#include <stdbool.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "infra/pg/store.h"

typedef enum {
    ES_DELIVERY_NONE = 0, /* no row: never tried */
    ES_DELIVERY_SENDING,  /* a try began and has no answer recorded */
    ES_DELIVERY_SENT,
    ES_DELIVERY_FAILED,   /* given up: permanent refusal, rate limit, retries spent */
    ES_DELIVERY_SKIPPED   /* not sent: the code was no longer the pending one */
} es_delivery_state;

const char *es_delivery_state_name(es_delivery_state s); /* "sending", ... ("" for NONE) */

typedef struct {
    es_delivery_state state;
    int attempts;
    bool recorded;                   /* its RecordCodeDelivery command is on the topic */
    char provider[DOM_PROVIDER_MAX];
    char message_id[DOM_ID_MAX];
    char reason[DOM_REASON_MAX];
} es_delivery;

/* The row of a code event; state ES_DELIVERY_NONE when there is none. */
es_result es_delivery_get(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                          es_delivery *out, es_error *err) ES_WUR;

/* A try begins: the row is created (or moved back to) state sending and its
 * attempts go up by one; *attempts is the new count. */
es_result es_delivery_begin(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                            dom_code_kind kind, const char *provider, int *attempts, es_error *err) ES_WUR;

/* The final state (SENT, FAILED or SKIPPED) with what the provider said. */
es_result es_delivery_finish(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                             dom_code_kind kind, es_delivery_state state, const char *provider,
                             const char *message_id, const char *reason, es_error *err) ES_WUR;

/* Its RecordCodeDelivery command is acknowledged by the broker. */
es_result es_delivery_mark_recorded(es_store *st, const char *instance_id, const char *user_id,
                                    int64_t code_sequence, es_error *err) ES_WUR;

/* How many codes of the user were tried (any state but skipped) in the
 * last window_s seconds, not counting code_sequence itself. */
es_result es_delivery_recent(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                             int64_t window_s, long *count, es_error *err) ES_WUR;

/* Where a code goes, from the write side: *current is true when code_enc is
 * still the user's pending code of that kind (not replaced, used, or the
 * user gone); *phone is then the number to send it to (the current number
 * for a phone code, the last verified one for an OTP-SMS code). */
es_result es_delivery_target(es_store *st, const char *instance_id, const char *user_id, dom_code_kind kind,
                             const char *code_enc, bool *current, char *phone, size_t phone_len,
                             es_error *err) ES_WUR;

#endif
