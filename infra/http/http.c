/*
 * infra/http/http.c - the gateway's HTTP server over libmicrohttpd (see http.h).
 *
 * One server-wide mutex guards what two threads can touch: the answer of a
 * request (set by whichever thread answers) and its suspended flag (set by
 * the MHD thread that handles the connection). A request is freed by MHD's
 * completion callback, which cannot run while the request is suspended or
 * while its handler runs, so an answering thread never sees it freed.
 */
#include "infra/http/http.h"
#include "infra/base/util.h"

#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "infra/base/clock.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"

#define MAX_LOG_FIELDS 4
#define MAX_HEADERS 4
#define CONN_MEMORY_LIMIT (32 * 1024) /* headers (a token is at most 8 KiB) and buffers */

struct es_http {
    struct MHD_Daemon *d;
    es_http_opts o;
    char *too_large_body;
    char component[32];
    pthread_mutex_t mu;
    size_t pending;  /* suspended requests */
    size_t active;   /* requests begun and not yet completed */
    int port;
    bool quiesced;
    char *tls_cert, *tls_key; /* HTTPS: copies kept for the daemon's life */
};

struct es_http_req {
    es_http *srv;
    struct MHD_Connection *conn;
    char *method;
    char *path;
    char remote[64];
    int64_t start_ms, start_us;
    char *body;
    size_t body_len, body_cap, discarded;
    bool too_large;
    bool dispatched;
    bool suspended;     /* under srv->mu */
    bool resp_ready;    /* under srv->mu */
    unsigned status;
    char *resp;
    size_t resp_len;
    void *user;
    void (*user_free)(void *);
    int nlog, nhdr;
    char log_k[MAX_LOG_FIELDS][24], log_v[MAX_LOG_FIELDS][96];
    char hdr_n[MAX_HEADERS][40], hdr_v[MAX_HEADERS][128];
    /* detached requests only (conn == NULL): request headers, name/value */
    char **in_hdr;
    size_t n_in_hdr;
};

/* The server of every detached request: only its mutex is used. */
static es_http detached_srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* --- request accessors --------------------------------------------------- */

const char *es_http_req_method(const es_http_req *r) { return r->method; }
const char *es_http_req_path(const es_http_req *r) { return r->path; }

typedef struct {
    const char *name;
    unsigned count;
} header_count;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    header_count *hc = cls;
    if (key && strcasecmp(key, hc->name) == 0)
        hc->count++;
    return MHD_YES;
}

const char *es_http_req_header(es_http_req *r, const char *name, unsigned *count)
{
    if (!r->conn) { /* detached: the first of its name, as MHD does */
        const char *first = NULL;
        unsigned c = 0;
        for (size_t i = 0; i < r->n_in_hdr; i++)
            if (strcasecmp(r->in_hdr[2 * i], name) == 0) {
                if (!first)
                    first = r->in_hdr[2 * i + 1];
                c++;
            }
        if (count)
            *count = c;
        return first;
    }
    if (count) {
        header_count hc = {name, 0};
        MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_header, &hc);
        *count = hc.count;
    }
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *es_http_req_body(const es_http_req *r, size_t *len)
{
    *len = r->body_len;
    return r->body_len ? r->body : NULL;
}

void es_http_req_set_user(es_http_req *r, void *user, void (*free_fn)(void *))
{
    r->user = user;
    r->user_free = free_fn;
}

void *es_http_req_user(const es_http_req *r) { return r->user; }

void es_http_req_log(es_http_req *r, const char *key, const char *value)
{
    pthread_mutex_lock(&r->srv->mu);
    if (r->nlog < MAX_LOG_FIELDS) {
        snprintf(r->log_k[r->nlog], sizeof r->log_k[0], "%s", key);
        snprintf(r->log_v[r->nlog], sizeof r->log_v[0], "%s", value ? value : "");
        r->nlog++;
    }
    pthread_mutex_unlock(&r->srv->mu);
}

void es_http_req_add_header(es_http_req *r, const char *name, const char *value)
{
    pthread_mutex_lock(&r->srv->mu);
    if (r->nhdr < MAX_HEADERS && !r->resp_ready) {
        snprintf(r->hdr_n[r->nhdr], sizeof r->hdr_n[0], "%s", name);
        snprintf(r->hdr_v[r->nhdr], sizeof r->hdr_v[0], "%s", value);
        r->nhdr++;
    }
    pthread_mutex_unlock(&r->srv->mu);
}

void es_http_respond(es_http_req *r, unsigned status, char *body, size_t len)
{
    es_http *h = r->srv;
    pthread_mutex_lock(&h->mu);
    if (r->resp_ready) {
        pthread_mutex_unlock(&h->mu);
        free(body);
        return;
    }
    r->status = status;
    r->resp = body;
    r->resp_len = body ? len : 0;
    r->resp_ready = true;
    if (r->suspended && r->conn) {
        r->suspended = false;
        h->pending--;
        /* Safe from any thread; the handler runs again and queues it. */
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&h->mu);
}

/* --- detached requests ------------------------------------------------- */

es_http_req *es_http_req_detached(const char *method, const char *path, const char *const *headers, size_t n,
                                  const char *body, size_t body_len)
{
    es_http_req *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->srv = &detached_srv;
    r->method = es_memdup(method, strlen(method));
    r->path = es_memdup(path, strlen(path));
    r->in_hdr = calloc(2 * n + 1, sizeof *r->in_hdr);
    if (!r->in_hdr)
        abort();
    for (size_t i = 0; i < 2 * n; i++)
        r->in_hdr[i] = es_memdup(headers[i], strlen(headers[i]));
    r->n_in_hdr = n;
    if (body_len) {
        r->body = es_memdup(body, body_len);
        r->body_len = r->body_cap = body_len;
    }
    return r;
}

bool es_http_req_detached_answer(es_http_req *r, unsigned *status, const char **body, size_t *len)
{
    if (!r->resp_ready)
        return false;
    *status = r->status;
    *body = r->resp ? r->resp : "";
    *len = r->resp_len;
    return true;
}

void es_http_req_detached_free(es_http_req *r)
{
    if (!r)
        return;
    if (r->user_free)
        r->user_free(r->user);
    for (size_t i = 0; i < 2 * r->n_in_hdr; i++)
        free(r->in_hdr[i]);
    free(r->in_hdr);
    free(r->resp);
    free(r->body);
    free(r->method);
    free(r->path);
    free(r);
}

/* --- MHD callbacks ------------------------------------------------------- */

static enum MHD_Result queue(es_http_req *r)
{
    struct MHD_Response *resp;
    if (r->resp_len)
        resp = MHD_create_response_from_buffer(r->resp_len, r->resp, MHD_RESPMEM_MUST_FREE);
    else {
        free(r->resp);
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    r->resp = NULL; /* MHD frees it with the response */
    if (!resp)
        return MHD_NO;
    bool typed = false; /* a caller's Content-Type replaces the JSON one */
    for (int i = 0; i < r->nhdr; i++)
        typed |= strcasecmp(r->hdr_n[i], MHD_HTTP_HEADER_CONTENT_TYPE) == 0;
    if (!typed)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (int i = 0; i < r->nhdr; i++)
        MHD_add_response_header(resp, r->hdr_n[i], r->hdr_v[i]);
    enum MHD_Result rc = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static bool answered(es_http_req *r)
{
    pthread_mutex_lock(&r->srv->mu);
    bool ready = r->resp_ready;
    pthread_mutex_unlock(&r->srv->mu);
    return ready;
}

static void respond_too_large(es_http_req *r)
{
    char *b = strdup(r->srv->too_large_body);
    if (!b)
        abort();
    es_http_respond(r, MHD_HTTP_CONTENT_TOO_LARGE, b, strlen(b));
}

static void remote_of(struct MHD_Connection *c, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    char host[INET6_ADDRSTRLEN + 1], serv[8];
    if (getnameinfo(sa, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(out, len, "%s", host);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size,
                                 void **con_cls)
{
    (void)version;
    (void)upload_data;
    es_http *h = cls;
    es_http_req *r = *con_cls;
    if (!r) {
        es_log_set_component(h->component);
        r = calloc(1, sizeof *r);
        if (!r)
            abort();
        r->srv = h;
        r->conn = c;
        r->method = strdup(method);
        r->path = strdup(url);
        if (!r->method || !r->path)
            abort();
        r->start_ms = es_clock_mono_ms();
        r->start_us = es_clock_mono_us();
        remote_of(c, r->remote, sizeof r->remote);
        *con_cls = r;
        pthread_mutex_lock(&h->mu);
        h->active++;
        pthread_mutex_unlock(&h->mu);
        h->o.on_headers(r, h->o.ctx);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        bool body = (cl && strtoull(cl, NULL, 10) > 0) ||
                    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        /* Answered already: with a body, at once (the body is never read
         * and the connection closes); without, once MHD has the request
         * complete, so that the connection stays open for the next one. */
        if (answered(r))
            return body ? queue(r) : MHD_YES;
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body) {
            respond_too_large(r);
            return queue(r);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (!r->too_large && r->body_len + n <= h->o.max_body) {
            if (r->body_len + n > r->body_cap) {
                size_t cap = r->body_cap ? r->body_cap * 2 : 1024;
                while (cap < r->body_len + n)
                    cap *= 2;
                if (cap > h->o.max_body)
                    cap = h->o.max_body;
                char *nb = realloc(r->body, cap);
                if (!nb)
                    abort();
                r->body = nb;
                r->body_cap = cap;
            }
            memcpy(r->body + r->body_len, upload_data, n);
            r->body_len += n;
        } else {
            /* A chunked body over the limit: drop it; a client that keeps
             * sending far past the limit loses the connection. */
            r->too_large = true;
            r->discarded += n;
            if (r->discarded > 4 * h->o.max_body + 65536)
                return MHD_NO;
        }
        return MHD_YES;
    }
    /* The whole request is in. */
    if (r->too_large && !answered(r))
        respond_too_large(r);
    if (!r->dispatched && !answered(r)) {
        r->dispatched = true;
        h->o.on_request(r, h->o.ctx);
    }
    pthread_mutex_lock(&h->mu);
    if (r->resp_ready) {
        pthread_mutex_unlock(&h->mu);
        return queue(r);
    }
    if (!r->suspended) {
        r->suspended = true;
        h->pending++;
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&h->mu);
    return MHD_YES;
}

/* The request's duration into the metrics (docs/metrics.md), by server,
 * method and status: no path, whose values a client chooses. */
static void count_request(const es_http *h, const es_http_req *r, bool completed)
{
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    const char *method = "other";
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (r->method && strcmp(r->method, methods[i]) == 0)
            method = methods[i];
    char code[8], labels[160];
    snprintf(code, sizeof code, "%u", r->resp_ready && completed ? r->status : 0);
    es_metrics_labels(labels, sizeof labels, "server", h->component, "method", method, "code", code, NULL);
    es_metric_observe(es_metrics_histogram("factord_http_request_duration_seconds",
                                           "HTTP requests served, from the first byte to the answer written, by "
                                           "server, method and status (0: the client left before the answer)",
                                           labels, es_metrics_seconds_buckets, es_metrics_seconds_buckets_n),
                      (double)(es_clock_mono_us() - r->start_us) / 1e6);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)c;
    es_http *h = cls;
    es_http_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    es_log_set_component(h->component);
    const char *k[MAX_LOG_FIELDS] = {NULL}, *v[MAX_LOG_FIELDS] = {NULL};
    for (int i = 0; i < r->nlog; i++) {
        k[i] = r->log_k[i];
        v[i] = r->log_v[i];
    }
    es_log_level level = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? ES_LOG_WARN
                         : h->o.quiet                               ? ES_LOG_DEBUG
                                                                    : ES_LOG_INFO;
    if (es_log_enabled(level))
        es_log(level, "request", "method", r->method,
           "path", r->path, "status", es_log_i64(r->resp_ready ? r->status : 0), "duration_ms",
           es_log_i64(es_clock_mono_ms() - r->start_ms), "remote", r->remote, "completed",
           toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "ok" : "connection closed early", k[0], v[0], k[1], v[1],
           k[2], v[2], k[3], v[3], (const char *)NULL);
    count_request(h, r, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    pthread_mutex_lock(&h->mu);
    h->active--;
    pthread_mutex_unlock(&h->mu);
    if (r->user_free)
        r->user_free(r->user);
    free(r->resp);
    free(r->body);
    free(r->method);
    free(r->path);
    free(r);
}

/* MHD's format strings: the attribute tells clang's -Wformat-nonliteral. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    es_warn("libmicrohttpd", "detail", buf);
}

/* --- the server ---------------------------------------------------------- */

static es_result resolve(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, es_error *err)
{
    char host[256], port[16];
    const char *colon;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof host)
            return es_error_set(err, ES_EINVAL, "FACTORD_HTTP_ADDR: expected [v6 address]:port, got %s", addr);
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host)
            return es_error_set(err, ES_EINVAL, "FACTORD_HTTP_ADDR: expected host:port, got %s", addr);
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 0 || p > 65535)
        return es_error_set(err, ES_EINVAL, "FACTORD_HTTP_ADDR: bad port in %s", addr);
    snprintf(port, sizeof port, "%ld", p);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (gai != 0 || !res)
        return es_error_set(err, ES_EINVAL, "FACTORD_HTTP_ADDR: cannot resolve %s: %s", addr, gai_strerror(gai));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return ES_OK;
}

static void free_tls(es_http *h)
{
    if (h->tls_key)
        explicit_bzero(h->tls_key, strlen(h->tls_key));
    free(h->tls_key);
    free(h->tls_cert);
    h->tls_key = h->tls_cert = NULL;
}

es_result es_http_start(const es_http_opts *o, es_http **out, es_error *err)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    es_result rc = resolve(o->addr, &ss, &sl, err);
    if (rc != ES_OK)
        return rc;
    es_http *h = calloc(1, sizeof *h);
    if (!h)
        abort();
    h->o = *o;
    h->o.tls_cert_pem = h->o.tls_key_pem = NULL; /* the caller's; the copies below are ours */
    h->too_large_body = strdup(o->too_large_body ? o->too_large_body : "{}");
    if (!h->too_large_body)
        abort();
    snprintf(h->component, sizeof h->component, "%s", o->component ? o->component : "http");
    pthread_mutex_init(&h->mu, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, NULL}};
    if (o->tls_cert_pem && o->tls_key_pem) {
        h->tls_cert = strdup(o->tls_cert_pem);
        h->tls_key = strdup(o->tls_key_pem);
        if (!h->tls_cert || !h->tls_key)
            abort();
        flags |= MHD_USE_TLS;
        tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, h->tls_key};
        tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, h->tls_cert};
        tls[2] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    }
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, h, MHD_OPTION_ARRAY, tls,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_THREAD_POOL_SIZE, o->threads ? o->threads : 1u, MHD_OPTION_CONNECTION_LIMIT,
                            o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, 256u, MHD_OPTION_END);
    if (!h->d) {
        free(h->too_large_body);
        free_tls(h);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return es_error_set(err, ES_ETRANSIENT, "cannot listen on %s (in use, or not an address of this host)",
                            o->addr);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : 0;
    *out = h;
    return ES_OK;
}

void es_http_quiesce(es_http *h)
{
    if (!h || h->quiesced)
        return;
    h->quiesced = true;
    MHD_socket s = MHD_quiesce_daemon(h->d);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

size_t es_http_pending(es_http *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->pending;
    pthread_mutex_unlock(&h->mu);
    return n;
}

size_t es_http_active(es_http *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->active;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void es_http_stop(es_http *h)
{
    if (!h)
        return;
    es_http_quiesce(h);
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h->too_large_body);
    free_tls(h);
    free(h);
}

int es_http_port(const es_http *h) { return h->port; }
