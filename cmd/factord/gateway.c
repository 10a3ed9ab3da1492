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
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/clock.h"
#include "infra/components/gateway.h"
#include "infra/http/http.h"
#include "infra/crypto/jwt.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"

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
    EVP_PKEY_free(key);
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

/* Kafka answers a metadata request (so the real start is worth a try). */
static bool kafka_answers(rd_kafka_t *probe)
{
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(probe, 0, NULL, &md, 1000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    rd_kafka_metadata_destroy(md);
    return true;
}

int fd_gateway_loop(const es_config *cfg)
{
    es_log_set_component("gateway");
    es_error err = {0};
    if (cfg->host_map && es_gateway_check_host_map(cfg->host_map, &err) != ES_OK) {
        es_err("bad configuration", "error", err.text);
        return 2;
    }
    es_gateway *gw = NULL;
    es_http *starting = NULL;
    rd_kafka_t *probe = NULL;
    int exit_code = 0;
    int64_t backoff = 200;
    for (int attempt = 0; !fd_stop; attempt++) {
        if (attempt > 0) {
            /* Hand the address back to the real gateway only once Kafka
             * answers, so the stand-in covers the whole outage. */
            while (probe && !fd_stop && !kafka_answers(probe))
                es_sleep_ms(500);
            starting_stop(&starting);
            if (fd_stop)
                break;
        }
        es_jwks *keys = NULL;
        const char *issuer = NULL, *audience = NULL;
        int rc = token_setup(cfg, attempt > 0, &keys, &issuer, &audience);
        if (rc) {
            exit_code = rc;
            break;
        }
        es_gateway_opts o = {.cfg = cfg, .keys = keys, .issuer = issuer, .audience = audience};
        es_result r = es_gateway_start(&o, &gw, &err);
        if (r == ES_OK)
            break;
        if (r != ES_ETRANSIENT) {
            es_err("cannot start the gateway", "error", err.text);
            exit_code = r == ES_EINVAL ? 2 : 1;
            break;
        }
        es_warn("cannot start the gateway yet, retrying", "error", err.text, "retry_ms", es_log_i64(backoff));
        if (!starting)
            starting = starting_server(cfg);
        if (!probe) {
            char errstr[256];
            rd_kafka_conf_t *conf = es_kafka_conf(cfg->kafka_brokers, "factord-gateway-probe", &err);
            if (conf && !(probe = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr)))
                rd_kafka_conf_destroy(conf);
        }
        for (int64_t slept = 0; slept < backoff && !fd_stop; slept += 100)
            es_sleep_ms(100);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    starting_stop(&starting);
    if (probe)
        rd_kafka_destroy(probe);
    if (!gw)
        return exit_code; /* stopped while waiting for Kafka, or could not start */
    while (!fd_stop)
        es_sleep_ms(100);
    es_info("gateway stopping");
    es_gateway_stop(gw);
    es_info("gateway stopped");
    return 0;
}

int fd_gateway_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "gateway", fd_gateway_loop);
}
