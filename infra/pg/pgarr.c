/*
 * infra/pg/pgarr.c - binary PostgreSQL arrays (see pgarr.h).
 */
#include "infra/pg/pgarr.h"

#include <stdlib.h>
#include <string.h>

#include "infra/base/jsonw.h"
#include "infra/base/util.h"

#define HEADER 20 /* ndim, flags, oid, length, lower bound */
/* 2000-01-01 00:00:00 UTC in Unix microseconds. */
#define PG_EPOCH_US INT64_C(946684800000000)

static void reserve(es_pga *a, size_t more) { a->p = es_grow(a->p, &a->cap, a->len + more, 1); }

static void put_u32(char *at, uint32_t v)
{
    unsigned char *b = (unsigned char *)at;
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

static void put_u64(char *at, uint64_t v)
{
    put_u32(at, (uint32_t)(v >> 32));
    put_u32(at + 4, (uint32_t)v);
}

/* Room for an element of n bytes: its length word written, the bytes'
 * place returned. */
static char *elem(es_pga *a, size_t n)
{
    reserve(a, 4 + n);
    put_u32(a->p + a->len, (uint32_t)n);
    char *at = a->p + a->len + 4;
    a->len += 4 + n;
    a->n++;
    return at;
}

void es_pga_begin(es_pga *a, uint32_t elem_oid)
{
    a->len = 0;
    a->n = 0;
    a->oid = elem_oid;
    a->nulls = false;
    reserve(a, HEADER);
    a->len = HEADER;
}

void es_pga_begin_all(es_pga *cols, const uint32_t *oids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        es_pga_begin(&cols[i], oids[i]);
}

void es_pga_free(es_pga *a)
{
    free(a->p);
    *a = (es_pga){0};
}

void es_pga_null(es_pga *a)
{
    reserve(a, 4);
    put_u32(a->p + a->len, UINT32_MAX); /* -1 */
    a->len += 4;
    a->n++;
    a->nulls = true;
}

bool es_pga_text(es_pga *a, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (!es_utf8_valid(s, n))
        return false;
    memcpy(elem(a, n), s, n);
    return true;
}

void es_pga_i16(es_pga *a, int16_t v)
{
    char *at = elem(a, 2);
    uint16_t u = (uint16_t)v;
    at[0] = (char)(u >> 8);
    at[1] = (char)u;
}

void es_pga_i32(es_pga *a, int32_t v) { put_u32(elem(a, 4), (uint32_t)v); }

void es_pga_i64(es_pga *a, int64_t v) { put_u64(elem(a, 8), (uint64_t)v); }

void es_pga_bool(es_pga *a, bool v) { *elem(a, 1) = v ? 1 : 0; }

void es_pga_time(es_pga *a, int64_t unix_us) { es_pga_i64(a, unix_us - PG_EPOCH_US); }

bool es_pga_uuid(es_pga *a, const char *s)
{
    unsigned char b[16];
    size_t k = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
            continue;
        }
        int hi = es_hex_value(s[i]), lo = hi < 0 ? -1 : es_hex_value(s[i + 1]);
        if (lo < 0)
            return false;
        b[k++] = (unsigned char)(hi << 4 | lo);
        i++;
    }
    if (s[36] != '\0')
        return false;
    memcpy(elem(a, 16), b, 16);
    return true;
}

void es_pga_bytes(es_pga *a, const void *p, size_t n)
{
    if (n)
        memcpy(elem(a, n), p, n);
    else
        (void)elem(a, 0);
}

bool es_pga_jsonb(es_pga *a, const char *json, size_t n)
{
    if (!es_utf8_valid(json, n))
        return false;
    char *at = elem(a, 1 + n);
    at[0] = 1; /* jsonb's binary format version */
    memcpy(at + 1, json, n);
    return true;
}

const char *es_pga_finish(es_pga *a, int *len)
{
    if (!a->p)
        es_pga_begin(a, a->oid);
    put_u32(a->p, 1);
    put_u32(a->p + 4, a->nulls ? 1 : 0);
    put_u32(a->p + 8, a->oid);
    put_u32(a->p + 12, a->n);
    put_u32(a->p + 16, 1);
    *len = (int)a->len;
    return a->p;
}

void es_pga_params(int n, const char *const *fixed, es_pga *cols, const char **values, int *lengths,
                   int *formats)
{
    for (int i = 0, k = 0; i < n; i++) {
        if (fixed && fixed[i]) {
            values[i] = fixed[i];
            lengths[i] = 0;
            formats[i] = 0;
        } else {
            values[i] = es_pga_finish(&cols[k++], &lengths[i]);
            formats[i] = 1;
        }
    }
}
