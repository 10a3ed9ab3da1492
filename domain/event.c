/*
 * domain/event.c - the event codec of the user aggregate and factord's
 * RFC 3339 clock arithmetic.
 *
 * Events are read back from the store, from the events topic and from
 * ZITADEL imports, so decoding range-checks every field and accepts
 * ZITADEL's names for the factor events; unknown payload members are
 * ignored (an imported ZITADEL event carries more than factord uses), but
 * a known member of the wrong type is an error.
 *
 * Time is converted with pure calendar arithmetic (days from the civil
 * date, proleptic Gregorian, UTC) because timegm/gmtime may consult the
 * time zone database, which is I/O, and the domain does none.
 */
#include "domain/event.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[DOM_EVT__COUNT] = {
    [DOM_EVT_UNKNOWN] = "",
    [DOM_EVT_HUMAN_ADDED] = "user.human.added",
    [DOM_EVT_PHONE_CHANGED] = "user.human.phone.changed",
    [DOM_EVT_PHONE_CODE_ADDED] = "user.human.phone.code.added",
    [DOM_EVT_PHONE_VERIFIED] = "user.human.phone.verified",
    [DOM_EVT_PHONE_VERIFICATION_FAILED] = "user.human.phone.verification.failed",
    [DOM_EVT_PHONE_REMOVED] = "user.human.phone.removed",
    [DOM_EVT_OTP_SMS_ADDED] = "user.human.otp.sms.added",
    [DOM_EVT_OTP_SMS_REMOVED] = "user.human.otp.sms.removed",
    [DOM_EVT_LOCKED] = "user.locked",
    [DOM_EVT_UNLOCKED] = "user.unlocked",
    [DOM_EVT_DEACTIVATED] = "user.deactivated",
    [DOM_EVT_REACTIVATED] = "user.reactivated",
    [DOM_EVT_REMOVED] = "user.removed",
    [DOM_EVT_OTP_SMS_CODE_ADDED] = "user.human.otp.sms.code.added",
    [DOM_EVT_OTP_SMS_CODE_SENT] = "user.human.otp.sms.code.sent",
    [DOM_EVT_OTP_SMS_CODE_SEND_FAILED] = "user.human.otp.sms.code.send.failed",
    [DOM_EVT_OTP_SMS_CHECK_SUCCEEDED] = "user.human.otp.sms.check.succeeded",
    [DOM_EVT_SESSION_ADDED] = "user.session.added",
    [DOM_EVT_SESSION_TOKEN_SET] = "user.session.token.set",
    [DOM_EVT_OTP_SMS_CHECK_FAILED] = "user.human.otp.sms.check.failed",
    [DOM_EVT_PHONE_CODE_SENT] = "user.human.phone.code.sent",
    [DOM_EVT_PHONE_CODE_SEND_FAILED] = "user.human.phone.code.send.failed",
};

const char *dom_evt_type_name(dom_evt_type t)
{
    if ((int)t <= DOM_EVT_UNKNOWN || t >= DOM_EVT__COUNT)
        return "";
    return type_names[t];
}

bool dom_evt_is_code(dom_evt_type t)
{
    return t == DOM_EVT_PHONE_CODE_ADDED || t == DOM_EVT_OTP_SMS_CODE_ADDED;
}

dom_evt_type dom_evt_type_parse(const char *name)
{
    if (!name || name[0] == '\0')
        return DOM_EVT_UNKNOWN;
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++)
        if (strcmp(type_names[t], name) == 0)
            return (dom_evt_type)t;
    /* ZITADEL's names for the same facts (repository/user/human_mfa_otp.go). */
    if (strcmp(name, "user.human.mfa.otp.sms.added") == 0)
        return DOM_EVT_OTP_SMS_ADDED;
    if (strcmp(name, "user.human.mfa.otp.sms.removed") == 0)
        return DOM_EVT_OTP_SMS_REMOVED;
    return DOM_EVT_UNKNOWN;
}

/* --- personal data (docs/pii.md) ----------------------------------------- */

bool dom_evt_type_has_pii(dom_evt_type t)
{
    switch (t) {
    case DOM_EVT_HUMAN_ADDED:
    case DOM_EVT_PHONE_CHANGED:
    case DOM_EVT_REMOVED:
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED:
        return true;
    default:
        return false;
    }
}

/* The places of an event type's PII fields, by field id: the buffer and
 * how much of it a field may fill (with its NUL). A human's phone must fit
 * DOM_PHONE_MAX, as the payload decoder wants it. */
typedef struct {
    char *dst;
    size_t cap;
} pii_place;

static bool pii_places(dom_evt *evt, pii_place places[DOM_PII_F__COUNT])
{
    memset(places, 0, DOM_PII_F__COUNT * sizeof *places);
    dom_import *h = &evt->human;
#define PLACE(id, field, limit) (places[id].dst = (field), places[id].cap = (limit))
    switch (evt->type) {
    case DOM_EVT_HUMAN_ADDED:
        PLACE(DOM_PII_F_USER_NAME, h->user_name, sizeof h->user_name);
        PLACE(DOM_PII_F_FIRST_NAME, h->first_name, sizeof h->first_name);
        PLACE(DOM_PII_F_LAST_NAME, h->last_name, sizeof h->last_name);
        PLACE(DOM_PII_F_NICK_NAME, h->nick_name, sizeof h->nick_name);
        PLACE(DOM_PII_F_DISPLAY_NAME, h->display_name, sizeof h->display_name);
        PLACE(DOM_PII_F_GENDER, h->gender, sizeof h->gender);
        PLACE(DOM_PII_F_EMAIL, h->email, sizeof h->email);
        PLACE(DOM_PII_F_PHONE, h->phone, DOM_PHONE_MAX);
        return true;
    case DOM_EVT_PHONE_CHANGED:
        PLACE(DOM_PII_F_PHONE, evt->phone, sizeof evt->phone);
        return true;
    case DOM_EVT_REMOVED:
        PLACE(DOM_PII_F_USER_NAME, evt->user_name, sizeof evt->user_name);
        return true;
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED:
        PLACE(DOM_PII_F_REASON, evt->delivery.reason, sizeof evt->delivery.reason);
        return true;
    default:
        return false;
    }
#undef PLACE
}

void dom_evt_pii_clear(dom_evt *evt)
{
    pii_place places[DOM_PII_F__COUNT];
    if (!pii_places(evt, places))
        return;
    for (int id = 1; id < DOM_PII_F__COUNT; id++)
        if (places[id].dst)
            memset(places[id].dst, 0, places[id].cap);
}

es_result dom_evt_pii_pack(const dom_evt *evt, unsigned char *buf, size_t cap, size_t *len,
                           es_error *err)
{
    pii_place places[DOM_PII_F__COUNT];
    /* pii_places only takes addresses: nothing is written through them here */
    if (!pii_places((dom_evt *)evt, places))
        return es_error_set(err, ES_EINVAL, "pii: event type \"%s\" has no personal fields",
                            dom_evt_type_name(evt->type));
    size_t n = 0;
    for (int id = 1; id < DOM_PII_F__COUNT; id++) {
        if (!places[id].dst)
            continue;
        size_t l = strnlen(places[id].dst, places[id].cap);
        if (l == 0)
            continue;
        if (l > 255 || l == places[id].cap)
            return es_error_set(err, ES_EINVAL, "pii: field %d is too long (%zu bytes)", id, l);
        if (n + 2 + l > cap)
            return es_error_set(err, ES_EINVAL, "pii: record buffer too small");
        buf[n++] = (unsigned char)id;
        buf[n++] = (unsigned char)l;
        memcpy(buf + n, places[id].dst, l);
        n += l;
    }
    size_t padded = (n + 1 + DOM_PII_PAD - 1) / DOM_PII_PAD * DOM_PII_PAD;
    if (padded > cap)
        return es_error_set(err, ES_EINVAL, "pii: record buffer too small");
    memset(buf + n, 0, padded - n); /* DOM_PII_F_END, then the padding */
    *len = padded;
    return ES_OK;
}

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF)
 * without NUL: what jansson and PostgreSQL text accept. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t l;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            l = 2, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            l = 3, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            l = 4, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < l)
            return false;
        for (size_t k = 1; k < l; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((l == 3 && cp < 0x800) || (l == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += l;
    }
    return true;
}

es_result dom_evt_pii_unpack(dom_evt *evt, const unsigned char *buf, size_t len, es_error *err)
{
    pii_place places[DOM_PII_F__COUNT];
    if (!pii_places(evt, places))
        return es_error_set(err, ES_EINVAL, "pii: event type \"%s\" has no personal fields",
                            dom_evt_type_name(evt->type));
    dom_evt_pii_clear(evt);
    es_result rc = ES_OK;
    size_t i = 0;
    int last = 0;
    if (len == 0 || len % DOM_PII_PAD != 0 || len > DOM_PII_RECORD_MAX) {
        rc = es_error_set(err, ES_EINVAL, "pii: record of %zu bytes", len);
        goto fail;
    }
    while (i < len && buf[i] != DOM_PII_F_END) {
        int id = buf[i];
        if (id >= DOM_PII_F__COUNT || !places[id].dst || id <= last) {
            rc = es_error_set(err, ES_EINVAL, "pii: unexpected field %d", id);
            goto fail;
        }
        if (len - i < 2 || buf[i + 1] == 0 || len - i - 2 < buf[i + 1]) {
            rc = es_error_set(err, ES_EINVAL, "pii: field %d: bad length", id);
            goto fail;
        }
        size_t l = buf[i + 1];
        if (l >= places[id].cap || !utf8_ok(buf + i + 2, l)) {
            rc = es_error_set(err, ES_EINVAL, "pii: field %d: too long or not UTF-8", id);
            goto fail;
        }
        memcpy(places[id].dst, buf + i + 2, l);
        places[id].dst[l] = '\0';
        last = id;
        i += 2 + l;
    }
    if (i >= len) {
        rc = es_error_set(err, ES_EINVAL, "pii: record without its end");
        goto fail;
    }
    /* The shortest padding only: a record padded further is not one that
     * pack made. */
    if (len != (i + 1 + DOM_PII_PAD - 1) / DOM_PII_PAD * DOM_PII_PAD) {
        rc = es_error_set(err, ES_EINVAL, "pii: padding of the wrong length");
        goto fail;
    }
    for (; i < len; i++)
        if (buf[i] != 0) {
            rc = es_error_set(err, ES_EINVAL, "pii: padding is not zeros");
            goto fail;
        }
    return ES_OK;
fail:
    dom_evt_pii_clear(evt);
    return rc;
}

/* --- time ---------------------------------------------------------------- */

#define US_PER_SEC INT64_C(1000000)
#define SEC_PER_DAY INT64_C(86400)
/* Days since 1970-01-01 of y-m-d (proleptic Gregorian); H. Hinnant's
 * days_from_civil. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;                                     /* [0, 399] */
    const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;   /* [0, 365] */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;             /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse: y-m-d of a day count since 1970-01-01. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const int64_t doe = z - era * 146097;                                  /* [0, 146096] */
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);           /* [0, 365] */
    const int64_t mp = (5 * doy + 2) / 153;                                /* [0, 11] */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

void dom_time_format(int64_t us, char *buf, size_t len)
{
    if (!buf || len == 0)
        return;
    if (us < DOM_TIME_MIN_US || us > DOM_TIME_MAX_US) {
        /* Not representable in RFC 3339; "" is refused by dom_time_parse,
         * so it cannot pass for a real time. */
        buf[0] = '\0';
        return;
    }
    /* Floor division: times before 1970 have a negative remainder. */
    int64_t secs = us / US_PER_SEC, frac = us % US_PER_SEC;
    if (frac < 0) {
        frac += US_PER_SEC;
        secs -= 1;
    }
    int64_t days = secs / SEC_PER_DAY, sod = secs % SEC_PER_DAY;
    if (sod < 0) {
        sod += SEC_PER_DAY;
        days -= 1;
    }
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    int n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", (int)y, m, d,
                     (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), (int)frac);
    if (n < 0 || (size_t)n >= len)
        buf[0] = '\0'; /* a cut time would parse as a different time */
}

/* Read exactly n digits at *p into *out; advances *p. */
static bool digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

es_result dom_time_parse(const char *s, int64_t *us)
{
    const char *p = s;
    int year, month, day, hour, minute, second, off = 0;
    int64_t frac_us = 0;

    if (!s)
        return ES_EINVAL;
    if (!digits(&p, 4, &year) || *p++ != '-' || !digits(&p, 2, &month) || *p++ != '-' ||
        !digits(&p, 2, &day) || (*p != 'T' && *p != 't'))
        return ES_EINVAL;
    p++;
    if (!digits(&p, 2, &hour) || *p++ != ':' || !digits(&p, 2, &minute) || *p++ != ':' ||
        !digits(&p, 2, &second))
        return ES_EINVAL;
    if (*p == '.') {
        p++;
        int n = 0;
        int64_t scale = 100000;
        while (*p >= '0' && *p <= '9') {
            if (n >= 9)
                return ES_EINVAL;
            /* Digits past microseconds are dropped (truncated): the stored
             * precision is the microsecond. */
            frac_us += (*p - '0') * scale;
            scale /= 10;
            n++;
            p++;
        }
        if (n == 0)
            return ES_EINVAL;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
            return ES_EINVAL;
        off = sign * (oh * 60 + om);
    } else {
        return ES_EINVAL;
    }
    if (*p != '\0')
        return ES_EINVAL;

    /* Second 60 (a leap second) is refused, as Go's time.Parse does: the
     * epoch arithmetic has no place for it. */
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) ||
        hour > 23 || minute > 59 || second > 59)
        return ES_EINVAL;

    int64_t secs = days_from_civil(year, month, day) * SEC_PER_DAY + hour * 3600 +
                   minute * 60 + second - (int64_t)off * 60;
    int64_t v = secs * US_PER_SEC + frac_us;
    if (v < DOM_TIME_MIN_US || v > DOM_TIME_MAX_US)
        return ES_EINVAL;
    *us = v;
    return ES_OK;
}

/* --- JSON helpers -------------------------------------------------------- */

static json_t *new_object(void)
{
    json_t *o = json_object();
    if (!o)
        abort();
    return o;
}

static void set_new(json_t *obj, const char *key, json_t *value)
{
    if (!value || json_object_set_new(obj, key, value) != 0)
        abort(); /* out of memory, or invalid UTF-8 in a caller-built struct */
}

static void set_opt_string(json_t *obj, const char *key, const char *value)
{
    if (value[0] != '\0')
        set_new(obj, key, json_string(value));
}

static json_t *int64_string(int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, v);
    return json_string(buf);
}

static json_t *time_string(int64_t us)
{
    char buf[40];
    dom_time_format(us, buf, sizeof buf);
    return json_string(buf);
}

/* Member readers with range checks; optional members leave the default. */
static es_result get_string(const json_t *obj, const char *key, bool required, char *dst,
                            size_t dst_size, es_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        dst[0] = '\0';
        if (required)
            return es_error_set(err, ES_EINVAL, "event field \"%s\": missing", key);
        return ES_OK;
    }
    if (!json_is_string(v))
        return es_error_set(err, ES_EINVAL, "event field \"%s\": expected a string", key);
    size_t len = json_string_length(v);
    const char *s = json_string_value(v);
    if (strlen(s) != len)
        return es_error_set(err, ES_EINVAL, "event field \"%s\": contains a NUL character", key);
    if (len >= dst_size)
        return es_error_set(err, ES_EINVAL, "event field \"%s\": too long (%zu bytes, limit %zu)",
                            key, len, dst_size - 1);
    memcpy(dst, s, len + 1);
    return ES_OK;
}

static es_result get_bool(const json_t *obj, const char *key, bool *dst, es_error *err)
{
    const json_t *v = json_object_get(obj, key);
    *dst = false;
    if (!v)
        return ES_OK;
    if (!json_is_boolean(v))
        return es_error_set(err, ES_EINVAL, "event field \"%s\": expected a boolean", key);
    *dst = json_is_true(v);
    return ES_OK;
}

/* An int64 as a JSON string of decimal digits (no sign, no leading zeros). */
static es_result get_int64(const json_t *obj, const char *key, bool required, int64_t min,
                           int64_t *dst, es_error *err)
{
    const json_t *v = json_object_get(obj, key);
    *dst = 0;
    if (!v) {
        if (required)
            return es_error_set(err, ES_EINVAL, "event field \"%s\": missing", key);
        return ES_OK;
    }
    if (!json_is_string(v))
        return es_error_set(err, ES_EINVAL, "event field \"%s\": expected a string of digits",
                            key);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    bool ok = len > 0 && len <= 19 && !(len > 1 && s[0] == '0');
    uint64_t acc = 0;
    for (size_t i = 0; ok && i < len; i++) {
        ok = s[i] >= '0' && s[i] <= '9';
        acc = acc * 10 + (uint64_t)(s[i] - '0');
    }
    if (!ok || acc > (uint64_t)INT64_MAX || (int64_t)acc < min)
        return es_error_set(err, ES_EINVAL, "event field \"%s\": not an integer >= %" PRId64,
                            key, min);
    *dst = (int64_t)acc;
    return ES_OK;
}

static es_result get_time(const json_t *obj, const char *key, bool required, int64_t *dst,
                          es_error *err)
{
    char buf[64] = "";
    es_result rc = get_string(obj, key, required, buf, sizeof buf, err);
    *dst = 0;
    if (rc != ES_OK || buf[0] == '\0') {
        if (rc == ES_OK && json_object_get(obj, key))
            return es_error_set(err, ES_EINVAL, "event field \"%s\": not an RFC 3339 time", key);
        return rc;
    }
    if (dom_time_parse(buf, dst) != ES_OK)
        return es_error_set(err, ES_EINVAL, "event field \"%s\": not an RFC 3339 time", key);
    return ES_OK;
}

/* --- payloads ------------------------------------------------------------ */

/* factord writes the enum's name; ZITADEL's own events carry its number. */
static es_result get_gender(const json_t *obj, char *dst, size_t dst_size, es_error *err)
{
    static const char *const names[] = { "GENDER_UNSPECIFIED", "GENDER_FEMALE", "GENDER_MALE",
                                         "GENDER_DIVERSE" };
    const json_t *v = json_object_get(obj, "gender");
    if (json_is_integer(v)) {
        json_int_t g = json_integer_value(v);
        if (g < 0 || g >= (json_int_t)(sizeof names / sizeof names[0]))
            return es_error_set(err, ES_EINVAL,
                                "event field \"gender\": unknown gender %" JSON_INTEGER_FORMAT, g);
        snprintf(dst, dst_size, "%s", names[g]);
        return ES_OK;
    }
    return get_string(obj, "gender", false, dst, dst_size, err);
}

json_t *dom_evt_payload_to_json(const dom_evt *evt)
{
    json_t *p = new_object();
    const dom_import *h = &evt->human;
    /* Sealed: the "pii" member stands for every PII field (docs/pii.md). */
    bool sealed = evt->pii[0] != '\0' && dom_evt_type_has_pii(evt->type);
    if (sealed)
        set_new(p, "pii", json_string(evt->pii));
    switch (evt->type) {
    case DOM_EVT_HUMAN_ADDED:
        if (!sealed) {
            set_opt_string(p, "userName", h->user_name);
            set_opt_string(p, "firstName", h->first_name);
            set_opt_string(p, "lastName", h->last_name);
            set_opt_string(p, "nickName", h->nick_name);
            set_opt_string(p, "displayName", h->display_name);
        }
        set_opt_string(p, "preferredLanguage", h->preferred_language);
        if (!sealed) {
            set_opt_string(p, "gender", h->gender);
            set_opt_string(p, "email", h->email);
        }
        set_new(p, "isEmailVerified", json_boolean(h->is_email_verified));
        if (!sealed)
            set_opt_string(p, "phone", h->phone);
        break;
    case DOM_EVT_PHONE_CHANGED:
        if (!sealed)
            set_new(p, "phone", json_string(evt->phone));
        break;
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED:
        set_new(p, "codeSequence", int64_string(evt->delivery.code_sequence));
        set_opt_string(p, "provider", evt->delivery.provider);
        set_opt_string(p, "messageId", evt->delivery.message_id);
        if (!sealed)
            set_opt_string(p, "reason", evt->delivery.reason);
        break;
    case DOM_EVT_PHONE_CODE_ADDED:
    case DOM_EVT_OTP_SMS_CODE_ADDED:
        set_new(p, "code", json_string(evt->code_enc));
        /* 0 = never expires (a code lifetime of 0, as ZITADEL's): no time. */
        if (evt->code_expires_at_us != 0)
            set_new(p, "expiresAt", time_string(evt->code_expires_at_us));
        if (evt->code_returned)
            set_new(p, "codeReturned", json_true());
        if (evt->type == DOM_EVT_OTP_SMS_CODE_ADDED)
            set_opt_string(p, "sessionId", evt->session_id);
        break;
    case DOM_EVT_OTP_SMS_CHECK_SUCCEEDED:
        set_opt_string(p, "sessionId", evt->session_id);
        break;
    case DOM_EVT_SESSION_ADDED:
    case DOM_EVT_SESSION_TOKEN_SET:
        set_new(p, "sessionId", json_string(evt->session_id));
        set_new(p, "tokenHash", json_string(evt->token_hash));
        break;
    case DOM_EVT_REMOVED:
        if (!sealed)
            set_new(p, "userName", json_string(evt->user_name));
        break;
    default:
        break;
    }
    return p;
}

/* The payload members that hold PII fields, by event type (docs/pii.md). */
static const char *const pii_members_human[] = { "userName", "firstName", "lastName", "nickName",
                                                  "displayName", "gender", "email", "phone", NULL };
static const char *const pii_members_phone[] = { "phone", NULL };
static const char *const pii_members_removed[] = { "userName", NULL };
static const char *const pii_members_delivery[] = { "reason", NULL };

static const char *const *pii_members(dom_evt_type t)
{
    switch (t) {
    case DOM_EVT_HUMAN_ADDED: return pii_members_human;
    case DOM_EVT_PHONE_CHANGED: return pii_members_phone;
    case DOM_EVT_REMOVED: return pii_members_removed;
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED: return pii_members_delivery;
    default: return NULL;
    }
}

/* A "pii" member into evt->pii (sealed: *sealed = true). A sealed payload
 * with a plain PII member beside it is refused: a reader could not tell
 * which of the two is true. */
static es_result get_pii(dom_evt *evt, const json_t *payload, bool *sealed, es_error *err)
{
    const char *const *members = pii_members(evt->type);
    *sealed = false;
    if (!members || !json_object_get(payload, "pii"))
        return ES_OK;
    es_result rc = get_string(payload, "pii", false, evt->pii, sizeof evt->pii, err);
    if (rc != ES_OK)
        return rc;
    if (evt->pii[0] == '\0')
        return es_error_set(err, ES_EINVAL, "event field \"pii\": empty");
    for (size_t i = 0; members[i]; i++)
        if (json_object_get(payload, members[i]))
            return es_error_set(err, ES_EINVAL, "event field \"%s\": in clear beside \"pii\"",
                                members[i]);
    *sealed = true;
    evt->pii_state = DOM_PII_SEALED;
    return ES_OK;
}

es_result dom_evt_payload_from_json(dom_evt *evt, const json_t *payload, es_error *err)
{
    dom_import *h = &evt->human;
    es_result rc = ES_OK;

    memset(h, 0, sizeof *h);
    evt->phone[0] = '\0';
    evt->code_enc[0] = '\0';
    evt->code_expires_at_us = 0;
    evt->code_returned = false;
    memset(&evt->delivery, 0, sizeof evt->delivery);
    evt->user_name[0] = '\0';
    evt->session_id[0] = '\0';
    evt->token_hash[0] = '\0';
    memset(evt->pii, 0, sizeof evt->pii);
    evt->pii_state = DOM_PII_CLEAR;
    if (!json_is_object(payload))
        return es_error_set(err, ES_EINVAL, "event field \"payload\": expected an object");
    bool sealed;
    if ((rc = get_pii(evt, payload, &sealed, err)) != ES_OK)
        return rc;

    switch (evt->type) {
    case DOM_EVT_HUMAN_ADDED: {
        /* The phone goes into the state's fixed buffer: it must fit there. */
        char phone[DOM_PHONE_MAX] = "";
        if (sealed) {
            if ((rc = get_string(payload, "preferredLanguage", false, h->preferred_language,
                                 sizeof h->preferred_language, err)) != ES_OK)
                break;
            rc = get_bool(payload, "isEmailVerified", &h->is_email_verified, err);
            break;
        }
        if ((rc = get_string(payload, "userName", false, h->user_name, sizeof h->user_name,
                             err)) != ES_OK ||
            (rc = get_string(payload, "firstName", false, h->first_name, sizeof h->first_name,
                             err)) != ES_OK ||
            (rc = get_string(payload, "lastName", false, h->last_name, sizeof h->last_name,
                             err)) != ES_OK ||
            (rc = get_string(payload, "nickName", false, h->nick_name, sizeof h->nick_name,
                             err)) != ES_OK ||
            (rc = get_string(payload, "displayName", false, h->display_name,
                             sizeof h->display_name, err)) != ES_OK ||
            (rc = get_string(payload, "preferredLanguage", false, h->preferred_language,
                             sizeof h->preferred_language, err)) != ES_OK ||
            (rc = get_gender(payload, h->gender, sizeof h->gender, err)) != ES_OK ||
            (rc = get_string(payload, "email", false, h->email, sizeof h->email, err)) != ES_OK ||
            (rc = get_bool(payload, "isEmailVerified", &h->is_email_verified, err)) != ES_OK ||
            (rc = get_string(payload, "phone", false, phone, sizeof phone, err)) != ES_OK)
            break;
        memcpy(h->phone, phone, sizeof phone);
        break;
    }
    case DOM_EVT_PHONE_CHANGED:
        if (!sealed)
            rc = get_string(payload, "phone", true, evt->phone, sizeof evt->phone, err);
        break;
    case DOM_EVT_PHONE_CODE_SENT:
    case DOM_EVT_PHONE_CODE_SEND_FAILED:
    case DOM_EVT_OTP_SMS_CODE_SENT:
    case DOM_EVT_OTP_SMS_CODE_SEND_FAILED: {
        dom_delivery *d = &evt->delivery;
        d->kind = evt->type == DOM_EVT_PHONE_CODE_SENT || evt->type == DOM_EVT_PHONE_CODE_SEND_FAILED
                      ? DOM_CODE_PHONE
                      : DOM_CODE_OTP_SMS;
        d->sent = evt->type == DOM_EVT_PHONE_CODE_SENT || evt->type == DOM_EVT_OTP_SMS_CODE_SENT;
        if ((rc = get_int64(payload, "codeSequence", true, 1, &d->code_sequence, err)) != ES_OK ||
            (rc = get_string(payload, "provider", false, d->provider, sizeof d->provider, err)) !=
                ES_OK ||
            (rc = get_string(payload, "messageId", false, d->message_id, sizeof d->message_id,
                             err)) != ES_OK)
            break;
        if (!sealed)
            rc = get_string(payload, "reason", false, d->reason, sizeof d->reason, err);
        break;
    }
    case DOM_EVT_PHONE_CODE_ADDED:
    case DOM_EVT_OTP_SMS_CODE_ADDED:
        if ((rc = get_string(payload, "code", true, evt->code_enc, sizeof evt->code_enc, err)) !=
            ES_OK)
            break;
        if ((rc = get_time(payload, "expiresAt", false, &evt->code_expires_at_us, err)) != ES_OK ||
            (rc = get_bool(payload, "codeReturned", &evt->code_returned, err)) != ES_OK)
            break;
        if (evt->type == DOM_EVT_OTP_SMS_CODE_ADDED)
            rc = get_string(payload, "sessionId", false, evt->session_id, sizeof evt->session_id, err);
        break;
    case DOM_EVT_OTP_SMS_CHECK_SUCCEEDED:
        rc = get_string(payload, "sessionId", false, evt->session_id, sizeof evt->session_id, err);
        break;
    case DOM_EVT_SESSION_ADDED:
    case DOM_EVT_SESSION_TOKEN_SET:
        if ((rc = get_string(payload, "sessionId", true, evt->session_id, sizeof evt->session_id,
                             err)) != ES_OK)
            break;
        rc = get_string(payload, "tokenHash", true, evt->token_hash, sizeof evt->token_hash, err);
        break;
    case DOM_EVT_REMOVED:
        if (!sealed)
            rc = get_string(payload, "userName", false, evt->user_name, sizeof evt->user_name,
                            err);
        break;
    default:
        break;
    }
    return rc;
}

/* --- whole events -------------------------------------------------------- */

json_t *dom_evt_to_json(const dom_evt *evt)
{
    json_t *j = new_object();
    set_new(j, "instanceId", json_string(evt->instance_id));
    set_new(j, "aggregateType", json_string(DOM_AGGREGATE_USER));
    set_new(j, "aggregateId", json_string(evt->aggregate_id));
    set_new(j, "sequence", int64_string(evt->sequence));
    set_new(j, "position", int64_string(evt->position));
    set_new(j, "type", json_string(dom_evt_type_name(evt->type)));
    set_new(j, "revision", json_integer(evt->revision));
    set_new(j, "createdAt", time_string(evt->created_at_us));
    set_new(j, "creator", json_string(evt->creator));
    set_new(j, "resourceOwner", json_string(evt->resource_owner));
    set_new(j, "commandId", json_string(evt->command_id));
    set_new(j, "lastOfCommand", json_boolean(evt->last_of_command));
    set_new(j, "payload", dom_evt_payload_to_json(evt));
    return j;
}

es_result dom_evt_from_json(const json_t *j, dom_evt *evt, es_error *err)
{
    char aggregate_type[32] = "", type[64] = "";
    const json_t *rev, *payload;
    es_result rc;

    memset(evt, 0, sizeof *evt);
    if (!json_is_object(j))
        return es_error_set(err, ES_EINVAL, "event: expected a JSON object");
    if ((rc = get_string(j, "aggregateType", true, aggregate_type, sizeof aggregate_type,
                         err)) != ES_OK)
        return rc;
    if (strcmp(aggregate_type, DOM_AGGREGATE_USER) != 0)
        return es_error_set(err, ES_EINVAL, "event field \"aggregateType\": not \"user\"");
    if ((rc = get_string(j, "type", true, type, sizeof type, err)) != ES_OK)
        return rc;
    if ((evt->type = dom_evt_type_parse(type)) == DOM_EVT_UNKNOWN)
        return es_error_set(err, ES_EINVAL, "event field \"type\": unknown event type \"%s\"",
                            type);
    if ((rc = get_string(j, "instanceId", true, evt->instance_id, sizeof evt->instance_id,
                         err)) != ES_OK ||
        (rc = get_string(j, "aggregateId", true, evt->aggregate_id, sizeof evt->aggregate_id,
                         err)) != ES_OK ||
        (rc = get_string(j, "resourceOwner", false, evt->resource_owner,
                         sizeof evt->resource_owner, err)) != ES_OK ||
        (rc = get_string(j, "creator", false, evt->creator, sizeof evt->creator, err)) != ES_OK ||
        (rc = get_string(j, "commandId", false, evt->command_id, sizeof evt->command_id, err)) !=
            ES_OK ||
        (rc = get_int64(j, "sequence", true, 1, &evt->sequence, err)) != ES_OK ||
        (rc = get_int64(j, "position", false, 0, &evt->position, err)) != ES_OK ||
        (rc = get_time(j, "createdAt", true, &evt->created_at_us, err)) != ES_OK ||
        (rc = get_bool(j, "lastOfCommand", &evt->last_of_command, err)) != ES_OK)
        goto fail;
    if (evt->instance_id[0] == '\0' || evt->aggregate_id[0] == '\0') {
        rc = es_error_set(err, ES_EINVAL, "event: empty instanceId or aggregateId");
        goto fail;
    }

    rev = json_object_get(j, "revision");
    evt->revision = DOM_EVT_REVISION;
    if (rev) {
        if (!json_is_integer(rev) || json_integer_value(rev) < 1 ||
            json_integer_value(rev) > 1000) {
            rc = es_error_set(err, ES_EINVAL, "event field \"revision\": not an integer >= 1");
            goto fail;
        }
        evt->revision = (int)json_integer_value(rev);
    }

    payload = json_object_get(j, "payload");
    if (!payload) {
        rc = es_error_set(err, ES_EINVAL, "event field \"payload\": missing");
        goto fail;
    }
    if ((rc = dom_evt_payload_from_json(evt, payload, err)) != ES_OK)
        goto fail;
    return ES_OK;

fail:
    memset(evt, 0, sizeof *evt);
    return rc;
}

/* --- decoding text: a fast path beside jansson ---------------------------- */

/* The events factord's relay publishes are flat objects of plain ASCII
 * strings, small integers and booleans, with one nested payload object.
 * jansson spends about 6 us on one (its lexer, its hash tables, an
 * allocation per value); a projector catching up decodes tens of thousands
 * per second. dom_evt_decode_plain reads exactly that plain shape and fills evt with
 * the rules of dom_evt_from_json; at the first thing outside it (an escape,
 * a non-ASCII byte, a duplicate key, a real number, a missing or malformed
 * field, any error at all) it gives up and dom_evt_decode runs jansson and
 * dom_evt_from_json, which then decide, with their own error text. So the
 * fast path never accepts what the full path refuses, nor fills evt
 * differently (test_domain_codec compares the two on every event type and
 * on thousands of mutations of them). */

typedef struct {
    const char *k, *v;
    size_t kn, vn;
    char t; /* 's' string (v: its bytes), 'n' integer, 't' true, 'f' false,
               'z' null, 'o' object (v: the span with its braces) */
    size_t pairs; /* 'o': how many pairs the object has */
} fp_kv;

#define FP_MAX_PAIRS 32

static const char *fp_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* A string without escapes, control characters or non-ASCII bytes, at p
 * (its opening quote); the position after it, or NULL. */
static const char *fp_str(const char *p, const char *e, const char **s, size_t *n)
{
    const char *q = p + 1;
    while (q < e && *q != '"') {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 || c == '\\' || c >= 0x80)
            return NULL;
        q++;
    }
    if (q >= e)
        return NULL;
    *s = p + 1;
    *n = (size_t)(q - (p + 1));
    return q + 1;
}

/* An object of such strings, short integers, true, false, null and (when
 * nested_ok) flat objects, at p; its pairs into kv (at most max). The
 * position after it, or NULL. */
static const char *fp_obj(const char *p, const char *e, fp_kv *kv, size_t max, size_t *n, bool nested_ok)
{
    *n = 0;
    if (p >= e || *p != '{')
        return NULL;
    p = fp_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        if (*n >= max || p >= e || *p != '"')
            return NULL;
        fp_kv *x = &kv[(*n)++];
        memset(x, 0, sizeof *x);
        if (!(p = fp_str(p, e, &x->k, &x->kn)))
            return NULL;
        p = fp_ws(p, e);
        if (p >= e || *p != ':')
            return NULL;
        p = fp_ws(p + 1, e);
        if (p >= e)
            return NULL;
        if (*p == '"') {
            x->t = 's';
            if (!(p = fp_str(p, e, &x->v, &x->vn)))
                return NULL;
        } else if (*p == '{' && nested_ok) {
            fp_kv inner[FP_MAX_PAIRS];
            const char *start = p;
            if (!(p = fp_obj(p, e, inner, FP_MAX_PAIRS, &x->pairs, false)))
                return NULL;
            x->t = 'o';
            x->v = start;
            x->vn = (size_t)(p - start);
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            const char *start = p;
            if (*p == '-')
                p++;
            const char *digits = p;
            while (p < e && *p >= '0' && *p <= '9')
                p++;
            size_t nd = (size_t)(p - digits);
            if (nd == 0 || nd > 18 || (nd > 1 && *digits == '0') ||
                (p < e && (*p == '.' || *p == 'e' || *p == 'E')))
                return NULL;
            x->t = 'n';
            x->v = start;
            x->vn = (size_t)(p - start);
        } else if (e - p >= 4 && memcmp(p, "true", 4) == 0) {
            x->t = 't';
            p += 4;
        } else if (e - p >= 5 && memcmp(p, "false", 5) == 0) {
            x->t = 'f';
            p += 5;
        } else if (e - p >= 4 && memcmp(p, "null", 4) == 0) {
            x->t = 'z';
            p += 4;
        } else {
            return NULL;
        }
        p = fp_ws(p, e);
        if (p < e && *p == ',') {
            p = fp_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            return p + 1;
        return NULL;
    }
}

static const fp_kv *fp_get(const fp_kv *kv, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (kv[i].kn == kl && memcmp(kv[i].k, key, kl) == 0)
            return &kv[i];
    return NULL;
}

/* A string field into dst (size dst_size): false when absent and required,
 * not a string, or too long. */
static bool fp_copy(const fp_kv *kv, size_t n, const char *key, bool required, char *dst, size_t dst_size)
{
    const fp_kv *x = fp_get(kv, n, key);
    if (!x)
        return !required;
    if (x->t != 's' || x->vn >= dst_size)
        return false;
    memcpy(dst, x->v, x->vn);
    dst[x->vn] = '\0';
    return true;
}

/* get_int64's rules: a string of digits, no sign, no leading zero. */
static bool fp_int64(const fp_kv *kv, size_t n, const char *key, bool required, int64_t min, int64_t *dst)
{
    const fp_kv *x = fp_get(kv, n, key);
    *dst = 0;
    if (!x)
        return !required;
    if (x->t != 's' || x->vn == 0 || x->vn > 19 || (x->vn > 1 && x->v[0] == '0'))
        return false;
    uint64_t acc = 0;
    for (size_t i = 0; i < x->vn; i++) {
        if (x->v[i] < '0' || x->v[i] > '9')
            return false;
        acc = acc * 10 + (uint64_t)(x->v[i] - '0');
    }
    if (acc > (uint64_t)INT64_MAX || (int64_t)acc < min)
        return false;
    *dst = (int64_t)acc;
    return true;
}

bool dom_evt_decode_plain(const char *text, size_t len, dom_evt *evt)
{
    fp_kv kv[FP_MAX_PAIRS];
    size_t n = 0;
    const char *e = text + len;
    const char *p = fp_obj(fp_ws(text, e), e, kv, FP_MAX_PAIRS, &n, true);
    if (!p || fp_ws(p, e) != e)
        return false;
    for (size_t i = 0; i < n; i++) /* jansson refuses duplicate keys (JSON_REJECT_DUPLICATES) */
        for (size_t j = i + 1; j < n; j++)
            if (kv[i].kn == kv[j].kn && memcmp(kv[i].k, kv[j].k, kv[i].kn) == 0)
                return false;

    memset(evt, 0, sizeof *evt);
    char aggregate_type[32], type[64], created[64];
    if (!fp_copy(kv, n, "aggregateType", true, aggregate_type, sizeof aggregate_type) ||
        strcmp(aggregate_type, DOM_AGGREGATE_USER) != 0 || !fp_copy(kv, n, "type", true, type, sizeof type) ||
        (evt->type = dom_evt_type_parse(type)) == DOM_EVT_UNKNOWN ||
        !fp_copy(kv, n, "instanceId", true, evt->instance_id, sizeof evt->instance_id) ||
        !fp_copy(kv, n, "aggregateId", true, evt->aggregate_id, sizeof evt->aggregate_id) ||
        !fp_copy(kv, n, "resourceOwner", false, evt->resource_owner, sizeof evt->resource_owner) ||
        !fp_copy(kv, n, "creator", false, evt->creator, sizeof evt->creator) ||
        !fp_copy(kv, n, "commandId", false, evt->command_id, sizeof evt->command_id) ||
        !fp_int64(kv, n, "sequence", true, 1, &evt->sequence) ||
        !fp_int64(kv, n, "position", false, 0, &evt->position) ||
        !fp_copy(kv, n, "createdAt", true, created, sizeof created) || created[0] == '\0' ||
        dom_time_parse(created, &evt->created_at_us) != ES_OK)
        return false;
    if (evt->instance_id[0] == '\0' || evt->aggregate_id[0] == '\0')
        return false;
    const fp_kv *x = fp_get(kv, n, "lastOfCommand");
    if (x) {
        if (x->t != 't' && x->t != 'f')
            return false;
        evt->last_of_command = x->t == 't';
    }
    evt->revision = DOM_EVT_REVISION;
    if ((x = fp_get(kv, n, "revision")) != NULL) {
        if (x->t != 'n' || x->v[0] == '-' || x->vn > 4)
            return false;
        int rev = 0;
        for (size_t i = 0; i < x->vn; i++)
            rev = rev * 10 + (x->v[i] - '0');
        if (rev < 1 || rev > 1000)
            return false;
        evt->revision = rev;
    }
    /* The payload: its fields follow the type's rules in
     * dom_evt_payload_from_json, fed the same jansson object. An empty one
     * (most events) costs no parse. */
    if (!(x = fp_get(kv, n, "payload")) || x->t != 'o')
        return false;
    json_t *payload = x->pairs ? json_loadb(x->v, x->vn, JSON_REJECT_DUPLICATES, NULL) : json_object();
    if (!payload)
        return false;
    es_error perr;
    es_result rc = dom_evt_payload_from_json(evt, payload, &perr);
    json_decref(payload);
    return rc == ES_OK;
}

es_result dom_evt_decode(const char *text, size_t len, dom_evt *evt, es_error *err)
{
    if (text && dom_evt_decode_plain(text, len, evt))
        return ES_OK;
    json_error_t jerr;
    json_t *j = text ? json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!j) {
        memset(evt, 0, sizeof *evt);
        return es_error_set(err, ES_EINVAL, "not JSON");
    }
    es_result rc = dom_evt_from_json(j, evt, err);
    json_decref(j);
    return rc;
}
