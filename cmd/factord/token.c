/*
 * cmd/factord/token.c - `factord token`: a DEVELOPMENT access token for the
 * gateway, signed (ES256) with the development key in FACTORD_STATE_DIR
 * that `factord run` and `factord gateway` use when FACTORD_JWKS_FILE is
 * unset (created here on first use, as there).
 *
 * Prints the token alone on stdout, so that
 *   TOKEN=$(build/factord token --user U --org O)
 * works; says on stderr that it is for development. Exit codes: 0 printed,
 * 2 usage or configuration error, 1 anything else.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/clock.h"
#include "infra/crypto/jwt.h"
#include "infra/base/log.h"

#define DEFAULT_TTL_S 3600
#define MAX_TTL_S (30LL * 86400)

static void usage(FILE *f)
{
    fprintf(f, "usage: factord token --user U [--org O] [--ttl-s N] [--scope \"openid ...\"]\n\n"
               "Prints a DEVELOPMENT access token (ES256 JWT) for the HTTP gateway, signed with the\n"
               "development key $FACTORD_STATE_DIR/dev-signing-key.pem (created on first use; its\n"
               "public JWKS is dev-jwks.json beside it). Only a gateway without FACTORD_JWKS_FILE\n"
               "accepts it.\n\n"
               "  --user U     the user id (sub)\n"
               "  --org O      the user's organisation (claim %s)\n"
               "  --ttl-s N    lifetime in seconds (default %d, at most %lld)\n"
               "  --scope S    space-separated scopes (default \"openid\")\n\n"
               "Issuer and audience: FACTORD_TOKEN_ISSUER (default factord-dev) and\n"
               "FACTORD_TOKEN_AUDIENCE (default factord), as the gateway checks them.\n",
            ES_JWT_ORG_CLAIM, DEFAULT_TTL_S, MAX_TTL_S);
}

int fd_token_main(int argc, char **argv)
{
    const char *user = NULL, *org = NULL, *scope = "openid";
    long long ttl = DEFAULT_TTL_S;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc || strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "factord token: unexpected argument '%s' (try --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--user") == 0)
            user = v;
        else if (strcmp(a, "--org") == 0)
            org = v;
        else if (strcmp(a, "--scope") == 0)
            scope = v;
        else if (strcmp(a, "--ttl-s") == 0) {
            char *end = NULL;
            ttl = strtoll(v, &end, 10);
            if (!*v || *end || ttl < 1 || ttl > MAX_TTL_S) {
                fprintf(stderr, "factord token: --ttl-s must be 1..%lld\n", MAX_TTL_S);
                return 2;
            }
        } else {
            fprintf(stderr, "factord token: unknown option '%s' (try --help)\n", a);
            return 2;
        }
    }
    if (!user || !*user || strlen(user) >= DOM_ID_MAX || (org && (!*org || strlen(org) >= DOM_ID_MAX))) {
        fprintf(stderr, "factord token: --user is required (and --org, when given, must not be empty)\n\n");
        usage(stderr);
        return 2;
    }
    es_config cfg;
    if (!fd_load_config(&cfg, "token"))
        return 2;
    int rc = 1;
    char path[1100], *token = NULL;
    bool created = false;
    es_error err = {0};
    es_jwt_dev_claims claims = {.issuer = cfg.token_issuer, .audience = cfg.token_audience, .user = user,
                                .org = org, .scope = scope, .ttl_s = ttl, .now_s = es_clock_now_us() / 1000000};
    es_result sr = es_jwt_dev_token(cfg.state_dir, &claims, &token, path, sizeof path, &created, &err);
    if (sr != ES_OK) {
        fprintf(stderr, "factord token: %s\n", err.text);
        rc = sr == ES_EFATAL ? 1 : 2;
        goto out;
    }
    fprintf(stderr,
            "factord token: DEVELOPMENT token for user %s, valid %lld s, signed with %s%s.\n"
            "factord token: only a gateway without FACTORD_JWKS_FILE accepts it%s.\n",
            user, ttl, path, created ? " (created now)" : "",
            cfg.jwks_file ? " (FACTORD_JWKS_FILE is set here: this gateway would refuse it)" : "");
    printf("%s\n", token);
    rc = fflush(stdout) == 0 ? 0 : 1;
out:
    free(token);
    es_config_free(&cfg);
    return rc;
}
