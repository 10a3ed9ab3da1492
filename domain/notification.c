/*
 * domain/notification.c - message templates and the delivery command of a
 * code event (domain/notification.h).
 */
#include "domain/notification.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <uuid/uuid.h>

dom_code_kind dom_code_kind_of(dom_evt_type t)
{
    switch (t) {
    case DOM_EVT_PHONE_CODE_ADDED: return DOM_CODE_PHONE;
    case DOM_EVT_OTP_SMS_CODE_ADDED: return DOM_CODE_OTP_SMS;
    default: return DOM_CODE_NONE;
    }
}

/* --- templates ------------------------------------------------------------ */

typedef enum { PH_NONE, PH_CODE, PH_EXPIRY } placeholder;

/* The placeholder at s ("{{" already seen), its length in *n. */
static placeholder placeholder_at(const char *s, size_t *n)
{
    static const struct {
        const char *text;
        placeholder ph;
    } known[] = {
        {"{{.Code}}", PH_CODE}, {"{{.OTP}}", PH_CODE}, {"{{.Expiry}}", PH_EXPIRY},
        {"{{ .Code }}", PH_CODE}, {"{{ .OTP }}", PH_CODE}, {"{{ .Expiry }}", PH_EXPIRY},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        size_t len = strlen(known[i].text);
        if (strncmp(s, known[i].text, len) == 0) {
            *n = len;
            return known[i].ph;
        }
    }
    return PH_NONE;
}

es_result dom_sms_template_check(const char *tmpl, es_error *err)
{
    bool code = false;
    if (!tmpl || tmpl[0] == '\0')
        return es_error_set(err, ES_EINVAL, "empty template");
    for (const char *p = tmpl; *p;) {
        if (p[0] == '{' && p[1] == '{') {
            size_t n = 0;
            placeholder ph = placeholder_at(p, &n);
            if (ph == PH_NONE) {
                const char *end = strstr(p, "}}");
                int shown = end ? (int)(end - p + 2) : (int)strnlen(p, 24);
                return es_error_set(err, ES_EINVAL,
                                    "unknown placeholder %.*s (known: {{.Code}}, {{.OTP}}, {{.Expiry}})",
                                    shown > 40 ? 40 : shown, p);
            }
            code |= ph == PH_CODE;
            p += n;
        } else {
            p++;
        }
    }
    if (!code)
        return es_error_set(err, ES_EINVAL, "the template never shows the code ({{.Code}} or {{.OTP}})");
    if (strlen(tmpl) >= DOM_SMS_MAX)
        return es_error_set(err, ES_EINVAL, "template longer than %d bytes", DOM_SMS_MAX - 1);
    return ES_OK;
}

void dom_duration_words(int64_t s, char *out, size_t out_len)
{
    if (s <= 0)
        snprintf(out, out_len, "no time limit");
    else if (s % 86400 == 0)
        snprintf(out, out_len, "%" PRId64 " day%s", s / 86400, s == 86400 ? "" : "s");
    else if (s % 3600 == 0)
        snprintf(out, out_len, "%" PRId64 " hour%s", s / 3600, s == 3600 ? "" : "s");
    else if (s % 60 == 0)
        snprintf(out, out_len, "%" PRId64 " minute%s", s / 60, s == 60 ? "" : "s");
    else
        snprintf(out, out_len, "%" PRId64 " second%s", s, s == 1 ? "" : "s");
}

es_result dom_sms_render(const char *tmpl, const char *code, int64_t ttl_s, char *out, size_t out_len,
                         es_error *err)
{
    char expiry[48];
    size_t o = 0;
    dom_duration_words(ttl_s, expiry, sizeof expiry);
    if (out_len == 0)
        return es_error_set(err, ES_EINVAL, "no room for the message");
    for (const char *p = tmpl; *p;) {
        const char *piece = p;
        size_t piece_len = 1, skip = 1;
        if (p[0] == '{' && p[1] == '{') {
            size_t n = 0;
            placeholder ph = placeholder_at(p, &n);
            if (ph != PH_NONE) {
                piece = ph == PH_CODE ? code : expiry;
                piece_len = strlen(piece);
                skip = n;
            }
        }
        if (o + piece_len >= out_len)
            return es_error_set(err, ES_EINVAL, "the message is longer than %zu bytes", out_len - 1);
        memcpy(out + o, piece, piece_len);
        o += piece_len;
        p += skip;
    }
    out[o] = '\0';
    return ES_OK;
}

/* --- the delivery command -------------------------------------------------- */

/* Fixed namespace of factord's delivery ids (a random UUID, chosen once). */
static const uuid_t delivery_ns = {0x6b, 0x1f, 0x0e, 0x5a, 0x93, 0x2c, 0x4d, 0x71,
                                   0xa8, 0x04, 0x3e, 0xc2, 0x57, 0xd9, 0x10, 0xbe};

void dom_delivery_key(const dom_evt *evt, char out[DOM_UUID_LEN + 1])
{
    /* NUL-separated, so that no two (instance, user) pairs give one name. */
    char name[2 * DOM_ID_MAX + 32];
    int n = snprintf(name, sizeof name, "%s%c%s%c%" PRId64, evt->instance_id, '\0', evt->aggregate_id, '\0',
                     evt->sequence);
    uuid_t id;
    uuid_generate_sha1(id, delivery_ns, name, (size_t)(n < 0 ? 0 : n));
    uuid_unparse_lower(id, out);
}

static void copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, size - n);
}

void dom_delivery_command(const dom_evt *evt, const dom_delivery *d, const char *creator, dom_cmd *out)
{
    memset(out, 0, sizeof *out);
    dom_delivery_key(evt, out->id);
    out->type = DOM_CMD_RECORD_CODE_DELIVERY;
    copy(out->instance_id, sizeof out->instance_id, evt->instance_id);
    copy(out->user_id, sizeof out->user_id, evt->aggregate_id);
    copy(out->resource_owner, sizeof out->resource_owner, evt->resource_owner);
    copy(out->creator, sizeof out->creator, creator ? creator : "");
    out->delivery = *d;
    out->delivery.kind = dom_code_kind_of(evt->type);
    out->delivery.code_sequence = evt->sequence;
}
