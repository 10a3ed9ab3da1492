/*
 * cmd/factord/run.c - `factord run`: every component in one process.
 *
 * For a single machine and for local use. The processor, the relay, the
 * read-model projector, the HTTP gateway and (with an SMS provider
 * configured) the notifier run as threads, each with its own connections, and
 * share one shutdown path: SIGTERM/SIGINT, or any component stopping on an
 * error, stops them all. With no FACTORD_KAFKA_BROKERS, run starts the
 * embedded broker (librdkafka's mock cluster on 127.0.0.1): Kafka data then
 * lives in memory only, and run says so loudly. Local tools find the
 * embedded broker's address in $FACTORD_STATE_DIR/kafka.brokers. Without a
 * configured phone-code key, run creates a development key in the state
 * folder; without FACTORD_JWKS_FILE the gateway trusts the development
 * signing key there, which `factord token` signs with. The schema is
 * migrated at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/factord/cmd.h"
#include "infra/http/metrics_server.h"
#include "infra/base/util.h"
#include "infra/base/backoff.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/crypto/chain.h"
#include "infra/crypto/devkeys.h"
#include "infra/kafka/mock.h"
#include "infra/pg/store.h"

typedef struct {
    const char *name;
    int (*loop)(const es_config *cfg);
    const es_config *cfg;
    pthread_t thread;
    volatile sig_atomic_t done;
    int exit_code;
} component;

static void *component_main(void *arg)
{
    component *c = arg;
    c->exit_code = c->loop(c->cfg);
    c->done = 1;
    return NULL;
}

static bool path_join(char *out, size_t len, const char *dir, const char *name)
{
    return (size_t)snprintf(out, len, "%s/%s", dir, name) < len;
}

/* Write text to dir/name atomically. */
static bool write_state_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[1024];
    return path_join(path, sizeof path, dir, name) && es_write_file_atomic(path, text, strlen(text), mode);
}

typedef struct {
    const es_config *cfg;
    int applied;
} migrate_ctx;

/* One try at migrating (an es_retry attempt). */
static es_result migrate_once(void *ctx, es_error *err)
{
    migrate_ctx *m = ctx;
    es_store *st = NULL;
    es_result rc = es_store_open(m->cfg->database_url, &st, err);
    if (rc == ES_OK)
        rc = es_store_migrate(st, &m->applied, err);
    es_store_free(st);
    return rc;
}

/* Migrate the schema, retrying while PostgreSQL is away; false when it
 * fails or a stop comes first. */
static bool migrate(const es_config *cfg)
{
    migrate_ctx m = {.cfg = cfg};
    es_error err = {0};
    if (es_stopping(&fd_stop))
        return false;
    es_retry r = {.what = "PostgreSQL is not reachable, retrying", .attempt = migrate_once, .ctx = &m};
    es_result rc = es_retry_run(&r, &fd_stop, &err);
    if (rc == ES_OK) {
        es_info("schema is up to date", "applied", es_log_i64(m.applied));
        return true;
    }
    if (rc != ES_ETRANSIENT)
        es_err("cannot migrate the schema", "error", err.text, "sqlstate", err.sqlstate);
    return false;
}

int fd_run_main(int argc, char **argv)
{
    bool bad;
    if (fd_wants_help(argc, argv, "run", &bad))
        return bad ? 2 : 0;
    es_config cfg;
    if (!fd_load_config(&cfg, "run"))
        return 2;
    int exit_code = 1;
    es_kafka_mock *mock = NULL;
    es_metrics_server *metrics = NULL;
    char path[1024];
    fd_install_signals();

    if (mkdir(cfg.state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "factord run: cannot create the state folder %s: %s\n", cfg.state_dir, strerror(errno));
        exit_code = 2;
        goto out;
    }
    {
        bool created = false;
        es_error kerr = {0};
        if (es_code_key_ensure_dev(&cfg, &created, &kerr) != ES_OK) {
            fprintf(stderr, "factord run: cannot create a development key in %s\n", cfg.state_dir);
            goto out;
        }
        if (created)
            es_warn("created a DEVELOPMENT phone-code key; set FACTORD_CODE_KEY or FACTORD_CODE_KEY_FILE "
                    "for real use",
                    "path", cfg.code_key_file);
        if (es_chain_key_ensure_dev(&cfg, &created, &kerr) != ES_OK) {
            fprintf(stderr, "factord run: %s\n", kerr.text);
            goto out;
        }
        if (created)
            es_warn("created a DEVELOPMENT hash-chain key; set FACTORD_CHAIN_KEY or FACTORD_CHAIN_KEY_FILE "
                    "for real use",
                    "path", cfg.chain_key_file);
        if (es_pii_master_ensure_dev(&cfg, &created, &kerr) != ES_OK) {
            fprintf(stderr, "factord run: %s\n", kerr.text);
            goto out;
        }
        if (created)
            es_warn("created a DEVELOPMENT personal-data master key; set FACTORD_PII_KEY or "
                    "FACTORD_PII_KEY_FILE for real use",
                    "path", cfg.pii_key_file);
    }

    if (!cfg.kafka_brokers) {
        es_error err = {0};
        const char *topics[] = {cfg.commands_topic, cfg.events_topic, cfg.replies_topic, cfg.dlq_topic,
                                cfg.gateway_replies_topic};
        if (es_kafka_mock_start(topics, sizeof topics / sizeof topics[0], (int)cfg.topic_partitions, &mock, &err) !=
            ES_OK) {
            es_err("cannot start the embedded Kafka broker");
            goto out;
        }
        cfg.kafka_brokers = strdup(es_kafka_mock_bootstraps(mock));
        cfg.skip_topic_creation = true; /* the mock cluster has no CreateTopics */
        /* After the last member leaves a group, the mock cluster lets the
         * next join wait a whole session timeout: keep it short. */
        if (cfg.session_timeout_ms > 6000)
            cfg.session_timeout_ms = 6000;
        char line[300];
        snprintf(line, sizeof line, "%s\n", cfg.kafka_brokers);
        if (!write_state_file(cfg.state_dir, "kafka.brokers", line, 0644))
            es_warn("cannot record the embedded broker's address", "state_dir", cfg.state_dir);
        fprintf(stderr,
                "\n*** factord run: EMBEDDED KAFKA BROKER at %s ***\n"
                "*** Kafka data lives in memory only and is lost when factord stops.  ***\n"
                "*** Set FACTORD_KAFKA_BROKERS to use a real broker.                  ***\n\n",
                cfg.kafka_brokers);
        es_warn("embedded Kafka broker: data in memory only", "brokers", cfg.kafka_brokers);
    }
    if (!migrate(&cfg))
        goto out;
    if (!fd_metrics_start(&cfg, "run", &metrics)) {
        exit_code = 2;
        goto out;
    }

    component comps[] = {
        {.name = "process", .loop = fd_process_loop},
        {.name = "relay", .loop = fd_relay_loop},
        {.name = "project", .loop = fd_project_loop},
        {.name = "gateway", .loop = fd_gateway_loop},
        {.name = "notify", .loop = fd_notify_loop},
    };
    size_t n = sizeof comps / sizeof comps[0], started = 0;
    /* The notifier only with an SMS provider: without one there is nobody
     * to send codes to (docs/notifier.md). */
    if (!cfg.sms_provider || strcmp(cfg.sms_provider, "none") == 0) {
        n--;
        es_info("no SMS provider configured (FACTORD_SMS_PROVIDER): codes are not sent");
    }
    for (; started < n; started++) {
        comps[started].cfg = &cfg;
        if (pthread_create(&comps[started].thread, NULL, component_main, &comps[started]) != 0) {
            es_err("cannot start a component thread", "stopped", comps[started].name);
            fd_stop = 1;
            break;
        }
    }
    es_info("factord is running", "brokers", cfg.kafka_brokers, "commands_topic", cfg.commands_topic);
    /* One shutdown path: a signal, or the first component that stops. */
    while (!fd_stop) {
        for (size_t i = 0; i < started; i++)
            if (comps[i].done && !fd_stop) {
                es_err("a component stopped; stopping the others", "stopped", comps[i].name, "exit_code",
                       es_log_i64(comps[i].exit_code));
                fd_stop = 1;
            }
        es_sleep_ms(100);
    }
    exit_code = started == n ? 0 : 1;
    for (size_t i = 0; i < started; i++) {
        pthread_join(comps[i].thread, NULL);
        if (comps[i].exit_code > exit_code)
            exit_code = comps[i].exit_code;
    }
    es_info("factord stopped", "exit_code", es_log_i64(exit_code));
out:
    es_metrics_server_stop(metrics);
    if (mock) {
        if (path_join(path, sizeof path, cfg.state_dir, "kafka.brokers"))
            unlink(path); /* the address dies with the embedded broker */
        es_kafka_mock_stop(mock);
    }
    es_config_free(&cfg);
    return exit_code;
}
