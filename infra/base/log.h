/*
 * infra/base/log.h - one JSON object per log line on stderr.
 *
 * Every line has ts, level, component and msg, plus the key/value context the
 * caller gives (command id, user, topic/partition/offset, SQLSTATE ...).
 * Lines are written with one write(2) so threads never interleave. Never pass
 * secrets or phone codes.
 *
 * Layer: base; includes only the domain and base (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_LOG_H
#define FACTORD_INFRA_LOG_H

typedef enum { ES_LOG_DEBUG = 0, ES_LOG_INFO, ES_LOG_WARN, ES_LOG_ERROR } es_log_level;

/* Set the calling thread's component name and the process's lowest level
 * written ("debug", "info", "warn", "error"; unknown names keep info).
 * Call before starting threads. */
void es_log_init(const char *component, const char *level);
/* The component name of the calling thread only. */
void es_log_set_component(const char *component);
/* The calling thread's component name ("factord" when none was set). */
const char *es_log_component(void);
int es_log_enabled(es_log_level lvl);

/* es_log(level, "message", "key1", "value1", "key2", "value2", NULL).
 * Values are strings; NULL values are written as null. */
void es_log(es_log_level lvl, const char *msg, ...) __attribute__((sentinel));

#define es_info(...) es_log(ES_LOG_INFO, __VA_ARGS__, (const char *)NULL)
#define es_warn(...) es_log(ES_LOG_WARN, __VA_ARGS__, (const char *)NULL)
#define es_err(...) es_log(ES_LOG_ERROR, __VA_ARGS__, (const char *)NULL)
#define es_debug(...) \
    do { if (es_log_enabled(ES_LOG_DEBUG)) es_log(ES_LOG_DEBUG, __VA_ARGS__, (const char *)NULL); } while (0)

/* Small helper for numbers in log context: formats into a rotating static
 * per-thread buffer (8 slots), so several may appear in one call. */
const char *es_log_i64(long long v);

#endif
