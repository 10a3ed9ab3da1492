/*
 * infra/base/util.h - small helpers that several infra modules share: growing
 * arrays, hexadecimal digits, strict integer parsing.
 *
 * Layer: base; includes only the domain and base (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_UTIL_H
#define FACTORD_INFRA_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Grow p (an array of elem-sized items with *cap of room) to hold at least
 * need items, doubling; aborts when out of memory (house style). Returns
 * the possibly moved array. */
void *es_grow(void *p, size_t *cap, size_t need, size_t elem);
/* ES_GROW(obj, field, need) grows obj->field, whose room is obj->field_cap. */
#define ES_GROW(p, field, need) \
    ((p)->field = es_grow((p)->field, &(p)->field##_cap, (need), sizeof *(p)->field))

/* A NUL-terminated copy of n bytes of s (which need not be terminated);
 * aborts when out of memory (house style). */
char *es_memdup(const void *s, size_t n);

/* Write len bytes of data to path through a temporary file beside it
 * (fsync'd, then renamed over path), so a reader sees the old file or the
 * whole new one, never half. mode: of a new file. False (errno set, the
 * temporary removed) on any failure. */
bool es_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

/* What es_read_file found. */
typedef enum {
    ES_READ_OK = 0,
    ES_READ_OPEN,      /* cannot open it (errno set) */
    ES_READ_IO,        /* a read error */
    ES_READ_TOO_LARGE  /* more than max bytes */
} es_read_status;

/* The whole file at path, at most max bytes, into *out (malloc'd, NUL
 * appended; *len without it). On any failure *out is NULL and what was
 * read is wiped before it is freed (the file may hold a secret). */
es_read_status es_read_file(const char *path, size_t max, char **out, size_t *len);

/* The value of one hexadecimal digit (either case), or -1. */
int es_hex_value(int c);

/* A whole decimal int64 ("-12", no spaces, nothing after it). */
bool es_parse_i64(const char *s, int64_t *v);

#endif
