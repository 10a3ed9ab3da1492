/*
 * cmd/factord/cmd.h - the subcommands of the factord binary and the bits of
 * wiring they share (configuration, signals). Each subcommand lives in its
 * own file and only wires config -> infra -> loop.
 *
 * Layer: cmd; wiring only: argv, configuration, a component's run function,
 * the exit code (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_CMD_H
#define FACTORD_CMD_H

#include <signal.h>
#include <stdbool.h>

#include "infra/base/config.h"
#include "infra/pg/store.h"

typedef struct {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
    const char *usage; /* printed by --help, after "usage: factord <name> " */
} fd_subcommand;

int fd_migrate_main(int argc, char **argv);
int fd_process_main(int argc, char **argv);
int fd_relay_main(int argc, char **argv);
int fd_project_main(int argc, char **argv);
int fd_submit_main(int argc, char **argv);
int fd_run_main(int argc, char **argv);
int fd_gateway_main(int argc, char **argv);
int fd_token_main(int argc, char **argv);
int fd_verify_main(int argc, char **argv);
int fd_pii_main(int argc, char **argv);
int fd_replay_main(int argc, char **argv);
int fd_status_main(int argc, char **argv);
int fd_rebuild_main(int argc, char **argv);
int fd_notify_main(int argc, char **argv);

/* The long-running components, without argument parsing or signal set-up,
 * so that `factord run` can run them as threads of one process. Each runs
 * until fd_stop is set or it fails, and returns its exit code (0, 1, 2).
 * cfg (with kafka_brokers set) is borrowed for the whole run. */
int fd_process_loop(const es_config *cfg);
int fd_relay_loop(const es_config *cfg);
int fd_project_loop(const es_config *cfg);
int fd_gateway_loop(const es_config *cfg);
int fd_notify_loop(const es_config *cfg);

/* Set by SIGTERM/SIGINT; loops check it between units of work. */
extern volatile sig_atomic_t fd_stop;
void fd_install_signals(void);

/* Load the configuration (printing every problem) and init logging with
 * component; returns false after printing to stderr. */
bool fd_load_config(es_config *cfg, const char *component);

/* True (after printing usage) when argv asks for help; false otherwise.
 * Unknown options print usage and set *bad. */
bool fd_wants_help(int argc, char **argv, const char *name, bool *bad);

/* The `main` of a long-running component: --help, configuration, brokers
 * required, signals, then loop(cfg); returns the exit code. */
int fd_component_main(int argc, char **argv, const char *name, int (*loop)(const es_config *cfg));

/* The metrics endpoint when FACTORD_METRICS_ADDR is set: *out the server
 * (NULL when unset); false after logging why it cannot listen, naming the
 * setting (a configuration error: exit 2). es_metrics_server_stop ends it. */
struct es_metrics_server;
bool fd_metrics_start(const es_config *cfg, const char *component, struct es_metrics_server **out);

/* The personal-data master key of a component that writes or reads events
 * (docs/pii.md): FACTORD_PII_KEY(_FILE), else $FACTORD_STATE_DIR/pii.key
 * when it exists. *have false when there is none (warned once: personal data
 * in clear). false after logging why a configured key is unusable (exit 2).
 * *min_schema is raised to the key store's schema when there is a key. */
bool fd_load_pii_key(const es_config *cfg, es_pii_master *m, bool *have, int *min_schema);

/* PostgreSQL for a one-shot tool: one attempt (no retry), the schema at
 * min_schema or later (and present); NULL after logging why not. */
es_store *fd_open_store(const es_config *cfg, int min_schema);

/* PostgreSQL for a long-running component (es_store_connect, until fd_stop),
 * the schema at min_schema or later. Logs why not; ES_ETRANSIENT: stopped
 * while PostgreSQL was away (a clean stop). */
es_result fd_connect_store(const es_config *cfg, int min_schema, es_store **st) ES_WUR;

/* The topics a component needs, created where missing (unless
 * FACTORD_SKIP_TOPIC_CREATION) as FACTORD_TOPIC_* say, retried while Kafka
 * is away or refuses. ES_ETRANSIENT: stopped meanwhile; another error (a
 * contradictory setting) is logged. */
es_result fd_ensure_topics(const es_config *cfg, const char *const *topics, size_t n) ES_WUR;

/* Brokers from the configuration or a clear message; NULL when unset. */
const char *fd_require_brokers(const es_config *cfg, const char *component);

#endif
