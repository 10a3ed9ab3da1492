/*
 * infra/crypto/jwt.h - bearer access tokens: JWKS key sets, RS256/ES256
 * verification, signing of development tokens, and the development signing
 * key of `factord run` / `factord token`.
 *
 * This is the gateway's trust boundary (brief §8): tokens come from the
 * network. Parsing is strict and bounded: a token longer than
 * ES_JWT_MAX_LEN is refused before it is decoded; base64url must be
 * canonical (no padding, no stray bits); header and claims must be JSON
 * objects without duplicate keys; `alg` must be RS256 or ES256 and match
 * the key's type (never "none", never HS*); a `crit` header is refused.
 * Checked claims: exp (required), nbf and iat (optional), each with the
 * leeway; iss equal to the issuer; aud (a string or an array) containing
 * the audience; scope (space-separated, or an array) containing "openid";
 * sub non-empty. The organisation comes from the
 * `urn:zitadel:iam:user:resourceowner:id` claim when present.
 *
 * Keys come from a JWKS document ({"keys":[...]}): RSA keys from n/e (at
 * least 2048 bits) and EC P-256 keys from x/y, built with OpenSSL 3's
 * EVP_PKEY_fromdata and checked (the EC point must lie on the curve). Keys
 * of other types and encryption keys (use "enc") are skipped.
 *
 * Ownership: es_jwks owns its keys; EVP_PKEY arguments are borrowed unless
 * a function says otherwise. Error texts say why a token failed, for the
 * log; they never contain the token and are never sent to a client.
 *
 * Layer: crypto; includes only the domain, base and OpenSSL (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_JWT_H
#define FACTORD_INFRA_JWT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"

#define ES_JWT_MAX_LEN 8192     /* longest token accepted, bytes */
#define ES_JWT_KID_MAX 128
#define ES_JWT_ORG_CLAIM "urn:zitadel:iam:user:resourceowner:id"
/* Issuer and audience of development tokens, unless configured. */
#define ES_JWT_DEV_ISSUER "factord-dev"
#define ES_JWT_DEV_AUDIENCE "factord"

/* base64url without padding (RFC 7515 §2). encode: out gets a NUL-terminated
 * string, out_len must be >= 4*ceil(len/3)+1; returns the length.
 * decode: canonical input only; returns false on any other input or when
 * out_len is too small. */
size_t es_b64url_encode(const unsigned char *in, size_t len, char *out, size_t out_len);
bool es_b64url_decode(const char *in, size_t len, unsigned char *out, size_t out_len, size_t *n);

typedef struct es_jwks es_jwks;

/* Parse a JWKS document. ES_EINVAL when it is not one, when a usable key is
 * malformed, when two keys share a kid, or when no key is usable. */
es_result es_jwks_parse(const char *text, size_t len, es_jwks **out, es_error *err) ES_WUR;
es_result es_jwks_load_file(const char *path, es_jwks **out, es_error *err) ES_WUR;
/* A key set of one public key (its kid = RFC 7638 thumbprint). */
es_result es_jwks_from_key(EVP_PKEY *key, es_jwks **out, es_error *err) ES_WUR;
void es_jwks_free(es_jwks *ks);          /* NULL-safe */
size_t es_jwks_count(const es_jwks *ks);

typedef struct {
    const char *issuer;     /* required: iss must equal it */
    const char *audience;   /* required: aud must contain it */
    int64_t leeway_s;       /* clock skew allowed on exp, nbf and iat */
    int64_t now_s;          /* the time to check against (seconds since the epoch) */
} es_jwt_policy;

typedef struct {
    char sub[DOM_ID_MAX];   /* the user id */
    char org[DOM_ID_MAX];   /* the organisation claim, "" when absent */
    char kid[ES_JWT_KID_MAX];
    char alg[8];
    int64_t exp;
} es_jwt_claims;

/* Verify a compact JWS (header.payload.signature) against ks and pol.
 * ES_OK fills *out; ES_EINVAL says why in err (no token text in it). Safe
 * to call from several threads on one key set. */
es_result es_jwt_verify(const es_jwks *ks, const char *token, size_t len, const es_jwt_policy *pol,
                        es_jwt_claims *out, es_error *err) ES_WUR;

/* Sign claims (a JSON object) with key: ES256 for an EC P-256 key, RS256 for
 * an RSA key; kid may be NULL (no kid header). *out is malloc'd. */
es_result es_jwt_sign(EVP_PKEY *key, const char *kid, const json_t *claims, char **out,
                      es_error *err) ES_WUR;

/* The public JWK of key ({"kty","kid","use":"sig","alg",...}); its kid is
 * the RFC 7638 thumbprint. New reference in *out. */
es_result es_jwk_public(EVP_PKEY *key, json_t **out, es_error *err) ES_WUR;
/* The public key of one JWK (RSA n/e or EC P-256 x/y), checked as in
 * es_jwks_parse. *out is the caller's. */
es_result es_jwk_to_pkey(const json_t *jwk, EVP_PKEY **out, es_error *err) ES_WUR;
/* RFC 7638 thumbprint (SHA-256, base64url, 43 characters + NUL). */
es_result es_jwk_thumbprint(EVP_PKEY *key, char out[44], es_error *err) ES_WUR;

/* The development signing key in state_dir: dev-signing-key.pem (EC P-256,
 * PKCS#8, mode 0600), created on first use, and its public JWKS beside it
 * (dev-jwks.json). Concurrent callers (run and token) end up with the same
 * key. *key is the caller's (EVP_PKEY_free); path (may be NULL) gets the
 * key file's path; *created says whether this call made it. */
es_result es_jwt_dev_key_ensure(const char *state_dir, EVP_PKEY **key, char *path, size_t path_len,
                                bool *created, es_error *err) ES_WUR;

/* What a DEVELOPMENT access token says (`factord token`). */
typedef struct {
    const char *issuer, *audience; /* NULL: ES_JWT_DEV_ISSUER / ES_JWT_DEV_AUDIENCE */
    const char *user;              /* sub */
    const char *org;               /* ES_JWT_ORG_CLAIM; NULL: none */
    const char *scope;
    long long ttl_s;
    int64_t now_s;                 /* iat and nbf; exp = now_s + ttl_s */
} es_jwt_dev_claims;

/* A token signed with the development key in state_dir (created when
 * missing, as es_jwt_dev_key_ensure), with a random jti. *token is the
 * caller's (free); path and *created as es_jwt_dev_key_ensure's. */
es_result es_jwt_dev_token(const char *state_dir, const es_jwt_dev_claims *c, char **token, char *path,
                           size_t path_len, bool *created, es_error *err) ES_WUR;

#endif
