/*
 * infra/base/config.c - the configuration table and its parser (see config.h).
 */
#include "infra/base/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/util.h"

#define OFF(f) offsetof(es_config, f)
#define I64MAX INT64_MAX

const es_cfg_entry es_config_table[] = {
    {"FACTORD_DATABASE_URL", ES_CFG_STRING, NULL, true, 0, 0, OFF(database_url),
     "PostgreSQL connection string or URI; unset: libpq's PGHOST, PGPORT, PGUSER, PGDATABASE ... apply"},
    {"FACTORD_KAFKA_BROKERS", ES_CFG_STRING, NULL, false, 0, 0, OFF(kafka_brokers),
     "Kafka bootstrap servers (host:port,...); unset: `run` uses the embedded broker, other components refuse to start"},
    {"FACTORD_INSTANCE_ID", ES_CFG_STRING, "default", false, 0, 0, OFF(instance_id),
     "Instance (tenant) the gateway serves when no host mapping is configured"},
    {"FACTORD_HTTP_ADDR", ES_CFG_STRING, "127.0.0.1:8080", false, 0, 0, OFF(http_addr),
     "Address the HTTP gateway listens on"},
    {"FACTORD_HTTP_TLS", ES_CFG_STRING, "auto", false, 0, 0, OFF(http_tls),
     "HTTPS for the gateway: auto (HTTPS with the two files below; without them plain HTTP on a loopback address only), on (the files are required) or off (plain HTTP, also on other addresses)"},
    {"FACTORD_HTTP_TLS_CERT_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(http_tls_cert_file),
     "PEM certificate (and chain) the gateway serves HTTPS with"},
    {"FACTORD_HTTP_TLS_KEY_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(http_tls_key_file),
     "PEM private key of that certificate, unencrypted (keep it mode 0600)"},
    {"FACTORD_METRICS_ADDR", ES_CFG_STRING, NULL, false, 0, 0, OFF(metrics_addr),
     "Address (host:port) where a long-running component serves its Prometheus metrics at /metrics; unset: none (docs/metrics.md)"},
    {"FACTORD_STATE_DIR", ES_CFG_STRING, "./.factord", false, 0, 0, OFF(state_dir),
     "Folder for local state of `run` (embedded broker address, development keys)"},
    {"FACTORD_COMMANDS_TOPIC", ES_CFG_STRING, "factord.commands", false, 0, 0, OFF(commands_topic),
     "Topic the processor consumes commands from (key = user id)"},
    {"FACTORD_EVENTS_TOPIC", ES_CFG_STRING, "factord.events", false, 0, 0, OFF(events_topic),
     "Topic the relay publishes committed events to (key = user id)"},
    {"FACTORD_REPLIES_TOPIC", ES_CFG_STRING, "factord.replies", false, 0, 0, OFF(replies_topic),
     "Default reply topic when a command names no replyTo (key = command id)"},
    {"FACTORD_DLQ_TOPIC", ES_CFG_STRING, "factord.commands.dlq", false, 0, 0, OFF(dlq_topic),
     "Dead-letter topic for undecodable command records"},
    {"FACTORD_PROCESSOR_GROUP", ES_CFG_STRING, "factord-processor", false, 0, 0, OFF(processor_group),
     "Consumer group of the processors on the commands topic"},
    {"FACTORD_PROJECTOR_GROUP", ES_CFG_STRING, "factord-projector", false, 0, 0, OFF(projector_group),
     "Consumer group of the read-model projectors on the events topic"},
    {"FACTORD_TOPIC_PARTITIONS", ES_CFG_INT, "4", false, 1, 10000, OFF(topic_partitions),
     "Partitions for topics factord creates when they are missing"},
    {"FACTORD_TOPIC_REPLICATION", ES_CFG_INT, "0", false, 0, 32, OFF(topic_replication),
     "Replication factor of topics factord creates; 0: min(3, brokers in the cluster)"},
    {"FACTORD_TOPIC_MIN_INSYNC_REPLICAS", ES_CFG_INT, "0", false, 0, 32, OFF(topic_min_insync),
     "min.insync.replicas of topics factord creates (an acks=all write needs that many copies); 0: replication - 1, at least 1"},
    {"FACTORD_BATCH_MAX", ES_CFG_INT, "1000", false, 1, 100000, OFF(batch_max),
     "Most commands the processor decides in one transaction"},
    {"FACTORD_PROJECTOR_BATCH_MAX", ES_CFG_INT, "2000", false, 1, 100000, OFF(projector_batch_max),
     "Most events the projector applies in one transaction (it holds two such batches: one decoded while the other applies)"},
    {"FACTORD_PROJECTOR_SPLIT_MIN", ES_CFG_INT, "256", false, 0, 100000, OFF(projector_split_min),
     "A projector batch of at least this many events is applied as two halves (by user) on two PostgreSQL connections at once; 0: one connection"},
    /* Not 0: every batch costs each component a transaction and a Kafka
     * round trip, and at 2,000 commands/s batches of one or two kept both
     * cores busy (p50 168 ms); 5 ms batches the same load for p50 21 ms
     * (docs/performance.md). Under a backlog a batch fills at once. */
    {"FACTORD_BATCH_LINGER_MS", ES_CFG_INT, "5", false, 0, 10000, OFF(batch_linger_ms),
     "How long the processor (projector) waits to fill a batch after its first command (event), then takes what is already queued; 0: only what is queued"},
    {"FACTORD_RELAY_BATCH", ES_CFG_INT, "2000", false, 1, 1000000, OFF(relay_batch),
     "Most rows the relay publishes per checkpoint"},
    {"FACTORD_RELAY_IDLE_MS", ES_CFG_INT, "500", false, 1, 60000, OFF(relay_idle_ms),
     "Longest the relay waits for a commit notification when there is nothing to publish; a safety net: commits wake it at once"},
    {"FACTORD_DLQ_MAX_BYTES", ES_CFG_INT, "900000", false, 1024, 100000000, OFF(dlq_max_bytes),
     "Largest record copied whole to the dead-letter topic; longer ones are truncated (header factord-truncated-from)"},
    {"FACTORD_SESSION_TIMEOUT_MS", ES_CFG_INT, "10000", false, 1000, 3600000, OFF(session_timeout_ms),
     "Kafka consumer group session timeout"},
    {"FACTORD_GROUP_INSTANCE_ID", ES_CFG_STRING, NULL, false, 0, 0, OFF(group_instance_id),
     "Static group membership: a stable id per process (e.g. process-1), unique within its group; a restart within the session timeout takes its partitions back without a rebalance"},
    {"FACTORD_PARTITION_ASSIGNMENT", ES_CFG_STRING, "range,roundrobin", false, 0, 0, OFF(partition_assignment),
     "Consumer partition.assignment.strategy: range,roundrobin (eager) or cooperative-sticky (incremental: a rebalance moves only the partitions that change owner); every member of a group must use the same kind"},
    {"FACTORD_CODE_KEY", ES_CFG_STRING, NULL, true, 0, 0, OFF(code_key),
     "Phone-code encryption key: 64 hex digits (AES-256-GCM); required by the processor and the projector unless FACTORD_CODE_KEY_FILE is set"},
    {"FACTORD_CODE_KEY_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(code_key_file),
     "File holding the phone-code key (64 hex digits)"},
    {"FACTORD_CHAIN_KEY", ES_CFG_STRING, NULL, true, 0, 0, OFF(chain_key),
     "Key of the event log's hash chain: 64 hex digits (HMAC-SHA256; docs/audit.md); unset: the public key `factord-chain-v1`, which catches only accidental or naive edits"},
    {"FACTORD_CHAIN_KEY_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(chain_key_file),
     "File holding the chain key (64 hex digits)"},
    {"FACTORD_PII_KEY", ES_CFG_STRING, NULL, true, 0, 0, OFF(pii_key),
     "Master key of personal data in the log: 64 hex digits (AES-256-GCM; wraps every user's data key, docs/pii.md); unset: personal data is written in clear"},
    {"FACTORD_PII_KEY_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(pii_key_file),
     "File holding the personal-data master key (64 hex digits)"},
    {"FACTORD_CODE_TTL_S", ES_CFG_INT, "3600", false, 1, 604800, OFF(code_ttl_s),
     "Lifetime of a phone verification code, seconds"},
    {"FACTORD_CODE_LENGTH", ES_CFG_INT, "6", false, 4, 12, OFF(code_length),
     "Digits in a phone verification code"},
    {"FACTORD_OTP_SMS_CODE_TTL_S", ES_CFG_INT, "300", false, 1, 86400, OFF(otp_sms_code_ttl_s),
     "Lifetime of an OTP-SMS sign-in code (ChallengeOTPSMS), seconds"},
    {"FACTORD_OTP_SMS_CODE_LENGTH", ES_CFG_INT, "8", false, 4, 12, OFF(otp_sms_code_length),
     "Digits in an OTP-SMS sign-in code"},
    {"FACTORD_LOCKOUT_MAX_OTP_ATTEMPTS", ES_CFG_INT, "5", false, 0, 1000, OFF(lockout_max_otp_attempts),
     "Lockout policy: failed OTP-SMS checks in a row that lock the user (user.locked); 0 never locks"},
    {"FACTORD_NOTIFY_GROUP", ES_CFG_STRING, "factord-notify", false, 0, 0, OFF(notify_group),
     "Consumer group of `factord notify` on the events topic"},
    {"FACTORD_NOTIFY_MAX_ATTEMPTS", ES_CFG_INT, "6", false, 1, 100, OFF(notify_max_attempts),
     "Tries per code before the notifier records it as not delivered (temporary provider failures only)"},
    {"FACTORD_NOTIFY_RETRY_FIRST_MS", ES_CFG_INT, "500", false, 1, 600000, OFF(notify_retry_first_ms),
     "First retry delay after a temporary provider failure; doubled on each further try"},
    {"FACTORD_NOTIFY_RETRY_MAX_MS", ES_CFG_INT, "30000", false, 1, 3600000, OFF(notify_retry_max_ms),
     "Longest retry delay, also the cap on a provider's Retry-After"},
    {"FACTORD_NOTIFY_RATE_LIMIT", ES_CFG_INT, "5", false, 0, 1000000, OFF(notify_rate_limit),
     "Codes sent to one user per FACTORD_NOTIFY_RATE_WINDOW_S (against SMS pumping); further codes are recorded as not delivered; 0: no limit"},
    {"FACTORD_NOTIFY_RATE_WINDOW_S", ES_CFG_INT, "3600", false, 1, 604800, OFF(notify_rate_window_s),
     "Window of the per-user rate limit, seconds"},
    {"FACTORD_NOTIFY_OTP_TEMPLATE", ES_CFG_STRING, "{{.OTP}} is your one-time password. Use it within the next {{.Expiry}}.", false, 0, 0, OFF(notify_otp_template),
     "Text of an OTP-SMS sign-in code; placeholders {{.OTP}} (or {{.Code}}) and {{.Expiry}}"},
    {"FACTORD_NOTIFY_PHONE_TEMPLATE", ES_CFG_STRING, "{{.Code}} is your phone verification code. Use it within the next {{.Expiry}}.", false, 0, 0, OFF(notify_phone_template),
     "Text of a phone verification code; placeholders {{.Code}} and {{.Expiry}}"},
    {"FACTORD_LOG_LEVEL", ES_CFG_STRING, "info", false, 0, 0, OFF(log_level),
     "Lowest log level written: debug, info, warn, error"},
    {"FACTORD_JWKS_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(jwks_file),
     "JWKS file with the public keys (RS256, ES256) the gateway accepts tokens from; unset: the development key in FACTORD_STATE_DIR (`factord token`)"},
    {"FACTORD_JWKS_REFRESH_S", ES_CFG_INT, "300", false, 0, 86400, OFF(jwks_refresh_s),
     "Seconds between re-reads of FACTORD_JWKS_FILE (0: only when a token names an unknown kid, at most one re-read every 5 s)"},
    {"FACTORD_TOKEN_ISSUER", ES_CFG_STRING, NULL, false, 0, 0, OFF(token_issuer),
     "Issuer (iss) the gateway requires in tokens; required with FACTORD_JWKS_FILE, else `factord-dev`"},
    {"FACTORD_TOKEN_AUDIENCE", ES_CFG_STRING, NULL, false, 0, 0, OFF(token_audience),
     "Audience (aud) the gateway requires in tokens; required with FACTORD_JWKS_FILE, else `factord`"},
    {"FACTORD_TOKEN_LEEWAY_S", ES_CFG_INT, "30", false, 0, 600, OFF(token_leeway_s),
     "Clock skew allowed on a token's exp, nbf and iat, seconds"},
    {"FACTORD_HOST_MAP", ES_CFG_STRING, NULL, false, 0, 0, OFF(host_map),
     "Instance by request Host for the gateway: host[:port]=instance,...; unset: every request is for FACTORD_INSTANCE_ID"},
    {"FACTORD_SESSION_CALLERS", ES_CFG_STRING, NULL, false, 0, 0, OFF(session_callers),
     "Token subjects (sub) allowed to use the session API (/v2/sessions), comma-separated: the login service's accounts; unset: nobody"},
    {"FACTORD_GATEWAY_REPLIES_TOPIC", ES_CFG_STRING, "factord.replies.gateway", false, 0, 0,
     OFF(gateway_replies_topic), "Reply topic of the gateway's commands (replyTo; key = command id)"},
    {"FACTORD_GATEWAY_TIMEOUT_MS", ES_CFG_INT, "10000", false, 100, 600000, OFF(gateway_timeout_ms),
     "How long the gateway waits for a command's reply before answering 504"},
    {"FACTORD_HTTP_THREADS", ES_CFG_INT, "2", false, 1, 64, OFF(http_threads),
     "Threads serving HTTP connections (waiting for a reply holds no thread)"},
    {"FACTORD_HTTP_MAX_CONNECTIONS", ES_CFG_INT, "512", false, 1, 100000, OFF(http_max_connections),
     "Most HTTP connections the gateway keeps open at once"},
    {"FACTORD_HTTP_MAX_BODY_BYTES", ES_CFG_INT, "16384", false, 256, 1048576, OFF(http_max_body_bytes),
     "Largest request body the gateway reads; larger ones get 413"},
    {"FACTORD_HTTP_IDLE_TIMEOUT_S", ES_CFG_INT, "60", false, 1, 3600, OFF(http_idle_timeout_s),
     "Seconds after which an idle HTTP connection is closed"},
    /* SMS providers (infra/sms/sms.h, docs/notifier.md): checked when a
     * provider is created, so components that send no SMS ignore them. */
    {"FACTORD_SMS_PROVIDER", ES_CFG_STRING, "none", false, 0, 0, OFF(sms_provider),
     "SMS provider of the notifier: none (the notifier refuses to start), twilio or webhook"},
    {"FACTORD_SMS_TWILIO_URL", ES_CFG_STRING, "https://api.twilio.com", false, 0, 0, OFF(sms_twilio_url),
     "Base URL of Twilio's REST API (http or https)"},
    {"FACTORD_SMS_TWILIO_ACCOUNT_SID", ES_CFG_STRING, NULL, false, 0, 0, OFF(sms_twilio_account_sid),
     "Twilio Account SID (AC...); required with twilio"},
    {"FACTORD_SMS_TWILIO_AUTH_TOKEN", ES_CFG_STRING, NULL, true, 0, 0, OFF(sms_twilio_auth_token),
     "Twilio Auth Token; required with twilio unless FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE is set"},
    {"FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE", ES_CFG_STRING, NULL, false, 0, 0, OFF(sms_twilio_auth_token_file),
     "File holding the Twilio Auth Token (keeps it out of the environment)"},
    {"FACTORD_SMS_TWILIO_FROM", ES_CFG_STRING, NULL, false, 0, 0, OFF(sms_twilio_from),
     "Twilio sender: an E.164 number (sent as From) or a Messaging Service SID MG... (sent as MessagingServiceSid); required with twilio"},
    {"FACTORD_SMS_WEBHOOK_URL", ES_CFG_STRING, NULL, true, 0, 0, OFF(sms_webhook_url),
     "URL the webhook provider POSTs each SMS to as JSON (http or https; it may carry a token); required with webhook"},
    {"FACTORD_SMS_SENDER", ES_CFG_STRING, NULL, false, 0, 0, OFF(sms_sender),
     "Sender number the webhook provider passes on (contextInfo.senderPhoneNumber)"},
    {"FACTORD_SMS_TIMEOUT_MS", ES_CFG_INT, "10000", false, 100, 120000, OFF(sms_timeout_ms),
     "Longest one SMS request may take, connection included; a timeout is retried"},
};
const size_t es_config_table_len = sizeof es_config_table / sizeof es_config_table[0];

static void append(es_error *err, const char *line)
{
    size_t used = strlen(err->text);
    snprintf(err->text + used, sizeof err->text - used, "%s%s", used ? "\n" : "", line);
}

es_result es_config_load(es_config *cfg, es_getenv_fn getenv_fn, es_error *err)
{
    es_error local = {0};
    memset(cfg, 0, sizeof *cfg);
    int problems = 0;
    for (size_t i = 0; i < es_config_table_len; i++) {
        const es_cfg_entry *e = &es_config_table[i];
        const char *v = getenv_fn(e->name);
        if (v && !*v)
            v = NULL; /* empty = unset, as shells make it easy to export X= */
        if (!v)
            v = e->def;
        char *base = (char *)cfg + e->offset;
        if (e->type == ES_CFG_STRING) {
            *(char **)base = v ? strdup(v) : NULL;
            continue;
        }
        char *end = NULL;
        errno = 0;
        long long n = v ? strtoll(v, &end, 10) : 0;
        if (!v || errno || end == v || *end || n < e->min || n > e->max) {
            char line[256];
            snprintf(line, sizeof line, "%s: expected a whole number from %lld to %lld, got \"%.40s\"",
                     e->name, (long long)e->min, (long long)e->max, v ? v : "");
            append(&local, line);
            problems++;
            continue;
        }
        *(int64_t *)base = n;
    }
    if (problems) {
        if (err)
            *err = local;
        es_config_free(cfg);
        return ES_EINVAL;
    }
    return ES_OK;
}

void es_config_free(es_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < es_config_table_len; i++)
        if (es_config_table[i].type == ES_CFG_STRING) {
            char **p = (char **)((char *)cfg + es_config_table[i].offset);
            free(*p);
            *p = NULL;
        }
}


es_result es_key_from_hex(const char *text, const char *what, unsigned char key[32], es_error *err)
{
    while (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r')
        text++;
    size_t n = strlen(text);
    while (n && (text[n - 1] == ' ' || text[n - 1] == '\t' || text[n - 1] == '\n' || text[n - 1] == '\r'))
        n--;
    if (n != 64)
        return es_error_set(err, ES_EINVAL, "%s: expected 64 hex digits, got %zu characters", what, n);
    for (size_t i = 0; i < 32; i++) {
        int hi = es_hex_value((unsigned char)text[2 * i]), lo = es_hex_value((unsigned char)text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return es_error_set(err, ES_EINVAL, "%s: not hexadecimal", what);
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    return ES_OK;
}

es_result es_key_from_file(const char *path, const char *what, unsigned char key[32], es_error *err)
{
    char buf[160] = {0};
    FILE *f = fopen(path, "r");
    if (!f)
        return es_error_set(err, ES_EINVAL, "%s: cannot open %.200s: %s", what, path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    es_result rc = es_key_from_hex(buf, what, key, err);
    explicit_bzero(buf, sizeof buf);
    return rc;
}

es_result es_config_code_key(const es_config *cfg, unsigned char key[32], es_error *err)
{
    if (cfg->code_key)
        return es_key_from_hex(cfg->code_key, "FACTORD_CODE_KEY", key, err);
    if (cfg->code_key_file)
        return es_key_from_file(cfg->code_key_file, "FACTORD_CODE_KEY_FILE", key, err);
    return es_error_set(err, ES_EINVAL,
                        "no phone-code key: set FACTORD_CODE_KEY or FACTORD_CODE_KEY_FILE "
                        "(64 hex digits, e.g. from `openssl rand -hex 32`)");
}

void es_config_print_markdown(void)
{
    printf("| variable | default | description |\n|---|---|---|\n");
    for (size_t i = 0; i < es_config_table_len; i++) {
        const es_cfg_entry *e = &es_config_table[i];
        printf("| `%s` | %s%s%s | %s%s |\n", e->name, e->def ? "`" : "", e->def ? e->def : "unset",
               e->def ? "`" : "", e->description, e->secret ? " (secret)" : "");
    }
}
