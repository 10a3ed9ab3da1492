/*
 * infra/base/jsonw.h - writing JSON text straight into a growing buffer.
 *
 * For the hot paths that only ever *write* JSON of a known shape: the reply
 * envelopes and the projector's common success reply (byte for byte what
 * jansson prints, test_jsonw), the gateway's and the JWT code's small
 * documents. Building a jansson tree
 * first and dumping it cost an allocation per value and two passes; here
 * each value is appended once. Reading JSON, and the outcomes' bodies the
 * processor stores, stay with jansson. (The store's and the projector's
 * batch rows travel as binary arrays instead: infra/pg/pgarr.h.)
 *
 * The caller writes the punctuation ('{', ',', ':' ...) with es_jw_raw or
 * es_jw_c and the values with the typed functions. The buffer is always
 * NUL-terminated. Out of memory aborts (house style).
 *
 * Layer: base; includes only the domain and base (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_JSONW_H
#define FACTORD_INFRA_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *p;        /* the text so far, NUL-terminated; NULL before the first write */
    size_t len;     /* bytes written, without the NUL */
    size_t cap;
} es_jw;

/* Empty the buffer, keeping its memory. */
void es_jw_reset(es_jw *w);
/* Release the memory; w is empty and reusable afterwards. NULL-safe. */
void es_jw_free(es_jw *w);

void es_jw_raw(es_jw *w, const char *s, size_t n);
void es_jw_c(es_jw *w, char c);
/* "key": (key is a literal of the caller's: not escaped). */
void es_jw_key(es_jw *w, const char *key);
/* A JSON string of the first strnlen(s, max) bytes of s, escaped as
 * jansson does by default (", \, control characters; non-ASCII bytes
 * as they are). False, with nothing written, when those bytes are not
 * valid UTF-8. */
bool es_jw_str(es_jw *w, const char *s, size_t max);
void es_jw_i64(es_jw *w, int64_t v);
void es_jw_bool(es_jw *w, bool v);

/* True when s[0..n) is valid UTF-8 (no overlongs, no surrogates, at most
 * U+10FFFF), as JSON text requires. */
bool es_utf8_valid(const char *s, size_t n);

#endif
