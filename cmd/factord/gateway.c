/*
 * cmd/factord/gateway.c - `factord gateway`: the HTTP face of the Auth API
 * (infra/components/gateway.h, docs/gateway.md).
 *
 * Wiring only: the token keys (FACTORD_JWKS_FILE, or the development key in
 * FACTORD_STATE_DIR, said loudly), issuer and audience, then es_gateway_run
 * (infra/components/gateway_run.h: the start, retried while Kafka is away
 * behind a stand-in that answers probes, and the serving) until
 * SIGTERM/SIGINT. A configuration problem stops with exit code 2.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/log.h"
#include "infra/components/gateway_run.h"
#include "infra/crypto/devkeys.h"
#include "infra/crypto/jwt.h"

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

static es_result token_keys(void *ctx, bool quiet, es_jwks **keys, const char **issuer, const char **audience)
{
    return token_setup(ctx, quiet, keys, issuer, audience) == 0 ? ES_OK : ES_EINVAL;
}

int fd_gateway_loop(const es_config *cfg)
{
    es_log_set_component("gateway");
    es_error err = {0};
    es_result rc = es_gateway_run(cfg, token_keys, (void *)cfg, &fd_stop, &err);
    return rc == ES_OK ? 0 : rc == ES_EINVAL ? 2 : 1;
}

int fd_gateway_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "gateway", fd_gateway_loop);
}
