/*
 * infra/crypto/pii.c - sealing personal data with OpenSSL (see pii.h and
 * docs/pii.md).
 */
#include "infra/crypto/pii.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infra/base/util.h"

#define NONCE_LEN 12
#define TAG_LEN 16
#define PREFIX_LEN (sizeof DOM_PII_PREFIX - 1)
#define SEALED_RAW_MAX (NONCE_LEN + DOM_PII_RECORD_MAX + TAG_LEN)
/* associated data: a label and four length-prefixed ids at most */
#define AAD_MAX 640

_Static_assert(PREFIX_LEN + 4 * ((SEALED_RAW_MAX + 2) / 3) + 1 <= DOM_PII_SEALED_MAX,
               "the largest sealed record fits dom_evt.pii");

void es_pii_master_init(es_pii_master *m, const unsigned char key[ES_PII_KEY_LEN])
{
    unsigned char h[SHA256_DIGEST_LENGTH];
    memcpy(m->key, key, ES_PII_KEY_LEN);
    SHA256(key, ES_PII_KEY_LEN, h);
    snprintf(m->key_id, sizeof m->key_id, "%02x%02x%02x%02x", h[0], h[1], h[2], h[3]);
}

void es_pii_master_wipe(es_pii_master *m)
{
    if (m)
        OPENSSL_cleanse(m, sizeof *m);
}

void es_pii_key_wipe(es_pii_key *k)
{
    if (k)
        OPENSSL_cleanse(k, sizeof *k);
}

/* --- the master key --------------------------------------------------------- */

es_result es_pii_master_from_hex(const char *hex, es_pii_master *m, es_error *err)
{
    unsigned char key[ES_PII_KEY_LEN];
    es_result rc = es_key_from_hex(hex, "personal-data master key", key, err);
    if (rc == ES_OK)
        es_pii_master_init(m, key);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

static bool pii_state_path(const es_config *cfg, char *path, size_t len)
{
    const char *dir = cfg->state_dir && *cfg->state_dir ? cfg->state_dir : ".";
    return snprintf(path, len, "%s/pii.key", dir) < (int)len;
}

es_result es_pii_master_load(const es_config *cfg, bool dev_fallback, es_pii_master *m, bool *have,
                             es_error *err)
{
    unsigned char key[ES_PII_KEY_LEN];
    es_result rc;
    char path[4096];
    *have = false;
    memset(m, 0, sizeof *m);
    if (cfg->pii_key)
        rc = es_key_from_hex(cfg->pii_key, "FACTORD_PII_KEY", key, err);
    else if (cfg->pii_key_file)
        rc = es_key_from_file(cfg->pii_key_file, "FACTORD_PII_KEY_FILE", key, err);
    else if (dev_fallback && pii_state_path(cfg, path, sizeof path) && access(path, R_OK) == 0)
        rc = es_key_from_file(path, "development personal-data key", key, err);
    else
        return ES_OK;
    if (rc == ES_OK) {
        es_pii_master_init(m, key);
        *have = true;
    }
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

es_result es_pii_master_ensure_dev(es_config *cfg, bool *created, es_error *err)
{
    char path[4096], hex[2 * ES_PII_KEY_LEN + 2];
    unsigned char key[ES_PII_KEY_LEN];
    if (created)
        *created = false;
    if (cfg->pii_key || cfg->pii_key_file)
        return ES_OK;
    if (!pii_state_path(cfg, path, sizeof path))
        return es_error_set(err, ES_EINVAL, "FACTORD_STATE_DIR is too long");
    if (access(path, R_OK) != 0) {
        if (RAND_bytes(key, sizeof key) != 1)
            return es_error_set(err, ES_EFATAL, "no randomness for a development personal-data key");
        for (size_t i = 0; i < sizeof key; i++)
            snprintf(hex + 2 * i, 3, "%02x", key[i]);
        OPENSSL_cleanse(key, sizeof key);
        hex[2 * ES_PII_KEY_LEN] = '\n';
        hex[2 * ES_PII_KEY_LEN + 1] = '\0';
        bool ok = es_write_file_atomic(path, hex, 2 * ES_PII_KEY_LEN + 1, 0600);
        int werr = errno;
        OPENSSL_cleanse(hex, sizeof hex);
        if (!ok)
            return es_error_set(err, ES_EFATAL, "cannot write %.300s: %s", path, strerror(werr));
        if (created)
            *created = true;
    }
    cfg->pii_key_file = strdup(path);
    if (!cfg->pii_key_file)
        abort();
    return ES_OK;
}

/* --- associated data ------------------------------------------------------ */

typedef struct {
    unsigned char b[AAD_MAX];
    size_t n;
    bool bad;
} aad_buf;

static void aad_raw(aad_buf *a, const void *p, size_t n)
{
    if (a->bad || n > sizeof a->b - a->n) {
        a->bad = true;
        return;
    }
    memcpy(a->b + a->n, p, n);
    a->n += n;
}

/* A string as its length (4 bytes, big-endian) and its bytes: no two
 * different tuples of strings give the same bytes. */
static void aad_str(aad_buf *a, const char *s)
{
    size_t n = strlen(s);
    unsigned char l[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    aad_raw(a, l, sizeof l);
    aad_raw(a, s, n);
}

static void aad_u64(aad_buf *a, uint64_t v)
{
    unsigned char b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
    aad_raw(a, b, sizeof b);
}

static void aad_event(aad_buf *a, const dom_evt *evt)
{
    static const char label[] = "factord-pii-v1"; /* and its NUL */
    a->n = 0;
    a->bad = false;
    aad_raw(a, label, sizeof label);
    aad_str(a, evt->instance_id);
    aad_str(a, evt->aggregate_id);
    aad_str(a, dom_evt_type_name(evt->type));
    aad_u64(a, (uint64_t)evt->sequence);
}

static void aad_key(aad_buf *a, const char *instance_id, const char *user_id)
{
    static const char label[] = "factord-pii-key-v1";
    a->n = 0;
    a->bad = false;
    aad_raw(a, label, sizeof label);
    aad_str(a, instance_id);
    aad_str(a, user_id);
}

/* --- AES-256-GCM ---------------------------------------------------------- */

/* out = nonce | ciphertext | tag (pt_len + NONCE_LEN + TAG_LEN bytes). */
static es_result gcm_seal(const unsigned char key[ES_PII_KEY_LEN], const aad_buf *aad,
                          const unsigned char *pt, size_t pt_len, unsigned char *out, es_error *err)
{
    es_result rc = ES_EFATAL;
    int n = 0, fin = 0;
    if (aad->bad)
        return es_error_set(err, ES_EINVAL, "pii: ids too long");
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return es_error_set(err, ES_EFATAL, "EVP_CIPHER_CTX_new failed");
    if (RAND_bytes(out, NONCE_LEN) != 1) {
        es_error_set(err, ES_EFATAL, "RAND_bytes failed");
        goto out;
    }
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, aad->b, (int)aad->n) != 1 ||
        EVP_EncryptUpdate(ctx, out + NONCE_LEN, &n, pt, (int)pt_len) != 1 ||
        EVP_EncryptFinal_ex(ctx, out + NONCE_LEN + n, &fin) != 1 || (size_t)(n + fin) != pt_len ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + NONCE_LEN + pt_len) != 1) {
        es_error_set(err, ES_EFATAL, "AES-256-GCM encryption failed");
        goto out;
    }
    rc = ES_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* in = nonce | ciphertext | tag; the plaintext (in_len - NONCE_LEN -
 * TAG_LEN bytes) into pt. ES_EINVAL when it does not authenticate. */
static es_result gcm_open(const unsigned char key[ES_PII_KEY_LEN], const aad_buf *aad,
                          const unsigned char *in, size_t in_len, unsigned char *pt, es_error *err)
{
    es_result rc = ES_EINVAL;
    int n = 0, fin = 0;
    if (aad->bad)
        return es_error_set(err, ES_EINVAL, "pii: ids too long");
    if (in_len < NONCE_LEN + TAG_LEN)
        return es_error_set(err, ES_EINVAL, "pii: sealed value too short");
    size_t ct_len = in_len - NONCE_LEN - TAG_LEN;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return es_error_set(err, ES_EFATAL, "EVP_CIPHER_CTX_new failed");
    /* The tag is const for OpenSSL's purposes; its API takes void *. */
    unsigned char tag[TAG_LEN];
    memcpy(tag, in + NONCE_LEN + ct_len, TAG_LEN);
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &n, aad->b, (int)aad->n) != 1 ||
        EVP_DecryptUpdate(ctx, pt, &n, in + NONCE_LEN, (int)ct_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) != 1 ||
        EVP_DecryptFinal_ex(ctx, pt + n, &fin) != 1) {
        OPENSSL_cleanse(pt, ct_len);
        es_error_set(err, ES_EINVAL, "pii: sealed value does not authenticate "
                                     "(altered, moved to another event, or another key)");
        goto out;
    }
    rc = ES_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* --- data keys ------------------------------------------------------------ */

es_result es_pii_key_new(const es_pii_master *m, const char *instance_id, const char *user_id,
                         es_pii_key *dek, unsigned char wrapped[ES_PII_WRAPPED_LEN], es_error *err)
{
    aad_buf aad;
    if (RAND_bytes(dek->key, ES_PII_KEY_LEN) != 1)
        return es_error_set(err, ES_EFATAL, "RAND_bytes failed");
    aad_key(&aad, instance_id, user_id);
    es_result rc = gcm_seal(m->key, &aad, dek->key, ES_PII_KEY_LEN, wrapped, err);
    if (rc != ES_OK)
        es_pii_key_wipe(dek);
    return rc;
}

es_result es_pii_key_unwrap(const es_pii_master *m, const char *instance_id, const char *user_id,
                            const unsigned char *wrapped, size_t len, es_pii_key *dek, es_error *err)
{
    aad_buf aad;
    memset(dek, 0, sizeof *dek);
    if (len != ES_PII_WRAPPED_LEN)
        return es_error_set(err, ES_EINVAL, "pii: wrapped key of %zu bytes, not %d", len,
                            ES_PII_WRAPPED_LEN);
    aad_key(&aad, instance_id, user_id);
    es_result rc = gcm_open(m->key, &aad, wrapped, len, dek->key, err);
    if (rc == ES_EINVAL)
        es_error_set(err, ES_EINVAL, "pii: wrapped key does not unwrap (another master key "
                                     "than %s, another user's row, or altered)", m->key_id);
    return rc;
}

/* --- events ----------------------------------------------------------------- */

es_result es_pii_seal(const es_pii_key *dek, dom_evt *evt, es_error *err)
{
    unsigned char record[DOM_PII_RECORD_MAX], raw[SEALED_RAW_MAX];
    size_t len = 0;
    aad_buf aad;
    es_result rc = dom_evt_pii_pack(evt, record, sizeof record, &len, err);
    if (rc != ES_OK)
        goto out;
    aad_event(&aad, evt);
    if ((rc = gcm_seal(dek->key, &aad, record, len, raw, err)) != ES_OK)
        goto out;
    memcpy(evt->pii, DOM_PII_PREFIX, PREFIX_LEN);
    EVP_EncodeBlock((unsigned char *)evt->pii + PREFIX_LEN, raw, (int)(NONCE_LEN + len + TAG_LEN));
    evt->pii_state = DOM_PII_OPEN;
out:
    OPENSSL_cleanse(record, sizeof record);
    return rc;
}

es_result es_pii_open(const es_pii_key *dek, dom_evt *evt, es_error *err)
{
    unsigned char record[DOM_PII_RECORD_MAX], raw[SEALED_RAW_MAX + 3];
    aad_buf aad;
    es_result rc = ES_EINVAL;
    if (evt->pii[0] == '\0')
        return ES_OK; /* plain: nothing to open */
    dom_evt_pii_clear(evt);
    size_t n = strnlen(evt->pii, sizeof evt->pii);
    if (n < PREFIX_LEN || memcmp(evt->pii, DOM_PII_PREFIX, PREFIX_LEN) != 0)
        return es_error_set(err, ES_EINVAL, "pii: sealed value without the prefix " DOM_PII_PREFIX);
    const char *b64 = evt->pii + PREFIX_LEN;
    size_t b64_len = n - PREFIX_LEN;
    if (b64_len == 0 || b64_len % 4 != 0 || b64_len / 4 * 3 > sizeof raw)
        return es_error_set(err, ES_EINVAL, "pii: malformed sealed value");
    int dec = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)b64_len);
    if (dec < 0)
        return es_error_set(err, ES_EINVAL, "pii: malformed sealed value");
    size_t raw_len = (size_t)dec; /* EVP_DecodeBlock counts the padding */
    if (b64[b64_len - 1] == '=')
        raw_len--;
    if (b64[b64_len - 2] == '=')
        raw_len--;
    if (raw_len < NONCE_LEN + TAG_LEN + DOM_PII_PAD || raw_len > SEALED_RAW_MAX)
        return es_error_set(err, ES_EINVAL, "pii: sealed value of the wrong length");
    aad_event(&aad, evt);
    size_t len = raw_len - NONCE_LEN - TAG_LEN;
    if ((rc = gcm_open(dek->key, &aad, raw, raw_len, record, err)) != ES_OK)
        goto out;
    if ((rc = dom_evt_pii_unpack(evt, record, len, err)) != ES_OK)
        goto out;
    evt->pii_state = DOM_PII_OPEN;
out:
    OPENSSL_cleanse(record, sizeof record);
    return rc;
}

void es_pii_mark_erased(dom_evt *evt)
{
    if (evt->pii[0] == '\0')
        return;
    dom_evt_pii_clear(evt);
    evt->pii_state = DOM_PII_ERASED;
}
