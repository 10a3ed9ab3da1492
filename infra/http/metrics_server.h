/*
 * infra/http/metrics_server.h - `GET /metrics` for Prometheus on
 * FACTORD_METRICS_ADDR (docs/metrics.md): the process's registry
 * (infra/base/metrics.h) as exposition text, on a small server of its own
 * (one thread, a few connections), so a scrape never competes with the
 * gateway's callers. Anything else gets 404; a method other than GET or
 * HEAD gets 405.
 *
 * Ownership: the server is its caller's (es_metrics_server_stop,
 * NULL-safe).
 *
 * Layer: http; includes only the domain, base and libmicrohttpd (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_METRICS_SERVER_H
#define FACTORD_INFRA_METRICS_SERVER_H

#include "domain/errors.h"

typedef struct es_metrics_server es_metrics_server;

/* Listen on addr ("host:port"; port 0: any free port); component names
 * the log lines of its requests. */
es_result es_metrics_server_start(const char *addr, const char *component, es_metrics_server **out,
                                  es_error *err) ES_WUR;
int es_metrics_server_port(const es_metrics_server *s);
void es_metrics_server_stop(es_metrics_server *s);

#endif
