/*
 * tests/integration/harness.c - see harness.h.
 */
#include "tests/integration/harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "infra/base/clock.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"

#define H_DATA_MAX 16

const char *h_data(const char *rel)
{
    static struct {
        char rel[128];
        char *text;
    } cache[H_DATA_MAX];
    static size_t n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(cache[i].rel, rel) == 0)
            return cache[i].text;
    cr_assert(n < H_DATA_MAX && strlen(rel) < sizeof cache[0].rel, "h_data: too many files or a long name");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", FACTORD_TEST_DATA, rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "h_data: cannot open %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, got, mem);
    fclose(f);
    fclose(mem);
    snprintf(cache[n].rel, sizeof cache[n].rel, "%s", rel);
    cache[n].text = text;
    return cache[n++].text;
}

/* n random hex digits: a fresh uuid's bytes, so that two test processes
 * never draw the same tag (a seed of time ^ pid repeats across processes
 * that start a second and a pid apart). */
static void rand_hex(char *out, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uuid_t u;
        uuid_generate_random(u);
        for (size_t k = 0; k < sizeof u && i < n; k++, i++)
            out[i] = "0123456789abcdef"[u[k] & 15];
    }
    out[n] = '\0';
}

void h_env_init(h_env *e, const char *name)
{
    memset(e, 0, sizeof *e);
    es_log_init("test", "warn"); /* the test's own store and admin calls stay quiet */
    const char *db = getenv("FACTORD_TEST_DATABASE_URL");
    const char *br = getenv("FACTORD_TEST_KAFKA_BROKERS");
    cr_assert(db && *db, "FACTORD_TEST_DATABASE_URL is not set: start the servers with "
                         "`eval \"$(scripts/servers.sh start)\"` (see README)");
    cr_assert(br && *br, "FACTORD_TEST_KAFKA_BROKERS is not set (see README)");
    char tag[13];
    rand_hex(tag, 12);
    snprintf(e->name, sizeof e->name, "%s", name);
    /* A database of its own: the relay's checkpoint and lock are per
     * database, and a test must not publish another test's rows. */
    char *dbname = e->dbname;
    snprintf(e->dbname, sizeof e->dbname, "factord_t_%s", tag);
    PGconn *admin = PQconnectdb(db);
    cr_assert_eq(PQstatus(admin), CONNECTION_OK, "%s", PQerrorMessage(admin));
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", dbname); /* our own hex: nothing to escape */
    PGresult *r = PQexec(admin, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(admin));
    PQclear(r);
    PQfinish(admin);
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(db, &errmsg);
    cr_assert_not_null(opts, "FACTORD_TEST_DATABASE_URL: %s", errmsg ? errmsg : "");
    size_t used = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") == 0 ? dbname : o->val;
        if (!v)
            continue;
        used += (size_t)snprintf(e->db_url + used, sizeof e->db_url - used, "%s='", o->keyword);
        for (const char *c = v; *c && used + 4 < sizeof e->db_url; c++) {
            if (*c == '\'' || *c == '\\')
                e->db_url[used++] = '\\';
            e->db_url[used++] = *c;
        }
        used += (size_t)snprintf(e->db_url + used, sizeof e->db_url - used, "' ");
    }
    cr_assert_lt(used, sizeof e->db_url - 1, "connection string too long");
    PQconninfoFree(opts);
    snprintf(e->brokers, sizeof e->brokers, "%s", br);
    snprintf(e->instance, sizeof e->instance, "inst-%s", tag);
    snprintf(e->commands, sizeof e->commands, "t.%s.%s.commands", name, tag);
    snprintf(e->events, sizeof e->events, "t.%s.%s.events", name, tag);
    snprintf(e->replies, sizeof e->replies, "t.%s.%s.replies", name, tag);
    snprintf(e->dlq, sizeof e->dlq, "t.%s.%s.dlq", name, tag);
    snprintf(e->group, sizeof e->group, "t.%s.%s.processor", name, tag);
    const char *log_dir = getenv("FACTORD_TEST_LOG_DIR");
    if (log_dir)
        mkdir(log_dir, 0755); /* EEXIST is fine */
    snprintf(e->log_path, sizeof e->log_path, "%s/%s-%s.log", log_dir ? log_dir : "/tmp", name, tag);

    es_store *st = h_store(e);
    int applied = 0;
    es_error err = {0};
    cr_assert_eq(es_store_migrate(st, &applied, &err), ES_OK, "migrate: %s", err.text);
    es_store_free(st);
    const char *topics[] = {e->commands, e->events, e->replies, e->dlq};
    es_topic_spec spec = {.partitions = 4};
    cr_assert_eq(es_kafka_ensure_topics(e->brokers, topics, 4, &spec, 15000, &err), ES_OK, "topics: %s", err.text);
}

void h_env_done(h_env *e)
{
    /* The children's sanitizer reports land in their log, not in CTest's
     * output: fail the test here when one is there. */
    FILE *f = fopen(e->log_path, "r");
    if (f) {
        char line[4096];
        while (fgets(line, sizeof line, f))
            cr_expect(!strstr(line, "ERROR: AddressSanitizer") && !strstr(line, "ERROR: LeakSanitizer") &&
                          !strstr(line, "runtime error:"),
                      "sanitizer report in %s: %s", e->log_path, line);
        fclose(f);
    }
    const char *db = getenv("FACTORD_TEST_DATABASE_URL");
    PGconn *admin = PQconnectdb(db);
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", e->dbname);
    PQclear(PQexec(admin, sql));
    PQfinish(admin);
}

es_store *h_store(const h_env *e)
{
    es_store *st = NULL;
    es_error err = {0};
    cr_assert_eq(es_store_open(e->db_url, &st, &err), ES_OK, "connect: %s", err.text);
    es_pii_master m;
    cr_assert_eq(es_pii_master_from_hex(H_PII_KEY, &m, NULL), ES_OK);
    es_store_set_pii_master(st, &m);
    es_pii_master_wipe(&m);
    return st;
}

pid_t h_spawn(const h_env *e, const char *sub, const char *const *extra_env)
{
    const char *argv[] = {sub, NULL};
    return h_spawn_argv(e, argv, extra_env);
}

static int status_of(int st)
{
    if (WIFSIGNALED(st))
        return -WTERMSIG(st);
    return WEXITSTATUS(st);
}

/* In a child: e's settings (when e), then env ("NAME=value" sets, "NAME"
 * unsets). */
static void child_env(const h_env *e, const char *const *env)
{
    if (e) {
        setenv("FACTORD_DATABASE_URL", e->db_url, 1);
        setenv("FACTORD_KAFKA_BROKERS", e->brokers, 1);
        setenv("FACTORD_COMMANDS_TOPIC", e->commands, 1);
        setenv("FACTORD_EVENTS_TOPIC", e->events, 1);
        setenv("FACTORD_REPLIES_TOPIC", e->replies, 1);
        setenv("FACTORD_DLQ_TOPIC", e->dlq, 1);
        setenv("FACTORD_PROCESSOR_GROUP", e->group, 1);
        char proj_group[sizeof e->group + 16];
        snprintf(proj_group, sizeof proj_group, "%s.projector", e->group);
        setenv("FACTORD_PROJECTOR_GROUP", proj_group, 1);
        setenv("FACTORD_CODE_KEY", H_CODE_KEY, 1);
        setenv("FACTORD_CHAIN_KEY", H_CHAIN_KEY, 1);
        setenv("FACTORD_PII_KEY", H_PII_KEY, 1);
        setenv("FACTORD_SESSION_TIMEOUT_MS", "6000", 1);
    }
    unsetenv("FACTORD_FAILPOINT");
    for (const char *const *x = env; x && *x; x++) {
        const char *eq = strchr(*x, '=');
        if (eq) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(eq - *x), *x);
            setenv(name, eq + 1, 1);
        } else {
            unsetenv(*x);
        }
    }
}

/* In a child: exec `factord args...`; never returns. */
static void exec_factord(const char *const *args)
{
    const char *argv[40] = {"factord"};
    size_t n = 1;
    for (const char *const *a = args; a && *a && n < sizeof argv / sizeof argv[0] - 1; a++)
        argv[n++] = *a;
    argv[n] = NULL;
    execv(FACTORD_BINARY, (char *const *)argv);
    _exit(127);
}

pid_t h_spawn_argv(const h_env *e, const char *const *args, const char *const *extra_env)
{
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        /* A failed assertion ends the test process at once: take the
         * components down with it instead of leaving them running. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(e->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        setenv("FACTORD_LOG_LEVEL", "info", 1);
        child_env(e, extra_env);
        exec_factord(args);
    }
    return pid;
}

h_tool h_tool_start(const h_env *e, const char *const *args, const char *stdin_text, const char *const *env)
{
    int in[2], out[2], err[2];
    cr_assert_eq(pipe(in), 0);
    cr_assert_eq(pipe(out), 0);
    cr_assert_eq(pipe(err), 0);
    h_tool t = {.started_ms = es_clock_mono_ms()};
    snprintf(t.name, sizeof t.name, "%s", args && args[0] ? args[0] : "");
    t.pid = fork();
    cr_assert_neq(t.pid, -1);
    if (t.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        for (int i = 0; i < 2; i++) {
            close(in[i]);
            close(out[i]);
            close(err[i]);
        }
        unsetenv("FACTORD_LOG_LEVEL");
        setenv("FACTORD_STATE_DIR", "/nonexistent/factord-test-state", 1);
        child_env(e, env);
        exec_factord(args);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (stdin_text) {
        size_t len = strlen(stdin_text), done = 0;
        while (done < len) {
            ssize_t w = write(in[1], stdin_text + done, len - done);
            if (w <= 0)
                break; /* the child may refuse early: that is its answer */
            done += (size_t)w;
        }
    }
    close(in[1]);
    t.out_fd = out[0];
    t.err_fd = err[0];
    return t;
}

void h_tool_finish(const h_env *e, h_tool *t, int timeout_ms, h_tool_result *r)
{
    memset(r, 0, sizeof *r);
    char *bufs[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};
    FILE *mem[2] = {open_memstream(&bufs[0], &lens[0]), open_memstream(&bufs[1], &lens[1])};
    cr_assert(mem[0] && mem[1]);
    struct pollfd fds[2] = {{.fd = t->out_fd, .events = POLLIN}, {.fd = t->err_fd, .events = POLLIN}};
    int open_fds = 2;
    bool timed_out = false;
    int64_t end = t->started_ms + timeout_ms;
    while (open_fds > 0) {
        int64_t left = end - es_clock_mono_ms();
        if (left <= 0) {
            kill(t->pid, SIGKILL);
            timed_out = true;
            break;
        }
        int n = poll(fds, 2, (int)(left < 200 ? left : 200));
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[4096];
            ssize_t got = read(fds[i].fd, tmp, sizeof tmp);
            if (got <= 0) {
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            fwrite(tmp, 1, (size_t)got, mem[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        if (fds[i].fd >= 0)
            close(fds[i].fd);
        fclose(mem[i]);
    }
    r->out = bufs[0];
    r->err = bufs[1];
    int st = 0;
    waitpid(t->pid, &st, 0);
    r->elapsed_ms = es_clock_mono_ms() - t->started_ms;
    r->code = status_of(st);
    if (e) {
        FILE *f = fopen(e->log_path, "a");
        if (f) {
            fprintf(f, "--- factord %s (exit %d, %lld ms) stderr:\n%s", t->name, r->code, (long long)r->elapsed_ms,
                    r->err);
            fclose(f);
        }
    }
    cr_expect(!strstr(r->err, "Sanitizer") && !strstr(r->err, "runtime error:"), "sanitizer report: %s",
              r->err);
    cr_assert_not(timed_out, "factord %s did not finish within %d ms; stderr: %s", t->name, timeout_ms,
                  r->err);
}

void h_tool_run(const h_env *e, const char *const *args, const char *stdin_text, const char *const *env,
                h_tool_result *r)
{
    h_tool t = h_tool_start(e, args, stdin_text, env);
    h_tool_finish(e, &t, 60000, r);
}

void h_tool_result_free(h_tool_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}


int h_wait(pid_t pid, int timeout_ms)
{
    int64_t end = es_clock_mono_ms() + timeout_ms;
    int st = 0;
    while (es_clock_mono_ms() < end) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return status_of(st);
        es_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    cr_assert_fail("child %d did not exit within %d ms", (int)pid, timeout_ms);
    return 999;
}

int h_stop(pid_t pid, bool kill9)
{
    kill(pid, kill9 ? SIGKILL : SIGTERM);
    int st = 0;
    int64_t end = es_clock_mono_ms() + 30000;
    while (es_clock_mono_ms() < end) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return status_of(st);
        es_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return status_of(st);
}

static es_producer *producer_for(const h_env *e)
{
    static es_producer *p;
    static char brokers[256];
    if (p && strcmp(brokers, e->brokers) == 0)
        return p;
    es_producer_free(p);
    es_error err = {0};
    cr_assert_eq(es_producer_new(e->brokers, "factord-test", &p, &err), ES_OK, "%s", err.text);
    snprintf(brokers, sizeof brokers, "%s", e->brokers);
    return p;
}

void h_produce(const h_env *e, const char *topic, const char *key, const char *value, size_t value_len)
{
    es_producer *p = producer_for(e);
    es_error err = {0};
    cr_assert_eq(es_producer_send(p, topic, key, key ? strlen(key) : 0, value, value_len, NULL, &err), ES_OK,
                 "%s", err.text);
    size_t failed = 0;
    cr_assert_eq(es_producer_flush(p, 30000, &failed, &err), ES_OK, "%s", err.text);
}

rd_kafka_topic_partition_list_t *h_partitions_from_start(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    cr_assert_not_null(rkt);
    /* A topic created moments ago can be listed without its partitions
     * until its leaders are known: ask again until they are. */
    const struct rd_kafka_metadata *md = NULL;
    int parts = 0;
    for (int64_t end = es_clock_mono_ms() + 10000;;) {
        cr_assert_eq(rd_kafka_metadata(rk, 0, rkt, &md, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(md->topic_cnt, 1);
        parts = md->topics[0].err ? 0 : md->topics[0].partition_cnt;
        if (parts > 0 || es_clock_mono_ms() > end)
            break;
        rd_kafka_metadata_destroy(md);
        es_sleep_ms(100);
    }
    cr_assert_gt(parts, 0, "topic %s has no partitions after 10 s", topic);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int i = 0; i < parts; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return l;
}

json_t *h_read_topic(const h_env *e, const char *topic, size_t want, int timeout_ms)
{
    es_error err = {0};
    char errstr[256];
    rd_kafka_conf_t *conf = es_kafka_conf(e->brokers, "factord-test-reader", &err);
    cr_assert_not_null(conf, "%s", err.text);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", "factord-test-reader", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = h_partitions_from_start(rk, topic);
    cr_assert_eq(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);

    json_t *out = json_array();
    int64_t end = es_clock_mono_ms() + timeout_ms;
    while (json_array_size(out) < want && es_clock_mono_ms() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            json_t *rec = json_object();
            json_object_set_new(rec, "key", json_stringn(m->key ? m->key : "", m->key ? m->key_len : 0));
            json_t *v = json_stringn(m->payload ? m->payload : "", m->payload ? m->len : 0);
            json_object_set_new(rec, "value", v ? v : json_string("<binary>"));
            json_object_set_new(rec, "partition", json_integer(m->partition));
            json_object_set_new(rec, "offset", json_integer(m->offset));
            json_t *hs = json_object();
            rd_kafka_headers_t *hdrs = NULL;
            if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
                const char *name;
                const void *val;
                size_t vlen;
                for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen) == 0; i++)
                    json_object_set_new(hs, name, json_stringn(val ? val : "", val ? vlen : 0));
            }
            json_object_set_new(rec, "headers", hs);
            json_array_append_new(out, rec);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

char *h_command(const h_env *e, const char *type, const char *user, const char *owner, json_t *payload,
                char *id_out)
{
    uuid_t u;
    char id[37];
    uuid_generate_random(u);
    uuid_unparse_lower(u, id);
    if (id_out)
        memcpy(id_out, id, 37);
    json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "id", id, "type", type, "instanceId",
                          e->instance, "userId", user, "resourceOwner", owner, "payload",
                          payload ? payload : json_object(), "replyTo", e->replies);
    char *s = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    return s;
}

json_t *h_find_reply(json_t *records, const char *cmd_id)
{
    size_t i;
    json_t *rec;
    json_array_foreach(records, i, rec) {
        if (strcmp(json_string_value(json_object_get(rec, "key")), cmd_id) == 0)
            return rec;
    }
    return NULL;
}

long h_sql_long(const h_env *e, const char *sql, int nparams, const char *const *params)
{
    PGconn *c = PQconnectdb(e->db_url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    long v = -1;
    if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

json_t *h_import_payload(const char *name, const char *phone, bool verified)
{
    json_t *p = json_pack("{s:s, s:{s:s, s:s}, s:{s:s}}", "userName", name, "profile", "firstName", "Ada",
                          "lastName", "Lovelace", "email", "email", "ada@example.com");
    if (phone)
        json_object_set_new(p, "phone", json_pack("{s:s, s:b}", "phone", phone, "isPhoneVerified", verified));
    return p;
}
