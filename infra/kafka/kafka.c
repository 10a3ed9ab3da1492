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

es_result es_kafka_ensure_topics_retry(const char *brokers, const char *const *topics, size_t n, int partitions,
                                       const es_stop_flag *stop, es_error *err)
{
    for (;;) {
        es_result rc = es_kafka_ensure_topics(brokers, topics, n, partitions, 10000, err);
        if (rc == ES_OK)
            return ES_OK;
        es_warn("cannot ensure topics, retrying", "error", err->text);
        if (!es_sleep_unless_stopped(2000, stop))
            return ES_ETRANSIENT;
    }
}

es_result es_kafka_ensure_topics(const char *brokers, const char *const *topics, size_t n,
                                 int partitions, int timeout_ms, es_error *err)
{
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
    for (size_t i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, -1, errstr, sizeof errstr);
        if (!nt[i]) {
            es_error_set(err, ES_EINVAL, "topic %s: %s", topics[i], errstr);
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
            es_info("created topic", "topic", rd_kafka_topic_result_name(tr[i]),
                    "partitions", es_log_i64(partitions));
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

/* --- consumer ------------------------------------------------------------ */

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
 * queue being short again, fetches. The cheapest public request is
 * rd_kafka_query_watermark_offsets (two ListOffsets); its answer is unused.
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
 * bound may still hold). The query blocks this thread for one round trip;
 * one that fails or is slow (broker away: librdkafka bounds its wait only
 * by socket.timeout.ms) silences the wake-up for WAKE_BACKOFF_MS.
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
        int64_t lo = -1, hi = -1;
        cp->cursor = k + 1;
        cp->armed = false;
        cp->woke = true;
        cp->wakeups++;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi, WAKE_QUERY_TIMEOUT_MS);
        int64_t took = es_clock_mono_ms() - now;
        es_debug("fetch wake-up", "topic", tp->topic, "partition", es_log_i64(tp->partition), "position",
                 es_log_i64(tp->offset), "high", es_log_i64(hi), "queued", es_log_i64((long long)qlen),
                 "took_ms", es_log_i64(took), "error", e ? rd_kafka_err2str(e) : "");
        if (e || took > WAKE_QUERY_TIMEOUT_MS)
            cp->next_check_ms = es_clock_mono_ms() + WAKE_BACKOFF_MS;
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

rd_kafka_message_t *es_consumer_next(rd_kafka_t *rk, es_consumer_poll *cp, size_t got, int64_t linger_ms)
{
    for (;;) {
        int64_t now = es_clock_mono_ms();
        if (now >= cp->next_check_ms)
            wake_fetcher(rk, cp, now);
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
        return m;
    }
}

es_result es_consumer_new(const char *brokers, const char *group, int session_timeout_ms,
                          const char *const *topics, size_t n, rd_kafka_t **out, es_error *err)
{
    char errstr[512], tbuf[32];
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, group, err);
    if (!conf)
        return ES_EINVAL;
    snprintf(tbuf, sizeof tbuf, "%d", session_timeout_ms);
    if (!es_kafka_conf_set(conf, "group.id", group, err) || !es_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) ||
        !es_kafka_conf_set(conf, "enable.auto.commit", "true", err) || !es_kafka_conf_set(conf, "auto.commit.interval.ms", "500", err) ||
        !es_kafka_conf_set(conf, "auto.offset.reset", "earliest", err) || !es_kafka_conf_set(conf, "session.timeout.ms", tbuf, err) ||
        !es_kafka_conf_set(conf, "partition.assignment.strategy", "range,roundrobin", err) ||
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
    *out = rk;
    return ES_OK;
}
