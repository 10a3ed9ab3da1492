/*
 * tests/integration/test_gateway.c - `factord gateway` end to end on the
 * real servers: process, relay, project and the gateway as child processes,
 * requests over HTTP (libcurl, and the curl tool for the README's command).
 *
 * Covers: brief §1's table through HTTP with exact bodies; the phone calls
 * and ListMyAuthFactors; every bad token answered 401 with nothing sent;
 * routing, body and header refusals; Idempotency-Key retries; 504 and 503
 * (Kafka down, on a mock cluster) with the command still answerable later;
 * `factord token` with the development key; and 1,000 requests from 50
 * keep-alive connections, each with exactly one outcome behind it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <criterion/criterion.h>
#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "infra/base/clock.h"
#include "infra/crypto/codecrypt.h"
#include "infra/crypto/jwt.h"
#include "tests/integration/harness.h"
#include "tests/integration/sms_fake.h"

#define ISS "https://issuer.test"
#define AUD "factord-test-api"
#define OWNER "org-1"

#define BODY_TOKEN h_data("replies/add_otp_sms_2_token_invalid.json")
#define BODY_Q54J2 h_data("replies/add_otp_sms_4_not_ready.json")
#define BODY_AD3G2 h_data("replies/add_otp_sms_3_already_ready.json")
#define BODY_SR3H3 h_data("replies/remove_otp_sms_not_found.json")
#define BODY_SM0CS h_data("replies/verify_phone_code_invalid.json")

/* --- keys and tokens ------------------------------------------------------ */

typedef struct {
    EVP_PKEY *ec, *rsa, *stranger;
    char ec_kid[44], rsa_kid[44];
    char jwks_path[300];
} keyring;

static void keyring_init(keyring *k, const h_env *e)
{
    es_error err = {0};
    k->ec = EVP_EC_gen("P-256");
    k->rsa = EVP_RSA_gen(2048);
    k->stranger = EVP_EC_gen("P-256");
    cr_assert(k->ec && k->rsa && k->stranger);
    cr_assert_eq(es_jwk_thumbprint(k->ec, k->ec_kid, &err), ES_OK);
    cr_assert_eq(es_jwk_thumbprint(k->rsa, k->rsa_kid, &err), ES_OK);
    json_t *a = NULL, *b = NULL;
    cr_assert_eq(es_jwk_public(k->ec, &a, &err), ES_OK);
    cr_assert_eq(es_jwk_public(k->rsa, &b, &err), ES_OK);
    json_t *doc = json_pack("{s:[o,o]}", "keys", a, b);
    snprintf(k->jwks_path, sizeof k->jwks_path, "%s.jwks.json", e->log_path);
    cr_assert_eq(json_dump_file(doc, k->jwks_path, 0), 0);
    json_decref(doc);
}

static void keyring_done(keyring *k)
{
    unlink(k->jwks_path);
    EVP_PKEY_free(k->ec);
    EVP_PKEY_free(k->rsa);
    EVP_PKEY_free(k->stranger);
}

static json_t *claims_for(const char *user, const char *org)
{
    int64_t now = es_clock_now_us() / 1000000;
    json_t *c = json_pack("{s:s, s:[s,s], s:s, s:I, s:I, s:s}", "iss", ISS, "aud", "some-client", AUD, "sub", user,
                          "iat", (json_int_t)now, "exp", (json_int_t)(now + 600), "scope", "openid profile");
    if (org)
        json_object_set_new(c, ES_JWT_ORG_CLAIM, json_string(org));
    return c;
}

static char *sign_with(EVP_PKEY *key, const char *kid, json_t *claims)
{
    char *tok = NULL;
    es_error err = {0};
    cr_assert_eq(es_jwt_sign(key, kid, claims, &tok, &err), ES_OK, "%s", err.text);
    json_decref(claims);
    return tok;
}

static char *token_for(const keyring *k, const char *user, const char *org)
{
    return sign_with(k->ec, k->ec_kid, claims_for(user, org));
}

/* --- HTTP ------------------------------------------------------------------ */

typedef struct {
    long status;
    char *body;
    size_t len;
    char www_auth[128], cmd_id[64], allow[64];
} resp;

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    char *nb = realloc(r->body, r->len + sz * n + 1);
    cr_assert_not_null(nb);
    memcpy(nb + r->len, p, sz * n);
    r->len += sz * n;
    nb[r->len] = '\0';
    r->body = nb;
    return sz * n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t out_len)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0)
        return;
    const char *v = line + nl;
    size_t vl = n - nl;
    while (vl && (*v == ' '))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    snprintf(out, out_len, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    resp *r = ud;
    header_value(p, sz * n, "WWW-Authenticate:", r->www_auth, sizeof r->www_auth);
    header_value(p, sz * n, "Factord-Command-Id:", r->cmd_id, sizeof r->cmd_id);
    header_value(p, sz * n, "Allow:", r->allow, sizeof r->allow);
    return sz * n;
}

static void resp_free(resp *r)
{
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* One request on c (keep-alive across calls). token NULL: no
 * Authorization; body NULL: none; extra: more header lines, NULL-ended. */
static void http(CURL *c, int port, const char *method, const char *path, const char *token, const char *body,
                 const char *const *extra, resp *out)
{
    memset(out, 0, sizeof *out);
    char url[512], auth[ES_JWT_MAX_LEN + 64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    bool own_type = false;
    for (const char *const *x = extra; x && *x; x++)
        own_type = own_type || strncasecmp(*x, "Content-Type:", 13) == 0;
    if (body) {
        if (!own_type)
            h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    h = curl_slist_append(h, "Expect:");
    for (const char *const *x = extra; x && *x; x++)
        h = curl_slist_append(h, *x);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    cr_assert_eq(rc, CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    if (!out->body)
        out->body = strdup("");
}

static void expect(const resp *r, long status, const char *body, const char *what)
{
    cr_assert_eq(r->status, status, "%s: status %ld, body %s", what, r->status, r->body);
    if (body)
        cr_assert_str_eq(r->body, body, "%s", what);
}

/* --- the gateway as a child ------------------------------------------------- */

typedef struct {
    int port;
    char env[12][400];
    const char *envp[16];
    pid_t pid;
    char gw_replies[128];
} gateway;

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static void wait_healthy(const gateway *g)
{
    CURL *c = curl_easy_init();
    char url[128];
    /* /readyz, not /healthz: while Kafka is not ready a stand-in answers
     * /healthz already (alive) and every other path with 503. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/readyz", g->port);
    int64_t end = es_clock_mono_ms() + 60000;
    long status = 0;
    while (es_clock_mono_ms() < end) {
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
        if (curl_easy_perform(c) == CURLE_OK) {
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
            if (status == 200)
                break;
        }
        es_sleep_ms(100);
    }
    curl_easy_cleanup(c);
    cr_assert_eq(status, 200, "the gateway did not come up");
}

/* Start `factord gateway` for e with the test keys (k NULL: the development
 * key in state_dir) and extra "NAME=value" settings, on g->port (0: a free
 * one). */
static void gateway_start(gateway *g, const h_env *e, const keyring *k, const char *state_dir,
                          const char *const *more)
{
    if (!g->port)
        g->port = free_port();
    snprintf(g->gw_replies, sizeof g->gw_replies, "%s.gw", e->replies);
    int n = 0;
    snprintf(g->env[n++], sizeof g->env[0], "FACTORD_HTTP_ADDR=127.0.0.1:%d", g->port);
    snprintf(g->env[n++], sizeof g->env[0], "FACTORD_GATEWAY_REPLIES_TOPIC=%s", g->gw_replies);
    snprintf(g->env[n++], sizeof g->env[0], "FACTORD_INSTANCE_ID=%s", e->instance);
    if (k) {
        snprintf(g->env[n++], sizeof g->env[0], "FACTORD_JWKS_FILE=%s", k->jwks_path);
        snprintf(g->env[n++], sizeof g->env[0], "FACTORD_TOKEN_ISSUER=%s", ISS);
        snprintf(g->env[n++], sizeof g->env[0], "FACTORD_TOKEN_AUDIENCE=%s", AUD);
    } else {
        snprintf(g->env[n++], sizeof g->env[0], "FACTORD_STATE_DIR=%s", state_dir);
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        g->envp[m++] = g->env[i];
    for (const char *const *x = more; x && *x; x++)
        g->envp[m++] = *x;
    g->envp[m] = NULL;
    g->pid = h_spawn(e, "gateway", g->envp);
    wait_healthy(g);
}

/* --- servers' side ----------------------------------------------------------- */

static void send_cmd(const h_env *e, const char *type, const char *user, json_t *payload)
{
    char *c = h_command(e, type, user, OWNER, payload, NULL);
    h_produce(e, e->commands, user, c, strlen(c));
    free(c);
}

/* Wait until n commands of the instance are decided. */
static void wait_decided(const h_env *e, long n)
{
    const char *p[] = {e->instance};
    int64_t end = es_clock_mono_ms() + 60000;
    long got = 0;
    while ((got = h_sql_long(e, "SELECT count(*) FROM factord.commands WHERE instance_id = $1", 1, p)) < n &&
           es_clock_mono_ms() < end)
        es_sleep_ms(100);
    cr_assert_geq(got, n, "only %ld of %ld commands decided", got, n);
}

static char *sql_text(const h_env *e, const char *sql, int nparams, const char *const *params)
{
    PGconn *c = PQconnectdb(e->db_url);
    cr_assert_eq(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
    char *v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    PQfinish(c);
    return v;
}

/* The code of the last event of type code_type issued to user, decrypted as
 * the notifier would. */
static void issued_code(const h_env *e, const char *user, const char *code_type, char *out, size_t len)
{
    const char *p[] = {e->instance, user, code_type};
    char *enc = sql_text(e,
                         "SELECT payload->>'code' FROM factord.events WHERE instance_id = $1 AND aggregate_id = $2 "
                         "AND type = $3 ORDER BY sequence DESC LIMIT 1",
                         3, p);
    cr_assert_not_null(enc, "no %s issued to %s", code_type, user);
    unsigned char key[32];
    for (int i = 0; i < 32; i++)
        sscanf(H_CODE_KEY + 2 * i, "%2hhx", &key[i]);
    es_codekey ck;
    es_codekey_init(&ck, key);
    es_error err = {0};
    cr_assert_eq(es_code_decrypt(&ck, e->instance, user, enc, out, len, &err), ES_OK, "%s", err.text);
    free(enc);
}

/* The phone code last issued to user. */
static void phone_code(const h_env *e, const char *user, char *out, size_t len)
{
    issued_code(e, user, "user.human.phone.code.added", out, len);
}

static long commands_of(const h_env *e, const char *user)
{
    const char *p[] = {e->instance, user};
    return h_sql_long(e, "SELECT count(*) FROM factord.commands WHERE instance_id = $1 AND user_id = $2", 2, p);
}

#define OTP "/auth/v1/users/me/auth_factors/otp_sms"
#define LIST "/auth/v1/users/me/auth_factors/_search"
#define PHONE "/auth/v1/users/me/phone"

/* --- tests -------------------------------------------------------------------- */

Test(gateway, otp_sms_table_and_phone_calls_over_http, .timeout = 300)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwtable");
    keyring k;
    keyring_init(&k, &e);
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL), proj = h_spawn(&e, "project", NULL);
    send_cmd(&e, "ImportHumanUser", "u-ready", h_import_payload("ready", "+41 79 123 45 67", true));
    send_cmd(&e, "ImportHumanUser", "u-nophone", h_import_payload("nophone", NULL, false));
    send_cmd(&e, "ImportHumanUser", "u-unverified", h_import_payload("unverified", "+41 79 765 43 21", false));
    send_cmd(&e, "ImportHumanUser", "u-locked", h_import_payload("locked", "+41 79 111 22 33", true));
    send_cmd(&e, "LockUser", "u-locked", NULL);
    wait_decided(&e, 5);

    /* The instance comes from Host: this address maps to the test's
     * instance, other.example to another one. */
    gateway g = {0};
    char hostmap[256];
    g.port = free_port();
    snprintf(hostmap, sizeof hostmap, "FACTORD_HOST_MAP=127.0.0.1:%d=%s, other.example=inst-other", g.port,
             e.instance);
    const char *more[] = {hostmap, NULL};
    gateway_start(&g, &e, &k, NULL, more);

    char *ready = token_for(&k, "u-ready", OWNER);
    /* The README's command, as written, with the curl tool. */
    char cmd[ES_JWT_MAX_LEN + 512];
    snprintf(cmd, sizeof cmd,
             "curl -sS -L -X POST 'http://127.0.0.1:%d/auth/v1/users/me/auth_factors/otp_sms' "
             "-H 'Content-Type: application/json' -H 'Accept: application/json' "
             "-H 'Authorization: Bearer %s' --data-raw '{}' -w '\\n%%{http_code}'",
             g.port, ready);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    char out[2048] = {0}, code[16] = {0};
    cr_assert_not_null(fgets(out, sizeof out, f));
    cr_assert_not_null(fgets(code, sizeof code, f));
    cr_assert_eq(pclose(f), 0);
    cr_assert_str_eq(code, "200", "curl: %s", out);
    out[strcspn(out, "\n")] = '\0';
    json_t *ok = json_loads(out, 0, NULL);
    cr_assert_not_null(ok, "%s", out);
    json_t *d = json_object_get(ok, "details");
    cr_assert_str_eq(json_string_value(json_object_get(d, "sequence")), "3");
    cr_assert_str_eq(json_string_value(json_object_get(d, "resourceOwner")), OWNER);
    const char *cd = json_string_value(json_object_get(d, "creationDate"));
    cr_assert_not_null(cd);
    cr_assert_str_eq(cd, json_string_value(json_object_get(d, "changeDate")));
    cr_assert_eq(cd[strlen(cd) - 1], 'Z');
    /* Byte for byte the stored outcome of the appended event's command. */
    const char *pp[] = {e.instance};
    char *stored = sql_text(&e,
                            "SELECT c.body::text FROM factord.commands c JOIN factord.events ev ON ev.command_id = c.id "
                            "WHERE ev.instance_id = $1 AND ev.aggregate_id = 'u-ready' "
                            "AND ev.type = 'user.human.otp.sms.added' AND ev.sequence = 3",
                            1, pp);
    cr_assert_not_null(stored);
    cr_assert_str_eq(out, stored);
    free(stored);
    json_decref(ok);

    CURL *c = curl_easy_init();
    resp r;
    /* Row 3: already added. */
    http(c, g.port, "POST", OTP, ready, "{}", NULL, &r);
    expect(&r, 409, BODY_AD3G2, "already added");
    cr_assert_eq(strlen(r.cmd_id), 36, "the command id is returned");
    resp_free(&r);
    /* Row 4: no phone; a phone that is not verified. */
    char *nophone = token_for(&k, "u-nophone", OWNER), *unverified = token_for(&k, "u-unverified", OWNER);
    http(c, g.port, "POST", OTP, nophone, "{}", NULL, &r);
    expect(&r, 400, BODY_Q54J2, "no phone");
    resp_free(&r);
    http(c, g.port, "POST", OTP, unverified, "{}", NULL, &r);
    expect(&r, 400, BODY_Q54J2, "unverified phone");
    resp_free(&r);
    /* Row 2: unknown user, locked user, another organisation, another
     * instance (by Host). */
    char *unknown = token_for(&k, "u-never-imported", OWNER), *locked = token_for(&k, "u-locked", OWNER);
    char *other_org = token_for(&k, "u-ready", "org-2");
    http(c, g.port, "POST", OTP, unknown, "{}", NULL, &r);
    expect(&r, 401, BODY_TOKEN, "unknown user");
    resp_free(&r);
    http(c, g.port, "POST", OTP, locked, "{}", NULL, &r);
    expect(&r, 401, BODY_TOKEN, "locked user");
    resp_free(&r);
    http(c, g.port, "DELETE", OTP, other_org, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "user of another organisation");
    resp_free(&r);
    const char *other_host[] = {"Host: other.example", NULL};
    http(c, g.port, "POST", LIST, ready, NULL, other_host, &r);
    expect(&r, 401, BODY_TOKEN, "the user in another instance");
    resp_free(&r);
    const char *no_host[] = {"Host: nobody.example", NULL};
    http(c, g.port, "POST", OTP, ready, "{}", no_host, &r);
    cr_assert_eq(r.status, 404, "an unmapped host: %s", r.body);
    cr_assert(strstr(r.body, "FACTORD-GwHst"));
    resp_free(&r);
    /* Row 1 (user id missing) cannot come through the gateway: a token
     * without a subject is refused before any command. */
    json_t *nosub = claims_for("x", OWNER);
    json_object_set_new(nosub, "sub", json_string(""));
    char *empty_sub = sign_with(k.ec, k.ec_kid, nosub);
    http(c, g.port, "POST", OTP, empty_sub, "{}", NULL, &r);
    expect(&r, 401, BODY_TOKEN, "empty sub");
    resp_free(&r);

    /* ListMyAuthFactors, RS256 this time. */
    char *ready_rs = sign_with(k.rsa, k.rsa_kid, claims_for("u-ready", OWNER));
    http(c, g.port, "POST", LIST, ready_rs, NULL, NULL, &r);
    expect(&r, 200, "{\"result\":[{\"state\":\"AUTH_FACTOR_STATE_READY\",\"otpSms\":{}}]}", "list");
    resp_free(&r);
    http(c, g.port, "POST", LIST, nophone, "{\"ignored\":true}", NULL, &r);
    expect(&r, 200, "{}", "empty list");
    resp_free(&r);
    http(c, g.port, "POST", LIST, locked, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "list for a locked user");
    resp_free(&r);
    /* RemoveMyAuthFactorOTPSMS, twice. */
    http(c, g.port, "DELETE", OTP, ready, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.body, "\"sequence\":\"4\""), "%s", r.body);
    resp_free(&r);
    http(c, g.port, "DELETE", OTP, ready, NULL, NULL, &r);
    expect(&r, 404, BODY_SR3H3, "remove again");
    resp_free(&r);
    http(c, g.port, "POST", LIST, ready, NULL, NULL, &r);
    expect(&r, 200, "{}", "list after remove");
    resp_free(&r);

    /* The phone: request validation first (no command sent). */
    long before = commands_of(&e, "u-nophone");
    http(c, g.port, "PUT", PHONE, nophone, "{\"phone\":\"\"}", NULL, &r);
    expect(&r, 400,
           "{\"code\":3,\"message\":\"invalid SetMyPhoneRequest.Phone: value length must be between 1 and 50 "
           "runes, inclusive\"}",
           "empty phone");
    resp_free(&r);
    http(c, g.port, "PUT", PHONE, nophone, "{\"phone\":\"079 123 45 67\"}", NULL, &r);
    expect(&r, 400, "{\"code\":3,\"message\":\"invalid SetMyPhoneRequest.Phone: value does not have prefix \\\"+\\\"\"}",
           "phone without +");
    resp_free(&r);
    http(c, g.port, "POST", PHONE "/_verify", nophone, "{}", NULL, &r);
    expect(&r, 400,
           "{\"code\":3,\"message\":\"invalid VerifyMyPhoneRequest.Code: value length must be between 1 and 200 "
           "runes, inclusive\"}",
           "no code");
    resp_free(&r);
    http(c, g.port, "PUT", PHONE, nophone, "{\"phone\":42}", NULL, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    resp_free(&r);
    cr_assert_eq(commands_of(&e, "u-nophone"), before, "refused requests send no command");
    /* SetMyPhone (returnCode from a caller is ignored), VerifyMyPhone with a
     * wrong code, then the right one, then the factor, then RemoveMyPhone. */
    http(c, g.port, "PUT", PHONE, nophone, "{\"phone\":\"+41 79 000 00 01\",\"returnCode\":true}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_null(strstr(r.body, "code\""), "no code in the reply: %s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", PHONE "/_verify", nophone, "{\"code\":\"not-the-code\"}", NULL, &r);
    expect(&r, 400, BODY_SM0CS, "wrong code");
    resp_free(&r);
    char pcode[32];
    phone_code(&e, "u-nophone", pcode, sizeof pcode);
    char vbody[96];
    snprintf(vbody, sizeof vbody, "{\"code\":\"%s\"}", pcode);
    http(c, g.port, "POST", PHONE "/_verify", nophone, vbody, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", OTP, nophone, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "an empty body is an empty request: %s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", LIST, nophone, NULL, NULL, &r);
    expect(&r, 200, "{\"result\":[{\"state\":\"AUTH_FACTOR_STATE_READY\",\"otpSms\":{}}]}", "list after verify");
    resp_free(&r);
    http(c, g.port, "DELETE", PHONE, nophone, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", LIST, nophone, NULL, NULL, &r);
    expect(&r, 200, "{}", "the factor goes with the phone");
    resp_free(&r);

    curl_easy_cleanup(c);
    free(ready);
    free(ready_rs);
    free(nophone);
    free(unverified);
    free(unknown);
    free(locked);
    free(other_org);
    free(empty_sub);
    cr_assert_eq(h_stop(g.pid, false), 0, "gateway exits 0 on SIGTERM");
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

#define ME "/auth/v1/users/me"

/* GET path for token until the answer's status is not 404 (the projector
 * has not yet shown the user) or 30 s have passed. */
static void get_shown(CURL *c, int port, const char *path, const char *token, resp *r)
{
    int64_t end = es_clock_mono_ms() + 30000;
    for (;;) {
        http(c, port, "GET", path, token, NULL, NULL, r);
        if (r->status != 404 || es_clock_mono_ms() > end)
            return;
        resp_free(r);
        es_sleep_ms(100);
    }
}

/* The answer's JSON, and the string at a path of object keys in it. */
static const char *jstr(json_t *j, const char *a, const char *b, const char *c)
{
    json_t *v = json_object_get(j, a);
    if (b)
        v = json_object_get(v, b);
    if (c)
        v = json_object_get(v, c);
    return json_string_value(v);
}

Test(gateway, get_my_user_get_my_phone_and_resend_from_the_read_model, .timeout = 300)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwuser");
    keyring k;
    keyring_init(&k, &e);
    /* Personal data in clear (no FACTORD_PII_KEY): the end of this test
     * re-runs migration 0014's fill, which reads names from the log as a
     * log written before sealing holds them (docs/pii.md). */
    const char *const clear[] = {"FACTORD_PII_KEY", NULL};
    pid_t proc = h_spawn(&e, "process", clear), relay = h_spawn(&e, "relay", clear),
          proj = h_spawn(&e, "project", clear);
    send_cmd(&e, "ImportHumanUser", "u-view", h_import_payload("viewed", "+41 79 123 45 67", true));
    send_cmd(&e, "ImportHumanUser", "u-plain", h_import_payload("plain", NULL, false));
    wait_decided(&e, 2);
    gateway g = {0};
    gateway_start(&g, &e, &k, NULL, NULL);
    CURL *c = curl_easy_init();
    resp r;
    char *view = token_for(&k, "u-view", OWNER), *plain = token_for(&k, "u-plain", OWNER);

    /* GetMyUser: the import as ZITADEL's user shape; details are those of
     * the phone's verification, the last event that changed the view. */
    get_shown(c, g.port, ME, view, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    json_t *j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_assert_str_eq(jstr(j, "user", "id", NULL), "u-view");
    cr_assert_str_eq(jstr(j, "user", "state", NULL), "USER_STATE_ACTIVE");
    cr_assert_str_eq(jstr(j, "user", "userName", NULL), "viewed");
    cr_assert_str_eq(jstr(j, "user", "preferredLoginName", NULL), "viewed");
    cr_assert_str_eq(jstr(j, "user", "details", "sequence"), "2");
    cr_assert_str_eq(jstr(j, "user", "details", "resourceOwner"), OWNER);
    json_t *human = json_object_get(json_object_get(j, "user"), "human");
    cr_assert_str_eq(jstr(human, "profile", "firstName", NULL), "Ada");
    cr_assert_str_eq(jstr(human, "profile", "lastName", NULL), "Lovelace");
    cr_assert_str_eq(jstr(human, "email", "email", NULL), "ada@example.com");
    cr_assert_null(json_object_get(json_object_get(human, "email"), "isEmailVerified"), "false is left out");
    cr_assert_str_eq(jstr(human, "phone", "phone", NULL), "+41791234567");
    cr_assert(json_is_true(json_object_get(json_object_get(human, "phone"), "isPhoneVerified")));
    json_decref(j);
    resp_free(&r);

    /* GetMyPhone without a phone: the details and an empty Phone. */
    get_shown(c, g.port, PHONE, plain, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_loads(r.body, 0, NULL);
    cr_assert_not_null(j, "%s", r.body);
    cr_assert_str_eq(jstr(j, "details", "sequence", NULL), "1");
    cr_assert_eq(json_object_size(json_object_get(j, "phone")), 0, "%s", r.body);
    json_decref(j);
    resp_free(&r);

    /* SetMyPhone, then GetMyPhone reads its own write: the new number,
     * not verified; its code event does not change the view. */
    http(c, g.port, "PUT", PHONE, plain, "{\"phone\":\"+41 79 000 00 02\"}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    http(c, g.port, "GET", PHONE, plain, NULL, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    j = json_loads(r.body, 0, NULL);
    cr_assert_str_eq(jstr(j, "phone", "phone", NULL), "+41790000002", "%s", r.body);
    cr_assert_null(json_object_get(json_object_get(j, "phone"), "isPhoneVerified"), "%s", r.body);
    cr_assert_str_eq(jstr(j, "details", "sequence", NULL), "2", "%s", r.body);
    json_decref(j);
    resp_free(&r);

    /* ResendMyPhoneVerification: a second code; the first no longer works. */
    const char *pp[] = {e.instance};
    const char *codes_sql = "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND aggregate_id = "
                            "'u-plain' AND type = 'user.human.phone.code.added'";
    cr_assert_eq(h_sql_long(&e, codes_sql, 1, pp), 1);
    char first[32], second[32], vbody[96];
    phone_code(&e, "u-plain", first, sizeof first);
    http(c, g.port, "POST", PHONE "/_resend_verification", plain, "{}", NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(strstr(r.body, "\"details\""), "%s", r.body);
    cr_assert_null(strstr(r.body, "verificationCode"), "no code through the gateway: %s", r.body);
    resp_free(&r);
    cr_assert_eq(h_sql_long(&e, codes_sql, 1, pp), 2);
    phone_code(&e, "u-plain", second, sizeof second);
    if (strcmp(first, second) != 0) {
        snprintf(vbody, sizeof vbody, "{\"code\":\"%s\"}", first);
        http(c, g.port, "POST", PHONE "/_verify", plain, vbody, NULL, &r);
        expect(&r, 400, BODY_SM0CS, "the replaced code");
        resp_free(&r);
    }
    snprintf(vbody, sizeof vbody, "{\"code\":\"%s\"}", second);
    http(c, g.port, "POST", PHONE "/_verify", plain, vbody, NULL, &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    resp_free(&r);
    http(c, g.port, "GET", PHONE, plain, NULL, NULL, &r);
    cr_assert(strstr(r.body, "\"isPhoneVerified\":true"), "verified: %s", r.body);
    resp_free(&r);
    /* Nothing left to verify: ZITADEL's error, no code. */
    http(c, g.port, "POST", PHONE "/_resend_verification", plain, NULL, NULL, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "COMMAND-2M9sf"), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(h_sql_long(&e, codes_sql, 1, pp), 2);

    /* Who may not see a user: unknown, another organisation, locked. */
    char *unknown = token_for(&k, "u-never", OWNER), *other_org = token_for(&k, "u-view", "org-2");
    http(c, g.port, "GET", ME, unknown, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "unknown user");
    resp_free(&r);
    http(c, g.port, "GET", PHONE, other_org, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "another organisation");
    resp_free(&r);
    http(c, g.port, "POST", ME, view, "{}", NULL, &r);
    cr_assert_eq(r.status, 405, "%s", r.body);
    cr_assert_str_eq(r.allow, "GET");
    resp_free(&r);
    long decided = h_sql_long(&e, "SELECT count(*) FROM factord.commands WHERE instance_id = $1", 1, pp);
    send_cmd(&e, "LockUser", "u-view", NULL);
    wait_decided(&e, decided + 1);
    http(c, g.port, "GET", ME, view, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "locked user");
    resp_free(&r);
    /* The read model follows the lock too. */
    const char *uv[] = {e.instance};
    int64_t end = es_clock_mono_ms() + 30000;
    while (h_sql_long(&e, "SELECT count(*) FROM factord.user_views WHERE instance_id = $1 AND user_id = 'u-view' "
                          "AND state = 'USER_STATE_LOCKED' AND sequence = 3", 1, uv) != 1 &&
           es_clock_mono_ms() < end)
        es_sleep_ms(100);
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) FROM factord.user_views WHERE instance_id = $1 AND user_id = "
                                "'u-view' AND state = 'USER_STATE_LOCKED' AND sequence = 3", 1, uv), 1);

    /* Migration 0014 fills the view of existing users from the write side
     * and the log: it must give the rows the projector folded. */
    const char *rows_sql = "SELECT string_agg(v::text, E'\\n' ORDER BY user_id) FROM factord.user_views v "
                           "WHERE instance_id = $1";
    char *projected = sql_text(&e, rows_sql, 1, uv);
    cr_assert_not_null(projected);
    cr_assert(strstr(projected, "plain") && strstr(projected, "viewed"), "%s", projected);
    const char *migration = h_data("../../migrations/0014_create_user_views.sql");
    const char *fill = strstr(migration, "INSERT INTO factord.user_views");
    cr_assert_not_null(fill);
    PGconn *pg = PQconnectdb(e.db_url);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK);
    PGresult *pr = PQexecParams(pg, "DELETE FROM factord.user_views WHERE instance_id = $1", 1, NULL, uv, NULL, NULL, 0);
    cr_assert_eq(PQresultStatus(pr), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(pr);
    pr = PQexec(pg, fill);
    cr_assert_eq(PQresultStatus(pr), PGRES_COMMAND_OK, "%s", PQerrorMessage(pg));
    PQclear(pr);
    PQfinish(pg);
    char *filled = sql_text(&e, rows_sql, 1, uv);
    cr_assert_not_null(filled);
    cr_assert_str_eq(filled, projected);
    free(filled);
    free(projected);

    curl_easy_cleanup(c);
    free(view);
    free(plain);
    free(unknown);
    free(other_org);
    cr_assert_eq(h_stop(g.pid, false), 0);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

Test(gateway, bad_tokens_get_401_and_send_nothing, .timeout = 180)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwtokens");
    keyring k;
    keyring_init(&k, &e);
    gateway g = {0};
    const char *more[] = {"FACTORD_GATEWAY_TIMEOUT_MS=2000", NULL};
    gateway_start(&g, &e, &k, NULL, more);
    int64_t now = es_clock_now_us() / 1000000;

    json_t *expired = claims_for("u1", OWNER);
    json_object_set_new(expired, "exp", json_integer(now - 120));
    json_t *early = claims_for("u1", OWNER);
    json_object_set_new(early, "nbf", json_integer(now + 600));
    json_t *wrong_aud = claims_for("u1", OWNER);
    json_object_set_new(wrong_aud, "aud", json_string("someone-else"));
    json_t *wrong_iss = claims_for("u1", OWNER);
    json_object_set_new(wrong_iss, "iss", json_string("https://evil.test"));
    json_t *no_openid = claims_for("u1", OWNER);
    json_object_set_new(no_openid, "scope", json_string("profile email"));

    char *tok[] = {
        sign_with(k.ec, k.ec_kid, expired),
        sign_with(k.ec, k.ec_kid, early),
        sign_with(k.stranger, k.ec_kid, claims_for("u1", OWNER)), /* wrongly signed */
        sign_with(k.rsa, k.rsa_kid, wrong_aud),
        sign_with(k.ec, k.ec_kid, wrong_iss),
        sign_with(k.ec, k.ec_kid, no_openid),
    };
    const char *names[] = {"expired", "not yet valid", "wrongly signed", "wrong audience", "wrong issuer",
                           "missing openid scope"};
    /* alg none: the valid token's claims under {"alg":"none"}. */
    char *good = token_for(&k, "u1", OWNER);
    const char *claims_part = strchr(good, '.') + 1;
    char none[ES_JWT_MAX_LEN];
    snprintf(none, sizeof none, "eyJhbGciOiJub25lIn0.%.*s.", (int)(strrchr(good, '.') - claims_part), claims_part);

    CURL *c = curl_easy_init();
    resp r;
    for (size_t i = 0; i < sizeof tok / sizeof tok[0]; i++) {
        http(c, g.port, "POST", OTP, tok[i], "{}", NULL, &r);
        expect(&r, 401, BODY_TOKEN, names[i]);
        cr_assert_str_eq(r.www_auth, "Bearer error=\"invalid_token\"", "%s", names[i]);
        resp_free(&r);
    }
    const char *raw[][2] = {
        {"missing", NULL},
        {"malformed", "Authorization: Bearer not.a.token"},
        {"alg none", NULL},
        {"not bearer", "Authorization: Basic dXNlcjpwYXNz"},
        {"empty bearer", "Authorization: Bearer "},
        {"lowercase scheme, bad token", "Authorization: bearer a.b"},
    };
    char none_hdr[ES_JWT_MAX_LEN + 64];
    snprintf(none_hdr, sizeof none_hdr, "Authorization: Bearer %s", none);
    raw[2][1] = none_hdr;
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
        const char *hdrs[] = {raw[i][1], NULL};
        http(c, g.port, "POST", OTP, NULL, "{}", raw[i][1] ? hdrs : NULL, &r);
        expect(&r, 401, BODY_TOKEN, raw[i][0]);
        cr_assert_str_eq(r.www_auth, "Bearer error=\"invalid_token\"", "%s", raw[i][0]);
        resp_free(&r);
    }
    /* Two Authorization headers, one of them good. */
    char good_hdr[ES_JWT_MAX_LEN + 64];
    snprintf(good_hdr, sizeof good_hdr, "Authorization: Bearer %s", good);
    const char *two[] = {good_hdr, "Authorization: Bearer x.y.z", NULL};
    http(c, g.port, "POST", OTP, NULL, "{}", two, &r);
    expect(&r, 401, BODY_TOKEN, "two Authorization headers");
    resp_free(&r);
    /* Every endpoint checks: the phone calls and the list too. */
    http(c, g.port, "PUT", PHONE, tok[0], "{\"phone\":\"+41790000001\"}", NULL, &r);
    expect(&r, 401, BODY_TOKEN, "SetMyPhone");
    resp_free(&r);
    http(c, g.port, "POST", LIST, NULL, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "ListMyAuthFactors");
    resp_free(&r);

    /* Nothing reached the commands topic. */
    json_t *cmds = h_read_topic(&e, e.commands, 1, 5000);
    cr_assert_eq(json_array_size(cmds), 0, "a refused request sent a command");
    json_decref(cmds);
    /* While a good token does send one (no processor runs: it waits). */
    http(c, g.port, "POST", OTP, good, "{}", NULL, &r);
    cr_assert_eq(r.status, 504, "%s", r.body);
    resp_free(&r);
    cmds = h_read_topic(&e, e.commands, 1, 10000);
    cr_assert_eq(json_array_size(cmds), 1);
    json_decref(cmds);

    curl_easy_cleanup(c);
    for (size_t i = 0; i < sizeof tok / sizeof tok[0]; i++)
        free(tok[i]);
    free(good);
    h_stop(g.pid, false);
    keyring_done(&k);
    h_env_done(&e);
}

Test(gateway, bad_requests, .timeout = 120)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwbad");
    keyring k;
    keyring_init(&k, &e);
    gateway g = {0};
    const char *more[] = {"FACTORD_HTTP_MAX_BODY_BYTES=1024", NULL};
    gateway_start(&g, &e, &k, NULL, more);
    char *tok = token_for(&k, "u1", OWNER);
    CURL *c = curl_easy_init();
    resp r;

    http(c, g.port, "GET", "/healthz", NULL, NULL, NULL, &r);
    expect(&r, 200, "{\"status\":\"ok\"}", "healthz");
    resp_free(&r);
    http(c, g.port, "GET", "/readyz", NULL, NULL, NULL, &r);
    expect(&r, 200, "{\"status\":\"ok\",\"postgres\":\"ok\",\"kafka\":\"ok\"}", "readyz");
    resp_free(&r);
    http(c, g.port, "GET", "/auth/v1/users/me/nothing", tok, NULL, NULL, &r);
    expect(&r, 404, "{\"code\":5,\"message\":\"Not Found\"}", "unknown path");
    resp_free(&r);
    http(c, g.port, "POST", OTP "/", tok, "{}", NULL, &r);
    expect(&r, 404, "{\"code\":5,\"message\":\"Not Found\"}", "trailing slash");
    resp_free(&r);
    http(c, g.port, "GET", OTP, tok, NULL, NULL, &r);
    expect(&r, 405, "{\"code\":12,\"message\":\"Method Not Allowed\"}", "wrong method");
    cr_assert_str_eq(r.allow, "POST, DELETE");
    resp_free(&r);
    /* Bodies: too large (Content-Length and chunked), not JSON, not an
     * object, wrong content type. */
    char big[3000];
    memset(big, ' ', sizeof big - 3);
    big[0] = '{';
    big[sizeof big - 3] = '}';
    big[sizeof big - 2] = '\0';
    http(c, g.port, "POST", OTP, tok, big, NULL, &r);
    cr_assert_eq(r.status, 413, "%s", r.body);
    cr_assert(strstr(r.body, "\"code\":8") && strstr(r.body, "FACTORD-GwBig"), "%s", r.body);
    resp_free(&r);
    const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
    http(c, g.port, "POST", OTP, tok, big, chunked, &r);
    cr_assert_eq(r.status, 413, "chunked: %s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", OTP, tok, "{\"a\":", NULL, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "\"code\":3") && strstr(r.body, "FACTORD-GwJsn"), "%s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", OTP, tok, "[]", NULL, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    resp_free(&r);
    http(c, g.port, "POST", OTP, tok, "{\"a\":1,\"a\":2}", NULL, &r);
    cr_assert_eq(r.status, 400, "duplicate keys: %s", r.body);
    resp_free(&r);
    const char *text_plain[] = {"Content-Type: text/plain", NULL};
    http(c, g.port, "POST", OTP, tok, "{}", text_plain, &r);
    cr_assert_eq(r.status, 415, "%s", r.body);
    cr_assert(strstr(r.body, "FACTORD-GwTyp"), "%s", r.body);
    resp_free(&r);
    const char *charset[] = {"Content-Type: application/json; charset=utf-8", NULL};
    /* Idempotency-Key must be a UUID. */
    const char *bad_key[] = {"Idempotency-Key: 1234", NULL};
    http(c, g.port, "POST", OTP, tok, "{}", bad_key, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "FACTORD-GwIdk"), "%s", r.body);
    resp_free(&r);
    /* None of these sent a command. */
    json_t *cmds = h_read_topic(&e, e.commands, 1, 3000);
    cr_assert_eq(json_array_size(cmds), 0);
    json_decref(cmds);
    /* A JSON content type with parameters is fine (no processor: 504). */
    http(c, g.port, "POST", OTP, tok, "{}", charset, &r);
    cr_assert_eq(r.status, 504, "%s", r.body);
    cr_assert(strstr(r.body, "\"code\":4") && strstr(r.body, "FACTORD-GwTmo"), "%s", r.body);
    resp_free(&r);

    curl_easy_cleanup(c);
    free(tok);
    h_stop(g.pid, false);
    keyring_done(&k);
    h_env_done(&e);
}

Test(gateway, idempotency_key_and_late_answers, .timeout = 180)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwidem");
    keyring k;
    keyring_init(&k, &e);
    gateway g = {0};
    const char *more[] = {"FACTORD_GATEWAY_TIMEOUT_MS=1500", NULL};
    gateway_start(&g, &e, &k, NULL, more);
    char *tok = token_for(&k, "u1", OWNER);
    CURL *c = curl_easy_init();
    resp r;
    uuid_t u;
    char key[37], hdr[80];
    uuid_generate_random(u);
    uuid_unparse_upper(u, key); /* any case; the command id is lowercase */
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
    const char *idem[] = {hdr, NULL};

    /* No processor yet: the command is in Kafka, the answer is 504. */
    http(c, g.port, "POST", OTP, tok, "{}", idem, &r);
    expect(&r, 504, NULL, "no processor");
    char lower[37];
    for (int i = 0; i < 37; i++)
        lower[i] = (char)tolower((unsigned char)key[i]);
    cr_assert_str_eq(r.cmd_id, lower);
    resp_free(&r);

    /* The components start; the retry with the same key learns the
     * outcome of the command sent before, and nothing is decided twice. */
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL), proj = h_spawn(&e, "project", NULL);
    send_cmd(&e, "ImportHumanUser", "u1", h_import_payload("u1", "+41 79 123 45 67", true));
    const char *p[] = {lower};
    int64_t end = es_clock_mono_ms() + 60000;
    while (h_sql_long(&e, "SELECT count(*) FROM factord.commands WHERE id = $1::uuid", 1, p) < 1 &&
           es_clock_mono_ms() < end)
        es_sleep_ms(100);
    /* Decided before the import (the same partition, earlier offset):
     * the user was unknown then. */
    char *first = NULL;
    for (int i = 0; i < 20; i++) {
        http(c, g.port, "POST", OTP, tok, "{}", idem, &r);
        if (r.status != 504) {
            first = strdup(r.body);
            break;
        }
        resp_free(&r);
    }
    cr_assert_not_null(first, "no answer for the retried command");
    expect(&r, 401, BODY_TOKEN, "retry of the early command");
    resp_free(&r);
    wait_decided(&e, 2);
    http(c, g.port, "POST", OTP, tok, "{}", idem, &r);
    cr_assert_str_eq(r.body, first, "the same answer again");
    resp_free(&r);
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) FROM factord.commands WHERE id = $1::uuid", 1, p), 1);
    /* Every send of that id is answered on the gateway's reply topic, and
     * the answers all look alike: let the ones still in flight arrive
     * before the key is reused, or the next waiter would take one of them
     * (docs/gateway.md, "Idempotency-Key"). */
    {
        json_t *recs = NULL;
        size_t for_key = 0, before = (size_t)-1;
        int64_t quiet_until = es_clock_mono_ms() + 60000;
        /* Wait until the count of replies for the key stops growing. */
        while (es_clock_mono_ms() < quiet_until) {
            recs = h_read_topic(&e, g.gw_replies, 1000000, 1500);
            for_key = 0;
            size_t i;
            json_t *rec;
            json_array_foreach(recs, i, rec) for_key +=
                strcmp(json_string_value(json_object_get(rec, "key")), lower) == 0;
            json_decref(recs);
            if (for_key == before)
                break;
            before = for_key;
        }
        cr_assert_geq(for_key, 3, "one reply per send of the early command");
    }
    /* The same key on another call: the processor's reused-id refusal. */
    http(c, g.port, "DELETE", OTP, tok, NULL, idem, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "FACTORD-Idem1"), "%s", r.body);
    resp_free(&r);
    /* Without a key, a fresh command each time (the projector replies to
     * successes; its first group join may outlast the short timeout). */
    char fresh[64] = {0};
    for (int i = 0; i < 20; i++) {
        http(c, g.port, "POST", OTP, tok, "{}", NULL, &r);
        cr_assert_str_neq(r.cmd_id, lower);
        cr_assert_str_neq(r.cmd_id, fresh, "a new command id each time");
        snprintf(fresh, sizeof fresh, "%s", r.cmd_id);
        if (r.status != 504)
            break;
        resp_free(&r);
    }
    /* The first of them took effect; the later ones found it done. */
    cr_assert(r.status == 200 || r.status == 409, "%ld %s", r.status, r.body);
    resp_free(&r);
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) FROM factord.auth_factors WHERE instance_id = $1", 1,
                            (const char *[]){e.instance}),
                 1);

    free(first);
    curl_easy_cleanup(c);
    free(tok);
    h_stop(g.pid, false);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

Test(gateway, kafka_down_gives_503, .timeout = 120)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwdown");
    keyring k;
    keyring_init(&k, &e);
    /* A mock cluster in this process that the gateway child connects to,
     * so that its broker can be taken down. */
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof errstr);
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    cr_assert_not_null(mrk, "%s", errstr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 1);
    cr_assert_not_null(mc);
    char gw_replies[128], brokers[300];
    snprintf(gw_replies, sizeof gw_replies, "%s.gw", e.replies);
    rd_kafka_mock_topic_create(mc, e.commands, 2, 1);
    rd_kafka_mock_topic_create(mc, gw_replies, 2, 1);
    snprintf(brokers, sizeof brokers, "FACTORD_KAFKA_BROKERS=%s", rd_kafka_mock_cluster_bootstraps(mc));
    const char *more[] = {brokers, "FACTORD_GATEWAY_TIMEOUT_MS=2000", NULL};
    gateway g = {0};
    gateway_start(&g, &e, &k, NULL, more);
    char *tok = token_for(&k, "u1", OWNER);
    CURL *c = curl_easy_init();
    resp r;
    /* Up: delivered, nobody answers: 504. */
    http(c, g.port, "POST", OTP, tok, "{}", NULL, &r);
    expect(&r, 504, NULL, "broker up, no processor");
    resp_free(&r);
    /* Down: not delivered: 503, in about the timeout, never a hang. */
    rd_kafka_mock_broker_set_down(mc, 1);
    int64_t t0 = es_clock_mono_ms();
    http(c, g.port, "POST", OTP, tok, "{}", NULL, &r);
    int64_t took = es_clock_mono_ms() - t0;
    cr_assert_eq(r.status, 503, "%s", r.body);
    cr_assert(strstr(r.body, "\"code\":14") && strstr(r.body, "FACTORD-GwUna"), "%s", r.body);
    cr_assert_lt(took, 6000, "answered after %lld ms", (long long)took);
    resp_free(&r);
    /* Readiness says which server is away. */
    int64_t end = es_clock_mono_ms() + 15000;
    do {
        http(c, g.port, "GET", "/readyz", NULL, NULL, NULL, &r);
        if (r.status == 503)
            break;
        resp_free(&r);
        es_sleep_ms(200);
    } while (es_clock_mono_ms() < end);
    expect(&r, 503, "{\"status\":\"unavailable\",\"postgres\":\"ok\",\"kafka\":\"unreachable\"}", "readyz");
    resp_free(&r);
    /* Back up: commands flow again. */
    rd_kafka_mock_broker_set_up(mc, 1);
    end = es_clock_mono_ms() + 30000;
    do {
        http(c, g.port, "POST", OTP, tok, "{}", NULL, &r);
        if (r.status == 504)
            break;
        resp_free(&r);
    } while (es_clock_mono_ms() < end);
    expect(&r, 504, NULL, "broker back");
    resp_free(&r);

    curl_easy_cleanup(c);
    free(tok);
    cr_assert_eq(h_stop(g.pid, false), 0);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    keyring_done(&k);
    h_env_done(&e);
}

Test(gateway, development_token, .timeout = 120)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwdev");
    pid_t proc = h_spawn(&e, "process", NULL);
    send_cmd(&e, "ImportHumanUser", "u-dev", h_import_payload("dev", NULL, false));
    wait_decided(&e, 1);
    char state[300];
    snprintf(state, sizeof state, "%s.state", e.log_path);
    gateway g = {0};
    gateway_start(&g, &e, NULL, state, NULL);

    char cmd[800], tok[ES_JWT_MAX_LEN] = {0};
    snprintf(cmd, sizeof cmd,
             "FACTORD_STATE_DIR='%s' FACTORD_LOG_LEVEL=warn '%s' token --user u-dev --org %s 2>>'%s'", state,
             FACTORD_BINARY, OWNER, e.log_path);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(fgets(tok, sizeof tok, f));
    cr_assert_eq(pclose(f), 0);
    tok[strcspn(tok, "\n")] = '\0';
    CURL *c = curl_easy_init();
    resp r;
    http(c, g.port, "POST", LIST, tok, NULL, NULL, &r);
    expect(&r, 200, "{}", "the development token is accepted");
    resp_free(&r);
    snprintf(cmd, sizeof cmd,
             "FACTORD_STATE_DIR='%s' '%s' token --user u-dev --org %s --scope profile 2>>'%s'", state,
             FACTORD_BINARY, OWNER, e.log_path);
    f = popen(cmd, "r");
    cr_assert_not_null(fgets(tok, sizeof tok, f));
    cr_assert_eq(pclose(f), 0);
    tok[strcspn(tok, "\n")] = '\0';
    http(c, g.port, "POST", LIST, tok, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "without openid");
    resp_free(&r);
    /* Usage errors exit 2. */
    snprintf(cmd, sizeof cmd, "'%s' token --org x >/dev/null 2>&1", FACTORD_BINARY);
    int st = system(cmd);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);

    curl_easy_cleanup(c);
    h_stop(g.pid, false);
    h_stop(proc, false);
    char path[400];
    snprintf(path, sizeof path, "%s/dev-signing-key.pem", state);
    unlink(path);
    snprintf(path, sizeof path, "%s/dev-jwks.json", state);
    unlink(path);
    rmdir(state);
    h_env_done(&e);
}

typedef struct {
    int port;
    const char *token;
    const char *key_header;
    resp r;
    int64_t done_ms;
} pending_call;

static void *call_and_wait(void *arg)
{
    pending_call *p = arg;
    CURL *c = curl_easy_init();
    const char *h[] = {p->key_header, NULL};
    http(c, p->port, "POST", OTP, p->token, "{}", h, &p->r);
    p->done_ms = es_clock_mono_ms();
    curl_easy_cleanup(c);
    return NULL;
}

/* A second request with the key of one in progress is refused at once; a
 * stopping gateway answers what it holds (503) instead of dropping it. */
Test(gateway, busy_key_and_shutdown_answer_waiting_requests, .timeout = 120)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwstop");
    keyring k;
    keyring_init(&k, &e);
    gateway g = {0};
    const char *more[] = {"FACTORD_GATEWAY_TIMEOUT_MS=20000", NULL};
    gateway_start(&g, &e, &k, NULL, more);
    char *tok = token_for(&k, "u1", OWNER);
    uuid_t u;
    char key[37], hdr[80];
    uuid_generate_random(u);
    uuid_unparse_lower(u, key);
    snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", key);
    pending_call pc = {.port = g.port, .token = tok, .key_header = hdr};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, call_and_wait, &pc), 0);
    es_sleep_ms(1000); /* no processor: it waits */
    CURL *c = curl_easy_init();
    resp r;
    const char *h[] = {hdr, NULL};
    http(c, g.port, "POST", OTP, tok, "{}", h, &r);
    cr_assert_eq(r.status, 409, "%s", r.body);
    cr_assert(strstr(r.body, "\"code\":10") && strstr(r.body, "FACTORD-GwBsy"), "%s", r.body);
    resp_free(&r);
    curl_easy_cleanup(c);
    int64_t t0 = es_clock_mono_ms();
    kill(g.pid, SIGTERM);
    pthread_join(th, NULL);
    cr_assert_eq(pc.r.status, 503, "%s", pc.r.body);
    cr_assert(strstr(pc.r.body, "\"code\":14"), "%s", pc.r.body);
    cr_assert_lt(pc.done_ms - t0, 5000, "answered %lld ms after SIGTERM", (long long)(pc.done_ms - t0));
    resp_free(&pc.r);
    cr_assert_eq(h_wait(g.pid, 15000), 0, "gateway exits 0");
    free(tok);
    keyring_done(&k);
    h_env_done(&e);
}

/* --- 1,000 requests from 50 keep-alive connections --------------------------- */

#define CONNS 50
#define PER_CONN 20

typedef struct {
    const h_env *e;
    int port;
    int idx;
    char user[32];
    char *token;
    char ids[PER_CONN][37];
    int failures;
    char failure[512];
    long connects;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    CURL *c = curl_easy_init();
    /* Add 200, Add 409, Remove 200, Remove 404, five times: each answer is
     * known in advance, sequences included (the import made 1 and 2). */
    for (int i = 0; i < PER_CONN; i++) {
        int step = i % 4, round = i / 4;
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, w->ids[i]);
        char hdr[80];
        snprintf(hdr, sizeof hdr, "Idempotency-Key: %s", w->ids[i]);
        const char *h[] = {hdr, NULL};
        resp r;
        http(c, w->port, step < 2 ? "POST" : "DELETE", OTP, w->token, step < 2 ? "{}" : NULL, h, &r);
        long made = 0;
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &made);
        w->connects += made;
        bool ok;
        char want[64];
        if (step == 0 || step == 2) {
            snprintf(want, sizeof want, "\"sequence\":\"%d\"", 3 + 2 * round + (step == 2));
            ok = r.status == 200 && strstr(r.body, want) && strstr(r.body, "\"resourceOwner\":\"" OWNER "\"");
        } else if (step == 1)
            ok = r.status == 409 && strcmp(r.body, BODY_AD3G2) == 0;
        else
            ok = r.status == 404 && strcmp(r.body, BODY_SR3H3) == 0;
        ok = ok && strcmp(r.cmd_id, w->ids[i]) == 0;
        if (!ok && w->failures++ == 0)
            snprintf(w->failure, sizeof w->failure, "%s request %d: %ld %s", w->user, i, r.status, r.body);
        resp_free(&r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

Test(gateway, thousand_requests_from_fifty_connections, .timeout = 400)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwload");
    keyring k;
    keyring_init(&k, &e);
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL), proj = h_spawn(&e, "project", NULL);
    static worker ws[CONNS];
    for (int i = 0; i < CONNS; i++) {
        ws[i] = (worker){.e = &e, .idx = i};
        snprintf(ws[i].user, sizeof ws[i].user, "load-%02d", i);
        send_cmd(&e, "ImportHumanUser", ws[i].user, h_import_payload(ws[i].user, "+41 79 123 45 67", true));
        ws[i].token = token_for(&k, ws[i].user, OWNER);
    }
    wait_decided(&e, CONNS);
    gateway g = {0};
    gateway_start(&g, &e, &k, NULL, NULL);
    pthread_t th[CONNS];
    int64_t t0 = es_clock_mono_ms();
    for (int i = 0; i < CONNS; i++) {
        ws[i].port = g.port;
        cr_assert_eq(pthread_create(&th[i], NULL, work, &ws[i]), 0);
    }
    for (int i = 0; i < CONNS; i++)
        pthread_join(th[i], NULL);
    int64_t took = es_clock_mono_ms() - t0;
    long rss = rss_kb(g.pid);
    cr_log_info("1000 requests in %lld ms; gateway RSS %ld kB", (long long)took, rss);
    int failures = 0;
    for (int i = 0; i < CONNS; i++) {
        cr_expect_eq(ws[i].failures, 0, "%d failures; first: %s", ws[i].failures, ws[i].failure);
        cr_expect_leq(ws[i].connects, 2, "%s used %ld connections (keep-alive)", ws[i].user, ws[i].connects);
        failures += ws[i].failures;
    }
    cr_assert_eq(failures, 0);
#if !defined(__SANITIZE_ADDRESS__)
    cr_assert_lt(rss, 64 * 1024, "gateway RSS %ld kB", rss); /* ASan's shadow memory would not fit */
#endif

    /* Exactly one decided command per request, and behind each either one
     * event (200) or none (a rejection). */
    json_t *ids = json_array();
    for (int i = 0; i < CONNS; i++)
        for (int j = 0; j < PER_CONN; j++)
            json_array_append_new(ids, json_string(ws[i].ids[j]));
    char *idtext = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    const char *p[] = {e.instance, idtext};
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.commands WHERE instance_id = $1 AND id IN "
                            "(SELECT value::uuid FROM json_array_elements_text($2::json))",
                            2, p),
                 CONNS * PER_CONN);
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.commands WHERE instance_id = $1 AND type IN "
                            "('AddMyAuthFactorOTPSMS', 'RemoveMyAuthFactorOTPSMS')",
                            1, p),
                 CONNS * PER_CONN);
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.commands c WHERE c.instance_id = $1 AND c.type IN "
                            "('AddMyAuthFactorOTPSMS', 'RemoveMyAuthFactorOTPSMS') AND "
                            "(SELECT count(*) FROM factord.events ev WHERE ev.command_id = c.id) <> "
                            "CASE WHEN c.http_status = 200 THEN 1 ELSE 0 END",
                            1, p),
                 0, "a command without exactly its outcome behind it");
    cr_assert_eq(h_sql_long(&e,
                            "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND type IN "
                            "('user.human.otp.sms.added', 'user.human.otp.sms.removed')",
                            1, p),
                 CONNS * PER_CONN / 2);
    free(idtext);
    for (int i = 0; i < CONNS; i++)
        free(ws[i].token);
    cr_assert_eq(h_stop(g.pid, false), 0);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

/* --- HTTPS ----------------------------------------------------------------------- */

/* A fresh P-256 key into path (PEM); returned for signing. */
static EVP_PKEY *write_key(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cr_assert_not_null(k);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    return k;
}

/* A self-signed certificate for 127.0.0.1 (subjectAltName IP) into path. */
static void write_cert(const char *path, EVP_PKEY *k)
{
    X509 *x = X509_new();
    cr_assert_not_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1, 0);
    X509_set_issuer_name(x, n);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
    cr_assert_not_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    cr_assert(X509_sign(x, k, EVP_sha256()));
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert(PEM_write_X509(f, x));
    fclose(f);
    X509_free(x);
}

static bool log_has(const h_env *e, const char *text)
{
    FILE *f = fopen(e->log_path, "r");
    if (!f)
        return false;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/* GET url; the HTTP status, or -1 when no answer came (e.g. TLS failed). */
static long get_status(CURL *c, const char *url, const char *ca_file)
{
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

/* A gateway that must refuse to start: exit 2 and a log line with want. */
static void expect_refused(h_env *e, const char *const *env, const char *want)
{
    pid_t pid = h_spawn(e, "gateway", env);
    cr_assert_eq(h_wait(pid, 30000), 2, "the gateway should exit 2 (%s); see %s", want, e->log_path);
    cr_assert(log_has(e, want), "the log names '%s' (see %s)", want, e->log_path);
}

Test(gateway, https_with_certificate_files, .timeout = 180)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwtls");
    char dir[] = "/tmp/factord-tls-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char cert[128], key[128], other_key[128];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(other_key, sizeof other_key, "%s/other.pem", dir);
    EVP_PKEY *k = write_key(key);
    write_cert(cert, k);
    EVP_PKEY_free(k);
    EVP_PKEY_free(write_key(other_key));
    char cert_env[200], key_env[200], other_env[200], state_env[200];
    snprintf(cert_env, sizeof cert_env, "FACTORD_HTTP_TLS_CERT_FILE=%s", cert);
    snprintf(key_env, sizeof key_env, "FACTORD_HTTP_TLS_KEY_FILE=%s", key);
    snprintf(other_env, sizeof other_env, "FACTORD_HTTP_TLS_KEY_FILE=%s", other_key);
    snprintf(state_env, sizeof state_env, "FACTORD_STATE_DIR=%s/state", dir);

    /* HTTPS with the certificate, verified by the client against it. */
    gateway g = {0};
    const char *more[] = {cert_env, key_env, state_env, NULL};
    g.port = free_port();
    int n = 0;
    snprintf(g.env[n++], sizeof g.env[0], "FACTORD_HTTP_ADDR=127.0.0.1:%d", g.port);
    snprintf(g.env[n++], sizeof g.env[0], "FACTORD_GATEWAY_REPLIES_TOPIC=%s.gw", e.replies);
    snprintf(g.env[n++], sizeof g.env[0], "FACTORD_INSTANCE_ID=%s", e.instance);
    for (int i = 0; i < n; i++)
        g.envp[i] = g.env[i];
    for (int i = 0; more[i]; i++)
        g.envp[n + i] = more[i];
    g.envp[n + 3] = NULL;
    g.pid = h_spawn(&e, "gateway", g.envp);
    CURL *c = curl_easy_init();
    char https[128], http_url[128];
    snprintf(https, sizeof https, "https://127.0.0.1:%d/readyz", g.port);
    snprintf(http_url, sizeof http_url, "http://127.0.0.1:%d/readyz", g.port);
    int64_t end = es_clock_mono_ms() + 60000;
    long status = -1;
    while ((status = get_status(c, https, cert)) != 200 && es_clock_mono_ms() < end)
        es_sleep_ms(200);
    cr_assert_eq(status, 200, "HTTPS /readyz (see %s)", e.log_path);
    cr_assert(log_has(&e, "\"scheme\":\"https\""), "the gateway logs its scheme");
    cr_assert_neq(get_status(c, http_url, NULL), 200, "no plain HTTP on the HTTPS port");
    cr_assert_eq(get_status(c, https, NULL), -1, "a client that does not trust the certificate gets no answer");
    cr_assert_eq(h_stop(g.pid, false), 0);

    /* Settings that cannot work: refused at start, naming the setting. */
    char addr_env[64];
    snprintf(addr_env, sizeof addr_env, "FACTORD_HTTP_ADDR=127.0.0.1:%d", free_port());
    const char *only_cert[] = {addr_env, cert_env, state_env, NULL};
    expect_refused(&e, only_cert, "FACTORD_HTTP_TLS_KEY_FILE too");
    const char *wrong_key[] = {addr_env, cert_env, other_env, state_env, NULL};
    expect_refused(&e, wrong_key, "does not belong to the certificate");
    const char *swapped[] = {addr_env, "FACTORD_HTTP_TLS_CERT_FILE=/nonexistent/cert.pem", key_env, state_env, NULL};
    expect_refused(&e, swapped, "FACTORD_HTTP_TLS_CERT_FILE: cannot read /nonexistent/cert.pem");
    const char *on_without[] = {addr_env, "FACTORD_HTTP_TLS=on", state_env, NULL};
    expect_refused(&e, on_without, "HTTPS needs FACTORD_HTTP_TLS_CERT_FILE and FACTORD_HTTP_TLS_KEY_FILE");
    const char *bogus[] = {addr_env, "FACTORD_HTTP_TLS=maybe", state_env, NULL};
    expect_refused(&e, bogus, "none of auto, on, off");
    /* Plain HTTP on an address other than loopback only when asked. The
     * address is not this host's: nothing could listen there anyway. */
    const char *exposed[] = {"FACTORD_HTTP_ADDR=192.0.2.1:9", state_env, NULL};
    expect_refused(&e, exposed, "is not a loopback address");

    curl_easy_cleanup(c);
    char rm[200];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    cr_assert_eq(system(rm), 0);
    h_env_done(&e);
}

/* --- token keys rotated at the identity provider ------------------------------------- */

/* A JWKS file with the public keys given (NULL-terminated), replaced
 * atomically as an identity provider's sync job would. */
static void write_jwks(const char *path, EVP_PKEY *const *keys)
{
    json_t *arr = json_array();
    es_error err = {0};
    for (; *keys; keys++) {
        json_t *jwk = NULL;
        cr_assert_eq(es_jwk_public(*keys, &jwk, &err), ES_OK, "%s", err.text);
        json_array_append_new(arr, jwk);
    }
    json_t *doc = json_pack("{s:o}", "keys", arr);
    char tmp[340];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert_eq(json_dump_file(doc, tmp, 0), 0);
    json_decref(doc);
    cr_assert_eq(rename(tmp, path), 0);
}

typedef struct {
    int port;
    const char *token;
    atomic_bool stop;
    atomic_long ok, other;
} rot_load;

/* ListMyAuthFactors with one token, over and over, until stopped. */
static void *rot_load_main(void *arg)
{
    rot_load *l = arg;
    CURL *c = curl_easy_init();
    while (!atomic_load(&l->stop)) {
        resp r;
        http(c, l->port, "POST", LIST, l->token, NULL, NULL, &r);
        if (r.status == 200)
            atomic_fetch_add(&l->ok, 1);
        else
            atomic_fetch_add(&l->other, 1);
        resp_free(&r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

Test(gateway, jwks_file_rotation_without_restart, .timeout = 240)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwjwks");
    keyring k;
    keyring_init(&k, &e);
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL), proj = h_spawn(&e, "project", NULL);
    send_cmd(&e, "ImportHumanUser", "u-rot", h_import_payload("rot", "+41 79 123 45 67", true));
    wait_decided(&e, 1);

    /* The identity provider's keys: the EC key alone at first. Re-reads
     * only when a token names an unknown kid (no periodic one), so each
     * step below is that path's doing. */
    keyring rot = k;
    snprintf(rot.jwks_path, sizeof rot.jwks_path, "%.280s.rot.json", k.jwks_path);
    write_jwks(rot.jwks_path, (EVP_PKEY *const[]){k.ec, NULL});
    gateway g = {0};
    const char *more[] = {"FACTORD_JWKS_REFRESH_S=0", NULL};
    gateway_start(&g, &e, &rot, NULL, more);
    char *ec = sign_with(k.ec, k.ec_kid, claims_for("u-rot", OWNER));
    char *rsa = sign_with(k.rsa, k.rsa_kid, claims_for("u-rot", OWNER));
    char *made_up = sign_with(k.stranger, "made-up-kid", claims_for("u-rot", OWNER));
    CURL *c = curl_easy_init();
    resp r;
    http(c, g.port, "POST", LIST, ec, NULL, NULL, &r);
    expect(&r, 200, NULL, "the EC key is known");
    resp_free(&r);
    http(c, g.port, "POST", LIST, rsa, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "the RSA key is not published yet");
    resp_free(&r);

    /* The provider publishes the RSA key: the first token that names it
     * makes the gateway read the file again; no restart. */
    write_jwks(rot.jwks_path, (EVP_PKEY *const[]){k.ec, k.rsa, NULL});
    int64_t end = es_clock_mono_ms() + 20000;
    long status = 0;
    while (es_clock_mono_ms() < end) {
        http(c, g.port, "POST", LIST, rsa, NULL, NULL, &r);
        status = r.status;
        resp_free(&r);
        if (status == 200)
            break;
        es_sleep_ms(200);
    }
    cr_assert_eq(status, 200, "the RSA token is accepted after the provider published its key (see %s)", e.log_path);

    /* Under load with the RSA token, the provider retires the EC key; a
     * made-up kid makes the gateway read the file (as the next unknown kid
     * would). Not one RSA request may fail meanwhile; the EC token is
     * refused once the file was read. */
    rot_load load = {.port = g.port, .token = rsa};
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, rot_load_main, &load), 0);
    es_sleep_ms(500);
    write_jwks(rot.jwks_path, (EVP_PKEY *const[]){k.rsa, NULL});
    es_sleep_ms(5200); /* past the reload gap since the last read */
    http(c, g.port, "POST", LIST, made_up, NULL, NULL, &r);
    expect(&r, 401, BODY_TOKEN, "a kid nobody published");
    resp_free(&r);
    end = es_clock_mono_ms() + 20000;
    while (es_clock_mono_ms() < end) {
        http(c, g.port, "POST", LIST, ec, NULL, NULL, &r);
        status = r.status;
        resp_free(&r);
        if (status == 401)
            break;
        es_sleep_ms(200);
    }
    es_sleep_ms(500);
    atomic_store(&load.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cr_assert_eq(status, 401, "the retired EC key is refused after the re-read (see %s)", e.log_path);
    cr_assert_gt(atomic_load(&load.ok), 20, "the load ran: %ld requests", atomic_load(&load.ok));
    cr_assert_eq(atomic_load(&load.other), 0, "%ld of the RSA token's requests failed during the rotation",
                 atomic_load(&load.other));
    cr_assert(log_has(&e, "token keys reloaded"), "the reloads are logged");

    curl_easy_cleanup(c);
    free(ec);
    free(rsa);
    free(made_up);
    unlink(rot.jwks_path);
    cr_assert_eq(h_stop(g.pid, false), 0);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

/* --- sessions (ZITADEL's session service v2) ---------------------------------- */

#define SESSIONS "/v2/sessions"
#define LOGIN_SVC "login-svc"

/* The google.rpc.Status body the gateway gives for id (a failure's exact
 * bytes). Caller frees. */
static char *status_of(int code, const char *id, const char *message)
{
    json_t *j = dom_status_body(code, id, message);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static void expect_status(const resp *r, long http_status, int code, const char *id, const char *message,
                          const char *what)
{
    char *want = status_of(code, id, message);
    expect(r, http_status, want, what);
    free(want);
}

/* The OTP-SMS sign-in code last issued to user. */
static void otp_code(const h_env *e, const char *user, char *out, size_t len)
{
    issued_code(e, user, "user.human.otp.sms.code.added", out, len);
}

/* POST /v2/sessions, or PATCH /v2/sessions/<id>, with body; the answer's
 * JSON when it is 200 (new reference), else NULL with *r kept. */
static json_t *session_call(CURL *c, int port, const char *method, const char *id, const char *token,
                            const char *body, resp *r)
{
    char path[160];
    snprintf(path, sizeof path, "%s%s%s", SESSIONS, id ? "/" : "", id ? id : "");
    http(c, port, method, path, token, body, NULL, r);
    return r->status == 200 ? json_loads(r->body, 0, NULL) : NULL;
}

static json_t *session_get(CURL *c, int port, const char *id, const char *token, resp *r)
{
    return session_call(c, port, "GET", id, token, NULL, r);
}

/* Import user with a verified number and add the OTP-SMS factor. */
static void ready_signin_user(const h_env *e, const char *user, const char *name)
{
    send_cmd(e, "ImportHumanUser", user, h_import_payload(name, "+41 79 123 45 67", true));
    send_cmd(e, "AddMyAuthFactorOTPSMS", user, NULL);
}

Test(gateway, sessions_otp_sms_sign_in, .timeout = 300)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwsession");
    keyring k;
    keyring_init(&k, &e);
    const char *penv[] = {"FACTORD_LOCKOUT_MAX_OTP_ATTEMPTS=3", NULL};
    pid_t proc = h_spawn(&e, "process", penv), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL);
    ready_signin_user(&e, "u-sign", "signer");
    ready_signin_user(&e, "u-lock", "locker");
    send_cmd(&e, "ImportHumanUser", "u-nofactor", h_import_payload("nofactor", "+41 79 765 43 21", true));
    wait_decided(&e, 5);

    gateway g = {0};
    char hostmap[256];
    g.port = free_port();
    snprintf(hostmap, sizeof hostmap, "FACTORD_HOST_MAP=127.0.0.1:%d=%s, other.example=inst-other", g.port,
             e.instance);
    const char *more[] = {hostmap, "FACTORD_SESSION_CALLERS=" LOGIN_SVC ", other-svc", NULL};
    gateway_start(&g, &e, &k, NULL, more);
    CURL *c = curl_easy_init();
    resp r;
    char *svc = token_for(&k, LOGIN_SVC, OWNER), *other_svc = token_for(&k, "other-svc", OWNER),
         *user = token_for(&k, "u-sign", OWNER);
    const char *other_host[] = {"Host: other.example", NULL};

    /* Who may call: a listed caller only; no token at all is 401. */
    long before = commands_of(&e, "u-sign");
    session_call(c, g.port, "POST", NULL, user, "{\"checks\":{\"user\":{\"userId\":\"u-sign\"}}}", &r);
    expect_status(&r, 403, 7, "AUTH-5mWD2", "No matching permissions found", "a user is not a session caller");
    resp_free(&r);
    session_call(c, g.port, "POST", NULL, NULL, "{\"checks\":{\"user\":{\"userId\":\"u-sign\"}}}", &r);
    expect(&r, 401, BODY_TOKEN, "no token");
    resp_free(&r);

    /* Malformed requests: nothing is sent. */
    static const struct {
        const char *body;
        long status;
        const char *needle;
    } bad[] = {
        {"[1]", 400, "FACTORD-GwJsn"},
        {"{}", 400, "FACTORD-SsUsr"},
        {"{\"checks\":{\"user\":{}}}", 400, "invalid CheckUser.UserId"},
        {"{\"checks\":{\"user\":{\"userId\":\"\"}}}", 400, "invalid CheckUser.UserId"},
        {"{\"checks\":{\"user\":{\"userId\":\"u-sign\",\"loginName\":\"signer\"}}}", 400, "only one of"},
        {"{\"checks\":{\"user\":{\"userId\":7}}}", 400, "FACTORD-GwJsn"},
        {"{\"checks\":{\"user\":\"u-sign\"}}", 400, "checks.user must be an object"},
        {"{\"checks\":{\"user\":{\"userId\":\"u-sign\"},\"password\":{\"password\":\"x\"}}}", 501,
         "checks.password is not supported"},
        {"{\"checks\":{\"user\":{\"userId\":\"u-sign\"}},\"lifetime\":\"60s\"}", 501, "lifetime is not supported"},
        {"{\"checks\":{\"user\":{\"userId\":\"u-sign\"}},\"challenges\":{\"otpSms\":{\"returnCode\":\"yes\"}}}", 400,
         "challenges.otpSms.returnCode must be a boolean"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        session_call(c, g.port, "POST", NULL, svc, bad[i].body, &r);
        cr_assert_eq(r.status, bad[i].status, "%s: %ld %s", bad[i].body, r.status, r.body);
        cr_assert(strstr(r.body, bad[i].needle), "%s: %s", bad[i].body, r.body);
        resp_free(&r);
    }
    const char *idem[] = {"Idempotency-Key: 3f0c8c3e-0000-4000-8000-000000000001", NULL};
    http(c, g.port, "POST", SESSIONS, svc, "{\"checks\":{\"user\":{\"userId\":\"u-sign\"}}}", idem, &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "FACTORD-GwIdk"), "%s", r.body);
    resp_free(&r);
    cr_assert_eq(commands_of(&e, "u-sign"), before, "no refused request sent a command");

    /* The processor's checks: an unknown user; a challenge without the factor. */
    session_call(c, g.port, "POST", NULL, svc, "{\"checks\":{\"user\":{\"userId\":\"u-nobody\"}}}", &r);
    expect_status(&r, 404, 5, "QUERY-Dfbg2", "User could not be found", "unknown user");
    resp_free(&r);
    session_call(c, g.port, "POST", NULL, svc, "{\"checks\":{\"user\":{\"loginName\":\"nobody\"}}}", &r);
    expect_status(&r, 404, 5, "QUERY-Dfbg2", "User could not be found", "unknown login name");
    resp_free(&r);
    session_call(c, g.port, "POST", NULL, svc,
                 "{\"checks\":{\"user\":{\"userId\":\"u-nofactor\"}},\"challenges\":{\"otpSms\":{}}}", &r);
    expect_status(&r, 400, 9, "COMMAND-BJ2g3", "Multifactor OTP (OneTimePassword) isn't ready", "no factor");
    resp_free(&r);

    /* CreateSession with a challenge that returns the code. */
    json_t *j = session_call(c, g.port, "POST", NULL, svc,
                             "{\"checks\":{\"user\":{\"userId\":\"u-sign\"}},"
                             "\"challenges\":{\"otpSms\":{\"returnCode\":true}}}",
                             &r);
    cr_assert_not_null(j, "create: %ld %s", r.status, r.body);
    resp_free(&r);
    char sid[64], token1[64], code[16], stored[16];
    snprintf(sid, sizeof sid, "%s", jstr(j, "sessionId", NULL, NULL));
    snprintf(token1, sizeof token1, "%s", jstr(j, "sessionToken", NULL, NULL));
    snprintf(code, sizeof code, "%s", jstr(j, "challenges", "otpSms", NULL));
    cr_assert_eq(strlen(sid), 36);
    cr_assert_eq(strlen(token1), 43);
    cr_assert_str_eq(jstr(j, "details", "sequence", NULL), "5", "the session (4), then its code (5)");
    cr_assert_str_eq(jstr(j, "details", "resourceOwner", NULL), OWNER);
    otp_code(&e, "u-sign", stored, sizeof stored);
    cr_assert_str_eq(code, stored, "returnCode gives the code that was sent");
    json_decref(j);
    /* Only the token's hash is kept. */
    const char *pp[] = {e.instance, token1};
    cr_assert_eq(h_sql_long(&e, "SELECT count(*) FROM factord.events WHERE instance_id = $1 AND payload::text LIKE "
                                "'%' || $2 || '%'", 2, pp), 0, "the token is nowhere in the log");

    /* GetSession: the user factor, no OTP-SMS check yet. */
    j = session_get(c, g.port, sid, svc, &r);
    cr_assert_not_null(j, "get: %ld %s", r.status, r.body);
    resp_free(&r);
    json_t *s = json_object_get(j, "session");
    cr_assert_str_eq(jstr(s, "id", NULL, NULL), sid);
    cr_assert_str_eq(jstr(s, "factors", "user", "id"), "u-sign");
    cr_assert_str_eq(jstr(s, "factors", "user", "loginName"), "signer");
    cr_assert_str_eq(jstr(s, "factors", "user", "organizationId"), OWNER);
    cr_assert_not_null(jstr(s, "factors", "user", "verifiedAt"));
    cr_assert_null(json_object_get(json_object_get(s, "factors"), "otpSms"), "no check yet");
    json_decref(j);

    /* A wrong code: CheckOTPSMS's rejection; then the right one. */
    char path_body[256];
    session_call(c, g.port, "PATCH", sid, svc, "{\"checks\":{\"otpSms\":{\"code\":\"00000000x\"}}}", &r);
    expect_status(&r, 400, 3, "CODE-woT0xc", "Code is invalid", "wrong code");
    resp_free(&r);
    session_call(c, g.port, "PATCH", sid, svc, "{\"checks\":{\"otpSms\":{\"code\":\"\"}}}", &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "invalid CheckOTP.Code"), "%s", r.body);
    resp_free(&r);
    snprintf(path_body, sizeof path_body, "{\"checks\":{\"otpSms\":{\"code\":\"%s\"}}}", code);
    j = session_call(c, g.port, "PATCH", sid, svc, path_body, &r);
    cr_assert_not_null(j, "check: %ld %s", r.status, r.body);
    resp_free(&r);
    char token2[64];
    snprintf(token2, sizeof token2, "%s", jstr(j, "sessionToken", NULL, NULL));
    cr_assert_eq(strlen(token2), 43);
    cr_assert_str_neq(token2, token1, "every change hands out a new token");
    cr_assert_null(json_object_get(j, "challenges"), "no challenge asked, none answered");
    cr_assert_null(json_object_get(j, "sessionId"), "SetSession's answer has no id");
    cr_assert_not_null(jstr(j, "details", "changeDate", NULL));
    json_decref(j);

    /* GetSession shows the check; the code is spent. */
    j = session_get(c, g.port, sid, svc, &r);
    cr_assert_not_null(j, "get: %ld %s", r.status, r.body);
    resp_free(&r);
    s = json_object_get(j, "session");
    cr_assert_not_null(jstr(s, "factors", "otpSms", "verifiedAt"), "%s", json_dumps(j, 0));
    cr_assert_str_neq(jstr(s, "creationDate", NULL, NULL), jstr(s, "changeDate", NULL, NULL));
    json_decref(j);
    session_call(c, g.port, "PATCH", sid, svc, path_body, &r);
    expect_status(&r, 400, 9, "COMMAND-SF3tv", "Code not found", "a spent code");
    resp_free(&r);

    /* A code answers the challenge of its own session only. */
    j = session_call(c, g.port, "POST", NULL, svc,
                     "{\"checks\":{\"user\":{\"userId\":\"u-sign\"}},"
                     "\"challenges\":{\"otpSms\":{\"returnCode\":true}}}",
                     &r);
    cr_assert_not_null(j, "second session: %ld %s", r.status, r.body);
    resp_free(&r);
    char sid2[64];
    snprintf(sid2, sizeof sid2, "%s", jstr(j, "sessionId", NULL, NULL));
    snprintf(path_body, sizeof path_body, "{\"checks\":{\"otpSms\":{\"code\":\"%s\"}}}",
             jstr(j, "challenges", "otpSms", NULL));
    json_decref(j);
    cr_assert_str_neq(sid2, sid);
    session_call(c, g.port, "PATCH", sid, svc, path_body, &r);
    expect_status(&r, 400, 9, "COMMAND-SF3tv", "Code not found", "another session's code");
    resp_free(&r);
    j = session_call(c, g.port, "PATCH", sid2, svc, path_body, &r);
    cr_assert_not_null(j, "its own session: %ld %s", r.status, r.body);
    resp_free(&r);
    json_decref(j);

    /* Another caller: only with the session's current token. */
    session_get(c, g.port, sid, other_svc, &r);
    expect_status(&r, 403, 7, "AUTH-5mWD2", "No matching permissions found", "another caller, no token");
    resp_free(&r);
    snprintf(path_body, sizeof path_body, "{\"sessionToken\":\"%s\"}", token1);
    session_call(c, g.port, "PATCH", sid, other_svc, path_body, &r);
    expect_status(&r, 403, 7, "COMMAND-sGr42", "Session Token is invalid", "a replaced token");
    resp_free(&r);
    snprintf(path_body, sizeof path_body, "{\"sessionToken\":\"%s\",\"challenges\":{\"otpSms\":{}}}", token2);
    j = session_call(c, g.port, "PATCH", sid, other_svc, path_body, &r);
    cr_assert_not_null(j, "with the token: %ld %s", r.status, r.body);
    resp_free(&r);
    cr_assert_eq(json_object_size(json_object_get(j, "challenges")), 0, "challenged without returnCode: {}");
    json_decref(j);
    session_call(c, g.port, "PATCH", sid, svc, "{\"checks\":{\"user\":{\"userId\":\"u-lock\"}}}", &r);
    cr_assert_eq(r.status, 400, "%s", r.body);
    cr_assert(strstr(r.body, "user change not possible"), "%s", r.body);
    resp_free(&r);

    /* Unknown sessions, and this one from another instance. */
    session_get(c, g.port, "00000000-0000-4000-8000-000000000000", svc, &r);
    expect_status(&r, 404, 5, "QUERY-SFeaa", "Session does not exist", "unknown session");
    resp_free(&r);
    session_call(c, g.port, "PATCH", "not%20an%20id", svc, "{}", &r);
    expect_status(&r, 404, 5, "QUERY-SFeaa", "Session does not exist", "not an id");
    resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", SESSIONS, sid);
    http(c, g.port, "GET", path, svc, NULL, other_host, &r);
    expect_status(&r, 404, 5, "QUERY-SFeaa", "Session does not exist", "another instance");
    resp_free(&r);
    http(c, g.port, "DELETE", path, svc, NULL, NULL, &r);
    cr_assert_eq(r.status, 405);
    cr_assert_str_eq(r.allow, "GET, PATCH");
    resp_free(&r);

    /* Lockout: the third wrong code in a row locks the user; then even the
     * right code is refused, and no new session opens. By login name. */
    j = session_call(c, g.port, "POST", NULL, svc,
                     "{\"checks\":{\"user\":{\"loginName\":\"LOCKER\"}},\"challenges\":{\"otpSms\":{}}}", &r);
    cr_assert_not_null(j, "create by login name: %ld %s", r.status, r.body);
    resp_free(&r);
    char lsid[64];
    snprintf(lsid, sizeof lsid, "%s", jstr(j, "sessionId", NULL, NULL));
    cr_assert_eq(json_object_size(json_object_get(j, "challenges")), 0, "no returnCode: {}");
    json_decref(j);
    otp_code(&e, "u-lock", stored, sizeof stored);
    for (int i = 0; i < 3; i++) {
        session_call(c, g.port, "PATCH", lsid, svc, "{\"checks\":{\"otpSms\":{\"code\":\"00000000\"}}}", &r);
        expect_status(&r, 400, 3, "CODE-woT0xc", "Code is invalid", "wrong code towards the lock");
        resp_free(&r);
    }
    const char *lp[] = {e.instance};
    char *status = sql_text(&e, "SELECT status FROM factord.users WHERE instance_id = $1 AND user_id = 'u-lock'", 1,
                            lp);
    cr_assert_str_eq(status, "locked");
    free(status);
    snprintf(path_body, sizeof path_body, "{\"checks\":{\"otpSms\":{\"code\":\"%s\"}}}", stored);
    session_call(c, g.port, "PATCH", lsid, svc, path_body, &r);
    expect_status(&r, 400, 9, "COMMAND-S6h4R", "User is locked", "locked: the right code is refused");
    resp_free(&r);
    session_call(c, g.port, "POST", NULL, svc, "{\"checks\":{\"user\":{\"userId\":\"u-lock\"}}}", &r);
    expect_status(&r, 400, 9, "SESSION-Gj4ko", "Errors.User.NotActive", "a locked user gets no session");
    resp_free(&r);
    j = session_get(c, g.port, lsid, svc, &r);
    cr_assert_not_null(j, "%ld %s", r.status, r.body);
    resp_free(&r);
    cr_assert_null(json_object_get(json_object_get(json_object_get(j, "session"), "factors"), "otpSms"));
    json_decref(j);

    curl_easy_cleanup(c);
    free(svc);
    free(other_svc);
    free(user);
    cr_assert_eq(h_stop(g.pid, false), 0);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

/* An expired code (a lifetime of 1 s, and 2 s of waiting: the check cannot
 * come in time) is CheckOTPSMS's CODE-QvUQ4P and counts as a failure; the
 * session gets no OTP-SMS factor. */
Test(gateway, sessions_expired_code, .timeout = 240)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwsessexp");
    keyring k;
    keyring_init(&k, &e);
    const char *penv[] = {"FACTORD_OTP_SMS_CODE_TTL_S=1", NULL};
    pid_t proc = h_spawn(&e, "process", penv), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL);
    ready_signin_user(&e, "u-exp", "expiring");
    wait_decided(&e, 2);
    gateway g = {0};
    const char *more[] = {"FACTORD_SESSION_CALLERS=" LOGIN_SVC, NULL};
    gateway_start(&g, &e, &k, NULL, more);
    CURL *c = curl_easy_init();
    resp r;
    char *svc = token_for(&k, LOGIN_SVC, OWNER);
    json_t *j = session_call(c, g.port, "POST", NULL, svc,
                             "{\"checks\":{\"user\":{\"userId\":\"u-exp\"}},"
                             "\"challenges\":{\"otpSms\":{\"returnCode\":true}}}",
                             &r);
    cr_assert_not_null(j, "create: %ld %s", r.status, r.body);
    resp_free(&r);
    char sid[64], body[128];
    snprintf(sid, sizeof sid, "%s", jstr(j, "sessionId", NULL, NULL));
    snprintf(body, sizeof body, "{\"checks\":{\"otpSms\":{\"code\":\"%s\"}}}", jstr(j, "challenges", "otpSms", NULL));
    json_decref(j);
    es_sleep_ms(2000);
    session_call(c, g.port, "PATCH", sid, svc, body, &r);
    expect_status(&r, 400, 9, "CODE-QvUQ4P", "Code is expired", "expired code");
    resp_free(&r);
    const char *p[] = {e.instance};
    cr_assert_eq(h_sql_long(&e, "SELECT otp_failed FROM factord.users WHERE instance_id = $1 AND user_id = 'u-exp'", 1,
                            p), 1, "the expired code counts as a failed check");
    j = session_get(c, g.port, sid, svc, &r);
    cr_assert_not_null(j, "%ld %s", r.status, r.body);
    resp_free(&r);
    cr_assert_null(json_object_get(json_object_get(json_object_get(j, "session"), "factors"), "otpSms"));
    json_decref(j);

    curl_easy_cleanup(c);
    free(svc);
    cr_assert_eq(h_stop(g.pid, false), 0);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    keyring_done(&k);
    h_env_done(&e);
}

/* The sign-in as a login service runs it: the challenge without
 * returnCode, `factord notify` sends the code through the (stand-in)
 * provider, and the code read from that SMS passes the check. */
Test(gateway, sessions_code_from_the_sms, .timeout = 240)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    h_env e;
    h_env_init(&e, "gwsesssms");
    keyring k;
    keyring_init(&k, &e);
    sms_fake *fake = sms_fake_start();
    cr_assert_not_null(fake, "the stand-in SMS provider did not start");
    char token_file[256], url_env[600], token_env[320];
    snprintf(token_file, sizeof token_file, "/tmp/factord-test-%s-twilio-token", e.instance);
    FILE *f = fopen(token_file, "w");
    cr_assert_not_null(f);
    fputs("test-auth-token\n", f);
    fclose(f);
    char *url = sms_fake_url(fake, "");
    snprintf(url_env, sizeof url_env, "FACTORD_SMS_TWILIO_URL=%s", url);
    free(url);
    snprintf(token_env, sizeof token_env, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE=%s", token_file);
    const char *nenv[] = {"FACTORD_SMS_PROVIDER=twilio", "FACTORD_SMS_TWILIO_ACCOUNT_SID=AC00000000000000000000000000000001",
                          "FACTORD_SMS_TWILIO_FROM=+15005550006", url_env, token_env, NULL};
    pid_t proc = h_spawn(&e, "process", NULL), relay = h_spawn(&e, "relay", NULL),
          proj = h_spawn(&e, "project", NULL), notify = h_spawn(&e, "notify", nenv);
    ready_signin_user(&e, "u-sms", "texted");
    wait_decided(&e, 2);
    gateway g = {0};
    const char *more[] = {"FACTORD_SESSION_CALLERS=" LOGIN_SVC, NULL};
    gateway_start(&g, &e, &k, NULL, more);
    CURL *c = curl_easy_init();
    resp r;
    char *svc = token_for(&k, LOGIN_SVC, OWNER);

    json_t *j = session_call(c, g.port, "POST", NULL, svc,
                             "{\"checks\":{\"user\":{\"userId\":\"u-sms\"}},\"challenges\":{\"otpSms\":{}}}", &r);
    cr_assert_not_null(j, "create: %ld %s", r.status, r.body);
    resp_free(&r);
    cr_assert_eq(json_object_size(json_object_get(j, "challenges")), 0, "the code is not in the answer");
    char sid[64];
    snprintf(sid, sizeof sid, "%s", jstr(j, "sessionId", NULL, NULL));
    json_decref(j);

    cr_assert(sms_fake_wait(fake, 1, 60000), "no SMS was sent (see %s)", e.log_path);
    sms_fake_req q;
    cr_assert(sms_fake_get(fake, 0, &q));
    cr_assert(strstr(q.body, "To=%2B41791234567") != NULL, "to the verified number: %s", q.body);
    const char *b = strstr(q.body, "Body=");
    cr_assert_not_null(b, "%s", q.body);
    b += 5;
    while (*b && !isdigit((unsigned char)*b) && *b != '&')
        b++;
    char code[16] = "", body[128];
    size_t n = 0;
    while (isdigit((unsigned char)b[n]) && n + 1 < sizeof code) {
        code[n] = b[n];
        n++;
    }
    free(q.body);
    cr_assert_eq(n, 8, "an 8-digit code in the SMS");
    snprintf(body, sizeof body, "{\"checks\":{\"otpSms\":{\"code\":\"%s\"}}}", code);
    j = session_call(c, g.port, "PATCH", sid, svc, body, &r);
    cr_assert_not_null(j, "check: %ld %s", r.status, r.body);
    resp_free(&r);
    json_decref(j);
    j = session_get(c, g.port, sid, svc, &r);
    cr_assert_not_null(j, "%ld %s", r.status, r.body);
    resp_free(&r);
    cr_assert_not_null(jstr(json_object_get(j, "session"), "factors", "otpSms", "verifiedAt"));
    json_decref(j);

    curl_easy_cleanup(c);
    free(svc);
    cr_assert_eq(h_stop(g.pid, false), 0);
    h_stop(notify, false);
    h_stop(proj, false);
    h_stop(relay, false);
    h_stop(proc, false);
    sms_fake_stop(fake);
    unlink(token_file);
    keyring_done(&k);
    h_env_done(&e);
}
