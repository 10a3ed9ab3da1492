/*
 * cmd/factord/process.c - `factord process`: the command processor.
 *
 * Polls the commands topic in batches (at most FACTORD_BATCH_MAX records:
 * what is queued, or arrives within FACTORD_BATCH_LINGER_MS of the first),
 * decides each batch in one PostgreSQL transaction (infra/components/processor.c), and
 * only then stores the batch's offsets for the consumer's auto-commit
 * (brief §4.5). A crash at any point redelivers the batch; the command
 * table makes that harmless.
 * SIGTERM/SIGINT finish the batch in hand (or abandon it while PostgreSQL is
 * away: nothing is half-committed) and leave the group cleanly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/crypto/chain.h"
#include "infra/base/clock.h"
#include "infra/crypto/codecrypt.h"
#include "infra/base/failpoint.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"
#include "infra/components/processor.h"
#include "infra/pg/store.h"

/* Connect to PostgreSQL, retrying with backoff until it answers or a stop. */
static es_store *connect_store(const es_config *cfg)
{
    int64_t backoff = 100;
    for (;;) {
        es_store *st = NULL;
        es_error err = {0};
        es_result rc = es_store_open(cfg->database_url, &st, &err);
        if (rc == ES_OK) {
            int version = 0;
            rc = es_store_schema_version(st, &version, &err);
            if (rc == ES_OK && version > 0)
                return st;
            es_store_free(st);
            if (rc == ES_OK) {
                es_err("the factord schema is missing: run `factord migrate` first");
                return NULL;
            }
        }
        if (rc != ES_ETRANSIENT) {
            es_err("cannot use PostgreSQL", "error", err.text, "sqlstate", err.sqlstate);
            return NULL;
        }
        es_warn("PostgreSQL is not reachable, retrying", "error", err.text, "retry_ms", es_log_i64(backoff));
        es_sleep_ms(backoff);
        if (fd_stop)
            return NULL;
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

static void store_offsets(rd_kafka_t *rk, rd_kafka_message_t **msgs, size_t n)
{
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i < n; i++) {
        const char *topic = rd_kafka_topic_name(msgs[i]->rkt);
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(offs, topic, msgs[i]->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(offs, topic, msgs[i]->partition);
        if (msgs[i]->offset + 1 > tp->offset)
            tp->offset = msgs[i]->offset + 1;
    }
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(rk, offs);
    if (e) /* a partition revoked meanwhile: its next owner re-reads, harmlessly */
        es_warn("storing offsets", "error", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(offs);
}

int fd_process_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "process", fd_process_loop);
}

int fd_process_loop(const es_config *cfgp)
{
    const es_config cfg = *cfgp; /* borrowed strings; never freed here */
    es_log_set_component("process");
    int exit_code = 1;
    es_error err = {0};
    es_store *st = NULL;
    es_processor *proc = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_message_t **msgs = NULL;
    es_record *recs = NULL;
    unsigned char keybytes[32];
    es_codekey ck;
    es_chain_key chain = {0};

    const char *brokers = cfg.kafka_brokers;
    if (es_config_code_key(&cfg, keybytes, &err) != ES_OK) {
        es_err("cannot start the processor", "error", err.text);
        exit_code = 2;
        goto out;
    }
    es_codekey_init(&ck, keybytes);
    explicit_bzero(keybytes, sizeof keybytes);
    if (es_chain_key_load(&cfg, true, &chain, &err) != ES_OK) {
        es_err("cannot start the processor", "error", err.text);
        exit_code = 2;
        goto out;
    }

    st = connect_store(&cfg);
    if (!st)
        goto out;
    es_store_set_chain_key(st, &chain);
    if (chain.is_public)
        es_warn("no FACTORD_CHAIN_KEY: the event log is chained with the public key, which catches "
                "only accidental or naive edits (docs/audit.md)");
    const char *topics[] = {cfg.commands_topic, cfg.events_topic, cfg.replies_topic, cfg.dlq_topic};
    while (!cfg.skip_topic_creation &&
           es_kafka_ensure_topics(brokers, topics, 4, (int)cfg.topic_partitions, 10000, &err) != ES_OK) {
        es_warn("cannot ensure topics, retrying", "error", err.text);
        es_sleep_ms(2000);
        if (fd_stop)
            goto out;
    }
    const char *sub[] = {cfg.commands_topic};
    if (es_consumer_new(brokers, cfg.processor_group, (int)cfg.session_timeout_ms, sub, 1, &rk, &err) != ES_OK) {
        es_err("cannot create the consumer", "error", err.text);
        goto out;
    }
    es_processor_opts po = {.replies_topic = cfg.replies_topic,
                            .dlq_topic = cfg.dlq_topic,
                            .dlq_max_bytes = cfg.dlq_max_bytes,
                            .code_ttl_s = cfg.code_ttl_s,
                            .code_length = (int)cfg.code_length,
                            .code_key = &ck};
    proc = es_processor_new(st, &po);
    size_t max = (size_t)cfg.batch_max;
    msgs = calloc(max, sizeof *msgs);
    recs = calloc(max, sizeof *recs);
    if (!msgs || !recs)
        abort();
    es_info("processor started", "topic", cfg.commands_topic, "group", cfg.processor_group, "batch_max",
            es_log_i64(cfg.batch_max), "code_key_id", ck.key_id, "chain_key_id", chain.key_id);

    es_batch_stats total = {0};
    es_consumer_poll cp = {0};
    int64_t last_report = es_clock_mono_ms();
    while (!fd_stop) {
        size_t n = 0;
        while (n < max && !fd_stop) {
            rd_kafka_message_t *m = es_consumer_next(rk, &cp, n, cfg.batch_linger_ms);
            if (!m) {
                if (n)
                    break;
                continue;
            }
            msgs[n++] = m;
        }
        if (!n)
            continue;
        for (size_t i = 0; i < n; i++)
            recs[i] = (es_record){.value = msgs[i]->payload, .value_len = msgs[i]->len,
                                  .key = msgs[i]->key, .key_len = msgs[i]->key_len,
                                  .topic = rd_kafka_topic_name(msgs[i]->rkt),
                                  .partition = msgs[i]->partition, .offset = msgs[i]->offset};
        es_batch_stats bs;
        int64_t backoff = 100;
        bool committed = false;
        for (;;) {
            es_result rc = es_processor_run_batch(proc, recs, n, &bs, &err);
            if (rc == ES_OK) {
                committed = true;
                break;
            }
            if (rc != ES_ETRANSIENT) {
                es_err("cannot decide a batch; stopping", "error", err.text, "sqlstate", err.sqlstate);
                break;
            }
            es_warn("PostgreSQL unavailable, retrying the batch", "error", err.text, "retry_ms",
                    es_log_i64(backoff));
            es_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            if (fd_stop) {
                es_warn("stopping with an undecided batch; it will be redelivered", "records",
                        es_log_i64((long long)n));
                break;
            }
            es_error rerr = {0};
            if (es_store_reset(st, &rerr) != ES_OK)
                es_debug("reconnect failed", "error", rerr.text);
        }
        if (committed) {
            es_failpoint("process.after_commit");
            store_offsets(rk, msgs, n);
            total.accepted += bs.accepted;
            total.rejected += bs.rejected;
            total.replayed += bs.replayed;
            total.dead += bs.dead;
            total.events += bs.events;
        }
        for (size_t i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
        if (!committed && !fd_stop)
            goto out;
        if (es_clock_mono_ms() - last_report >= 10000) {
            last_report = es_clock_mono_ms();
            es_info("progress", "accepted", es_log_i64((long long)total.accepted), "rejected",
                    es_log_i64((long long)total.rejected), "replayed", es_log_i64((long long)total.replayed),
                    "dead_letters", es_log_i64((long long)total.dead), "events",
                    es_log_i64((long long)total.events));
        }
    }
    es_info("processor stopping", "accepted", es_log_i64((long long)total.accepted), "rejected",
            es_log_i64((long long)total.rejected), "replayed", es_log_i64((long long)total.replayed),
            "dead_letters", es_log_i64((long long)total.dead), "fetch_wakeups", es_log_i64((long long)cp.wakeups));
    exit_code = 0;
out:
    if (rk) {
        rd_kafka_consumer_close(rk); /* commits the stored offsets, leaves the group */
        rd_kafka_destroy(rk);
    }
    free(msgs);
    free(recs);
    es_processor_free(proc);
    es_store_free(st);
    explicit_bzero(&ck, sizeof ck);
    es_chain_key_wipe(&chain);
    return exit_code;
}
