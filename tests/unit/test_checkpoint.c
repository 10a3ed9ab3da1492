/*
 * tests/unit/test_checkpoint.c - verify's signed checkpoints
 * (infra/crypto/checkpoint.h): the canonical text, the signature over it,
 * the file form.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "infra/crypto/checkpoint.h"

static es_checkpoint sample(void)
{
    es_checkpoint cp;
    memset(&cp, 0, sizeof cp);
    cp.position = 1010000;
    for (int i = 0; i < ES_CHAIN_HASH_LEN; i++)
        cp.hash[i] = (unsigned char)(0xa0 + i);
    cp.verified_at_us = 1796572304829042;
    cp.full = false;
    cp.from_position = 1000000;
    cp.events = 10000;
    return cp;
}

static es_chain_key secret(unsigned char fill)
{
    unsigned char k[32];
    memset(k, fill, sizeof k);
    es_chain_key key;
    es_chain_key_init(&key, k, "test");
    return key;
}

Test(checkpoint, canonical_text_is_fixed)
{
    es_checkpoint cp = sample();
    es_chain_key k = secret(1);
    cr_assert(es_checkpoint_sign(&k, &cp));
    char text[ES_CHECKPOINT_TEXT_MAX];
    size_t n = es_checkpoint_canonical(&cp, text, sizeof text);
    char want[ES_CHECKPOINT_TEXT_MAX];
    snprintf(want, sizeof want,
             "factord verify checkpoint v1\n"
             "position 1010000\n"
             "hash a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf\n"
             "verified_at 1796572304829042\n"
             "key_id %s\n"
             "mode incremental\n"
             "from 1000000\n"
             "events 10000\n",
             k.key_id);
    cr_assert_str_eq(text, want);
    cr_assert_eq(n, strlen(want));
    /* Never an event's hash input: that has '{' after the 32 bytes of the
     * previous hash. */
    cr_assert_neq(text[32], '{');
    /* The signature is HMAC-SHA256(key, text). */
    es_chain_hasher *h = es_chain_hasher_new(&k);
    unsigned char mac[ES_CHAIN_HASH_LEN];
    es_chain_mac(h, text, n, mac);
    es_chain_hasher_free(h);
    cr_assert(memcmp(mac, cp.signature, sizeof mac) == 0);
}

Test(checkpoint, any_changed_field_breaks_the_signature)
{
    es_chain_key k = secret(1);
    es_checkpoint cp = sample();
    cr_assert(es_checkpoint_sign(&k, &cp));
    cr_assert_eq(es_checkpoint_check(&k, &cp), ES_CHECKPOINT_VALID);
    for (int field = 0; field < 7; field++) {
        es_checkpoint bad = cp;
        switch (field) {
        case 0: bad.position++; break;
        case 1: bad.hash[31] ^= 1; break;
        case 2: bad.verified_at_us--; break;
        case 3: bad.from_position = 999999; break;
        case 4: bad.events = 9999; break;
        case 5: bad.signature[0] ^= 0x80; break;
        case 6: bad.full = true; bad.from_position = 0; break;
        }
        cr_assert_eq(es_checkpoint_check(&k, &bad), ES_CHECKPOINT_BAD_SIGNATURE, "field %d", field);
    }
    /* Another key: its id differs, and so would the signature. */
    es_chain_key other = secret(2);
    cr_assert_eq(es_checkpoint_check(&other, &cp), ES_CHECKPOINT_OTHER_KEY);
    es_checkpoint relabelled = cp;
    memcpy(relabelled.key_id, other.key_id, sizeof relabelled.key_id);
    cr_assert_eq(es_checkpoint_check(&other, &relabelled), ES_CHECKPOINT_BAD_SIGNATURE);
    /* What no checkpoint holds. */
    es_checkpoint odd = cp;
    odd.position = 0;
    cr_assert_eq(es_checkpoint_check(&k, &odd), ES_CHECKPOINT_MALFORMED);
    odd = cp;
    snprintf(odd.key_id, sizeof odd.key_id, "ABCDEF01");
    cr_assert_eq(es_checkpoint_check(&k, &odd), ES_CHECKPOINT_MALFORMED);
    odd = cp;
    odd.full = true; /* full runs start at 0 */
    cr_assert_not(es_checkpoint_sign(&k, &odd));
}

Test(checkpoint, file_form_round_trips_strictly)
{
    es_chain_key k = secret(3);
    es_checkpoint cp = sample();
    cr_assert(es_checkpoint_sign(&k, &cp));
    char file[ES_CHECKPOINT_FILE_MAX];
    size_t n = es_checkpoint_format(&cp, file, sizeof file);
    cr_assert_gt(n, 0);
    cr_assert(strstr(file, "\nsignature "));
    es_checkpoint back;
    char why[200];
    cr_assert(es_checkpoint_parse(file, &back, why, sizeof why), "%s", why);
    cr_assert_eq(back.position, cp.position);
    cr_assert_eq(back.from_position, cp.from_position);
    cr_assert_eq(back.events, cp.events);
    cr_assert_eq(back.verified_at_us, cp.verified_at_us);
    cr_assert_eq(back.full, cp.full);
    cr_assert_str_eq(back.key_id, cp.key_id);
    cr_assert(memcmp(back.hash, cp.hash, sizeof cp.hash) == 0);
    cr_assert(memcmp(back.signature, cp.signature, sizeof cp.signature) == 0);
    cr_assert_eq(es_checkpoint_check(&k, &back), ES_CHECKPOINT_VALID);

    /* Variants that are not what format writes. */
    static const char *const from[] = {"position 1010000\n", "hash a0", "mode incremental\n", "events 10000\n",
                                       "factord verify checkpoint v1\n"};
    static const char *const to[] = {"position 01010000\n", "hash A0", "mode partial\n", "events 10000 \n",
                                     "factord verify checkpoint v2\n"};
    for (size_t i = 0; i < sizeof from / sizeof from[0]; i++) {
        char bad[ES_CHECKPOINT_FILE_MAX + 8];
        char *at = strstr(file, from[i]);
        cr_assert_not_null(at, "%s", from[i]);
        snprintf(bad, sizeof bad, "%.*s%s%s", (int)(at - file), file, to[i], at + strlen(from[i]));
        cr_assert_not(es_checkpoint_parse(bad, &back, why, sizeof why), "accepted: %s", bad);
    }
    char extra[ES_CHECKPOINT_FILE_MAX + 16];
    snprintf(extra, sizeof extra, "%sextra 1\n", file);
    cr_assert_not(es_checkpoint_parse(extra, &back, why, sizeof why));
    file[n - 1] = '\0'; /* no final newline */
    cr_assert_not(es_checkpoint_parse(file, &back, why, sizeof why));
    cr_assert_not(es_checkpoint_parse("", &back, why, sizeof why));
}
