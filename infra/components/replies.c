/*
 * infra/components/replies.c - one producer, one reply consumer, a table of waiters
 * (see replies.h).
 *
 * The waiter table is a hash of command ids plus a list in deadline order:
 * every waiter has the same timeout, so arrival order is deadline order and
 * expiry only looks at the head. A waiter leaves the table under the lock
 * exactly once (reply, delivery failure, deadline or shutdown, whichever
 * comes first); its callback runs after the lock is released. Delivery
 * reports find their waiter by command id and a ticket, so a late report
 * of an earlier send never touches a newer waiter with the same id.
 */
#include "infra/components/replies.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"
#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"

#define NBUCKETS 4096 /* a power of two */
#define MAX_PARTITIONS 10000

typedef struct waiter {
    char id[DOM_UUID_LEN + 1];
    uint64_t ticket;
    int64_t deadline_ms;
    bool delivered;
    es_reply_cb cb;
    void *ctx;
    struct waiter *hnext;
    struct waiter *prev, *next;
} waiter;

/* The opaque of each produced record: which waiter its report is for. */
typedef struct {
    uint64_t ticket;
    char id[DOM_UUID_LEN + 1];
} dr_tag;

struct es_replies {
    char *brokers, *topic, *client_id;
    int timeout_ms;
    rd_kafka_t *producer;
    pthread_rwlock_t plock; /* write-held only to recreate the producer */
    rd_kafka_t *consumer;
    int partitions;
    pthread_mutex_t mu;
    waiter *buckets[NBUCKETS];
    waiter *head, *tail;
    size_t pending;
    uint64_t next_ticket;
    atomic_bool stop;
    atomic_bool fatal;
    pthread_t consumer_thread, poll_thread;
    bool threads_started;
};

/* --- the waiter table (caller holds mu) ----------------------------------- */

static unsigned bucket_of(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 16777619u;
    return h & (NBUCKETS - 1);
}

static waiter *find(es_replies *r, const char *id)
{
    for (waiter *w = r->buckets[bucket_of(id)]; w; w = w->hnext)
        if (strcmp(w->id, id) == 0)
            return w;
    return NULL;
}

static void unlink_waiter(es_replies *r, waiter *w)
{
    waiter **pp = &r->buckets[bucket_of(w->id)];
    while (*pp != w)
        pp = &(*pp)->hnext;
    *pp = w->hnext;
    if (w->prev)
        w->prev->next = w->next;
    else
        r->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        r->tail = w->prev;
    r->pending--;
}

/* Remove and return the waiter for id (with ticket, when nonzero). */
static waiter *take(es_replies *r, const char *id, uint64_t ticket)
{
    pthread_mutex_lock(&r->mu);
    waiter *w = find(r, id);
    if (w && ticket && w->ticket != ticket)
        w = NULL;
    if (w)
        unlink_waiter(r, w);
    pthread_mutex_unlock(&r->mu);
    return w;
}

static void finish(waiter *w, es_reply_outcome outcome, int status, const char *body, size_t len)
{
    w->cb(w->ctx, outcome, status, body, len);
    free(w);
}

/* --- producer ------------------------------------------------------------- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    es_replies *r = opaque;
    dr_tag *tag = m->_private;
    if (!tag)
        return;
    if (m->err) {
        waiter *w = take(r, tag->id, tag->ticket);
        if (w) {
            es_warn("command not delivered to Kafka", "command_id", tag->id, "error", rd_kafka_err2str(m->err));
            finish(w, ES_REPLY_UNAVAILABLE, 0, NULL, 0);
        }
    } else {
        pthread_mutex_lock(&r->mu);
        waiter *w = find(r, tag->id);
        if (w && w->ticket == tag->ticket)
            w->delivered = true;
        pthread_mutex_unlock(&r->mu);
    }
    free(tag);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    es_replies *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL)
        atomic_store(&r->fatal, true);
    es_warn("kafka", "error", rd_kafka_err2str((rd_kafka_resp_err_t)err), "reason", reason);
}

static rd_kafka_t *make_producer(es_replies *r, es_error *err)
{
    char errstr[512], tmo[24], req[24];
    rd_kafka_conf_t *conf = es_kafka_conf(r->brokers, r->client_id, err);
    if (!conf)
        return NULL;
    /* Delivery gives up when the caller does: a command is either in Kafka
     * when the wait ends, or reported undelivered then. */
    snprintf(tmo, sizeof tmo, "%d", r->timeout_ms);
    snprintf(req, sizeof req, "%d", r->timeout_ms < 30000 ? r->timeout_ms : 30000);
    if (!es_kafka_conf_set(conf, "enable.idempotence", "true", err) || !es_kafka_conf_set(conf, "acks", "all", err) ||
        !es_kafka_conf_set(conf, "partitioner", "murmur2_random", err) || !es_kafka_conf_set(conf, "linger.ms", "1", err) ||
        !es_kafka_conf_set(conf, "message.timeout.ms", tmo, err) || !es_kafka_conf_set(conf, "request.timeout.ms", req, err) ||
        !es_kafka_conf_set(conf, "queue.buffering.max.kbytes", "16384", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);
    rd_kafka_conf_set_opaque(conf, r);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        es_error_set(err, ES_EFATAL, "kafka producer: %s", errstr);
    }
    return rk;
}

/* After a fatal error (librdkafka 2.0.2's idempotence bugs): purge, let the
 * purged records fail their waiters, and start a new producer. */
static void recreate_producer(es_replies *r)
{
    es_error err = {0};
    es_warn("the Kafka producer hit a fatal error; recreating it");
    pthread_rwlock_wrlock(&r->plock);
    rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(r->producer, 1000);
    rd_kafka_destroy(r->producer);
    r->producer = NULL;
    while (!(r->producer = make_producer(r, &err)) && !atomic_load(&r->stop)) {
        es_err("cannot recreate the producer, retrying", "error", err.text);
        es_sleep_ms(1000);
    }
    atomic_store(&r->fatal, false);
    pthread_rwlock_unlock(&r->plock);
}

static void *poll_main(void *arg)
{
    es_replies *r = arg;
    es_log_set_component("gateway");
    while (!atomic_load(&r->stop)) {
        pthread_rwlock_rdlock(&r->plock);
        if (r->producer)
            rd_kafka_poll(r->producer, 50);
        pthread_rwlock_unlock(&r->plock);
        if (atomic_load(&r->fatal))
            recreate_producer(r);
        /* Deadlines: collect under the lock, answer outside it. */
        waiter *expired = NULL;
        int64_t now = es_clock_mono_ms();
        pthread_mutex_lock(&r->mu);
        while (r->head && r->head->deadline_ms <= now) {
            waiter *w = r->head;
            unlink_waiter(r, w);
            w->hnext = expired;
            expired = w;
        }
        pthread_mutex_unlock(&r->mu);
        while (expired) {
            waiter *w = expired;
            expired = w->hnext;
            es_warn(w->delivered ? "no reply in time" : "command not acknowledged by Kafka in time",
                    "command_id", w->id);
            finish(w, w->delivered ? ES_REPLY_TIMEOUT : ES_REPLY_UNAVAILABLE, 0, NULL, 0);
        }
    }
    return NULL;
}

/* --- reply consumer ------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Skip one JSON value (already validated by jansson). */
static const char *skip_value(const char *p, const char *end)
{
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (!p)
                    return NULL;
                p--;
            } else if (*p == '{' || *p == '[')
                depth++;
            else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\t' &&
           *p != '\r')
        p++;
    return p;
}

/* The exact bytes of the top-level member "body" of a JSON object. */
static bool body_span(const char *text, size_t len, const char **start, size_t *n)
{
    const char *p = skip_ws(text, text + len), *end = text + len;
    if (p >= end || *p != '{')
        return false;
    p++;
    for (;;) {
        p = skip_ws(p, end);
        if (p >= end || *p != '"')
            return false;
        const char *kstart = p + 1, *kend = skip_string(p, end);
        if (!kend)
            return false;
        bool is_body = kend - 1 - kstart == 4 && memcmp(kstart, "body", 4) == 0;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':')
            return false;
        p = skip_ws(p + 1, end);
        const char *vend = skip_value(p, end);
        if (!vend)
            return false;
        if (is_body) {
            *start = p;
            *n = (size_t)(vend - p);
            return true;
        }
        p = skip_ws(vend, end);
        if (p >= end || *p != ',')
            return false;
        p++;
    }
}

static void handle_reply(es_replies *r, const rd_kafka_message_t *m)
{
    char id[DOM_UUID_LEN + 1];
    if (!m->key || m->key_len != DOM_UUID_LEN)
        return;
    memcpy(id, m->key, DOM_UUID_LEN);
    id[DOM_UUID_LEN] = '\0';
    pthread_mutex_lock(&r->mu);
    bool ours = find(r, id) != NULL;
    pthread_mutex_unlock(&r->mu);
    if (!ours)
        return; /* another gateway's, or one whose caller is gone */
    const char *text = m->payload ? m->payload : "";
    json_error_t jerr;
    json_t *reply = json_loadb(text, m->len, 0, &jerr);
    json_t *status = json_object_get(reply, "httpStatus");
    const char *body = NULL;
    size_t blen = 0;
    bool ok = json_is_integer(status) && json_integer_value(status) >= 100 && json_integer_value(status) <= 599 &&
              json_is_object(json_object_get(reply, "body")) && body_span(text, m->len, &body, &blen);
    int http = ok ? (int)json_integer_value(status) : 0;
    json_decref(reply);
    waiter *w = take(r, id, 0);
    if (!w)
        return;
    if (!ok) {
        es_err("malformed reply", "command_id", id, "topic", rd_kafka_topic_name(m->rkt), "partition",
               es_log_i64(m->partition), "offset", es_log_i64(m->offset));
        finish(w, ES_REPLY_MALFORMED, 0, NULL, 0);
        return;
    }
    finish(w, ES_REPLY_OK, http, body, blen);
}

/* Partition count of the reply topic, or -1 when Kafka does not answer. */
static int partition_count(rd_kafka_t *rk, const char *topic, int timeout_ms)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int n = -1;
    if (rkt && rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
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

/* Partitions added since the start: read them from their beginning (every
 * record in them is newer than the start). */
static void add_new_partitions(es_replies *r)
{
    int n = partition_count(r->consumer, r->topic, 2000);
    if (n <= r->partitions || n > MAX_PARTITIONS)
        return;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n - r->partitions);
    for (int p = r->partitions; p < n; p++)
        rd_kafka_topic_partition_list_add(l, r->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_error_t *e = rd_kafka_incremental_assign(r->consumer, l);
    if (e) {
        es_warn("cannot read new reply partitions", "error", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        es_info("reading new reply partitions", "topic", r->topic, "partitions", es_log_i64(n));
        r->partitions = n;
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void *consumer_main(void *arg)
{
    es_replies *r = arg;
    es_log_set_component("gateway");
    int64_t next_check = es_clock_mono_ms() + 10000;
    while (!atomic_load(&r->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
        if (m) {
            if (!m->err)
                handle_reply(r, m);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                es_warn("reply consumer", "error", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        }
        if (es_clock_mono_ms() >= next_check) {
            add_new_partitions(r);
            next_check = es_clock_mono_ms() + 10000;
        }
    }
    return NULL;
}

static rd_kafka_t *make_consumer(es_replies *r, es_error *err)
{
    char errstr[512];
    rd_kafka_conf_t *conf = es_kafka_conf(r->brokers, r->client_id, err);
    if (!conf)
        return NULL;
    /* Assigned, never subscribed: the group id is never joined or committed.
     * Small prefetch queues keep the gateway's memory small. */
    if (!es_kafka_conf_set(conf, "group.id", "factord-gateway-replies", err) || !es_kafka_conf_set(conf, "enable.auto.commit", "false", err) ||
        !es_kafka_conf_set(conf, "enable.auto.offset.store", "false", err) || !es_kafka_conf_set(conf, "enable.partition.eof", "false", err) ||
        !es_kafka_conf_set(conf, "queued.min.messages", "1000", err) || !es_kafka_conf_set(conf, "queued.max.messages.kbytes", "2048", err) ||
        !es_kafka_conf_set(conf, "max.partition.fetch.bytes", "262144", err) || !es_kafka_conf_set(conf, "fetch.wait.max.ms", "100", err)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        es_error_set(err, ES_EFATAL, "kafka consumer: %s", errstr);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Assign every partition at its high watermark: replies produced from now
 * on are read, older ones never. */
static es_result assign_at_end(es_replies *r, es_error *err)
{
    int n = partition_count(r->consumer, r->topic, 10000);
    if (n < 0)
        return es_error_set(err, ES_ETRANSIENT, "Kafka at %s does not answer", r->brokers);
    if (n == 0)
        return es_error_set(err, ES_ETRANSIENT, "reply topic %s does not exist (yet)", r->topic);
    if (n > MAX_PARTITIONS)
        return es_error_set(err, ES_EINVAL, "reply topic %s has %d partitions", r->topic, n);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(r->consumer, r->topic, p, &lo, &hi, 10000);
        if (e) {
            rd_kafka_topic_partition_list_destroy(l);
            return es_error_set(err, ES_ETRANSIENT, "reply topic %s [%d]: %s", r->topic, p, rd_kafka_err2str(e));
        }
        rd_kafka_topic_partition_list_add(l, r->topic, p)->offset = hi;
    }
    rd_kafka_resp_err_t e = rd_kafka_assign(r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (e)
        return es_error_set(err, ES_EFATAL, "assign %s: %s", r->topic, rd_kafka_err2str(e));
    r->partitions = n;
    return ES_OK;
}

es_result es_replies_new(const es_replies_opts *o, es_replies **out, es_error *err)
{
    es_result rc = ES_EFATAL;
    es_replies *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->brokers = strdup(o->brokers);
    r->topic = strdup(o->reply_topic);
    r->client_id = strdup(o->client_id ? o->client_id : "factord-gateway");
    if (!r->brokers || !r->topic || !r->client_id)
        abort();
    r->timeout_ms = o->timeout_ms;
    r->next_ticket = 1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_rwlock_init(&r->plock, NULL);
    if (!(r->consumer = make_consumer(r, err)) || !(r->producer = make_producer(r, err))) {
        rc = ES_EINVAL;
        goto fail;
    }
    if ((rc = assign_at_end(r, err)) != ES_OK)
        goto fail;
    if (pthread_create(&r->consumer_thread, NULL, consumer_main, r) != 0)
        goto fail_threads;
    if (pthread_create(&r->poll_thread, NULL, poll_main, r) != 0) {
        atomic_store(&r->stop, true);
        pthread_join(r->consumer_thread, NULL);
        goto fail_threads;
    }
    r->threads_started = true;
    es_info("reading replies", "topic", r->topic, "partitions", es_log_i64(r->partitions));
    *out = r;
    return ES_OK;
fail_threads:
    rc = es_error_set(err, ES_EFATAL, "cannot start the reply threads");
fail:
    es_replies_free(r);
    return rc;
}

void es_replies_free(es_replies *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, true);
    if (r->threads_started) {
        pthread_join(r->consumer_thread, NULL);
        pthread_join(r->poll_thread, NULL);
    }
    pthread_mutex_lock(&r->mu);
    waiter *all = NULL;
    while (r->head) {
        waiter *w = r->head;
        unlink_waiter(r, w);
        w->hnext = all;
        all = w;
    }
    pthread_mutex_unlock(&r->mu);
    while (all) {
        waiter *w = all;
        all = w->hnext;
        finish(w, ES_REPLY_SHUTDOWN, 0, NULL, 0);
    }
    if (r->producer) {
        /* What is still queued would reach Kafka with nobody waiting: drop
         * it; flushing serves the reports that free the tags. */
        rd_kafka_purge(r->producer, RD_KAFKA_PURGE_F_QUEUE);
        rd_kafka_flush(r->producer, 2000);
        rd_kafka_destroy(r->producer);
    }
    if (r->consumer) {
        rd_kafka_consumer_close(r->consumer);
        rd_kafka_destroy(r->consumer);
    }
    pthread_rwlock_destroy(&r->plock);
    pthread_mutex_destroy(&r->mu);
    free(r->brokers);
    free(r->topic);
    free(r->client_id);
    free(r);
}

es_result es_replies_send(es_replies *r, const char *topic, const char *key, size_t key_len, const char *value,
                          size_t value_len, const char *cmd_id, es_reply_cb cb, void *ctx, es_error *err)
{
    if (strlen(cmd_id) != DOM_UUID_LEN)
        return es_error_set(err, ES_EINVAL, "command id must be a canonical UUID");
    waiter *w = calloc(1, sizeof *w);
    dr_tag *tag = malloc(sizeof *tag);
    if (!w || !tag)
        abort();
    memcpy(w->id, cmd_id, DOM_UUID_LEN + 1);
    w->cb = cb;
    w->ctx = ctx;
    w->deadline_ms = es_clock_mono_ms() + r->timeout_ms;
    pthread_mutex_lock(&r->mu);
    if (find(r, cmd_id)) {
        pthread_mutex_unlock(&r->mu);
        free(w);
        free(tag);
        return es_error_set(err, ES_ECONFLICT, "a request for this command id is in progress");
    }
    w->ticket = r->next_ticket++;
    unsigned b = bucket_of(cmd_id);
    w->hnext = r->buckets[b];
    r->buckets[b] = w;
    w->prev = r->tail;
    if (r->tail)
        r->tail->next = w;
    else
        r->head = w;
    r->tail = w;
    r->pending++;
    tag->ticket = w->ticket;
    memcpy(tag->id, cmd_id, DOM_UUID_LEN + 1);
    int64_t deadline = w->deadline_ms;
    pthread_mutex_unlock(&r->mu);
    /* From here on w may be answered (and freed) by another thread. */

    rd_kafka_resp_err_t e;
    for (;;) {
        pthread_rwlock_rdlock(&r->plock);
        e = r->producer ? rd_kafka_producev(r->producer, RD_KAFKA_V_TOPIC(topic),
                                            RD_KAFKA_V_KEY((void *)key, key_len),
                                            RD_KAFKA_V_VALUE((void *)value, value_len),
                                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(tag),
                                            RD_KAFKA_V_END)
                        : RD_KAFKA_RESP_ERR__STATE;
        pthread_rwlock_unlock(&r->plock);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL && e != RD_KAFKA_RESP_ERR__STATE)
            break;
        if (es_clock_mono_ms() >= deadline || atomic_load(&r->stop))
            break;
        es_sleep_ms(5); /* the poll thread drains the queue meanwhile */
    }
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        uint64_t ticket = tag->ticket;
        free(tag); /* not enqueued: no report will come for it */
        waiter *mine = take(r, cmd_id, ticket);
        if (mine) {
            es_warn("cannot enqueue the command", "command_id", cmd_id, "error", rd_kafka_err2str(e));
            finish(mine, ES_REPLY_UNAVAILABLE, 0, NULL, 0);
        }
    }
    return ES_OK;
}

bool es_replies_ping(es_replies *r, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    pthread_rwlock_rdlock(&r->plock);
    bool ok = r->producer && rd_kafka_metadata(r->producer, 0, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR;
    pthread_rwlock_unlock(&r->plock);
    if (md)
        rd_kafka_metadata_destroy(md);
    return ok;
}

size_t es_replies_pending(es_replies *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->pending;
    pthread_mutex_unlock(&r->mu);
    return n;
}
