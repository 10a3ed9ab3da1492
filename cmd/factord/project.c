/*
 * cmd/factord/project.c - `factord project`: the read-model projector.
 *
 * Polls the events topic in batches (at most FACTORD_BATCH_MAX records:
 * what is queued, or arrives within FACTORD_BATCH_LINGER_MS of the first)
 * in its own consumer group (FACTORD_PROJECTOR_GROUP), applies each batch
 * to the read models in one PostgreSQL transaction (infra/projector.c:
 * exactly once per event, by the user's applied sequence), and after that
 * COMMIT produces the success replies of the commands whose last event was
 * in the batch, waits until Kafka has acknowledged every one, and only then
 * stores the batch's offsets. A crash at any point re-reads the batch: the
 * events are skipped in PostgreSQL and the replies sent again, identically
 * (at least once). SIGTERM/SIGINT finish the batch in hand, or abandon it
 * while PostgreSQL or Kafka is away (nothing is half-done: it is re-read on
 * restart).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/clock.h"
#include "infra/codecrypt.h"
#include "infra/failpoint.h"
#include "infra/kafka.h"
#include "infra/log.h"
#include "infra/projector.h"
#include "infra/store.h"

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

/* Decode one record into evt; false (logged) when it is not an event. */
static bool decode_event(const rd_kafka_message_t *m, dom_evt *evt)
{
    es_error err = {0};
    json_error_t jerr;
    json_t *j = m->payload ? json_loadb(m->payload, m->len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    es_result rc = j ? dom_evt_from_json(j, evt, &err) : es_error_set(&err, ES_EINVAL, "not JSON");
    json_decref(j);
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

int fd_project_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "project", fd_project_loop);
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
    dom_evt *evts = NULL;
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
    const char *sub[] = {cfg.events_topic};
    if (es_consumer_new(brokers, cfg.projector_group, (int)cfg.session_timeout_ms, sub, 1, &rk, &err) != ES_OK) {
        es_err("cannot create the consumer", "error", err.text);
        goto out;
    }
    es_projector_opts po = {.code_key = &ck};
    proj = es_projector_new(st, &po);
    size_t max = (size_t)cfg.batch_max;
    evts = calloc(max, sizeof *evts);
    if (!evts)
        abort();
    es_info("projector started", "topic", cfg.events_topic, "group", cfg.projector_group, "batch_max",
            es_log_i64(cfg.batch_max), "code_key_id", ck.key_id);

    unsigned long long applied = 0, skipped = 0, gaps = 0, replied = 0, undecodable = 0;
    es_consumer_poll cp = {0};
    int64_t last_report = es_clock_mono_ms();
    while (!fd_stop) {
        /* 1. A batch. Each message is destroyed in the iteration that polled
         * it: the batch keeps decoded events and the offsets to store. */
        size_t n = 0, polled = 0;
        rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(8);
        while (polled < max && !fd_stop) {
            rd_kafka_message_t *m = es_consumer_next(rk, &cp, polled, cfg.batch_linger_ms);
            if (!m) {
                if (polled)
                    break;
                continue;
            }
            polled++;
            note_offset(offs, m);
            if (decode_event(m, &evts[n]))
                n++;
            else
                undecodable++;
            rd_kafka_message_destroy(m);
        }
        if (!polled) {
            rd_kafka_topic_partition_list_destroy(offs);
            continue;
        }

        /* 2. Apply and commit. */
        const es_reply *replies = NULL;
        size_t n_replies = 0;
        es_project_stats ps = {0};
        int64_t backoff = 100;
        bool committed = false, fatal = false;
        for (;;) {
            es_result rc = es_projector_run_batch(proj, evts, n, &replies, &n_replies, &ps, &err);
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
        }

        /* 3. Replies after the commit, offsets after the replies. */
        if (committed) {
            es_failpoint("project.after_commit");
            if (deliver(prod, replies, n_replies)) {
                rd_kafka_resp_err_t e = rd_kafka_offsets_store(rk, offs);
                if (e) /* a partition revoked meanwhile: its next owner re-reads, harmlessly */
                    es_warn("storing offsets", "error", rd_kafka_err2str(e));
                applied += ps.applied;
                skipped += ps.skipped;
                gaps += ps.gaps;
                replied += ps.replies;
            }
        }
        rd_kafka_topic_partition_list_destroy(offs);
        if (fatal)
            goto out;
        if (es_clock_mono_ms() - last_report >= 10000) {
            last_report = es_clock_mono_ms();
            es_info("progress", "applied", es_log_i64((long long)applied), "skipped", es_log_i64((long long)skipped),
                    "replies", es_log_i64((long long)replied), "gaps", es_log_i64((long long)gaps), "undecodable",
                    es_log_i64((long long)undecodable));
        }
    }
    es_info("projector stopping", "applied", es_log_i64((long long)applied), "skipped",
            es_log_i64((long long)skipped), "replies", es_log_i64((long long)replied), "gaps",
            es_log_i64((long long)gaps), "undecodable", es_log_i64((long long)undecodable), "fetch_wakeups",
            es_log_i64((long long)cp.wakeups));
    exit_code = 0;
out:
    if (rk) {
        rd_kafka_consumer_close(rk); /* commits the stored offsets, leaves the group */
        rd_kafka_destroy(rk);
    }
    es_projector_free(proj); /* before evts: its replies point into them */
    free(evts);
    es_producer_free(prod);
    es_store_free(st);
    explicit_bzero(&ck, sizeof ck);
    return exit_code;
}
