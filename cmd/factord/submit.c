/*
 * cmd/factord/submit.c - `factord submit`: send one command, wait for its
 * reply, print it.
 *
 * The command comes from flags or, with `-`, as a whole JSON command on
 * stdin. It is checked by the domain's own decoder before anything is sent
 * (a command the processor would dead-letter never leaves), and what goes
 * out is the decoder's canonical re-encoding. The reply waiter is
 * positioned at the end of the reply topic BEFORE the command is produced
 * (infra/kafka/waiter.h), so the reply cannot be missed however fast it comes.
 *
 * Exit codes: 0 the reply's httpStatus is 2xx, 1 any other status, 2 no
 * reply in time, bad input, or Kafka unreachable. Only the reply goes to
 * stdout; messages and (warn and above, unless FACTORD_LOG_LEVEL says
 * otherwise) JSON log lines go to stderr.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "cmd/factord/cmd.h"
#include "domain/command.h"
#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"
#include "infra/kafka/waiter.h"

#define DEFAULT_TIMEOUT_MS 10000
#define MAX_TIMEOUT_MS 86400000LL /* one day */

/* The flags, in the order --help lists them. */
enum { F_TYPE, F_USER, F_ORG, F_INSTANCE, F_PAYLOAD, F_ID, F_REPLY_TO, F_TIMEOUT, F__COUNT };

static const struct {
    const char *name;
    const char *arg;
    const char *help;
} flags[F__COUNT] = {
    [F_TYPE] = {"type", "T", "command type (required): see below"},
    [F_USER] = {"user", "U", "user id (required); also the Kafka key"},
    [F_ORG] = {"org", "O", "the user's organisation (resourceOwner); optional"},
    [F_INSTANCE] = {"instance", "I", "instance id (default: FACTORD_INSTANCE_ID)"},
    [F_PAYLOAD] = {"payload", "JSON", "payload object (default: {})"},
    [F_ID] = {"id", "UUID", "command id, the idempotency key (default: a fresh UUID v4)"},
    [F_REPLY_TO] = {"reply-to", "TOPIC", "topic to await the reply on (default: FACTORD_REPLIES_TOPIC)"},
    [F_TIMEOUT] = {"timeout-ms", "N", "how long to wait for the reply, in all (default: 10000)"},
};

typedef struct {
    const char *val[F__COUNT]; /* NULL = not given */
    bool from_stdin;           /* `-` */
    long long timeout_ms;
} submit_args;

static void print_help(void)
{
    /* The first lines as every subcommand prints them, from main.c's table. */
    char name[] = "submit", help[] = "--help";
    char *hargv[] = {name, help};
    bool bad;
    (void)fd_wants_help(2, hargv, "submit", &bad);
    printf("\nFlags:\n");
    for (int f = 0; f < F__COUNT; f++) {
        char left[32];
        snprintf(left, sizeof left, "--%s %s", flags[f].name, flags[f].arg);
        printf("  %-18s %s\n", left, flags[f].help);
    }
    printf("  %-18s %s\n", "-", "instead of the command flags: a whole command (JSON, docs/contracts.md)");
    printf("  %-18s %s\n", "", "on stdin; its replyTo is kept (else the default added), a missing id is");
    printf("  %-18s %s\n", "", "generated; only --timeout-ms may accompany it");
    printf("\nCommand types:");
    for (int t = DOM_CMD_UNKNOWN + 1; t < DOM_CMD__COUNT; t++)
        printf(" %s", dom_cmd_type_name((dom_cmd_type)t));
    printf("\n\nBrokers: FACTORD_KAFKA_BROKERS, else the embedded broker that `factord run` records in\n"
           "$FACTORD_STATE_DIR/kafka.brokers.\n"
           "Prints the reply ({\"commandId\",\"httpStatus\",\"body\"}) on stdout, one line.\n"
           "Exit codes: 0 httpStatus 2xx, 1 any other httpStatus, 2 no reply in time, bad input or\n"
           "Kafka unreachable.\n"
           "Example: factord submit --type AddMyAuthFactorOTPSMS --user 123 --org 456\n");
}

/* 0 parsed, 1 help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, submit_args *a)
{
    memset(a, 0, sizeof *a);
    a->timeout_ms = DEFAULT_TIMEOUT_MS;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help();
            return 1;
        }
        if (strcmp(arg, "-") == 0) {
            a->from_stdin = true;
            continue;
        }
        int f = F__COUNT;
        const char *value = NULL;
        if (strncmp(arg, "--", 2) == 0) {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            for (f = 0; f < F__COUNT; f++)
                if (strlen(flags[f].name) == n && strncmp(flags[f].name, name, n) == 0)
                    break;
            if (f < F__COUNT && eq)
                value = eq + 1;
        }
        if (f == F__COUNT) {
            fprintf(stderr, "factord submit: unknown argument '%s' (try --help)\n", arg);
            return 2;
        }
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "factord submit: --%s needs a value (try --help)\n", flags[f].name);
                return 2;
            }
            value = argv[++i];
        }
        if (a->val[f]) {
            fprintf(stderr, "factord submit: --%s given twice\n", flags[f].name);
            return 2;
        }
        a->val[f] = value;
    }
    if (a->val[F_TIMEOUT]) {
        char *end = NULL;
        errno = 0;
        long long t = strtoll(a->val[F_TIMEOUT], &end, 10);
        if (errno || end == a->val[F_TIMEOUT] || *end || t < 1 || t > MAX_TIMEOUT_MS) {
            fprintf(stderr, "factord submit: --timeout-ms: expected milliseconds from 1 to %lld, got '%s'\n",
                    MAX_TIMEOUT_MS, a->val[F_TIMEOUT]);
            return 2;
        }
        a->timeout_ms = t;
    }
    if (a->from_stdin) {
        for (int f = 0; f < F__COUNT; f++)
            if (f != F_TIMEOUT && a->val[f]) {
                fprintf(stderr, "factord submit: --%s cannot be combined with `-` (the command comes from "
                                "stdin)\n", flags[f].name);
                return 2;
            }
        return 0;
    }
    if (!a->val[F_TYPE] || !a->val[F_USER]) {
        fprintf(stderr, "factord submit: --%s is required (or `-` to read a whole command from stdin; "
                        "try --help)\n", a->val[F_TYPE] ? "user" : "type");
        return 2;
    }
    return 0;
}

static void fresh_id(char out[DOM_UUID_LEN + 1])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

static void set_str(json_t *o, const char *key, const char *value)
{
    if (json_object_set_new(o, key, json_string(value)) != 0)
        abort();
}

/* The command as JSON from the flags; NULL after printing why. */
static json_t *command_from_flags(const submit_args *a, const es_config *cfg)
{
    const char *type = a->val[F_TYPE];
    if (dom_cmd_type_parse(type) == DOM_CMD_UNKNOWN) {
        fprintf(stderr, "factord submit: --type: unknown command type \"%s\"; one of:", type);
        for (int t = DOM_CMD_UNKNOWN + 1; t < DOM_CMD__COUNT; t++)
            fprintf(stderr, " %s", dom_cmd_type_name((dom_cmd_type)t));
        fprintf(stderr, "\n");
        return NULL;
    }
    json_t *payload = NULL;
    if (!a->val[F_PAYLOAD]) {
        if (!(payload = json_object()))
            abort();
    } else {
        json_error_t jerr;
        payload = json_loads(a->val[F_PAYLOAD], JSON_REJECT_DUPLICATES, &jerr);
        if (!payload) {
            fprintf(stderr, "factord submit: --payload: not JSON: %s (column %d)\n", jerr.text, jerr.column);
            return NULL;
        }
        if (!json_is_object(payload)) {
            fprintf(stderr, "factord submit: --payload: expected a JSON object, like {\"phone\":\"+41...\"}\n");
            json_decref(payload);
            return NULL;
        }
    }
    char id[DOM_UUID_LEN + 1];
    if (!a->val[F_ID])
        fresh_id(id);
    json_t *c = json_object();
    if (!c)
        abort();
    json_object_set_new(c, "payload", payload);
    const struct {
        const char *key;
        int flag;
        const char *value;
    } fields[] = {
        {"id", F_ID, a->val[F_ID] ? a->val[F_ID] : id},
        {"type", F_TYPE, type},
        {"instanceId", F_INSTANCE, a->val[F_INSTANCE] ? a->val[F_INSTANCE] : cfg->instance_id},
        {"userId", F_USER, a->val[F_USER]},
        {"resourceOwner", F_ORG, a->val[F_ORG]},
        {"replyTo", F_REPLY_TO, a->val[F_REPLY_TO] ? a->val[F_REPLY_TO] : cfg->replies_topic},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (!fields[i].value)
            continue; /* --org not given */
        json_t *v = json_string(fields[i].value);
        if (!v) { /* jansson takes only UTF-8 */
            fprintf(stderr, "factord submit: --%s: not valid UTF-8\n", flags[fields[i].flag].name);
            json_decref(c);
            return NULL;
        }
        if (json_object_set_new(c, fields[i].key, v) != 0)
            abort();
    }
    return c;
}

/* The command as JSON from stdin, with a fresh id and the default replyTo
 * added when missing; NULL after printing why. */
static json_t *command_from_stdin(const es_config *cfg)
{
    size_t cap = DOM_CMD_MAX_BYTES + 1, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        abort();
    size_t n;
    while (len < cap && (n = fread(buf + len, 1, cap - len, stdin)) > 0)
        len += n;
    if (ferror(stdin)) {
        fprintf(stderr, "factord submit: reading stdin: %s\n", strerror(errno));
        free(buf);
        return NULL;
    }
    if (len > DOM_CMD_MAX_BYTES) {
        fprintf(stderr, "factord submit: stdin: command too large (limit %d bytes)\n", DOM_CMD_MAX_BYTES);
        free(buf);
        return NULL;
    }
    json_error_t jerr;
    json_t *c = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (!c) {
        fprintf(stderr, "factord submit: stdin: not JSON: %s (line %d, column %d)\n", jerr.text, jerr.line,
                jerr.column);
        return NULL;
    }
    if (!json_is_object(c)) {
        fprintf(stderr, "factord submit: stdin: expected a JSON object (a command, see docs/contracts.md)\n");
        json_decref(c);
        return NULL;
    }
    if (!json_object_get(c, "id")) {
        char id[DOM_UUID_LEN + 1];
        fresh_id(id);
        set_str(c, "id", id);
    }
    if (!json_object_get(c, "replyTo"))
        set_str(c, "replyTo", cfg->replies_topic);
    return c;
}

/* Decode with the processor's own decoder; fills cmd. False after printing
 * why. */
static bool validate(const json_t *c, dom_cmd *cmd, const es_config *cfg)
{
    char *text = json_dumps(c, JSON_COMPACT);
    if (!text)
        abort();
    es_error err = {0};
    es_result rc = dom_cmd_decode(text, strlen(text), cmd, &err);
    free(text);
    if (rc != ES_OK) {
        fprintf(stderr, "factord submit: invalid command: %s\n", err.text);
        return false;
    }
    if (!cmd->reply_to[0]) /* "replyTo":"" means the default */
        snprintf(cmd->reply_to, sizeof cmd->reply_to, "%s", cfg->replies_topic);
    return true;
}

/* FACTORD_KAFKA_BROKERS, else the embedded broker `factord run` recorded.
 * Returns malloc'd text, or NULL after printing why. */
static char *find_brokers(const es_config *cfg, bool *from_state)
{
    *from_state = false;
    if (cfg->kafka_brokers) {
        char *b = strdup(cfg->kafka_brokers);
        if (!b)
            abort();
        return b;
    }
    char path[4096];
    if (snprintf(path, sizeof path, "%s/kafka.brokers", cfg->state_dir) >= (int)sizeof path) {
        fprintf(stderr, "factord submit: FACTORD_STATE_DIR is too long\n");
        return NULL;
    }
    char line[1024] = "";
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(line, sizeof line, f))
            line[0] = '\0';
        fclose(f);
    }
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    if (!n) {
        fprintf(stderr,
                "factord submit: no Kafka broker: set FACTORD_KAFKA_BROKERS, or start `factord run` "
                "(it records its embedded broker in %s, which %s)\n",
                path, f ? "is empty" : "does not exist");
        return NULL;
    }
    es_debug("using the broker recorded by `factord run`", "path", path, "brokers", line);
    char *b = strdup(line);
    if (!b)
        abort();
    *from_state = true;
    return b;
}

/* Produce the command and wait until Kafka has it. False after printing why. */
static bool send_command(const char *brokers, const es_config *cfg, const dom_cmd *cmd, int64_t deadline)
{
    bool ok = false;
    es_producer *p = NULL;
    es_error err = {0};
    json_t *j = dom_cmd_to_json(cmd, true);
    char *value = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!value)
        abort();
    size_t key_len = strlen(cmd->user_id);
    if (es_producer_new(brokers, "factord-submit", &p, &err) != ES_OK) {
        fprintf(stderr, "factord submit: %s\n", err.text);
        goto out;
    }
    if (es_producer_send(p, cfg->commands_topic, key_len ? cmd->user_id : NULL, key_len, value, strlen(value),
                         NULL, &err) != ES_OK) {
        fprintf(stderr, "factord submit: command %s not sent to %s: %s\n", cmd->id, cfg->commands_topic, err.text);
        goto out;
    }
    int64_t left = deadline - es_clock_mono_ms();
    size_t failed = 0;
    if (es_producer_flush(p, left > 1 ? (int)left : 1, &failed, &err) != ES_OK) {
        fprintf(stderr, "factord submit: command %s not confirmed by Kafka (%s): %s\n", cmd->id,
                cfg->commands_topic, err.text);
        goto out;
    }
    es_debug("command sent", "command_id", cmd->id, "topic", cfg->commands_topic, "user", cmd->user_id);
    ok = true;
out:
    if (p && !ok) /* whatever is still queued must not go out later */
        es_producer_purge(p);
    es_producer_free(p);
    free(value);
    return ok;
}

/* Print the reply and map its httpStatus to the exit code. */
static int print_reply(const char *value, size_t len, const char *cmd_id)
{
    fwrite(value, 1, len, stdout);
    if (len == 0 || value[len - 1] != '\n')
        fputc('\n', stdout);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "factord submit: writing the reply: %s\n", strerror(errno));
        return 2;
    }
    json_t *r = json_loadb(value, len, 0, NULL);
    json_t *st = json_object_get(r, "httpStatus");
    int code = 1;
    if (!json_is_integer(st))
        fprintf(stderr, "factord submit: the reply to command %s has no integer httpStatus\n", cmd_id);
    else if (json_integer_value(st) >= 200 && json_integer_value(st) <= 299)
        code = 0;
    json_decref(r);
    return code;
}

int fd_submit_main(int argc, char **argv)
{
    submit_args a;
    int pr = parse_args(argc, argv, &a);
    if (pr)
        return pr == 1 ? 0 : 2;
    es_config cfg;
    if (!fd_load_config(&cfg, "submit"))
        return 2;
    /* A short-lived tool: only warnings and errors, unless asked. */
    const char *lvl = getenv("FACTORD_LOG_LEVEL");
    if (!lvl || !*lvl)
        es_log_init("submit", "warn");

    int exit_code = 2;
    json_t *c = NULL;
    char *brokers = NULL, *value = NULL;
    es_waiter *w = NULL;
    es_error err = {0};
    dom_cmd cmd;

    c = a.from_stdin ? command_from_stdin(&cfg) : command_from_flags(&a, &cfg);
    if (!c || !validate(c, &cmd, &cfg))
        goto out;
    bool from_state;
    if (!(brokers = find_brokers(&cfg, &from_state)))
        goto out;
    fd_install_signals();

    int64_t deadline = es_clock_mono_ms() + a.timeout_ms;
    /* The waiter first: positioned before the command exists, it cannot
     * miss the reply. */
    if (es_waiter_new(brokers, cmd.reply_to, (int)cfg.topic_partitions, deadline, &w, &err) != ES_OK) {
        fprintf(stderr, "factord submit: %s; nothing sent%s%s%s\n", err.text,
                from_state ? " (the address is from " : "", from_state ? cfg.state_dir : "",
                from_state ? "/kafka.brokers: is `factord run` still running?)" : "");
        goto out;
    }
    if (fd_stop) {
        fprintf(stderr, "factord submit: interrupted; nothing sent\n");
        goto out;
    }
    if (!send_command(brokers, &cfg, &cmd, deadline))
        goto out;
    size_t len = 0;
    if (es_waiter_wait(w, cmd.id, strlen(cmd.id), deadline, &fd_stop, &value, &len, &err) != ES_OK) {
        if (fd_stop)
            fprintf(stderr, "factord submit: interrupted while waiting for the reply to command %s\n", cmd.id);
        else {
            const char *kerr = es_waiter_last_error(w);
            fprintf(stderr,
                    "factord submit: no reply for command %s within %lld ms (on %s)%s%s; it may still be "
                    "decided later: submitting it again with the same id and content gets its outcome\n",
                    cmd.id, a.timeout_ms, cmd.reply_to, *kerr ? "; last Kafka error: " : "", kerr);
        }
        goto out;
    }
    exit_code = print_reply(value, len, cmd.id);
out:
    free(value);
    es_waiter_free(w);
    free(brokers);
    json_decref(c);
    es_config_free(&cfg);
    return exit_code;
}
