/*
 * tests/unit/test_jsonw.c - the JSON writer of the hot paths (infra/jsonw.h)
 * against jansson: the same text for the same strings, and the same
 * verdict on what is not UTF-8.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "infra/jsonw.h"

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
