/*
 * infra/http/http.h - a small HTTP/1.1 server over libmicrohttpd (0.9.75) for the
 * gateway: bounded, asynchronous, JSON only.
 *
 * MHD's internal threads (a pool of FACTORD_HTTP_THREADS, epoll) serve a
 * bounded number of connections. A request is seen twice by the caller:
 * on_headers runs as soon as the headers are in (route, authenticate,
 * refuse early: the body is then never read), then, when the body is in
 * (at most max_body bytes; more gets 413 without being buffered),
 * on_request. Either may answer with es_http_respond at once; on_request
 * may also return without answering, and then the connection is suspended
 * (it costs no thread) until es_http_respond is called from any thread.
 * Every request must be answered exactly once.
 *
 * Each finished request is logged as one JSON line (method, path without
 * query, status, duration_ms, remote address, plus fields the handler adds
 * with es_http_req_log): never a header, so never a token.
 *
 * Layer: http; includes only the domain, base and libmicrohttpd (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_HTTP_H
#define FACTORD_INFRA_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

typedef struct es_http es_http;
typedef struct es_http_req es_http_req;

typedef void (*es_http_fn)(es_http_req *req, void *ctx);

typedef struct {
    const char *addr;          /* "host:port", "[v6]:port"; port 0 = any free port */
    unsigned threads;          /* MHD worker threads */
    unsigned max_connections;
    unsigned idle_timeout_s;   /* close idle keep-alive connections after this */
    size_t max_body;           /* larger bodies get 413 */
    const char *too_large_body;/* JSON body of that 413 */
    es_http_fn on_headers;
    es_http_fn on_request;
    void *ctx;
    const char *component;     /* log component of the server's threads */
    bool quiet;                /* completed requests logged at debug, not info
                                  (the metrics endpoint: a scrape every few
                                  seconds); failures still at warn */
    /* HTTPS: the certificate (and chain) and its private key as PEM text,
     * checked beforehand (infra/crypto/tlsfiles.h); both copied, the key's
     * copy wiped at es_http_stop. NULL: plain HTTP. */
    const char *tls_cert_pem, *tls_key_pem;
} es_http_opts;

es_result es_http_start(const es_http_opts *o, es_http **out, es_error *err) ES_WUR;
/* Stop accepting new connections (the listening socket closes). */
void es_http_quiesce(es_http *h);
/* Requests that are suspended waiting for an answer. */
size_t es_http_pending(es_http *h);
/* Requests begun and not yet completed (answer written or connection
 * gone), suspended ones included. */
size_t es_http_active(es_http *h);
/* Stop: call only when es_http_pending is 0 (answer everything first);
 * connections still open are closed. NULL-safe. */
void es_http_stop(es_http *h);
/* The port actually bound (useful with port 0). */
int es_http_port(const es_http *h);

/* --- the request (valid from on_headers until it is answered) ------------ */

const char *es_http_req_method(const es_http_req *r);
const char *es_http_req_path(const es_http_req *r);
/* Request header (case-insensitive name) or NULL; only inside on_headers
 * and on_request. *count (may be NULL) gets how often it was sent. */
const char *es_http_req_header(es_http_req *r, const char *name, unsigned *count);
/* The body (not NUL-terminated; NULL and 0 when empty); in on_request. */
const char *es_http_req_body(const es_http_req *r, size_t *len);
/* Per-request state of the caller, kept between on_headers and
 * on_request; free_fn (may be NULL) runs when the request is done. */
void es_http_req_set_user(es_http_req *r, void *user, void (*free_fn)(void *));
void *es_http_req_user(const es_http_req *r);
/* Add a field to the request's log line (copied; up to 4 fields). */
void es_http_req_log(es_http_req *r, const char *key, const char *value);
/* Add a response header (copied; up to 4), before es_http_respond. A
 * Content-Type given here replaces the default application/json. */
void es_http_req_add_header(es_http_req *r, const char *name, const char *value);

/* Answer with status and a body (JSON unless a Content-Type was added;
 * malloc'd; ownership passes, even on a second call, which is ignored).
 * Callable from any thread. */
void es_http_respond(es_http_req *r, unsigned status, char *body, size_t len);

/* --- detached requests (fuzzing and tests: no socket, no MHD) ----------- */

/* A request that belongs to no server: headers are n name/value pairs
 * (copied, as is the body). The accessors above work on it; an answer is
 * kept for es_http_req_detached_answer instead of being sent. */
es_http_req *es_http_req_detached(const char *method, const char *path, const char *const *headers, size_t n,
                                  const char *body, size_t body_len);
/* true when answered: *status, and the body (borrowed until the free). */
bool es_http_req_detached_answer(es_http_req *r, unsigned *status, const char **body, size_t *len);
/* Runs the user free function too. NULL-safe. */
void es_http_req_detached_free(es_http_req *r);

#endif
