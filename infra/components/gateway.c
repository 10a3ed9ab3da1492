/*
 * infra/components/gateway.c - routes, authentication, commands and replies of the
 * HTTP gateway (see gateway.h and docs/gateway.md).
 *
 * A request passes, in this order: routing (404, 405), the instance from
 * Host (404), the bearer token (401, before any body is read), the
 * Idempotency-Key (400), the content type (415), the body size (413, in
 * infra/http/http.c), the body itself (400), then one command is produced and
 * its reply awaited without holding a thread (the connection is
 * suspended). ListMyAuthFactors reads PostgreSQL on the HTTP thread: one
 * indexed query, with a statement timeout. The session routes add, after
 * the token, the caller check (FACTORD_SESSION_CALLERS) and, for an
 * existing session, its events read and folded before the command.
 */
#include "infra/components/gateway.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#include "domain/command.h"
#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/http/http.h"
#include "infra/kafka/kafka.h"
#include "infra/pg/readmodel.h"
#include "infra/base/log.h"
#include "infra/components/replies.h"
#include "infra/crypto/codecrypt.h"
#include "projections/sessions.h"
#include "projections/user_views.h"

#define MAX_HOSTS 64
#define HEALTH_EVERY_MS 2000
#define JWKS_RELOAD_GAP_MS 5000

/* --- endpoints ----------------------------------------------------------- */

typedef enum {
    EP_HEALTHZ,
    EP_READYZ,
    EP_ADD_OTP_SMS,
    EP_REMOVE_OTP_SMS,
    EP_LIST_AUTH_FACTORS,
    EP_SET_PHONE,
    EP_VERIFY_PHONE,
    EP_REMOVE_PHONE,
    EP_GET_MY_USER,
    EP_GET_MY_PHONE,
    EP_RESEND_PHONE,
    EP_CREATE_SESSION,
    EP_SET_SESSION,
    EP_GET_SESSION
} ep_id;

typedef struct {
    const char *path;
    const char *method;
    ep_id id;
    dom_cmd_type cmd;   /* DOM_CMD_UNKNOWN: not a command */
    bool body;          /* the request message is read from the body (body: "*") */
    const char *allow;  /* every method of the path, for 405's Allow */
} endpoint;

/* Paths and methods of ZITADEL's Auth API v1 (proto/zitadel/auth.proto),
 * under its /auth/v1 prefix. Endpoints without `body: "*"` there ignore
 * the body, as grpc-gateway does. */
#define OTP_SMS "/auth/v1/users/me/auth_factors/otp_sms"
#define PHONE "/auth/v1/users/me/phone"
/* /v2/sessions/<id>: the id is taken out of the path (session_id_of). */
#define SESSION_PREFIX "/v2/sessions/"
#define SESSION_PATH SESSION_PREFIX "{sessionId}"
static const endpoint endpoints[] = {
    {"/healthz", "GET", EP_HEALTHZ, DOM_CMD_UNKNOWN, false, "GET, HEAD"},
    {"/healthz", "HEAD", EP_HEALTHZ, DOM_CMD_UNKNOWN, false, "GET, HEAD"},
    {"/readyz", "GET", EP_READYZ, DOM_CMD_UNKNOWN, false, "GET, HEAD"},
    {"/readyz", "HEAD", EP_READYZ, DOM_CMD_UNKNOWN, false, "GET, HEAD"},
    {OTP_SMS, "POST", EP_ADD_OTP_SMS, DOM_CMD_ADD_OTP_SMS, true, "POST, DELETE"},
    {OTP_SMS, "DELETE", EP_REMOVE_OTP_SMS, DOM_CMD_REMOVE_OTP_SMS, false, "POST, DELETE"},
    {"/auth/v1/users/me/auth_factors/_search", "POST", EP_LIST_AUTH_FACTORS, DOM_CMD_UNKNOWN, false, "POST"},
    {PHONE, "GET", EP_GET_MY_PHONE, DOM_CMD_UNKNOWN, false, "GET, PUT, DELETE"},
    {PHONE, "PUT", EP_SET_PHONE, DOM_CMD_SET_PHONE, true, "GET, PUT, DELETE"},
    {PHONE, "DELETE", EP_REMOVE_PHONE, DOM_CMD_REMOVE_PHONE, false, "GET, PUT, DELETE"},
    {PHONE "/_verify", "POST", EP_VERIFY_PHONE, DOM_CMD_VERIFY_PHONE, true, "POST"},
    {PHONE "/_resend_verification", "POST", EP_RESEND_PHONE, DOM_CMD_RESEND_PHONE_CODE, true, "POST"},
    {"/auth/v1/users/me", "GET", EP_GET_MY_USER, DOM_CMD_UNKNOWN, false, "GET"},
    /* ZITADEL's session service v2 (proto/zitadel/session/v2/session_service.proto) */
    {"/v2/sessions", "POST", EP_CREATE_SESSION, DOM_CMD_CREATE_SESSION, true, "POST"},
    {SESSION_PATH, "GET", EP_GET_SESSION, DOM_CMD_UNKNOWN, false, "GET, PATCH"},
    {SESSION_PATH, "PATCH", EP_SET_SESSION, DOM_CMD_SET_SESSION, true, "GET, PATCH"},
};
#define N_ENDPOINTS (sizeof endpoints / sizeof endpoints[0])

/* --- the gateway --------------------------------------------------------- */

typedef struct {
    char host[256];
    char instance[DOM_ID_MAX];
} host_entry;

struct es_gateway {
    const es_config *cfg;
    /* The token keys: verifications hold the lock shared; a reload of
     * FACTORD_JWKS_FILE (the health thread) swaps them exclusively. */
    pthread_rwlock_t keys_lock;
    es_jwks *keys;
    atomic_bool keys_wanted;     /* a token named a kid the keys lack */
    int64_t keys_due_ms;         /* next periodic reload (health thread) */
    int64_t keys_tried_ms;       /* last reload (health thread) */
    char *issuer, *audience;
    host_entry hosts[MAX_HOSTS];
    size_t n_hosts;
    es_http *http;
    es_replies *replies;
    /* Sends hold it shared; stopping takes it exclusively once, so no send
     * is in progress when the replies are torn down. */
    pthread_rwlock_t send_lock;
    bool stopping; /* under send_lock */
    /* PostgreSQL for ListMyAuthFactors: one connection per HTTP thread. */
    pthread_mutex_t pg_mu;
    es_readmodel **pg;
    bool *pg_busy;
    size_t n_pg;
    /* Readiness, refreshed by the health thread. */
    atomic_bool pg_ok, kafka_ok, health_stop;
    es_readmodel *health_pg;
    pthread_t health_thread;
    bool health_started;
    bool offline; /* es_gateway_offline_new: no Kafka, no PostgreSQL, no sockets */
};

typedef struct {
    es_gateway *gw;
    const endpoint *ep;
    char instance[DOM_ID_MAX];
    es_jwt_claims claims;
    char cmd_id[DOM_UUID_LEN + 1];
    /* The session routes: the session's id (from the path, or new), the
     * new token that the answer hands out (its hash goes in the command),
     * and whether an OTP-SMS challenge was asked for. */
    char session_id[DOM_ID_MAX];
    char session_token[ES_SESSION_TOKEN_LEN + 1];
    bool challenge;
} gw_req;

static bool is_session_ep(const endpoint *ep)
{
    return ep->id == EP_CREATE_SESSION || ep->id == EP_SET_SESSION || ep->id == EP_GET_SESSION;
}

/* --- responses ----------------------------------------------------------- */

static void respond_json(es_http_req *req, unsigned status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        abort();
    es_http_respond(req, status, text, strlen(text));
}

/* google.rpc.Status with factord's ErrorDetail (id), for the gateway's own
 * refusals; the HTTP status follows the code unless given. */
static void respond_status(es_http_req *req, unsigned http, int code, const char *id, const char *message)
{
    respond_json(req, http ? http : (unsigned)dom_grpc_http_status(code), dom_status_body(code, id, message));
}

/* google.rpc.Status without details, as grpc-gateway renders errors that
 * carry no ZITADEL id (routing, request validation). */
static void respond_plain(es_http_req *req, unsigned http, int code, const char *message)
{
    respond_json(req, http, json_pack("{s:i, s:s}", "code", code, "message", message));
}

static void respond_token_invalid(es_http_req *req, const char *why)
{
    es_http_req_log(req, "auth_error", why);
    es_http_req_add_header(req, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
    respond_json(req, 401, dom_rej_body(DOM_REJ_TOKEN_INVALID, NULL));
}

static void respond_unavailable(es_http_req *req, const char *what)
{
    respond_status(req, 0, DOM_GRPC_UNAVAILABLE, "FACTORD-GwUna", what);
}

/* --- host mapping -------------------------------------------------------- */

static void trim(char *s)
{
    size_t n = strlen(s), i = 0;
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    while (isspace((unsigned char)s[i]))
        i++;
    memmove(s, s + i, n - i + 1);
}

static es_result parse_host_map(const char *text, host_entry *out, size_t *n, es_error *err)
{
    *n = 0;
    if (!text)
        return ES_OK;
    char *copy = strdup(text), *save = NULL;
    if (!copy)
        abort();
    es_result rc = ES_OK;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) {
            rc = es_error_set(err, ES_EINVAL, "FACTORD_HOST_MAP: \"%.60s\" is not host=instance", item);
            break;
        }
        *eq = '\0';
        char *host = item, *inst = eq + 1;
        trim(host);
        trim(inst);
        if (!*host || !*inst || strlen(host) >= sizeof out[0].host || strlen(inst) >= DOM_ID_MAX) {
            rc = es_error_set(err, ES_EINVAL, "FACTORD_HOST_MAP: empty or too long host or instance in \"%.60s\"",
                              item);
            break;
        }
        if (*n == MAX_HOSTS) {
            rc = es_error_set(err, ES_EINVAL, "FACTORD_HOST_MAP: more than %d hosts", MAX_HOSTS);
            break;
        }
        for (char *c = host; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        for (size_t i = 0; i < *n; i++)
            if (strcmp(out[i].host, host) == 0) {
                rc = es_error_set(err, ES_EINVAL, "FACTORD_HOST_MAP: host %.60s appears twice", host);
                break;
            }
        if (rc != ES_OK)
            break;
        snprintf(out[*n].host, sizeof out[0].host, "%s", host);
        snprintf(out[*n].instance, sizeof out[0].instance, "%s", inst);
        (*n)++;
    }
    if (rc == ES_OK && *n == 0)
        rc = es_error_set(err, ES_EINVAL, "FACTORD_HOST_MAP: no host=instance entry");
    free(copy);
    return rc;
}

es_result es_gateway_check_host_map(const char *text, es_error *err)
{
    host_entry hosts[MAX_HOSTS];
    size_t n;
    return parse_host_map(text, hosts, &n, err);
}

/* The instance for Host: exact host[:port] first, then the host alone. */
static bool instance_for(const es_gateway *gw, const char *host, char *out)
{
    if (gw->n_hosts == 0) {
        snprintf(out, DOM_ID_MAX, "%s", gw->cfg->instance_id);
        return true;
    }
    if (!host || !*host || strlen(host) >= 256)
        return false;
    char h[256];
    size_t n = strlen(host);
    for (size_t i = 0; i <= n; i++)
        h[i] = (char)tolower((unsigned char)host[i]);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < gw->n_hosts; i++)
            if (strcmp(gw->hosts[i].host, h) == 0) {
                snprintf(out, DOM_ID_MAX, "%s", gw->hosts[i].instance);
                return true;
            }
        /* Without the port: "auth.example.com:443" -> "auth.example.com",
         * "[::1]:8080" -> "[::1]". */
        char *colon = strrchr(h, ':');
        if (!colon || (h[0] == '[' && colon < strchr(h, ']')))
            break;
        *colon = '\0';
    }
    return false;
}

/* --- readiness and PostgreSQL ------------------------------------------- */

/* Reload FACTORD_JWKS_FILE when it is due (every FACTORD_JWKS_REFRESH_S)
 * or asked for by an unknown kid, but never twice within
 * JWKS_RELOAD_GAP_MS: a stream of made-up kids costs one file read per
 * gap. A file that cannot be read or parsed leaves the keys as they were.
 * Health thread only. */
static void reload_keys(es_gateway *gw)
{
    const es_config *cfg = gw->cfg;
    if (!cfg->jwks_file || !*cfg->jwks_file)
        return; /* the development key does not change */
    int64_t now = es_clock_mono_ms();
    bool wanted = atomic_load(&gw->keys_wanted);
    bool due = cfg->jwks_refresh_s > 0 && now >= gw->keys_due_ms;
    if ((!wanted && !due) || now - gw->keys_tried_ms < JWKS_RELOAD_GAP_MS)
        return;
    atomic_store(&gw->keys_wanted, false);
    gw->keys_tried_ms = now;
    gw->keys_due_ms = now + cfg->jwks_refresh_s * 1000;
    es_jwks *fresh = NULL;
    es_error err = {0};
    if (es_jwks_load_file(cfg->jwks_file, &fresh, &err) != ES_OK) {
        es_warn("cannot reload the token keys; keeping the ones in use", "error", err.text);
        return;
    }
    pthread_rwlock_wrlock(&gw->keys_lock);
    es_jwks *old = gw->keys;
    gw->keys = fresh;
    pthread_rwlock_unlock(&gw->keys_lock);
    es_log(wanted ? ES_LOG_INFO : ES_LOG_DEBUG, "token keys reloaded", "keys",
           es_log_i64((long long)es_jwks_count(fresh)), "was", es_log_i64((long long)es_jwks_count(old)), "why",
           wanted ? "a token named an unknown kid" : "periodic", (const char *)NULL);
    es_jwks_free(old);
}

static void *health_main(void *arg)
{
    es_gateway *gw = arg;
    es_log_set_component("gateway");
    gw->keys_due_ms = es_clock_mono_ms() + gw->cfg->jwks_refresh_s * 1000;
    while (!atomic_load(&gw->health_stop)) {
        bool pg = es_readmodel_ping(&gw->health_pg, gw->cfg->database_url);
        bool kafka = es_replies_ping(gw->replies, 1000);
        if (pg != atomic_load(&gw->pg_ok) || kafka != atomic_load(&gw->kafka_ok))
            es_log(pg && kafka ? ES_LOG_INFO : ES_LOG_WARN, "readiness changed", "postgres",
                   pg ? "ok" : "unreachable", "kafka", kafka ? "ok" : "unreachable", (const char *)NULL);
        atomic_store(&gw->pg_ok, pg);
        atomic_store(&gw->kafka_ok, kafka);
        for (int i = 0; i < HEALTH_EVERY_MS / 100 && !atomic_load(&gw->health_stop); i++) {
            reload_keys(gw);
            es_sleep_ms(100);
        }
    }
    return NULL;
}

static es_readmodel *pg_acquire(es_gateway *gw, size_t *slot)
{
    pthread_mutex_lock(&gw->pg_mu);
    size_t i = 0;
    while (i < gw->n_pg && gw->pg_busy[i])
        i++;
    if (i == gw->n_pg) { /* cannot happen: one per HTTP thread */
        pthread_mutex_unlock(&gw->pg_mu);
        return NULL;
    }
    gw->pg_busy[i] = true;
    pthread_mutex_unlock(&gw->pg_mu);
    *slot = i;
    if (gw->pg[i] && !es_readmodel_usable(gw->pg[i])) {
        es_readmodel_free(gw->pg[i]);
        gw->pg[i] = NULL;
    }
    /* Known to be down: answer at once instead of waiting for a connect. */
    if (!gw->pg[i] && atomic_load(&gw->pg_ok))
        gw->pg[i] = es_readmodel_connect(gw->cfg->database_url);
    return gw->pg[i];
}

static void pg_release(es_gateway *gw, size_t slot)
{
    pthread_mutex_lock(&gw->pg_mu);
    gw->pg_busy[slot] = false;
    pthread_mutex_unlock(&gw->pg_mu);
}

static void respond_readyz(es_gateway *gw, es_http_req *req)
{
    bool pg = atomic_load(&gw->pg_ok), kafka = atomic_load(&gw->kafka_ok);
    respond_json(req, pg && kafka ? 200 : 503,
                 json_pack("{s:s, s:s, s:s}", "status", pg && kafka ? "ok" : "unavailable", "postgres",
                           pg ? "ok" : "unreachable", "kafka", kafka ? "ok" : "unreachable"));
}

/* ListMyAuthFactors: the read model's rows of the token's user. A user who
 * is unknown, not active, or of another organisation than the token says
 * gets AUTH-7fs1e, as every self-service call (docs/errors.md). */
/* Whether the caller's user may be shown: known, active and of the
 * token's organisation; else answers 401 as token verification would. */
static bool user_visible(es_http_req *req, const gw_req *g, bool found, const char *status, const char *owner)
{
    if (found && strcmp(status, "active") == 0 && (!g->claims.org[0] || strcmp(owner, g->claims.org) == 0))
        return true;
    respond_token_invalid(req, "user unknown, not active or of another organisation");
    return false;
}

/* Run one read-model query for the request on a pooled connection; false
 * after answering 503 (no connection, or the query failed). */
typedef es_result (*read_fn)(es_readmodel *c, const gw_req *g, void *out, es_error *err);

static bool read_model(es_gateway *gw, es_http_req *req, const gw_req *g, read_fn fn, void *out)
{
    size_t slot = 0;
    es_readmodel *c = pg_acquire(gw, &slot);
    es_error err = {0};
    es_result rc = c ? fn(c, g, out, &err) : ES_ETRANSIENT;
    pg_release(gw, slot);
    if (rc == ES_OK)
        return true;
    if (c)
        es_warn("read-model query failed", "path", g->ep->path, "error", err.text, "sqlstate", err.sqlstate);
    respond_unavailable(req, "The read model is unavailable");
    return false;
}

static es_result read_factors(es_readmodel *c, const gw_req *g, void *out, es_error *err)
{
    return es_readmodel_auth_factors(c, g->instance, g->claims.sub, out, err);
}

static es_result read_user(es_readmodel *c, const gw_req *g, void *out, es_error *err)
{
    return es_readmodel_user_view(c, g->instance, g->claims.sub, out, err);
}

static void list_auth_factors(es_gateway *gw, es_http_req *req, const gw_req *g)
{
    es_user_auth_factors *u = malloc(sizeof *u);
    if (!u)
        abort();
    if (!read_model(gw, req, g, read_factors, u) || !user_visible(req, g, u->found, u->status, u->resource_owner)) {
        free(u);
        return;
    }
    /* As ZITADEL's gateway (protojson without EmitUnpopulated): an empty
     * list is {}. */
    json_t *body = json_object(), *result = json_array();
    for (size_t i = 0; i < u->n; i++) {
        json_t *f = json_pack("{s:s}", "state", u->factors[i].state);
        json_object_set_new(f, u->factors[i].type, json_object());
        json_array_append_new(result, f);
    }
    free(u);
    if (json_array_size(result))
        json_object_set_new(body, "result", result);
    else
        json_decref(result);
    respond_json(req, 200, body);
}

/* GetMyUser ({"user":{…}}) and GetMyPhone ({"details":{…},"phone":{…}})
 * from the user read model. A user the write side knows but the
 * projector has not yet shown (its addition is still on its way) is
 * ZITADEL's "not found" of these queries. */
static void get_user_view(es_gateway *gw, es_http_req *req, const gw_req *g)
{
    es_user_view_row *u = malloc(sizeof *u);
    proj_user_view *v = malloc(sizeof *v);
    if (!u || !v)
        abort();
    if (!read_model(gw, req, g, read_user, u) || !user_visible(req, g, u->found, u->status, u->resource_owner))
        goto out;
    if (!u->has_view) {
        respond_status(req, 0, DOM_GRPC_NOT_FOUND, g->ep->id == EP_GET_MY_PHONE ? "QUERY-DAvb3" : "QUERY-Dfbg2",
                       "User could not be found");
        goto out;
    }
    memset(v, 0, sizeof *v);
    snprintf(v->instance_id, sizeof v->instance_id, "%s", g->instance);
    snprintf(v->user_id, sizeof v->user_id, "%s", g->claims.sub);
    snprintf(v->resource_owner, sizeof v->resource_owner, "%s", u->view_owner);
    snprintf(v->state, sizeof v->state, "%s", u->state);
    v->human = u->human;
    v->sequence = u->sequence;
    v->created_at_us = u->created_at_us;
    v->changed_at_us = u->changed_at_us;
    if (g->ep->id == EP_GET_MY_PHONE)
        respond_json(req, 200, json_pack("{s:o, s:o}", "details", proj_user_view_details_json(v), "phone",
                                         proj_user_view_phone_json(v)));
    else
        respond_json(req, 200, json_pack("{s:o}", "user", proj_user_view_to_json(v)));
out:
    free(u);
    free(v);
}

/* --- request checks ------------------------------------------------------ */

static bool canonical_uuid(const char *in, char out[DOM_UUID_LEN + 1])
{
    if (strlen(in) != DOM_UUID_LEN)
        return false;
    for (int i = 0; i < DOM_UUID_LEN; i++) {
        char c = in[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!isxdigit((unsigned char)c))
            return false;
        out[i] = (char)tolower((unsigned char)c);
    }
    out[DOM_UUID_LEN] = '\0';
    return true;
}

static bool is_json_type(const char *ct)
{
    /* application/json, optionally with parameters (charset=utf-8) */
    static const char want[] = "application/json";
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, want, sizeof want - 1) != 0)
        return false;
    ct += sizeof want - 1;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static bool has_body(es_http_req *req)
{
    const char *cl = es_http_req_header(req, "Content-Length", NULL);
    const char *te = es_http_req_header(req, "Transfer-Encoding", NULL);
    return te || (cl && strtoull(cl, NULL, 10) > 0);
}

/* The bearer token of the request: exactly one Authorization header,
 * "Bearer <token>" (scheme case-insensitive). */
static const char *bearer(es_http_req *req, size_t *len, const char **why)
{
    unsigned count = 0;
    const char *h = es_http_req_header(req, "Authorization", &count);
    if (!h || count == 0) {
        *why = "no Authorization header";
        return NULL;
    }
    if (count > 1) {
        *why = "more than one Authorization header";
        return NULL;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        *why = "Authorization is not a Bearer token";
        return NULL;
    }
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    if (n == 0) {
        *why = "empty bearer token";
        return NULL;
    }
    *len = n;
    return h;
}

static void free_gw_req(void *p)
{
    if (p)
        explicit_bzero(p, sizeof(gw_req)); /* a session token */
    free(p);
}

/* The id of /v2/sessions/<id> (one path segment, not empty), or NULL. */
static const char *session_id_of(const char *path)
{
    size_t n = sizeof SESSION_PREFIX - 1;
    if (strncmp(path, SESSION_PREFIX, n) != 0 || path[n] == '\0' || strchr(path + n, '/'))
        return NULL;
    return path + n;
}

/* Whether sub is listed in FACTORD_SESSION_CALLERS ("a,b,..."; blanks
 * around the names are ignored). */
static bool session_caller(const es_gateway *gw, const char *sub)
{
    const char *list = gw->cfg->session_callers;
    size_t n = strlen(sub);
    while (list && *list) {
        while (*list == ' ' || *list == ',')
            list++;
        const char *end = list;
        while (*end && *end != ',')
            end++;
        const char *last = end;
        while (last > list && last[-1] == ' ')
            last--;
        if ((size_t)(last - list) == n && n > 0 && memcmp(list, sub, n) == 0)
            return true;
        list = end;
    }
    return false;
}

static void on_headers(es_http_req *req, void *ctx)
{
    es_gateway *gw = ctx;
    const char *method = es_http_req_method(req), *path = es_http_req_path(req);
    const endpoint *ep = NULL, *same_path = NULL;
    const char *session_id = session_id_of(path);
    if (session_id)
        path = SESSION_PATH;
    for (size_t i = 0; i < N_ENDPOINTS; i++) {
        if (strcmp(endpoints[i].path, path) != 0)
            continue;
        same_path = &endpoints[i];
        if (strcmp(endpoints[i].method, method) == 0) {
            ep = &endpoints[i];
            break;
        }
    }
    /* Routing errors as ZITADEL's gateway renders them. */
    if (!ep && same_path) {
        es_http_req_add_header(req, "Allow", same_path->allow);
        respond_plain(req, 405, 12, "Method Not Allowed");
        return;
    }
    if (!ep) {
        respond_plain(req, 404, 5, "Not Found");
        return;
    }
    if (ep->id == EP_HEALTHZ) {
        respond_json(req, 200, json_pack("{s:s}", "status", "ok"));
        return;
    }
    if (ep->id == EP_READYZ) {
        respond_readyz(gw, req);
        return;
    }

    gw_req *g = calloc(1, sizeof *g);
    if (!g)
        abort();
    g->gw = gw;
    g->ep = ep;
    es_http_req_set_user(req, g, free_gw_req);
    if (!instance_for(gw, es_http_req_header(req, "Host", NULL), g->instance)) {
        respond_status(req, 0, DOM_GRPC_NOT_FOUND, "FACTORD-GwHst", "No instance is served at this host");
        return;
    }

    size_t tlen = 0;
    const char *why = NULL;
    const char *token = bearer(req, &tlen, &why);
    es_error err = {0};
    es_jwt_policy pol = {.issuer = gw->issuer, .audience = gw->audience, .leeway_s = gw->cfg->token_leeway_s,
                         .now_s = es_clock_now_us() / 1000000};
    if (!token) {
        respond_token_invalid(req, why);
        return;
    }
    pthread_rwlock_rdlock(&gw->keys_lock);
    es_result vr = es_jwt_verify(gw->keys, token, tlen, &pol, &g->claims, &err);
    pthread_rwlock_unlock(&gw->keys_lock);
    if (vr != ES_OK) {
        /* A key the identity provider may have added since the last read:
         * ask for a reload (at most one every JWKS_RELOAD_GAP_MS). */
        if (strstr(err.text, "no key with this kid") || strstr(err.text, "not exactly one"))
            atomic_store(&gw->keys_wanted, true);
        respond_token_invalid(req, err.text);
        return;
    }
    es_http_req_log(req, "user", g->claims.sub);

    if (is_session_ep(ep)) {
        /* ZITADEL asks for the session.write (session.read) permission;
         * factord keeps no grants: the callers are configured. */
        if (!session_caller(gw, g->claims.sub)) {
            es_http_req_log(req, "auth_error", "not a session caller (FACTORD_SESSION_CALLERS)");
            respond_status(req, 0, DOM_GRPC_PERMISSION_DENIED, "AUTH-5mWD2", "No matching permissions found");
            return;
        }
        if (session_id) {
            /* Ids are factord's UUIDs; anything else names no session. */
            if (strlen(session_id) >= sizeof g->session_id ||
                strspn(session_id, "0123456789abcdefABCDEF-") != strlen(session_id)) {
                respond_status(req, 0, DOM_GRPC_NOT_FOUND, "QUERY-SFeaa", "Session does not exist");
                return;
            }
            snprintf(g->session_id, sizeof g->session_id, "%s", session_id);
            es_http_req_log(req, "session", g->session_id);
        }
        if (es_http_req_header(req, "Idempotency-Key", NULL)) {
            respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwIdk",
                           "Idempotency-Key is not taken on the session API");
            return;
        }
    }

    if (ep->cmd != DOM_CMD_UNKNOWN) {
        unsigned count = 0;
        const char *key = es_http_req_header(req, "Idempotency-Key", &count);
        if (key && (count > 1 || !canonical_uuid(key, g->cmd_id))) {
            respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwIdk",
                           "Idempotency-Key must be one UUID");
            return;
        }
        if (!key) {
            uuid_t u;
            uuid_generate_random(u);
            uuid_unparse_lower(u, g->cmd_id);
        }
        es_http_req_log(req, "command_id", g->cmd_id);
    }
    if (ep->body && has_body(req)) {
        unsigned count = 0;
        const char *ct = es_http_req_header(req, "Content-Type", &count);
        if (!ct || count != 1 || !is_json_type(ct)) {
            respond_status(req, 415, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwTyp",
                           "Content-Type must be application/json");
            return;
        }
    }
}

/* --- commands and replies ----------------------------------------------- */

/* A session command's success reply ({"details":…,"code"?}) as ZITADEL's
 * CreateSessionResponse or SetSessionResponse: the details, the session's
 * id (CreateSession), the new token, and the challenges asked for
 * ({"otpSms":"<code>"} with returnCode, {} without). */
static bool session_answer(es_http_req *req, const gw_req *g, const char *text, size_t len)
{
    json_t *reply = json_loadb(text, len, 0, NULL);
    json_t *details = json_object_get(reply, "details");
    if (!json_is_object(details)) {
        json_decref(reply);
        return false;
    }
    json_t *out = json_pack("{s:O}", "details", details);
    if (g->ep->id == EP_CREATE_SESSION)
        json_object_set_new(out, "sessionId", json_string(g->session_id));
    json_object_set_new(out, "sessionToken", json_string(g->session_token));
    if (g->challenge) {
        json_t *ch = json_object();
        const json_t *code = json_object_get(reply, "code");
        if (json_is_string(code))
            json_object_set(ch, "otpSms", (json_t *)code);
        json_object_set_new(out, "challenges", ch);
    }
    json_decref(reply);
    respond_json(req, 200, out);
    return true;
}

static void on_reply(void *ctx, es_reply_outcome outcome, int http_status, const char *body, size_t len)
{
    es_http_req *req = ctx;
    const gw_req *g = es_http_req_user(req);
    switch (outcome) {
    case ES_REPLY_OK: {
        if (http_status == 200 && g && is_session_ep(g->ep)) {
            if (!session_answer(req, g, body, len))
                respond_status(req, 0, DOM_GRPC_INTERNAL, "FACTORD-GwRep", "The command's reply is malformed");
            return;
        }
        char *copy = malloc(len ? len : 1);
        if (!copy)
            abort();
        memcpy(copy, body, len);
        es_http_respond(req, (unsigned)http_status, copy, len);
        return;
    }
    case ES_REPLY_TIMEOUT:
        /* The session routes take no Idempotency-Key: a session whose
         * answer was lost is abandoned (its token was never handed out). */
        respond_status(req, 0, DOM_GRPC_DEADLINE_EXCEEDED, "FACTORD-GwTmo",
                       g && is_session_ep(g->ep)
                           ? "No answer in time; the change may still take effect: read the session to learn "
                             "its state"
                           : "No answer in time; the command may still take effect: retry with the same "
                             "Idempotency-Key to learn its outcome");
        return;
    case ES_REPLY_UNAVAILABLE:
        respond_unavailable(req, "The command service is unavailable (Kafka did not take the command)");
        return;
    case ES_REPLY_MALFORMED:
        respond_status(req, 0, DOM_GRPC_INTERNAL, "FACTORD-GwRep", "The command's reply is malformed");
        return;
    case ES_REPLY_SHUTDOWN:
        respond_unavailable(req, "The gateway is shutting down");
        return;
    }
}

static size_t runes(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* A string field of the request message: absent or null = "" (proto3). */
static bool string_field(const json_t *body, const char *name, const char **out)
{
    const json_t *v = json_object_get(body, name);
    *out = "";
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    *out = json_string_value(v);
    return true;
}

/* Copy at most dst_len-1 bytes, never splitting a UTF-8 character. */
static void copy_utf8(char *dst, size_t dst_len, const char *src)
{
    size_t n = strlen(src);
    if (n >= dst_len) {
        n = dst_len - 1;
        while (n && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The request message: *body gets the JSON object, or NULL for an empty
 * body (proto3: all fields unset); false after answering 400. */
static bool read_body(es_http_req *req, json_t **body)
{
    size_t len = 0;
    const char *text = es_http_req_body(req, &len);
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    *body = NULL;
    if (i < len) {
        json_error_t jerr;
        *body = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(*body)) {
            json_decref(*body);
            *body = NULL;
            respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwJsn",
                           "The request body is not a JSON object");
            return false;
        }
    }
    return true;
}

/* Fill cmd's payload from the body; false after answering 400. */
static bool read_payload(es_http_req *req, const gw_req *g, dom_cmd *cmd)
{
    json_t *body = NULL;
    if (!read_body(req, &body))
        return false;
    const char *s = "";
    bool ok = true;
    if (g->ep->id == EP_SET_PHONE) {
        if (!string_field(body, "phone", &s)) {
            respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwJsn", "phone must be a string");
            ok = false;
        } else if (runes(s) < 1 || runes(s) > 50) {
            /* ZITADEL's request validation (protoc-gen-validate) */
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid SetMyPhoneRequest.Phone: value length must be between 1 and 50 runes, inclusive");
            ok = false;
        } else if (s[0] != '+') {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid SetMyPhoneRequest.Phone: value does not have prefix \"+\"");
            ok = false;
        } else
            copy_utf8(cmd->phone, sizeof cmd->phone, s);
    } else if (g->ep->id == EP_VERIFY_PHONE) {
        if (!string_field(body, "code", &s)) {
            respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwJsn", "code must be a string");
            ok = false;
        } else if (runes(s) < 1 || runes(s) > 200) {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid VerifyMyPhoneRequest.Code: value length must be between 1 and 200 runes, "
                          "inclusive");
            ok = false;
        } else {
            /* Codes have at most 12 digits: a longer input is cut to the
             * command's limit, which still never matches, so the outcome
             * (Code is invalid, a failed attempt) is ZITADEL's. */
            copy_utf8(cmd->code, sizeof cmd->code, s);
        }
    }
    /* Other fields are ignored, as ZITADEL's gateway discards unknown ones;
     * returnCode in particular is never taken from a caller. */
    json_decref(body);
    return ok;
}

/* Produce cmd (freed here) keyed by its user and await its reply
 * (on_reply answers). */
static void send_command(es_gateway *gw, es_http_req *req, const gw_req *g, dom_cmd *cmd)
{
    char key[DOM_ID_MAX];
    snprintf(key, sizeof key, "%s", cmd->user_id);
    json_t *j = dom_cmd_to_json(cmd, true);
    char *value = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    free(cmd);
    if (!value)
        abort();
    es_http_req_add_header(req, "Factord-Command-Id", g->cmd_id);
    if (gw->offline) { /* es_gateway_offline_new: what would be sent */
        es_http_respond(req, 202, value, strlen(value));
        return;
    }

    es_error err = {0};
    pthread_rwlock_rdlock(&gw->send_lock);
    if (gw->stopping) {
        pthread_rwlock_unlock(&gw->send_lock);
        free(value);
        respond_unavailable(req, "The gateway is shutting down");
        return;
    }
    /* After a successful send, req belongs to the reply callback. */
    es_result rc = es_replies_send(gw->replies, gw->cfg->commands_topic, key, strlen(key),
                                   value, strlen(value), g->cmd_id, on_reply, req, &err);
    pthread_rwlock_unlock(&gw->send_lock);
    free(value);
    if (rc == ES_ECONFLICT)
        respond_status(req, 0, 10 /* Aborted */, "FACTORD-GwBsy",
                       "A request with this Idempotency-Key is in progress");
    else if (rc != ES_OK)
        respond_status(req, 0, DOM_GRPC_INTERNAL, "FACTORD-GwInt", "The command could not be sent");
}

/* --- sessions (ZITADEL's session service v2) ----------------------------- */

typedef struct {
    proj_session s;
    char login_name[DOM_TEXT_MAX];
} session_view;

static void fold_session(void *ctx, const dom_evt *evt, const char *user_name)
{
    session_view *v = ctx;
    bool was = v->s.found;
    proj_session_apply(&v->s, evt);
    if (!was && v->s.found)
        copy_utf8(v->login_name, sizeof v->login_name, user_name);
}

static es_result read_session(es_readmodel *c, const gw_req *g, void *out, es_error *err)
{
    session_view *v = out;
    memset(v, 0, sizeof *v);
    snprintf(v->s.session_id, sizeof v->s.session_id, "%s", g->session_id);
    return es_readmodel_session_events(c, g->instance, g->session_id, fold_session, v, err);
}

typedef struct {
    const char *login_name;
    bool found;
    char user_id[DOM_ID_MAX];
} login_lookup;

static es_result read_login_name(es_readmodel *c, const gw_req *g, void *out, es_error *err)
{
    login_lookup *l = out;
    return es_readmodel_user_by_login_name(c, g->instance, l->login_name, &l->found, l->user_id, err);
}

/* Whether the caller may read or change the session: its current token
 * (sessionToken) when one is given, else being the caller that created
 * it. false after answering 404 or 403. */
static bool session_allowed(es_http_req *req, const gw_req *g, const session_view *v, const char *token)
{
    if (!v->s.found) {
        respond_status(req, 0, DOM_GRPC_NOT_FOUND, "QUERY-SFeaa", "Session does not exist");
        return false;
    }
    if (token && token[0]) {
        char hash[DOM_TOKEN_HASH_LEN + 1];
        es_session_token_hash(token, strlen(token), hash);
        if (!dom_secret_equal(hash, v->s.token_hash)) {
            es_http_req_log(req, "auth_error", "session token does not match");
            respond_status(req, 0, DOM_GRPC_PERMISSION_DENIED, "COMMAND-sGr42", "Session Token is invalid");
            return false;
        }
        return true;
    }
    if (strcmp(v->s.creator, g->claims.sub) != 0) {
        es_http_req_log(req, "auth_error", "session of another caller, no session token");
        respond_status(req, 0, DOM_GRPC_PERMISSION_DENIED, "AUTH-5mWD2", "No matching permissions found");
        return false;
    }
    return true;
}

static void bad_field(es_http_req *req, const char *field, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be %s", field, what);
    respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-GwJsn", msg);
}

static void unsupported(es_http_req *req, const char *field)
{
    char msg[160];
    snprintf(msg, sizeof msg, "%s is not supported by factord", field);
    respond_status(req, 0, 12 /* Unimplemented */, "FACTORD-SsUns", msg);
}

/* An optional member that must be an object (or null, as unset). */
static bool object_member(es_http_req *req, const json_t *obj, const char *key, const char *field,
                          const json_t **out)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_object(v)) {
        bad_field(req, field, "an object");
        return false;
    }
    *out = v;
    return true;
}

/* The parts of a CreateSession or SetSession request that factord serves:
 * checks.user (userId or loginName), checks.otpSms.code,
 * challenges.otpSms.returnCode, and SetSession's sessionToken. Every other
 * check, challenge, the lifetime and the metadata are refused (501) rather
 * than ignored; the user agent is ignored. false after answering. */
typedef struct {
    const char *user_id, *login_name; /* checks.user, "" = not given */
    bool has_user;
    const char *code;                 /* checks.otpSms.code; NULL = no check */
    bool challenge, return_code;      /* challenges.otpSms */
    const char *token;                /* sessionToken, "" = not given */
} session_body;

static bool parse_session_body(es_http_req *req, const json_t *body, session_body *b)
{
    static const char *const refused[] = {"metadata", "lifetime"};
    static const char *const checks_refused[] = {"password", "webAuthN", "idpIntent", "totp", "otpEmail"};
    static const char *const challenges_refused[] = {"webAuthN", "otpEmail"};
    memset(b, 0, sizeof *b);
    b->user_id = b->login_name = b->token = "";
    const json_t *checks, *challenges, *user, *otp, *ch;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        const json_t *v = json_object_get(body, refused[i]);
        if (v && !json_is_null(v)) {
            unsupported(req, refused[i]);
            return false;
        }
    }
    if (!string_field(body, "sessionToken", &b->token)) {
        bad_field(req, "sessionToken", "a string");
        return false;
    }
    if (!object_member(req, body, "checks", "checks", &checks) ||
        !object_member(req, body, "challenges", "challenges", &challenges) ||
        !object_member(req, checks, "user", "checks.user", &user) ||
        !object_member(req, checks, "otpSms", "checks.otpSms", &otp) ||
        !object_member(req, challenges, "otpSms", "challenges.otpSms", &ch))
        return false;
    for (size_t i = 0; checks && i < sizeof checks_refused / sizeof checks_refused[0]; i++) {
        const json_t *v = json_object_get(checks, checks_refused[i]);
        if (v && !json_is_null(v)) {
            char field[40];
            snprintf(field, sizeof field, "checks.%s", checks_refused[i]);
            unsupported(req, field);
            return false;
        }
    }
    for (size_t i = 0; challenges && i < sizeof challenges_refused / sizeof challenges_refused[0]; i++) {
        const json_t *v = json_object_get(challenges, challenges_refused[i]);
        if (v && !json_is_null(v)) {
            char field[40];
            snprintf(field, sizeof field, "challenges.%s", challenges_refused[i]);
            unsupported(req, field);
            return false;
        }
    }
    if (user) {
        b->has_user = true;
        if (!string_field(user, "userId", &b->user_id) || !string_field(user, "loginName", &b->login_name)) {
            bad_field(req, "checks.user.userId and checks.user.loginName", "strings");
            return false;
        }
        /* ZITADEL's request validation: one of the two (a oneof), 1 to
         * 200 runes. */
        bool by_id = json_object_get(user, "userId") && !json_is_null(json_object_get(user, "userId"));
        bool by_name = json_object_get(user, "loginName") && !json_is_null(json_object_get(user, "loginName"));
        if (by_id && by_name) {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid CheckUser: only one of userId and loginName may be set");
            return false;
        }
        if (!by_name && (runes(b->user_id) < 1 || runes(b->user_id) > 200)) {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid CheckUser.UserId: value length must be between 1 and 200 runes, inclusive");
            return false;
        }
        if (by_name && (runes(b->login_name) < 1 || runes(b->login_name) > 200)) {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid CheckUser.LoginName: value length must be between 1 and 200 runes, inclusive");
            return false;
        }
        if (strlen(b->user_id) >= DOM_ID_MAX) {
            respond_status(req, 0, DOM_GRPC_NOT_FOUND, "QUERY-Dfbg2", "User could not be found");
            return false;
        }
    }
    if (otp) {
        if (!string_field(otp, "code", &b->code)) {
            bad_field(req, "checks.otpSms.code", "a string");
            return false;
        }
        if (runes(b->code) < 1) {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT,
                          "invalid CheckOTP.Code: value length must be at least 1 runes");
            return false;
        }
    }
    if (ch) {
        b->challenge = true;
        const json_t *rc = json_object_get(ch, "returnCode");
        if (rc && !json_is_null(rc) && !json_is_boolean(rc)) {
            bad_field(req, "challenges.otpSms.returnCode", "a boolean");
            return false;
        }
        b->return_code = rc && json_is_true(rc);
    }
    return true;
}

/* CreateSession, SetSession and GetSession. */
static void session_request(es_gateway *gw, es_http_req *req, gw_req *g)
{
    json_t *body = NULL;
    session_view *v = NULL;
    dom_cmd *cmd = NULL;
    session_body b = {.user_id = "", .login_name = "", .token = ""};
    if (g->ep->body && !read_body(req, &body))
        return;
    if (g->ep->body && !parse_session_body(req, body, &b))
        goto out;
    v = calloc(1, sizeof *v);
    cmd = calloc(1, sizeof *cmd);
    if (!v || !cmd)
        abort();

    if (g->ep->id != EP_CREATE_SESSION) {
        /* ZITADEL reads the session's token from GetSession's query; the
         * gateway does not parse queries, so a reader is its creator. */
        if (!read_model(gw, req, g, read_session, v) ||
            !session_allowed(req, g, v, g->ep->id == EP_SET_SESSION ? b.token : NULL))
            goto out;
    }
    if (g->ep->id == EP_GET_SESSION) {
        respond_json(req, 200, json_pack("{s:o}", "session", proj_session_to_json(&v->s, v->login_name)));
        goto out;
    }

    cmd->type = g->ep->cmd;
    memcpy(cmd->id, g->cmd_id, sizeof cmd->id);
    snprintf(cmd->instance_id, sizeof cmd->instance_id, "%s", g->instance);
    snprintf(cmd->creator, sizeof cmd->creator, "%s", g->claims.sub);
    snprintf(cmd->reply_to, sizeof cmd->reply_to, "%s", gw->cfg->gateway_replies_topic);
    if (g->ep->id == EP_CREATE_SESSION) {
        if (!b.has_user) {
            /* ZITADEL opens a session without a user too; factord keeps
             * a session on its user, so the user comes first. */
            respond_status(req, 0, DOM_GRPC_INVALID_ARGUMENT, "FACTORD-SsUsr",
                           "checks.user is required: a session is kept on its user");
            goto out;
        }
        if (b.login_name[0]) {
            login_lookup l = {.login_name = b.login_name};
            if (!read_model(gw, req, g, read_login_name, &l))
                goto out;
            if (!l.found) {
                respond_status(req, 0, DOM_GRPC_NOT_FOUND, "QUERY-Dfbg2", "User could not be found");
                goto out;
            }
            snprintf(cmd->user_id, sizeof cmd->user_id, "%s", l.user_id);
        } else {
            snprintf(cmd->user_id, sizeof cmd->user_id, "%s", b.user_id);
        }
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, g->session_id);
    } else {
        /* checks.user again: the same user, or ZITADEL's refusal. */
        if (b.has_user && !(b.user_id[0] ? strcmp(b.user_id, v->s.user_id) == 0
                                         : strcasecmp(b.login_name, v->login_name) == 0)) {
            respond_plain(req, 400, DOM_GRPC_INVALID_ARGUMENT, "user change not possible");
            goto out;
        }
        snprintf(cmd->user_id, sizeof cmd->user_id, "%s", v->s.user_id);
        if (b.code)
            copy_utf8(cmd->code, sizeof cmd->code, b.code); /* cut as VerifyMyPhone's */
    }
    snprintf(cmd->session_id, sizeof cmd->session_id, "%s", g->session_id);
    cmd->otp_challenge = b.challenge;
    cmd->return_code = b.return_code;
    g->challenge = b.challenge;
    es_error err = {0};
    if (es_session_token_new(g->session_token, cmd->token_hash, &err) != ES_OK) {
        es_err("cannot make a session token", "error", err.text);
        respond_status(req, 0, DOM_GRPC_INTERNAL, "FACTORD-GwInt", "The command could not be sent");
        goto out;
    }
    es_http_req_log(req, "session", g->session_id);
    send_command(gw, req, g, cmd);
    cmd = NULL;
out:
    json_decref(body);
    free(v);
    free(cmd);
}

static void on_request(es_http_req *req, void *ctx)
{
    es_gateway *gw = ctx;
    gw_req *g = es_http_req_user(req);
    if (g->ep->id == EP_LIST_AUTH_FACTORS) {
        list_auth_factors(gw, req, g);
        return;
    }
    if (g->ep->id == EP_GET_MY_USER || g->ep->id == EP_GET_MY_PHONE) {
        get_user_view(gw, req, g);
        return;
    }
    if (is_session_ep(g->ep)) {
        session_request(gw, req, g);
        return;
    }
    dom_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd)
        abort();
    cmd->type = g->ep->cmd;
    memcpy(cmd->id, g->cmd_id, sizeof cmd->id);
    snprintf(cmd->instance_id, sizeof cmd->instance_id, "%s", g->instance);
    snprintf(cmd->user_id, sizeof cmd->user_id, "%s", g->claims.sub);
    snprintf(cmd->resource_owner, sizeof cmd->resource_owner, "%s", g->claims.org);
    snprintf(cmd->reply_to, sizeof cmd->reply_to, "%s", gw->cfg->gateway_replies_topic);
    if (g->ep->body && !read_payload(req, g, cmd)) {
        free(cmd);
        return;
    }
    send_command(gw, req, g, cmd);
}

/* --- life cycle ---------------------------------------------------------- */

int es_gateway_port(const es_gateway *gw) { return es_http_port(gw->http); }

/* A gateway with o's settings and its locks, nothing started: what the
 * running and the offline gateway share. */
static es_gateway *gateway_alloc(const es_gateway_opts *o)
{
    es_gateway *gw = calloc(1, sizeof *gw);
    if (!gw)
        abort();
    gw->cfg = o->cfg;
    gw->keys = o->keys;
    gw->issuer = strdup(o->issuer);
    gw->audience = strdup(o->audience);
    if (!gw->issuer || !gw->audience)
        abort();
    pthread_rwlock_init(&gw->send_lock, NULL);
    pthread_rwlock_init(&gw->keys_lock, NULL);
    pthread_mutex_init(&gw->pg_mu, NULL);
    return gw;
}

es_result es_gateway_start(const es_gateway_opts *o, es_gateway **out, es_error *err)
{
    const es_config *cfg = o->cfg;
    es_gateway *gw = gateway_alloc(o);
    es_result rc = parse_host_map(cfg->host_map, gw->hosts, &gw->n_hosts, err);
    if (rc != ES_OK)
        goto fail;
    /* The reply topic is the gateway's own; the commands topic is the
     * processor's, made here too so that a gateway started first works.
     * Brokers without CreateTopics (the embedded one) or without the right
     * to create are fine as long as the topics exist: es_replies_new says. */
    const char *topics[] = {cfg->commands_topic, cfg->gateway_replies_topic};
    es_error terr = {0};
    es_topic_spec spec = es_kafka_topic_spec(cfg);
    if (!cfg->skip_topic_creation &&
        es_kafka_ensure_topics(cfg->kafka_brokers, topics, 2, &spec, 10000, &terr) != ES_OK)
        es_warn("cannot create the gateway's topics; using them if they exist", "error", terr.text);
    es_replies_opts ro = {.brokers = cfg->kafka_brokers, .reply_topic = cfg->gateway_replies_topic,
                          .timeout_ms = (int)cfg->gateway_timeout_ms, .client_id = "factord-gateway"};
    if ((rc = es_replies_new(&ro, &gw->replies, err)) != ES_OK)
        goto fail;
    gw->n_pg = (size_t)cfg->http_threads;
    gw->pg = calloc(gw->n_pg, sizeof *gw->pg);
    gw->pg_busy = calloc(gw->n_pg, sizeof *gw->pg_busy);
    if (!gw->pg || !gw->pg_busy)
        abort();
    /* Readiness before the first request. */
    atomic_store(&gw->pg_ok, es_readmodel_ping(&gw->health_pg, cfg->database_url));
    atomic_store(&gw->kafka_ok, es_replies_ping(gw->replies, 2000));
    if (pthread_create(&gw->health_thread, NULL, health_main, gw) != 0) {
        rc = es_error_set(err, ES_EFATAL, "cannot start the health thread");
        goto fail;
    }
    gw->health_started = true;

    json_t *tl = dom_status_body(8 /* ResourceExhausted */, "FACTORD-GwBig", "The request body is too large");
    char *too_large = json_dumps(tl, JSON_COMPACT);
    json_decref(tl);
    es_http_opts ho = {.addr = cfg->http_addr, .threads = (unsigned)cfg->http_threads,
                       .max_connections = (unsigned)cfg->http_max_connections,
                       .idle_timeout_s = (unsigned)cfg->http_idle_timeout_s,
                       .max_body = (size_t)cfg->http_max_body_bytes, .too_large_body = too_large,
                       .on_headers = on_headers, .on_request = on_request, .ctx = gw, .component = "gateway",
                       .tls_cert_pem = o->tls_cert_pem, .tls_key_pem = o->tls_key_pem};
    rc = es_http_start(&ho, &gw->http, err);
    free(too_large);
    if (rc != ES_OK)
        goto fail;
    es_info("gateway listening", "scheme", o->tls_cert_pem ? "https" : "http", "addr", cfg->http_addr, "port", es_log_i64(es_http_port(gw->http)),
            "commands_topic", cfg->commands_topic, "replies_topic", cfg->gateway_replies_topic, "issuer",
            gw->issuer, "audience", gw->audience, "keys", es_log_i64((long long)es_jwks_count(gw->keys)),
            "instances", gw->n_hosts ? "FACTORD_HOST_MAP" : cfg->instance_id);
    *out = gw;
    return ES_OK;
fail:
    es_gateway_stop(gw);
    return rc;
}

/* --- offline -------------------------------------------------------------- */

es_result es_gateway_offline_new(const es_gateway_opts *o, es_gateway **out, es_error *err)
{
    es_gateway *gw = gateway_alloc(o);
    gw->offline = true;
    /* One PostgreSQL slot that never connects (pg_ok stays false). */
    gw->n_pg = 1;
    gw->pg = calloc(1, sizeof *gw->pg);
    gw->pg_busy = calloc(1, sizeof *gw->pg_busy);
    if (!gw->pg || !gw->pg_busy)
        abort();
    es_result rc = parse_host_map(o->cfg->host_map, gw->hosts, &gw->n_hosts, err);
    if (rc != ES_OK) {
        es_gateway_stop(gw);
        return rc;
    }
    *out = gw;
    return ES_OK;
}

unsigned es_gateway_offline_handle(es_gateway *gw, const char *method, const char *path,
                                   const char *const *headers, size_t n, const char *body, size_t len,
                                   char **resp, size_t *resp_len)
{
    es_http_req *req = es_http_req_detached(method, path, headers, n, body, len);
    /* As infra/http/http.c: headers first, then the size, then the body. */
    on_headers(req, gw);
    unsigned status = 0;
    const char *text = NULL;
    size_t tlen = 0;
    if (!es_http_req_detached_answer(req, &status, &text, &tlen)) {
        if (len > (size_t)gw->cfg->http_max_body_bytes) {
            json_t *tl = dom_status_body(8 /* ResourceExhausted */, "FACTORD-GwBig", "The request body is too large");
            respond_json(req, 413, tl);
        } else
            on_request(req, gw);
    }
    if (!es_http_req_detached_answer(req, &status, &text, &tlen))
        abort(); /* every request is answered (http.h) */
    *resp = malloc(tlen + 1);
    if (!*resp)
        abort();
    memcpy(*resp, text, tlen);
    (*resp)[tlen] = '\0';
    *resp_len = tlen;
    es_http_req_detached_free(req);
    return status;
}

void es_gateway_stop(es_gateway *gw)
{
    if (!gw)
        return;
    if (gw->http)
        es_http_quiesce(gw->http);
    pthread_rwlock_wrlock(&gw->send_lock);
    gw->stopping = true;
    pthread_rwlock_unlock(&gw->send_lock);
    if (gw->health_started) { /* it pings through the replies' producer */
        atomic_store(&gw->health_stop, true);
        pthread_join(gw->health_thread, NULL);
        gw->health_started = false;
    }
    /* Every waiting request is answered (503) and its connection resumed. */
    es_replies_free(gw->replies);
    gw->replies = NULL;
    if (gw->http) {
        /* Let the answers be written (a client that keeps sending on a
         * keep-alive connection gets 503s until the deadline). */
        int64_t end = es_clock_mono_ms() + 2000;
        while ((es_http_pending(gw->http) || es_http_active(gw->http)) && es_clock_mono_ms() < end)
            es_sleep_ms(10);
        es_http_stop(gw->http);
    }
    es_readmodel_free(gw->health_pg);
    for (size_t i = 0; i < gw->n_pg; i++)
        es_readmodel_free(gw->pg[i]);
    free(gw->pg);
    free(gw->pg_busy);
    pthread_mutex_destroy(&gw->pg_mu);
    pthread_rwlock_destroy(&gw->send_lock);
    pthread_rwlock_destroy(&gw->keys_lock);
    es_jwks_free(gw->keys);
    free(gw->issuer);
    free(gw->audience);
    free(gw);
}
