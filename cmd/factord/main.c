/*
 * cmd/factord/main.c - the factord binary: dispatch to a subcommand.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/metrics.h"
#include "infra/http/metrics_server.h"
#include "infra/base/log.h"
#include "infra/kafka/kafka.h"
#include "infra/pg/store.h"

volatile sig_atomic_t fd_stop = 0;

static void on_signal(int sig)
{
    (void)sig;
    fd_stop = 1;
}

void fd_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static const fd_subcommand subcommands[] = {
    {"migrate", "create or upgrade the PostgreSQL schema", fd_migrate_main, ""},
    {"process", "decide commands from Kafka and append events to PostgreSQL", fd_process_main, ""},
    {"relay", "publish committed events, replies and dead letters to Kafka", fd_relay_main, ""},
    {"project", "keep the read models from the events topic and reply to successful commands",
     fd_project_main, ""},
    {"run", "every component in one process (embedded Kafka when no brokers are configured)", fd_run_main,
     ""},
    {"submit", "send one command and print its reply", fd_submit_main,
     "--type T --user U [--org O] [--instance I] [--payload JSON] [--id UUID] [--reply-to TOPIC] "
     "[--timeout-ms N]\n       factord submit - [--timeout-ms N]  (a whole command as JSON on stdin)"},
    {"gateway", "the HTTP face of the Auth API (bearer tokens, commands, ListMyAuthFactors)", fd_gateway_main,
     ""},
    {"token", "print a DEVELOPMENT access token for the gateway", fd_token_main,
     "--user U [--org O] [--ttl-s N] [--scope S]"},
    {"verify", "check that the event log is complete and unaltered (hash chain, sequences, users)",
     fd_verify_main, "[--expect-head POS:HASH]"},
    {"replay", "print the event log as JSON lines, filtered", fd_replay_main,
     "[--instance I] [--user U] [--org O] [--type T]... [--since TIME] [--until TIME] "
     "[--from-position N] [--to-position N] [--open]"},
    {"status", "log head, relay lag, consumer-group lags, dead letters", fd_status_main, "[--json]"},
    {"notify", "send phone and OTP-SMS codes through the SMS provider and record each outcome",
     fd_notify_main, ""},
    {"rebuild", "rebuild a projection from the log while factord serves, then swap it in", fd_rebuild_main,
     "users|auth-factors [--page-size N] [--max-rate EVENTS_PER_S]"},
    {"pii", "seal the personal data of events written before sealing, and re-chain (rewrites history)",
     fd_pii_main, "seal-legacy [--note TEXT]"},
};

static const fd_subcommand *lookup(const char *name)
{
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (strcmp(subcommands[i].name, name) == 0)
            return &subcommands[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: factord <command> [--help]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(f, "  %-10s %s\n", "config", "print the configuration table (environment variables)");
    fprintf(f, "\nConfiguration comes from FACTORD_* environment variables: `factord config`.\n");
}

bool fd_wants_help(int argc, char **argv, const char *name, bool *bad)
{
    const fd_subcommand *sc = lookup(name);
    *bad = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: factord %s %s\n\n%s.\nConfiguration: FACTORD_* environment variables "
                   "(`factord config` lists them).\n",
                   name, sc && sc->usage ? sc->usage : "", sc ? sc->summary : "");
            return true;
        }
        fprintf(stderr, "factord %s: unknown argument '%s' (try --help)\n", name, argv[i]);
        *bad = true;
        return true;
    }
    return false;
}

static const char *env_get(const char *name) { return getenv(name); }

bool fd_load_config(es_config *cfg, const char *component)
{
    es_error err = {0};
    if (es_config_load(cfg, env_get, &err) != ES_OK) {
        fprintf(stderr, "factord %s: configuration problems:\n%s\n", component, err.text);
        return false;
    }
    es_log_init(component, cfg->log_level);
    return true;
}

int fd_component_main(int argc, char **argv, const char *name, int (*loop)(const es_config *cfg))
{
    bool bad;
    if (fd_wants_help(argc, argv, name, &bad))
        return bad ? 2 : 0;
    es_config cfg;
    if (!fd_load_config(&cfg, name))
        return 2;
    int rc = 2;
    es_metrics_server *metrics = NULL;
    if (fd_require_brokers(&cfg, name) && fd_metrics_start(&cfg, name, &metrics)) {
        fd_install_signals();
        rc = loop(&cfg);
    }
    es_metrics_server_stop(metrics);
    es_config_free(&cfg);
    return rc;
}

bool fd_metrics_start(const es_config *cfg, const char *component, es_metrics_server **out)
{
    *out = NULL;
    if (!cfg->metrics_addr || !cfg->metrics_addr[0])
        return true;
    es_error err = {0};
    if (es_metrics_server_start(cfg->metrics_addr, component, out, &err) != ES_OK) {
        es_err("FACTORD_METRICS_ADDR: cannot serve the metrics there", "addr", cfg->metrics_addr, "error", err.text);
        return false;
    }
    es_info("serving metrics", "url_path", "/metrics", "addr", cfg->metrics_addr);
    es_metric_set(es_metrics_gauge("factord_build_info", "factord's version; always 1",
                                   "version=\"" FACTORD_VERSION "\""),
                  1);
    return true;
}

bool fd_load_pii_key(const es_config *cfg, es_pii_master *m, bool *have, int *min_schema)
{
    es_error err = {0};
    if (es_pii_master_load(cfg, true, m, have, &err) != ES_OK) {
        es_err("unusable personal-data master key", "error", err.text);
        return false;
    }
    if (!*have)
        es_warn("no FACTORD_PII_KEY: personal data (names, e-mail, phone) is written to the event log in "
                "clear and cannot be erased (docs/pii.md)");
    else if (*min_schema < ES_STORE_PII_SCHEMA)
        *min_schema = ES_STORE_PII_SCHEMA;
    return true;
}

es_store *fd_open_store(const es_config *cfg, int min_schema)
{
    es_store *st = NULL;
    es_error err = {0};
    int version = 0;
    if (es_store_open(cfg->database_url, &st, &err) != ES_OK ||
        es_store_schema_version(st, &version, &err) != ES_OK) {
        es_err("cannot use PostgreSQL", "error", err.text, "sqlstate", err.sqlstate);
        es_store_free(st);
        return NULL;
    }
    if (version == 0 || version < min_schema) {
        if (version == 0)
            es_err("the factord schema is missing: run `factord migrate` first");
        else
            es_err("the factord schema is too old: run `factord migrate` first", "schema_version",
                   es_log_i64(version), "needed", es_log_i64(min_schema));
        es_store_free(st);
        return NULL;
    }
    return st;
}

es_result fd_connect_store(const es_config *cfg, int min_schema, es_store **st)
{
    es_error err = {0};
    es_result rc = es_store_connect(cfg->database_url, min_schema, &fd_stop, st, &err);
    if (rc == ES_EFATAL && strstr(err.text, "factord migrate"))
        es_err(err.text);
    else if (rc != ES_OK && rc != ES_ETRANSIENT)
        es_err("cannot use PostgreSQL", "error", err.text, "sqlstate", err.sqlstate);
    return rc;
}

es_result fd_ensure_topics(const es_config *cfg, const char *const *topics, size_t n)
{
    if (cfg->skip_topic_creation)
        return ES_OK;
    es_error err = {0};
    es_topic_spec spec = es_kafka_topic_spec(cfg);
    es_result rc = es_kafka_ensure_topics_retry(cfg->kafka_brokers, topics, n, &spec, &fd_stop, &err);
    if (rc != ES_OK && rc != ES_ETRANSIENT)
        es_err("cannot create the topics", "error", err.text);
    return rc;
}

const char *fd_require_brokers(const es_config *cfg, const char *component)
{
    if (!cfg->kafka_brokers) {
        fprintf(stderr,
                "factord %s: FACTORD_KAFKA_BROKERS is not set; %s needs a Kafka broker "
                "(e.g. FACTORD_KAFKA_BROKERS=127.0.0.1:19092)\n",
                component, component);
        return NULL;
    }
    return cfg->kafka_brokers;
}

int main(int argc, char **argv)
{
    /* glibc raises its mmap threshold each time a large block is freed,
     * after which the batch buffers (arrays, statement parameters, query
     * results of a few hundred KB to a few MB) come from the heap, which
     * fragments and keeps its peak: a processor with a 100,000-command
     * backlog peaked at 61-63 MB, with the threshold fixed at glibc's
     * initial 128 KB at 54 MB, at the same speed (docs/performance.md).
     * Setting the threshold turns the adjustment off; glibc's own
     * MALLOC_MMAP_THRESHOLD_ still wins. */
    if (!getenv("MALLOC_MMAP_THRESHOLD_"))
        mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "config") == 0) {
        es_config_print_markdown();
        return 0;
    }
    const fd_subcommand *sc = lookup(argv[1]);
    if (!sc) {
        fprintf(stderr, "factord: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return 2;
    }
    return sc->run(argc - 1, argv + 1);
}
