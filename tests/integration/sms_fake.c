/*
 * tests/integration/sms_fake.c - the stand-in SMS provider (see sms_fake.h).
 *
 * Requests are answered in the server's thread inside on_request, so the
 * order of the record is the order of the answers.
 */
#include "sms_fake.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "infra/http/http.h"

typedef struct {
    unsigned status;
    char *body;
    char *retry_after;
    unsigned times;
} answer;

struct sms_fake {
    es_http *http;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    sms_fake_req *reqs;
    size_t n, cap;
    answer *script;
    size_t script_n, script_cap;
    unsigned def_status;
    char *def_body;   /* NULL: Twilio's 201 body */
};

static char *dup_or(const char *s, const char *fallback)
{
    const char *v = s ? s : fallback;
    char *d = v ? strdup(v) : NULL;
    if (v && !d)
        abort();
    return d;
}

static void copy_header(es_http_req *r, const char *name, char *dst, size_t cap)
{
    const char *v = es_http_req_header(r, name, NULL);
    snprintf(dst, cap, "%s", v ? v : "");
}

static void on_headers(es_http_req *r, void *ctx)
{
    (void)r; /* everything is read in on_request, once the body is in */
    (void)ctx;
}

static void on_request(es_http_req *r, void *ctx)
{
    sms_fake *f = ctx;
    sms_fake_req q = {0};
    snprintf(q.method, sizeof q.method, "%s", es_http_req_method(r));
    snprintf(q.path, sizeof q.path, "%s", es_http_req_path(r));
    copy_header(r, "Authorization", q.authorization, sizeof q.authorization);
    copy_header(r, "Idempotency-Key", q.idempotency_key, sizeof q.idempotency_key);
    copy_header(r, "Content-Type", q.content_type, sizeof q.content_type);
    size_t len = 0;
    const char *b = es_http_req_body(r, &len);
    q.body = malloc(len + 1);
    if (!q.body)
        abort();
    if (len)
        memcpy(q.body, b, len);
    q.body[len] = '\0';
    q.body_len = len;

    pthread_mutex_lock(&f->mu);
    if (f->n == f->cap) {
        f->cap = f->cap ? f->cap * 2 : 16;
        f->reqs = realloc(f->reqs, f->cap * sizeof *f->reqs);
        if (!f->reqs)
            abort();
    }
    f->reqs[f->n++] = q;
    size_t nth = f->n;
    unsigned status = f->def_status;
    char *body = NULL, *retry_after = NULL;
    if (f->script_n) {
        answer *a = &f->script[0];
        status = a->status;
        body = dup_or(a->body, "{}");
        retry_after = dup_or(a->retry_after, NULL);
        if (--a->times == 0) {
            free(a->body);
            free(a->retry_after);
            memmove(f->script, f->script + 1, (f->script_n - 1) * sizeof *f->script);
            f->script_n--;
        }
    } else if (f->def_body) {
        body = dup_or(f->def_body, NULL);
    } else {
        char buf[256];
        snprintf(buf, sizeof buf,
                 "{\"sid\":\"SM%032zu\",\"status\":\"queued\",\"api_version\":\"2010-04-01\",\"error_code\":null}",
                 nth);
        body = dup_or(buf, NULL);
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mu);

    if (retry_after)
        es_http_req_add_header(r, "Retry-After", retry_after);
    free(retry_after);
    es_http_respond(r, status, body, strlen(body));
}

sms_fake *sms_fake_start(void)
{
    sms_fake *f = calloc(1, sizeof *f);
    if (!f)
        abort();
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->def_status = 201;
    es_http_opts o = {.addr = "127.0.0.1:0",
                      .threads = 1,
                      .max_connections = 16,
                      .idle_timeout_s = 30,
                      .max_body = 64 * 1024,
                      .too_large_body = "{}",
                      .on_headers = on_headers,
                      .on_request = on_request,
                      .ctx = f,
                      .component = "sms-fake"};
    es_error err = {0};
    if (es_http_start(&o, &f->http, &err) != ES_OK) {
        fprintf(stderr, "sms_fake: %s\n", err.text);
        sms_fake_stop(f);
        return NULL;
    }
    f->port = es_http_port(f->http);
    return f;
}

void sms_fake_stop(sms_fake *f)
{
    if (!f)
        return;
    if (f->http) {
        es_http_quiesce(f->http);
        es_http_stop(f->http);
    }
    for (size_t i = 0; i < f->n; i++)
        free(f->reqs[i].body);
    free(f->reqs);
    for (size_t i = 0; i < f->script_n; i++) {
        free(f->script[i].body);
        free(f->script[i].retry_after);
    }
    free(f->script);
    free(f->def_body);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

char *sms_fake_url(const sms_fake *f, const char *path)
{
    char buf[600];
    snprintf(buf, sizeof buf, "http://127.0.0.1:%d%s", f->port, path ? path : "");
    return dup_or(buf, NULL);
}

void sms_fake_push(sms_fake *f, unsigned status, const char *body, const char *retry_after, unsigned times)
{
    if (times == 0)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->script_n == f->script_cap) {
        f->script_cap = f->script_cap ? f->script_cap * 2 : 8;
        f->script = realloc(f->script, f->script_cap * sizeof *f->script);
        if (!f->script)
            abort();
    }
    f->script[f->script_n++] = (answer){status, dup_or(body, "{}"), dup_or(retry_after, NULL), times};
    pthread_mutex_unlock(&f->mu);
}

void sms_fake_set_default(sms_fake *f, unsigned status, const char *body)
{
    pthread_mutex_lock(&f->mu);
    f->def_status = status;
    free(f->def_body);
    f->def_body = dup_or(body, NULL);
    pthread_mutex_unlock(&f->mu);
}

size_t sms_fake_count(sms_fake *f)
{
    pthread_mutex_lock(&f->mu);
    size_t n = f->n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

bool sms_fake_wait(sms_fake *f, size_t n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->mu);
    while (f->n < n)
        if (pthread_cond_timedwait(&f->cond, &f->mu, &until) != 0)
            break;
    bool ok = f->n >= n;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

bool sms_fake_get(sms_fake *f, size_t i, sms_fake_req *out)
{
    pthread_mutex_lock(&f->mu);
    bool ok = i < f->n;
    if (ok) {
        *out = f->reqs[i];
        out->body = malloc(out->body_len + 1);
        if (!out->body)
            abort();
        memcpy(out->body, f->reqs[i].body, out->body_len + 1);
    }
    pthread_mutex_unlock(&f->mu);
    return ok;
}
