/*
 * cmd/factord/gateway.c - `factord gateway`: the HTTP face of the Auth API
 * (infra/components/gateway.h, docs/gateway.md).
 *
 * Wiring only: the token keys (FACTORD_JWKS_FILE, or the development key in
 * FACTORD_STATE_DIR, said loudly), issuer and audience, then the gateway
 * until SIGTERM/SIGINT. Kafka being away at start is retried with backoff;
 * meanwhile a stand-in server on the gateway's address answers /healthz
 * (alive) and everything else with 503, so probes see "not ready" rather
 * than a refused connection. A configuration problem stops with exit
 * code 2.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/backoff.h"
#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/components/gateway.h"
#include "infra/crypto/devkeys.h"
#include "infra/crypto/jwt.h"
#include "infra/http/http.h"
#include "infra/kafka/probe.h"

/* The keys, issuer and audience the gateway checks tokens against.
 * Returns an exit code: 0 ok, 2 configuration. */
static int token_setup(const es_config *cfg, bool quiet, es_jwks **keys, const char **issuer,
                       const char **audience)
{
    es_error err = {0};
    if (cfg->jwks_file) {
        if (!cfg->token_issuer || !cfg->token_audience) {
            es_err("FACTORD_JWKS_FILE needs FACTORD_TOKEN_ISSUER and FACTORD_TOKEN_AUDIENCE");
            return 2;
        }
        if (es_jwks_load_file(cfg->jwks_file, keys, &err) != ES_OK) {
            es_err("cannot use the token keys", "error", err.text);
            return 2;
        }
        *issuer = cfg->token_issuer;
        *audience = cfg->token_audience;
        return 0;
    }
    EVP_PKEY *key = NULL;
    char path[1100];
    bool created = false;
    if (es_jwt_dev_key_ensure(cfg->state_dir, &key, path, sizeof path, &created, &err) != ES_OK) {
        es_err("cannot set up the development signing key", "error", err.text);
        return 2;
    }
    es_result rc = es_jwks_from_key(key, keys, &err);
    es_jwt_key_free(key);
    if (rc != ES_OK) {
        es_err("cannot use the development signing key", "error", err.text);
        return 2;
    }
    *issuer = cfg->token_issuer ? cfg->token_issuer : ES_JWT_DEV_ISSUER;
    *audience = cfg->token_audience ? cfg->token_audience : ES_JWT_DEV_AUDIENCE;
    if (!quiet)
        es_warn("DEVELOPMENT tokens: the gateway accepts tokens signed by the development key (`factord token`); "
                "set FACTORD_JWKS_FILE, FACTORD_TOKEN_ISSUER and FACTORD_TOKEN_AUDIENCE for real use",
                "key", path, "created", created ? "yes" : "no", "issuer", *issuer, "audience", *audience);
    return 0;
}

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

static es_http *starting_server(const es_config *cfg)
{
    es_http_opts o = {.addr = cfg->http_addr,
                      .threads = 1,
                      .max_connections = 64,
                      .idle_timeout_s = 5,
                      .max_body = 1024,
                      .too_large_body = "{}",
                      .on_headers = starting_answer,
                      .on_request = starting_answer,
                      .component = "gateway"};
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
    int attempts;
    int exit_code;           /* when an attempt fails for good */
    es_gateway *gw;          /* started */
    es_http *starting;       /* the stand-in, while Kafka is away */
    es_kafka_probe *probe;   /* asks Kafka whether the next attempt is worth it */
} gw_start;

/* One try at starting the gateway (an es_retry attempt). */
static es_result start_once(void *arg, es_error *err)
{
    gw_start *s = arg;
    if (es_stopping(&fd_stop))
        return ES_OK; /* stopped while waiting for Kafka: nothing to start */
    es_jwks *keys = NULL;
    const char *issuer = NULL, *audience = NULL;
    int rc = token_setup(s->cfg, s->attempts++ > 0, &keys, &issuer, &audience);
    if (rc) {
        s->exit_code = rc;
        return es_error_set(err, ES_EINVAL, "token keys");
    }
    es_gateway_opts o = {.cfg = s->cfg, .keys = keys, .issuer = issuer, .audience = audience};
    es_result r = es_gateway_start(&o, &s->gw, err);
    if (r == ES_ETRANSIENT) {
        es_error perr = {0};
        if (!s->starting)
            s->starting = starting_server(s->cfg);
        if (!s->probe && es_kafka_probe_new(s->cfg->kafka_brokers, "factord-gateway-probe", &s->probe, &perr) != ES_OK)
            s->probe = NULL; /* without one, the next attempt follows the backoff alone */
    } else if (r != ES_OK) {
        es_err("cannot start the gateway", "error", err->text);
        s->exit_code = r == ES_EINVAL ? 2 : 1;
    }
    return r;
}

/* Before the next attempt: hand the address back to the real gateway only
 * once Kafka answers, so the stand-in covers the whole outage. */
static es_result await_kafka(void *arg, es_error *err)
{
    gw_start *s = arg;
    es_result rc = s->probe ? es_kafka_probe_wait(s->probe, 500, &fd_stop, err) : ES_OK;
    starting_stop(&s->starting);
    return rc;
}

int fd_gateway_loop(const es_config *cfg)
{
    es_log_set_component("gateway");
    es_error err = {0};
    if (cfg->host_map && es_gateway_check_host_map(cfg->host_map, &err) != ES_OK) {
        es_err("bad configuration", "error", err.text);
        return 2;
    }
    gw_start s = {.cfg = cfg};
    es_retry r = {.what = "cannot start the gateway yet, retrying",
                  .attempt = start_once,
                  .before_retry = await_kafka,
                  .ctx = &s};
    es_result rc = es_retry_run(&r, &fd_stop, &err);
    starting_stop(&s.starting);
    es_kafka_probe_free(s.probe);
    if (rc != ES_OK || !s.gw)
        return s.exit_code; /* stopped while waiting for Kafka, or could not start */
    while (!fd_stop)
        es_sleep_ms(100);
    es_info("gateway stopping");
    es_gateway_stop(s.gw);
    es_info("gateway stopped");
    return 0;
}

int fd_gateway_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "gateway", fd_gateway_loop);
}
