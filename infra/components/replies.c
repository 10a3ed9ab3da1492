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
 * Kafka is reached only through its adapter: the producer that reports
 * each record (infra/kafka/tracked.h) and the consumer that reads the
 * reply topic from its end (infra/kafka/tail.h).
 */
#include "infra/components/replies.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/kafka/tail.h"
#include "infra/kafka/tracked.h"

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
    int timeout_ms;
    es_tracked_producer *producer;
    es_tail *consumer;
    pthread_mutex_t mu;
    waiter *buckets[NBUCKETS];
    waiter *head, *tail;
    size_t pending;
    uint64_t next_ticket;
    atomic_bool stop;
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

/* A delivery report (es_tracked_report_cb): a failure answers the waiter
 * now, a success marks it delivered (a later timeout is then "no reply"). */
static void on_report(void *ctx, void *t, bool delivered, const char *error)
{
    es_replies *r = ctx;
    dr_tag *tag = t;
    if (!delivered) {
        waiter *w = take(r, tag->id, tag->ticket);
        if (w) {
            es_warn("command not delivered to Kafka", "command_id", tag->id, "error", error);
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

/* After a fatal error (librdkafka 2.0.2's idempotence bugs): the purged
 * records fail their waiters, and a new producer takes over. */
static void recreate_producer(es_replies *r)
{
    es_error err = {0};
    es_warn("the Kafka producer hit a fatal error; recreating it");
    while (es_tracked_recreate(r->producer, &err) != ES_OK && !atomic_load(&r->stop)) {
        es_err("cannot recreate the producer, retrying", "error", err.text);
        es_sleep_ms(1000);
    }
}

static void *poll_main(void *arg)
{
    es_replies *r = arg;
    es_log_set_component("gateway");
    while (!atomic_load(&r->stop)) {
        es_error err = {0};
        if (es_tracked_poll(r->producer, 50, &err) == ES_EFATAL)
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

/* One record of the reply topic (es_tail_cb). */
static void handle_reply(void *ctx, const es_tail_record *m)
{
    es_replies *r = ctx;
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
    const char *text = m->value ? m->value : "";
    json_error_t jerr;
    json_t *reply = json_loadb(text, m->value_len, 0, &jerr);
    json_t *status = json_object_get(reply, "httpStatus");
    const char *body = NULL;
    size_t blen = 0;
    bool ok = json_is_integer(status) && json_integer_value(status) >= 100 && json_integer_value(status) <= 599 &&
              json_is_object(json_object_get(reply, "body")) && body_span(text, m->value_len, &body, &blen);
    int http = ok ? (int)json_integer_value(status) : 0;
    json_decref(reply);
    waiter *w = take(r, id, 0);
    if (!w)
        return;
    if (!ok) {
        es_err("malformed reply", "command_id", id, "topic", m->topic, "partition",
               es_log_i64(m->partition), "offset", es_log_i64(m->offset));
        finish(w, ES_REPLY_MALFORMED, 0, NULL, 0);
        return;
    }
    finish(w, ES_REPLY_OK, http, body, blen);
}

static void *consumer_main(void *arg)
{
    es_replies *r = arg;
    es_log_set_component("gateway");
    while (!atomic_load(&r->stop))
        es_tail_poll(r->consumer, 100, handle_reply, r);
    return NULL;
}

es_result es_replies_new(const es_replies_opts *o, es_replies **out, es_error *err)
{
    es_result rc = ES_OK;
    const char *client_id = o->client_id ? o->client_id : "factord-gateway";
    es_replies *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->timeout_ms = o->timeout_ms;
    r->next_ticket = 1;
    pthread_mutex_init(&r->mu, NULL);
    /* Assigned, never subscribed: the group id is never joined or committed. */
    es_tail_opts to = {.brokers = o->brokers,
                       .client_id = client_id,
                       .group = "factord-gateway-replies",
                       .topic = o->reply_topic,
                       .what = "reply",
                       .max_partitions = MAX_PARTITIONS};
    if ((rc = es_tail_new(&to, &r->consumer, err)) != ES_OK)
        goto out;
    /* Delivery gives up when the caller does: a command is either in Kafka
     * when the wait ends, or reported undelivered then. */
    es_tracked_opts po = {.brokers = o->brokers,
                          .client_id = client_id,
                          .delivery_timeout_ms = o->timeout_ms,
                          .on_report = on_report,
                          .ctx = r};
    if (es_tracked_new(&po, &r->producer, err) != ES_OK) {
        rc = ES_EINVAL;
        goto out;
    }
    if (pthread_create(&r->consumer_thread, NULL, consumer_main, r) != 0) {
        rc = es_error_set(err, ES_EFATAL, "cannot start the reply threads");
        goto out;
    }
    if (pthread_create(&r->poll_thread, NULL, poll_main, r) != 0) {
        atomic_store(&r->stop, true);
        pthread_join(r->consumer_thread, NULL);
        rc = es_error_set(err, ES_EFATAL, "cannot start the reply threads");
        goto out;
    }
    r->threads_started = true;
    es_info("reading replies", "topic", o->reply_topic, "partitions", es_log_i64(es_tail_partitions(r->consumer)));
    *out = r;
    r = NULL;
out:
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
    /* What is still queued would reach Kafka with nobody waiting: the
     * producer drops it, and its reports free the tags. */
    es_tracked_free(r->producer);
    es_tail_free(r->consumer);
    pthread_mutex_destroy(&r->mu);
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

    es_error perr = {0};
    es_result rc;
    for (;;) {
        rc = es_tracked_send(r->producer, topic, key, key_len, value, value_len, tag, &perr);
        if (rc != ES_ETRANSIENT)
            break;
        if (es_clock_mono_ms() >= deadline || atomic_load(&r->stop))
            break;
        es_sleep_ms(5); /* the poll thread drains the queue meanwhile */
    }
    if (rc != ES_OK) {
        uint64_t ticket = tag->ticket;
        free(tag); /* not enqueued: no report will come for it */
        waiter *mine = take(r, cmd_id, ticket);
        if (mine) {
            es_warn("cannot enqueue the command", "command_id", cmd_id, "error", perr.text);
            finish(mine, ES_REPLY_UNAVAILABLE, 0, NULL, 0);
        }
    }
    return ES_OK;
}

bool es_replies_ping(es_replies *r, int timeout_ms) { return es_tracked_ping(r->producer, timeout_ms); }

size_t es_replies_pending(es_replies *r)
{
    pthread_mutex_lock(&r->mu);
    size_t n = r->pending;
    pthread_mutex_unlock(&r->mu);
    return n;
}
