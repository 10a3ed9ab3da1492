/*
 * tests/fuzz/mkseeds.c - writes the generated seeds of the fuzz corpora:
 * tokens signed with the fuzz keys (tests/fuzz/fuzz_keys.h) for fuzz_jwt,
 * and requests carrying them for fuzz_http. Run once by hand
 * (`cmake --build B --target fuzz_mkseeds && B/tests/fuzz/fuzz_mkseeds
 * tests/fuzz/corpus`); its output is checked in, so the corpus does not
 * change with every run (ECDSA signatures are randomised).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/crypto/jwt.h"
#include "tests/fuzz/fuzz_keys.h"

/* mode >= 0: written first, as one byte (fuzz_jwt's selector). */
static void put(const char *dir, const char *name, int mode, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    if (mode >= 0)
        fputc(mode, f);
    fputs(text, f);
    fclose(f);
}

static char *token(const char *pem, const char *kid, json_t *claims)
{
    EVP_PKEY *k = fz_key(pem);
    char *tok = NULL;
    es_error err;
    if (es_jwt_sign(k, kid, claims, &tok, &err) != ES_OK) {
        fprintf(stderr, "sign: %s\n", err.text);
        exit(1);
    }
    EVP_PKEY_free(k);
    json_decref(claims);
    return tok;
}

static json_t *claims(const char *sub, const char *org)
{
    json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", FZ_ISSUER, "aud", FZ_AUDIENCE, "sub", sub,
                          "iat", (json_int_t)FZ_NOW - 10, "exp", (json_int_t)4102444800, "scope", "openid profile");
    if (org)
        json_object_set_new(c, ES_JWT_ORG_CLAIM, json_string(org));
    return c;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_mkseeds tests/fuzz/corpus\n");
        return 2;
    }
    char jwt[1024], http[1024];
    snprintf(jwt, sizeof jwt, "%s/fuzz_jwt", argv[1]);
    snprintf(http, sizeof http, "%s/fuzz_http", argv[1]);

    char *ec = token(fz_ec_pem, "fz-ec", claims("69629023906488334", "org-1"));
    char *rsa = token(fz_rsa_pem, "fz-rsa", claims("u-rsa", NULL));
    char *svc = token(fz_ec_pem, "fz-ec", claims("login-svc", NULL));
    json_t *c = claims("u-arr", "org-2");
    json_object_set_new(c, "aud", json_pack("[s,s]", "other", FZ_AUDIENCE));
    json_object_set_new(c, "scope", json_pack("[s,s]", "email", "openid"));
    json_object_set_new(c, "nbf", json_integer(FZ_NOW - 5));
    char *arr = token(fz_ec_pem, "fz-ec", c);
    char *expired = token(fz_ec_pem, "fz-ec", json_pack("{s:s, s:s, s:s, s:I, s:s}", "iss", FZ_ISSUER, "aud",
                                                        FZ_AUDIENCE, "sub", "u", "exp", (json_int_t)FZ_NOW - 3600,
                                                        "scope", "openid"));
    put(jwt, "seed-es256", 0, ec);
    put(jwt, "seed-rs256", 0, rsa);
    put(jwt, "seed-arrays-nbf", 0, arr);
    put(jwt, "seed-expired", 0, expired);
    char *jwks = fz_jwks_text();
    put(jwt, "seed-jwks", 1, jwks);
    free(jwks);
    put(jwt, "seed-jwks-empty", 1, "{\"keys\":[]}");
    put(jwt, "seed-jwks-oct", 1, "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}");
    /* claims for mode 2 (signed by the fuzzer itself) */
    json_t *cl = claims("u-claims", "org-3");
    char *cl_text = json_dumps(cl, JSON_COMPACT);
    put(jwt, "seed-claims", 2, cl_text);
    free(cl_text);
    json_object_set_new(cl, "aud", json_pack("[s,s]", "x", FZ_AUDIENCE));
    json_object_set_new(cl, "scope", json_pack("[s]", "openid"));
    json_object_set_new(cl, "nbf", json_integer(FZ_NOW));
    cl_text = json_dumps(cl, JSON_COMPACT);
    put(jwt, "seed-claims-arrays", 2, cl_text);
    free(cl_text);
    json_decref(cl);

    char buf[16384];
    struct {
        const char *name, *fmt;
    } reqs[] = {
        {"add-otp", "POST /auth/v1/users/me/auth_factors/otp_sms\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n"
                    "Content-Type: application/json\nContent-Length: 2\n\n{}"},
        {"remove-otp", "DELETE /auth/v1/users/me/auth_factors/otp_sms\nHost: localhost:8080\nAuthorization: Bearer TOKEN\n\n"},
        {"set-phone", "PUT /auth/v1/users/me/phone\nHost: auth.example.com:443\nAuthorization: bearer TOKEN\n"
                      "Content-Type: application/json; charset=utf-8\nContent-Length: 40\n"
                      "Idempotency-Key: 5D1C3D1E-6F55-4A4E-9A0E-2B7C4B7B2F10\n\n{\"phone\":\"+41 79 123 45 67\",\"returnCode\":true}"},
        {"verify-phone", "POST /auth/v1/users/me/phone/_verify\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n"
                         "Content-Type: application/json\nContent-Length: 17\n\n{\"code\":\"123456\"}"},
        {"remove-phone", "DELETE /auth/v1/users/me/phone\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n\n"},
        {"list", "POST /auth/v1/users/me/auth_factors/_search\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n\n{}"},
        {"bad-type", "PUT /auth/v1/users/me/phone\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n"
                     "Content-Type: text/plain\nContent-Length: 5\n\nhello"},
        {"two-keys", "POST /auth/v1/users/me/auth_factors/otp_sms\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n"
                     "Idempotency-Key: 5d1c3d1e-6f55-4a4e-9a0e-2b7c4b7b2f10\nIdempotency-Key: x\n\n"},
    };
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        char name[64];
        /* the request with TOKEN replaced by a token */
        const char *at = strstr(reqs[i].fmt, "TOKEN");
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - reqs[i].fmt), reqs[i].fmt, i % 2 ? rsa : ec, at + 5);
        snprintf(name, sizeof name, "seed-%s", reqs[i].name);
        put(http, name, -1, buf);
    }
    /* The session routes, as the login service (FACTORD_SESSION_CALLERS). */
    struct {
        const char *name, *fmt;
    } sessions[] = {
        {"create-session", "POST /v2/sessions\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n"
                           "Content-Type: application/json\n\n"
                           "{\"checks\":{\"user\":{\"userId\":\"69629023906488334\"}},"
                           "\"challenges\":{\"otpSms\":{\"returnCode\":true}}}"},
        {"create-session-login-name", "POST /v2/sessions\nHost: auth.example.com\nAuthorization: Bearer TOKEN\n"
                                      "Content-Type: application/json\n\n{\"checks\":{\"user\":{\"loginName\":\"ada\"}}}"},
        {"set-session", "PATCH /v2/sessions/5d1c3d1e-6f55-4a4e-9a0e-2b7c4b7b2f10\nHost: auth.example.com\n"
                        "Authorization: Bearer TOKEN\nContent-Type: application/json\n\n"
                        "{\"sessionToken\":\"x\",\"checks\":{\"otpSms\":{\"code\":\"04918273\"}},"
                        "\"challenges\":{\"otpSms\":{}}}"},
        {"get-session", "GET /v2/sessions/5d1c3d1e-6f55-4a4e-9a0e-2b7c4b7b2f10\nHost: auth.example.com\n"
                        "Authorization: Bearer TOKEN\n\n"},
    };
    for (size_t i = 0; i < sizeof sessions / sizeof sessions[0]; i++) {
        char name[64];
        const char *at = strstr(sessions[i].fmt, "TOKEN");
        snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - sessions[i].fmt), sessions[i].fmt, svc, at + 5);
        snprintf(name, sizeof name, "seed-%s", sessions[i].name);
        put(http, name, -1, buf);
    }
    put(http, "seed-healthz", -1, "GET /healthz\n\n");
    put(http, "seed-readyz", -1, "HEAD /readyz\n\n");
    put(http, "seed-405", -1, "PATCH /auth/v1/users/me/phone\nHost: auth.example.com\n\n");
    put(http, "seed-404", -1, "GET /auth/v1/users/me\n\n");
    put(http, "seed-no-token", -1, "POST /auth/v1/users/me/auth_factors/otp_sms\nHost: auth.example.com\n\n{}");
    put(http, "seed-unknown-host", -1, "POST /auth/v1/users/me/auth_factors/otp_sms\nHost: evil.example\n\n{}");
    free(ec);
    free(rsa);
    free(svc);
    free(arr);
    free(expired);
    return 0;
}
