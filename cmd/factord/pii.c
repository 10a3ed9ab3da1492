/*
 * cmd/factord/pii.c - `factord pii seal-legacy`: seal the personal data of
 * events written before sealing was on, in place, and re-chain the log
 * from there (infra/pg/piikeys.h, docs/pii.md "Events written before
 * sealing").
 *
 * It rewrites history, so it is an explicit operator command: it needs
 * FACTORD_PII_KEY and the chain key the writers use (FACTORD_CHAIN_KEY),
 * holds the position counter's row for its whole run (every writer waits:
 * stop them first), and records each run in factord.pii_rewrites. stdout
 * gets what it did and the new head (POS:HASH) for an auditor; exit 0 when
 * done or nothing was to do, 1 when PostgreSQL failed, 2 on usage or keys.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/log.h"
#include "infra/crypto/chain.h"
#include "infra/crypto/pii.h"
#include "infra/pg/piikeys.h"
#include "infra/pg/store.h"

static void print_help(void)
{
    printf("usage: factord pii seal-legacy [--note TEXT]\n\n"
           "Seal the personal data of events written before FACTORD_PII_KEY was set, in place, under\n"
           "each user's key, and recompute the hash chain from the first such event to the head.\n"
           "Rewrites history: stop the writers first (it holds the position counter meanwhile), keep\n"
           "the old head for the auditors; each run is recorded in factord.pii_rewrites with --note.\n"
           "Needs FACTORD_PII_KEY and the writers' FACTORD_CHAIN_KEY (docs/pii.md).\n"
           "Exit 0: done (or nothing to seal); 1: PostgreSQL failed; 2: usage or keys.\n");
}

int fd_pii_main(int argc, char **argv)
{
    const char *note = "";
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        print_help();
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "seal-legacy") != 0) {
        fprintf(stderr, "factord pii: unknown action '%s' (try --help)\n", argv[1]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--note") == 0 && i + 1 < argc) {
            note = argv[++i];
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help();
            return 0;
        } else {
            fprintf(stderr, "factord pii: unknown argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    es_config cfg;
    if (!fd_load_config(&cfg, "pii"))
        return 2;
    int rc = 2;
    es_error err = {0};
    es_store *st = NULL;
    es_chain_key key = {0};
    es_chain_hasher *h = NULL;
    es_pii_master pii = {0};
    bool have = false;
    if (es_chain_key_load(&cfg, true, &key, &err) != ES_OK ||
        es_pii_master_load(&cfg, true, &pii, &have, &err) != ES_OK) {
        fprintf(stderr, "factord pii: %s\n", err.text);
        goto out;
    }
    if (!have) {
        fprintf(stderr, "factord pii: no FACTORD_PII_KEY or FACTORD_PII_KEY_FILE\n");
        goto out;
    }
    rc = 1;
    if (!(st = fd_open_store(&cfg, ES_STORE_PII_SCHEMA)))
        goto out;
    es_store_set_pii_master(st, &pii);
    h = es_chain_hasher_new(&key);
    es_pii_rewrite rep;
    if (es_piikeys_seal_legacy(st, h, key.key_id, note, &rep, &err) != ES_OK) {
        fprintf(stderr, "factord pii: seal-legacy failed, nothing changed: %s%s%s\n", err.text,
                err.sqlstate[0] ? " SQLSTATE " : "", err.sqlstate);
        goto out;
    }
    if (rep.first_position == 0) {
        printf("nothing to seal: every event with personal data is sealed\n");
    } else {
        char old_hex[65], new_hex[65];
        es_chain_hex(rep.old_head, 32, old_hex);
        es_chain_hex(rep.new_head, 32, new_hex);
        printf("sealed      %" PRId64 " events from position %" PRId64 "\n", rep.events_sealed, rep.first_position);
        printf("re-hashed   %" PRId64 " events up to position %" PRId64 "\n", rep.events_rehashed,
               rep.last_position);
        printf("old head    %" PRId64 ":%s\n", rep.head_position, old_hex);
        printf("new head    %" PRId64 ":%s\n", rep.head_position, new_hex);
        printf("chain key   %s (key id %s)\n", key.source, key.key_id);
        printf("recorded in factord.pii_rewrites; to republish the sealed events, set the relay's checkpoint "
               "below position %" PRId64 "\n", rep.first_position);
    }
    rc = 0;
out:
    es_chain_hasher_free(h);
    es_chain_key_wipe(&key);
    es_pii_master_wipe(&pii);
    es_store_free(st);
    es_config_free(&cfg);
    return rc;
}
