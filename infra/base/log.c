/*
 * infra/base/log.c - JSON-lines logging (see log.h).
 */
#include "infra/base/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Per thread: `factord run` runs every component in one process, each in
 * its own thread, and each line says which component wrote it. */
static _Thread_local char g_component[64];
static es_log_level g_min = ES_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void es_log_set_component(const char *component)
{
    snprintf(g_component, sizeof g_component, "%s", component ? component : "factord");
}

const char *es_log_component(void)
{
    return g_component[0] ? g_component : "factord";
}

void es_log_init(const char *component, const char *level)
{
    es_log_set_component(component);
    if (level) {
        for (int i = 0; i < 4; i++)
            if (strcmp(level, level_names[i]) == 0)
                g_min = (es_log_level)i;
    }
}

int es_log_enabled(es_log_level lvl) { return lvl >= g_min; }

const char *es_log_i64(long long v)
{
    static _Thread_local char bufs[8][24];
    static _Thread_local unsigned slot;
    char *b = bufs[slot++ % 8];
    snprintf(b, 24, "%lld", v);
    return b;
}

void es_log(es_log_level lvl, const char *msg, ...)
{
    if (lvl < g_min)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char tsbuf[40];
    size_t k = strftime(tsbuf, sizeof tsbuf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(tsbuf + k, sizeof tsbuf - k, ".%06ldZ", ts.tv_nsec / 1000);

    json_t *o = json_object();
    json_object_set_new(o, "ts", json_string(tsbuf));
    json_object_set_new(o, "level", json_string(level_names[lvl]));
    json_object_set_new(o, "component", json_string(g_component[0] ? g_component : "factord"));
    json_object_set_new(o, "msg", json_string(msg ? msg : ""));
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        /* json_string rejects invalid UTF-8: fall back to a lossy copy. */
        json_t *jv = val ? json_string(val) : json_null();
        if (!jv)
            jv = json_string("<non-UTF-8 value>");
        json_object_set_new(o, key, jv);
    }
    va_end(ap);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line)
        return;
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps leaves room for the NUL we overwrite... */
    /* ...so write n+1 bytes, then restore for free(). */
    ssize_t w = write(STDERR_FILENO, line, n + 1);
    (void)w;
    line[n] = '\0';
    free(line);
}
