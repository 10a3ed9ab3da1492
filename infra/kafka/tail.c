/*
 * infra/kafka/tail.c - read a topic from its end and grow with it (see
 * tail.h).
 */
#include "infra/kafka/tail.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/kafka/kafka.h"

#define CHECK_EVERY_MS 10000

struct es_tail {
    char *brokers, *topic, *what;
    int max_partitions;
    rd_kafka_t *rk;
    int partitions;
    int64_t next_check_ms; /* monotonic: the next look for new partitions */
};

/* Partition count of the topic, 0 when it does not exist, -1 when Kafka
 * does not answer. */
static int partition_count(es_tail *t, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(t->rk, t->topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rkt && rd_kafka_metadata(t->rk, 0, rkt, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
            n = md->topics[0].partition_cnt;
        else
            n = 0;
        rd_kafka_metadata_destroy(md);
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return n;
}

static es_result make_consumer(es_tail *t, const es_tail_opts *o, es_error *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = es_kafka_conf(o->brokers, o->client_id, err);
    if (!conf)
        return ES_EINVAL;
    if (!es_kafka_conf_set(conf, "group.id", o->group, err) || !es_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        !es_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) || !es_kafka_conf_set(conf, "enable.partition.eof", "false", err) ||
        !es_kafka_conf_set(conf, "queued.min.messages", "1000", err) || !es_kafka_conf_set(conf, "queued.max.messages.kbytes", "2048", err) ||
        !es_kafka_conf_set(conf, "max.partition.fetch.bytes", "262144", err) || !es_kafka_conf_set(conf, "fetch.wait.max.ms", "100", err)) {
        rd_kafka_conf_destroy(conf);
        return ES_EINVAL;
    }
    if (!(t->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr))) {
        rd_kafka_conf_destroy(conf);
        es_error_set(err, ES_EFATAL, "kafka consumer: %s", errstr);
        return ES_EINVAL;
    }
    rd_kafka_poll_set_consumer(t->rk);
    return ES_OK;
}

/* Assign every partition at its high watermark. */
static es_result assign_at_end(es_tail *t, es_error *err)
{
    int n = partition_count(t, 10000);
    if (n < 0)
        return es_error_set(err, ES_ETRANSIENT, "Kafka at %s does not answer", t->brokers);
    if (n == 0)
        return es_error_set(err, ES_ETRANSIENT, "%s topic %s does not exist (yet)", t->what, t->topic);
    if (n > t->max_partitions)
        return es_error_set(err, ES_EINVAL, "%s topic %s has %d partitions", t->what, t->topic, n);
    es_result rc = ES_OK;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t hi = 0;
        rd_kafka_resp_err_t e = es_kafka_list_offset(t->rk, t->topic, p, RD_KAFKA_OFFSET_END, 10000, &hi);
        if (e) {
            rc = es_error_set(err, ES_ETRANSIENT, "%s topic %s [%d]: %s", t->what, t->topic, p, rd_kafka_err2str(e));
            goto out;
        }
        rd_kafka_topic_partition_list_add(l, t->topic, p)->offset = hi;
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(t->rk, l);
    if (e) {
        rc = es_error_set(err, ES_EFATAL, "assign %s: %s", t->topic, rd_kafka_err2str(e));
        goto out;
    }
    t->partitions = n;
out:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

es_result es_tail_new(const es_tail_opts *o, es_tail **out, es_error *err)
{
    es_result rc;
    es_tail *t = calloc(1, sizeof *t);
    if (!t)
        abort();
    t->brokers = strdup(o->brokers);
    t->topic = strdup(o->topic);
    t->what = strdup(o->what);
    if (!t->brokers || !t->topic || !t->what)
        abort();
    t->max_partitions = o->max_partitions;
    if ((rc = make_consumer(t, o, err)) != ES_OK || (rc = assign_at_end(t, err)) != ES_OK)
        goto out;
    t->next_check_ms = es_clock_mono_ms() + CHECK_EVERY_MS;
    *out = t;
    t = NULL;
out:
    es_tail_free(t);
    return rc;
}

void es_tail_free(es_tail *t)
{
    if (!t)
        return;
    if (t->rk) {
        rd_kafka_consumer_close(t->rk);
        rd_kafka_destroy(t->rk);
    }
    free(t->brokers);
    free(t->topic);
    free(t->what);
    free(t);
}

int es_tail_partitions(const es_tail *t) { return t->partitions; }

/* Partitions added since the start: read them from their beginning. */
static void add_new_partitions(es_tail *t)
{
    char msg[128];
    int n = partition_count(t, 2000);
    if (n <= t->partitions || n > t->max_partitions)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n - t->partitions);
    for (int p = t->partitions; p < n; p++)
        rd_kafka_topic_partition_list_add(l, t->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_error_t *e = rd_kafka_incremental_assign(t->rk, l);
    if (e) {
        snprintf(msg, sizeof msg, "cannot read new %s partitions", t->what);
        es_warn(msg, "error", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        snprintf(msg, sizeof msg, "reading new %s partitions", t->what);
        es_info(msg, "topic", t->topic, "partitions", es_log_i64(n));
        t->partitions = n;
    }
    rd_kafka_topic_partition_list_destroy(l);
}

void es_tail_poll(es_tail *t, int timeout_ms, es_tail_cb cb, void *ctx)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, timeout_ms);
    if (m) {
        if (!m->err) {
            es_tail_record rec = {.key = m->key,
                                  .key_len = m->key_len,
                                  .value = m->payload,
                                  .value_len = m->len,
                                  .topic = rd_kafka_topic_name(m->rkt),
                                  .partition = m->partition,
                                  .offset = m->offset};
            cb(ctx, &rec);
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            char msg[128];
            snprintf(msg, sizeof msg, "%s consumer", t->what);
            es_warn(msg, "error", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    if (es_clock_mono_ms() >= t->next_check_ms) {
        add_new_partitions(t);
        t->next_check_ms = es_clock_mono_ms() + CHECK_EVERY_MS;
    }
}
