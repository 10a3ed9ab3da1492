/*
 * tests/fuzz/fuzz_http.c - libFuzzer target for the gateway's request
 * handling: routing, Host, bearer token, Idempotency-Key, content type,
 * body size and body validation, through es_gateway_offline_handle (no
 * sockets, no Kafka, no PostgreSQL; infra/components/gateway.h).
 *
 * Input: a request in HTTP's own shape, "METHOD PATH\n", header lines
 * "Name: value\n" up to an empty line, then the body (bytes). The gateway
 * serves FACTORD_HOST_MAP "auth.example.com=inst-a,localhost:8080=inst-b"
 * and accepts tokens of tests/fuzz/fuzz_keys.h; "login-svc" may use the
 * session routes (FACTORD_SESSION_CALLERS). Every request must get a
 * JSON answer with a status the gateway uses; a 202 (the request passed
 * every check) must carry a command that the processor's decoder accepts,
 * for the token's user: what the gateway sends is never a dead letter.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"
#include "infra/base/config.h"
#include "infra/components/gateway.h"
#include "tests/fuzz/fuzz_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_HDRS 16

static es_config cfg;
static es_gateway *gw;

static const char *fz_getenv(const char *name)
{
    if (strcmp(name, "FACTORD_HOST_MAP") == 0)
        return "auth.example.com=inst-a,localhost:8080=inst-b";
    if (strcmp(name, "FACTORD_HTTP_MAX_BODY_BYTES") == 0)
        return "4096";
    if (strcmp(name, "FACTORD_SESSION_CALLERS") == 0)
        return "login-svc";
    return NULL;
}

static void init(void)
{
    es_error err = {0};
    if (es_config_load(&cfg, fz_getenv, &err) != ES_OK)
        abort();
    es_gateway_opts o = {.cfg = &cfg, .keys = fz_jwks(), .issuer = FZ_ISSUER, .audience = FZ_AUDIENCE};
    if (es_gateway_offline_new(&o, &gw, &err) != ES_OK)
        abort();
}

/* Next line of [*p, end) without its "\n" (and "\r"), as a C string in a
 * fresh allocation; NULL at the end of the input. */
static char *next_line(const char **p, const char *end)
{
    if (*p >= end)
        return NULL;
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *stop = nl ? nl : end;
    size_t n = (size_t)(stop - *p);
    if (n && (*p)[n - 1] == '\r')
        n--;
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p = nl ? nl + 1 : end;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!gw)
        init();
    const char *p = (const char *)data, *end = p + size;
    char *first = next_line(&p, end);
    if (!first)
        return 0;
    /* MHD hands over C strings: a NUL ends each. */
    char *sp = strchr(first, ' ');
    const char *method = first, *path = "/";
    if (sp) {
        *sp = '\0';
        path = sp + 1;
    }
    char *lines[MAX_HDRS];
    const char *hdrs[2 * MAX_HDRS];
    size_t n = 0;
    char *line;
    while ((line = next_line(&p, end)) != NULL) {
        if (line[0] == '\0' || n == MAX_HDRS) {
            free(line);
            break;
        }
        char *colon = strchr(line, ':');
        if (!colon) {
            free(line);
            continue;
        }
        *colon = '\0';
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        lines[n] = line;
        hdrs[2 * n] = line;
        hdrs[2 * n + 1] = v;
        n++;
    }
    char *resp = NULL;
    size_t resp_len = 0;
    unsigned status = es_gateway_offline_handle(gw, method, path, hdrs, n, p, (size_t)(end - p), &resp, &resp_len);

    if (getenv("FACTORD_FUZZ_VERBOSE")) /* to see what the seeds get */
        fprintf(stderr, "%s %s -> %u %.*s\n", method, path, status, (int)resp_len, resp);

    static const unsigned statuses[] = {200, 202, 400, 401, 403, 404, 405, 409, 413, 415, 501, 503};
    int known = 0;
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        known |= statuses[i] == status;
    if (!known)
        abort();
    json_t *body = json_loadb(resp, resp_len, 0, NULL);
    if (!json_is_object(body))
        abort();
    if (status == 202) {
        dom_cmd *cmd = malloc(sizeof *cmd);
        es_error err = {0};
        if (!cmd || dom_cmd_decode(resp, resp_len, cmd, &err) != ES_OK || cmd->user_id[0] == '\0' ||
            (strcmp(cmd->instance_id, "inst-a") != 0 && strcmp(cmd->instance_id, "inst-b") != 0))
            abort();
        free(cmd);
    }
    json_decref(body);
    free(resp);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(first);
    return 0;
}
