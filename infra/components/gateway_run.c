/*
 * infra/components/gateway_run.c - the gateway's start and serve loop (see
 * gateway_run.h).
 */
#include "infra/components/gateway_run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/http/http.h"
#include "infra/kafka/probe.h"

/* The stand-in's one handler: alive, not ready. */
static void starting_answer(es_http_req *req, void *ctx)
{
    (void)ctx;
    json_t *b = strcmp(es_http_req_path(req), "/healthz") == 0
                    ? json_pack("{s:s}", "status", "ok")
                    : json_pack("{s:s, s:s, s:s}", "status", "unavailable", "kafka", "unreachable", "gateway",
                                "starting");
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    es_http_respond(req, strcmp(es_http_req_path(req), "/healthz") == 0 ? 200 : 503, s, strlen(s));
}

static es_http *starting_server(const es_config *cfg, const es_tls_files *tls)
{
    es_http_opts o = {.addr = cfg->http_addr,
                      .threads = 1,
                      .max_connections = 64,
                      .idle_timeout_s = 5,
                      .max_body = 1024,
                      .too_large_body = "{}",
                      .on_headers = starting_answer,
                      .on_request = starting_answer,
                      .component = "gateway",
                      .tls_cert_pem = tls->cert_pem,
                      .tls_key_pem = tls->key_pem};
    es_http *h = NULL;
    es_error err = {0};
    if (es_http_start(&o, &h, &err) != ES_OK) {
        es_debug("stand-in server not started", "error", err.text);
        return NULL;
    }
    return h;
}

static void starting_stop(es_http **h)
{
    if (*h) {
        es_http_quiesce(*h);
        es_http_stop(*h);
        *h = NULL;
    }
}

/* What the start's retries keep between attempts. */
typedef struct {
    const es_config *cfg;
    es_gateway_keys_fn keys;
    void *keys_ctx;
    const es_stop_flag *stop;
    int attempts;
    es_result failed;        /* when an attempt fails for good */
    es_gateway *gw;          /* started */
    es_http *starting;       /* the stand-in, while Kafka is away */
    es_kafka_probe *probe;   /* asks Kafka whether the next attempt is worth it */
    es_tls_files tls;        /* HTTPS; empty: plain HTTP */
} gw_start;

/* One try at starting the gateway (an es_retry attempt). */
static es_result start_once(void *arg, es_error *err)
{
    gw_start *s = arg;
    if (es_stopping(s->stop))
        return ES_OK; /* stopped while waiting for Kafka: nothing to start */
    es_jwks *keys = NULL;
    const char *issuer = NULL, *audience = NULL;
    if (s->keys(s->keys_ctx, s->attempts++ > 0, &keys, &issuer, &audience) != ES_OK) {
        s->failed = ES_EINVAL;
        return es_error_set(err, ES_EINVAL, "token keys");
    }
    es_gateway_opts o = {.cfg = s->cfg, .keys = keys, .issuer = issuer, .audience = audience,
                         .tls_cert_pem = s->tls.cert_pem, .tls_key_pem = s->tls.key_pem};
    es_result r = es_gateway_start(&o, &s->gw, err);
    if (r == ES_ETRANSIENT) {
        es_error perr = {0};
        if (!s->starting)
            s->starting = starting_server(s->cfg, &s->tls);
        if (!s->probe && es_kafka_probe_new(s->cfg->kafka_brokers, "factord-gateway-probe", &s->probe, &perr) != ES_OK)
            s->probe = NULL; /* without one, the next attempt follows the backoff alone */
    } else if (r != ES_OK) {
        es_err("cannot start the gateway", "error", err->text);
        s->failed = r;
    }
    return r;
}

/* Before the next attempt: hand the address back to the real gateway only
 * once Kafka answers, so the stand-in covers the whole outage. */
static es_result await_kafka(void *arg, es_error *err)
{
    gw_start *s = arg;
    es_result rc = s->probe ? es_kafka_probe_wait(s->probe, 500, s->stop, err) : ES_OK;
    starting_stop(&s->starting);
    return rc;
}

/* Whether addr ("host:port", "[v6]:port") is a loopback address. */
static bool loopback(const char *addr)
{
    if (strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]:", 6) == 0)
        return true;
    return strncmp(addr, "localhost:", 10) == 0;
}

es_result es_gateway_tls(const es_config *cfg, es_tls_files *out, es_error *err)
{
    memset(out, 0, sizeof *out);
    const char *mode = cfg->http_tls ? cfg->http_tls : "auto";
    bool cert = cfg->http_tls_cert_file && *cfg->http_tls_cert_file;
    bool key = cfg->http_tls_key_file && *cfg->http_tls_key_file;
    if (strcmp(mode, "off") == 0) {
        if (cert || key)
            return es_error_set(err, ES_EINVAL,
                                "FACTORD_HTTP_TLS=off with FACTORD_HTTP_TLS_CERT_FILE or FACTORD_HTTP_TLS_KEY_FILE set: "
                                "unset the files, or let FACTORD_HTTP_TLS be auto or on");
        return ES_OK;
    }
    if (strcmp(mode, "auto") != 0 && strcmp(mode, "on") != 0)
        return es_error_set(err, ES_EINVAL, "FACTORD_HTTP_TLS: '%s' is none of auto, on, off", mode);
    if (cert != key || (strcmp(mode, "on") == 0 && !cert))
        return es_error_set(err, ES_EINVAL, "HTTPS needs %s", !cert && !key ? "FACTORD_HTTP_TLS_CERT_FILE and FACTORD_HTTP_TLS_KEY_FILE"
                                                              : !cert ? "FACTORD_HTTP_TLS_CERT_FILE too"
                                                                      : "FACTORD_HTTP_TLS_KEY_FILE too");
    if (!cert) {
        if (!loopback(cfg->http_addr))
            return es_error_set(err, ES_EINVAL,
                                "FACTORD_HTTP_ADDR %s is not a loopback address: serve HTTPS "
                                "(FACTORD_HTTP_TLS_CERT_FILE, FACTORD_HTTP_TLS_KEY_FILE) or ask for plain HTTP "
                                "(FACTORD_HTTP_TLS=off)",
                                cfg->http_addr);
        return ES_OK;
    }
    return es_tls_files_load(cfg->http_tls_cert_file, "FACTORD_HTTP_TLS_CERT_FILE", cfg->http_tls_key_file,
                             "FACTORD_HTTP_TLS_KEY_FILE", out, err);
}

es_result es_gateway_run(const es_config *cfg, es_gateway_keys_fn keys, void *keys_ctx, const es_stop_flag *stop,
                         es_error *err)
{
    if (cfg->host_map && es_gateway_check_host_map(cfg->host_map, err) != ES_OK) {
        es_err("bad configuration", "error", err->text);
        return ES_EINVAL;
    }
    gw_start s = {.cfg = cfg, .keys = keys, .keys_ctx = keys_ctx, .stop = stop, .failed = ES_OK};
    if (es_gateway_tls(cfg, &s.tls, err) != ES_OK) {
        es_err("bad configuration", "error", err->text);
        return ES_EINVAL;
    }
    es_retry r = {.what = "cannot start the gateway yet, retrying",
                  .attempt = start_once,
                  .before_retry = await_kafka,
                  .ctx = &s};
    es_result rc = es_retry_run(&r, stop, err);
    starting_stop(&s.starting);
    es_kafka_probe_free(s.probe);
    /* The servers copied what they need: the key's text goes now. */
    es_tls_files_free(&s.tls);
    if (rc != ES_OK || !s.gw)
        return s.failed; /* stopped while waiting for Kafka (ES_OK), or could not start */
    while (!es_stopping(stop))
        es_sleep_ms(100);
    es_info("gateway stopping");
    es_gateway_stop(s.gw);
    es_info("gateway stopped");
    return ES_OK;
}
