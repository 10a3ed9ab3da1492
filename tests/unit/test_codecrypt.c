/*
 * tests/unit/test_codecrypt.c - phone-code generation and AES-256-GCM.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "infra/crypto/codecrypt.h"

static es_codekey key_of(unsigned char fill)
{
    unsigned char k[32];
    memset(k, fill, sizeof k);
    es_codekey ck;
    es_codekey_init(&ck, k);
    return ck;
}

Test(codecrypt, generates_digits_of_the_asked_length)
{
    char code[16];
    int seen[10] = {0};
    for (int round = 0; round < 200; round++) {
        cr_assert_eq(es_code_generate(code, sizeof code, 6, NULL), ES_OK);
        cr_assert_eq(strlen(code), 6);
        for (int i = 0; i < 6; i++) {
            cr_assert(code[i] >= '0' && code[i] <= '9');
            seen[code[i] - '0']++;
        }
    }
    for (int d = 0; d < 10; d++) /* 1200 digits: every digit shows up */
        cr_assert_gt(seen[d], 40, "digit %d seen %d times", d, seen[d]);
    cr_assert_eq(es_code_generate(code, 6, 6, NULL), ES_EINVAL);
}

Test(codecrypt, round_trip_and_fresh_nonce)
{
    es_codekey ck = key_of(7);
    char a[256], b[256], plain[32];
    cr_assert_eq(es_code_encrypt(&ck, "inst", "user-1", "123456", a, sizeof a, NULL), ES_OK);
    cr_assert_eq(es_code_encrypt(&ck, "inst", "user-1", "123456", b, sizeof b, NULL), ES_OK);
    cr_assert_str_neq(a, b, "each encryption uses a new nonce");
    cr_assert_null(strstr(a, "123456"));
    cr_assert_eq(strncmp(a, ck.key_id, 8), 0);
    cr_assert_eq(es_code_decrypt(&ck, "inst", "user-1", a, plain, sizeof plain, NULL), ES_OK);
    cr_assert_str_eq(plain, "123456");
}

Test(codecrypt, refuses_other_user_other_key_and_tampering)
{
    es_codekey ck = key_of(7), other = key_of(8);
    char enc[256], plain[32];
    es_error err = {0};
    cr_assert_eq(es_code_encrypt(&ck, "inst", "user-1", "654321", enc, sizeof enc, NULL), ES_OK);
    cr_assert_eq(es_code_decrypt(&ck, "inst", "user-2", enc, plain, sizeof plain, &err), ES_EINVAL);
    cr_assert_eq(es_code_decrypt(&ck, "other", "user-1", enc, plain, sizeof plain, &err), ES_EINVAL);
    cr_assert_eq(es_code_decrypt(&other, "inst", "user-1", enc, plain, sizeof plain, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "another key"));
    /* flip one base64 character of the ciphertext body */
    size_t at = strlen(enc) - 6;
    enc[at] = enc[at] == 'A' ? 'B' : 'A';
    cr_assert_eq(es_code_decrypt(&ck, "inst", "user-1", enc, plain, sizeof plain, &err), ES_EINVAL);
    cr_assert_eq(es_code_decrypt(&ck, "inst", "user-1", "garbage", plain, sizeof plain, &err), ES_EINVAL);
    cr_assert_eq(es_code_decrypt(&ck, "inst", "user-1", "", plain, sizeof plain, &err), ES_EINVAL);
}

Test(codecrypt, sha256_known_vector)
{
    unsigned char h[32];
    es_sha256("abc", 3, h);
    static const unsigned char want[4] = {0xba, 0x78, 0x16, 0xbf};
    cr_assert_eq(memcmp(h, want, 4), 0);
}
