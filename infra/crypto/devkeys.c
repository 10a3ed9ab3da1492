/*
 * infra/crypto/devkeys.c - the development phone-code key (see devkeys.h).
 */
#include "infra/crypto/devkeys.h"

#include "infra/base/util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

es_result es_code_key_ensure_dev(es_config *cfg, bool *created, es_error *err)
{
    char path[4096], hex[66];
    unsigned char key[32];
    if (created)
        *created = false;
    if (cfg->code_key || cfg->code_key_file)
        return ES_OK;
    if ((size_t)snprintf(path, sizeof path, "%s/code.key", cfg->state_dir) >= sizeof path)
        return es_error_set(err, ES_EINVAL, "FACTORD_STATE_DIR is too long");
    if (access(path, R_OK) != 0) {
        if (RAND_bytes(key, sizeof key) != 1)
            return es_error_set(err, ES_EFATAL, "no randomness for a development phone-code key");
        for (size_t i = 0; i < sizeof key; i++)
            snprintf(hex + 2 * i, 3, "%02x", key[i]);
        hex[64] = '\n';
        hex[65] = '\0';
        explicit_bzero(key, sizeof key);
        bool ok = es_write_file_atomic(path, hex, strlen(hex), 0600);
        explicit_bzero(hex, sizeof hex);
        if (!ok)
            return es_error_set(err, ES_EFATAL, "cannot write %.300s: %s", path, strerror(errno));
        if (created)
            *created = true;
    }
    cfg->code_key_file = strdup(path);
    if (!cfg->code_key_file)
        abort();
    return ES_OK;
}

void es_jwt_key_free(EVP_PKEY *key) { EVP_PKEY_free(key); }
