/*
 * infra/kafka/lag.c - a consumer group's lag per partition, read without
 * joining the group (see lag.h).
 */
#include "infra/kafka/lag.h"

#include "infra/kafka/kafka.h"

/* Partitions of topic (0 when it does not exist), with their leader and
 * replica counts into parts[i]. */
static es_result status_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms, es_partition_lag *parts,
                                   size_t *n, es_error *err)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms);
    rd_kafka_topic_destroy(rkt);
    *n = 0;
    if (e)
        return es_error_set(err, ES_ETRANSIENT, "metadata of %.200s: %s", topic, rd_kafka_err2str(e));
    if (md->topic_cnt == 1 && !md->topics[0].err)
        for (int i = 0; i < md->topics[0].partition_cnt && *n < ES_STATUS_MAX_PARTITIONS; i++) {
            const struct rd_kafka_metadata_partition *mp = &md->topics[0].partitions[i];
            parts[*n] = (es_partition_lag){.partition = mp->id, .leader = mp->leader,
                                           .replicas = mp->replica_cnt, .isr = mp->isr_cnt};
            (*n)++;
        }
    rd_kafka_metadata_destroy(md);
    return ES_OK;
}

static rd_kafka_t *status_client(const char *brokers, const char *group, es_error *err)
{
    char errstr[256];
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, "factord-status", err);
    if (!conf)
        return NULL;
    /* A group member never joins: committed offsets are read with the
     * group's id, nothing is consumed or committed. */
    if (group && (!es_kafka_conf_set(conf, "group.id", group, err) ||
                  !es_kafka_conf_set(conf, "enable.auto.commit", "false", err))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        es_error_set(err, ES_EINVAL, "status: %s", errstr);
    }
    return rk;
}

es_result es_kafka_group_lag(const char *brokers, es_group_lag *g, int timeout_ms, es_error *err)
{
    size_t n = 0;
    rd_kafka_topic_partition_list_t *l = NULL;
    es_result rc = ES_OK;
    rd_kafka_t *rk = status_client(brokers, g->group, err);
    if (!rk)
        return ES_EINVAL;
    if ((rc = status_partitions(rk, g->topic, timeout_ms, g->parts, &n, err)) != ES_OK)
        goto out;
    g->n = n;
    g->lag = 0;
    g->under_replicated = 0;
    for (size_t i = 0; i < n; i++)
        if (g->parts[i].leader < 0 || g->parts[i].isr < g->parts[i].replicas)
            g->under_replicated++;
    l = rd_kafka_topic_partition_list_new(n ? (int)n : 1);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(l, g->topic, g->parts[i].partition)->offset = RD_KAFKA_OFFSET_INVALID;
    if (n && g->group) {
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, l, timeout_ms);
        if (e) {
            rc = es_error_set(err, ES_ETRANSIENT, "committed offsets of %.200s: %s", g->group,
                              rd_kafka_err2str(e));
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        es_partition_lag *p = &g->parts[i];
        int64_t low = 0, high = 0;
        rd_kafka_resp_err_t e =
            es_kafka_list_offset(rk, g->topic, p->partition, RD_KAFKA_OFFSET_BEGINNING, timeout_ms, &low);
        if (!e)
            e = es_kafka_list_offset(rk, g->topic, p->partition, RD_KAFKA_OFFSET_END, timeout_ms, &high);
        if (e) {
            rc = es_error_set(err, ES_ETRANSIENT, "watermarks of %.200s [%d]: %s", g->topic, (int)p->partition,
                              rd_kafka_err2str(e));
            goto out;
        }
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(l, g->topic, p->partition);
        p->low = low;
        p->high = high;
        p->committed = tp && tp->offset >= 0 ? tp->offset : -1;
        p->lag = p->committed >= 0 ? high - p->committed : high - low;
        if (p->lag < 0)
            p->lag = 0;
        g->lag += p->lag;
    }
    g->ok = true;
out:
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}

