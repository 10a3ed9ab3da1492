/*
 * tests/unit/test_config.c - the configuration table and its parser, and
 * the README's table kept in step with it.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/config.h"

static const char *const *fake_env;

static const char *fake_getenv(const char *name)
{
    for (const char *const *e = fake_env; e && *e; e += 2)
        if (strcmp(e[0], name) == 0)
            return e[1];
    return NULL;
}

Test(config, defaults_apply)
{
    static const char *const env[] = {NULL};
    fake_env = env;
    es_config cfg;
    cr_assert_eq(es_config_load(&cfg, fake_getenv, NULL), ES_OK);
    cr_assert_str_eq(cfg.instance_id, "default");
    cr_assert_str_eq(cfg.http_addr, "127.0.0.1:8080");
    cr_assert_str_eq(cfg.commands_topic, "factord.commands");
    cr_assert_null(cfg.kafka_brokers);
    cr_assert_null(cfg.database_url);
    cr_assert_eq(cfg.batch_max, 1000);
    cr_assert_eq(cfg.projector_batch_max, 2000);
    cr_assert_eq(cfg.batch_linger_ms, 5);
    es_config_free(&cfg);
}

Test(config, values_override_and_empty_means_unset)
{
    static const char *const env[] = {"FACTORD_BATCH_MAX", "42", "FACTORD_KAFKA_BROKERS", "h:1",
                                      "FACTORD_INSTANCE_ID", "", NULL};
    fake_env = env;
    es_config cfg;
    cr_assert_eq(es_config_load(&cfg, fake_getenv, NULL), ES_OK);
    cr_assert_eq(cfg.batch_max, 42);
    cr_assert_str_eq(cfg.kafka_brokers, "h:1");
    cr_assert_str_eq(cfg.instance_id, "default");
    es_config_free(&cfg);
}

Test(config, every_problem_reported_at_once)
{
    static const char *const env[] = {"FACTORD_BATCH_MAX", "lots", "FACTORD_CODE_LENGTH", "99",
                                      "FACTORD_RELAY_BATCH", "0", NULL};
    fake_env = env;
    es_config cfg;
    es_error err = {0};
    cr_assert_eq(es_config_load(&cfg, fake_getenv, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "FACTORD_BATCH_MAX"));
    cr_assert(strstr(err.text, "FACTORD_CODE_LENGTH"));
    cr_assert(strstr(err.text, "FACTORD_RELAY_BATCH"));
}

Test(config, code_key_parsing)
{
    es_config cfg = {0};
    unsigned char key[32];
    es_error err = {0};
    cr_assert_eq(es_config_code_key(&cfg, key, &err), ES_EINVAL);
    cr_assert(strstr(err.text, "FACTORD_CODE_KEY"));
    cfg.code_key = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
    cr_assert_eq(es_config_code_key(&cfg, key, &err), ES_OK);
    cr_assert_eq(key[1], 0x11);
    cr_assert_eq(key[31], 0xff);
    cfg.code_key = "0011";
    cr_assert_eq(es_config_code_key(&cfg, key, &err), ES_EINVAL);
    cfg.code_key = "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    cr_assert_eq(es_config_code_key(&cfg, key, &err), ES_EINVAL);
}

/* The README documents every variable of the table, with its default. */
Test(config, readme_table_in_step)
{
    FILE *f = fopen(FACTORD_TEST_DATA "/../../README.md", "r");
    cr_assert_not_null(f, "README.md not found");
    static char readme[1 << 17];
    size_t n = fread(readme, 1, sizeof readme - 1, f);
    fclose(f);
    readme[n] = '\0';
    for (size_t i = 0; i < es_config_table_len; i++) {
        const es_cfg_entry *e = &es_config_table[i];
        char row[256];
        snprintf(row, sizeof row, "| `%s` | %s%s%s |", e->name, e->def ? "`" : "", e->def ? e->def : "unset",
                 e->def ? "`" : "");
        cr_expect(strstr(readme, row) != NULL, "README.md lacks the row starting %s", row);
    }
}
