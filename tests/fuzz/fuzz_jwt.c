/*
 * tests/fuzz/fuzz_jwt.c - libFuzzer target for the gateway's trust
 * boundary: bearer tokens and JWKS documents (infra/crypto/jwt.h).
 *
 * The first byte picks what the rest is (its value modulo 3):
 *   0  a token, checked with es_jwt_verify against a fixed key set
 *      (tests/fuzz/fuzz_keys.h: one ES256 and one RS256 key) and a fixed
 *      policy: header, base64url and signature handling;
 *   1  a JWKS document for es_jwks_parse;
 *   2  a claims object (JSON), signed here with the ES256 key and then
 *      verified: the claim checks, which a mutated token never reaches
 *      (claims are read only after the signature verifies).
 * A verified token must have a non-empty sub that fits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/crypto/jwt.h"
#include "tests/fuzz/fuzz_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static es_jwks *keys;
static EVP_PKEY *ec_key;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!keys)
        keys = fz_jwks(); /* kept for the process's life */
    if (size == 0)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    es_error err = {0};
    char *signed_token = NULL;
    if (data[0] % 3 == 2) {
        json_t *claims = json_loadb(text, len, 0, NULL);
        if (!json_is_object(claims)) {
            json_decref(claims);
            return 0;
        }
        if (!ec_key)
            ec_key = fz_key(fz_ec_pem); /* kept for the process's life */
        es_error serr = {0};
        es_result rc = es_jwt_sign(ec_key, "fz-ec", claims, &signed_token, &serr);
        json_decref(claims);
        if (rc != ES_OK)
            return 0;
        text = signed_token;
        len = strlen(signed_token);
    }
    if (data[0] % 3 != 1) {
        es_jwt_policy pol = {.issuer = FZ_ISSUER, .audience = FZ_AUDIENCE, .leeway_s = 30, .now_s = FZ_NOW};
        es_jwt_claims c;
        es_result vrc = es_jwt_verify(keys, text, len, &pol, &c, &err);
        if (getenv("FACTORD_FUZZ_VERBOSE")) /* to see what the seeds get */
            fprintf(stderr, "mode %d: %s\n", data[0] % 3, vrc == ES_OK ? c.sub : err.text);
        if (vrc == ES_OK) {
            if (c.sub[0] == '\0' || strlen(c.sub) >= sizeof c.sub)
                abort();
        } else if (err.text[0] == '\0')
            abort();
        free(signed_token);
    } else {
        es_jwks *ks = NULL;
        if (es_jwks_parse(text, len, &ks, &err) == ES_OK) {
            if (es_jwks_count(ks) == 0)
                abort();
            es_jwks_free(ks);
        } else if (ks != NULL || err.text[0] == '\0')
            abort();
    }
    return 0;
}
