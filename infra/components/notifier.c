/*
 * infra/components/notifier.c - the notifier loop (infra/components/notifier.h).
 */
#include "infra/components/notifier.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/notification.h"
#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"
#include "infra/kafka/consumer.h"
#include "infra/kafka/kafka.h"
#include "infra/pg/deliveries.h"
#include "infra/pg/store.h"

/* The schema the notifier needs: factord.code_deliveries (0013). */
#define NOTIFY_MIN_SCHEMA 13
#define NOTIFY_CREATOR "factord-notify"
#define RECORD_FLUSH_MS 10000

typedef struct {
    const es_notifier_opts *o;
    const es_stop_flag *stop;
    es_store *st;
    es_producer *prod;
    es_notifier_stats *stats;
    const dom_evt *evt;      /* the code event being handled */
    bool stopped;            /* a stop came in the middle of the retries */
} notifier;

static int64_t now_us(const notifier *n)
{
    return n->o->now_us ? n->o->now_us() : es_clock_now_us();
}

/* --- recording ----------------------------------------------------------------- */

/* Put the RecordCodeDelivery command of the event on the commands topic
 * (acknowledged), then note that in the row. */
static es_result record(notifier *n, const es_delivery *row, es_error *err)
{
    const dom_evt *e = n->evt;
    dom_delivery d;
    memset(&d, 0, sizeof d);
    d.sent = row->state == ES_DELIVERY_SENT;
    snprintf(d.provider, sizeof d.provider, "%s", row->provider);
    snprintf(d.message_id, sizeof d.message_id, "%s", row->message_id);
    snprintf(d.reason, sizeof d.reason, "%s", row->reason);
    dom_cmd cmd;
    dom_delivery_command(e, &d, NOTIFY_CREATOR, &cmd);
    json_t *j = dom_cmd_to_json(&cmd, false);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return es_error_set(err, ES_EFATAL, "notify: out of memory");
    size_t failed = 0;
    es_result rc = es_producer_send(n->prod, n->o->commands_topic, cmd.user_id, strlen(cmd.user_id), text,
                                    strlen(text), NULL, err);
    free(text);
    if (rc == ES_OK)
        rc = es_producer_flush(n->prod, RECORD_FLUSH_MS, &failed, err);
    if (rc == ES_OK && failed)
        rc = es_error_set(err, ES_ETRANSIENT, "notify: the RecordCodeDelivery command was not delivered");
    if (rc == ES_EFATAL) {
        es_error rerr = {0};
        if (es_producer_recreate(n->prod, &rerr) == ES_OK)
            rc = ES_ETRANSIENT;
    }
    if (rc != ES_OK)
        return rc == ES_EINVAL ? ES_EFATAL : rc;
    rc = es_delivery_mark_recorded(n->st, e->instance_id, e->aggregate_id, e->sequence, err);
    if (rc == ES_OK)
        n->stats->recorded++;
    return rc;
}

/* Write the final state, then record it. */
static es_result finish(notifier *n, es_delivery_state state, const char *message_id, const char *reason,
                        es_error *err)
{
    const dom_evt *e = n->evt;
    dom_code_kind kind = dom_code_kind_of(e->type);
    es_result rc = es_delivery_finish(n->st, e->instance_id, e->aggregate_id, e->sequence, kind, state,
                                      n->o->provider, message_id, reason, err);
    if (rc != ES_OK)
        return rc;
    const char *kind_name = dom_code_kind_name(kind);
    const char *seq = es_log_i64(e->sequence);
    if (state == ES_DELIVERY_SKIPPED) {
        n->stats->skipped++;
        es_info("code not sent", "instance", e->instance_id, "user", e->aggregate_id, "code", kind_name,
                "code_sequence", seq, "reason", reason);
        return ES_OK; /* nothing to record: a newer code is the one that counts */
    }
    if (state == ES_DELIVERY_SENT) {
        n->stats->sent++;
        es_info("code sent", "instance", e->instance_id, "user", e->aggregate_id, "code", kind_name,
                "code_sequence", seq, "provider", n->o->provider, "message_id", message_id);
    } else {
        n->stats->failed++;
        es_warn("code not delivered", "instance", e->instance_id, "user", e->aggregate_id, "code", kind_name,
                "code_sequence", seq, "provider", n->o->provider, "reason", reason);
    }
    /* A crash here leaves a decided row without its record: the next run
     * records it and sends nothing. */
    es_failpoint("notify.before_record");
    es_delivery row;
    memset(&row, 0, sizeof row);
    row.state = state;
    snprintf(row.provider, sizeof row.provider, "%s", n->o->provider);
    snprintf(row.message_id, sizeof row.message_id, "%s", message_id ? message_id : "");
    snprintf(row.reason, sizeof row.reason, "%s", reason ? reason : "");
    return record(n, &row, err);
}

/* --- sending ------------------------------------------------------------------- */

static int64_t retry_delay_ms(const es_notifier_opts *o, int attempts, int64_t retry_after_s)
{
    int64_t d = o->retry_first_ms > 0 ? o->retry_first_ms : 500;
    for (int i = 1; i < attempts && d < o->retry_max_ms; i++)
        d *= 2;
    if (retry_after_s > 0 && retry_after_s * 1000 > d)
        d = retry_after_s * 1000;
    return d > o->retry_max_ms ? o->retry_max_ms : d;
}

/* Try (and retry) one code whose row is NONE or SENDING. */
/* One request to the provider into the metrics (docs/metrics.md). */
static void count_send(const char *provider, es_send_kind kind)
{
    const char *outcome = kind == ES_SEND_SENT ? "sent" : kind == ES_SEND_RETRY ? "retry" : "refused";
    char labels[128];
    es_metrics_labels(labels, sizeof labels, "provider", provider, "outcome", outcome, NULL);
    es_metric_inc(es_metrics_counter("factord_sms_sends_total",
                                     "Requests to the SMS provider, by provider and outcome (sent; retry: a "
                                     "temporary failure, tried again; refused: a permanent refusal)",
                                     labels));
}

static es_result send_code(notifier *n, const es_delivery *row, const char *to, es_error *err)
{
    const es_notifier_opts *o = n->o;
    const dom_evt *e = n->evt;
    dom_code_kind kind = dom_code_kind_of(e->type);
    char code[DOM_CODE_MAX * 2] = "", body[DOM_SMS_MAX] = "", key[DOM_UUID_LEN + 1];
    es_error derr = {0};
    es_result rc;

    if (es_code_decrypt(o->code_key, e->instance_id, e->aggregate_id, e->code_enc, code, sizeof code, &derr) !=
        ES_OK) {
        char reason[DOM_REASON_MAX];
        snprintf(reason, sizeof reason, "the code does not decrypt: %.120s", derr.text);
        return finish(n, ES_DELIVERY_FAILED, "", reason, err);
    }
    int64_t ttl_s = e->code_expires_at_us ? (e->code_expires_at_us - e->created_at_us) / 1000000 : 0;
    rc = dom_sms_render(kind == DOM_CODE_OTP_SMS ? o->otp_template : o->phone_template, code, ttl_s, body,
                        sizeof body, &derr);
    explicit_bzero(code, sizeof code);
    if (rc != ES_OK)
        return finish(n, ES_DELIVERY_FAILED, "", derr.text, err);
    dom_delivery_key(e, key);

    int attempts = row->attempts;
    char last[DOM_REASON_MAX] = "";
    for (;;) {
        if (attempts >= o->max_attempts) {
            char reason[DOM_REASON_MAX];
            snprintf(reason, sizeof reason, "gave up after %d attempts: %.150s", attempts, last);
            rc = finish(n, ES_DELIVERY_FAILED, "", reason, err);
            break;
        }
        if ((rc = es_delivery_begin(n->st, e->instance_id, e->aggregate_id, e->sequence, kind, o->provider,
                                    &attempts, err)) != ES_OK)
            break;
        es_send_outcome out;
        memset(&out, 0, sizeof out);
        o->send(o->send_ctx, to, body, key, e, &out);
        count_send(o->provider, out.kind);
        if (out.kind == ES_SEND_SENT) {
            /* A crash here is the one that sends again (the row says
             * sending): docs/notifier.md. */
            es_failpoint("notify.after_send");
            rc = finish(n, ES_DELIVERY_SENT, out.message_id, "", err);
            break;
        }
        if (out.kind != ES_SEND_RETRY) {
            rc = finish(n, ES_DELIVERY_FAILED, "", out.reason[0] ? out.reason : "refused by the provider", err);
            break;
        }
        snprintf(last, sizeof last, "%s", out.reason[0] ? out.reason : "temporary failure");
        int64_t wait = retry_delay_ms(o, attempts, out.retry_after_s);
        if (e->code_expires_at_us && now_us(n) + wait * 1000 > e->code_expires_at_us) {
            char reason[DOM_REASON_MAX];
            snprintf(reason, sizeof reason, "expired before the provider took it: %.150s", last);
            rc = finish(n, ES_DELIVERY_FAILED, "", reason, err);
            break;
        }
        if (attempts < o->max_attempts) {
            n->stats->retries++;
            es_warn("SMS provider failed, retrying", "instance", e->instance_id, "user", e->aggregate_id,
                    "code_sequence", es_log_i64(e->sequence), "attempt", es_log_i64(attempts), "reason", last,
                    "retry_ms", es_log_i64(wait));
            if (!es_sleep_unless_stopped(wait, n->stop)) {
                n->stopped = true; /* the row stays sending: the next run tries again */
                rc = ES_OK;
                break;
            }
        }
    }
    explicit_bzero(body, sizeof body);
    return rc;
}

/* --- one event ------------------------------------------------------------------ */

static es_result handle(void *ctx, es_error *err)
{
    notifier *n = ctx;
    const es_notifier_opts *o = n->o;
    const dom_evt *e = n->evt;
    dom_code_kind kind = dom_code_kind_of(e->type);
    es_delivery row;
    es_result rc;

    if ((rc = es_delivery_get(n->st, e->instance_id, e->aggregate_id, e->sequence, &row, err)) != ES_OK)
        return rc;
    switch (row.state) {
    case ES_DELIVERY_SENT:
    case ES_DELIVERY_FAILED:
        /* Decided before a crash or a rebalance: only the record may be missing. */
        return row.recorded ? ES_OK : record(n, &row, err);
    case ES_DELIVERY_SKIPPED:
        return ES_OK;
    default:
        break;
    }

    bool current = false;
    char to[DOM_PHONE_MAX] = "";
    if ((rc = es_delivery_target(n->st, e->instance_id, e->aggregate_id, kind, e->code_enc, &current, to,
                                 sizeof to, err)) != ES_OK)
        return rc;
    if (!current)
        return finish(n, ES_DELIVERY_SKIPPED, "", "not the pending code any more", err);
    if (e->code_expires_at_us && now_us(n) > e->code_expires_at_us)
        return finish(n, ES_DELIVERY_FAILED, "", "expired before it could be sent", err);
    if (row.state == ES_DELIVERY_NONE && o->rate_limit > 0) {
        long recent = 0;
        if ((rc = es_delivery_recent(n->st, e->instance_id, e->aggregate_id, e->sequence, o->rate_window_s,
                                     &recent, err)) != ES_OK)
            return rc;
        if (recent >= o->rate_limit) {
            char reason[DOM_REASON_MAX];
            snprintf(reason, sizeof reason, "rate limited: %ld codes to this user in the last %" PRId64 " s",
                     recent, o->rate_window_s);
            return finish(n, ES_DELIVERY_FAILED, "", reason, err);
        }
    }
    return send_code(n, &row, to, err);
}

static es_result reconnect(void *ctx, es_error *err)
{
    notifier *n = ctx;
    return es_store_connected(n->st) ? ES_OK : es_store_reset(n->st, err);
}

/* --- the loop ------------------------------------------------------------------- */

static es_result check_opts(const es_notifier_opts *o, es_error *err)
{
    es_error terr = {0};
    if (!o->send || !o->code_key || !o->events_topic || !o->commands_topic || !o->group || !o->provider)
        return es_error_set(err, ES_EINVAL, "notify: incomplete options");
    if (o->max_attempts < 1 || o->retry_max_ms < 1 || o->rate_limit < 0 || o->rate_window_s < 1)
        return es_error_set(err, ES_EINVAL, "notify: attempts, retry cap and rate window must be positive");
    if (dom_sms_template_check(o->otp_template, &terr) != ES_OK)
        return es_error_set(err, ES_EINVAL, "FACTORD_NOTIFY_OTP_TEMPLATE: %s", terr.text);
    if (dom_sms_template_check(o->phone_template, &terr) != ES_OK)
        return es_error_set(err, ES_EINVAL, "FACTORD_NOTIFY_PHONE_TEMPLATE: %s", terr.text);
    return ES_OK;
}

es_result es_notifier_run(const es_notifier_opts *o, const es_stop_flag *stop, es_notifier_stats *stats,
                          es_error *err)
{
    es_result rc = check_opts(o, err);
    if (rc != ES_OK)
        return rc;
    memset(stats, 0, sizeof *stats);
    notifier n = {.o = o, .stop = stop, .stats = stats};
    es_consumer *c = NULL;

    rc = es_store_connect(o->database_url, NOTIFY_MIN_SCHEMA, stop, &n.st, err);
    if (rc == ES_OK)
        rc = es_producer_new(o->brokers, "factord-notify", &n.prod, err);
    if (rc == ES_OK) {
        es_consumer_opts co = {.group = o->group, .session_timeout_ms = o->session_timeout_ms};
        const char *topics[] = {o->events_topic};
        rc = es_consumer_new(o->brokers, &co, topics, 1, &c, err);
    }
    if (rc != ES_OK) {
        es_producer_free(n.prod);
        es_store_free(n.st);
        return rc == ES_ETRANSIENT && es_stopping(stop) ? ES_OK : rc;
    }
    es_info("notifier started", "group", o->group, "events_topic", o->events_topic, "provider", o->provider);

    es_retry retry = {.what = "PostgreSQL or Kafka unavailable, retrying the code event",
                      .gave_up = "stopping with a code event unfinished; the next run takes it again",
                      .attempt = handle,
                      .before_retry = reconnect,
                      .ctx = &n};
    while (!es_stopping(stop)) {
        es_record rec;
        es_kafka_msg *m = es_consumer_next(c, 0, 0, &rec);
        if (!m)
            continue;
        dom_evt evt;
        es_error derr = {0};
        if (dom_evt_decode(rec.value, rec.value_len, &evt, &derr) != ES_OK) {
            es_warn("events topic: a record that is not an event; skipped", "partition",
                    es_log_i64(rec.partition), "offset", es_log_i64(rec.offset), "reason", derr.text);
        } else if (dom_code_kind_of(evt.type) != DOM_CODE_NONE) {
            n.evt = &evt;
            n.stopped = false;
            rc = es_retry_run(&retry, stop, err);
            explicit_bzero(evt.code_enc, sizeof evt.code_enc);
            if (rc != ES_OK || n.stopped) {
                es_kafka_msg_free(m);
                break; /* not stored: read again next time */
            }
        }
        es_consumer_store_records(c, &rec, 1);
        es_kafka_msg_free(m);
    }
    es_info("notifier stopped", "sent", es_log_i64((long long)stats->sent), "failed",
            es_log_i64((long long)stats->failed), "skipped", es_log_i64((long long)stats->skipped), "retries",
            es_log_i64((long long)stats->retries));
    es_consumer_free(c);
    es_producer_free(n.prod);
    es_store_free(n.st);
    return rc == ES_ETRANSIENT && es_stopping(stop) ? ES_OK : rc;
}
