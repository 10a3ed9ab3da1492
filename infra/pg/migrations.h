/*
 * infra/pg/migrations.h - the SQL migrations compiled into the binary.
 *
 * cmake/embed_migrations.cmake turns migrations/NNNN_<verb>_<object>.sql
 * into a generated C file in the build tree, so that `factord migrate`
 * needs no files at run time and a binary always carries exactly the
 * schema it was built against. es_store_migrate applies them.
 *
 * The array is sorted by version, versions are unique and positive; the
 * strings are static and NUL-terminated.
 *
 * Layer: pg; includes only the domain, base, crypto and libpq (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_MIGRATIONS_H
#define FACTORD_INFRA_MIGRATIONS_H

#include <stddef.h>

typedef struct {
    int version;        /* NNNN of the file name */
    const char *name;   /* "<verb>_<object>" */
    const char *sql;    /* the file's text, run as one simple-query string */
} es_migration;

extern const es_migration es_migrations[];
extern const size_t es_migrations_count;

#endif
