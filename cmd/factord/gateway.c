/*
 * cmd/factord/gateway.c - `factord gateway`: the HTTP face of the Auth API
 * (infra/gateway.h, docs/gateway.md).
 *
 * Wiring only: the token keys (FACTORD_JWKS_FILE, or the development key in
 * FACTORD_STATE_DIR, said loudly), issuer and audience, then the gateway
 * until SIGTERM/SIGINT. Kafka being away at start is retried with backoff;
 * a configuration problem stops with exit code 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/clock.h"
#include "infra/gateway.h"
#include "infra/jwt.h"
#include "infra/log.h"

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

int fd_gateway_loop(const es_config *cfg)
{
    es_log_set_component("gateway");
    es_error err = {0};
    if (cfg->host_map && es_gateway_check_host_map(cfg->host_map, &err) != ES_OK) {
        es_err("bad configuration", "error", err.text);
        return 2;
    }
    es_gateway *gw = NULL;
    int64_t backoff = 200;
    for (int attempt = 0; !fd_stop; attempt++) {
        es_jwks *keys = NULL;
        const char *issuer = NULL, *audience = NULL;
        int rc = token_setup(cfg, attempt > 0, &keys, &issuer, &audience);
        if (rc)
            return rc;
        es_gateway_opts o = {.cfg = cfg, .keys = keys, .issuer = issuer, .audience = audience};
        es_result r = es_gateway_start(&o, &gw, &err);
        if (r == ES_OK)
            break;
        if (r != ES_ETRANSIENT) {
            es_err("cannot start the gateway", "error", err.text);
            return r == ES_EINVAL ? 2 : 1;
        }
        es_warn("cannot start the gateway yet, retrying", "error", err.text, "retry_ms", es_log_i64(backoff));
        for (int64_t slept = 0; slept < backoff && !fd_stop; slept += 100)
            es_sleep_ms(100);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    if (!gw)
        return 0; /* stopped while waiting for Kafka */
    while (!fd_stop)
        es_sleep_ms(100);
    es_info("gateway stopping");
    es_gateway_stop(gw);
    es_info("gateway stopped");
    return 0;
}

int fd_gateway_main(int argc, char **argv)
{
    bool bad;
    if (fd_wants_help(argc, argv, "gateway", &bad))
        return bad ? 2 : 0;
    es_config cfg;
    if (!fd_load_config(&cfg, "gateway"))
        return 2;
    int rc = 2;
    if (fd_require_brokers(&cfg, "gateway")) {
        fd_install_signals();
        rc = fd_gateway_loop(&cfg);
    }
    es_config_free(&cfg);
    return rc;
}
