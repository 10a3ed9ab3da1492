/*
 * infra/components/notifier.h - `factord notify`: every phone code and
 * OTP-SMS code in the log, sent by SMS exactly as far as a crash allows.
 *
 * The notifier consumes the events topic (its own consumer group). For each
 * code event (user.human.phone.code.added, user.human.otp.sms.code.added)
 * it consults its delivery record (factord.code_deliveries,
 * infra/pg/deliveries.h) and the user's write-side row, then:
 *
 *   - skips a code that is no longer the user's pending one (replaced by a
 *     newer code, used, the factor or the user gone): the newer event is
 *     the one to send;
 *   - refuses, as a failure, a code past its expiry, a user over the
 *     per-user rate limit (SMS pumping), a code that does not decrypt;
 *   - otherwise decrypts the code, renders the message and sends it through
 *     the send callback (the SMS provider adapter), retrying temporary
 *     failures with bounded exponential backoff (at most max_attempts
 *     tries, never past the code's expiry), and stops at a permanent one;
 *   - records the outcome: the delivery row first, then a RecordCodeDelivery
 *     command on the commands topic (domain/notification.h: one id per code
 *     event), which the processor turns into ...code.sent or
 *     ...code.send.failed.
 *
 * Only then is the record's offset stored. So a crash never drops a code
 * (its record is read again), and never sends one twice once its row says
 * sent or failed; what a crash can repeat is a try whose answer was not
 * yet written (state sending), with the same idempotency key
 * (docs/notifier.md). A PostgreSQL or Kafka outage holds the record and
 * retries it; a stop leaves it for the next run.
 *
 * One record at a time per process: retries of one user's code delay the
 * codes behind it on that partition (bounded by max_attempts and the retry
 * cap). More partitions and more notifier processes spread that.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_COMPONENTS_NOTIFIER_H
#define FACTORD_INFRA_COMPONENTS_NOTIFIER_H

#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "domain/event.h"
#include "infra/base/backoff.h"
#include "infra/crypto/codecrypt.h"

/* What one try of a send gave. */
typedef enum {
    ES_SEND_SENT = 1,   /* the provider took the message */
    ES_SEND_RETRY,      /* worth another try: 429, 5xx, timeouts, no connection */
    ES_SEND_PERMANENT   /* refused for good: other 4xx */
} es_send_kind;

typedef struct {
    es_send_kind kind;
    int http_status;                 /* 0: no HTTP answer */
    int64_t retry_after_s;           /* the provider's Retry-After, 0: none */
    char message_id[DOM_ID_MAX];     /* SENT: the provider's id */
    char reason[DOM_REASON_MAX];     /* RETRY/PERMANENT: short, secret-free */
} es_send_outcome;

/* Send body to phone number to; key is the idempotency key of the code
 * event (the same on every try and after a restart). Must fill *out. */
typedef void (*es_notifier_send_fn)(void *ctx, const char *to, const char *body, const char *key,
                                    const dom_evt *evt, es_send_outcome *out);

typedef struct {
    const char *database_url;
    const char *brokers;
    const char *events_topic;
    const char *commands_topic;
    const char *group;               /* consumer group (FACTORD_NOTIFY_GROUP) */
    int session_timeout_ms;
    const char *provider;            /* its name in the records: "twilio", "webhook" */
    const es_codekey *code_key;      /* decrypts the codes */
    const char *phone_template;      /* domain/notification.h templates */
    const char *otp_template;
    int max_attempts;                /* tries per code, >= 1 */
    int64_t retry_first_ms;          /* first retry delay, doubled each time ... */
    int64_t retry_max_ms;            /* ... up to this (a Retry-After too) */
    long rate_limit;                 /* codes per user per window; 0: no limit */
    int64_t rate_window_s;
    es_notifier_send_fn send;
    void *send_ctx;
    int64_t (*now_us)(void);         /* NULL: the wall clock */
} es_notifier_opts;

typedef struct {
    unsigned long long sent, failed, skipped, retries, recorded;
} es_notifier_stats;

/* Run until *stop. ES_OK after a stop; ES_EINVAL for bad options; ES_EFATAL
 * when the schema is too old or a server refuses for good. */
es_result es_notifier_run(const es_notifier_opts *o, const es_stop_flag *stop, es_notifier_stats *stats,
                          es_error *err) ES_WUR;

#endif
