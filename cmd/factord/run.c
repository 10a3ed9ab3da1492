/*
 * cmd/factord/run.c - `factord run`: every component in one process.
 *
 * For a single machine and for local use. The processor, the relay, the
 * read-model projector and the HTTP gateway run as threads, each with its
 * own connections, and
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
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/factord/cmd.h"
#include "infra/crypto/chain.h"
#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"
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

/* Write text to dir/name atomically (write a temporary file, rename). */
static bool write_state_file(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[1024], tmp[1040];
    if (!path_join(path, sizeof path, dir, name))
        return false;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0)
        return false;
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    return ok && rename(tmp, path) == 0;
}

/* A development phone-code key in the state folder, created once. */
static bool ensure_dev_code_key(es_config *cfg, char *path, size_t len)
{
    if (!path_join(path, len, cfg->state_dir, "code.key"))
        return false;
    if (access(path, R_OK) != 0) {
        unsigned char key[32];
        char hex[66];
        if (RAND_bytes(key, sizeof key) != 1)
            return false;
        for (int i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", key[i]);
        hex[64] = '\n';
        hex[65] = '\0';
        explicit_bzero(key, sizeof key);
        bool ok = write_state_file(cfg->state_dir, "code.key", hex, 0600);
        explicit_bzero(hex, sizeof hex);
        if (!ok)
            return false;
        es_warn("created a DEVELOPMENT phone-code key; set FACTORD_CODE_KEY or FACTORD_CODE_KEY_FILE "
                "for real use",
                "path", path);
    }
    cfg->code_key_file = strdup(path);
    return true;
}

static bool migrate(const es_config *cfg)
{
    es_store *st = NULL;
    es_error err = {0};
    int applied = 0;
    for (int64_t backoff = 200; !fd_stop; backoff = backoff * 2 > 5000 ? 5000 : backoff * 2) {
        es_result rc = es_store_open(cfg->database_url, &st, &err);
        if (rc == ES_OK)
            rc = es_store_migrate(st, &applied, &err);
        es_store_free(st);
        st = NULL;
        if (rc == ES_OK) {
            es_info("schema is up to date", "applied", es_log_i64(applied));
            return true;
        }
        if (rc != ES_ETRANSIENT) {
            es_err("cannot migrate the schema", "error", err.text, "sqlstate", err.sqlstate);
            return false;
        }
        es_warn("PostgreSQL is not reachable, retrying", "error", err.text, "retry_ms", es_log_i64(backoff));
        es_sleep_ms(backoff);
    }
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
    rd_kafka_t *mock_rk = NULL;
    rd_kafka_mock_cluster_t *mock = NULL;
    char path[1024];
    fd_install_signals();

    if (mkdir(cfg.state_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "factord run: cannot create the state folder %s: %s\n", cfg.state_dir, strerror(errno));
        exit_code = 2;
        goto out;
    }
    if (!cfg.code_key && !cfg.code_key_file && !ensure_dev_code_key(&cfg, path, sizeof path)) {
        fprintf(stderr, "factord run: cannot create a development key in %s\n", cfg.state_dir);
        goto out;
    }
    {
        bool created = false;
        es_error kerr = {0};
        if (es_chain_key_ensure_dev(&cfg, &created, &kerr) != ES_OK) {
            fprintf(stderr, "factord run: %s\n", kerr.text);
            goto out;
        }
        if (created)
            es_warn("created a DEVELOPMENT hash-chain key; set FACTORD_CHAIN_KEY or FACTORD_CHAIN_KEY_FILE "
                    "for real use",
                    "path", cfg.chain_key_file);
    }

    if (!cfg.kafka_brokers) {
        es_error err = {0};
        char errstr[256];
        rd_kafka_conf_t *conf = es_kafka_conf("", "factord-embedded-broker", &err);
        /* This handle only hosts the mock brokers: it connects nowhere, so
         * keep its "no bootstrap.servers" notice out of the log. */
        if (conf && rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof errstr) == RD_KAFKA_CONF_OK)
            mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
        if (!mock_rk || !(mock = rd_kafka_mock_cluster_new(mock_rk, 1))) {
            es_err("cannot start the embedded Kafka broker");
            goto out;
        }
        const char *topics[] = {cfg.commands_topic, cfg.events_topic, cfg.replies_topic, cfg.dlq_topic,
                                cfg.gateway_replies_topic};
        for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
            rd_kafka_mock_topic_create(mock, topics[i], (int)cfg.topic_partitions, 1);
        cfg.kafka_brokers = strdup(rd_kafka_mock_cluster_bootstraps(mock));
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

    component comps[] = {
        {.name = "process", .loop = fd_process_loop},
        {.name = "relay", .loop = fd_relay_loop},
        {.name = "project", .loop = fd_project_loop},
        {.name = "gateway", .loop = fd_gateway_loop},
    };
    size_t n = sizeof comps / sizeof comps[0], started = 0;
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
    if (mock) {
        if (path_join(path, sizeof path, cfg.state_dir, "kafka.brokers"))
            unlink(path); /* the address dies with the embedded broker */
        rd_kafka_mock_cluster_destroy(mock);
    }
    if (mock_rk)
        rd_kafka_destroy(mock_rk);
    es_config_free(&cfg);
    return exit_code;
}
