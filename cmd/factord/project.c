/*
 * cmd/factord/project.c - `factord project`: the read-model projector.
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
 * SIGTERM/SIGINT finish the batch in hand, or abandon it while PostgreSQL
 * or Kafka is away (nothing is half-done: it is re-read on restart).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/clock.h"
#include "infra/crypto/codecrypt.h"
#include "infra/base/failpoint.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"
#include "infra/components/projector.h"
#include "infra/pg/store.h"
#include "infra/base/util.h"

/* The first schema version with the read models (0008). */
#define PROJECT_SCHEMA_MIN 8
#define BACKOFF_MAX_MS 5000

static int64_t next_backoff(int64_t ms) { return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2; }

/* Connect to PostgreSQL, retrying with backoff until it answers or a stop. */
static es_store *connect_store(const es_config *cfg)
{
    int64_t backoff = 100;
    for (;;) {
        es_store *st = NULL;
        es_error err = {0};
        int version = 0;
        es_result rc = es_store_open(cfg->database_url, &st, &err);
        if (rc == ES_OK)
            rc = es_store_schema_version(st, &version, &err);
        if (rc == ES_OK && version >= PROJECT_SCHEMA_MIN)
            return st;
        es_store_free(st);
        if (rc == ES_OK) {
            es_err("the read-model tables are missing: run `factord migrate` first", "schema_version",
                   es_log_i64(version), "needed", es_log_i64(PROJECT_SCHEMA_MIN));
            return NULL;
        }
        if (rc != ES_ETRANSIENT) {
            es_err("cannot use PostgreSQL", "error", err.text, "sqlstate", err.sqlstate);
            return NULL;
        }
        es_warn("PostgreSQL is not reachable, retrying", "error", err.text, "retry_ms", es_log_i64(backoff));
        es_sleep_ms(backoff);
        if (fd_stop)
            return NULL;
        backoff = next_backoff(backoff);
    }
}

/* Note m's offset in offs (the highest + 1 per partition). */
static void note_offset(rd_kafka_topic_partition_list_t *offs, const rd_kafka_message_t *m)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(offs, topic, m->partition);
    if (!tp) {
        tp = rd_kafka_topic_partition_list_add(offs, topic, m->partition);
        tp->offset = m->offset + 1;
    } else if (m->offset + 1 > tp->offset) {
        tp->offset = m->offset + 1;
    }
}

/* The relay's factord-reply-to header of m into topic ("" when absent or
 * not a topic name). */
static void reply_header(const rd_kafka_message_t *m, char topic[DOM_TOPIC_MAX])
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *val = NULL;
    size_t size = 0;
    topic[0] = '\0';
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, ES_REPLY_TO_HEADER, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !val || size == 0 || size >= DOM_TOPIC_MAX)
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
static bool decode_event(const rd_kafka_message_t *m, dom_evt *evt)
{
    es_error err = {0};
    es_result rc = dom_evt_decode(m->payload, m->len, evt, &err);
    if (rc == ES_OK)
        return true;
    /* Not ours to fix: the log in PostgreSQL is the truth, and a foreign
     * record on the events topic must not stop every read model. */
    es_err("undecodable record on the events topic; skipped", "topic", rd_kafka_topic_name(m->rkt), "partition",
           es_log_i64(m->partition), "offset", es_log_i64(m->offset), "reason", err.text);
    return false;
}

/* Produce the replies and wait until Kafka acknowledged all of them,
 * retrying (a fatal producer error recreates the producer) until they are
 * delivered or a stop. */
static bool deliver(es_producer *prod, const es_reply *replies, size_t n)
{
    int64_t backoff = 100;
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
                    es_log_i64((long long)n), "retry_ms", es_log_i64(backoff));
        }
        es_sleep_ms(backoff);
        backoff = next_backoff(backoff);
        if (fd_stop) {
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
    rd_kafka_topic_partition_list_t *offs;
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
    if (f->offs)
        rd_kafka_topic_partition_list_destroy(f->offs);
    f->offs = NULL;
    f->active = false;
    f->resend = false;
}

/* Send a committed batch's replies (no waiting) and keep them in f, which
 * takes offs. */
static void inflight_start(inflight *f, es_producer *prod, const es_reply *replies, size_t n,
                           rd_kafka_topic_partition_list_t *offs, const es_project_stats *ps)
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
static bool inflight_finish(inflight *f, es_producer *prod, rd_kafka_t *rk, unsigned long long totals[4])
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
    if (!ok && !deliver(prod, f->replies, f->n)) {
        inflight_clear(f);
        return false;
    }
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(rk, f->offs);
    if (e) /* a partition revoked meanwhile: its next owner re-reads, harmlessly */
        es_warn("storing offsets", "error", rd_kafka_err2str(e));
    totals[0] += f->stats.applied;
    totals[1] += f->stats.skipped;
    totals[2] += f->stats.gaps;
    totals[3] += f->stats.replies;
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
    rd_kafka_topic_partition_list_t *offs;
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
    _Atomic bool stop; /* the applier stops (fd_stop is the other reason) */
    rd_kafka_t *rk;
    size_t max;
    int64_t linger_ms;
    es_consumer_poll cp; /* the reader thread's polling state */
} reader;

static bool reader_stopping(const reader *r) { return fd_stop || r->stop; }

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
    if (b->offs)
        rd_kafka_topic_partition_list_destroy(b->offs);
    memset(b, 0, sizeof *b);
}

/* Fill b: up to max records, ending linger_ms after the first (or at a
 * stop). Each message is destroyed in the iteration that polled it. */
static void batch_fill(reader *r, batch *b)
{
    b->n = b->polled = 0;
    b->undecodable = 0;
    b->offs = rd_kafka_topic_partition_list_new(8);
    while (b->polled < r->max && !reader_stopping(r)) {
        rd_kafka_message_t *m = es_consumer_next(r->rk, &r->cp, b->polled, r->linger_ms);
        if (!m) {
            if (b->polled)
                break;
            continue;
        }
        b->polled++;
        note_offset(b->offs, m);
        if (decode_event(m, &b->evts[b->n])) {
            reply_header(m, b->topics[b->n]);
            b->n++;
        } else {
            b->undecodable++;
        }
        rd_kafka_message_destroy(m);
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
            rd_kafka_topic_partition_list_destroy(r->b[i].offs);
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

int fd_project_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "project", fd_project_loop);
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

int fd_project_loop(const es_config *cfgp)
{
    const es_config cfg = *cfgp; /* borrowed strings; never freed here */
    es_log_set_component("project");
    int exit_code = 1;
    es_error err = {0};
    es_store *st = NULL;
    es_projector *proj = NULL;
    es_producer *prod = NULL;
    rd_kafka_t *rk = NULL;
    reader rd = {.ready = -1, .free_ = {true, true}};
    bool reader_started = false;
    pthread_t reader_thread;
    inflight fly = {0};
    splitter sp = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    unsigned char keybytes[32];
    es_codekey ck;

    const char *brokers = cfg.kafka_brokers;
    if (es_config_code_key(&cfg, keybytes, &err) != ES_OK) {
        /* The projector decrypts the codes of returnCode replies. */
        es_err("cannot start the projector", "error", err.text);
        exit_code = 2;
        goto out;
    }
    es_codekey_init(&ck, keybytes);
    explicit_bzero(keybytes, sizeof keybytes);

    st = connect_store(&cfg);
    if (!st) {
        if (fd_stop)
            exit_code = 0;
        goto out;
    }
    const char *topics[] = {cfg.events_topic, cfg.replies_topic};
    while (!cfg.skip_topic_creation &&
           es_kafka_ensure_topics(brokers, topics, 2, (int)cfg.topic_partitions, 10000, &err) != ES_OK) {
        es_warn("cannot ensure topics, retrying", "error", err.text);
        es_sleep_ms(2000);
        if (fd_stop) {
            exit_code = 0;
            goto out;
        }
    }
    if (es_producer_new(brokers, "factord-projector", &prod, &err) != ES_OK) {
        es_err("cannot create the producer", "error", err.text);
        goto out;
    }
    es_producer_prime(prod, cfg.replies_topic, 5000);
    const char *sub[] = {cfg.events_topic};
    if (es_consumer_new(brokers, cfg.projector_group, (int)cfg.session_timeout_ms, sub, 1, &rk, &err) != ES_OK) {
        es_err("cannot create the consumer", "error", err.text);
        goto out;
    }
    es_projector_opts po = {.code_key = &ck};
    proj = es_projector_new(st, &po);
    if (cfg.projector_split_min > 0) {
        sp.st = connect_store(&cfg);
        if (!sp.st) {
            if (fd_stop)
                exit_code = 0;
            goto out;
        }
        sp.proj = es_projector_new(sp.st, &po);
        if (pthread_create(&sp.th, NULL, splitter_main, &sp) != 0) {
            es_err("cannot start the second applying thread");
            goto out;
        }
        sp.started = true;
    }
    rd.rk = rk;
    rd.max = (size_t)cfg.projector_batch_max;
    rd.linger_ms = cfg.batch_linger_ms;
    batch_alloc(&rd.b[0], rd.max);
    batch_alloc(&rd.b[1], rd.max);
    pthread_mutex_init(&rd.mu, NULL);
    pthread_cond_init(&rd.cv, NULL);
    if (pthread_create(&reader_thread, NULL, reader_main, &rd) != 0) {
        es_err("cannot start the reader thread");
        goto out;
    }
    reader_started = true;
    es_info("projector started", "topic", cfg.events_topic, "group", cfg.projector_group, "batch_max",
            es_log_i64(cfg.projector_batch_max), "split_min", es_log_i64(cfg.projector_split_min), "code_key_id",
            ck.key_id);

    unsigned long long totals[4] = {0}; /* applied, skipped, gaps, replied */
    unsigned long long undecodable = 0;
    int64_t last_report = es_clock_mono_ms();
    for (;;) {
        /* 1. A batch from the reader; while none comes, settle the batch
         * in flight (its offsets), not only when the next one is applied. */
        bool reader_done = false;
        int bi = reader_take(&rd, 50, &reader_done);
        if (bi < 0) {
            if (reader_done)
                break;
            if (fly.active && !inflight_finish(&fly, prod, rk, totals) && fd_stop)
                break;
            continue;
        }
        batch *b = &rd.b[bi];
        size_t n = b->n;
        dom_evt *evts = b->evts;
        undecodable += b->undecodable;
        rd_kafka_topic_partition_list_t *offs = b->offs;
        b->offs = NULL;

        /* 2. Apply and commit. */
        const es_reply *replies = NULL;
        size_t n_replies = 0;
        es_project_stats ps = {0};
        int64_t backoff = 100;
        bool committed = false, fatal = false;
        for (;;) {
            es_result rc = apply_batch(&sp, proj, (size_t)cfg.projector_split_min, evts, b->reply_to, n, &replies,
                                       &n_replies, &ps, &err);
            if (rc == ES_OK) {
                committed = true;
                break;
            }
            if (rc != ES_ETRANSIENT) {
                es_err("cannot apply a batch; stopping", "error", err.text, "sqlstate", err.sqlstate);
                fatal = true;
                break;
            }
            es_warn("PostgreSQL unavailable, retrying the batch", "error", err.text, "retry_ms",
                    es_log_i64(backoff));
            es_sleep_ms(backoff);
            backoff = next_backoff(backoff);
            if (fd_stop) {
                es_warn("stopping with an unapplied batch; it will be read again", "events",
                        es_log_i64((long long)n));
                break;
            }
            es_error rerr = {0};
            if (es_store_reset(st, &rerr) != ES_OK)
                es_debug("reconnect failed", "error", rerr.text);
            if (sp.st && es_store_reset(sp.st, &rerr) != ES_OK)
                es_debug("reconnect failed (second connection)", "error", rerr.text);
        }

        /* 3. Replies after the commit, offsets after the replies: the
         * previous batch is settled first, then this one takes its place. */
        if (committed) {
            es_failpoint("project.after_commit");
            if (inflight_finish(&fly, prod, rk, totals)) {
                inflight_start(&fly, prod, replies, n_replies, offs, &ps);
                offs = NULL;
            }
        }
        if (offs)
            rd_kafka_topic_partition_list_destroy(offs);
        /* The replies in flight are copies: the buffer can be refilled. */
        reader_release(&rd, bi);
        if (fatal)
            goto out;
        if (fd_stop && !committed)
            break;
        if (es_clock_mono_ms() - last_report >= 10000) {
            last_report = es_clock_mono_ms();
            es_info("progress", "applied", es_log_i64((long long)totals[0]), "skipped",
                    es_log_i64((long long)totals[1]), "replies", es_log_i64((long long)totals[3]), "gaps",
                    es_log_i64((long long)totals[2]), "undecodable", es_log_i64((long long)undecodable));
        }
    }
    if (fly.active && !inflight_finish(&fly, prod, rk, totals))
        es_warn("stopping with undelivered replies; their batch will be read again");
    es_info("projector stopping", "applied", es_log_i64((long long)totals[0]), "skipped",
            es_log_i64((long long)totals[1]), "replies", es_log_i64((long long)totals[3]), "gaps",
            es_log_i64((long long)totals[2]), "undecodable", es_log_i64((long long)undecodable), "fetch_wakeups",
            es_log_i64((long long)rd.cp.wakeups));
    exit_code = 0;
out:
    if (reader_started) {
        rd.stop = true; /* after a fatal error too */
        pthread_join(reader_thread, NULL);
        pthread_mutex_destroy(&rd.mu);
        pthread_cond_destroy(&rd.cv);
    }
    if (rk) {
        rd_kafka_consumer_close(rk); /* commits the stored offsets, leaves the group */
        rd_kafka_destroy(rk);
    }
    inflight_clear(&fly);
    free(fly.replies);
    splitter_stop(&sp);
    es_projector_free(sp.proj);
    es_store_free(sp.st);
    free(sp.idxs);
    free(sp.merged);
    es_projector_free(proj); /* before the batches: its replies point into them */
    batch_free(&rd.b[0]);
    batch_free(&rd.b[1]);
    es_producer_free(prod);
    es_store_free(st);
    explicit_bzero(&ck, sizeof ck);
    return exit_code;
}
