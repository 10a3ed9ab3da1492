/*
 * infra/crypto/checkpoint.c - the verifier's signed checkpoints
 * (checkpoint.h): canonical text, HMAC signature, file form.
 */
#include "infra/crypto/checkpoint.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "infra/base/util.h"

#define CHECKPOINT_MAGIC "factord verify checkpoint v1\n"

static bool checkpoint_key_id_ok(const char *id)
{
    if (strlen(id) != 8)
        return false;
    for (const char *c = id; *c; c++)
        if (es_hex_value(*c) < 0 || (*c >= 'A' && *c <= 'F'))
            return false;
    return true;
}

size_t es_checkpoint_canonical(const es_checkpoint *cp, char *out, size_t cap)
{
    char hex[2 * ES_CHAIN_HASH_LEN + 1];
    if (cp->position < 1 || cp->from_position < 0 || cp->events < 0 || cp->verified_at_us < 0 ||
        !checkpoint_key_id_ok(cp->key_id) || (cp->full && cp->from_position != 0))
        return 0;
    es_chain_hex(cp->hash, sizeof cp->hash, hex);
    int n = snprintf(out, cap,
                     CHECKPOINT_MAGIC "position %" PRId64 "\nhash %s\nverified_at %" PRId64
                                      "\nkey_id %s\nmode %s\nfrom %" PRId64 "\nevents %" PRId64 "\n",
                     cp->position, hex, cp->verified_at_us, cp->key_id, cp->full ? "full" : "incremental",
                     cp->from_position, cp->events);
    if (n < 0 || (size_t)n >= cap)
        return 0;
    return (size_t)n;
}

/* The signature cp's canonical text has under k; false when cp cannot be
 * encoded. */
static bool checkpoint_mac(const es_chain_key *k, const es_checkpoint *cp, unsigned char out[ES_CHAIN_HASH_LEN])
{
    char text[ES_CHECKPOINT_TEXT_MAX];
    size_t n = es_checkpoint_canonical(cp, text, sizeof text);
    if (!n)
        return false;
    es_chain_hasher *h = es_chain_hasher_new(k);
    es_chain_mac(h, text, n, out);
    es_chain_hasher_free(h);
    return true;
}

bool es_checkpoint_sign(const es_chain_key *k, es_checkpoint *cp)
{
    snprintf(cp->key_id, sizeof cp->key_id, "%s", k->key_id);
    return checkpoint_mac(k, cp, cp->signature);
}

es_checkpoint_status es_checkpoint_check(const es_chain_key *k, const es_checkpoint *cp)
{
    unsigned char want[ES_CHAIN_HASH_LEN];
    if (!checkpoint_mac(k, cp, want))
        return ES_CHECKPOINT_MALFORMED;
    if (strcmp(cp->key_id, k->key_id) != 0)
        return ES_CHECKPOINT_OTHER_KEY;
    if (CRYPTO_memcmp(want, cp->signature, sizeof want) != 0)
        return ES_CHECKPOINT_BAD_SIGNATURE;
    return ES_CHECKPOINT_VALID;
}

const char *es_checkpoint_status_text(es_checkpoint_status s)
{
    switch (s) {
    case ES_CHECKPOINT_VALID:
        return "valid";
    case ES_CHECKPOINT_OTHER_KEY:
        return "signed with another key";
    case ES_CHECKPOINT_BAD_SIGNATURE:
        return "its signature does not verify: forged or edited";
    case ES_CHECKPOINT_MALFORMED:
        return "malformed";
    }
    return "?";
}

size_t es_checkpoint_format(const es_checkpoint *cp, char *out, size_t cap)
{
    char sig[2 * ES_CHAIN_HASH_LEN + 1];
    size_t n = es_checkpoint_canonical(cp, out, cap);
    if (!n)
        return 0;
    es_chain_hex(cp->signature, sizeof cp->signature, sig);
    int m = snprintf(out + n, cap - n, "signature %s\n", sig);
    if (m < 0 || (size_t)m >= cap - n)
        return 0;
    return n + (size_t)m;
}

/* The value after "name " on the line starting at *p, into val (cap bytes);
 * *p moves past the line. */
static bool checkpoint_field(const char **p, const char *name, char *val, size_t cap)
{
    size_t nl = strlen(name);
    if (strncmp(*p, name, nl) != 0 || (*p)[nl] != ' ')
        return false;
    const char *v = *p + nl + 1, *end = strchr(v, '\n');
    if (!end || (size_t)(end - v) >= cap)
        return false;
    memcpy(val, v, (size_t)(end - v));
    val[end - v] = '\0';
    *p = end + 1;
    return true;
}

bool es_checkpoint_parse(const char *text, es_checkpoint *cp, char *why, size_t why_len)
{
    char pos[24], hash[80], at[24], key_id[16], mode[16], from[24], events[24], sig[80];
    const char *p = text;
    memset(cp, 0, sizeof *cp);
    if (strncmp(p, CHECKPOINT_MAGIC, strlen(CHECKPOINT_MAGIC)) != 0) {
        snprintf(why, why_len, "not a factord verify checkpoint (its first line is not \"%.*s\")",
                 (int)strlen(CHECKPOINT_MAGIC) - 1, CHECKPOINT_MAGIC);
        return false;
    }
    p += strlen(CHECKPOINT_MAGIC);
    if (!checkpoint_field(&p, "position", pos, sizeof pos) || !checkpoint_field(&p, "hash", hash, sizeof hash) ||
        !checkpoint_field(&p, "verified_at", at, sizeof at) ||
        !checkpoint_field(&p, "key_id", key_id, sizeof key_id) || !checkpoint_field(&p, "mode", mode, sizeof mode) ||
        !checkpoint_field(&p, "from", from, sizeof from) || !checkpoint_field(&p, "events", events, sizeof events) ||
        !checkpoint_field(&p, "signature", sig, sizeof sig) || *p) {
        snprintf(why, why_len, "the lines are not position, hash, verified_at, key_id, mode, from, events, "
                               "signature, each once, in this order");
        return false;
    }
    if (strlen(key_id) < sizeof cp->key_id)
        memcpy(cp->key_id, key_id, strlen(key_id) + 1);
    cp->full = strcmp(mode, "full") == 0;
    if (!es_parse_i64(pos, &cp->position) || !es_parse_i64(at, &cp->verified_at_us) ||
        !es_parse_i64(from, &cp->from_position) || !es_parse_i64(events, &cp->events) ||
        !es_chain_unhex(hash, cp->hash, sizeof cp->hash) || !es_chain_unhex(sig, cp->signature, sizeof cp->signature) ||
        (!cp->full && strcmp(mode, "incremental") != 0)) {
        snprintf(why, why_len, "a value is malformed");
        return false;
    }
    /* Only the canonical spelling (no leading zeros, lowercase hex): the
     * text must be what es_checkpoint_format writes. */
    char again[ES_CHECKPOINT_FILE_MAX];
    if (!es_checkpoint_format(cp, again, sizeof again) || strcmp(again, text) != 0) {
        snprintf(why, why_len, "not in canonical form (values out of range, leading zeros or uppercase hex)");
        return false;
    }
    return true;
}
