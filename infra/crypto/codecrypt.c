/*
 * infra/crypto/codecrypt.c - phone-code crypto with OpenSSL (see codecrypt.h).
 */
#include "infra/crypto/codecrypt.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/crypto/jwt.h"

#define NONCE_LEN 12
#define TAG_LEN 16

void es_sha256(const void *data, size_t len, unsigned char out[32])
{
    SHA256(data, len, out);
}

void es_codekey_init(es_codekey *ck, const unsigned char key[32])
{
    memcpy(ck->key, key, 32);
    unsigned char h[32];
    es_sha256(key, 32, h);
    snprintf(ck->key_id, sizeof ck->key_id, "%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
}

es_result es_code_generate(char *out, size_t out_len, int len, es_error *err)
{
    if (len < 1 || (size_t)len >= out_len)
        return es_error_set(err, ES_EINVAL, "code length %d does not fit", len);
    for (int i = 0; i < len;) {
        unsigned char b;
        if (RAND_bytes(&b, 1) != 1)
            return es_error_set(err, ES_EFATAL, "RAND_bytes failed");
        if (b >= 250) /* rejection sampling keeps the digits uniform */
            continue;
        out[i++] = (char)('0' + b % 10);
    }
    out[len] = '\0';
    return ES_OK;
}

static void aad_of(const char *instance_id, const char *user_id, char *buf, size_t len)
{
    snprintf(buf, len, "factord/phone-code/%s/%s", instance_id, user_id);
}

es_result es_code_encrypt(const es_codekey *ck, const char *instance_id, const char *user_id,
                          const char *code, char *out, size_t out_len, es_error *err)
{
    es_result rc = ES_EFATAL;
    unsigned char raw[NONCE_LEN + 64 + TAG_LEN];
    size_t code_len = strlen(code);
    if (code_len > 64)
        return es_error_set(err, ES_EINVAL, "code too long");
    char aad[600];
    aad_of(instance_id, user_id, aad, sizeof aad);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    if (!ctx)
        return es_error_set(err, ES_EFATAL, "EVP_CIPHER_CTX_new failed");
    if (RAND_bytes(raw, NONCE_LEN) != 1) {
        es_error_set(err, ES_EFATAL, "RAND_bytes failed");
        goto out;
    }
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, ck->key, raw) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(ctx, raw + NONCE_LEN, &n, (const unsigned char *)code, (int)code_len) != 1 ||
        EVP_EncryptFinal_ex(ctx, raw + NONCE_LEN + n, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, raw + NONCE_LEN + n + fin) != 1) {
        es_error_set(err, ES_EFATAL, "AES-256-GCM encryption failed");
        goto out;
    }
    size_t raw_len = NONCE_LEN + (size_t)(n + fin) + TAG_LEN;
    size_t need = strlen(ck->key_id) + 1 + 4 * ((raw_len + 2) / 3) + 1;
    if (out_len < need) {
        es_error_set(err, ES_EINVAL, "ciphertext buffer too small");
        goto out;
    }
    int k = snprintf(out, out_len, "%s:", ck->key_id);
    EVP_EncodeBlock((unsigned char *)out + k, raw, (int)raw_len);
    rc = ES_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

es_result es_code_decrypt(const es_codekey *ck, const char *instance_id, const char *user_id,
                          const char *enc, char *out, size_t out_len, es_error *err)
{
    const char *colon = strchr(enc, ':');
    if (!colon || (size_t)(colon - enc) != strlen(ck->key_id) ||
        strncmp(enc, ck->key_id, (size_t)(colon - enc)) != 0)
        return es_error_set(err, ES_EINVAL, "code was encrypted under another key");
    const char *b64 = colon + 1;
    size_t b64_len = strlen(b64);
    if (b64_len == 0 || b64_len % 4 || b64_len > 400)
        return es_error_set(err, ES_EINVAL, "malformed code ciphertext");
    unsigned char raw[304];
    int dec = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)b64_len);
    if (dec < 0)
        return es_error_set(err, ES_EINVAL, "malformed code ciphertext");
    size_t raw_len = (size_t)dec;
    if (b64_len >= 1 && b64[b64_len - 1] == '=') raw_len--; /* DecodeBlock counts padding */
    if (b64_len >= 2 && b64[b64_len - 2] == '=') raw_len--;
    if (raw_len < NONCE_LEN + TAG_LEN + 1)
        return es_error_set(err, ES_EINVAL, "malformed code ciphertext");
    size_t ct_len = raw_len - NONCE_LEN - TAG_LEN;
    if (ct_len + 1 > out_len)
        return es_error_set(err, ES_EINVAL, "code buffer too small");
    char aad[600];
    aad_of(instance_id, user_id, aad, sizeof aad);
    es_result rc = ES_EINVAL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0, fin = 0;
    if (!ctx)
        return es_error_set(err, ES_EFATAL, "EVP_CIPHER_CTX_new failed");
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, ck->key, raw) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(ctx, (unsigned char *)out, &n, raw + NONCE_LEN, (int)ct_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, raw + NONCE_LEN + ct_len) != 1 ||
        EVP_DecryptFinal_ex(ctx, (unsigned char *)out + n, &fin) != 1) {
        es_error_set(err, ES_EINVAL, "code ciphertext does not verify (altered, or for another user)");
        out[0] = '\0';
        goto out;
    }
    out[n + fin] = '\0';
    rc = ES_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

void es_session_token_hash(const char *token, size_t len, char hash[DOM_TOKEN_HASH_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char d[32];
    es_sha256(token, len, d);
    for (size_t i = 0; i < sizeof d; i++) {
        hash[2 * i] = hex[d[i] >> 4];
        hash[2 * i + 1] = hex[d[i] & 15];
    }
    hash[DOM_TOKEN_HASH_LEN] = '\0';
}

es_result es_session_token_new(char token[ES_SESSION_TOKEN_LEN + 1], char hash[DOM_TOKEN_HASH_LEN + 1],
                               es_error *err)
{
    unsigned char raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return es_error_set(err, ES_EFATAL, "RAND_bytes failed");
    if (es_b64url_encode(raw, sizeof raw, token, ES_SESSION_TOKEN_LEN + 1) != ES_SESSION_TOKEN_LEN)
        abort();
    explicit_bzero(raw, sizeof raw);
    es_session_token_hash(token, ES_SESSION_TOKEN_LEN, hash);
    return ES_OK;
}
