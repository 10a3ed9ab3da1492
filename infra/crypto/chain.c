/*
 * infra/crypto/chain.c - the event log's hash chain (chain.h): keys, canonical
 * bytes, HMAC-SHA256.
 *
 * HMAC is computed by hand over two pre-keyed SHA-256 contexts (RFC 2104:
 * H(K^opad || H(K^ipad || m))): copying a context is far cheaper than
 * OpenSSL 3's one-shot HMAC(), which fetches the digest and schedules the
 * key on every call, and the verifier hashes every event of the log.
 */
#include "infra/base/util.h"
#include "infra/crypto/chain.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "infra/crypto/codecrypt.h"

static const char chain_hex_digits[] = "0123456789abcdef";

void es_chain_hex(const unsigned char *bytes, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = chain_hex_digits[bytes[i] >> 4];
        out[2 * i + 1] = chain_hex_digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}


bool es_chain_unhex(const char *hex, unsigned char *out, size_t n)
{
    if (strlen(hex) != 2 * n)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = es_hex_value(hex[2 * i]), lo = es_hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* --- keys ------------------------------------------------------------------- */

static void chain_key_id(es_chain_key *k)
{
    unsigned char digest[32];
    es_sha256(k->key, k->len, digest);
    es_chain_hex(digest, 4, k->key_id);
}

void es_chain_key_public(es_chain_key *k)
{
    memset(k, 0, sizeof *k);
    k->len = strlen(ES_CHAIN_PUBLIC_KEY);
    memcpy(k->key, ES_CHAIN_PUBLIC_KEY, k->len);
    k->is_public = true;
    snprintf(k->source, sizeof k->source, "the public key \"%s\" (no FACTORD_CHAIN_KEY)",
             ES_CHAIN_PUBLIC_KEY);
    chain_key_id(k);
}

void es_chain_key_init(es_chain_key *k, const unsigned char key[32], const char *source)
{
    memset(k, 0, sizeof *k);
    memcpy(k->key, key, 32);
    k->len = 32;
    snprintf(k->source, sizeof k->source, "%s", source ? source : "a key");
    chain_key_id(k);
}

void es_chain_key_wipe(es_chain_key *k)
{
    if (k)
        explicit_bzero(k, sizeof *k);
}

static bool chain_state_path(const es_config *cfg, char *path, size_t len)
{
    const char *dir = cfg->state_dir && *cfg->state_dir ? cfg->state_dir : ".";
    return snprintf(path, len, "%s/chain.key", dir) < (int)len;
}

es_result es_chain_key_load(const es_config *cfg, bool dev_fallback, es_chain_key *k,
                            es_error *err)
{
    unsigned char key[32];
    es_result rc = ES_OK;
    char source[160];
    if (cfg->chain_key) {
        rc = es_key_from_hex(cfg->chain_key, "FACTORD_CHAIN_KEY", key, err);
        snprintf(source, sizeof source, "FACTORD_CHAIN_KEY");
    } else if (cfg->chain_key_file) {
        rc = es_key_from_file(cfg->chain_key_file, "FACTORD_CHAIN_KEY_FILE", key, err);
        snprintf(source, sizeof source, "FACTORD_CHAIN_KEY_FILE %.120s", cfg->chain_key_file);
    } else {
        char path[4096];
        if (!dev_fallback || !chain_state_path(cfg, path, sizeof path) || access(path, R_OK) != 0) {
            es_chain_key_public(k);
            return ES_OK;
        }
        rc = es_key_from_file(path, "development chain key", key, err);
        snprintf(source, sizeof source, "the development key %.120s", path);
    }
    if (rc == ES_OK)
        es_chain_key_init(k, key, source);
    explicit_bzero(key, sizeof key);
    return rc;
}

es_result es_chain_key_ensure_dev(es_config *cfg, bool *created, es_error *err)
{
    char path[4096], hex[66];
    unsigned char key[32];
    if (created)
        *created = false;
    if (cfg->chain_key || cfg->chain_key_file)
        return ES_OK;
    if (!chain_state_path(cfg, path, sizeof path))
        return es_error_set(err, ES_EINVAL, "FACTORD_STATE_DIR is too long");
    if (access(path, R_OK) != 0) {
        if (RAND_bytes(key, sizeof key) != 1)
            return es_error_set(err, ES_EFATAL, "no randomness for a development chain key");
        es_chain_hex(key, sizeof key, hex);
        explicit_bzero(key, sizeof key);
        hex[64] = '\n';
        hex[65] = '\0';
        bool ok = es_write_file_atomic(path, hex, 65, 0600);
        int werr = errno;
        explicit_bzero(hex, sizeof hex);
        if (!ok)
            return es_error_set(err, ES_EFATAL, "cannot write %.300s: %s", path, strerror(werr));
        if (created)
            *created = true;
    }
    cfg->chain_key_file = strdup(path);
    if (!cfg->chain_key_file)
        abort();
    return ES_OK;
}

/* --- canonical bytes ----------------------------------------------------------- */

/* The canonical text is written directly, byte for byte what
 * json_dumps(dom_evt_to_json(evt), JSON_COMPACT | JSON_SORT_KEYS) gives
 * (members in strcmp order, jansson's string escapes), without building
 * and sorting a jansson object per event: that took ~20 us an event, this
 * about one. test_audit compares the two on many events. */

typedef struct {
    char *p;
    size_t len, cap;
    bool bad;            /* invalid UTF-8 met */
} chain_buf;

/* Room for more bytes and the NUL. */
static void cb_reserve(chain_buf *b, size_t more) { b->p = es_grow(b->p, &b->cap, b->len + more + 1, 1); }

static void cb_putn(chain_buf *b, const char *s, size_t n)
{
    cb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void cb_puts(chain_buf *b, const char *s) { cb_putn(b, s, strlen(s)); }

/* Length of the UTF-8 sequence at s (n bytes left) as jansson accepts it
 * (no overlong forms, no surrogates, at most U+10FFFF), or 0. */
static size_t cb_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80)
        return 1;
    if (c < 0xC2)
        return 0;
    if (c < 0xE0) {
        len = 2;
        cp = c & 0x1F;
    } else if (c < 0xF0) {
        len = 3;
        cp = c & 0x0F;
    } else if (c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* A JSON string as jansson writes it: \" \\ \b \f \n \r \t, other
 * control characters as \u00XX, everything else (UTF-8) as is. */
static void cb_str(chain_buf *b, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    const unsigned char *u = (const unsigned char *)s;
    cb_reserve(b, n + 2);
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            size_t l = cb_utf8_len(u + i, n - i);
            if (!l) {
                b->bad = true;
                return;
            }
            cb_putn(b, s + i, l);
            i += l;
            continue;
        }
        char esc[8];
        switch (c) {
        case '"': cb_puts(b, "\\\""); break;
        case '\\': cb_puts(b, "\\\\"); break;
        case '\b': cb_puts(b, "\\b"); break;
        case '\f': cb_puts(b, "\\f"); break;
        case '\n': cb_puts(b, "\\n"); break;
        case '\r': cb_puts(b, "\\r"); break;
        case '\t': cb_puts(b, "\\t"); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04X", (unsigned)c);
            cb_puts(b, esc);
        }
        i++;
    }
    cb_putn(b, "\"", 1);
}

#define CB_FIELD(f) (f), sizeof(f)

/* A member: ,"key": (no comma before the first). */
static void cb_key(chain_buf *b, const char *key, bool *first)
{
    if (!*first)
        cb_putn(b, ",", 1);
    *first = false;
    cb_putn(b, "\"", 1);
    cb_puts(b, key);
    cb_putn(b, "\":", 2);
}

static void cb_opt_str(chain_buf *b, const char *key, const char *v, size_t max, bool *first)
{
    if (v[0] == '\0')
        return;
    cb_key(b, key, first);
    cb_str(b, v, max);
}

static void cb_time(chain_buf *b, int64_t us)
{
    char ts[40];
    dom_time_format(us, ts, sizeof ts);
    cb_str(b, ts, sizeof ts);
}

static void cb_i64_str(chain_buf *b, int64_t v)
{
    char d[24];
    snprintf(d, sizeof d, "\"%" PRId64 "\"", v);
    cb_puts(b, d);
}

/* dom_evt_payload_to_json's members, sorted; a sealed event's "pii"
 * member stands for its PII fields (docs/pii.md). */
static void cb_payload(chain_buf *b, const dom_evt *evt)
{
    const dom_import *h = &evt->human;
    bool first = true;
    bool sealed = evt->pii[0] != '\0' && dom_evt_type_has_pii(evt->type);
    cb_putn(b, "{", 1);
    switch (evt->type) {
    case DOM_EVT_HUMAN_ADDED:
        if (!sealed) {
            cb_opt_str(b, "displayName", CB_FIELD(h->display_name), &first);
            cb_opt_str(b, "email", CB_FIELD(h->email), &first);
            cb_opt_str(b, "firstName", CB_FIELD(h->first_name), &first);
            cb_opt_str(b, "gender", CB_FIELD(h->gender), &first);
        }
        cb_key(b, "isEmailVerified", &first);
        cb_puts(b, h->is_email_verified ? "true" : "false");
        if (!sealed) {
            cb_opt_str(b, "lastName", CB_FIELD(h->last_name), &first);
            cb_opt_str(b, "nickName", CB_FIELD(h->nick_name), &first);
            cb_opt_str(b, "phone", CB_FIELD(h->phone), &first);
        } else {
            cb_opt_str(b, "pii", CB_FIELD(evt->pii), &first);
        }
        cb_opt_str(b, "preferredLanguage", CB_FIELD(h->preferred_language), &first);
        if (!sealed)
            cb_opt_str(b, "userName", CB_FIELD(h->user_name), &first);
        break;
    case DOM_EVT_PHONE_CHANGED:
        if (!sealed) {
            cb_key(b, "phone", &first);
            cb_str(b, CB_FIELD(evt->phone));
        } else {
            cb_opt_str(b, "pii", CB_FIELD(evt->pii), &first);
        }
        break;
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED:
        cb_key(b, "codeSequence", &first);
        cb_i64_str(b, evt->delivery.code_sequence);
        cb_opt_str(b, "messageId", CB_FIELD(evt->delivery.message_id), &first);
        if (sealed)
            cb_opt_str(b, "pii", CB_FIELD(evt->pii), &first);
        cb_opt_str(b, "provider", CB_FIELD(evt->delivery.provider), &first);
        if (!sealed)
            cb_opt_str(b, "reason", CB_FIELD(evt->delivery.reason), &first);
        break;
    case DOM_EVT_PHONE_CODE_ADDED:
    case DOM_EVT_OTP_SMS_CODE_ADDED:
        cb_key(b, "code", &first);
        cb_str(b, CB_FIELD(evt->code_enc));
        if (evt->code_returned) {
            cb_key(b, "codeReturned", &first);
            cb_puts(b, "true");
        }
        if (evt->code_expires_at_us != 0) {
            cb_key(b, "expiresAt", &first);
            cb_time(b, evt->code_expires_at_us);
        }
        if (evt->type == DOM_EVT_OTP_SMS_CODE_ADDED)
            cb_opt_str(b, "sessionId", CB_FIELD(evt->session_id), &first);
        break;
    case DOM_EVT_OTP_SMS_CHECK_SUCCEEDED:
        cb_opt_str(b, "sessionId", CB_FIELD(evt->session_id), &first);
        break;
    case DOM_EVT_SESSION_ADDED:
    case DOM_EVT_SESSION_TOKEN_SET:
        cb_key(b, "sessionId", &first);
        cb_str(b, CB_FIELD(evt->session_id));
        cb_key(b, "tokenHash", &first);
        cb_str(b, CB_FIELD(evt->token_hash));
        break;
    case DOM_EVT_REMOVED:
        if (!sealed) {
            cb_key(b, "userName", &first);
            cb_str(b, CB_FIELD(evt->user_name));
        } else {
            cb_opt_str(b, "pii", CB_FIELD(evt->pii), &first);
        }
        break;
    default:
        break;
    }
    cb_putn(b, "}", 1);
}

/* The canonical text; *pos_off = offset of the position's digits. */
static char *chain_canonical(const dom_evt *evt, size_t *pos_off, size_t *pos_len)
{
    chain_buf b = {0};
    bool first = true;
    char cmd[DOM_UUID_LEN + 1];
    /* The store keeps command ids as uuid and reads them back lowercase. */
    size_t n = strnlen(evt->command_id, sizeof evt->command_id);
    for (size_t i = 0; i < n && i < DOM_UUID_LEN; i++) {
        char c = evt->command_id[i];
        cmd[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
    }
    cmd[n < DOM_UUID_LEN ? n : DOM_UUID_LEN] = '\0';
    const char *type = dom_evt_type_name(evt->type);

    cb_putn(&b, "{", 1);
    cb_key(&b, "aggregateId", &first);
    cb_str(&b, CB_FIELD(evt->aggregate_id));
    cb_key(&b, "aggregateType", &first);
    cb_str(&b, DOM_AGGREGATE_USER, sizeof DOM_AGGREGATE_USER);
    cb_key(&b, "commandId", &first);
    cb_str(&b, cmd, sizeof cmd);
    cb_key(&b, "createdAt", &first);
    cb_time(&b, evt->created_at_us);
    cb_key(&b, "creator", &first);
    cb_str(&b, CB_FIELD(evt->creator));
    cb_key(&b, "instanceId", &first);
    cb_str(&b, CB_FIELD(evt->instance_id));
    cb_key(&b, "lastOfCommand", &first);
    cb_puts(&b, evt->last_of_command ? "true" : "false");
    cb_key(&b, "payload", &first);
    cb_payload(&b, evt);
    cb_key(&b, "position", &first);
    size_t before = b.len;
    cb_i64_str(&b, evt->position);
    if (pos_off) {
        *pos_off = before + 1;           /* after the opening quote */
        *pos_len = b.len - before - 2;   /* the digits */
    }
    cb_key(&b, "resourceOwner", &first);
    cb_str(&b, CB_FIELD(evt->resource_owner));
    cb_key(&b, "revision", &first);
    char rev[24];
    snprintf(rev, sizeof rev, "%d", evt->revision);
    cb_puts(&b, rev);
    cb_key(&b, "sequence", &first);
    cb_i64_str(&b, evt->sequence);
    cb_key(&b, "type", &first);
    cb_str(&b, type ? type : "", 64);
    cb_putn(&b, "}", 1);
    if (b.bad) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *es_chain_canonical(const dom_evt *evt)
{
    return chain_canonical(evt, NULL, NULL);
}

es_result es_chain_canon_prepare(const dom_evt *evt, es_chain_canon *c, es_error *err)
{
    size_t off = 0, len = 0;
    memset(c, 0, sizeof *c);
    c->text = chain_canonical(evt, &off, &len);
    if (!c->text)
        return es_error_set(err, ES_EINVAL, "chain: an event holds invalid UTF-8");
    c->head_len = off;
    c->tail_off = off + len;
    return ES_OK;
}

void es_chain_canon_clear(es_chain_canon *c)
{
    if (!c)
        return;
    free(c->text);
    memset(c, 0, sizeof *c);
}

/* --- HMAC ---------------------------------------------------------------------- */

struct es_chain_hasher {
    EVP_MD_CTX *inner, *outer, *tmp;
};

es_chain_hasher *es_chain_hasher_new(const es_chain_key *k)
{
    unsigned char ipad[64], opad[64], key[64] = {0};
    es_chain_hasher *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    /* Keys are at most 32 bytes: no pre-hashing (RFC 2104 needs it above 64). */
    memcpy(key, k->key, k->len);
    for (int i = 0; i < 64; i++) {
        ipad[i] = (unsigned char)(key[i] ^ 0x36);
        opad[i] = (unsigned char)(key[i] ^ 0x5c);
    }
    h->inner = EVP_MD_CTX_new();
    h->outer = EVP_MD_CTX_new();
    h->tmp = EVP_MD_CTX_new();
    if (!h->inner || !h->outer || !h->tmp ||
        EVP_DigestInit_ex(h->inner, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(h->inner, ipad, sizeof ipad) != 1 ||
        EVP_DigestInit_ex(h->outer, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(h->outer, opad, sizeof opad) != 1)
        abort();
    explicit_bzero(ipad, sizeof ipad);
    explicit_bzero(opad, sizeof opad);
    explicit_bzero(key, sizeof key);
    return h;
}

void es_chain_hasher_free(es_chain_hasher *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->inner);
    EVP_MD_CTX_free(h->outer);
    EVP_MD_CTX_free(h->tmp);
    free(h);
}

typedef struct {
    const void *p;
    size_t n;
} chain_piece;

static void chain_hmac(es_chain_hasher *h, const chain_piece *pieces, size_t n,
                       unsigned char out[ES_CHAIN_HASH_LEN])
{
    unsigned char ih[32];
    unsigned int len = 0;
    if (EVP_MD_CTX_copy_ex(h->tmp, h->inner) != 1)
        abort();
    for (size_t i = 0; i < n; i++)
        if (pieces[i].n && EVP_DigestUpdate(h->tmp, pieces[i].p, pieces[i].n) != 1)
            abort();
    if (EVP_DigestFinal_ex(h->tmp, ih, &len) != 1 || EVP_MD_CTX_copy_ex(h->tmp, h->outer) != 1 ||
        EVP_DigestUpdate(h->tmp, ih, sizeof ih) != 1 ||
        EVP_DigestFinal_ex(h->tmp, out, &len) != 1)
        abort();
}

void es_chain_hash(es_chain_hasher *h, const unsigned char prev[ES_CHAIN_HASH_LEN],
                   const void *data, size_t len, unsigned char out[ES_CHAIN_HASH_LEN])
{
    chain_piece pieces[] = {{prev, ES_CHAIN_HASH_LEN}, {data, len}};
    chain_hmac(h, pieces, 2, out);
}

void es_chain_mac(es_chain_hasher *h, const void *data, size_t len, unsigned char out[ES_CHAIN_HASH_LEN])
{
    chain_piece pieces[] = {{data, len}};
    chain_hmac(h, pieces, 1, out);
}

void es_chain_hash_canon(es_chain_hasher *h, const unsigned char prev[ES_CHAIN_HASH_LEN],
                         const es_chain_canon *c, int64_t pos, unsigned char out[ES_CHAIN_HASH_LEN])
{
    char digits[24];
    int nd = snprintf(digits, sizeof digits, "%" PRId64, pos);
    chain_piece pieces[] = {{prev, ES_CHAIN_HASH_LEN},
                            {c->text, c->head_len},
                            {digits, (size_t)nd},
                            {c->text + c->tail_off, strlen(c->text + c->tail_off)}};
    chain_hmac(h, pieces, 4, out);
}
