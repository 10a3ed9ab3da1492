/*
 * infra/crypto/jwt.c - JWKS parsing, RS256/ES256 verification and signing, and the
 * development signing key (see jwt.h).
 *
 * Every input here may come from an attacker: lengths are checked before
 * anything is decoded, the signature is verified before the claims are
 * parsed, and every rejection is one ES_EINVAL with a reason for the log.
 */
#include "infra/crypto/jwt.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "infra/base/log.h"
#include "infra/base/util.h"

#define JWKS_MAX_KEYS 64
#define JWKS_MAX_BYTES (256 * 1024)
#define RSA_MIN_BITS 2048
#define RSA_MAX_BYTES 1024 /* 8192-bit moduli */
#define HEADER_MAX_CHARS 2048

enum key_type { KEY_RSA = 1, KEY_EC_P256 = 2 };

typedef struct {
    char kid[ES_JWT_KID_MAX];
    bool has_kid;
    enum key_type type;
    EVP_PKEY *pkey;
} jwk_key;

struct es_jwks {
    size_t n;
    jwk_key keys[JWKS_MAX_KEYS];
};

/* --- base64url ---------------------------------------------------------- */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t es_b64url_encode(const unsigned char *in, size_t len, char *out, size_t out_len)
{
    size_t need = (len / 3) * 4 + (len % 3 ? len % 3 + 1 : 0) + 1;
    if (out_len < need) {
        if (out_len)
            out[0] = '\0';
        return 0;
    }
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

bool es_b64url_decode(const char *in, size_t len, unsigned char *out, size_t out_len, size_t *n)
{
    /* A lone trailing character carries fewer than 8 bits: never valid. */
    if (len % 4 == 1 || (len / 4) * 3 + (len % 4 ? len % 4 - 1 : 0) > out_len)
        return false;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xFF);
        }
    }
    /* Canonical form only: the unused low bits of the last character are 0,
     * so one byte string has exactly one encoding. */
    if (bits && (acc & ((1u << bits) - 1)) != 0)
        return false;
    *n = o;
    return true;
}

/* Decode a base64url JSON string member into a fresh buffer (caller frees). */
static unsigned char *b64_member(const json_t *obj, const char *name, size_t max, size_t *n)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_string(v))
        return NULL;
    size_t len = json_string_length(v);
    if (len > (max / 3 + 1) * 4)
        return NULL;
    unsigned char *buf = malloc(max + 3);
    if (!buf)
        abort();
    if (!es_b64url_decode(json_string_value(v), len, buf, max + 3, n) || *n > max || *n == 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* --- keys ---------------------------------------------------------------- */

static const char *str_member(const json_t *obj, const char *name)
{
    const json_t *v = json_object_get(obj, name);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static EVP_PKEY *fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static bool public_check(EVP_PKEY *pkey)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk, es_error *err)
{
    size_t nlen = 0, elen = 0;
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    unsigned char *nb = b64_member(jwk, "n", RSA_MAX_BYTES, &nlen);
    unsigned char *eb = b64_member(jwk, "e", 8, &elen);
    if (!nb || !eb) {
        es_error_set(err, ES_EINVAL, "RSA key: \"n\" or \"e\" missing or not base64url");
        goto out;
    }
    n = BN_bin2bn(nb, (int)nlen, NULL);
    e = BN_bin2bn(eb, (int)elen, NULL);
    bld = OSSL_PARAM_BLD_new();
    if (!n || !e || !bld || !BN_is_odd(e) || BN_is_one(e) || !BN_is_odd(n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) || !(pkey = fromdata("RSA", bld))) {
        es_error_set(err, ES_EINVAL, "RSA key: not a usable public key");
        goto out;
    }
    if (EVP_PKEY_get_bits(pkey) < RSA_MIN_BITS) {
        es_error_set(err, ES_EINVAL, "RSA key: %d bits, at least %d needed", EVP_PKEY_get_bits(pkey),
                     RSA_MIN_BITS);
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
out:
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(nb);
    free(eb);
    ERR_clear_error();
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk, es_error *err)
{
    size_t xlen = 0, ylen = 0;
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    unsigned char *xb = b64_member(jwk, "x", 32, &xlen);
    unsigned char *yb = b64_member(jwk, "y", 32, &ylen);
    unsigned char point[65];
    if (!xb || !yb || xlen != 32 || ylen != 32) {
        es_error_set(err, ES_EINVAL, "EC key: \"x\" and \"y\" must be 32 bytes of base64url each");
        goto out;
    }
    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, xb, 32);
    memcpy(point + 33, yb, 32);
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point) ||
        !(pkey = fromdata("EC", bld)) || !public_check(pkey)) {
        es_error_set(err, ES_EINVAL, "EC key: not a point on P-256");
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
out:
    OSSL_PARAM_BLD_free(bld);
    free(xb);
    free(yb);
    ERR_clear_error();
    return pkey;
}

es_result es_jwk_to_pkey(const json_t *jwk, EVP_PKEY **out, es_error *err)
{
    const char *kty = str_member(jwk, "kty"), *crv = str_member(jwk, "crv");
    if (kty && strcmp(kty, "RSA") == 0)
        *out = rsa_from_jwk(jwk, err);
    else if (kty && strcmp(kty, "EC") == 0 && crv && strcmp(crv, "P-256") == 0)
        *out = ec_from_jwk(jwk, err);
    else
        return es_error_set(err, ES_EINVAL, "only RSA and EC P-256 keys are supported");
    return *out ? ES_OK : ES_EINVAL;
}

void es_jwks_free(es_jwks *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    free(ks);
}

size_t es_jwks_count(const es_jwks *ks) { return ks ? ks->n : 0; }

es_result es_jwks_parse(const char *text, size_t len, es_jwks **out, es_error *err)
{
    es_result rc = ES_EINVAL;
    json_error_t jerr;
    es_jwks *ks = NULL;
    if (len > JWKS_MAX_BYTES)
        return es_error_set(err, ES_EINVAL, "JWKS: %zu bytes, at most %d", len, JWKS_MAX_BYTES);
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        rc = es_error_set(err, ES_EINVAL, "JWKS: expected {\"keys\":[...]}%s%s", doc ? "" : ": ",
                          doc ? "" : jerr.text);
        goto out;
    }
    ks = calloc(1, sizeof *ks);
    if (!ks)
        abort();
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk) {
        const char *kty = str_member(jwk, "kty"), *use = str_member(jwk, "use");
        const char *alg = str_member(jwk, "alg"), *kid = str_member(jwk, "kid");
        const json_t *kidv = json_object_get(jwk, "kid");
        if (!json_is_object(jwk) || !kty) {
            rc = es_error_set(err, ES_EINVAL, "JWKS: key %zu has no \"kty\"", i);
            goto out;
        }
        if (use && strcmp(use, "sig") != 0)
            continue; /* an encryption key */
        enum key_type type;
        if (strcmp(kty, "RSA") == 0 && (!alg || strcmp(alg, "RS256") == 0))
            type = KEY_RSA;
        else if (strcmp(kty, "EC") == 0 && str_member(jwk, "crv") && strcmp(str_member(jwk, "crv"), "P-256") == 0 &&
                 (!alg || strcmp(alg, "ES256") == 0))
            type = KEY_EC_P256;
        else
            continue; /* a type or algorithm factord does not accept */
        if (kidv && (!kid || strlen(kid) != json_string_length(kidv) || strlen(kid) >= ES_JWT_KID_MAX)) {
            rc = es_error_set(err, ES_EINVAL, "JWKS: key %zu: \"kid\" must be a string under %d bytes", i,
                              ES_JWT_KID_MAX);
            goto out;
        }
        if (ks->n == JWKS_MAX_KEYS) {
            rc = es_error_set(err, ES_EINVAL, "JWKS: more than %d usable keys", JWKS_MAX_KEYS);
            goto out;
        }
        for (size_t k = 0; kid && k < ks->n; k++)
            if (ks->keys[k].has_kid && strcmp(ks->keys[k].kid, kid) == 0) {
                rc = es_error_set(err, ES_EINVAL, "JWKS: kid \"%.64s\" appears twice", kid);
                goto out;
            }
        es_error kerr = {0};
        EVP_PKEY *pkey = type == KEY_RSA ? rsa_from_jwk(jwk, &kerr) : ec_from_jwk(jwk, &kerr);
        if (!pkey) {
            rc = es_error_set(err, ES_EINVAL, "JWKS: key %zu%s%.64s: %s", i, kid ? " kid " : "", kid ? kid : "",
                              kerr.text);
            goto out;
        }
        jwk_key *k = &ks->keys[ks->n++];
        k->type = type;
        k->pkey = pkey;
        k->has_kid = kid != NULL;
        snprintf(k->kid, sizeof k->kid, "%s", kid ? kid : "");
    }
    if (ks->n == 0) {
        rc = es_error_set(err, ES_EINVAL, "JWKS: no RS256 or ES256 signing key in it");
        goto out;
    }
    *out = ks;
    ks = NULL;
    rc = ES_OK;
out:
    es_jwks_free(ks);
    json_decref(doc);
    return rc;
}

es_result es_jwks_load_file(const char *path, es_jwks **out, es_error *err)
{
    char *buf = NULL;
    size_t n = 0;
    switch (es_read_file(path, JWKS_MAX_BYTES, &buf, &n)) {
    case ES_READ_OK:
        break;
    case ES_READ_OPEN:
        return es_error_set(err, ES_EINVAL, "cannot open %s: %s", path, strerror(errno));
    case ES_READ_IO:
        return es_error_set(err, ES_EINVAL, "cannot read %s", path);
    case ES_READ_TOO_LARGE:
        return es_error_set(err, ES_EINVAL, "%s: larger than %d bytes", path, JWKS_MAX_BYTES);
    }
    es_result rc = es_jwks_parse(buf, n, out, err);
    if (rc != ES_OK && err) {
        char copy[sizeof err->text];
        snprintf(copy, sizeof copy, "%s", err->text);
        es_error_set(err, rc, "%s: %s", path, copy);
    }
    free(buf);
    return rc;
}

static bool key_type_of(EVP_PKEY *key, enum key_type *type)
{
    if (EVP_PKEY_is_a(key, "RSA")) {
        *type = KEY_RSA;
        return true;
    }
    char group[64] = {0};
    if (EVP_PKEY_is_a(key, "EC") &&
        EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) &&
        strcmp(group, "prime256v1") == 0) {
        *type = KEY_EC_P256;
        return true;
    }
    ERR_clear_error();
    return false;
}

/* The public members of key, base64url: RSA n and e, or EC x and y. */
static es_result public_members(EVP_PKEY *key, enum key_type type, char *a, char *b, size_t len, es_error *err)
{
    BIGNUM *p = NULL, *q = NULL;
    unsigned char buf[RSA_MAX_BYTES];
    es_result rc = es_error_set(err, ES_EINVAL, "cannot read the public key");
    if (type == KEY_RSA) {
        if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &p) ||
            !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &q) || BN_num_bytes(p) > RSA_MAX_BYTES)
            goto out;
        es_b64url_encode(buf, (size_t)BN_bn2bin(p, buf), a, len);
        es_b64url_encode(buf, (size_t)BN_bn2bin(q, buf), b, len);
    } else {
        if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &p) ||
            !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &q) || BN_bn2binpad(p, buf, 32) != 32)
            goto out;
        es_b64url_encode(buf, 32, a, len);
        if (BN_bn2binpad(q, buf, 32) != 32)
            goto out;
        es_b64url_encode(buf, 32, b, len);
    }
    rc = ES_OK;
out:
    BN_free(p);
    BN_free(q);
    ERR_clear_error();
    return rc;
}

es_result es_jwk_thumbprint(EVP_PKEY *key, char out[44], es_error *err)
{
    enum key_type type;
    if (!key_type_of(key, &type))
        return es_error_set(err, ES_EINVAL, "only RSA and EC P-256 keys are supported");
    char a[1400], b[1400], canon[3000];
    es_result rc = public_members(key, type, a, b, sizeof a, err);
    if (rc != ES_OK)
        return rc;
    /* RFC 7638: the required members, sorted, no whitespace. */
    if (type == KEY_RSA)
        snprintf(canon, sizeof canon, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", b, a);
    else
        snprintf(canon, sizeof canon, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", a, b);
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(canon, strlen(canon), md, &mdlen, EVP_sha256(), NULL))
        return es_error_set(err, ES_EFATAL, "SHA-256 failed");
    es_b64url_encode(md, 32, out, 44);
    return ES_OK;
}

es_result es_jwk_public(EVP_PKEY *key, json_t **out, es_error *err)
{
    enum key_type type;
    if (!key_type_of(key, &type))
        return es_error_set(err, ES_EINVAL, "only RSA and EC P-256 keys are supported");
    char a[1400], b[1400], kid[44];
    es_result rc = public_members(key, type, a, b, sizeof a, err);
    if (rc == ES_OK)
        rc = es_jwk_thumbprint(key, kid, err);
    if (rc != ES_OK)
        return rc;
    if (type == KEY_RSA)
        *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "RSA", "kid", kid, "use", "sig", "alg", "RS256",
                         "n", a, "e", b);
    else
        *out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "kid", kid, "use", "sig", "alg",
                         "ES256", "crv", "P-256", "x", a, "y", b);
    if (!*out)
        abort();
    return ES_OK;
}

es_result es_jwks_from_key(EVP_PKEY *key, es_jwks **out, es_error *err)
{
    json_t *jwk = NULL;
    es_result rc = es_jwk_public(key, &jwk, err);
    if (rc != ES_OK)
        return rc;
    json_t *doc = json_pack("{s:[o]}", "keys", jwk);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        abort();
    rc = es_jwks_parse(text, strlen(text), out, err);
    free(text);
    return rc;
}

/* --- verification -------------------------------------------------------- */

/* Raw r||s (JWS, RFC 7518 §3.4) to the DER form OpenSSL verifies. */
static int ecdsa_raw_to_der(const unsigned char raw[64], unsigned char *der, size_t der_len)
{
    int n = -1;
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    if (!sig || !r || !s || !ECDSA_SIG_set0(sig, r, s)) {
        BN_free(r);
        BN_free(s);
        goto out;
    }
    int need = i2d_ECDSA_SIG(sig, NULL);
    if (need > 0 && (size_t)need <= der_len) {
        unsigned char *p = der;
        n = i2d_ECDSA_SIG(sig, &p);
    }
out:
    ECDSA_SIG_free(sig);
    return n;
}

static bool verify_signature(const jwk_key *k, const char *input, size_t input_len, const unsigned char *sig,
                             size_t sig_len)
{
    unsigned char der[80];
    const unsigned char *s = sig;
    size_t slen = sig_len;
    if (k->type == KEY_EC_P256) {
        if (sig_len != 64)
            return false;
        int n = ecdsa_raw_to_der(sig, der, sizeof der);
        if (n <= 0)
            return false;
        s = der;
        slen = (size_t)n;
    } else if (sig_len != (size_t)EVP_PKEY_get_size(k->pkey)) {
        return false;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
              EVP_DigestVerify(ctx, s, slen, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

/* A decoded JSON object from one base64url segment. */
static json_t *segment_json(const char *seg, size_t len, es_error *err, const char *what)
{
    unsigned char *buf = malloc(len);
    if (!buf)
        abort();
    size_t n = 0;
    json_t *obj = NULL;
    json_error_t jerr;
    if (!es_b64url_decode(seg, len, buf, len, &n))
        es_error_set(err, ES_EINVAL, "token %s: not base64url", what);
    else if (!(obj = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, &jerr)))
        es_error_set(err, ES_EINVAL, "token %s: not JSON: %s", what, jerr.text);
    else if (!json_is_object(obj)) {
        es_error_set(err, ES_EINVAL, "token %s: not a JSON object", what);
        json_decref(obj);
        obj = NULL;
    }
    free(buf);
    return obj;
}

/* A NumericDate claim: absent -> *present false; not a number -> false. */
static bool numeric_date(const json_t *claims, const char *name, bool *present, double *v)
{
    const json_t *x = json_object_get(claims, name);
    *present = x != NULL;
    if (!x)
        return true;
    if (!json_is_number(x))
        return false;
    *v = json_number_value(x);
    return true;
}

/* A string claim copied into dst: false when it is not a string, is empty,
 * too long, or holds a NUL or another control character. */
static bool id_claim(const json_t *v, char *dst, size_t dst_len)
{
    if (!json_is_string(v))
        return false;
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (len == 0 || len >= dst_len || strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    memcpy(dst, s, len + 1);
    return true;
}

static bool audience_ok(const json_t *aud, const char *want)
{
    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return false;
    size_t i;
    const json_t *a;
    bool found = false;
    json_array_foreach(aud, i, a) {
        if (!json_is_string(a))
            return false;
        if (strcmp(json_string_value(a), want) == 0)
            found = true;
    }
    return found;
}

static bool has_word(const char *s, const char *word)
{
    size_t wl = strlen(word);
    while (*s) {
        while (*s == ' ')
            s++;
        size_t n = strcspn(s, " ");
        if (n == wl && strncmp(s, word, wl) == 0)
            return true;
        s += n;
    }
    return false;
}

static bool scope_ok(const json_t *scope)
{
    if (json_is_string(scope))
        return has_word(json_string_value(scope), "openid");
    if (!json_is_array(scope))
        return false;
    size_t i;
    const json_t *a;
    json_array_foreach(scope, i, a) {
        if (json_is_string(a) && strcmp(json_string_value(a), "openid") == 0)
            return true;
    }
    return false;
}

es_result es_jwt_verify(const es_jwks *ks, const char *token, size_t len, const es_jwt_policy *pol,
                        es_jwt_claims *out, es_error *err)
{
    es_result rc = ES_EINVAL;
    json_t *header = NULL, *claims = NULL;
    unsigned char *sig = NULL;
    memset(out, 0, sizeof *out);
    if (len == 0 || len > ES_JWT_MAX_LEN)
        return es_error_set(err, ES_EINVAL, "token: length %zu outside 1..%d", len, ES_JWT_MAX_LEN);
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return es_error_set(err, ES_EINVAL, "token: not three dot-separated parts (JWE and JSON forms "
                                            "are not accepted)");
    size_t hlen = (size_t)(dot1 - token), plen = (size_t)(dot2 - dot1 - 1), slen = len - (size_t)(dot2 + 1 - token);
    if (hlen == 0 || hlen > HEADER_MAX_CHARS || plen == 0 || slen == 0)
        return es_error_set(err, ES_EINVAL, "token: empty or oversized part");

    if (!(header = segment_json(token, hlen, err, "header")))
        goto out;
    const char *alg = str_member(header, "alg"), *kid = str_member(header, "kid");
    const json_t *kidv = json_object_get(header, "kid");
    enum key_type want;
    if (!alg) {
        es_error_set(err, ES_EINVAL, "token header: no \"alg\"");
        goto out;
    } else if (strcmp(alg, "RS256") == 0)
        want = KEY_RSA;
    else if (strcmp(alg, "ES256") == 0)
        want = KEY_EC_P256;
    else {
        es_error_set(err, ES_EINVAL, "token header: alg \"%.16s\" is not accepted (RS256, ES256 only)", alg);
        goto out;
    }
    if (json_object_get(header, "crit")) {
        es_error_set(err, ES_EINVAL, "token header: \"crit\" extensions are not supported");
        goto out;
    }
    if (kidv && (!kid || strlen(kid) >= ES_JWT_KID_MAX || strlen(kid) != json_string_length(kidv))) {
        es_error_set(err, ES_EINVAL, "token header: bad \"kid\"");
        goto out;
    }
    snprintf(out->alg, sizeof out->alg, "%s", alg);
    snprintf(out->kid, sizeof out->kid, "%s", kid ? kid : "");

    /* The key: by kid; without a kid only when exactly one key fits. */
    const jwk_key *key = NULL;
    size_t fitting = 0;
    for (size_t i = 0; i < ks->n; i++) {
        const jwk_key *k = &ks->keys[i];
        if (kid ? (k->has_kid && strcmp(k->kid, kid) == 0) : k->type == want) {
            key = k;
            fitting++;
        }
    }
    if (!key || fitting != 1) {
        es_error_set(err, ES_EINVAL, kid ? "token: no key with this kid" : "token: no kid, and not exactly one "
                                                                           "key of its type");
        goto out;
    }
    if (key->type != want) {
        es_error_set(err, ES_EINVAL, "token: alg %s does not match the key's type", alg);
        goto out;
    }

    size_t sig_cap = slen, sig_n = 0;
    sig = malloc(sig_cap);
    if (!sig)
        abort();
    if (!es_b64url_decode(dot2 + 1, slen, sig, sig_cap, &sig_n)) {
        es_error_set(err, ES_EINVAL, "token signature: not base64url");
        goto out;
    }
    if (!verify_signature(key, token, hlen + 1 + plen, sig, sig_n)) {
        es_error_set(err, ES_EINVAL, "token: signature does not verify");
        goto out;
    }

    /* Signed by a trusted key: now the claims. */
    if (!(claims = segment_json(dot1 + 1, plen, err, "claims")))
        goto out;
    bool has_exp, has_nbf, has_iat;
    double exp = 0, nbf = 0, iat = 0, now = (double)pol->now_s, leeway = (double)pol->leeway_s;
    if (!numeric_date(claims, "exp", &has_exp, &exp) || !numeric_date(claims, "nbf", &has_nbf, &nbf) ||
        !numeric_date(claims, "iat", &has_iat, &iat)) {
        es_error_set(err, ES_EINVAL, "token: exp, nbf or iat is not a number");
        goto out;
    }
    if (!has_exp) {
        es_error_set(err, ES_EINVAL, "token: no exp");
        goto out;
    }
    if (now - leeway >= exp) {
        es_error_set(err, ES_EINVAL, "token: expired");
        goto out;
    }
    if (has_nbf && now + leeway < nbf) {
        es_error_set(err, ES_EINVAL, "token: not valid yet (nbf)");
        goto out;
    }
    if (has_iat && now + leeway < iat) {
        es_error_set(err, ES_EINVAL, "token: issued in the future (iat)");
        goto out;
    }
    const char *iss = str_member(claims, "iss");
    if (!iss || strcmp(iss, pol->issuer) != 0) {
        es_error_set(err, ES_EINVAL, "token: wrong issuer");
        goto out;
    }
    if (!audience_ok(json_object_get(claims, "aud"), pol->audience)) {
        es_error_set(err, ES_EINVAL, "token: audience does not contain %.64s", pol->audience);
        goto out;
    }
    if (!scope_ok(json_object_get(claims, "scope"))) {
        es_error_set(err, ES_EINVAL, "token: scope lacks openid");
        goto out;
    }
    if (!id_claim(json_object_get(claims, "sub"), out->sub, sizeof out->sub)) {
        es_error_set(err, ES_EINVAL, "token: sub missing or unusable");
        goto out;
    }
    const json_t *org = json_object_get(claims, ES_JWT_ORG_CLAIM);
    if (org && !id_claim(org, out->org, sizeof out->org)) {
        es_error_set(err, ES_EINVAL, "token: %s unusable", ES_JWT_ORG_CLAIM);
        goto out;
    }
    out->exp = exp > 9e18 ? INT64_MAX : (int64_t)exp;
    rc = ES_OK;
out:
    if (rc != ES_OK) {
        char alg_copy[8];
        snprintf(alg_copy, sizeof alg_copy, "%s", out->alg);
        memset(out, 0, sizeof *out);
        snprintf(out->alg, sizeof out->alg, "%s", alg_copy);
    }
    free(sig);
    json_decref(header);
    json_decref(claims);
    return rc;
}

/* --- signing ------------------------------------------------------------- */

static char *b64_text(const char *s)
{
    size_t len = strlen(s), cap = len / 3 * 4 + 5;
    char *out = malloc(cap);
    if (!out)
        abort();
    es_b64url_encode((const unsigned char *)s, len, out, cap);
    return out;
}

es_result es_jwt_sign(EVP_PKEY *key, const char *kid, const json_t *claims, char **out, es_error *err)
{
    enum key_type type;
    if (!key_type_of(key, &type))
        return es_error_set(err, ES_EINVAL, "only RSA and EC P-256 keys can sign");
    es_result rc = ES_EFATAL;
    json_t *header = json_pack("{s:s, s:s}", "alg", type == KEY_RSA ? "RS256" : "ES256", "typ", "JWT");
    if (kid)
        json_object_set_new(header, "kid", json_string(kid));
    char *htext = json_dumps(header, JSON_COMPACT), *ctext = json_dumps(claims, JSON_COMPACT);
    char *h = NULL, *c = NULL, *input = NULL;
    unsigned char *sig = NULL;
    size_t siglen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!htext || !ctext || !ctx)
        abort();
    h = b64_text(htext);
    c = b64_text(ctext);
    size_t ilen = strlen(h) + 1 + strlen(c);
    input = malloc(ilen + 1 + 700);
    if (!input)
        abort();
    snprintf(input, ilen + 1, "%s.%s", h, c);
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &siglen, (unsigned char *)input, ilen) != 1 || !(sig = malloc(siglen)) ||
        EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, ilen) != 1) {
        rc = es_error_set(err, ES_EFATAL, "signing failed");
        goto out;
    }
    unsigned char raw[64];
    const unsigned char *s = sig;
    size_t slen = siglen;
    if (type == KEY_EC_P256) {
        const unsigned char *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)siglen);
        const BIGNUM *r = NULL, *ss = NULL;
        if (es)
            ECDSA_SIG_get0(es, &r, &ss);
        bool ok = es && BN_bn2binpad(r, raw, 32) == 32 && BN_bn2binpad(ss, raw + 32, 32) == 32;
        ECDSA_SIG_free(es);
        if (!ok) {
            rc = es_error_set(err, ES_EFATAL, "signing failed (ECDSA signature form)");
            goto out;
        }
        s = raw;
        slen = 64;
    }
    if (slen > 512) {
        rc = es_error_set(err, ES_EINVAL, "signature too long");
        goto out;
    }
    input[ilen] = '.';
    es_b64url_encode(s, slen, input + ilen + 1, 700);
    *out = input;
    input = NULL;
    rc = ES_OK;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    free(sig);
    free(input);
    free(h);
    free(c);
    free(htext);
    free(ctext);
    json_decref(header);
    return rc;
}

/* --- the development key ------------------------------------------------- */

static EVP_PKEY *load_pem_key(const char *path, es_error *err, bool *missing)
{
    *missing = false;
    FILE *f = fopen(path, "r");
    if (!f) {
        *missing = errno == ENOENT;
        es_error_set(err, ES_EINVAL, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        es_warn("the development signing key is readable by others; chmod 600 it", "path", path);
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    enum key_type type;
    if (!key || !key_type_of(key, &type) || type != KEY_EC_P256) {
        EVP_PKEY_free(key);
        ERR_clear_error();
        es_error_set(err, ES_EINVAL, "%s is not an EC P-256 private key in PEM", path);
        return NULL;
    }
    return key;
}

static bool write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

es_result es_jwt_dev_key_ensure(const char *state_dir, EVP_PKEY **key, char *path_out, size_t path_len,
                                bool *created, es_error *err)
{
    char path[1024], jwks_path[1024], tmp[1100];
    *key = NULL;
    *created = false;
    if ((size_t)snprintf(path, sizeof path, "%s/dev-signing-key.pem", state_dir) >= sizeof path ||
        (size_t)snprintf(jwks_path, sizeof jwks_path, "%s/dev-jwks.json", state_dir) >= sizeof jwks_path)
        return es_error_set(err, ES_EINVAL, "FACTORD_STATE_DIR is too long");
    if (mkdir(state_dir, 0700) != 0 && errno != EEXIST)
        return es_error_set(err, ES_EINVAL, "cannot create the state folder %s: %s", state_dir, strerror(errno));
    if (path_out)
        snprintf(path_out, path_len, "%s", path);

    bool missing = false;
    EVP_PKEY *k = load_pem_key(path, err, &missing);
    if (!k && !missing)
        return ES_EINVAL; /* there but unusable: never overwrite a key */
    if (!k) {
        /* Create it under a private name, then link it into place: link()
         * fails when another process got there first, and we use theirs. */
        EVP_PKEY *gen = EVP_EC_gen("P-256");
        BIO *mem = BIO_new(BIO_s_mem());
        char *pem = NULL;
        long pem_len = 0;
        if (!gen || !mem || !PEM_write_bio_PrivateKey(mem, gen, NULL, NULL, 0, NULL, NULL) ||
            (pem_len = BIO_get_mem_data(mem, &pem)) <= 0) {
            EVP_PKEY_free(gen);
            BIO_free(mem);
            ERR_clear_error();
            return es_error_set(err, ES_EFATAL, "cannot generate a P-256 key");
        }
        unsigned char rnd[6];
        char rhex[13];
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            memset(rnd, 0, sizeof rnd);
        for (int i = 0; i < 6; i++)
            snprintf(rhex + 2 * i, 3, "%02x", rnd[i]);
        snprintf(tmp, sizeof tmp, "%s.%ld.%s", path, (long)getpid(), rhex);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
        bool ok = fd >= 0 && write_all(fd, pem, (size_t)pem_len) && fsync(fd) == 0;
        if (fd >= 0)
            ok = close(fd) == 0 && ok;
        OPENSSL_cleanse(pem, (size_t)pem_len);
        BIO_free(mem);
        int link_errno = 0;
        if (ok && link(tmp, path) != 0) {
            link_errno = errno;
            ok = false;
        }
        if (fd >= 0)
            unlink(tmp);
        if (ok) {
            k = gen;
            *created = true;
        } else {
            EVP_PKEY_free(gen);
            if (link_errno != EEXIST)
                return es_error_set(err, ES_EINVAL, "cannot write %s: %s", path,
                                    strerror(link_errno ? link_errno : errno));
            if (!(k = load_pem_key(path, err, &missing)))
                return ES_EINVAL;
        }
    }
    if (*created || access(jwks_path, R_OK) != 0) {
        json_t *jwk = NULL;
        es_result rc = es_jwk_public(k, &jwk, err);
        if (rc != ES_OK) {
            EVP_PKEY_free(k);
            return rc;
        }
        json_t *doc = json_pack("{s:[o]}", "keys", jwk);
        char *text = json_dumps(doc, JSON_INDENT(2));
        json_decref(doc);
        if (!text)
            abort();
        size_t n = strlen(text);
        char *line = realloc(text, n + 2);
        if (!line)
            abort();
        memcpy(line + n, "\n", 2);
        if (!es_write_file_atomic(jwks_path, line, strlen(line), 0644))
            es_warn("cannot write the development JWKS", "path", jwks_path);
        free(line);
    }
    *key = k;
    return ES_OK;
}

es_result es_jwt_dev_token(const char *state_dir, const es_jwt_dev_claims *c, char **token, char *path,
                           size_t path_len, bool *created, es_error *err)
{
    EVP_PKEY *key = NULL;
    json_t *claims = NULL;
    char kid[44], jti[32];
    unsigned char rnd[16];
    *token = NULL;
    es_result rc = es_jwt_dev_key_ensure(state_dir, &key, path, path_len, created, err);
    if (rc == ES_OK)
        rc = es_jwk_thumbprint(key, kid, err);
    if (rc != ES_OK)
        goto out;
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        rc = es_error_set(err, ES_EFATAL, "no random bytes for the token's jti");
        goto out;
    }
    es_b64url_encode(rnd, sizeof rnd, jti, sizeof jti);
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "iss", c->issuer ? c->issuer : ES_JWT_DEV_ISSUER,
                       "aud", c->audience ? c->audience : ES_JWT_DEV_AUDIENCE, "sub", c->user, "iat",
                       (json_int_t)c->now_s, "nbf", (json_int_t)c->now_s, "exp", (json_int_t)(c->now_s + c->ttl_s),
                       "scope", c->scope, "jti", jti);
    if (!claims) {
        rc = es_error_set(err, ES_EINVAL, "cannot build the token's claims");
        goto out;
    }
    if (c->org)
        json_object_set_new(claims, ES_JWT_ORG_CLAIM, json_string(c->org));
    rc = es_jwt_sign(key, kid, claims, token, err);
out:
    json_decref(claims);
    EVP_PKEY_free(key);
    return rc;
}
