/*
 * infra/crypto/tlsfiles.c - TLS certificate and key files (tlsfiles.h).
 */
#include "infra/crypto/tlsfiles.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/util.h"

#define PEM_MAX (1024 * 1024)

/* The whole file as a string; NULL (err set, naming the setting) when it
 * cannot be read, is empty or larger than PEM_MAX. */
static char *read_pem(const char *path, const char *setting, size_t *len, es_error *err)
{
    char *buf = NULL;
    switch (es_read_file(path, PEM_MAX, &buf, len)) {
    case ES_READ_OK:
        if (*len > 0)
            return buf;
        free(buf);
        es_error_set(err, ES_EINVAL, "%s: %s is empty", setting, path);
        return NULL;
    case ES_READ_OPEN:
        es_error_set(err, ES_EINVAL, "%s: cannot read %s: %s", setting, path, strerror(errno));
        return NULL;
    case ES_READ_IO:
        es_error_set(err, ES_EINVAL, "%s: %s is unreadable", setting, path);
        return NULL;
    case ES_READ_TOO_LARGE:
        break;
    }
    es_error_set(err, ES_EINVAL, "%s: %s is larger than 1 MiB", setting, path);
    return NULL;
}

es_result es_tls_files_load(const char *cert_file, const char *cert_setting, const char *key_file,
                            const char *key_setting, es_tls_files *out, es_error *err)
{
    memset(out, 0, sizeof *out);
    es_result rc = ES_EINVAL;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    BIO *b = NULL;
    size_t cert_len = 0;
    if (!(out->cert_pem = read_pem(cert_file, cert_setting, &cert_len, err)) ||
        !(out->key_pem = read_pem(key_file, key_setting, &out->key_len, err)))
        goto out;
    b = BIO_new_mem_buf(out->cert_pem, (int)cert_len);
    if (!b)
        abort();
    cert = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (!cert) {
        es_error_set(err, ES_EINVAL, "%s: %s holds no PEM certificate", cert_setting, cert_file);
        goto out;
    }
    b = BIO_new_mem_buf(out->key_pem, (int)out->key_len);
    if (!b)
        abort();
    /* No passphrase callback: an encrypted key is refused, not prompted for. */
    static char empty[] = "";
    key = PEM_read_bio_PrivateKey(b, NULL, NULL, empty);
    BIO_free(b);
    if (!key) {
        es_error_set(err, ES_EINVAL, "%s: %s holds no unencrypted PEM private key", key_setting, key_file);
        goto out;
    }
    if (X509_check_private_key(cert, key) != 1) {
        es_error_set(err, ES_EINVAL, "%s: the key in %s does not belong to the certificate in %s (%s)", key_setting,
                     key_file, cert_file, cert_setting);
        goto out;
    }
    rc = ES_OK;
out:
    ERR_clear_error();
    X509_free(cert);
    EVP_PKEY_free(key);
    if (rc != ES_OK)
        es_tls_files_free(out);
    return rc;
}

void es_tls_files_free(es_tls_files *t)
{
    if (!t)
        return;
    if (t->key_pem)
        explicit_bzero(t->key_pem, t->key_len);
    free(t->key_pem);
    free(t->cert_pem);
    memset(t, 0, sizeof *t);
}
