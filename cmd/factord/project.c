/*
 * cmd/factord/project.c - `factord project`: the read-model projector.
 *
 * Wiring only: the code key (returnCode replies), PostgreSQL (two
 * connections when FACTORD_PROJECTOR_SPLIT_MIN > 0), the topics, the reply
 * producer and the events consumer, then es_projector_loop
 * (infra/components/projector_loop.c: the reader, the split applier, the
 * replies in flight). SIGTERM/SIGINT finish the batch in hand, or abandon
 * it while PostgreSQL or Kafka is away (it is re-read on restart).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/log.h"
#include "infra/components/projector_loop.h"
#include "infra/crypto/codecrypt.h"

/* The first schema version with the read models (0008). */
#define PROJECT_SCHEMA_MIN 8

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
    es_projector_loop_opts lo = {.batch_max = (size_t)cfg.projector_batch_max,
                                 .linger_ms = cfg.batch_linger_ms,
                                 .split_min = (size_t)cfg.projector_split_min};
    unsigned char keybytes[32];
    es_codekey ck;
    es_pii_master pii = {0};
    bool have_pii = false;

    if (es_config_code_key(&cfg, keybytes, &err) != ES_OK) {
        /* The projector decrypts the codes of returnCode replies. */
        es_err("cannot start the projector", "error", err.text);
        exit_code = 2;
        goto out;
    }
    es_codekey_init(&ck, keybytes);
    explicit_bzero(keybytes, sizeof keybytes);
    int min_schema = PROJECT_SCHEMA_MIN;
    if (!fd_load_pii_key(&cfg, &pii, &have_pii, &min_schema)) {
        exit_code = 2;
        goto out;
    }
    es_result rc = fd_connect_store(&cfg, min_schema, &lo.st);
    if (rc == ES_OK && lo.split_min > 0)
        rc = fd_connect_store(&cfg, min_schema, &lo.st2);
    if (rc != ES_OK) {
        exit_code = rc == ES_ETRANSIENT ? 0 : 1;
        goto out;
    }
    /* The projector opens sealed personal data on its main connection. */
    if (have_pii)
        es_store_set_pii_master(lo.st, &pii);
    const char *topics[] = {cfg.events_topic, cfg.replies_topic};
    if ((rc = fd_ensure_topics(&cfg, topics, 2)) != ES_OK) {
        exit_code = rc == ES_ETRANSIENT ? 0 : 2;
        goto out;
    }
    if (es_producer_new(cfg.kafka_brokers, "factord-projector", &lo.producer, &err) != ES_OK) {
        es_err("cannot create the producer", "error", err.text);
        goto out;
    }
    es_producer_prime(lo.producer, cfg.replies_topic, 5000);
    const char *sub[] = {cfg.events_topic};
    es_consumer_opts co = {.group = cfg.projector_group,
                           .session_timeout_ms = (int)cfg.session_timeout_ms,
                           .instance_id = cfg.group_instance_id,
                           .assignor = cfg.partition_assignment};
    if (es_consumer_new(cfg.kafka_brokers, &co, sub, 1, &lo.consumer, &err) != ES_OK) {
        es_err("cannot create the consumer", "error", err.text);
        goto out;
    }
    es_projector_opts po = {.code_key = &ck};
    lo.proj = es_projector_new(lo.st, &po);
    if (lo.st2)
        lo.proj2 = es_projector_new(lo.st2, &po);
    es_info("projector started", "topic", cfg.events_topic, "group", cfg.projector_group, "batch_max",
            es_log_i64(cfg.projector_batch_max), "split_min", es_log_i64(cfg.projector_split_min), "code_key_id",
            ck.key_id);

    es_project_totals t = {0};
    if (es_projector_loop(&lo, &fd_stop, &t, &err) != ES_OK)
        goto out;
    es_info("projector stopping", "applied", es_log_i64((long long)t.applied), "skipped",
            es_log_i64((long long)t.skipped), "replies", es_log_i64((long long)t.replies), "gaps",
            es_log_i64((long long)t.gaps), "undecodable", es_log_i64((long long)t.undecodable), "fetch_wakeups",
            es_log_i64((long long)es_consumer_wakeups(lo.consumer)));
    exit_code = 0;
out:
    es_consumer_free(lo.consumer);
    es_projector_free(lo.proj2);
    es_projector_free(lo.proj);
    es_producer_free(lo.producer);
    es_store_free(lo.st2);
    es_store_free(lo.st);
    explicit_bzero(&ck, sizeof ck);
    es_pii_master_wipe(&pii);
    return exit_code;
}
