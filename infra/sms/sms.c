/*
 * infra/sms/sms.c - the Twilio and webhook SMS providers over libcurl (see sms.h).
 *
 * Each send sets only what differs between requests (the body and the
 * header list) on the provider's one easy handle; URL, credentials,
 * timeouts and callbacks are set once at creation, so libcurl keeps the
 * connection to the provider open between sends. The answer's body is
 * kept up to MAX_ANSWER bytes (enough for Twilio's JSON), the rest is
 * read and dropped.
 */
#include "infra/sms/sms.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "infra/base/jsonw.h"
#include "infra/base/log.h"
#include "infra/base/util.h"

#define MAX_ANSWER (16 * 1024)
#define MAX_KEY 200
#define MAX_TOKEN 256

struct es_sms_provider {
    es_sms_kind kind;
    CURL *curl;
    char *url;              /* the Messages resource, or the webhook */
    char *from;             /* Twilio: From number or Messaging Service SID */
    bool from_is_service;   /* from is MG...: sent as MessagingServiceSid */
    char *sender;           /* webhook: contextInfo.senderPhoneNumber, may be NULL */
    char token[MAX_TOKEN];  /* Twilio's Auth Token; wiped at free */
    /* the answer being read */
    char answer[MAX_ANSWER + 1];
    size_t answer_len;
    char retry_after[64];
};

/* --- pure parts ---------------------------------------------------------------- */

es_sms_status es_sms_classify_http(long s)
{
    if (s >= 200 && s <= 299)
        return ES_SMS_SENT;
    if (s == 408 || s == 429 || (s >= 500 && s <= 599))
        return ES_SMS_RETRY;
    return ES_SMS_PERMANENT;
}

int64_t es_sms_parse_retry_after(const char *v, int64_t now_s)
{
    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    char buf[64];
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, v, n);
    buf[n] = '\0';
    int64_t secs;
    if (isdigit((unsigned char)buf[0])) {
        if (!es_parse_i64(buf, &secs) || secs < 0)
            return -1;
    } else {
        /* IMF-fixdate, the one HTTP-date form servers send today (RFC 9110 5.6.7) */
        static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
        char wday[4], mon[4];
        int day, year, hh, mm, ss, used = 0;
        if (sscanf(buf, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d GMT%n", wday, &day, mon, &year, &hh, &mm, &ss,
                   &used) != 7 || (size_t)used != n)
            return -1;
        const char *m = strstr(months, mon);
        if (!m || strlen(mon) != 3 || (m - months) % 3 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
            return -1;
        struct tm tm = {.tm_year = year - 1900, .tm_mon = (int)((m - months) / 3), .tm_mday = day,
                        .tm_hour = hh, .tm_min = mm, .tm_sec = ss};
        secs = (int64_t)timegm(&tm) - now_s;
        if (secs < 0)
            secs = 0;
    }
    return secs > ES_SMS_RETRY_AFTER_MAX_S ? ES_SMS_RETRY_AFTER_MAX_S : secs;
}

static void form_escape(char **buf, size_t *len, size_t *cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (*len + 4 > *cap)
            *buf = es_grow(*buf, cap, *len + 4, 1);
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            (*buf)[(*len)++] = (char)c;
        } else if (c == ' ') {
            (*buf)[(*len)++] = '+';
        } else {
            (*buf)[(*len)++] = '%';
            (*buf)[(*len)++] = hex[c >> 4];
            (*buf)[(*len)++] = hex[c & 15];
        }
    }
    (*buf)[*len] = '\0';
}

void es_sms_form_add(char **buf, size_t *len, const char *name, const char *value)
{
    size_t cap = *buf ? *len + 1 : 0;
    if (*len + 2 > cap)
        *buf = es_grow(*buf, &cap, *len + 2, 1);
    if (*len)
        (*buf)[(*len)++] = '&';
    (*buf)[*len] = '\0';
    form_escape(buf, len, &cap, name);
    if (*len + 2 > cap)
        *buf = es_grow(*buf, &cap, *len + 2, 1);
    (*buf)[(*len)++] = '=';
    (*buf)[*len] = '\0';
    form_escape(buf, len, &cap, value);
}

bool es_sms_is_e164(const char *s)
{
    if (!s || s[0] != '+' || s[1] < '1' || s[1] > '9')
        return false;
    size_t n = 0;
    for (const char *p = s + 1; *p; p++, n++)
        if (!isdigit((unsigned char)*p))
            return false;
    return n >= 2 && n <= 15;
}

const char *es_sms_kind_name(es_sms_kind k)
{
    switch (k) {
    case ES_SMS_TWILIO: return "twilio";
    case ES_SMS_WEBHOOK: return "webhook";
    case ES_SMS_NONE: break;
    }
    return "none";
}

const char *es_sms_status_name(es_sms_status s)
{
    switch (s) {
    case ES_SMS_SENT: return "sent";
    case ES_SMS_RETRY: return "retry";
    case ES_SMS_PERMANENT: break;
    }
    return "permanent";
}

/* --- creation ------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void problem(es_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(es_error *e, const char *fmt, ...)
{
    size_t used = strlen(e->text);
    if (used && used + 1 < sizeof e->text)
        e->text[used++] = '\n';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text + used, sizeof e->text - used, fmt, ap);
    va_end(ap);
}

/* An http(s) URL with a host, else a problem naming the setting. */
static bool check_url(es_error *e, const char *setting, const char *url)
{
    CURLU *u = curl_url();
    if (!u)
        abort();
    char *scheme = NULL, *host = NULL;
    bool ok = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0) && *host;
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    if (!ok)
        problem(e, "%s: not an http:// or https:// URL with a host", setting); /* not echoed: it may hold a token */
    return ok;
}

static bool all_alnum(const char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s))
            return false;
    return true;
}

/* The token from the setting or its file into p->token. */
static void read_token(es_sms_provider *p, const es_config *cfg, es_error *e)
{
    const char *src = cfg->sms_twilio_auth_token;
    if (src) {
        if (strlen(src) >= sizeof p->token) {
            problem(e, "FACTORD_SMS_TWILIO_AUTH_TOKEN: longer than %d characters", MAX_TOKEN - 1);
            return;
        }
        strcpy(p->token, src);
    } else if (cfg->sms_twilio_auth_token_file) {
        FILE *f = fopen(cfg->sms_twilio_auth_token_file, "r");
        if (!f) {
            problem(e, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE: cannot open %.200s: %s", cfg->sms_twilio_auth_token_file,
                    strerror(errno));
            return;
        }
        char buf[4 * MAX_TOKEN];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        while (n && isspace((unsigned char)buf[n - 1]))
            buf[--n] = '\0';
        bool fits = n < sizeof p->token;
        if (fits)
            memcpy(p->token, buf, n + 1);
        explicit_bzero(buf, sizeof buf);
        if (!fits) {
            problem(e, "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE: %.200s holds more than %d characters",
                    cfg->sms_twilio_auth_token_file, MAX_TOKEN - 1);
            return;
        }
    } else {
        problem(e, "FACTORD_SMS_TWILIO_AUTH_TOKEN or FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE: required with "
                   "FACTORD_SMS_PROVIDER=twilio");
        return;
    }
    if (!p->token[0])
        problem(e, "%s: the Auth Token is empty",
                src ? "FACTORD_SMS_TWILIO_AUTH_TOKEN" : "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE");
    for (const char *c = p->token; *c; c++)
        if (!isgraph((unsigned char)*c)) {
            problem(e, "%s: the Auth Token holds spaces or control characters",
                    src ? "FACTORD_SMS_TWILIO_AUTH_TOKEN" : "FACTORD_SMS_TWILIO_AUTH_TOKEN_FILE");
            break;
        }
}

static void configure_twilio(es_sms_provider *p, const es_config *cfg, es_error *e)
{
    const char *base = cfg->sms_twilio_url;
    if (!base)
        problem(e, "FACTORD_SMS_TWILIO_URL: required with FACTORD_SMS_PROVIDER=twilio");
    else
        check_url(e, "FACTORD_SMS_TWILIO_URL", base);
    const char *sid = cfg->sms_twilio_account_sid;
    if (!sid)
        problem(e, "FACTORD_SMS_TWILIO_ACCOUNT_SID: required with FACTORD_SMS_PROVIDER=twilio");
    else if (!all_alnum(sid) || strlen(sid) > 64)
        problem(e, "FACTORD_SMS_TWILIO_ACCOUNT_SID: expected letters and digits (AC...), got \"%.40s\"", sid);
    read_token(p, cfg, e);
    const char *from = cfg->sms_twilio_from;
    if (!from)
        problem(e, "FACTORD_SMS_TWILIO_FROM: required with FACTORD_SMS_PROVIDER=twilio");
    else if (strncmp(from, "MG", 2) == 0 && all_alnum(from))
        p->from_is_service = true;
    else if (!es_sms_is_e164(from))
        problem(e, "FACTORD_SMS_TWILIO_FROM: expected an E.164 number (+15551234567) or a Messaging "
                   "Service SID (MG...), got \"%.40s\"", from);
    if (e->text[0])
        return;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    size_t len = n + strlen(sid) + 64;
    p->url = malloc(len);
    if (!p->url)
        abort();
    snprintf(p->url, len, "%.*s/2010-04-01/Accounts/%s/Messages.json", (int)n, base, sid);
    p->from = strdup(from);
    if (!p->from)
        abort();
}

static void configure_webhook(es_sms_provider *p, const es_config *cfg, es_error *e)
{
    if (!cfg->sms_webhook_url)
        problem(e, "FACTORD_SMS_WEBHOOK_URL: required with FACTORD_SMS_PROVIDER=webhook");
    else
        check_url(e, "FACTORD_SMS_WEBHOOK_URL", cfg->sms_webhook_url);
    if (cfg->sms_sender && !es_sms_is_e164(cfg->sms_sender))
        problem(e, "FACTORD_SMS_SENDER: expected an E.164 number (+15551234567), got \"%.40s\"", cfg->sms_sender);
    if (e->text[0])
        return;
    p->url = strdup(cfg->sms_webhook_url);
    p->sender = cfg->sms_sender ? strdup(cfg->sms_sender) : NULL;
    if (!p->url || (cfg->sms_sender && !p->sender))
        abort();
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    es_sms_provider *p = ud;
    size_t len = size * n, room = MAX_ANSWER - p->answer_len;
    size_t take = len < room ? len : room;
    memcpy(p->answer + p->answer_len, data, take);
    p->answer_len += take;
    p->answer[p->answer_len] = '\0';
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    es_sms_provider *p = ud;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        size_t v = len - (sizeof name - 1);
        if (v >= sizeof p->retry_after)
            v = sizeof p->retry_after - 1;
        memcpy(p->retry_after, data + sizeof name - 1, v);
        p->retry_after[v] = '\0';
    }
    /* A new status line (after a 100 Continue) starts a new set of headers. */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
        p->retry_after[0] = '\0';
    return len;
}

es_result es_sms_provider_new(const es_config *cfg, es_sms_provider **out, es_error *err)
{
    *out = NULL;
    es_error e = {0};
    const char *kind = cfg->sms_provider ? cfg->sms_provider : "none";
    es_sms_kind k;
    if (strcmp(kind, "twilio") == 0)
        k = ES_SMS_TWILIO;
    else if (strcmp(kind, "webhook") == 0)
        k = ES_SMS_WEBHOOK;
    else if (strcmp(kind, "none") == 0)
        return es_error_set(err, ES_EINVAL, "FACTORD_SMS_PROVIDER is none: set it to twilio or webhook "
                                            "(docs/notifier.md) to send SMS");
    else
        return es_error_set(err, ES_EINVAL, "FACTORD_SMS_PROVIDER: expected none, twilio or webhook, got \"%.40s\"",
                            kind);
    es_sms_provider *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->kind = k;
    if (k == ES_SMS_TWILIO)
        configure_twilio(p, cfg, &e);
    else
        configure_webhook(p, cfg, &e);
    if (e.text[0]) {
        es_sms_provider_free(p);
        if (err)
            *err = e;
        return ES_EINVAL;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK || !(p->curl = curl_easy_init())) {
        es_sms_provider_free(p);
        return es_error_set(err, ES_EFATAL, "libcurl: cannot initialise: %s", curl_easy_strerror(curl_init_rc));
    }
    CURL *c = p->curl;
    long timeout = cfg->sms_timeout_ms > 0 ? (long)cfg->sms_timeout_ms : 10000L; /* 0 would mean no limit */
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, p);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "factord-notifier");
    if (k == ES_SMS_TWILIO) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, cfg->sms_twilio_account_sid);
        curl_easy_setopt(c, CURLOPT_PASSWORD, p->token);
    }
    *out = p;
    return ES_OK;
}

void es_sms_provider_free(es_sms_provider *p)
{
    if (!p)
        return;
    if (p->curl) {
        curl_easy_cleanup(p->curl); /* frees libcurl's own copy of the token */
    }
    explicit_bzero(p->token, sizeof p->token);
    free(p->url);
    free(p->from);
    free(p->sender);
    free(p);
}

es_sms_kind es_sms_provider_kind(const es_sms_provider *p)
{
    return p ? p->kind : ES_SMS_NONE;
}

/* --- sending ------------------------------------------------------------------- */

static es_sms_status finish(es_sms_outcome *out, es_sms_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static es_sms_status finish(es_sms_outcome *out, es_sms_status s, const char *fmt, ...)
{
    out->status = s;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(out->reason, sizeof out->reason, fmt, ap);
        va_end(ap);
    }
    return s;
}

static const char *check_msg(const es_sms_msg *m)
{
    if (!es_sms_is_e164(m->to))
        return "to is not an E.164 number";
    if (!m->body || !*m->body || !es_utf8_valid(m->body, strlen(m->body)))
        return "body is empty or not UTF-8";
    const char *k = m->idempotency_key;
    if (!k || !*k || strlen(k) > MAX_KEY)
        return "idempotency key is empty or longer than 200 characters";
    for (; *k; k++)
        if (*k < 0x21 || *k > 0x7e)
            return "idempotency key holds characters other than visible ASCII";
    const char *ids[] = {m->instance_id, m->user_id, m->event_type};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i] && !es_utf8_valid(ids[i], strlen(ids[i])))
            return "instance id, user id or event type is not UTF-8";
    if (m->template_data && !json_is_object(m->template_data))
        return "template data is not a JSON object";
    if (m->args && !json_is_object(m->args))
        return "args is not a JSON object";
    return NULL;
}

static char *twilio_body(const es_sms_provider *p, const es_sms_msg *m, size_t *len)
{
    char *b = NULL;
    *len = 0;
    es_sms_form_add(&b, len, "To", m->to);
    es_sms_form_add(&b, len, p->from_is_service ? "MessagingServiceSid" : "From", p->from);
    es_sms_form_add(&b, len, "Body", m->body);
    return b;
}

static void set_str(json_t *o, const char *key, const char *v)
{
    if (v && json_object_set_new(o, key, json_string(v)) != 0)
        abort(); /* only when out of memory: check_msg made sure every string is UTF-8 */
}

/* The JSON body of ZITADEL's HTTP SMS provider: contextInfo (recipient,
 * event type; factord adds the sender, instance and user), templateData
 * (the rendered texts; "text" is the SMS) and args (the template's
 * arguments), in that order. */
static char *webhook_body(const es_sms_provider *p, const es_sms_msg *m, size_t *len)
{
    json_t *root = json_object(), *ctx = json_object();
    set_str(ctx, "recipientPhoneNumber", m->to);
    set_str(ctx, "eventType", m->event_type);
    set_str(ctx, "senderPhoneNumber", p->sender);
    set_str(ctx, "instanceId", m->instance_id);
    set_str(ctx, "userId", m->user_id);
    json_object_set_new(root, "contextInfo", ctx);
    json_t *td = m->template_data ? json_deep_copy(m->template_data) : json_object();
    if (!td)
        abort();
    set_str(td, "text", m->body);
    json_object_set_new(root, "templateData", td);
    if (m->args) {
        json_t *a = json_deep_copy(m->args);
        if (!a)
            abort();
        json_object_set_new(root, "args", a);
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!s)
        abort();
    *len = strlen(s);
    return s;
}

/* Twilio's error JSON {"code":21211,"message":"...","status":400} into the outcome. */
static void twilio_error(es_sms_provider *p, es_sms_outcome *out)
{
    json_t *j = json_loadb(p->answer, p->answer_len, 0, NULL);
    json_t *code = json_object_get(j, "code"), *msg = json_object_get(j, "message");
    if (json_is_integer(code))
        out->provider_code = (long)json_integer_value(code);
    char text[160] = "";
    if (json_is_string(msg)) {
        /* printable characters only: the reason goes into log lines */
        const char *s = json_string_value(msg);
        size_t n = 0;
        for (; *s && n < sizeof text - 1; s++)
            text[n++] = (unsigned char)*s < 0x20 ? ' ' : *s;
        text[n] = '\0';
    }
    if (out->provider_code || text[0])
        snprintf(out->reason, sizeof out->reason, "twilio error %ld (HTTP %ld): %s", out->provider_code,
                 out->http_status, text);
    else
        snprintf(out->reason, sizeof out->reason, "twilio answered HTTP %ld", out->http_status);
    json_decref(j);
}

static void twilio_sid(es_sms_provider *p, es_sms_outcome *out)
{
    json_t *j = json_loadb(p->answer, p->answer_len, 0, NULL);
    json_t *sid = json_object_get(j, "sid");
    if (json_is_string(sid) && strlen(json_string_value(sid)) < sizeof out->message_id)
        strcpy(out->message_id, json_string_value(sid));
    json_decref(j);
}

es_sms_status es_sms_send(es_sms_provider *p, const es_sms_msg *m, es_sms_outcome *out)
{
    memset(out, 0, sizeof *out);
    out->retry_after_s = -1;
    const char *bad = check_msg(m);
    if (bad)
        return finish(out, ES_SMS_PERMANENT, "bad message: %s", bad);

    size_t len = 0;
    char *body = p->kind == ES_SMS_TWILIO ? twilio_body(p, m, &len) : webhook_body(p, m, &len);
    char key[MAX_KEY + 32];
    snprintf(key, sizeof key, "Idempotency-Key: %s", m->idempotency_key);
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, p->kind == ES_SMS_TWILIO ? "Content-Type: application/x-www-form-urlencoded"
                                                      : "Content-Type: application/json");
    h = curl_slist_append(h, key);
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Expect:"); /* no 100-continue round trip */
    if (!h)
        abort();
    p->answer_len = 0;
    p->answer[0] = '\0';
    p->retry_after[0] = '\0';
    curl_easy_setopt(p->curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(p->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(p->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLcode rc = curl_easy_perform(p->curl);
    curl_easy_setopt(p->curl, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(p->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    explicit_bzero(body, len); /* it holds the code */
    free(body);

    if (rc != CURLE_OK) {
        /* No answer: the network, DNS, TLS or the server is away or slow. Retrying is
         * the safe side: a permanent verdict would drop the SMS for good. */
        finish(out, ES_SMS_RETRY, "%s: %s", es_sms_kind_name(p->kind), curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(p->curl, CURLINFO_RESPONSE_CODE, &out->http_status);
        es_sms_status s = es_sms_classify_http(out->http_status);
        out->status = s;
        if (s == ES_SMS_SENT) {
            if (p->kind == ES_SMS_TWILIO)
                twilio_sid(p, out);
        } else if (s == ES_SMS_RETRY) {
            out->retry_after_s = es_sms_parse_retry_after(p->retry_after[0] ? p->retry_after : NULL,
                                                          (int64_t)time(NULL));
            snprintf(out->reason, sizeof out->reason, "%s answered HTTP %ld", es_sms_kind_name(p->kind),
                     out->http_status);
        } else if (p->kind == ES_SMS_TWILIO) {
            twilio_error(p, out);
        } else {
            snprintf(out->reason, sizeof out->reason, "webhook answered HTTP %ld", out->http_status);
        }
    }
    es_debug("sms send", "provider", es_sms_kind_name(p->kind), "instance", m->instance_id, "user", m->user_id,
             "idempotency_key", m->idempotency_key, "outcome", es_sms_status_name(out->status), "http_status",
             es_log_i64(out->http_status), "reason", out->reason[0] ? out->reason : NULL);
    return out->status;
}
