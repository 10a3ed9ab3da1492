/*
 * infra/components/projector_loop.c - `factord project`'s loop (see
 * projector_loop.h): the reader, the split applier and the replies in flight.
 *
 * A reader thread polls the events topic in batches (at most
 * FACTORD_PROJECTOR_BATCH_MAX records: what is queued, or arrives within
 * FACTORD_BATCH_LINGER_MS of the first) in its own consumer group
 * (FACTORD_PROJECTOR_GROUP) and decodes them into one of two batch
 * buffers while the main thread applies the other: decoding overlaps
 * PostgreSQL's work. The main thread applies each batch to the read models
 * in one PostgreSQL transaction (infra/components/projector.c: exactly once per event,
 * by the user's applied sequence), and after that COMMIT produces the
 * success replies of the commands whose last event was in the batch. The
 * batch's offsets are stored only once Kafka has acknowledged every one of
 * its replies; meanwhile the next batch is polled and applied (one batch in
 * flight: before a batch's replies are sent, the previous batch's are
 * waited for, sent again if they failed, and its offsets stored, so
 * offsets are stored in order). A crash at any point re-reads what was not
 * stored: the events are skipped in PostgreSQL and the replies sent again,
 * identically (at least once).
 * A batch of FACTORD_PROJECTOR_SPLIT_MIN events or more is applied as two
 * halves at once, by users (a hash of instance and user id): the main thread
 * applies one on its connection, a helper thread the other on a second
 * connection, each in its own transaction. A user's events stay in one half
 * and in order; the halves lock disjoint rows. The batch counts as applied
 * when both have committed; if one fails, the whole batch is applied again,
 * and the half that had committed is skipped by its applied sequences (its
 * replies are built again all the same). In a catch-up PostgreSQL's work
 * was most of the time and ran on one core (docs/performance.md).
 * A stop finishes the batch in hand, or abandon it while PostgreSQL
 * or Kafka is away (nothing is half-done: it is re-read on restart).
 */
#include "infra/components/projector_loop.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"
#include "infra/base/util.h"
#include "infra/pg/piikeys.h"

/* The relay's factord-reply-to header of m into topic ("" when absent or
 * not a topic name). */
static void reply_header(const es_kafka_msg *m, char topic[DOM_TOPIC_MAX])
{
    const void *val = NULL;
    size_t size = 0;
    topic[0] = '\0';
    if (!es_kafka_msg_header(m, ES_REPLY_TO_HEADER, &val, &size) || !val || size == 0 || size >= DOM_TOPIC_MAX)
        return;
    const char *v = val;
    for (size_t i = 0; i < size; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return;
    }
    memcpy(topic, v, size);
    topic[size] = '\0';
}

/* Decode one record into evt; false (logged) when it is not an event. */
static bool decode_event(const es_record *m, dom_evt *evt)
{
    es_error err = {0};
    es_result rc = dom_evt_decode(m->value, m->value_len, evt, &err);
    if (rc == ES_OK)
        return true;
    /* Not ours to fix: the log in PostgreSQL is the truth, and a foreign
     * record on the events topic must not stop every read model. */
    es_err("undecodable record on the events topic; skipped", "topic", m->topic, "partition",
           es_log_i64(m->partition), "offset", es_log_i64(m->offset), "reason", err.text);
    return false;
}

/* Produce the replies and wait until Kafka acknowledged all of them,
 * retrying (a fatal producer error recreates the producer) until they are
 * delivered or a stop. */
static bool deliver(es_producer *prod, const es_reply *replies, size_t n, const es_stop_flag *stop)
{
    es_backoff backoff = ES_BACKOFF_DEFAULT;
    while (n) {
        es_error err = {0};
        es_result rc = ES_OK;
        for (size_t i = 0; i < n && rc == ES_OK; i++)
            rc = es_producer_send(prod, replies[i].topic, replies[i].key, replies[i].key_len, replies[i].value,
                                  replies[i].value_len, NULL, &err);
        if (rc == ES_OK) {
            size_t failed = 0;
            rc = es_producer_flush(prod, 30000, &failed, &err);
        }
        if (rc == ES_OK)
            return true;
        if (rc == ES_EFATAL) {
            es_warn("producer fatal error; recreating it and sending the batch's replies again", "error", err.text);
            es_error rerr = {0};
            if (es_producer_recreate(prod, &rerr) != ES_OK)
                es_warn("cannot recreate the producer yet", "error", rerr.text);
        } else {
            es_warn("replies not delivered; sending them again", "error", err.text, "replies",
                    es_log_i64((long long)n), "retry_ms", es_log_i64(backoff.next_ms));
        }
        if (!es_backoff_sleep(&backoff, stop)) {
            es_warn("stopping with undelivered replies; the batch will be read again", "replies",
                    es_log_i64((long long)n));
            return false;
        }
    }
    return true;
}

/* A committed batch whose replies are on their way. Its offsets are
 * stored once Kafka acknowledged all of them; it owns copies of the
 * replies, to send them again after a failure. */
typedef struct {
    bool active;
    bool resend;   /* a send failed: flushing is not enough */
    es_offsets *offs;
    es_reply *replies;
    size_t n, cap;
    es_project_stats stats;
} inflight;

static void inflight_clear(inflight *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free((char *)f->replies[i].topic);
        free((char *)f->replies[i].key);
        /* a returnCode reply holds a phone code */
        explicit_bzero((char *)f->replies[i].value, f->replies[i].value_len);
        free((char *)f->replies[i].value);
    }
    f->n = 0;
    es_offsets_free(f->offs);
    f->offs = NULL;
    f->active = false;
    f->resend = false;
}

/* Send a committed batch's replies (no waiting) and keep them in f, which
 * takes offs. */
static void inflight_start(inflight *f, es_producer *prod, const es_reply *replies, size_t n,
                           es_offsets *offs, const es_project_stats *ps)
{
    if (n > f->cap) {
        f->replies = realloc(f->replies, n * sizeof *f->replies);
        if (!f->replies)
            abort();
        f->cap = n;
    }
    for (size_t i = 0; i < n; i++) {
        es_reply *c = &f->replies[i];
        c->topic = es_memdup(replies[i].topic, strlen(replies[i].topic));
        c->key = es_memdup(replies[i].key, replies[i].key_len);
        c->key_len = replies[i].key_len;
        c->value = es_memdup(replies[i].value, replies[i].value_len);
        c->value_len = replies[i].value_len;
    }
    f->n = n;
    f->offs = offs;
    f->stats = *ps;
    f->active = true;
    f->resend = false;
    es_error err = {0};
    for (size_t i = 0; i < n && !f->resend; i++)
        if (es_producer_send(prod, replies[i].topic, replies[i].key, replies[i].key_len, replies[i].value,
                             replies[i].value_len, NULL, &err) != ES_OK) {
            es_warn("cannot send a reply; the batch's replies will be sent again", "error", err.text);
            f->resend = true;
        }
}

/* Wait until the batch in flight has every reply acknowledged (sending
 * them again after a failure, until a stop), then store its offsets.
 * False: stopping with replies undelivered (its offsets stay unstored). */
static bool inflight_finish(inflight *f, es_producer *prod, es_consumer *c, es_project_totals *totals,
                            const es_stop_flag *stop)
{
    if (!f->active)
        return true;
    bool ok = false;
    if (!f->resend) {
        es_error err = {0};
        size_t failed = 0;
        es_result rc = es_producer_flush(prod, 30000, &failed, &err);
        ok = rc == ES_OK;
        if (!ok)
            es_warn("replies not delivered; sending the batch's replies again", "error", err.text, "replies",
                    es_log_i64((long long)f->n));
        if (rc == ES_EFATAL) {
            es_error rerr = {0};
            if (es_producer_recreate(prod, &rerr) != ES_OK)
                es_warn("cannot recreate the producer yet", "error", rerr.text);
        }
    }
    if (!ok && !deliver(prod, f->replies, f->n, stop)) {
        inflight_clear(f);
        return false;
    }
    es_consumer_store(c, f->offs);
    totals->applied += f->stats.applied;
    totals->skipped += f->stats.skipped;
    totals->gaps += f->stats.gaps;
    totals->replies += f->stats.replies;
    inflight_clear(f);
    return true;
}

/* One polled batch: decoded events, each one's reply-topic header, and the
 * offsets to store once it is applied and replied. */
typedef struct {
    dom_evt *evts;
    char (*topics)[DOM_TOPIC_MAX]; /* each event's factord-reply-to ("" none) */
    const char **reply_to;         /* pointers into topics */
    size_t n, polled;
    unsigned long long undecodable;
    es_offsets *offs;
} batch;

/* The reader thread and the applier hand two batch buffers back and forth:
 * the reader fills a free one while the applier works on the other. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    batch b[2];
    int ready;      /* a filled batch waiting for the applier, or -1 */
    bool free_[2];  /* b[i] may be filled */
    bool done;      /* the reader has stopped */
    _Atomic bool stop; /* the applier stops (the caller's stop flag is the other reason) */
    const es_stop_flag *ext_stop;
    es_consumer *c;
    size_t max;
    int64_t linger_ms;
} reader;

static bool reader_stopping(const reader *r) { return es_stopping(r->ext_stop) || r->stop; }

/* Wait on r->cv for up to ms (r->mu held). */
static void reader_wait(reader *r, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
}

static void batch_alloc(batch *b, size_t max)
{
    b->evts = calloc(max, sizeof *b->evts);
    b->topics = calloc(max, sizeof *b->topics);
    b->reply_to = calloc(max, sizeof *b->reply_to);
    if (!b->evts || !b->topics || !b->reply_to)
        abort();
    for (size_t i = 0; i < max; i++)
        b->reply_to[i] = b->topics[i];
}

static void batch_free(batch *b)
{
    free(b->evts);
    free(b->topics);
    free(b->reply_to);
    es_offsets_free(b->offs);
    memset(b, 0, sizeof *b);
}

/* Fill b: up to max records, ending linger_ms after the first (or at a
 * stop). Each message is destroyed in the iteration that polled it. */
static void batch_fill(reader *r, batch *b)
{
    b->n = b->polled = 0;
    b->undecodable = 0;
    b->offs = es_offsets_new();
    while (b->polled < r->max && !reader_stopping(r)) {
        es_record rec;
        es_kafka_msg *m = es_consumer_next(r->c, b->polled, r->linger_ms, &rec);
        if (!m) {
            if (b->polled)
                break;
            continue;
        }
        b->polled++;
        es_offsets_note(b->offs, &rec);
        if (decode_event(&rec, &b->evts[b->n])) {
            reply_header(m, b->topics[b->n]);
            b->n++;
        } else {
            b->undecodable++;
        }
        es_kafka_msg_free(m);
    }
}

static void *reader_main(void *arg)
{
    reader *r = arg;
    es_log_set_component("project");
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int i = r->free_[0] ? 0 : r->free_[1] ? 1 : -1;
        while (i < 0 && !reader_stopping(r)) {
            reader_wait(r, 100);
            i = r->free_[0] ? 0 : r->free_[1] ? 1 : -1;
        }
        if (i < 0) { /* a stop while both buffers are busy */
            r->done = true;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        r->free_[i] = false;
        pthread_mutex_unlock(&r->mu);

        batch_fill(r, &r->b[i]);

        pthread_mutex_lock(&r->mu);
        /* While this batch was filled the applier took the previous one,
         * and it takes one batch at a time: wait until the slot is free. */
        while (r->ready >= 0 && !r->stop)
            reader_wait(r, 100);
        if (r->b[i].polled && r->ready < 0) {
            r->ready = i;
        } else {
            es_offsets_free(r->b[i].offs);
            r->b[i].offs = NULL;
            r->free_[i] = true;
        }
        bool stop = reader_stopping(r);
        if (stop)
            r->done = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (stop)
            return NULL;
    }
}

/* The next filled batch (its index), or -1 when none came within wait_ms;
 * *done: the reader has stopped and nothing is left. */
static int reader_take(reader *r, int wait_ms, bool *done)
{
    pthread_mutex_lock(&r->mu);
    if (r->ready < 0 && !r->done)
        reader_wait(r, wait_ms);
    int i = r->ready;
    r->ready = -1;
    *done = i < 0 && r->done;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return i;
}

static void reader_release(reader *r, int i)
{
    pthread_mutex_lock(&r->mu);
    r->free_[i] = true;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* --- applying a batch, split over two connections --------------------------- */

typedef struct {
    /* the helper: a second connection and projector, and its thread */
    es_store *st;
    es_projector *proj;
    pthread_t th;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool job, done, quit;
    /* its job and result */
    const dom_evt *evts;
    const char *const *reply_to;
    const size_t *idx;
    size_t n;
    es_result rc;
    es_error err;
    const es_reply *replies;
    size_t n_replies;
    es_project_stats stats;
    /* the split (both halves' indices in one array) and the merged
     * replies, kept between batches */
    size_t *idxs;
    size_t idxs_cap;
    es_reply *merged;
    size_t merged_cap;
} splitter;

static void *splitter_main(void *arg)
{
    splitter *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->job && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->quit)
            break;
        pthread_mutex_unlock(&s->mu);
        es_error err = {0};
        es_result rc = es_projector_run_subset(s->proj, s->evts, s->reply_to, s->idx, s->n, &s->replies,
                                               &s->n_replies, &s->stats, &err);
        pthread_mutex_lock(&s->mu);
        s->rc = rc;
        s->err = err;
        s->job = false;
        s->done = true;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The half a user's events go to. */
static int split_half(const dom_evt *e)
{
    uint32_t h = 2166136261u; /* FNV-1a over "instance\0user" */
    for (const char *c = e->instance_id; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    h *= 16777619u;
    for (const char *c = e->aggregate_id; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    return (int)(h >> 31);
}

/* Apply evts: on proj alone when the batch is short (or no helper), else
 * in two halves at once. Replies and stats as es_projector_run_batch's; the
 * worse result of the two halves (a fatal error over a transient one). */
static es_result apply_batch(splitter *s, es_projector *proj, size_t split_min, const dom_evt *evts,
                             const char *const *reply_to, size_t n, const es_reply **replies, size_t *n_replies,
                             es_project_stats *ps, es_error *err)
{
    if (!s->started || split_min == 0 || n < split_min)
        return es_projector_run_batch(proj, evts, reply_to, n, replies, n_replies, ps, err);
    ES_GROW(s, idxs, 2 * n);
    size_t *half[2] = {s->idxs, s->idxs + n};
    size_t count[2] = {0, 0};
    for (size_t i = 0; i < n; i++) {
        int h = split_half(&evts[i]);
        half[h][count[h]++] = i;
    }
    if (!count[0] || !count[1])
        return es_projector_run_batch(proj, evts, reply_to, n, replies, n_replies, ps, err);

    pthread_mutex_lock(&s->mu);
    s->evts = evts;
    s->reply_to = reply_to;
    s->idx = half[1];
    s->n = count[1];
    s->done = false;
    s->job = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);

    const es_reply *r0 = NULL;
    size_t n0 = 0;
    es_project_stats st0 = {0};
    es_result rc0 = es_projector_run_subset(proj, evts, reply_to, half[0], count[0], &r0, &n0, &st0, err);

    pthread_mutex_lock(&s->mu);
    while (!s->done)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);

    if (rc0 != ES_OK || s->rc != ES_OK) {
        if (rc0 == ES_OK || (s->rc == ES_EFATAL && rc0 != ES_EFATAL)) {
            if (err)
                *err = s->err;
            return s->rc;
        }
        return rc0;
    }
    size_t total = n0 + s->n_replies;
    ES_GROW(s, merged, total);
    if (n0)
        memcpy(s->merged, r0, n0 * sizeof *r0);
    if (s->n_replies)
        memcpy(s->merged + n0, s->replies, s->n_replies * sizeof *s->replies);
    *replies = s->merged;
    *n_replies = total;
    ps->applied = st0.applied + s->stats.applied;
    ps->skipped = st0.skipped + s->stats.skipped;
    ps->gaps = st0.gaps + s->stats.gaps;
    ps->replies = total;
    ps->attempts = st0.attempts > s->stats.attempts ? st0.attempts : s->stats.attempts;
    return ES_OK;
}

static void splitter_stop(splitter *s)
{
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->quit = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
        s->started = false;
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}


typedef struct {
    const es_projector_loop_opts *o;
    splitter *sp;
    const batch *b;
    const es_reply **replies;
    size_t *n_replies;
    es_project_stats *ps;
} apply_try;

static es_result apply_attempt(void *ctx, es_error *err)
{
    apply_try *t = ctx;
    /* Sealed personal data in clear for the read models: one key read per
     * batch, on the main connection (docs/pii.md, "Reading"). */
    es_result rc = es_piikeys_open(t->o->st, es_store_pii_master(t->o->st), t->b->evts, t->b->n, err);
    if (rc != ES_OK)
        return rc;
    return apply_batch(t->sp, t->o->proj, t->o->split_min, t->b->evts, t->b->reply_to, t->b->n, t->replies,
                       t->n_replies, t->ps, err);
}

static es_result apply_reconnect(void *ctx, es_error *err)
{
    apply_try *t = ctx;
    es_result rc = es_store_reset(t->o->st, err);
    es_error rerr = {0};
    if (t->o->st2 && es_store_reset(t->o->st2, &rerr) != ES_OK)
        es_debug("reconnect failed (second connection)", "error", rerr.text);
    return rc;
}

/* A committed batch into the metrics (docs/metrics.md): events applied
 * and skipped, the batch's duration, and how far behind the log the read
 * models are: the age of the newest event applied (0 when caught up and
 * idle is not shown: an idle projector applies nothing). */
static void count_batch(const batch *b, const es_project_stats *ps, double seconds)
{
    static const char help[] = "Events the projector read, by result (applied; skipped: at or below the user's "
                               "applied sequence, a redelivery)";
    es_metric_add(es_metrics_counter("factord_projector_events_total", help, "result=\"applied\""), ps->applied);
    es_metric_add(es_metrics_counter("factord_projector_events_total", help, "result=\"skipped\""), ps->skipped);
    es_metric_observe(es_metrics_histogram("factord_projector_batch_duration_seconds",
                                           "Time to apply and commit one batch of events, retries included", "",
                                           es_metrics_seconds_buckets, es_metrics_seconds_buckets_n),
                      seconds);
    int64_t newest = 0, now = es_clock_now_us();
    es_metric *reply = es_metrics_histogram("factord_reply_latency_seconds",
                                            "From a command's decision (its last event's creation) to the commit "
                                            "of the read models, when its success reply is handed to the producer",
                                            "", es_metrics_seconds_buckets, es_metrics_seconds_buckets_n);
    for (size_t i = 0; i < b->n; i++) {
        const dom_evt *e = &b->evts[i];
        if (e->created_at_us > newest)
            newest = e->created_at_us;
        if (e->last_of_command && now >= e->created_at_us)
            es_metric_observe(reply, (double)(now - e->created_at_us) / 1e6);
    }
    if (newest > 0) {
        double behind = (double)(now - newest) / 1e6;
        es_metric_set(es_metrics_gauge("factord_projector_behind_seconds",
                                       "Age of the newest event of the last applied batch: how far the read models "
                                       "trail the log while events flow",
                                       ""),
                      behind > 0 ? behind : 0);
    }
}

static void log_totals(const char *msg, const es_project_totals *t)
{
    es_info(msg, "applied", es_log_i64((long long)t->applied), "skipped", es_log_i64((long long)t->skipped),
            "replies", es_log_i64((long long)t->replies), "gaps", es_log_i64((long long)t->gaps), "undecodable",
            es_log_i64((long long)t->undecodable));
}

es_result es_projector_loop(const es_projector_loop_opts *o, const es_stop_flag *stop, es_project_totals *totals,
                            es_error *err)
{
    es_result out = ES_OK;
    reader rd = {.ready = -1, .free_ = {true, true}, .ext_stop = stop, .c = o->consumer, .max = o->batch_max,
                 .linger_ms = o->linger_ms};
    bool reader_started = false;
    pthread_t reader_thread;
    inflight fly = {0};
    splitter sp = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .st = o->st2, .proj = o->proj2};
    es_producer *prod = o->producer;

    if (o->split_min > 0 && o->proj2) {
        if (pthread_create(&sp.th, NULL, splitter_main, &sp) != 0) {
            es_err("cannot start the second applying thread");
            out = es_error_set(err, ES_EFATAL, "cannot start the second applying thread");
            goto out;
        }
        sp.started = true;
    }
    batch_alloc(&rd.b[0], rd.max);
    batch_alloc(&rd.b[1], rd.max);
    pthread_mutex_init(&rd.mu, NULL);
    pthread_cond_init(&rd.cv, NULL);
    if (pthread_create(&reader_thread, NULL, reader_main, &rd) != 0) {
        es_err("cannot start the reader thread");
        out = es_error_set(err, ES_EFATAL, "cannot start the reader thread");
        pthread_mutex_destroy(&rd.mu);
        pthread_cond_destroy(&rd.cv);
        goto out;
    }
    reader_started = true;

    int64_t last_report = es_clock_mono_ms();
    for (;;) {
        /* 1. A batch from the reader; while none comes, settle the batch
         * in flight (its offsets), not only when the next one is applied. */
        bool reader_done = false;
        int bi = reader_take(&rd, 50, &reader_done);
        if (bi < 0) {
            if (reader_done)
                break;
            if (fly.active && !inflight_finish(&fly, prod, o->consumer, totals, stop) && es_stopping(stop))
                break;
            continue;
        }
        batch *b = &rd.b[bi];
        totals->undecodable += b->undecodable;
        es_offsets *offs = b->offs;
        b->offs = NULL;

        /* 2. Apply and commit. */
        const es_reply *replies = NULL;
        size_t n_replies = 0;
        es_project_stats ps = {0};
        int64_t started_us = es_clock_mono_us();
        apply_try t = {.o = o, .sp = &sp, .b = b, .replies = &replies, .n_replies = &n_replies, .ps = &ps};
        es_retry r = {.what = "PostgreSQL unavailable, retrying the batch",
                      .attempt = apply_attempt,
                      .before_retry = apply_reconnect,
                      .ctx = &t};
        es_result rc = es_retry_run(&r, stop, err);
        bool committed = rc == ES_OK;
        if (rc == ES_ETRANSIENT) {
            es_warn("stopping with an unapplied batch; it will be read again", "events",
                    es_log_i64((long long)b->n));
        } else if (rc != ES_OK) {
            es_err("cannot apply a batch; stopping", "error", err->text, "sqlstate", err->sqlstate);
            out = rc;
        }

        /* 3. Replies after the commit, offsets after the replies: the
         * previous batch is settled first, then this one takes its place. */
        if (committed) {
            count_batch(b, &ps, (double)(es_clock_mono_us() - started_us) / 1e6);
            es_failpoint("project.after_commit");
            if (inflight_finish(&fly, prod, o->consumer, totals, stop)) {
                inflight_start(&fly, prod, replies, n_replies, offs, &ps);
                offs = NULL;
            }
        }
        es_offsets_free(offs);
        /* The replies in flight are copies: the buffer can be refilled. */
        reader_release(&rd, bi);
        if (out != ES_OK)
            goto out;
        if (es_stopping(stop) && !committed)
            break;
        if (es_clock_mono_ms() - last_report >= 10000) {
            last_report = es_clock_mono_ms();
            log_totals("progress", totals);
        }
    }
    if (fly.active && !inflight_finish(&fly, prod, o->consumer, totals, stop))
        es_warn("stopping with undelivered replies; their batch will be read again");
out:
    if (reader_started) {
        rd.stop = true; /* after a fatal error too */
        pthread_join(reader_thread, NULL);
        pthread_mutex_destroy(&rd.mu);
        pthread_cond_destroy(&rd.cv);
    }
    inflight_clear(&fly);
    free(fly.replies);
    splitter_stop(&sp);
    free(sp.idxs);
    free(sp.merged);
    batch_free(&rd.b[0]);
    batch_free(&rd.b[1]);
    return out;
}
