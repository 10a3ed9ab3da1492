/*
 * tests/unit/test_jwt.c - bearer tokens without servers: base64url, JWKS
 * parsing, RS256/ES256 verification with every way a token can be wrong,
 * and the development key. Keys are generated with OpenSSL in the test.
 */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infra/crypto/jwt.h"

#define ISS "https://issuer.example"
#define AUD "factord-api"
#define NOW 1700000000

static EVP_PKEY *ec_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert_not_null(k);
    return k;
}

static EVP_PKEY *rsa_key(unsigned bits)
{
    EVP_PKEY *k = EVP_RSA_gen(bits);
    cr_assert_not_null(k);
    return k;
}

/* A key set of the public halves of keys (kid = thumbprint). */
static es_jwks *jwks_of(EVP_PKEY **keys, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *jwk = NULL;
        es_error err = {0};
        cr_assert_eq(es_jwk_public(keys[i], &jwk, &err), ES_OK, "%s", err.text);
        json_array_append_new(arr, jwk);
    }
    json_t *doc = json_pack("{s:o}", "keys", arr);
    char *text = json_dumps(doc, 0);
    es_jwks *ks = NULL;
    es_error err = {0};
    cr_assert_eq(es_jwks_parse(text, strlen(text), &ks, &err), ES_OK, "%s", err.text);
    free(text);
    json_decref(doc);
    return ks;
}

static json_t *good_claims(void)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:s}", "iss", ISS, "aud", AUD, "sub", "user-1", "iat", NOW - 10,
                     "exp", NOW + 600, "scope", "openid profile", ES_JWT_ORG_CLAIM, "org-1");
}

static char *sign(EVP_PKEY *k, json_t *claims)
{
    char kid[44], *tok = NULL;
    es_error err = {0};
    cr_assert_eq(es_jwk_thumbprint(k, kid, &err), ES_OK, "%s", err.text);
    cr_assert_eq(es_jwt_sign(k, kid, claims, &tok, &err), ES_OK, "%s", err.text);
    json_decref(claims);
    return tok;
}

static const es_jwt_policy policy = {.issuer = ISS, .audience = AUD, .leeway_s = 30, .now_s = NOW};

static es_result check(const es_jwks *ks, const char *tok, es_jwt_claims *c)
{
    es_error err = {0};
    return es_jwt_verify(ks, tok, strlen(tok), &policy, c, &err);
}

/* Build a token from raw header and claims JSON and a given signature. */
static char *assemble(const char *header, const char *claims, const unsigned char *sig, size_t sig_len)
{
    size_t cap = 4 * (strlen(header) + strlen(claims) + sig_len) + 16;
    char *out = malloc(cap);
    size_t o = es_b64url_encode((const unsigned char *)header, strlen(header), out, cap);
    out[o++] = '.';
    o += es_b64url_encode((const unsigned char *)claims, strlen(claims), out + o, cap - o);
    out[o++] = '.';
    es_b64url_encode(sig, sig_len, out + o, cap - o);
    return out;
}

/* Re-sign header.claims with k as it is (the way an attacker holding a key
 * would), returning the raw signature the JWS form needs. */
static char *resign(EVP_PKEY *k, const char *header, const char *claims)
{
    char *unsigned_tok = assemble(header, claims, (const unsigned char *)"", 0);
    size_t ilen = strlen(unsigned_tok) - 1; /* without the trailing '.' */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t slen = 0;
    cr_assert_eq(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
    cr_assert_eq(EVP_DigestSign(ctx, NULL, &slen, (unsigned char *)unsigned_tok, ilen), 1);
    unsigned char *sig = malloc(slen);
    cr_assert_eq(EVP_DigestSign(ctx, sig, &slen, (unsigned char *)unsigned_tok, ilen), 1);
    EVP_MD_CTX_free(ctx);
    char *tok = assemble(header, claims, sig, slen);
    free(sig);
    free(unsigned_tok);
    return tok;
}

Test(b64url, round_trip_and_canonical_only)
{
    unsigned char in[64], out[64];
    char enc[100];
    for (size_t len = 0; len < sizeof in; len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len);
        size_t n = es_b64url_encode(in, len, enc, sizeof enc);
        cr_assert_eq(n, strlen(enc));
        cr_assert_null(strchr(enc, '='));
        size_t m = 0;
        cr_assert(es_b64url_decode(enc, n, out, sizeof out, &m));
        cr_assert_eq(m, len);
        cr_assert_eq(memcmp(in, out, len), 0);
    }
    size_t m;
    cr_assert(es_b64url_decode("QQ", 2, out, sizeof out, &m) && m == 1 && out[0] == 'A');
    cr_assert_not(es_b64url_decode("QR", 2, out, sizeof out, &m), "stray low bits");
    cr_assert_not(es_b64url_decode("QQ==", 4, out, sizeof out, &m), "padding");
    cr_assert_not(es_b64url_decode("Q", 1, out, sizeof out, &m), "a lone character");
    cr_assert_not(es_b64url_decode("a+b/", 4, out, sizeof out, &m), "the standard alphabet");
    cr_assert_not(es_b64url_decode("QUJD", 4, out, 2, &m), "output too small");
}

Test(jwks, rfc7638_thumbprint)
{
    /* RFC 7638 §3.1 */
    json_t *jwk = json_pack(
        "{s:s, s:s, s:s}", "kty", "RSA", "e", "AQAB", "n",
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZ"
        "CiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZ"
        "gnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIq"
        "bw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw");
    EVP_PKEY *k = NULL;
    es_error err = {0};
    cr_assert_eq(es_jwk_to_pkey(jwk, &k, &err), ES_OK, "%s", err.text);
    char tp[44];
    cr_assert_eq(es_jwk_thumbprint(k, tp, &err), ES_OK);
    cr_assert_str_eq(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    EVP_PKEY_free(k);
    json_decref(jwk);
}

Test(jwks, parsing_rules)
{
    es_jwks *ks = NULL;
    es_error err = {0};
    EVP_PKEY *ec = ec_key(), *small = rsa_key(1024);
    json_t *ecj = NULL, *smallj = NULL;
    cr_assert_eq(es_jwk_public(ec, &ecj, &err), ES_OK);
    cr_assert_eq(es_jwk_public(small, &smallj, &err), ES_OK);

    cr_assert_eq(es_jwks_parse("[]", 2, &ks, &err), ES_EINVAL);
    cr_assert_eq(es_jwks_parse("{\"keys\":[]}", 11, &ks, &err), ES_EINVAL, "no usable key");
    cr_assert(strstr(err.text, "no RS256 or ES256"));

    /* A 1024-bit RSA key is refused. */
    json_t *doc = json_pack("{s:[O]}", "keys", smallj);
    char *t = json_dumps(doc, 0);
    cr_assert_eq(es_jwks_parse(t, strlen(t), &ks, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "bits"), "%s", err.text);
    free(t);
    json_decref(doc);

    /* Two keys with one kid. */
    doc = json_pack("{s:[O,O]}", "keys", ecj, ecj);
    t = json_dumps(doc, 0);
    cr_assert_eq(es_jwks_parse(t, strlen(t), &ks, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "twice"), "%s", err.text);
    free(t);
    json_decref(doc);

    /* A point off the curve. */
    json_t *bad = json_deep_copy(ecj);
    json_object_set_new(bad, "y", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    doc = json_pack("{s:[o]}", "keys", bad);
    t = json_dumps(doc, 0);
    cr_assert_eq(es_jwks_parse(t, strlen(t), &ks, &err), ES_EINVAL);
    free(t);
    json_decref(doc);

    /* Encryption keys, other types and other algorithms are skipped. */
    json_t *enc = json_deep_copy(ecj);
    json_object_set_new(enc, "use", json_string("enc"));
    json_object_set_new(enc, "kid", json_string("enc-key"));
    json_t *rs384 = json_deep_copy(ecj);
    json_object_set_new(rs384, "alg", json_string("ES384"));
    json_object_set_new(rs384, "kid", json_string("other-alg"));
    doc = json_pack("{s:[o, o, {s:s, s:s, s:s}, {s:s, s:s}, O]}", "keys", enc, rs384, "kty", "OKP", "crv", "Ed25519",
                    "x", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kty", "oct", "k", "c2VjcmV0", ecj);
    t = json_dumps(doc, 0);
    cr_assert_eq(es_jwks_parse(t, strlen(t), &ks, &err), ES_OK, "%s", err.text);
    cr_assert_eq(es_jwks_count(ks), 1);
    es_jwks_free(ks);
    free(t);
    json_decref(doc);

    json_decref(ecj);
    json_decref(smallj);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(small);
}

Test(jwt, es256_and_rs256_verify)
{
    EVP_PKEY *keys[] = {ec_key(), rsa_key(2048)};
    es_jwks *ks = jwks_of(keys, 2);
    for (int i = 0; i < 2; i++) {
        char *tok = sign(keys[i], good_claims());
        es_jwt_claims c;
        cr_assert_eq(check(ks, tok, &c), ES_OK);
        cr_assert_str_eq(c.sub, "user-1");
        cr_assert_str_eq(c.org, "org-1");
        cr_assert_str_eq(c.alg, i == 0 ? "ES256" : "RS256");
        cr_assert_eq(c.exp, NOW + 600);
        free(tok);
    }
    /* aud as an array, scope as an array, no organisation claim. */
    json_t *cl = good_claims();
    json_object_set_new(cl, "aud", json_pack("[s,s]", "someone-else", AUD));
    json_object_set_new(cl, "scope", json_pack("[s,s]", "email", "openid"));
    json_object_del(cl, ES_JWT_ORG_CLAIM);
    char *tok = sign(keys[0], cl);
    es_jwt_claims c;
    cr_assert_eq(check(ks, tok, &c), ES_OK);
    cr_assert_str_eq(c.org, "");
    free(tok);
    es_jwks_free(ks);
    EVP_PKEY_free(keys[0]);
    EVP_PKEY_free(keys[1]);
}

/* Each claim problem on its own, everything else right. */
Test(jwt, claim_checks)
{
    EVP_PKEY *k = ec_key();
    es_jwks *ks = jwks_of(&k, 1);
    struct {
        const char *name;
        const char *key;
        json_t *value; /* NULL: delete the claim */
        bool ok;
    } cases[] = {
        {"expired", "exp", json_integer(NOW - 31), false},
        {"expired within the leeway", "exp", json_integer(NOW - 29), true},
        {"exactly at exp minus leeway", "exp", json_integer(NOW - 30), false},
        {"no exp", "exp", NULL, false},
        {"exp not a number", "exp", json_string("tomorrow"), false},
        {"fractional exp", "exp", json_real(NOW + 0.5), true},
        {"not yet valid", "nbf", json_integer(NOW + 31), false},
        {"nbf within the leeway", "nbf", json_integer(NOW + 29), true},
        {"issued in the future", "iat", json_integer(NOW + 120), false},
        {"wrong issuer", "iss", json_string("https://evil.example"), false},
        {"issuer prefix", "iss", json_string(ISS "/"), false},
        {"no issuer", "iss", NULL, false},
        {"wrong audience", "aud", json_string("other"), false},
        {"audience array without ours", "aud", json_pack("[s]", "other"), false},
        {"audience array with a number", "aud", json_pack("[s,i]", AUD, 5), false},
        {"no audience", "aud", NULL, false},
        {"scope without openid", "scope", json_string("profile email"), false},
        {"scope openidx", "scope", json_string("openidx"), false},
        {"scope with extra spaces", "scope", json_string("  profile  openid "), true},
        {"no scope", "scope", NULL, false},
        {"no sub", "sub", NULL, false},
        {"empty sub", "sub", json_string(""), false},
        {"sub with a newline", "sub", json_string("a\nb"), false},
        {"sub too long", "sub", json_string("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
         false},
        {"sub a number", "sub", json_integer(42), false},
        {"organisation a number", ES_JWT_ORG_CLAIM, json_integer(42), false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *cl = good_claims();
        if (cases[i].value)
            json_object_set_new(cl, cases[i].key, cases[i].value);
        else
            json_object_del(cl, cases[i].key);
        char *tok = sign(k, cl);
        es_jwt_claims c;
        cr_expect_eq(check(ks, tok, &c) == ES_OK, cases[i].ok, "case: %s", cases[i].name);
        free(tok);
    }
    es_jwks_free(ks);
    EVP_PKEY_free(k);
}

Test(jwt, signature_and_header_attacks)
{
    EVP_PKEY *ec = ec_key(), *rsa = rsa_key(2048), *stranger = ec_key();
    EVP_PKEY *both[] = {ec, rsa};
    es_jwks *ks = jwks_of(both, 2);
    char eckid[44], rsakid[44], claims[512];
    es_error err = {0};
    cr_assert_eq(es_jwk_thumbprint(ec, eckid, &err), ES_OK);
    cr_assert_eq(es_jwk_thumbprint(rsa, rsakid, &err), ES_OK);
    snprintf(claims, sizeof claims,
             "{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"u\",\"exp\":%d,\"scope\":\"openid\"}", ISS, AUD, NOW + 600);
    char header[256];
    es_jwt_claims c;

    /* Sanity: a hand-built token verifies. */
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", eckid);
    char *tok = resign(ec, header, claims);
    /* OpenSSL signs ECDSA in DER: the JWS form needs raw r||s, so this one
     * must fail (a DER signature is not 64 bytes). */
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "DER-encoded ES256 signature");
    free(tok);

    /* Signed by a key that is not in the set, under a trusted kid. */
    json_t *cl = json_loads(claims, 0, NULL);
    char *t2 = NULL;
    cr_assert_eq(es_jwt_sign(stranger, eckid, cl, &t2, &err), ES_OK);
    cr_assert_eq(check(ks, t2, &c), ES_EINVAL, "wrongly signed");
    free(t2);

    /* A valid token with one byte of the claims changed. */
    cr_assert_eq(es_jwt_sign(ec, eckid, cl, &t2, &err), ES_OK);
    cr_assert_eq(check(ks, t2, &c), ES_OK);
    char *dot = strchr(t2, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    cr_assert_eq(check(ks, t2, &c), ES_EINVAL, "tampered claims");
    free(t2);

    /* alg none, with and without a signature. */
    snprintf(header, sizeof header, "{\"alg\":\"none\",\"kid\":\"%s\"}", eckid);
    tok = assemble(header, claims, (const unsigned char *)"", 0);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "alg none, empty signature");
    free(tok);
    tok = assemble(header, claims, (const unsigned char *)"x", 1);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "alg none");
    free(tok);
    snprintf(header, sizeof header, "{\"alg\":\"None\"}");
    tok = assemble(header, claims, (const unsigned char *)"x", 1);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "alg None");
    free(tok);

    /* HS256 keyed with the RSA public key's JWK text (key confusion). */
    json_t *pub = NULL;
    cr_assert_eq(es_jwk_public(rsa, &pub, &err), ES_OK);
    char *secret = json_dumps(pub, 0);
    snprintf(header, sizeof header, "{\"alg\":\"HS256\",\"kid\":\"%s\"}", rsakid);
    char *unsigned_tok = assemble(header, claims, (const unsigned char *)"", 0);
    unsigned char mac[32];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)unsigned_tok, strlen(unsigned_tok) - 1, mac,
         &maclen);
    tok = assemble(header, claims, mac, maclen);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "HS256");
    free(tok);
    free(unsigned_tok);
    free(secret);
    json_decref(pub);

    /* ES256 header naming the RSA key: alg must match the key. */
    snprintf(header, sizeof header, "{\"alg\":\"ES256\",\"kid\":\"%s\"}", rsakid);
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "alg/key mismatch");
    free(tok);
    /* RS256 with the RSA key verifies; with PS256 in the header it does not. */
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"%s\"}", rsakid);
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_OK, "hand-built RS256");
    free(tok);
    snprintf(header, sizeof header, "{\"alg\":\"PS256\",\"kid\":\"%s\"}", rsakid);
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "PS256");
    free(tok);
    /* Unknown kid; no kid with two keys of one type is fine only when the
     * type has one key: here RS256 without kid works (one RSA key). */
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"nope\"}");
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "unknown kid");
    free(tok);
    snprintf(header, sizeof header, "{\"alg\":\"RS256\"}");
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_OK, "no kid, one RSA key");
    free(tok);
    /* crit, duplicate header keys, duplicate claims. */
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"%s\",\"crit\":[\"exp\"],\"exp\":1}", rsakid);
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "crit");
    free(tok);
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"%s\"}", rsakid);
    tok = resign(rsa, header, claims);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "duplicate alg");
    free(tok);
    char dup[600];
    snprintf(dup, sizeof dup, "{\"sub\":\"admin\",%s", claims + 1);
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"%s\"}", rsakid);
    tok = resign(rsa, header, dup);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "duplicate sub");
    free(tok);
    /* Claims that are not an object; a header that is not JSON. */
    tok = resign(rsa, header, "[1,2]");
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "claims array");
    free(tok);
    tok = resign(rsa, "not json", claims);
    cr_assert_eq(check(ks, tok, &c), ES_EINVAL, "header not JSON");
    free(tok);

    json_decref(cl);
    es_jwks_free(ks);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(stranger);
}

Test(jwt, malformed_tokens)
{
    EVP_PKEY *k = ec_key();
    es_jwks *ks = jwks_of(&k, 1);
    char *good = sign(k, good_claims());
    es_jwt_claims c;
    const char *bad[] = {"", ".", "..", "a.b", "a.b.c.d", "abc", "Bearer x.y.z", "e30.e30.", ".e30.AAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(check(ks, bad[i], &c), ES_EINVAL, "%s", bad[i]);
    /* Four parts (a JWE has five). */
    size_t n = strlen(good);
    char *four = malloc(n + 8);
    snprintf(four, n + 8, "%s.AAAA", good);
    cr_expect_eq(check(ks, four, &c), ES_EINVAL);
    /* Padding, and a character outside the alphabet. */
    snprintf(four, n + 8, "%s==", good);
    cr_expect_eq(check(ks, four, &c), ES_EINVAL);
    snprintf(four, n + 8, "%s", good);
    strchr(four, '.')[-1] = '+';
    cr_expect_eq(check(ks, four, &c), ES_EINVAL);
    free(four);
    /* Oversized. */
    char *big = malloc(ES_JWT_MAX_LEN + 2);
    memset(big, 'A', ES_JWT_MAX_LEN + 1);
    big[10] = '.';
    big[20] = '.';
    big[ES_JWT_MAX_LEN + 1] = '\0';
    es_error err = {0};
    cr_expect_eq(es_jwt_verify(ks, big, strlen(big), &policy, &c, &err), ES_EINVAL);
    cr_expect(strstr(err.text, "length"), "%s", err.text);
    free(big);
    /* The error text never contains the token. */
    cr_assert_eq(es_jwt_verify(ks, good, strlen(good) - 2, &policy, &c, &err), ES_EINVAL);
    cr_assert_null(strstr(err.text, good + 10));
    free(good);
    es_jwks_free(ks);
    EVP_PKEY_free(k);
}

Test(jwt, dev_key_created_once_private_and_reused)
{
    char dir[] = "/tmp/factord-jwt-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char state[128], path[256], path2[256];
    snprintf(state, sizeof state, "%s/state", dir);
    EVP_PKEY *k1 = NULL, *k2 = NULL;
    bool created = false;
    es_error err = {0};
    cr_assert_eq(es_jwt_dev_key_ensure(state, &k1, path, sizeof path, &created, &err), ES_OK, "%s", err.text);
    cr_assert(created);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "the key is private");
    cr_assert_eq(es_jwt_dev_key_ensure(state, &k2, path2, sizeof path2, &created, &err), ES_OK);
    cr_assert_not(created);
    char t1[44], t2[44];
    cr_assert_eq(es_jwk_thumbprint(k1, t1, &err), ES_OK);
    cr_assert_eq(es_jwk_thumbprint(k2, t2, &err), ES_OK);
    cr_assert_str_eq(t1, t2, "the same key the second time");
    /* The JWKS beside it holds that key; a token verifies against it. */
    char jwks_path[256];
    snprintf(jwks_path, sizeof jwks_path, "%s/dev-jwks.json", state);
    es_jwks *ks = NULL;
    cr_assert_eq(es_jwks_load_file(jwks_path, &ks, &err), ES_OK, "%s", err.text);
    char *tok = sign(k1, good_claims());
    es_jwt_claims c;
    cr_assert_eq(check(ks, tok, &c), ES_OK);
    free(tok);
    es_jwks_free(ks);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    /* A damaged key file is reported, never replaced. */
    FILE *f = fopen(path, "w");
    fputs("not a key\n", f);
    fclose(f);
    cr_assert_eq(es_jwt_dev_key_ensure(state, &k1, path, sizeof path, &created, &err), ES_EINVAL);
    f = fopen(path, "r");
    char line[32] = {0};
    cr_assert_not_null(fgets(line, sizeof line, f));
    fclose(f);
    cr_assert_str_eq(line, "not a key\n");
    unlink(path);
    unlink(jwks_path);
    rmdir(state);
    rmdir(dir);
}
