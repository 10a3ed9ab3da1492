/*
 * tests/unit/test_jsonw.c - the JSON writer of the hot paths (infra/base/jsonw.h)
 * against jansson: the same text for the same strings, and the same
 * verdict on what is not UTF-8.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/jsonw.h"
#include "infra/components/projector.h"

/* What jansson writes for the string s (compact, default flags). */
static char *jansson_text(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    cr_assert_not_null(j, "jansson refuses %zu bytes", n);
    char *t = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    return t;
}

Test(jsonw, strings_are_written_as_jansson_writes_them)
{
    static const char *const cases[] = {
        "", "plain", "quote \" and backslash \\", "slash / stays", "tab\tnew\nline\rcr",
        "\b\f", "\x01\x1f control", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\x7f del",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        es_jw w = {0};
        cr_assert(es_jw_str(&w, cases[i], SIZE_MAX), "case %zu", i);
        char *want = jansson_text(cases[i], strlen(cases[i]));
        cr_assert_str_eq(w.p, want, "case %zu", i);
        cr_assert_eq(w.len, strlen(want));
        free(want);
        es_jw_free(&w);
    }
}

Test(jsonw, max_bounds_the_bytes_taken)
{
    es_jw w = {0};
    char buf[4] = {'a', 'b', 'c', 'd'}; /* no NUL */
    cr_assert(es_jw_str(&w, buf, 3));
    cr_assert_str_eq(w.p, "\"abc\"");
    es_jw_free(&w);
}

Test(jsonw, invalid_utf8_is_refused_like_jansson_and_writes_nothing)
{
    static const char *const bad[] = {
        "\x80", "a\xc3", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80" /* surrogate */,
        "\xf4\x90\x80\x80" /* > U+10FFFF */, "\xff", "ok\xe2\x82",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        es_jw w = {0};
        es_jw_raw(&w, "[", 1);
        cr_assert_not(es_jw_str(&w, bad[i], SIZE_MAX), "case %zu accepted", i);
        cr_assert_str_eq(w.p, "[", "case %zu wrote something", i);
        cr_assert_null(json_stringn(bad[i], strlen(bad[i])), "jansson accepts case %zu", i);
        es_jw_free(&w);
    }
}

Test(jsonw, a_document_parses_back_to_its_values)
{
    es_jw w = {0};
    es_jw_c(&w, '{');
    es_jw_key(&w, "s");
    cr_assert(es_jw_str(&w, "x\"y", SIZE_MAX));
    es_jw_c(&w, ',');
    es_jw_key(&w, "n");
    es_jw_i64(&w, INT64_MIN);
    es_jw_c(&w, ',');
    es_jw_key(&w, "b");
    es_jw_bool(&w, false);
    es_jw_c(&w, '}');
    json_error_t jerr;
    json_t *j = json_loads(w.p, 0, &jerr);
    cr_assert_not_null(j, "%s: %s", jerr.text, w.p);
    cr_assert_str_eq(json_string_value(json_object_get(j, "s")), "x\"y");
    cr_assert_eq(json_integer_value(json_object_get(j, "n")), INT64_MIN);
    cr_assert(json_is_false(json_object_get(j, "b")));
    json_decref(j);
    /* reset keeps the memory and empties the text */
    char *before = w.p;
    es_jw_reset(&w);
    cr_assert_eq(w.len, 0);
    cr_assert_str_eq(w.p, "");
    cr_assert_eq(w.p, before);
    es_jw_free(&w);
    es_jw_free(NULL);
}

/* es_success_reply writes the common reply (no code) without jansson; it
 * must stay byte for byte what the processor stores and repeats: the
 * envelope around json_dumps(dom_success_body(...), JSON_COMPACT). */
static char *reply_by_jansson(const dom_evt *e)
{
    json_t *b = dom_success_body(e, NULL);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    json_t *id = json_string(e->command_id);
    char *id_text = json_dumps(id, JSON_ENCODE_ANY);
    json_decref(id);
    size_t n = strlen(body) + strlen(id_text) + 64;
    char *out = malloc(n);
    snprintf(out, n, "{\"commandId\":%s,\"httpStatus\":200,\"body\":%s}", id_text, body);
    free(body);
    free(id_text);
    return out;
}

Test(jsonw, success_replies_match_the_stored_body_byte_for_byte)
{
    static const char *owners[] = {"org-1", "", "o\"q\\b/s", "tab\there\nnl", "\x01\x1f ctl", "Z\xc3\xbcrich \xe2\x82\xac",
                                   "\xf0\x9f\x94\x91 key", "x\x7f"};
    static const int64_t times[] = {0, 1, 1711533948581123, 1711533948000000, -1, 253402300799999999};
    static const int64_t seqs[] = {1, 2, 9223372036854775807};
    size_t cases = 0;
    for (size_t o = 0; o < sizeof owners / sizeof *owners; o++)
        for (size_t t = 0; t < sizeof times / sizeof *times; t++)
            for (size_t q = 0; q < sizeof seqs / sizeof *seqs; q++) {
                dom_evt e;
                memset(&e, 0, sizeof e);
                snprintf(e.command_id, sizeof e.command_id, "0189a7e2-7b6c-4d1e-9f00-aabbccddee%02zx", o);
                snprintf(e.resource_owner, sizeof e.resource_owner, "%s", owners[o]);
                e.created_at_us = times[t];
                e.sequence = seqs[q];
                char *fast = es_success_reply(&e, NULL), *ref = reply_by_jansson(&e);
                cr_assert_str_eq(fast, ref, "owner %zu, time %zu, sequence %zu", o, t, q);
                free(fast);
                free(ref);
                cases++;
            }
    cr_assert_eq(cases, 8 * 6 * 3);
}
