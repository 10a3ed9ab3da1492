/*
 * infra/kafka/kafka.c - librdkafka wiring (see kafka.h).
 */
#include "infra/kafka/kafka.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/base/log.h"

extern char **environ;

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    es_log_level lvl = level <= 3 ? ES_LOG_ERROR : level == 4 ? ES_LOG_WARN
                     : level <= 6 ? ES_LOG_INFO : ES_LOG_DEBUG;
    es_log(lvl, buf, "lib", "rdkafka", "facility", fac, (const char *)NULL);
}

bool es_kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, es_error *err)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        es_error_set(err, ES_EINVAL, "kafka property %s: %s", name, errstr);
        return false;
    }
    return true;
}

rd_kafka_conf_t *es_kafka_conf(const char *brokers, const char *client_id, es_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (!es_kafka_conf_set(conf, "bootstrap.servers", brokers, err) ||
        !es_kafka_conf_set(conf, "client.id", client_id ? client_id : "factord", err) ||
        !es_kafka_conf_set(conf, "socket.nagle.disable", "true", err))
        goto fail;
    /* FACTORD_RDKAFKA_SASL_MECHANISMS=PLAIN -> sasl.mechanisms=PLAIN */
    for (char **e = environ; e && *e; e++) {
        static const char prefix[] = "FACTORD_RDKAFKA_";
        if (strncmp(*e, prefix, sizeof prefix - 1) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        char name[128];
        size_t n = (size_t)(eq - *e) - (sizeof prefix - 1);
        if (n == 0 || n >= sizeof name)
            continue;
        for (size_t i = 0; i < n; i++) {
            char c = (*e)[sizeof prefix - 1 + i];
            name[i] = c == '_' ? '.' : (char)tolower((unsigned char)c);
        }
        name[n] = '\0';
        if (!es_kafka_conf_set(conf, name, eq + 1, err))
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

es_topic_spec es_kafka_topic_spec(const es_config *cfg)
{
    return (es_topic_spec){.partitions = (int)cfg->topic_partitions,
                           .replication = (int)cfg->topic_replication,
                           .min_insync = (int)cfg->topic_min_insync};
}

es_result es_kafka_ensure_topics_retry(const char *brokers, const char *const *topics, size_t n,
                                       const es_topic_spec *spec, const es_stop_flag *stop, es_error *err)
{
    for (;;) {
        es_result rc = es_kafka_ensure_topics(brokers, topics, n, spec, 10000, err);
        if (rc == ES_OK || rc == ES_EINVAL)
            return rc; /* done, or a setting that waiting cannot fix */
        es_warn("cannot ensure topics, retrying", "error", err->text);
        if (!es_sleep_unless_stopped(2000, stop))
            return ES_ETRANSIENT;
    }
}

/* The replication factor spec asks for: its own, or min(3, brokers). */
static es_result resolve_replication(rd_kafka_t *rk, const es_topic_spec *spec, int timeout_ms, int *rf,
                                     es_error *err)
{
    if (spec->replication > 0) {
        *rf = spec->replication;
        return ES_OK;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (e)
        return es_error_set(err, ES_ETRANSIENT, "counting the brokers: %s", rd_kafka_err2str(e));
    int brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    *rf = brokers < 1 ? 1 : brokers > 3 ? 3 : brokers;
    return ES_OK;
}

es_result es_kafka_ensure_topics(const char *brokers, const char *const *topics, size_t n,
                                 const es_topic_spec *spec, int timeout_ms, es_error *err)
{
    int partitions = spec->partitions, rf = 0;
    es_result rc = ES_EFATAL;
    char errstr[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_NewTopic_t **nt = calloc(n ? n : 1, sizeof *nt);
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, "factord-admin", err);
    if (!conf || !nt)
        goto out;
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        es_error_set(err, ES_EFATAL, "kafka admin client: %s", errstr);
        goto out;
    }
    if ((rc = resolve_replication(rk, spec, timeout_ms, &rf, err)) != ES_OK)
        goto out;
    rc = ES_EFATAL;
    int min_isr = spec->min_insync > 0 ? spec->min_insync : rf > 1 ? rf - 1 : 1;
    if (min_isr > rf) {
        rc = es_error_set(err, ES_EINVAL,
                          "FACTORD_TOPIC_MIN_INSYNC_REPLICAS (%d) exceeds the replication factor (%d): "
                          "no write could succeed", min_isr, rf);
        goto out;
    }
    char isr_text[16];
    snprintf(isr_text, sizeof isr_text, "%d", min_isr);
    for (size_t i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, rf, errstr, sizeof errstr);
        if (!nt[i] ||
            rd_kafka_NewTopic_set_config(nt[i], "min.insync.replicas", isr_text) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            es_error_set(err, ES_EINVAL, "topic %s: %s", topics[i], nt[i] ? "min.insync.replicas refused" : errstr);
            rc = ES_EINVAL;
            goto out;
        }
    }
    q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, errstr, sizeof errstr);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, errstr, sizeof errstr);
    rd_kafka_CreateTopics(rk, nt, n, opts, q);
    rd_kafka_AdminOptions_destroy(opts);
    ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (!ev) {
        rc = es_error_set(err, ES_ETRANSIENT, "creating topics: no answer from %s within %d ms",
                          brokers, timeout_ms);
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        rc = es_error_set(err, ES_ETRANSIENT, "creating topics: %s", rd_kafka_event_error_string(ev));
        goto out;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
    size_t cnt = 0;
    const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            es_info("created topic", "topic", rd_kafka_topic_result_name(tr[i]), "partitions",
                    es_log_i64(partitions), "replication", es_log_i64(rf), "min_insync_replicas",
                    es_log_i64(min_isr));
        else if (e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            rc = es_error_set(err, ES_EFATAL, "creating topic %s: %s", rd_kafka_topic_result_name(tr[i]),
                              rd_kafka_topic_result_error_string(tr[i]) ? rd_kafka_topic_result_error_string(tr[i])
                                                                        : rd_kafka_err2str(e));
            goto out;
        }
    }
    rc = ES_OK;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (nt) {
        for (size_t i = 0; i < n; i++)
            if (nt[i])
                rd_kafka_NewTopic_destroy(nt[i]);
        free(nt);
    }
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}

/* --- producer ------------------------------------------------------------ */

struct es_producer {
    rd_kafka_t *rk;
    char *brokers;
    char *client_id;
    size_t failed;        /* delivery failures since the last flush */
    char last_error[256];
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    es_producer *p = opaque;
    if (m->err) {
        p->failed++;
        snprintf(p->last_error, sizeof p->last_error, "%s [%d]: %s", rd_kafka_topic_name(m->rkt),
                 (int)m->partition, rd_kafka_err2str(m->err));
    }
}

static es_result producer_make(es_producer *p, es_error *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = es_kafka_conf(p->brokers, p->client_id, err);
    if (!conf)
        return ES_EINVAL;
    if (!es_kafka_conf_set(conf, "enable.idempotence", "true", err) || !es_kafka_conf_set(conf, "acks", "all", err) ||
        !es_kafka_conf_set(conf, "partitioner", "murmur2_random", err) || !es_kafka_conf_set(conf, "linger.ms", "2", err) ||
        !es_kafka_conf_set(conf, "message.max.bytes", "16777216", err) ||
        !es_kafka_conf_set(conf, "compression.codec", "lz4", err)) {
        rd_kafka_conf_destroy(conf);
        return ES_EINVAL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, p);
    p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!p->rk) {
        rd_kafka_conf_destroy(conf);
        return es_error_set(err, ES_EFATAL, "kafka producer: %s", errstr);
    }
    return ES_OK;
}

es_result es_producer_new(const char *brokers, const char *client_id, es_producer **out, es_error *err)
{
    es_producer *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->brokers = strdup(brokers);
    p->client_id = strdup(client_id ? client_id : "factord");
    es_result rc = producer_make(p, err);
    if (rc != ES_OK) {
        free(p->brokers);
        free(p->client_id);
        free(p);
        return rc;
    }
    *out = p;
    return ES_OK;
}

void es_producer_free(es_producer *p)
{
    if (!p)
        return;
    if (p->rk) {
        if (rd_kafka_flush(p->rk, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
            es_warn("producer closed with undelivered records", "outq", es_log_i64(rd_kafka_outq_len(p->rk)));
        rd_kafka_destroy(p->rk);
    }
    free(p->brokers);
    free(p->client_id);
    free(p);
}

rd_kafka_t *es_producer_handle(es_producer *p) { return p->rk; }

void es_producer_prime(es_producer *p, const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rkt ? rd_kafka_metadata(p->rk, 0, rkt, &md, timeout_ms) : rd_kafka_last_error();
    if (e)
        es_debug("cannot read a topic's metadata ahead of producing", "topic", topic, "error", rd_kafka_err2str(e));
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
}

void es_producer_purge(es_producer *p)
{
    rd_kafka_purge(es_producer_handle(p), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
}

es_result es_producer_recreate(es_producer *p, es_error *err)
{
    if (p->rk) {
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, 1000);
        rd_kafka_destroy(p->rk);
        p->rk = NULL;
    }
    p->failed = 0;
    return producer_make(p, err);
}

static rd_kafka_headers_t *headers_from_json(const char *headers_json)
{
    if (!headers_json || !*headers_json)
        return NULL;
    json_t *h = json_loads(headers_json, 0, NULL);
    if (!json_is_object(h)) {
        json_decref(h);
        return NULL;
    }
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(json_object_size(h));
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v) {
        if (json_is_string(v))
            rd_kafka_header_add(hdrs, k, -1, json_string_value(v), (ssize_t)json_string_length(v));
    }
    json_decref(h);
    return hdrs;
}

/* Enqueue with hdrs (NULL or owned: taken by the message, freed on error). */
static es_result producer_send(es_producer *p, const char *topic, const void *key, size_t key_len,
                               const void *value, size_t value_len, rd_kafka_headers_t *hdrs, es_error *err)
{
    for (;;) {
        rd_kafka_resp_err_t e;
        if (hdrs)
            e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
                                  RD_KAFKA_V_VALUE((void *)value, value_len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
                                  RD_KAFKA_V_END);
        else
            e = rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY((void *)key, key_len),
                                  RD_KAFKA_V_VALUE((void *)value, value_len),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            rd_kafka_poll(p->rk, 0);
            return ES_OK; /* headers now owned by the message */
        }
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->rk, 50);
            continue;
        }
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        if (e == RD_KAFKA_RESP_ERR__FATAL)
            return es_error_set(err, ES_EFATAL, "producer is in a fatal state");
        return es_error_set(err, ES_ETRANSIENT, "produce to %s: %s", topic, rd_kafka_err2str(e));
    }
}

es_result es_producer_send(es_producer *p, const char *topic, const void *key, size_t key_len,
                           const void *value, size_t value_len, const char *headers_json, es_error *err)
{
    return producer_send(p, topic, key, key_len, value, value_len, headers_from_json(headers_json), err);
}

es_result es_producer_send_header(es_producer *p, const char *topic, const void *key, size_t key_len,
                                  const void *value, size_t value_len, const char *name, const char *hvalue,
                                  es_error *err)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
    rd_kafka_header_add(hdrs, name, -1, hvalue, -1);
    return producer_send(p, topic, key, key_len, value, value_len, hdrs, err);
}

es_result es_producer_flush(es_producer *p, int timeout_ms, size_t *failed, es_error *err)
{
    rd_kafka_resp_err_t e = rd_kafka_flush(p->rk, timeout_ms);
    *failed = p->failed;
    p->failed = 0;
    char fatal[256];
    if (rd_kafka_fatal_error(p->rk, fatal, sizeof fatal))
        return es_error_set(err, ES_EFATAL, "producer fatal error: %s", fatal);
    if (e == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return es_error_set(err, ES_ETRANSIENT, "%d records not delivered within %d ms",
                            rd_kafka_outq_len(p->rk), timeout_ms);
    if (*failed)
        return es_error_set(err, ES_ETRANSIENT, "%zu deliveries failed, last: %s", *failed, p->last_error);
    return ES_OK;
}

/* rd_kafka_offsets_for_times (ListOffsets, timestamp -1 or -2) waits at
 * most timeout_ms and drops a late answer. rd_kafka_query_watermark_offsets
 * does not, in 2.0.2 (fixed in librdkafka 2.3.0, #2588/#4460): while the
 * leader's broker refuses connections, its answer callback re-sends the
 * request at every broker state change (each failed reconnect is one) until
 * that broker accepts a connection. A processor whose fetch wake-up went to
 * the broker just SIGKILLed in `chaos.sh --ha` sat in it for 150 s, until
 * the broker was started again: no polls, no decisions, its group session
 * lost (docs/ha.md). */
rd_kafka_resp_err_t es_kafka_list_offset(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t which,
                                         int timeout_ms, int64_t *offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = which;
    rd_kafka_resp_err_t e = rd_kafka_offsets_for_times(rk, l, timeout_ms);
    if (!e)
        e = l->elems[0].err;
    if (!e)
        *offset = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return e;
}
