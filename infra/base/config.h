/*
 * infra/base/config.h - factord's configuration: one declarative table of
 * environment variables (name, type, default, secret, description), parsed
 * once at start-up with every problem reported at once.
 *
 * The README's configuration table is kept in step with es_config_table by a
 * unit test. librdkafka properties pass through as FACTORD_RDKAFKA_<property
 * with dots as underscores> (see infra/kafka/kafka.h).
 *
 * Layer: base; includes only the domain and base (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_CONFIG_H
#define FACTORD_INFRA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

typedef struct {
    char *database_url;     /* may be NULL: libpq's PG* variables apply */
    char *kafka_brokers;    /* may be NULL */
    char *instance_id;
    char *http_addr;
    char *metrics_addr;     /* may be NULL: no metrics endpoint */
    int64_t jwks_refresh_s; /* 0: reload only on an unknown kid */
    char *http_tls;         /* "auto", "on", "off" */
    char *http_tls_cert_file, *http_tls_key_file; /* may be NULL */
    char *state_dir;
    char *commands_topic;
    char *events_topic;
    char *replies_topic;
    char *dlq_topic;
    char *processor_group;
    char *projector_group;
    int64_t topic_partitions;
    int64_t topic_replication;  /* 0: min(3, brokers) */
    int64_t topic_min_insync;   /* 0: replication - 1, at least 1 */
    int64_t batch_max;
    int64_t projector_batch_max;
    int64_t projector_split_min;
    int64_t batch_linger_ms;
    int64_t relay_batch;
    int64_t relay_idle_ms;
    int64_t dlq_max_bytes;
    int64_t session_timeout_ms;
    char *group_instance_id;    /* NULL: dynamic membership */
    char *partition_assignment;
    char *code_key;         /* secret: 64 hex digits (AES-256) */
    char *code_key_file;    /* or a file holding them */
    char *chain_key;        /* secret: 64 hex digits (HMAC-SHA256 of the event hash chain) */
    char *chain_key_file;   /* or a file holding them (infra/crypto/chain.h) */
    char *pii_key;          /* secret: 64 hex digits (AES-256, personal data: docs/pii.md) */
    char *pii_key_file;     /* or a file holding them (infra/crypto/pii.h) */
    int64_t code_ttl_s;
    int64_t code_length;
    int64_t otp_sms_code_ttl_s;
    int64_t otp_sms_code_length;
    int64_t lockout_max_otp_attempts;
    /* The notifier (docs/notifier.md) */
    char *notify_group;
    int64_t notify_max_attempts;
    int64_t notify_retry_first_ms;
    int64_t notify_retry_max_ms;
    int64_t notify_rate_limit;
    int64_t notify_rate_window_s;
    char *notify_otp_template;
    char *notify_phone_template;
    char *log_level;
    /* The HTTP gateway (docs/gateway.md) */
    char *jwks_file;        /* unset: the development key in state_dir */
    char *token_issuer;
    char *token_audience;
    int64_t token_leeway_s;
    char *host_map;         /* "host=instance,..." or NULL */
    char *session_callers;  /* subjects that may use the session API, "a,b,..." or NULL */
    char *gateway_replies_topic;
    int64_t gateway_timeout_ms;
    int64_t http_threads;
    int64_t http_max_connections;
    int64_t http_max_body_bytes;
    int64_t http_idle_timeout_s;
    /* SMS providers of the notifier (infra/sms/sms.h, docs/notifier.md) */
    char *sms_provider;               /* none, twilio, webhook */
    char *sms_twilio_url;
    char *sms_twilio_account_sid;
    char *sms_twilio_auth_token;      /* secret */
    char *sms_twilio_auth_token_file; /* or a file holding it */
    char *sms_twilio_from;            /* E.164 number or a Messaging Service SID (MG...) */
    char *sms_webhook_url;
    char *sms_sender;                 /* the webhook's sender number */
    int64_t sms_timeout_ms;
    /* Not from the environment: set by `factord run` for its embedded
     * broker, which has no CreateTopics (topics are made up front). */
    bool skip_topic_creation;
} es_config;

typedef enum { ES_CFG_STRING, ES_CFG_INT } es_cfg_type;

typedef struct {
    const char *name;        /* environment variable */
    es_cfg_type type;
    const char *def;         /* default as text; NULL = unset */
    bool secret;             /* never logged */
    int64_t min, max;        /* ES_CFG_INT bounds */
    size_t offset;           /* into es_config */
    const char *description;
} es_cfg_entry;

extern const es_cfg_entry es_config_table[];
extern const size_t es_config_table_len;

/* Parse from getenv_fn (getenv in production, a fake in tests). On
 * ES_EINVAL err->text lists every problem, one per line. */
typedef const char *(*es_getenv_fn)(const char *name);
es_result es_config_load(es_config *cfg, es_getenv_fn getenv_fn, es_error *err) ES_WUR;
void es_config_free(es_config *cfg);

/* The 32-byte code-encryption key from FACTORD_CODE_KEY or _FILE. */
es_result es_config_code_key(const es_config *cfg, unsigned char key[32], es_error *err) ES_WUR;

/* A 32-byte key written as 64 hex digits (surrounding blanks and newlines
 * ignored), from text or from the file at path; `what` names the setting
 * in the error. Every key factord reads (the phone-code key, the chain
 * key, the personal-data master key) comes through these. Buffers that
 * held the text are wiped. */
es_result es_key_from_hex(const char *text, const char *what, unsigned char key[32], es_error *err) ES_WUR;
es_result es_key_from_file(const char *path, const char *what, unsigned char key[32], es_error *err) ES_WUR;

/* Print the table as Markdown rows (for the README) to stdout. */
void es_config_print_markdown(void);

#endif
