/*
 * tests/integration/harness.h - running factord's components against the
 * real PostgreSQL and Kafka servers from a test.
 *
 * Each test gets its own topics, consumer group and instance id (h_env), so
 * tests share the servers without seeing each other. Components run as
 * child processes of the factord binary (h_spawn), so a test can SIGKILL
 * them; their logs go to a file per test under the build folder.
 */
#ifndef FACTORD_TEST_HARNESS_H
#define FACTORD_TEST_HARNESS_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "infra/pg/store.h"

#define H_CODE_KEY "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8"
/* The event log's chain key of every spawned component (docs/audit.md). */
#define H_CHAIN_KEY "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9"
/* The personal-data master key of every spawned component and of the
 * tests' own stores (docs/pii.md): sealing is on in every integration test. */
#define H_PII_KEY "5e1a2b3c4d5e6f708192a3b4c5d6e7f8112233445566778899aabbccddeeff00"

typedef struct {
    char name[64];          /* test name, for logs */
    char dbname[64];        /* a database of the test's own */
    char db_url[512];
    char brokers[256];
    char instance[64];      /* a fresh instance id */
    char commands[96], events[96], replies[96], dlq[96], group[96];
    char log_path[256];
} h_env;

/* Fill from FACTORD_TEST_DATABASE_URL / FACTORD_TEST_KAFKA_BROKERS (the
 * test fails with a clear message when unset), make fresh names, run the
 * migrations and create the topics. */
void h_env_init(h_env *e, const char *name);

/* Drop the test's database (children must have stopped). */
void h_env_done(h_env *e);

/* The contents of tests/data/<rel> (e.g. "replies/add_otp_sms_4_not_ready.json"),
 * as one string; read once per process and kept for its lifetime. A missing
 * file fails the test. */
const char *h_data(const char *rel);

/* Start `factord <sub>` with e's settings plus extra "NAME=value" strings
 * (or "NAME" to unset; NULL-terminated), stdout and stderr into e's log. */
pid_t h_spawn(const h_env *e, const char *sub, const char *const *extra_env);
/* The same with arguments: `factord args[0] args[1] ...` (NULL-terminated,
 * at most 14). */
pid_t h_spawn_argv(const h_env *e, const char *const *args, const char *const *extra_env);
/* A factord tool (submit, verify, replay, status, ...) run to its end
 * with its stdin, stdout and stderr on pipes. */
typedef struct {
    pid_t pid;
    int out_fd, err_fd;
    int64_t started_ms;
    char name[32];      /* the subcommand, for the log */
} h_tool;

typedef struct {
    int code;           /* exit status, -signal when killed */
    char *out;          /* stdout (malloc'd, NUL-terminated) */
    char *err;          /* stderr (likewise) */
    int64_t elapsed_ms;
} h_tool_result;

/* Start `factord args...` (at most 38). e: its settings as h_spawn sets
 * them, but FACTORD_LOG_LEVEL unset (the tool's own default applies) and
 * no state folder; NULL: none of them. env as h_spawn's extra_env;
 * stdin_text NULL for an empty stdin. */
h_tool h_tool_start(const h_env *e, const char *const *args, const char *stdin_text, const char *const *env);
/* Collect the output and the exit status into *r (h_tool_result_free);
 * a tool still running after timeout_ms is killed and fails the test. Its
 * stderr is appended to e's log (when e) and checked for sanitizer
 * reports. */
void h_tool_finish(const h_env *e, h_tool *t, int timeout_ms, h_tool_result *r);
/* h_tool_start and h_tool_finish with a 60 s bound. */
void h_tool_run(const h_env *e, const char *const *args, const char *stdin_text, const char *const *env,
                h_tool_result *r);
void h_tool_result_free(h_tool_result *r);

/* SIGTERM (or SIGKILL when kill9) and reap; returns the exit status
 * (-signal when killed by a signal). */
int h_stop(pid_t pid, bool kill9);
/* Wait for a child that should exit by itself (failpoint); -signal/exit. */
int h_wait(pid_t pid, int timeout_ms);

/* Produce records (key, value) to topic and wait for delivery. */
void h_produce(const h_env *e, const char *topic, const char *key, const char *value, size_t value_len);

/* Read topic from the beginning until want records are there or timeout.
 * Returns a JSON array of {"key","value","headers":{...}} (value as a
 * string; records are parsed by the caller). New reference. */
json_t *h_read_topic(const h_env *e, const char *topic, size_t want, int timeout_ms);

/* Every partition of topic, each from its first offset, for rd_kafka_assign;
 * waits up to 10 s for a topic created moments ago to list its partitions. */
rd_kafka_topic_partition_list_t *h_partitions_from_start(rd_kafka_t *rk, const char *topic);

/* A command as wire JSON, for e's instance. payload may be NULL ({}).
 * Returns malloc'd text; id_out (37 bytes) gets the fresh command id. */
char *h_command(const h_env *e, const char *type, const char *user, const char *owner, json_t *payload,
                char *id_out);

/* Find the reply for command id in an array from h_read_topic. Borrowed. */
json_t *h_find_reply(json_t *records, const char *cmd_id);

/* An ImportHumanUser payload: user name, a fixed profile and e-mail, and,
 * when phone is not NULL, that phone (verified or not). New reference. */
json_t *h_import_payload(const char *name, const char *phone, bool verified);

/* Run one SQL query with text params and return the first column of the
 * first row as a long (or -1). */
long h_sql_long(const h_env *e, const char *sql, int nparams, const char *const *params);

/* A store connected to e's database. */
es_store *h_store(const h_env *e);

#endif
