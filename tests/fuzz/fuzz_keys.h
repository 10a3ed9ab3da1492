/*
 * tests/fuzz/fuzz_keys.h - fixed signing keys of the fuzz targets (test keys,
 * never used anywhere else), so that the tokens in the seed corpora verify
 * and the fuzzer can explore past the signature check: ES256 (kid "fz-ec")
 * and RS256 (kid "fz-rsa"), plus the policy the tokens are checked against.
 * tests/fuzz/mkseeds.c signs the seed tokens with them.
 */
#ifndef FACTORD_FUZZ_KEYS_H
#define FACTORD_FUZZ_KEYS_H

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <stdlib.h>

#include "infra/crypto/jwt.h"

#define FZ_ISSUER "https://issuer.example"
#define FZ_AUDIENCE "factord-fuzz"
#define FZ_NOW 1790000000 /* 2026-09-21: seed tokens expire in 2100 */

static const char fz_ec_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJOJmSTR2q4Vqc5J6\n"
    "LETAeYt7RixmXXR7no4kDIAgXG6hRANCAASxOOECeEk7GhOEVxg7BKC7FMXCilhp\n"
    "kO9ccBTfz6sQT8+ONvetAU+kAQZORG9v8ZjGeF7Mx8v95OVCU3BKaAiI\n"
    "-----END PRIVATE KEY-----\n";

static const char fz_rsa_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCv7O6SDin6YiRF\n"
    "45DULYHpJ2sL82JLCQDHkjZYn5cYsZ5rXTQrn3kXXIP9rLzQPQeVpk397/OlV1jE\n"
    "ZOsdpq8ivbPAHpxT0MSXvx3fKu3vXZmjJ0Jb3/5PdHuMVBz+7MJktv2YGTWzt/wF\n"
    "U0mel3WHo1Gx6pV9j0N3+O02W3CNaTkqLRFr6sJ9k5+NvYMWPOeUWcUicqKmpyRY\n"
    "W66wsnhwln+hrUiz3KoWlvb88HZpOgUlrCuI48GBt6ZvrT468rTmw+djUTnIOZcG\n"
    "OvZ9td2F5VbQtMJZhcorvj3OfCJ1VjPpuf9JYiXDK6jfAQduSN8ZGxsJ2i2p+QZw\n"
    "0lVWbpf5AgMBAAECggEABW11TcxskfTnAsClgPpMx1VH6Zo5wTAMVgaQ29VD9jHS\n"
    "qKQl6ND2eC31RNqzB5H+ctOVlTz1gszJ/bh8WCbtQSXiTrjTC13wlsWWxcIUuFK7\n"
    "sPYph11G2AuIspi3Z/ZaJ/0iSp0/1CUxZrZTWjZ43IqsHvr/tNw6PBBnZyAqkzOW\n"
    "TAOyubI+za0OdSS/iHHe4BZIucKu/BTHm4Y6y5h8A3iVpmJwX1wY8GEZWV5RWdRQ\n"
    "GyFgG5xJtyeb9P6PUALIHJcV7Kz2uDUT/ZTe1D6MIZvPuox/r0Iisbp7nSZqI0sJ\n"
    "CU3xDlN2PqefZJaeJFpA4B4zLjADB7Z5ILmFBYToQQKBgQDorwGnA5QPNrr77Tm/\n"
    "s96Bu3RnN5is6bU9gAjDTEaqvkegrCkJsJ7J396CDYDxW4lq+AYtLqPox3Fy24AM\n"
    "kT4LM7Fna6B2/7GnqKYe2mYAkwv3EIw8lIRxSAILp3E9q3cAjWQfKYSsox9WTBmA\n"
    "vITRUsmSbdbacILCg8+AM7LoGQKBgQDBjetfQggS7pKl0UFtdAW1Gfx8oDbaF6vp\n"
    "82MIXc/4yulH3IfwKJXtvj5vyl6pve9Ta21Ys/JMHwGS6l2rOR04AdJGF/g/NhOS\n"
    "+0NmS21GJ4mpDk1bu7jV/UyLKldns2MD7CC8q7TXuL0RT12lyBLMjcl4xqg12oNA\n"
    "tCzOGpCq4QKBgQDnQLeVs7q8/BoOM5EHc86ahSGFS/4TLBsSymLrJq29GGu7xh7r\n"
    "IHxQCozsGFukhOMoSuRol0gUG9Qm4Px8gQV2wKN6M79BRZLdHIIte8WQoJRtsiaO\n"
    "NtUCeRx/VKT5M6aMB/oP9oWDxoNoky1tgu9F0s+/FidI5jUu+S2LLtaKUQKBgFkR\n"
    "Q7SsICcGHfmsF52UfGPgN23qFBO8POIFnBbnhKKKTVtCQlPjeUrT9stepr0ZqB4N\n"
    "G15sQB2DTygaLUxzldyGCgszUItWCR/j/BoAr6JO42wmJrcF5YKjcyu/KkWQKQpP\n"
    "CKmJokh6vJZQnVmCfhQfUwz+7b0Kdse5obyeQOBBAoGAE5LMzwjT/UK66JJSppdf\n"
    "E16b/VBSRCGcmRbgnbqBkFrrP7weQQRQ18Dp/CGjyPNFU8+SfgAmccsWtObZvJH8\n"
    "fB+yzzRzyLFHn8QMBIoZlxI9B6YaaCKwEv4A2HA1YocfTi9CSBwGkocVtHJdg1o3\n"
    "syhT+fg2g2jx2HbbvxKtrlg=\n"
    "-----END PRIVATE KEY-----\n";

static inline EVP_PKEY *fz_key(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!k)
        abort();
    return k;
}

/* The JWKS document of both public keys, kids "fz-ec" and "fz-rsa". */
static inline char *fz_jwks_text(void)
{
    json_t *keys = json_array();
    const char *pems[] = {fz_ec_pem, fz_rsa_pem}, *kids[] = {"fz-ec", "fz-rsa"};
    for (int i = 0; i < 2; i++) {
        EVP_PKEY *k = fz_key(pems[i]);
        json_t *jwk = NULL;
        es_error err;
        if (es_jwk_public(k, &jwk, &err) != ES_OK)
            abort();
        json_object_set_new(jwk, "kid", json_string(kids[i]));
        json_array_append_new(keys, jwk);
        EVP_PKEY_free(k);
    }
    json_t *doc = json_pack("{s:o}", "keys", keys);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text)
        abort();
    return text;
}

static inline es_jwks *fz_jwks(void)
{
    char *text = fz_jwks_text();
    es_jwks *ks = NULL;
    es_error err;
    if (es_jwks_parse(text, strlen(text), &ks, &err) != ES_OK)
        abort();
    free(text);
    return ks;
}

#endif
