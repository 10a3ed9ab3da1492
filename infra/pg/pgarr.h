/*
 * infra/pg/pgarr.h - one-dimensional PostgreSQL arrays in binary form, built
 * straight into a growing buffer, for statements that take a batch's rows
 * as one array parameter per column:
 *
 *   INSERT ... SELECT ... FROM unnest($1::text[], $2::bigint[], ...) AS r(...)
 *
 * Sent in binary (libpq paramFormats 1), the server reads each element with
 * the type's receive function: no text to parse (a timestamptz's text input
 * alone is about a microsecond), no JSON to walk. That was most of the
 * PostgreSQL time of the batch statements when their rows travelled as one
 * JSON text (docs/performance.md).
 *
 * The wire format (PostgreSQL's array_recv), all integers big-endian:
 *   int32 ndim (1), int32 has-nulls flag, uint32 element type OID,
 *   int32 length, int32 lower bound (1),
 *   then per element: int32 byte length (-1: NULL) and the element's bytes.
 * Element bytes by type: text/json as they are (the server checks the
 * encoding), int2/int4/int8 big-endian, bool one byte, timestamptz int64
 * microseconds since 2000-01-01 UTC, uuid its 16 bytes, jsonb a version byte
 * (1) and the JSON text.
 *
 * Out of memory aborts (house style). A builder is reused: es_pga_begin
 * empties it and keeps its memory.
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PGARR_H
#define FACTORD_INFRA_PGARR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Element types (pg_type OIDs; fixed since PostgreSQL's first catalogs). */
enum {
    ES_PG_BOOL = 16,
    ES_PG_BYTEA = 17,
    ES_PG_INT8 = 20,
    ES_PG_INT2 = 21,
    ES_PG_INT4 = 23,
    ES_PG_TEXT = 25,
    ES_PG_TIMESTAMPTZ = 1184,
    ES_PG_UUID = 2950,
    ES_PG_JSONB = 3802,
};

typedef struct {
    char *p;
    size_t len, cap;
    uint32_t n;       /* elements so far */
    uint32_t oid;
    bool nulls;
} es_pga;

void es_pga_begin(es_pga *a, uint32_t elem_oid);
/* es_pga_begin on cols[0..n) with element types oids[0..n). */
void es_pga_begin_all(es_pga *cols, const uint32_t *oids, size_t n);
void es_pga_free(es_pga *a);

void es_pga_null(es_pga *a);
/* text (or json): the first strnlen(s, max) bytes. False, with nothing
 * added, when they are not valid UTF-8. */
bool es_pga_text(es_pga *a, const char *s, size_t max);
void es_pga_i16(es_pga *a, int16_t v);
void es_pga_i32(es_pga *a, int32_t v);
void es_pga_i64(es_pga *a, int64_t v);
void es_pga_bool(es_pga *a, bool v);
/* A time in microseconds since the Unix epoch. */
void es_pga_time(es_pga *a, int64_t unix_us);
/* A UUID in its text form (8-4-4-4-12 hex digits, either case). False,
 * with nothing added, when s is not one. */
bool es_pga_uuid(es_pga *a, const char *s);
void es_pga_bytes(es_pga *a, const void *p, size_t n);
/* jsonb from JSON text of n bytes (the server parses and checks it). */
bool es_pga_jsonb(es_pga *a, const char *json, size_t n);

/* The finished array: *len bytes at the returned pointer (valid until the
 * next change to a). An empty array is valid too. */
const char *es_pga_finish(es_pga *a, int *len);

/* libpq's parameters 0..n-1 of a statement: fixed[i] in text where fixed
 * and fixed[i] are given, else the next array of cols, finished, binary. */
void es_pga_params(int n, const char *const *fixed, es_pga *cols, const char **values, int *lengths,
                   int *formats);

#endif
