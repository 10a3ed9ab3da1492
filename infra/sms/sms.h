/*
 * infra/sms/sms.h - sending one SMS through a provider's HTTP API: Twilio's
 * Messages resource, or a generic webhook that receives the JSON body
 * ZITADEL's HTTP SMS provider sends (docs/notifier.md, "SMS providers").
 *
 * A send ends in one of three outcomes, so that the notifier can decide
 * what to do next without knowing the provider: SENT (the provider took
 * the message), RETRY (the provider or the network is away or busy: send
 * the same message again later, with the same idempotency key) or
 * PERMANENT (the request itself is wrong: sending it again gives the same
 * answer). Twilio's Messages API does not deduplicate on the
 * Idempotency-Key header we send: a RETRY after a request that did reach
 * Twilio (a timeout while it answered) can deliver a second SMS.
 *
 * Threads: es_sms_provider_new initialises libcurl once per process
 * (curl_global_init behind pthread_once; libcurl's global state is never
 * cleaned up before exit). A provider owns one libcurl easy handle, reused
 * for every send so that the connection to the provider stays open
 * (keep-alive): use a provider from one thread at a time, or give each
 * thread its own. Sends are blocking, at most FACTORD_SMS_TIMEOUT_MS each,
 * and install no signal handlers (CURLOPT_NOSIGNAL).
 *
 * Secrets: the Twilio Auth Token is read at creation (from
 * FACTORD_SMS_TWILIO_AUTH_TOKEN or _FILE), kept only inside the provider
 * (and the copy libcurl makes of it) and wiped at free (libcurl's copy is
 * freed with the handle). Neither the token nor a message body nor an SMS
 * argument is ever logged or put into an outcome; sends are logged at
 * debug level only (kind, instance, user, idempotency key, outcome).
 *
 * Layer: sms; includes only the domain, base and libcurl: the only libcurl
 * code (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_SMS_H
#define FACTORD_INFRA_SMS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/base/config.h"

/* The longest wait a Retry-After header can ask for; longer ones are cut to it. */
#define ES_SMS_RETRY_AFTER_MAX_S 600

typedef enum { ES_SMS_NONE = 0, ES_SMS_TWILIO, ES_SMS_WEBHOOK } es_sms_kind;

typedef enum {
    ES_SMS_SENT = 0,  /* the provider accepted the message */
    ES_SMS_RETRY,     /* try again later: 408, 429, 5xx, no connection, DNS, timeout */
    ES_SMS_PERMANENT  /* do not try again: other 4xx (and 1xx, 3xx), a malformed message */
} es_sms_status;

typedef struct es_sms_provider es_sms_provider;

/* One SMS. Every pointer is borrowed for the duration of es_sms_send. */
typedef struct {
    const char *to;              /* recipient, E.164 ("+41791234567") */
    const char *body;            /* the rendered text, UTF-8 */
    const char *idempotency_key; /* one per code event: sent as Idempotency-Key (visible ASCII, at most 200) */
    const char *instance_id;     /* for the log and the webhook's contextInfo */
    const char *user_id;         /* idem; may be NULL */
    /* Webhook only (Twilio ignores them): */
    const char *event_type;      /* contextInfo.eventType, e.g. user.human.phone.code.added; may be NULL */
    const json_t *template_data; /* templateData object (title, subject, greeting ...); NULL: {}; its
                                  * "text" is always set to body */
    const json_t *args;          /* args object (code, preferredLoginName ...); NULL: left out */
} es_sms_msg;

typedef struct {
    es_sms_status status;
    long http_status;            /* the provider's answer; 0 when there was none */
    char message_id[64];         /* SENT: Twilio's message sid (SM...); "" for the webhook */
    int64_t retry_after_s;       /* RETRY: the server's Retry-After in seconds, capped at
                                  * ES_SMS_RETRY_AFTER_MAX_S; -1 when it sent none */
    long provider_code;          /* PERMANENT from Twilio: its JSON error code (21211 ...); else 0 */
    char reason[256];            /* short and secret-free: what went wrong (empty when SENT) */
} es_sms_outcome;

/* The provider FACTORD_SMS_PROVIDER names, checked: every problem of its
 * settings at once in err, each line naming the setting (ES_EINVAL).
 * "none" (the default) is refused too: a notifier without a provider must
 * not start. */
es_result es_sms_provider_new(const es_config *cfg, es_sms_provider **out, es_error *err) ES_WUR;
/* Wipes the token. NULL-safe. */
void es_sms_provider_free(es_sms_provider *p);
es_sms_kind es_sms_provider_kind(const es_sms_provider *p);
/* "none", "twilio", "webhook". */
const char *es_sms_kind_name(es_sms_kind k);

/* Send m (blocking, at most FACTORD_SMS_TIMEOUT_MS) and fill *out, which
 * is also returned. A message that is malformed (to not E.164, empty or
 * non-UTF-8 body or ids, bad idempotency key, template data or args not
 * JSON objects) is PERMANENT without a request. */
es_sms_status es_sms_send(es_sms_provider *p, const es_sms_msg *m, es_sms_outcome *out);

const char *es_sms_status_name(es_sms_status s);

/* --- the pure parts (unit tests) ------------------------------------------------ */

/* The outcome an HTTP status stands for: 2xx SENT; 408, 429, 5xx RETRY;
 * everything else PERMANENT (redirects are not followed). */
es_sms_status es_sms_classify_http(long http_status);
/* A Retry-After value (delta-seconds or an IMF-fixdate HTTP-date, read
 * against now_s, Unix seconds) in seconds from 0 to ES_SMS_RETRY_AFTER_MAX_S;
 * -1 when it is neither. */
int64_t es_sms_parse_retry_after(const char *value, int64_t now_s);
/* Append name=value in application/x-www-form-urlencoded form (letters,
 * digits and -._~ as they are, space as '+', every other byte %XX) to the
 * malloc'd, NUL-terminated *buf of *len bytes, with a '&' before every
 * pair but the first. Out of memory aborts. */
void es_sms_form_add(char **buf, size_t *len, const char *name, const char *value);
/* '+', then 2 to 15 digits, the first not 0. */
bool es_sms_is_e164(const char *s);

#endif
