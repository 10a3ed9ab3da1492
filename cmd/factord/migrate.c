/*
 * cmd/factord/migrate.c - `factord migrate`: apply the schema migrations.
 */
#include <stdio.h>

#include "cmd/factord/cmd.h"
#include "infra/base/log.h"
#include "infra/pg/store.h"

int fd_migrate_main(int argc, char **argv)
{
    bool bad;
    if (fd_wants_help(argc, argv, "migrate", &bad))
        return bad ? 2 : 0;
    es_config cfg;
    if (!fd_load_config(&cfg, "migrate"))
        return 2;
    int rc = 1, applied = 0, version = 0;
    es_error err = {0};
    es_store *st = NULL;
    if (es_store_open(cfg.database_url, &st, &err) != ES_OK) {
        fprintf(stderr, "factord migrate: cannot connect to PostgreSQL: %s\n", err.text);
        goto out;
    }
    if (es_store_migrate(st, &applied, &err) != ES_OK ||
        es_store_schema_version(st, &version, &err) != ES_OK) {
        fprintf(stderr, "factord migrate: %s%s%s\n", err.text, err.sqlstate[0] ? " SQLSTATE " : "",
                err.sqlstate);
        goto out;
    }
    es_info("schema is up to date", "applied", es_log_i64(applied), "version", es_log_i64(version));
    rc = 0;
out:
    es_store_free(st);
    es_config_free(&cfg);
    return rc;
}
