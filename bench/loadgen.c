/*
 * bench/loadgen.c - the end-to-end load generator of bench/run.
 *
 * Produces commands to factord's commands topic (key = user id, through
 * factord's own idempotent producer, infra/kafka/kafka.c) and reads their replies
 * from the replies topic (key = command id), which it assigns from the
 * current end of every partition before the first send. Command ids carry
 * the run tag, the phase and the command's index, so a reply is matched to
 * its send without a map, and replies of other phases or runs are ignored.
 * Modes:
 *   import  ImportHumanUser (verified phone: 2 events) for users first..;
 *           as fast as the producer takes them
 *   burst   AddMyAuthFactorOTPSMS for users first..; as fast as the producer
 *           takes them
 *   paced   AddMyAuthFactorOTPSMS for users first.. at a fixed rate; each
 *           send is timestamped, each reply too
 * Prints one JSON object on stdout: count, ok (HTTP 200 replies), errors,
 * seconds from the first send to the last reply, per_s, and for paced the
 * latency percentiles from send to reply in milliseconds. Exit 1 when not
 * every command got a reply in time, 2 on bad usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infra/kafka/kafka.h"
#include "infra/base/log.h"

enum { PHASE_IMPORT = 1, PHASE_ADD = 2 };

typedef struct {
    const char *mode, *brokers, *commands, *replies, *instance, *owner;
    uint32_t tag;
    long first, count;
    double rate;
    int timeout_s, partitions;
} opts;

typedef struct {
    rd_kafka_t *rk;
    const opts *o;
    int phase;
    int64_t *recv_ns;           /* by index - first; 0 = no reply yet */
    int64_t *decided_ns;        /* the event's creationDate (the decision), on
                                   the monotonic clock; 0 = not in the reply */
    int64_t rt_minus_mono_ns;   /* wall clock - monotonic clock */
    atomic_long received, ok, errors;
    atomic_int stop;
} reader;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* "2026-11-25T19:50:13.123456Z" -> ns since the epoch, or 0. */
static int64_t parse_rfc3339_ns(const char *s)
{
    struct tm tm = {0};
    int used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &used) != 6 || used != 19)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    const char *p = s + used;
    int64_t ns = (int64_t)timegm(&tm) * 1000000000;
    if (*p == '.') {
        int64_t scale = 100000000;
        for (p++; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ns += (*p - '0') * scale;
    }
    return *p == 'Z' ? ns : 0;
}

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "loadgen: error: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: factord_bench_loadgen import|burst|paced --brokers B --commands TOPIC --replies TOPIC\n"
            "         --instance ID --tag HEX8 --first N --count N [--rate PER_S] [--partitions N]\n"
            "         [--timeout-s S]\n");
    exit(2);
}

static void command_id(char *out, size_t len, uint32_t tag, int phase, long i)
{
    snprintf(out, len, "%08" PRIx32 "-%04x-4000-8000-%012lx", tag, (unsigned)phase, (unsigned long)i);
}

/* The index of a command id of this run and phase, or -1. */
static long parse_id(const reader *r, const char *key, size_t len)
{
    char buf[40];
    if (len != 36)
        return -1;
    memcpy(buf, key, 36);
    buf[36] = '\0';
    char *end;
    unsigned long tag = strtoul(buf, &end, 16);
    if (end != buf + 8 || tag != r->o->tag || strtoul(buf + 9, &end, 16) != (unsigned long)r->phase)
        return -1;
    long i = (long)strtoul(buf + 24, &end, 16) - r->o->first;
    return i >= 0 && i < r->o->count ? i : -1;
}

static void *read_replies(void *arg)
{
    reader *r = arg;
    while (!atomic_load(&r->stop) && atomic_load(&r->received) < r->o->count) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 100);
        if (!m)
            continue;
        int64_t t = now_ns();
        long i = m->err ? -1 : parse_id(r, m->key, m->key_len);
        if (i >= 0 && !r->recv_ns[i]) {
            r->recv_ns[i] = t;
            char head[512];
            size_t n = m->len < sizeof head - 1 ? m->len : sizeof head - 1;
            memcpy(head, m->payload, n);
            head[n] = '\0';
            const char *s = strstr(head, "\"httpStatus\":");
            const char *cd = strstr(head, "\"creationDate\":\"");
            int64_t d = cd ? parse_rfc3339_ns(cd + sizeof "\"creationDate\":\"" - 1) : 0;
            if (d)
                r->decided_ns[i] = d - r->rt_minus_mono_ns;
            if (s && atoi(s + sizeof "\"httpStatus\":" - 1) == 200)
                atomic_fetch_add(&r->ok, 1);
            else
                atomic_fetch_add(&r->errors, 1);
            atomic_fetch_add(&r->received, 1);
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* A consumer of every partition of the replies topic, from its current end. */
static rd_kafka_t *replies_consumer(const opts *o)
{
    es_error err = {0};
    char errstr[512], group[64];
    rd_kafka_conf_t *conf = es_kafka_conf(o->brokers, "factord-bench-replies", &err);
    snprintf(group, sizeof group, "factord-bench-%08" PRIx32, o->tag);
    if (!conf || rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", "5", errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
        die("replies consumer configuration", err.text[0] ? err.text : errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    if (!rk)
        die("replies consumer", errstr);
    rd_kafka_poll_set_consumer(rk);
    /* A topic created a moment ago may have no leader yet: retry ~20 s. */
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->replies, NULL);
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    int parts = 0;
    for (int attempt = 0; attempt < 100; attempt++) {
        const struct rd_kafka_metadata *md = NULL;
        e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
        if (!e && (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1))
            e = md->topic_cnt == 1 && md->topics[0].err ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        if (!e)
            parts = md->topics[0].partition_cnt;
        if (md)
            rd_kafka_metadata_destroy(md);
        if (!e)
            break;
        struct timespec ts = {0, 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    rd_kafka_topic_destroy(rkt);
    if (e)
        die("metadata of the replies topic", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_t *tpl = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++) {
        int64_t hi = 0;
        for (int attempt = 0; attempt < 100; attempt++) {
            e = es_kafka_list_offset(rk, o->replies, p, RD_KAFKA_OFFSET_END, 10000, &hi);
            if (!e)
                break;
            struct timespec ts = {0, 200 * 1000000};
            nanosleep(&ts, NULL);
        }
        if (e)
            die("end offsets of the replies topic", rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_add(tpl, o->replies, p)->offset = hi;
    }
    e = rd_kafka_assign(rk, tpl);
    rd_kafka_topic_partition_list_destroy(tpl);
    if (e)
        die("assign the replies topic", rd_kafka_err2str(e));
    return rk;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[n], in milliseconds. */
static double pct_ms(const int64_t *v, long n, double p)
{
    long k = (long)(p * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1e6;
}

static long arg_long(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    opts o = {.owner = "org-bench", .rate = 2000, .timeout_s = 600, .partitions = 4, .count = -1};
    if (argc < 2)
        usage();
    o.mode = argv[1];
    const char *tag = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--brokers"))
            o.brokers = v;
        else if (!strcmp(a, "--commands"))
            o.commands = v;
        else if (!strcmp(a, "--replies"))
            o.replies = v;
        else if (!strcmp(a, "--instance"))
            o.instance = v;
        else if (!strcmp(a, "--tag"))
            tag = v;
        else if (!strcmp(a, "--first"))
            o.first = arg_long(v);
        else if (!strcmp(a, "--count"))
            o.count = arg_long(v);
        else if (!strcmp(a, "--rate"))
            o.rate = (double)arg_long(v);
        else if (!strcmp(a, "--partitions"))
            o.partitions = (int)arg_long(v);
        else if (!strcmp(a, "--timeout-s"))
            o.timeout_s = (int)arg_long(v);
        else
            usage();
    }
    int phase = !strcmp(o.mode, "import") ? PHASE_IMPORT
              : (!strcmp(o.mode, "burst") || !strcmp(o.mode, "paced")) ? PHASE_ADD : 0;
    if (!phase || !o.brokers || !o.commands || !o.replies || !o.instance || !tag || o.count <= 0 ||
        o.rate <= 0 || o.partitions < 1)
        usage();
    o.tag = (uint32_t)strtoul(tag, NULL, 16);
    es_log_init("bench", getenv("FACTORD_LOG_LEVEL") ? getenv("FACTORD_LOG_LEVEL") : "warn");

    es_error err = {0};
    const char *topics[] = {o.commands, o.replies};
    es_topic_spec spec = {.partitions = o.partitions};
    if (es_kafka_ensure_topics(o.brokers, topics, 2, &spec, 10000, &err) != ES_OK)
        die("ensure topics", err.text);

    reader r = {.o = &o, .phase = phase};
    r.recv_ns = calloc((size_t)o.count, sizeof *r.recv_ns);
    r.decided_ns = calloc((size_t)o.count, sizeof *r.decided_ns);
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    r.rt_minus_mono_ns = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec - now_ns();
    int64_t *send_ns = calloc((size_t)o.count, sizeof *send_ns);
    if (!r.recv_ns || !r.decided_ns || !send_ns)
        abort();
    r.rk = replies_consumer(&o);
    pthread_t th;
    if (pthread_create(&th, NULL, read_replies, &r) != 0)
        die("reader thread", NULL);

    es_producer *prod = NULL;
    if (es_producer_new(o.brokers, "factord-bench-loadgen", &prod, &err) != ES_OK)
        die("producer", err.text);

    char id[40], user[32], value[1024];
    int64_t t0 = now_ns(), lag_max = 0;
    for (long i = 0; i < o.count; i++) {
        long u = o.first + i;
        command_id(id, sizeof id, o.tag, phase, u);
        snprintf(user, sizeof user, "u%ld", u);
        int n;
        if (phase == PHASE_IMPORT)
            n = snprintf(value, sizeof value,
                         "{\"id\":\"%s\",\"type\":\"ImportHumanUser\",\"instanceId\":\"%s\",\"userId\":\"%s\","
                         "\"resourceOwner\":\"%s\",\"replyTo\":\"%s\",\"payload\":{\"userName\":\"%s\","
                         "\"profile\":{\"firstName\":\"Ada\",\"lastName\":\"Lovelace\"},"
                         "\"email\":{\"email\":\"ada@example.com\",\"isEmailVerified\":true},"
                         "\"phone\":{\"phone\":\"+41791234567\",\"isPhoneVerified\":true}}}",
                         id, o.instance, user, o.owner, o.replies, user);
        else
            n = snprintf(value, sizeof value,
                         "{\"id\":\"%s\",\"type\":\"AddMyAuthFactorOTPSMS\",\"instanceId\":\"%s\","
                         "\"userId\":\"%s\",\"resourceOwner\":\"%s\",\"replyTo\":\"%s\",\"payload\":{}}",
                         id, o.instance, user, o.owner, o.replies);
        if (n < 0 || (size_t)n >= sizeof value)
            die("command too long", NULL);
        if (!strcmp(o.mode, "paced")) {
            int64_t target = t0 + (int64_t)((double)i * 1e9 / o.rate);
            int64_t t = now_ns();
            if (t < target) {
                struct timespec ts = {.tv_sec = target / 1000000000, .tv_nsec = target % 1000000000};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
                }
            } else if (t - target > lag_max) {
                lag_max = t - target;
            }
        }
        send_ns[i] = now_ns();
        if (es_producer_send(prod, o.commands, user, strlen(user), value, (size_t)n, NULL, &err) != ES_OK)
            die("produce", err.text);
    }
    int64_t t_sent = now_ns();
    size_t failed = 0;
    if (es_producer_flush(prod, 60000, &failed, &err) != ES_OK)
        die("flush", err.text);
    int64_t t_acked = now_ns();

    /* Wait for the replies: give up after timeout_s, or 60 s without one. */
    long last = -1;
    int64_t progress = now_ns(), deadline = t0 + (int64_t)o.timeout_s * 1000000000;
    while (atomic_load(&r.received) < o.count) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
        long got = atomic_load(&r.received);
        int64_t t = now_ns();
        if (got != last) {
            last = got;
            progress = t;
        }
        if (t > deadline || t - progress > (int64_t)60 * 1000000000)
            break;
    }
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    long got = atomic_load(&r.received);

    int64_t t_last = t0;
    int64_t *lat = calloc((size_t)o.count, sizeof *lat);
    long nl = 0;
    for (long i = 0; i < o.count; i++) {
        if (!r.recv_ns[i])
            continue;
        if (r.recv_ns[i] > t_last)
            t_last = r.recv_ns[i];
        lat[nl++] = r.recv_ns[i] - send_ns[i];
    }
    /* FACTORD_BENCH_LATENCY_DUMP=FILE (paced mode): one line per replied
     * command, in send order: ms since the first send, latency ms, ms to
     * the decision (-1 when unknown). For finding when the slow ones
     * happen. */
    const char *dump = getenv("FACTORD_BENCH_LATENCY_DUMP");
    if (dump && *dump && !strcmp(o.mode, "paced")) {
        FILE *f = fopen(dump, "w");
        if (!f)
            die("cannot write FACTORD_BENCH_LATENCY_DUMP", dump);
        for (long i = 0; i < o.count; i++)
            if (r.recv_ns[i])
                fprintf(f, "%.3f %.3f %.3f\n", (double)(send_ns[i] - t0) / 1e6,
                        (double)(r.recv_ns[i] - send_ns[i]) / 1e6,
                        r.decided_ns[i] ? (double)(r.decided_ns[i] - send_ns[i]) / 1e6 : -1.0);
        fclose(f);
    }
    qsort(lat, (size_t)nl, sizeof *lat, cmp_i64);
    /* The split at the decision (the event's creation time, the
     * processor's wall clock, microseconds): Kafka in + batching + deciding,
     * then commit + relay + Kafka + projector + reply. */
    int64_t *to_dec = calloc((size_t)o.count, sizeof *to_dec), *from_dec = calloc((size_t)o.count, sizeof *from_dec);
    long nd = 0;
    int64_t t_decided = t0;
    for (long i = 0; i < o.count; i++) {
        if (!r.recv_ns[i] || !r.decided_ns[i])
            continue;
        if (r.decided_ns[i] > t_decided)
            t_decided = r.decided_ns[i];
        to_dec[nd] = r.decided_ns[i] - send_ns[i];
        from_dec[nd++] = r.recv_ns[i] - r.decided_ns[i];
    }
    qsort(to_dec, (size_t)nd, sizeof *to_dec, cmp_i64);
    qsort(from_dec, (size_t)nd, sizeof *from_dec, cmp_i64);
    double secs = (double)(t_last - t0) / 1e9;
    printf("{\"mode\":\"%s\",\"count\":%ld,\"replies\":%ld,\"ok\":%ld,\"errors\":%ld,"
           "\"seconds\":%.3f,\"per_s\":%.0f,\"produce_s\":%.3f,\"acked_s\":%.3f",
           o.mode, o.count, got, atomic_load(&r.ok), atomic_load(&r.errors), secs,
           secs > 0 ? (double)got / secs : 0.0, (double)(t_sent - t0) / 1e9, (double)(t_acked - t0) / 1e9);
    if (nl)
        printf(",\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,\"p999_ms\":%.2f,\"max_ms\":%.2f",
               pct_ms(lat, nl, 0.50), pct_ms(lat, nl, 0.90), pct_ms(lat, nl, 0.99), pct_ms(lat, nl, 0.999),
               (double)lat[nl - 1] / 1e6);
    if (nd)
        printf(",\"decided_s\":%.3f,\"decided_per_s\":%.0f", (double)(t_decided - t0) / 1e9,
               t_decided > t0 ? (double)nd / ((double)(t_decided - t0) / 1e9) : 0.0);
    if (nd)
        printf(",\"to_decision_p50_ms\":%.2f,\"to_decision_p99_ms\":%.2f,"
               "\"decision_to_reply_p50_ms\":%.2f,\"decision_to_reply_p99_ms\":%.2f",
               pct_ms(to_dec, nd, 0.50), pct_ms(to_dec, nd, 0.99), pct_ms(from_dec, nd, 0.50),
               pct_ms(from_dec, nd, 0.99));
    if (!strcmp(o.mode, "paced"))
        printf(",\"rate\":%.0f,\"offered_per_s\":%.0f,\"send_lag_max_ms\":%.2f", o.rate,
               (double)o.count / ((double)(t_sent - t0) / 1e9), (double)lag_max / 1e6);
    printf("}\n");
    fflush(stdout);

    rd_kafka_consumer_close(r.rk);
    rd_kafka_destroy(r.rk);
    es_producer_free(prod);
    free(lat);
    free(to_dec);
    free(from_dec);
    free(r.decided_ns);
    free(send_ns);
    free(r.recv_ns);
    if (got < o.count) {
        fprintf(stderr, "loadgen: %ld of %ld commands got no reply in time\n", o.count - got, o.count);
        return 1;
    }
    return 0;
}
