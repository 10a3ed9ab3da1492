/*
 * infra/kafka/consumer.c - the batch consumer (see consumer.h).
 */
#include "infra/kafka/consumer.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"
#include "infra/kafka/kafka.h"

/* What es_consumer_next keeps between calls: the batch's linger deadline
 * and the fetch wake-up's bookkeeping. */
typedef struct es_consumer_poll {
    int64_t deadline;      /* monotonic ms: the batch's linger ends */
    int64_t next_check_ms; /* monotonic ms: the wake-up's next look */
    size_t removed;        /* records and errors polled since that look */
    size_t last_qlen;      /* the consumer queue's length at that look */
    size_t queued_min;     /* queued.min.messages; 0: not read yet */
    int cursor;            /* round robin over the assigned partitions */
    bool armed;            /* the queue was long enough to stop fetching */
    bool woke;             /* a wake-up was sent at the last look */
    bool quiet;            /* it fetched nothing: none until something is */
    unsigned long long wakeups; /* queries sent, for the stop log line */
} es_consumer_poll;

#define LAG_EXPORT_MS 1000
#define LAG_MAX_PARTITIONS 256

struct es_consumer {
    rd_kafka_t *rk;
    es_consumer_poll cp;
    char *group;
    int64_t next_lag_ms;
    es_metric *lag[LAG_MAX_PARTITIONS]; /* the gauges of the last export */
    size_t n_lag;
};

/* The group's lag per assigned partition, as kafka_exporter names it
 * (kafka_consumergroup_lag{consumergroup,topic,partition}): the high
 * watermark librdkafka cached from its last fetch minus the consumer's
 * position. Local calls only, no request to a broker. Partitions this
 * consumer no longer has are hidden, not left at their last value. */
static void export_lag(es_consumer *c)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts)
        return;
    es_metric *now[LAG_MAX_PARTITIONS];
    size_t n_now = 0;
    if (parts->cnt > 0 && rd_kafka_position(c->rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (int i = 0; i < parts->cnt && n_now < LAG_MAX_PARTITIONS; i++) {
            const rd_kafka_topic_partition_t *tp = &parts->elems[i];
            int64_t lo = -1, hi = -1;
            if (tp->offset < 0 ||
                rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
                hi < 0)
                continue; /* nothing consumed or fetched yet: no figure */
            char labels[400], part[16];
            snprintf(part, sizeof part, "%d", (int)tp->partition);
            es_metrics_labels(labels, sizeof labels, "consumergroup", c->group, "topic", tp->topic, "partition",
                              part, NULL);
            es_metric *m = es_metrics_gauge("kafka_consumergroup_lag",
                                            "Records of the partition not yet consumed by this process's group member "
                                            "(high watermark minus position)",
                                            labels);
            es_metric_set(m, (double)(hi > tp->offset ? hi - tp->offset : 0));
            now[n_now++] = m;
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    for (size_t i = 0; i < c->n_lag; i++) {
        bool kept = false;
        for (size_t j = 0; j < n_now && !kept; j++)
            kept = now[j] == c->lag[i];
        if (!kept)
            es_metric_unset(c->lag[i]);
    }
    memcpy(c->lag, now, n_now * sizeof *now);
    c->n_lag = n_now;
}

/*
 * Waking librdkafka 2.0.2's fetcher.
 *
 * Why: a partition's fetches stop once the consumer queue holds
 * queued.min.messages records (or queued.max.messages.kbytes): the broker
 * thread's fetch decision (rd_kafka_toppar_fetch_decide) marks it "not
 * fetchable", and that thread looks again only when an op or a socket event
 * wakes it or its 1 s block ends (rd_kafka_broker_consumer_serve). Draining
 * the queue wakes nothing in 2.0.2 (fetch.queue.backoff.ms came later), so
 * a consumer with a backlog empties its queue and then idles for 100-1000
 * ms: a quarter of a projector's catch-up time. The bound must stay
 * (es_consumer_new: memory); the offset commits go to the group
 * coordinator's broker thread and wake no fetcher; pausing and resuming a
 * partition would wake it but bumps the partition's op version, which
 * purges the records already fetched.
 *
 * What: a request to a partition's leader is an op on the leader's broker
 * thread, which wakes it; it re-decides every partition it serves and, the
 * queue being short again, fetches. The cheapest public request is one
 * ListOffsets for the partition's end (es_kafka_list_offset); its answer is unused.
 * At most every WAKE_CHECK_MS, es_consumer_next looks at the consumer
 * queue, and sends one when
 *   - the queue is below half of queued.min.messages, and nothing was
 *     fetched since the previous look (a fetcher at work sends nothing), and
 *   - a partition has records known to be on its broker (the high watermark
 *     cached from its last fetch beyond its position plus all that is
 *     queued), or the queue ran empty after the last fetch had left it
 *     about queued.min.messages long (records produced after that fetch
 *     are not in the cache): then once.
 * A wake-up that fetched nothing by the next look is not repeated while the
 * queue is empty (an idle consumer, caught up, sends nothing more; offsets
 * beyond the last record, such as a transaction marker, look like a lag of
 * one), and only every WAKE_RETRY_MS while records are queued (the byte
 * bound may still hold). The query blocks this thread for one round trip,
 * at most WAKE_QUERY_TIMEOUT_MS; one that fails or is slow (broker away)
 * silences the wake-up for WAKE_BACKOFF_MS.
 */
#define WAKE_CHECK_MS 10
#define WAKE_RETRY_MS 50
#define WAKE_BACKOFF_MS 1000
#define WAKE_QUERY_TIMEOUT_MS 100

/* queued.min.messages: the queue length at which fetches stop. */
static size_t wake_queued_min(rd_kafka_t *rk)
{
    char buf[32];
    size_t size = sizeof buf;
    long min = 0;
    if (rd_kafka_conf_get(rd_kafka_conf(rk), "queued.min.messages", buf, &size) == RD_KAFKA_CONF_OK)
        min = strtol(buf, NULL, 10);
    return min >= 4 ? (size_t)min : 4;
}

/* The partition to wake (round robin from the cursor): one with records
 * known to be on its broker, else, unless only_known, any with a position.
 * -1: none. */
static int wake_pick(rd_kafka_t *rk, const es_consumer_poll *cp, const rd_kafka_topic_partition_list_t *parts,
                     size_t qlen, bool only_known)
{
    int any = -1;
    for (int i = 0; i < parts->cnt; i++) {
        int k = (cp->cursor + i) % parts->cnt;
        const rd_kafka_topic_partition_t *tp = &parts->elems[k];
        if (tp->err || tp->offset < 0)
            continue; /* nothing consumed yet: its first fetch is under way */
        int64_t lo, hi;
        if (rd_kafka_get_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi > tp->offset && (uint64_t)(hi - tp->offset) > qlen)
            return k;
        if (any < 0)
            any = k;
    }
    return only_known ? -1 : any;
}

static void wake_fetcher(rd_kafka_t *rk, es_consumer_poll *cp, int64_t now)
{
    cp->next_check_ms = now + WAKE_CHECK_MS;
    if (!cp->queued_min)
        cp->queued_min = wake_queued_min(rk);
    size_t low_mark = cp->queued_min / 2;
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    if (!q)
        return;
    size_t qlen = rd_kafka_queue_length(q);
    rd_kafka_queue_destroy(q);
    bool fetched = qlen + cp->removed > cp->last_qlen;
    cp->last_qlen = qlen;
    cp->removed = 0;
    if (fetched) {
        /* The fetcher stops only after a fetch that left queued.min.messages
         * queued; a look comes 10-30 ms later (a batch's commit between). */
        cp->armed = qlen >= cp->queued_min - cp->queued_min / 4;
        cp->woke = cp->quiet = false;
        return;
    }
    if (cp->woke) { /* the last wake-up fetched nothing */
        cp->woke = false;
        if (qlen == 0)
            cp->quiet = true;
        else
            cp->next_check_ms = now + WAKE_RETRY_MS;
        return;
    }
    if (qlen >= low_mark || cp->quiet)
        return;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts)
        return;
    int k = -1;
    if (parts->cnt > 0 && rd_kafka_position(rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR)
        k = wake_pick(rk, cp, parts, qlen, !(cp->armed && qlen == 0));
    if (k >= 0) {
        const rd_kafka_topic_partition_t *tp = &parts->elems[k];
        int64_t hi = -1;
        cp->cursor = k + 1;
        cp->armed = false;
        cp->woke = true;
        cp->wakeups++;
        rd_kafka_resp_err_t e = es_kafka_list_offset(rk, tp->topic, tp->partition, RD_KAFKA_OFFSET_END, WAKE_QUERY_TIMEOUT_MS, &hi);
        int64_t took = es_clock_mono_ms() - now;
        es_debug("fetch wake-up", "topic", tp->topic, "partition", es_log_i64(tp->partition), "position",
                 es_log_i64(tp->offset), "high", es_log_i64(hi), "queued", es_log_i64((long long)qlen),
                 "took_ms", es_log_i64(took), "error", e ? rd_kafka_err2str(e) : "");
        if (e || took > WAKE_QUERY_TIMEOUT_MS)
            cp->next_check_ms = es_clock_mono_ms() + WAKE_BACKOFF_MS;
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

es_kafka_msg *es_consumer_next(es_consumer *c, size_t got, int64_t linger_ms, es_record *rec)
{
    rd_kafka_t *rk = c->rk;
    es_consumer_poll *cp = &c->cp;
    for (;;) {
        int64_t now = es_clock_mono_ms();
        if (now >= cp->next_check_ms)
            wake_fetcher(rk, cp, now);
        if (now >= c->next_lag_ms) {
            c->next_lag_ms = now + LAG_EXPORT_MS;
            export_lag(c);
        }
        int wait = 200;
        if (got) {
            int64_t left = cp->deadline - es_clock_mono_ms();
            wait = left > 0 ? (int)left : 0; /* past the linger: only what is queued */
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait);
        if (!m)
            return NULL;
        cp->removed++;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                es_warn("consumer error", "error", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (!got)
                return NULL;
            continue;
        }
        if (!got)
            cp->deadline = es_clock_mono_ms() + linger_ms;
        *rec = (es_record){.value = m->payload, .value_len = m->len, .key = m->key, .key_len = m->key_len,
                           .topic = rd_kafka_topic_name(m->rkt), .partition = m->partition, .offset = m->offset};
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(m, &tstype);
        if (tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME && ts > 0)
            rec->timestamp_ms = ts;
        return (es_kafka_msg *)m;
    }
}

es_result es_consumer_new(const char *brokers, const es_consumer_opts *o, const char *const *topics, size_t n,
                          es_consumer **out, es_error *err)
{
    *out = NULL;
    char errstr[512], tbuf[32];
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, o->group, err);
    if (!conf)
        return ES_EINVAL;
    snprintf(tbuf, sizeof tbuf, "%d", o->session_timeout_ms);
    const char *assignor = o->assignor && *o->assignor ? o->assignor : "range,roundrobin";
    if (!es_kafka_conf_set(conf, "group.id", o->group, err) ||
        !es_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        !es_kafka_conf_set(conf, "enable.auto.commit", "true", err) ||
        !es_kafka_conf_set(conf, "auto.commit.interval.ms", "500", err) ||
        !es_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) ||
        !es_kafka_conf_set(conf, "session.timeout.ms", tbuf, err) ||
        !es_kafka_conf_set(conf, "partition.assignment.strategy", assignor, err) ||
        (o->instance_id && *o->instance_id && !es_kafka_conf_set(conf, "group.instance.id", o->instance_id, err)) ||
        !es_kafka_conf_set(conf, "enable.partition.eof", "false", err)) {
        rd_kafka_conf_destroy(conf);
        return ES_EINVAL;
    }
    /* A bounded pre-fetch. librdkafka's defaults (a queue of 100,000
     * messages per partition or 64 MB, fetches of 1 MB per partition and
     * 50 MB per request) let a consumer with a backlog
     * hold much of it in memory: 186 MB for a processor that had 260,000
     * commands waiting, 170 MB for a projector catching up on 780,000 events
     * (docs/performance.md). A batch needs only a batch of records ahead
     * (FACTORD_BATCH_MAX, FACTORD_PROJECTOR_BATCH_MAX), but not much less
     * than 10 batches: halving these (5,000 records, 4 MB) cost a
     * processor working off a burst 40% of its speed (the fetch wake-up
     * does not catch every drain), for 0-5 MB of memory. A record
     * larger than a fetch still comes whole (Kafka returns the first batch
     * of a fetch whatever its size). The matching FACTORD_RDKAFKA_*
     * variables still win. */
    static const char *const prefetch[][3] = {
        {"FACTORD_RDKAFKA_QUEUED_MIN_MESSAGES", "queued.min.messages", "10000"},
        {"FACTORD_RDKAFKA_QUEUED_MAX_MESSAGES_KBYTES", "queued.max.messages.kbytes", "8192"},
        {"FACTORD_RDKAFKA_MAX_PARTITION_FETCH_BYTES", "max.partition.fetch.bytes", "262144"},
        {"FACTORD_RDKAFKA_FETCH_MAX_BYTES", "fetch.max.bytes", "1048576"},
    };
    for (size_t i = 0; i < sizeof prefetch / sizeof prefetch[0]; i++) {
        if (!getenv(prefetch[i][0]) && !es_kafka_conf_set(conf, prefetch[i][1], prefetch[i][2], err)) {
            rd_kafka_conf_destroy(conf);
            return ES_EINVAL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return es_error_set(err, ES_EFATAL, "kafka consumer: %s", errstr);
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (e) {
        rd_kafka_destroy(rk);
        return es_error_set(err, ES_EFATAL, "subscribe: %s", rd_kafka_err2str(e));
    }
    es_consumer *c = calloc(1, sizeof *c);
    if (!c)
        abort();
    c->rk = rk;
    c->group = strdup(o->group);
    if (!c->group)
        abort();
    *out = c;
    return ES_OK;
}

void es_consumer_free(es_consumer *c)
{
    if (!c)
        return;
    rd_kafka_consumer_close(c->rk); /* commits the stored offsets, leaves the group */
    rd_kafka_destroy(c->rk);
    for (size_t i = 0; i < c->n_lag; i++)
        es_metric_unset(c->lag[i]);
    free(c->group);
    free(c);
}

unsigned long long es_consumer_wakeups(const es_consumer *c) { return c ? c->cp.wakeups : 0; }

void es_kafka_msg_free(es_kafka_msg *m)
{
    if (m)
        rd_kafka_message_destroy((rd_kafka_message_t *)m);
}

bool es_kafka_msg_header(const es_kafka_msg *m, const char *name, const void **val, size_t *size)
{
    rd_kafka_headers_t *hdrs = NULL;
    *val = NULL;
    *size = 0;
    return rd_kafka_message_headers((const rd_kafka_message_t *)m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
           rd_kafka_header_get_last(hdrs, name, val, size) == RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* --- offsets ------------------------------------------------------------- */

struct es_offsets {
    rd_kafka_topic_partition_list_t *list;
};

es_offsets *es_offsets_new(void)
{
    es_offsets *o = calloc(1, sizeof *o);
    if (!o)
        abort();
    o->list = rd_kafka_topic_partition_list_new(8);
    return o;
}

void es_offsets_free(es_offsets *o)
{
    if (!o)
        return;
    rd_kafka_topic_partition_list_destroy(o->list);
    free(o);
}

void es_offsets_note(es_offsets *o, const es_record *rec)
{
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(o->list, rec->topic, rec->partition);
    if (!tp) {
        tp = rd_kafka_topic_partition_list_add(o->list, rec->topic, rec->partition);
        tp->offset = rec->offset + 1;
    } else if (rec->offset + 1 > tp->offset) {
        tp->offset = rec->offset + 1;
    }
}

void es_consumer_store(es_consumer *c, const es_offsets *o)
{
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, o->list);
    if (e) /* a partition revoked meanwhile: its next owner re-reads, harmlessly */
        es_warn("storing offsets", "error", rd_kafka_err2str(e));
}

void es_consumer_store_records(es_consumer *c, const es_record *recs, size_t n)
{
    es_offsets o = {.list = rd_kafka_topic_partition_list_new((int)n)};
    for (size_t i = 0; i < n; i++)
        es_offsets_note(&o, &recs[i]);
    es_consumer_store(c, &o);
    rd_kafka_topic_partition_list_destroy(o.list);
}
