/*
 * infra/base/jsonw.c - writing JSON text straight into a growing buffer (see
 * jsonw.h).
 */
#include "infra/base/jsonw.h"
#include "infra/base/util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for more bytes and the NUL. */
static void reserve(es_jw *w, size_t more) { w->p = es_grow(w->p, &w->cap, w->len + more + 1, 1); }

void es_jw_reset(es_jw *w)
{
    w->len = 0;
    if (w->p)
        w->p[0] = '\0';
}

void es_jw_free(es_jw *w)
{
    if (!w)
        return;
    free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
}

void es_jw_raw(es_jw *w, const char *s, size_t n)
{
    reserve(w, n);
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

void es_jw_c(es_jw *w, char c) { es_jw_raw(w, &c, 1); }

void es_jw_key(es_jw *w, const char *key)
{
    size_t n = strlen(key);
    reserve(w, n + 3);
    w->p[w->len++] = '"';
    memcpy(w->p + w->len, key, n);
    w->len += n;
    w->p[w->len++] = '"';
    w->p[w->len++] = ':';
    w->p[w->len] = '\0';
}

bool es_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

bool es_jw_str(es_jw *w, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (!es_utf8_valid(s, n))
        return false;
    reserve(w, n + 2);
    w->p[w->len++] = '"';
    size_t run = 0; /* bytes copied as they are, pending */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        if (run) {
            es_jw_raw(w, s + i - run, run);
            run = 0;
        }
        char esc[8];
        switch (c) {
        case '"': es_jw_raw(w, "\\\"", 2); break;
        case '\\': es_jw_raw(w, "\\\\", 2); break;
        case '\b': es_jw_raw(w, "\\b", 2); break;
        case '\f': es_jw_raw(w, "\\f", 2); break;
        case '\n': es_jw_raw(w, "\\n", 2); break;
        case '\r': es_jw_raw(w, "\\r", 2); break;
        case '\t': es_jw_raw(w, "\\t", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04X", c);
            es_jw_raw(w, esc, 6);
        }
    }
    if (run)
        es_jw_raw(w, s + n - run, run);
    es_jw_c(w, '"');
    return true;
}

void es_jw_i64(es_jw *w, int64_t v)
{
    char buf[24];
    int k = snprintf(buf, sizeof buf, "%" PRId64, v);
    es_jw_raw(w, buf, (size_t)k);
}

void es_jw_bool(es_jw *w, bool v) { es_jw_raw(w, v ? "true" : "false", v ? 4 : 5); }
