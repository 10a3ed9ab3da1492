/*
 * infra/http/metrics_server.c - the /metrics endpoint (metrics_server.h).
 */
#include "infra/http/metrics_server.h"

#include <stdlib.h>
#include <string.h>

#include "infra/base/metrics.h"
#include "infra/http/http.h"

struct es_metrics_server {
    es_http *http;
};

/* The exposition format Prometheus asks for (text, version 0.0.4). */
#define EXPOSITION_TYPE "text/plain; version=0.0.4; charset=utf-8"

static void answer(es_http_req *req, unsigned status, const char *text)
{
    char *b = strdup(text);
    if (!b)
        abort();
    es_http_req_add_header(req, "Content-Type", "text/plain; charset=utf-8");
    es_http_respond(req, status, b, strlen(b));
}

static void on_headers(es_http_req *req, void *ctx)
{
    (void)ctx;
    const char *method = es_http_req_method(req), *path = es_http_req_path(req);
    if (strcmp(path, "/metrics") != 0) {
        answer(req, 404, "Not Found: the metrics are at /metrics\n");
        return;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        es_http_req_add_header(req, "Allow", "GET, HEAD");
        answer(req, 405, "Method Not Allowed\n");
        return;
    }
    char *text = es_metrics_render();
    es_http_req_add_header(req, "Content-Type", EXPOSITION_TYPE);
    es_http_respond(req, 200, text, strlen(text));
}

static void on_request(es_http_req *req, void *ctx)
{
    (void)req;
    (void)ctx; /* every request was answered in on_headers */
}

es_result es_metrics_server_start(const char *addr, const char *component, es_metrics_server **out, es_error *err)
{
    *out = NULL;
    es_metrics_server *s = calloc(1, sizeof *s);
    if (!s)
        abort();
    es_http_opts o = {.addr = addr,
                      .threads = 1,
                      .max_connections = 16,
                      .idle_timeout_s = 60,
                      .max_body = 1024,
                      .too_large_body = "{}",
                      .on_headers = on_headers,
                      .on_request = on_request,
                      .component = component,
                      .quiet = true};
    es_result rc = es_http_start(&o, &s->http, err);
    if (rc != ES_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return ES_OK;
}

int es_metrics_server_port(const es_metrics_server *s) { return es_http_port(s->http); }

void es_metrics_server_stop(es_metrics_server *s)
{
    if (!s)
        return;
    es_http_quiesce(s->http);
    es_http_stop(s->http);
    free(s);
}
