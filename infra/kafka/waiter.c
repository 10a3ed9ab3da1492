/*
 * infra/kafka/waiter.c - wait for one record by key (see waiter.h).
 *
 * The consumer needs a group.id for rd_kafka_assign, but never joins that
 * group: partitions are assigned by hand at explicit offsets, auto-commit
 * and offset storing are off, and the handle is destroyed without a
 * consumer close. Errors go to an error callback rather than the log, so
 * that a short-lived tool can say "cannot reach Kafka" once, clearly,
 * instead of librdkafka repeating it.
 */
#include "infra/kafka/waiter.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"

struct es_waiter {
    rd_kafka_t *rk;
    char *brokers;
    char *topic;
    bool all_down;          /* every broker down since the last success */
    bool fatal;
    char last_error[256];   /* the last error librdkafka reported, for messages */
};

static void error_cb(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    (void)rk;
    es_waiter *w = opaque;
    rd_kafka_resp_err_t e = (rd_kafka_resp_err_t)code;
    /* "1/1 brokers are down" says less than the failure before it
     * ("Connect to ... failed: Connection refused"): keep the cause. */
    if (e != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || !w->last_error[0])
        snprintf(w->last_error, sizeof w->last_error, "%s", reason ? reason : rd_kafka_err2str(e));
    if (e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        w->all_down = true;
    if (e == RD_KAFKA_RESP_ERR__FATAL)
        w->fatal = true;
    es_debug("kafka error", "lib", "rdkafka", "error", reason ? reason : rd_kafka_err2str(e));
}

/* As infra/kafka/kafka.c routes librdkafka's logs, except the per-attempt
 * connection failures (facility FAIL): they reach error_cb as well, and
 * the waiter reports them once, with their cause, instead of librdkafka
 * repeating them on stderr. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    es_log_level lvl = strcmp(fac, "FAIL") == 0 ? ES_LOG_DEBUG
                     : level <= 3             ? ES_LOG_ERROR
                     : level == 4             ? ES_LOG_WARN
                     : level <= 6             ? ES_LOG_INFO
                                              : ES_LOG_DEBUG;
    es_log(lvl, buf, "lib", "rdkafka", "facility", fac, (const char *)NULL);
}

static int64_t left_ms(int64_t deadline_ms)
{
    int64_t left = deadline_ms - es_clock_mono_ms();
    return left > 0 ? left : 0;
}

static int slice_ms(int64_t deadline_ms, int cap)
{
    int64_t left = left_ms(deadline_ms);
    return left < cap ? (int)left : cap;
}

/* Serve queued callbacks (errors, logs) without waiting. Before the
 * assignment nothing else can come out of the consumer queue. */
static void serve(rd_kafka_t *rk)
{
    rd_kafka_message_t *m;
    while ((m = rd_kafka_consumer_poll(rk, 0)) != NULL)
        rd_kafka_message_destroy(m);
}

static es_result unreachable(const es_waiter *w, es_error *err)
{
    return es_error_set(err, ES_ETRANSIENT, "cannot reach Kafka at %s: %s", w->brokers,
                        w->last_error[0] ? w->last_error : "no broker answers");
}

/* The topic's partition count, creating the topic when it is missing.
 * Returns ES_OK with *count > 0. */
static es_result partitions_of(es_waiter *w, int create_partitions, int64_t deadline_ms, int *count,
                               es_error *err)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(w->rk, w->topic, NULL);
    if (!rkt)
        return es_error_set(err, ES_EINVAL, "topic %s: %s", w->topic,
                            rd_kafka_err2str(rd_kafka_last_error()));
    es_result rc = ES_ETRANSIENT;
    bool tried_create = false;
    for (;;) {
        serve(w->rk);
        if (w->fatal) {
            rc = es_error_set(err, ES_EFATAL, "kafka: %s", w->last_error);
            break;
        }
        if (w->all_down) {
            rc = unreachable(w, err);
            break;
        }
        if (left_ms(deadline_ms) == 0) {
            if (w->last_error[0])
                rc = unreachable(w, err);
            else
                rc = es_error_set(err, ES_ETRANSIENT, "no metadata for topic %s from %s in time", w->topic,
                                  w->brokers);
            break;
        }
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(w->rk, 0, rkt, &md, slice_ms(deadline_ms, 500));
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* No broker up yet, or no answer in this slice: the error
             * callback says when every broker is down. */
            es_debug("metadata request failed", "topic", w->topic, "error", rd_kafka_err2str(e));
            continue;
        }
        rd_kafka_resp_err_t terr = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        int n = md->topic_cnt == 1 ? md->topics[0].partition_cnt : 0;
        rd_kafka_metadata_destroy(md);
        w->all_down = false; /* a broker answered */
        if (terr == RD_KAFKA_RESP_ERR_NO_ERROR && n > 0) {
            *count = n;
            rc = ES_OK;
            break;
        }
        if (terr == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || terr == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
            /* Brokers that allow auto-creation have created it on this very
             * request; others need it created explicitly. */
            if (!tried_create) {
                tried_create = true;
                es_error cerr = {0};
                const char *topics[] = {w->topic};
                if (es_kafka_ensure_topics(w->brokers, topics, 1, &(es_topic_spec){.partitions = create_partitions},
                                           slice_ms(deadline_ms, 5000), &cerr) != ES_OK)
                    es_debug("cannot create the topic", "topic", w->topic, "error", cerr.text);
            }
        } else if (terr != RD_KAFKA_RESP_ERR_NO_ERROR && terr != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) {
            /* Not authorised, an invalid name, ...: waiting will not help. */
            rc = es_error_set(err, ES_EFATAL, "topic %s: %s", w->topic, rd_kafka_err2str(terr));
            break;
        }
        /* Just created, or a leader being elected: ask again. */
        es_sleep_ms(slice_ms(deadline_ms, 100));
    }
    rd_kafka_topic_destroy(rkt);
    return rc;
}

es_result es_waiter_new(const char *brokers, const char *topic, int create_partitions, int64_t deadline_ms,
                        es_waiter **out, es_error *err)
{
    char errstr[512];
    es_result rc = ES_EFATAL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    es_waiter *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    w->brokers = strdup(brokers);
    w->topic = strdup(topic);
    if (!w->brokers || !w->topic)
        abort();

    rd_kafka_conf_t *conf = es_kafka_conf(brokers, "factord-waiter", err);
    if (!conf) {
        rc = ES_EINVAL;
        goto out;
    }
    /* The group is never joined: it only enables rd_kafka_assign. */
    if (!es_kafka_conf_set(conf, "group.id", "factord-waiter", err) || !es_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        !es_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        !es_kafka_conf_set(conf, "enable.partition.eof", "false", err) ||
        !es_kafka_conf_set(conf, "allow.auto.create.topics", "true", err) ||
        /* Only on a truncated log: reading too much is harmless (keys are
         * checked), reading too little could miss the record. */
        !es_kafka_conf_set(conf, "auto.offset.reset", "earliest", err)) {
        rd_kafka_conf_destroy(conf);
        rc = ES_EINVAL;
        goto out;
    }
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_opaque(conf, w);
    w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!w->rk) {
        rd_kafka_conf_destroy(conf);
        rc = es_error_set(err, ES_EFATAL, "kafka consumer: %s", errstr);
        goto out;
    }
    rd_kafka_poll_set_consumer(w->rk); /* callbacks are served by consumer_poll */

    int n = 0;
    if ((rc = partitions_of(w, create_partitions, deadline_ms, &n, err)) != ES_OK)
        goto out;
    parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t high = 0;
        for (;;) {
            rd_kafka_resp_err_t e =
                es_kafka_list_offset(w->rk, topic, p, RD_KAFKA_OFFSET_END, slice_ms(deadline_ms, 1000), &high);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            serve(w->rk);
            if (left_ms(deadline_ms) == 0 || w->all_down) {
                rc = w->all_down ? unreachable(w, err)
                                 : es_error_set(err, ES_ETRANSIENT, "end of %s [%d]: %s", topic, p,
                                                rd_kafka_err2str(e));
                goto out;
            }
            es_debug("watermark query failed, retrying", "topic", topic, "partition", es_log_i64(p), "error",
                     rd_kafka_err2str(e));
            es_sleep_ms(slice_ms(deadline_ms, 100));
        }
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = high;
        es_debug("waiting from", "topic", topic, "partition", es_log_i64(p), "offset", es_log_i64(high));
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(w->rk, parts);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rc = es_error_set(err, ES_EFATAL, "assign %s: %s", topic, rd_kafka_err2str(e));
        goto out;
    }
    rc = ES_OK;
out:
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (rc != ES_OK) {
        es_waiter_free(w);
        w = NULL;
    }
    *out = w;
    return rc;
}

es_result es_waiter_wait(es_waiter *w, const void *key, size_t key_len, int64_t deadline_ms,
                         const volatile sig_atomic_t *stop, char **value, size_t *value_len, es_error *err)
{
    *value = NULL;
    *value_len = 0;
    w->last_error[0] = '\0'; /* report only what happens while waiting */
    while (!(stop && *stop)) {
        int64_t left = left_ms(deadline_ms);
        if (left == 0)
            break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->rk, left < 100 ? (int)left : 100);
        if (!m)
            continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                snprintf(w->last_error, sizeof w->last_error, "%s", rd_kafka_message_errstr(m));
                es_debug("consumer error", "topic", w->topic, "error", w->last_error);
            }
            rd_kafka_message_destroy(m);
            continue;
        }
        bool match = m->key_len == key_len && (key_len == 0 || (m->key && memcmp(m->key, key, key_len) == 0));
        if (match) {
            char *v = malloc(m->len + 1);
            if (!v)
                abort();
            if (m->len)
                memcpy(v, m->payload, m->len);
            v[m->len] = '\0';
            *value = v;
            *value_len = m->len;
        }
        rd_kafka_message_destroy(m);
        if (match)
            return ES_OK;
    }
    if (w->last_error[0])
        return es_error_set(err, ES_ETRANSIENT, "no record with that key on %s in time (last Kafka error: %s)",
                            w->topic, w->last_error);
    return es_error_set(err, ES_ETRANSIENT, "no record with that key on %s in time", w->topic);
}

const char *es_waiter_last_error(const es_waiter *w) { return w->last_error; }

void es_waiter_free(es_waiter *w)
{
    if (!w)
        return;
    if (w->rk)
        rd_kafka_destroy_flags(w->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    free(w->brokers);
    free(w->topic);
    free(w);
}
