/*
 * tests/chaos/gen.c - the chaos soak's load generator (scripts/chaos.sh).
 *
 * Produces N command records to the commands topic at a steady rate, keyed
 * by user id, for U users spread over I instances: every command type, users
 * imported before they act (and imported again after RemoveUser), racing
 * pairs for one user, repeated commands (same id, same bytes), reused ids
 * with other content, and malformed records (not JSON; readable id but an
 * unknown field, a missing type, a wrong type). Deterministic for a seed:
 * the same stream of records, whatever the timing.
 *
 * It must keep producing while the broker restarts: the producer is
 * idempotent (acks=all) with a long message timeout, and a record whose
 * delivery failed (or that a fatal producer error purged; the producer is
 * then recreated) is produced again, so every record reaches the topic at
 * least once. A record sent twice that way is a same-content repeat, which
 * factord must answer identically anyway.
 *
 * At the end it writes a manifest, one line per record, tab-separated:
 *   n kind id instance user type sent_ms partition delivered copies token
 * kind: cmd (new command), dup (same id, same bytes as an earlier one),
 * diff (same id as an earlier one, other content), bad (malformed, id
 * readable), badnoid (not JSON); token: a string the record's value holds
 * (dead-letter look-up); sent_ms: wall clock of the first produce call.
 * Exit 0 when every record was delivered, 1 otherwise, 2 on usage errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infra/kafka/kafka.h"
#include "infra/base/log.h"

enum kind { K_CMD, K_DUP, K_DIFF, K_BAD, K_BADNOID };
static const char *const kind_names[] = {"cmd", "dup", "diff", "bad", "badnoid"};

typedef struct {
    enum kind kind;
    char id[37];
    char instance[24];
    char user[24];
    const char *type;
    char *key;
    char *value;
    char token[48];
    int64_t sent_ms;
    int32_t partition;
    int delivered;  /* 1 once a delivery report said so */
    int copies;     /* produce calls that were accepted */
    int pending;    /* in the producer's queue */
} rec;

typedef struct {
    bool imported;
} user_model;

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: small, fast and the same everywhere for a seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static unsigned rnd_below(unsigned n) { return (unsigned)(rnd() % n); }

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_uuid(char *out)
{
    uint64_t a = rnd(), b = rnd();
    a = (a & ~(uint64_t)0xF000) | (uint64_t)0x4000;                 /* version 4 */
    b = (b >> 2) | ((uint64_t)1 << 63);                             /* RFC 4122 variant */
    snprintf(out, 37, "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, a >> 32,
             (a >> 16) & (uint64_t)0xFFFF, a & (uint64_t)0xFFFF, b >> 48, b & (((uint64_t)1 << 48) - 1));
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        abort();
    return s;
}

static json_t *import_payload(unsigned users, unsigned instances, unsigned u)
{
    char name[32], phone[32];
    unsigned nu = u;
    if (rnd_below(100) == 0) /* a name another user of the instance has: taken, or a race for it */
        nu = (u + instances * (1 + rnd_below(3))) % users;
    snprintf(name, sizeof name, "user-%u", nu);
    json_t *p = json_pack("{s:s, s:{s:s, s:s, s:s}, s:{s:s, s:b}}", "userName", name, "profile", "firstName",
                          "Ada", "lastName", "Lovelace", "preferredLanguage", "en", "email", "email",
                          "ada@example.com", "isEmailVerified", 1);
    unsigned r = rnd_below(10);
    if (r < 9) {
        snprintf(phone, sizeof phone, "+4179%07u", rnd_below(10000000));
        json_object_set_new(p, "phone", json_pack("{s:s, s:b}", "phone", phone, "isPhoneVerified", r < 7));
    }
    return p;
}

static const char *pick_type(void)
{
    static const struct { const char *type; unsigned w; } mix[] = {
        {"AddMyAuthFactorOTPSMS", 25}, {"RemoveMyAuthFactorOTPSMS", 6}, {"SetMyPhone", 12},
        {"VerifyMyPhone", 8}, {"RemoveMyPhone", 5}, {"LockUser", 5}, {"UnlockUser", 5},
        {"DeactivateUser", 4}, {"ReactivateUser", 4}, {"RemoveUser", 2}, {"ImportHumanUser", 2},
    };
    unsigned total = 0;
    for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++)
        total += mix[i].w;
    unsigned r = rnd_below(total);
    for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++) {
        if (r < mix[i].w)
            return mix[i].type;
        r -= mix[i].w;
    }
    return mix[0].type;
}

static json_t *payload_for(const char *type, unsigned users, unsigned instances, unsigned u)
{
    char buf[32];
    if (strcmp(type, "ImportHumanUser") == 0)
        return import_payload(users, instances, u);
    if (strcmp(type, "SetMyPhone") == 0) {
        snprintf(buf, sizeof buf, "+4178%07u", rnd_below(10000000));
        return json_pack("{s:s, s:b}", "phone", buf, "returnCode", rnd_below(2));
    }
    if (strcmp(type, "VerifyMyPhone") == 0) {
        snprintf(buf, sizeof buf, "%06u", rnd_below(1000000));
        return json_pack("{s:s}", "code", buf);
    }
    return json_object();
}

static void fill_user(rec *r, unsigned instances, unsigned u)
{
    snprintf(r->instance, sizeof r->instance, "chaos-%u", u % instances);
    snprintf(r->user, sizeof r->user, "u%u", u);
    r->key = xstrdup(r->user);
}

static json_t *command(const rec *r, const char *type, unsigned u, json_t *payload)
{
    char owner[24];
    if (rnd_below(100) == 0)
        snprintf(owner, sizeof owner, "org-wrong");
    else
        snprintf(owner, sizeof owner, "org-%u", u % 50);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "id", r->id, "type", type, "instanceId", r->instance,
                     "userId", r->user, "resourceOwner", owner, "payload", payload);
}

/* --- producing ------------------------------------------------------------- */

static rec *recs;
static size_t *retry;      /* indexes of records to produce again */
static size_t n_retry;
static size_t n_delivered, n_failed_reports;
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    size_t i = (size_t)(uintptr_t)m->_private;
    rec *r = &recs[i];
    r->pending--;
    if (m->err) {
        n_failed_reports++;
        if (!r->delivered && r->pending == 0)
            retry[n_retry++] = i;
        return;
    }
    if (!r->delivered) {
        r->delivered = 1;
        r->partition = m->partition;
        n_delivered++;
    }
}

static rd_kafka_t *make_producer(const char *brokers)
{
    es_error err = {0};
    char errstr[512];
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, "factord-chaos-gen", &err);
    if (!conf) {
        fprintf(stderr, "chaos-gen: %s\n", err.text);
        exit(2);
    }
    static const char *const props[][2] = {
        {"enable.idempotence", "true"}, {"acks", "all"}, {"partitioner", "murmur2_random"},
        {"linger.ms", "5"}, {"message.timeout.ms", "900000"}, {"compression.codec", "lz4"},
    };
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "chaos-gen: %s: %s\n", props[i][0], errstr);
            exit(2);
        }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "chaos-gen: producer: %s\n", errstr);
        exit(2);
    }
    return rk;
}

/* Produce record i; waits while the local queue is full. False on a fatal
 * producer state (the caller recreates the producer). */
static bool produce(rd_kafka_t *rk, const char *topic, size_t i)
{
    rec *r = &recs[i];
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(r->key, strlen(r->key)),
            RD_KAFKA_V_VALUE(r->value, strlen(r->value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)i), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            r->pending++;
            r->copies++;
            if (!r->sent_ms)
                r->sent_ms = now_ms();
            return true;
        }
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 50);
            continue;
        }
        if (e == RD_KAFKA_RESP_ERR__FATAL)
            return false;
        fprintf(stderr, "chaos-gen: produce: %s; retrying\n", rd_kafka_err2str(e));
        rd_kafka_poll(rk, 200);
    }
}

static rd_kafka_t *check_fatal(rd_kafka_t *rk, const char *brokers)
{
    char why[256];
    if (!rd_kafka_fatal_error(rk, why, sizeof why))
        return rk;
    fprintf(stderr, "chaos-gen: producer fatal error (%s); recreating it, undelivered records go again\n", why);
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk, 2000);
    rd_kafka_poll(rk, 0);
    rd_kafka_destroy(rk);
    return make_producer(brokers);
}

/* Wait until the broker's metadata gives every partition of topic a
 * leader (up to timeout_ms). Records produced to a topic the producer does
 * not know yet wait in librdkafka's queue; in one soak (seed 711944482)
 * the first two records, produced right after the topics were created,
 * stayed queued, were reported delivered after the broker's restart and
 * were not in the log: the soak now starts producing only once the topic
 * is fully known. True when it is. */
static bool wait_leaders(rd_kafka_t *rk, const char *topic, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    bool ok = false;
    while (rkt && !ok && now_ms() < end) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md &&
            md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0) {
            ok = true;
            for (int i = 0; i < md->topics[0].partition_cnt; i++)
                if (md->topics[0].partitions[i].err || md->topics[0].partitions[i].leader < 0)
                    ok = false;
        }
        if (md)
            rd_kafka_metadata_destroy(md);
        if (!ok)
            poll(NULL, 0, 100);
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    return ok;
}

/* Create the topics factord uses, with the broker's append time as the
 * records' timestamps (the soak's recovery figures read them), before any
 * component creates them with defaults. Topics that exist stay as they are. */
static int create_topics(const char *brokers, const char *const *topics, size_t n)
{
    es_error err = {0};
    char errstr[512];
    rd_kafka_conf_t *conf = es_kafka_conf(brokers, "factord-chaos-gen-admin", &err);
    if (!conf) {
        fprintf(stderr, "chaos-gen: %s\n", err.text);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!rk) {
        fprintf(stderr, "chaos-gen: admin client: %s\n", errstr);
        return 2;
    }
    rd_kafka_NewTopic_t *nt[8];
    for (size_t i = 0; i < n; i++) {
        nt[i] = rd_kafka_NewTopic_new(topics[i], 4, -1, errstr, sizeof errstr);
        if (!nt[i] || rd_kafka_NewTopic_set_config(nt[i], "message.timestamp.type", "LogAppendTime")) {
            fprintf(stderr, "chaos-gen: topic %s: %s\n", topics[i], errstr);
            return 2;
        }
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_CreateTopics(rk, nt, n, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
    int rc = 0;
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "chaos-gen: creating topics: %s\n", ev ? rd_kafka_event_error_string(ev) : "no answer");
        rc = 1;
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                fprintf(stderr, "chaos-gen: creating %s: %s\n", rd_kafka_topic_result_name(tr[i]),
                        rd_kafka_err2str(e));
                rc = 1;
            }
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < n; i++)
        rd_kafka_NewTopic_destroy(nt[i]);
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!wait_leaders(rk, topics[i], 30000)) {
            fprintf(stderr, "chaos-gen: %s has no leader for every partition after 30 s\n", topics[i]);
            rc = 1;
        }
    rd_kafka_destroy(rk);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: factord-chaos-gen --brokers B --topic T --out FILE [--commands N] [--users U]\n"
                    "       [--instances I] [--seed S] [--rate R (records/s, 0: as fast as possible)]\n"
                    "       factord-chaos-gen --brokers B --create-topics TOPIC... (LogAppendTime, 4 partitions)\n");
}

int main(int argc, char **argv)
{
    const char *brokers = NULL, *topic = NULL, *out = NULL;
    unsigned long n = 10000, users = 1000, instances = 3, rate = 200;
    unsigned long long seed = 1;
    if (argc >= 4 && argc <= 11 && strcmp(argv[1], "--brokers") == 0 && strcmp(argv[3], "--create-topics") == 0) {
        es_log_init("chaos-gen", "warn");
        return create_topics(argv[2], (const char *const *)argv + 4, (size_t)(argc - 4));
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            usage();
            return 2;
        }
        if (strcmp(a, "--brokers") == 0) brokers = v;
        else if (strcmp(a, "--topic") == 0) topic = v;
        else if (strcmp(a, "--out") == 0) out = v;
        else if (strcmp(a, "--commands") == 0) n = strtoul(v, NULL, 10);
        else if (strcmp(a, "--users") == 0) users = strtoul(v, NULL, 10);
        else if (strcmp(a, "--instances") == 0) instances = strtoul(v, NULL, 10);
        else if (strcmp(a, "--seed") == 0) seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--rate") == 0) rate = strtoul(v, NULL, 10);
        else {
            usage();
            return 2;
        }
        i++;
    }
    if (!brokers || !topic || !out || n == 0 || users == 0 || instances == 0 || instances > users) {
        usage();
        return 2;
    }
    es_log_init("chaos-gen", "warn");
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    /* 1. The records, all made up front (deterministic for the seed). */
    recs = calloc(n, sizeof *recs);
    retry = calloc(n, sizeof *retry);
    user_model *model = calloc(users, sizeof *model);
    if (!recs || !retry || !model)
        abort();
    size_t made = 0;
    size_t last_valid[256]; /* recent new commands, for repeats and reuses */
    size_t n_last = 0;
    while (made < n) {
        unsigned r = rnd_below(1000);
        rec *x = &recs[made];
        if (r < 10) { /* malformed, 1 % */
            unsigned u = rnd_below((unsigned)users);
            fill_user(x, (unsigned)instances, u);
            make_uuid(x->id);
            unsigned k = rnd_below(4);
            if (k == 0) {
                x->kind = K_BADNOID;
                x->id[0] = '\0';
                snprintf(x->token, sizeof x->token, "chaos-bad-%zu", made);
                char v[96];
                snprintf(v, sizeof v, "{\"%s\": not json", x->token);
                x->value = xstrdup(v);
            } else {
                x->kind = K_BAD;
                snprintf(x->token, sizeof x->token, "%s", x->id);
                json_t *c = command(x, "LockUser", u, json_object());
                if (k == 1)
                    json_object_set_new(c, "bogus", json_true());
                else if (k == 2)
                    json_object_del(c, "type");
                else
                    json_object_set_new(c, "instanceId", json_integer(5));
                x->value = dump(c);
            }
            x->type = "";
            made++;
            continue;
        }
        if (r < 40 && n_last) { /* a repeat (2 %) or a reused id with other content (1 %) */
            const rec *o = &recs[last_valid[rnd_below((unsigned)(n_last < 256 ? n_last : 256))]];
            *x = (rec){.kind = r < 30 ? K_DUP : K_DIFF};
            memcpy(x->id, o->id, sizeof x->id);
            memcpy(x->instance, o->instance, sizeof x->instance);
            memcpy(x->user, o->user, sizeof x->user);
            x->key = xstrdup(o->key);
            if (x->kind == K_DUP) {
                x->type = o->type;
                x->value = xstrdup(o->value);
            } else {
                x->type = strcmp(o->type, "LockUser") == 0 ? "UnlockUser" : "LockUser";
                unsigned u = (unsigned)strtoul(o->user + 1, NULL, 10);
                x->value = dump(command(x, x->type, u, json_object()));
            }
            made++;
            continue;
        }
        /* New commands: one, or a racing pair for one user (3 %). */
        unsigned u = rnd_below((unsigned)users);
        int count = r < 70 && made + 1 < n ? 2 : 1;
        for (int c = 0; c < count; c++) {
            x = &recs[made];
            x->kind = K_CMD;
            fill_user(x, (unsigned)instances, u);
            make_uuid(x->id);
            if (!model[u].imported) {
                x->type = "ImportHumanUser";
                model[u].imported = true;
            } else if (count == 2) {
                x->type = c == 0 ? "AddMyAuthFactorOTPSMS" : (rnd_below(2) ? "AddMyAuthFactorOTPSMS" : "RemoveMyPhone");
            } else {
                x->type = pick_type();
                if (strcmp(x->type, "RemoveUser") == 0)
                    model[u].imported = false; /* the next command imports it anew */
            }
            x->value = dump(command(x, x->type, u, payload_for(x->type, (unsigned)users, (unsigned)instances, u)));
            last_valid[n_last++ % 256] = made;
            made++;
        }
    }

    /* 2. Produce at the rate, then until every record is delivered, once
     * the producer knows every partition's leader. */
    rd_kafka_t *rk = make_producer(brokers);
    if (!wait_leaders(rk, topic, 30000))
        fprintf(stderr, "chaos-gen: %s: no leader for every partition after 30 s; producing anyway\n", topic);
    int64_t start = now_ms(), last_report = start;
    size_t next = 0;
    while (!stop && (next < n || n_delivered < n)) {
        rk = check_fatal(rk, brokers);
        while (n_retry && !stop) {
            size_t i = retry[--n_retry];
            if (!recs[i].delivered && !produce(rk, topic, i)) {
                retry[n_retry++] = i;
                break;
            }
        }
        if (next < n) {
            int64_t due = rate ? start + (int64_t)((double)next * 1000.0 / (double)rate) : 0;
            int64_t t = now_ms();
            if (t < due) {
                rd_kafka_poll(rk, (int)(due - t < 50 ? due - t : 50));
                continue;
            }
            if (produce(rk, topic, next))
                next++;
        } else {
            rd_kafka_poll(rk, 100);
        }
        rd_kafka_poll(rk, 0);
        if (now_ms() - last_report >= 5000) {
            last_report = now_ms();
            fprintf(stderr, "chaos-gen: %zu/%lu produced, %zu delivered, %zu failed deliveries retried, %d queued\n",
                    next, n, n_delivered, n_failed_reports, rd_kafka_outq_len(rk));
        }
    }
    rd_kafka_flush(rk, 10000);
    rd_kafka_destroy(rk);
    fprintf(stderr, "chaos-gen: done in %.1f s: %zu/%lu delivered, %zu failed deliveries retried\n",
            (double)(now_ms() - start) / 1000.0, n_delivered, n, n_failed_reports);

    /* 3. The manifest. */
    FILE *f = fopen(out, "w");
    if (!f) {
        fprintf(stderr, "chaos-gen: %s: %s\n", out, strerror(errno));
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const rec *x = &recs[i];
        fprintf(f, "%zu\t%s\t%s\t%s\t%s\t%s\t%" PRId64 "\t%d\t%d\t%d\t%s\n", i, kind_names[x->kind], x->id,
                x->instance, x->user, x->type, x->sent_ms, (int)x->partition, x->delivered, x->copies, x->token);
    }
    if (fclose(f) != 0)
        return 1;
    for (size_t i = 0; i < n; i++) {
        free(recs[i].key);
        free(recs[i].value);
    }
    free(recs);
    free(retry);
    free(model);
    return n_delivered == n ? 0 : 1;
}
