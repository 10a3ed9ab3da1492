/*
 * cmd/factord/relay.c - `factord relay`: publish what PostgreSQL committed.
 *
 * Wiring only: the topics, the idempotent producer, then es_relay_run
 * (infra/components/relay.c), which takes the relay lock (others wait as
 * standbys) and publishes events and outbox rows after its checkpoint.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cmd/factord/cmd.h"
#include "infra/base/log.h"
#include "infra/components/relay.h"
#include "infra/kafka/kafka.h"

int fd_relay_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "relay", fd_relay_loop);
}

int fd_relay_loop(const es_config *cfgp)
{
    const es_config cfg = *cfgp; /* borrowed strings; never freed here */
    es_log_set_component("relay");
    es_error err = {0};
    es_producer *prod = NULL;
    const char *topics[] = {cfg.events_topic, cfg.replies_topic, cfg.dlq_topic};
    es_result trc = fd_ensure_topics(&cfg, topics, 3);
    if (trc != ES_OK)
        return trc == ES_ETRANSIENT ? 0 : 2;
    if (es_producer_new(cfg.kafka_brokers, "factord-relay", &prod, &err) != ES_OK) {
        es_err("cannot create the producer", "error", err.text);
        return 1;
    }
    es_relay_opts o = {.database_url = cfg.database_url,
                       .events_topic = cfg.events_topic,
                       .batch = (size_t)cfg.relay_batch,
                       .idle_ms = cfg.relay_idle_ms};
    es_relay_stats stats = {0};
    es_result rc = es_relay_run(&o, prod, &fd_stop, &stats, &err);
    if (rc == ES_OK)
        es_info("relay stopping", "published", es_log_i64((long long)stats.published), "checkpoint",
                es_log_i64(stats.checkpoint));
    es_producer_free(prod);
    return rc == ES_OK ? 0 : 1;
}
