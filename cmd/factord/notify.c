/*
 * cmd/factord/notify.c - `factord notify`: send every phone code and
 * OTP-SMS code through the configured SMS provider.
 *
 * Wiring only: the code key, the provider (infra/sms, FACTORD_SMS_*), the
 * topics, then es_notifier_run (infra/components/notifier.c), with a send
 * callback that adapts the provider's outcome. A configuration problem
 * (no provider, a bad template, no key) exits 2 and names the setting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/log.h"
#include "infra/components/notifier.h"
#include "infra/crypto/codecrypt.h"
#include "infra/sms/sms.h"

int fd_notify_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "notify", fd_notify_loop);
}

/* The notifier's send callback over an es_sms_provider. */
static void send_sms(void *ctx, const char *to, const char *body, const char *key, const dom_evt *evt,
                     es_send_outcome *out)
{
    es_sms_msg m = {.to = to,
                    .body = body,
                    .idempotency_key = key,
                    .instance_id = evt->instance_id,
                    .user_id = evt->aggregate_id,
                    .event_type = dom_evt_type_name(evt->type)};
    es_sms_outcome r;
    memset(&r, 0, sizeof r);
    es_sms_status s = es_sms_send(ctx, &m, &r);
    out->kind = s == ES_SMS_SENT ? ES_SEND_SENT : s == ES_SMS_RETRY ? ES_SEND_RETRY : ES_SEND_PERMANENT;
    out->http_status = (int)r.http_status;
    out->retry_after_s = r.retry_after_s > 0 ? r.retry_after_s : 0;
    snprintf(out->message_id, sizeof out->message_id, "%s", r.message_id);
    snprintf(out->reason, sizeof out->reason, "%.*s", (int)sizeof out->reason - 1, r.reason);
}

int fd_notify_loop(const es_config *cfgp)
{
    const es_config cfg = *cfgp; /* borrowed strings; never freed here */
    es_log_set_component("notify");
    es_error err = {0};
    unsigned char keybytes[32];
    es_codekey ck;
    es_sms_provider *sms = NULL;

    if (es_config_code_key(&cfg, keybytes, &err) != ES_OK) {
        es_err("cannot start the notifier", "error", err.text);
        return 2;
    }
    es_codekey_init(&ck, keybytes);
    explicit_bzero(keybytes, sizeof keybytes);
    if (es_sms_provider_new(&cfg, &sms, &err) != ES_OK) {
        es_err("cannot start the notifier", "error", err.text);
        return 2;
    }
    if (es_sms_provider_kind(sms) == ES_SMS_NONE) {
        es_err("cannot start the notifier",
               "error", "FACTORD_SMS_PROVIDER: none configured; set twilio or webhook (docs/notifier.md)");
        es_sms_provider_free(sms);
        return 2;
    }
    const char *topics[] = {cfg.events_topic, cfg.commands_topic};
    es_result trc = fd_ensure_topics(&cfg, topics, 2);
    if (trc != ES_OK) {
        es_sms_provider_free(sms);
        return trc == ES_ETRANSIENT ? 0 : 2;
    }
    es_notifier_opts o = {.database_url = cfg.database_url,
                          .brokers = cfg.kafka_brokers,
                          .events_topic = cfg.events_topic,
                          .commands_topic = cfg.commands_topic,
                          .group = cfg.notify_group,
                          .session_timeout_ms = (int)cfg.session_timeout_ms,
                          .provider = es_sms_kind_name(es_sms_provider_kind(sms)),
                          .code_key = &ck,
                          .phone_template = cfg.notify_phone_template,
                          .otp_template = cfg.notify_otp_template,
                          .max_attempts = (int)cfg.notify_max_attempts,
                          .retry_first_ms = cfg.notify_retry_first_ms,
                          .retry_max_ms = cfg.notify_retry_max_ms,
                          .rate_limit = (long)cfg.notify_rate_limit,
                          .rate_window_s = cfg.notify_rate_window_s,
                          .send = send_sms,
                          .send_ctx = sms};
    es_notifier_stats stats;
    es_result rc = es_notifier_run(&o, &fd_stop, &stats, &err);
    if (rc != ES_OK)
        es_err("notifier failed", "error", err.text);
    es_sms_provider_free(sms);
    explicit_bzero(&ck, sizeof ck);
    return rc == ES_OK ? 0 : rc == ES_EINVAL ? 2 : 1;
}
