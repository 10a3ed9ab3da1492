/*
 * cmd/factord/status.c - `factord status`: positions and lags at a glance
 * (infra/components/status.h, docs/audit.md).
 *
 * From PostgreSQL: the log's head, the chain head, the relay's checkpoint
 * and its lag. From Kafka: the projector group's lag per partition of the
 * events topic, the processor group's lag on the commands topic, and the
 * dead letters held. A table by default, one JSON object with --json. Kafka
 * unreachable: the PostgreSQL part is shown, the Kafka part says so, exit 1.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd/factord/cmd.h"
#include "infra/components/status.h"
#include "infra/base/log.h"
#include "infra/pg/store.h"

#define STATUS_KAFKA_TIMEOUT_MS 5000

/* FACTORD_KAFKA_BROKERS, else the embedded broker `factord run` recorded;
 * malloc'd, or NULL. */
static char *find_brokers(const es_config *cfg)
{
    if (cfg->kafka_brokers)
        return strdup(cfg->kafka_brokers);
    char path[4096], line[1024] = "";
    if (snprintf(path, sizeof path, "%s/kafka.brokers", cfg->state_dir) >= (int)sizeof path)
        return NULL;
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    if (!fgets(line, sizeof line, f))
        line[0] = '\0';
    fclose(f);
    line[strcspn(line, " \t\r\n")] = '\0';
    return line[0] ? strdup(line) : NULL;
}

static json_t *group_json(const es_group_lag *g)
{
    json_t *parts = json_array();
    for (size_t i = 0; i < g->n; i++) {
        const es_partition_lag *p = &g->parts[i];
        json_array_append_new(parts, json_pack("{s:i, s:I, s:I, s:I, s:I, s:i, s:i, s:i}", "partition",
                                               (int)p->partition, "committed", (json_int_t)p->committed, "low",
                                               (json_int_t)p->low, "high", (json_int_t)p->high, "lag",
                                               (json_int_t)p->lag, "leader", (int)p->leader, "replicas",
                                               p->replicas, "inSync", p->isr));
    }
    return json_pack("{s:s, s:s, s:b, s:I, s:I, s:o}", "group", g->group, "topic", g->topic, "ok", g->ok, "lag",
                     (json_int_t)g->lag, "underReplicated", (json_int_t)g->under_replicated, "partitions", parts);
}

static void print_json(const es_status *s, bool pg_ok)
{
    char hex[2 * ES_CHAIN_HASH_LEN + 1];
    es_chain_hex(s->chain_hash, sizeof s->chain_hash, hex);
    json_t *j = json_object();
    json_object_set_new(j, "postgresql", json_boolean(pg_ok));
    if (pg_ok) {
        json_object_set_new(j, "headPosition", json_integer(s->head_position));
        json_object_set_new(j, "chainHead", json_pack("{s:I, s:s}", "position", (json_int_t)s->chain_position,
                                                      "hash", hex));
        json_object_set_new(j, "relay", json_pack("{s:I, s:I, s:I}", "checkpoint", (json_int_t)s->relay_checkpoint,
                                                  "lag", (json_int_t)s->relay_lag, "lagEvents",
                                                  (json_int_t)s->relay_lag_events));
    }
    json_object_set_new(j, "kafka", json_pack("{s:b, s:s?}", "reachable", s->kafka_ok, "error",
                                              s->kafka_ok ? NULL : s->kafka_error));
    if (s->kafka_ok) {
        json_object_set_new(j, "projector", group_json(&s->projector));
        json_object_set_new(j, "processor", group_json(&s->processor));
        json_object_set_new(j, "deadLetters", json_integer(s->dead_letters));
        json_object_set_new(j, "underReplicatedPartitions", json_integer((json_int_t)s->under_replicated));
    }
    json_dumpf(j, stdout, JSON_COMPACT);
    putchar('\n');
    json_decref(j);
}

static void print_group(const char *what, const es_group_lag *g)
{
    printf("%-22s %" PRId64 " (group %s, topic %s)\n", what, g->lag, g->group, g->topic);
    for (size_t i = 0; i < g->n; i++) {
        const es_partition_lag *p = &g->parts[i];
        char committed[24];
        if (p->committed >= 0)
            snprintf(committed, sizeof committed, "%" PRId64, p->committed);
        else
            snprintf(committed, sizeof committed, "none");
        printf("  partition %-10d committed %s, end %" PRId64 ", lag %" PRId64 ", leader %d, in sync %d/%d%s\n",
               (int)p->partition, committed, p->high, p->lag, (int)p->leader, p->isr, p->replicas,
               p->leader < 0 || p->isr < p->replicas ? " UNDER-REPLICATED" : "");
    }
}

static void print_table(const es_status *s, bool pg_ok)
{
    if (pg_ok) {
        char hex[2 * ES_CHAIN_HASH_LEN + 1];
        es_chain_hex(s->chain_hash, sizeof s->chain_hash, hex);
        printf("%-22s %" PRId64 "\n", "log head position", s->head_position);
        printf("%-22s %" PRId64 ":%s\n", "chain head", s->chain_position, hex);
        printf("%-22s %" PRId64 "\n", "relay checkpoint", s->relay_checkpoint);
        printf("%-22s %" PRId64 " positions (%" PRId64 " events)\n", "relay lag", s->relay_lag,
               s->relay_lag_events);
    } else {
        printf("%-22s %s\n", "postgresql", "unreachable");
    }
    if (!s->kafka_ok) {
        printf("%-22s unreachable: %s\n", "kafka", s->kafka_error);
        return;
    }
    print_group("projector lag", &s->projector);
    print_group("processor lag", &s->processor);
    printf("%-22s %" PRId64 "\n", "dead letters", s->dead_letters);
    printf("%-22s %zu (commands, events and dead-letter topics)\n", "under-replicated", s->under_replicated);
}

int fd_status_main(int argc, char **argv)
{
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
            continue;
        }
        bool bad;
        char *hargv[] = {argv[0], argv[i]};
        if (fd_wants_help(2, hargv, "status", &bad))
            return bad ? 2 : 0;
    }
    es_config cfg;
    if (!fd_load_config(&cfg, "status"))
        return 2;
    int rc = 1;
    es_error err = {0};
    es_store *st = NULL;
    es_status *s = calloc(1, sizeof *s);
    char *brokers = find_brokers(&cfg);
    if (!s)
        abort();
    bool pg_ok = es_store_open(cfg.database_url, &st, &err) == ES_OK && es_audit_status_pg(st, s, &err) == ES_OK;
    if (!pg_ok)
        fprintf(stderr, "factord status: PostgreSQL: %s\n", err.text);
    if (!brokers)
        snprintf(s->kafka_error, sizeof s->kafka_error,
                 "no broker: set FACTORD_KAFKA_BROKERS (or run `factord run`, which records its own)");
    else if (es_audit_status_kafka(brokers, cfg.events_topic, cfg.projector_group, cfg.commands_topic,
                                   cfg.processor_group, cfg.dlq_topic, STATUS_KAFKA_TIMEOUT_MS, s, &err) != ES_OK)
        s->kafka_ok = false;
    if (json)
        print_json(s, pg_ok);
    else
        print_table(s, pg_ok);
    if (!s->kafka_ok)
        fprintf(stderr, "factord status: Kafka is unreachable: %s\n", s->kafka_error);
    rc = pg_ok && s->kafka_ok ? 0 : 1;
    fflush(stdout);
    free(brokers);
    free(s);
    es_store_free(st);
    es_config_free(&cfg);
    return rc;
}
