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
#include "infra/kafka/consumer.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"
#include "infra/components/processor.h"
#include "infra/pg/store.h"

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
    es_consumer *cons = NULL;
    unsigned char keybytes[32];
    es_codekey ck;
    es_chain_key chain = {0};
    es_pii_master pii = {0};
    bool have_pii = false;

    bool keys = es_config_code_key(&cfg, keybytes, &err) == ES_OK;
    if (keys) {
        es_codekey_init(&ck, keybytes);
        keys = es_chain_key_load(&cfg, true, &chain, &err) == ES_OK;
    }
    explicit_bzero(keybytes, sizeof keybytes);
    if (!keys) {
        es_err("cannot start the processor", "error", err.text);
        exit_code = 2;
        goto out;
    }
    int min_schema = 1;
    if (!fd_load_pii_key(&cfg, &pii, &have_pii, &min_schema)) {
        exit_code = 2;
        goto out;
    }
    es_result rc = fd_connect_store(&cfg, min_schema, &st);
    if (rc != ES_OK) {
        exit_code = rc == ES_ETRANSIENT ? 0 : 1;
        goto out;
    }
    es_store_set_chain_key(st, &chain);
    if (have_pii)
        es_store_set_pii_master(st, &pii);
    if (chain.is_public)
        es_warn("no FACTORD_CHAIN_KEY: the event log is chained with the public key, which catches "
                "only accidental or naive edits (docs/audit.md)");
    const char *topics[] = {cfg.commands_topic, cfg.events_topic, cfg.replies_topic, cfg.dlq_topic};
    if ((rc = fd_ensure_topics(&cfg, topics, 4)) != ES_OK) {
        exit_code = rc == ES_ETRANSIENT ? 0 : 2;
        goto out;
    }
    const char *sub[] = {cfg.commands_topic};
    es_consumer_opts co = {.group = cfg.processor_group,
                           .session_timeout_ms = (int)cfg.session_timeout_ms,
                           .instance_id = cfg.group_instance_id,
                           .assignor = cfg.partition_assignment};
    if (es_consumer_new(cfg.kafka_brokers, &co, sub, 1, &cons, &err) != ES_OK) {
        es_err("cannot create the consumer", "error", err.text);
        goto out;
    }
    es_processor_opts po = {.replies_topic = cfg.replies_topic,
                            .dlq_topic = cfg.dlq_topic,
                            .dlq_max_bytes = cfg.dlq_max_bytes,
                            .code_ttl_s = cfg.code_ttl_s,
                            .code_length = (int)cfg.code_length,
                            .otp_sms_code_ttl_s = cfg.otp_sms_code_ttl_s,
                            .otp_sms_code_length = (int)cfg.otp_sms_code_length,
                            .max_otp_attempts = (int)cfg.lockout_max_otp_attempts,
                            .code_key = &ck};
    proc = es_processor_new(st, &po);
    es_info("processor started", "topic", cfg.commands_topic, "group", cfg.processor_group, "batch_max",
            es_log_i64(cfg.batch_max), "code_key_id", ck.key_id, "chain_key_id", chain.key_id);

    es_batch_stats t = {0};
    if (es_processor_loop(proc, st, cons, (size_t)cfg.batch_max, cfg.batch_linger_ms, &fd_stop, &t, &err) != ES_OK)
        goto out;
    es_info("processor stopping", "accepted", es_log_i64((long long)t.accepted), "rejected",
            es_log_i64((long long)t.rejected), "replayed", es_log_i64((long long)t.replayed), "dead_letters",
            es_log_i64((long long)t.dead), "fetch_wakeups", es_log_i64((long long)es_consumer_wakeups(cons)));
    exit_code = 0;
out:
    es_consumer_free(cons);
    es_processor_free(proc);
    es_store_free(st);
    explicit_bzero(&ck, sizeof ck);
    es_chain_key_wipe(&chain);
    es_pii_master_wipe(&pii);
    return exit_code;
}
