/*
 * infra/kafka/tracked.c - the producer whose every record is reported to
 * its sender (see tracked.h).
 *
 * A read-write lock guards the handle: sends and polls hold it for reading,
 * a recreate for writing, so no send ever sees a handle being destroyed.
 * The fatal flag is set by librdkafka's error callback (on its own thread)
 * and read by the polling thread.
 */
#include "infra/kafka/tracked.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/log.h"
#include "infra/kafka/kafka.h"

struct es_tracked_producer {
    char *brokers, *client_id;
    int delivery_timeout_ms;
    es_tracked_report_cb on_report;
    void *ctx;
    rd_kafka_t *rk;         /* NULL after a failed recreate */
    pthread_rwlock_t lock;  /* write-held only to replace rk */
    atomic_bool fatal;
};

static void report_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    es_tracked_producer *p = opaque;
    if (m->_private)
        p->on_report(p->ctx, m->_private, m->err == RD_KAFKA_RESP_ERR_NO_ERROR,
                     m->err ? rd_kafka_err2str(m->err) : NULL);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    es_tracked_producer *p = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL)
        atomic_store(&p->fatal, true);
    es_warn("kafka", "error", rd_kafka_err2str((rd_kafka_resp_err_t)err), "reason", reason);
}

/* A new handle, or NULL with err (ES_EINVAL or ES_EFATAL in *rc). */
static rd_kafka_t *make_handle(es_tracked_producer *p, es_result *rc, es_error *err)
{
    char errstr[512], tmo[24], req[24];
    *rc = ES_EINVAL;
    rd_kafka_conf_t *conf = es_kafka_conf(p->brokers, p->client_id, err);
    if (!conf)
        return NULL;
    /* Delivery gives up when the sender does: a record is either in Kafka
     * when the wait ends, or reported undelivered then. */
    snprintf(tmo, sizeof tmo, "%d", p->delivery_timeout_ms);
    snprintf(req, sizeof req, "%d", p->delivery_timeout_ms < 30000 ? p->delivery_timeout_ms : 30000);
    if (!es_kafka_conf_set(conf, "enable.idempotence", "true", err) || !es_kafka_conf_set(conf, "acks", "all", err) ||
        !es_kafka_conf_set(conf, "partitioner", "murmur2_random", err) || !es_kafka_conf_set(conf, "linger.ms", "1", err) ||
        !es_kafka_conf_set(conf, "message.timeout.ms", tmo, err) || !es_kafka_conf_set(conf, "request.timeout.ms", req, err) ||
        !es_kafka_conf_set(conf, "queue.buffering.max.kbytes", "16384", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, report_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, p);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        *rc = es_error_set(err, ES_EFATAL, "kafka producer: %s", errstr);
        return NULL;
    }
    *rc = ES_OK;
    return rk;
}

es_result es_tracked_new(const es_tracked_opts *o, es_tracked_producer **out, es_error *err)
{
    es_result rc = ES_OK;
    es_tracked_producer *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->brokers = strdup(o->brokers);
    p->client_id = strdup(o->client_id ? o->client_id : "factord");
    if (!p->brokers || !p->client_id)
        abort();
    p->delivery_timeout_ms = o->delivery_timeout_ms;
    p->on_report = o->on_report;
    p->ctx = o->ctx;
    pthread_rwlock_init(&p->lock, NULL);
    if (!(p->rk = make_handle(p, &rc, err)))
        goto out;
    *out = p;
    p = NULL;
out:
    es_tracked_free(p);
    return rc;
}

void es_tracked_free(es_tracked_producer *p)
{
    if (!p)
        return;
    if (p->rk) {
        /* What is still queued would reach Kafka with nobody waiting: drop
         * it; flushing serves the reports that hand the tags back. */
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE);
        rd_kafka_flush(p->rk, 2000);
        rd_kafka_destroy(p->rk);
    }
    pthread_rwlock_destroy(&p->lock);
    free(p->brokers);
    free(p->client_id);
    free(p);
}

es_result es_tracked_send(es_tracked_producer *p, const char *topic, const void *key, size_t key_len,
                          const void *value, size_t value_len, void *tag, es_error *err)
{
    pthread_rwlock_rdlock(&p->lock);
    rd_kafka_resp_err_t e = p->rk ? rd_kafka_producev(p->rk, RD_KAFKA_V_TOPIC(topic),
                                                      RD_KAFKA_V_KEY((void *)key, key_len),
                                                      RD_KAFKA_V_VALUE((void *)value, value_len),
                                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                      RD_KAFKA_V_OPAQUE(tag), RD_KAFKA_V_END)
                                  : RD_KAFKA_RESP_ERR__STATE;
    pthread_rwlock_unlock(&p->lock);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        return ES_OK;
    es_result rc = e == RD_KAFKA_RESP_ERR__QUEUE_FULL || e == RD_KAFKA_RESP_ERR__STATE ? ES_ETRANSIENT : ES_EFATAL;
    return es_error_set(err, rc, "%s", rd_kafka_err2str(e));
}

es_result es_tracked_poll(es_tracked_producer *p, int timeout_ms, es_error *err)
{
    pthread_rwlock_rdlock(&p->lock);
    if (p->rk)
        rd_kafka_poll(p->rk, timeout_ms);
    pthread_rwlock_unlock(&p->lock);
    if (atomic_load(&p->fatal))
        return es_error_set(err, ES_EFATAL, "the Kafka producer hit a fatal error");
    return ES_OK;
}

es_result es_tracked_recreate(es_tracked_producer *p, es_error *err)
{
    es_result rc = ES_OK;
    pthread_rwlock_wrlock(&p->lock);
    if (p->rk) {
        rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(p->rk, 1000);
        rd_kafka_destroy(p->rk);
        p->rk = NULL;
    }
    if ((p->rk = make_handle(p, &rc, err)))
        atomic_store(&p->fatal, false);
    pthread_rwlock_unlock(&p->lock);
    return rc;
}

bool es_tracked_ping(es_tracked_producer *p, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    pthread_rwlock_rdlock(&p->lock);
    bool ok = p->rk && rd_kafka_metadata(p->rk, 0, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR;
    pthread_rwlock_unlock(&p->lock);
    if (md)
        rd_kafka_metadata_destroy(md);
    return ok;
}
