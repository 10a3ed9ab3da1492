/*
 * domain/event.h - the events of the user aggregate.
 *
 * An event is a plain struct: the store gives it its position, the decision
 * everything else. Payloads are small fixed fields; dom_evt_payload_to_json
 * and dom_evt_payload_from_json are the only place that knows their JSON
 * shape (docs/contracts.md, "Events"). ZITADEL's names for the factor events
 * (user.human.mfa.otp.sms.*) are accepted when parsing a type.
 *
 * Layer: domain; pure: includes only libc, jansson and libuuid, no I/O
 * (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_DOMAIN_EVENT_H
#define FACTORD_DOMAIN_EVENT_H

#include <stdbool.h>
#include <stdint.h>

#include "domain/command.h"

#define DOM_AGGREGATE_USER "user"
#define DOM_EVT_REVISION 1
#define DOM_CODE_ENC_MAX 256

/* Personal data (docs/pii.md). The PII fields of an event travel sealed as
 * one payload member "pii": "pii:v1:<base64(nonce | ciphertext | tag)>".
 * The plaintext is the sealed record (dom_evt_pii_pack): at most
 * DOM_PII_RECORD_MAX bytes; sealed and encoded it fits DOM_PII_SEALED_MAX. */
#define DOM_PII_PREFIX "pii:v1:"
#define DOM_PII_RECORD_MAX 2080
#define DOM_PII_SEALED_MAX 2832
#define DOM_PII_PAD 32

/* Field ids of the sealed record, in the order it holds them. */
typedef enum {
    DOM_PII_F_END = 0,
    DOM_PII_F_USER_NAME = 1,    /* human.user_name; user_name (REMOVED) */
    DOM_PII_F_FIRST_NAME = 2,
    DOM_PII_F_LAST_NAME = 3,
    DOM_PII_F_NICK_NAME = 4,
    DOM_PII_F_DISPLAY_NAME = 5,
    DOM_PII_F_GENDER = 6,
    DOM_PII_F_EMAIL = 7,
    DOM_PII_F_PHONE = 8,        /* human.phone; phone (PHONE_CHANGED) */
    DOM_PII_F_REASON = 9,       /* delivery.reason (the delivery events) */
    DOM_PII_F__COUNT
} dom_pii_field;

/* Where an event's PII fields stand (docs/pii.md, "The sealed payload"). */
typedef enum {
    DOM_PII_CLEAR = 0, /* no sealed member: the fields are the payload's, in clear */
    DOM_PII_SEALED,    /* pii holds the sealed fields; the fields are empty */
    DOM_PII_OPEN,      /* pii holds them, and the fields their plaintext */
    DOM_PII_ERASED     /* pii holds them, but the user's key is destroyed:
                          the fields stay empty */
} dom_pii_state;

typedef enum {
    DOM_EVT_UNKNOWN = 0,
    DOM_EVT_HUMAN_ADDED,              /* user.human.added */
    DOM_EVT_PHONE_CHANGED,            /* user.human.phone.changed */
    DOM_EVT_PHONE_CODE_ADDED,         /* user.human.phone.code.added */
    DOM_EVT_PHONE_VERIFIED,           /* user.human.phone.verified */
    DOM_EVT_PHONE_VERIFICATION_FAILED,/* user.human.phone.verification.failed */
    DOM_EVT_PHONE_REMOVED,            /* user.human.phone.removed */
    DOM_EVT_OTP_SMS_ADDED,            /* user.human.otp.sms.added */
    DOM_EVT_OTP_SMS_REMOVED,          /* user.human.otp.sms.removed */
    DOM_EVT_LOCKED,                   /* user.locked */
    DOM_EVT_UNLOCKED,                 /* user.unlocked */
    DOM_EVT_DEACTIVATED,              /* user.deactivated */
    DOM_EVT_REACTIVATED,              /* user.reactivated */
    DOM_EVT_REMOVED,                  /* user.removed */
    DOM_EVT_OTP_SMS_CODE_ADDED,       /* user.human.otp.sms.code.added */
    DOM_EVT_OTP_SMS_CODE_SENT,        /* user.human.otp.sms.code.sent */
    DOM_EVT_OTP_SMS_CODE_SEND_FAILED, /* user.human.otp.sms.code.send.failed */
    DOM_EVT_OTP_SMS_CHECK_SUCCEEDED,  /* user.human.otp.sms.check.succeeded */
    DOM_EVT_OTP_SMS_CHECK_FAILED,     /* user.human.otp.sms.check.failed */
    DOM_EVT_PHONE_CODE_SENT,          /* user.human.phone.code.sent */
    DOM_EVT_PHONE_CODE_SEND_FAILED,   /* user.human.phone.code.send.failed */
    DOM_EVT_SESSION_ADDED,            /* user.session.added: a session of this user */
    DOM_EVT_SESSION_TOKEN_SET,        /* user.session.token.set: its token replaced */
    DOM_EVT__COUNT
} dom_evt_type;

typedef struct {
    dom_evt_type type;
    char instance_id[DOM_ID_MAX];
    char aggregate_id[DOM_ID_MAX];     /* the user id */
    char resource_owner[DOM_ID_MAX];
    char creator[DOM_ID_MAX];
    char command_id[DOM_UUID_LEN + 1];
    int64_t sequence;                  /* per aggregate: 1, 2, 3, ... */
    int64_t position;                  /* global, given by the store; 0 before */
    int64_t created_at_us;             /* microseconds since the epoch, UTC */
    int revision;
    bool last_of_command;              /* last event of an accepted command:
                                          the success reply is due after it */
    /* payload, by type */
    dom_import human;                  /* HUMAN_ADDED (phone already normalised) */
    char phone[DOM_PHONE_MAX];         /* PHONE_CHANGED */
    char code_enc[DOM_CODE_ENC_MAX];   /* PHONE_CODE_ADDED, OTP_SMS_CODE_ADDED:
                                          ciphertext, base64 */
    int64_t code_expires_at_us;        /* ... and its expiry (0 = never) */
    bool code_returned;                /* ... the command asked for the code in
                                          its reply (returnCode), so the projector
                                          decrypts it into the reply */
    dom_delivery delivery;             /* *_CODE_SENT, *_CODE_SEND_FAILED (kind
                                          and sent follow from the type) */
    char user_name[DOM_TEXT_MAX];      /* REMOVED: the name that is freed */
    char session_id[DOM_ID_MAX];       /* SESSION_*; OTP_SMS_CODE_ADDED and
                                          OTP_SMS_CHECK_SUCCEEDED of a session
                                          ("" = none) */
    char token_hash[DOM_TOKEN_HASH_LEN + 1]; /* SESSION_*: the token's SHA-256, hex */
    /* personal data (docs/pii.md): the sealed member, "" for a plain event;
     * when set, the payload carries it instead of the PII fields, whatever
     * pii_state says, so opening or erasing never changes the event's bytes */
    char pii[DOM_PII_SEALED_MAX];
    dom_pii_state pii_state;
} dom_evt;

const char *dom_evt_type_name(dom_evt_type t);   /* "" for UNKNOWN */
/* The code events: PHONE_CODE_ADDED and OTP_SMS_CODE_ADDED. */
bool dom_evt_is_code(dom_evt_type t);
dom_evt_type dom_evt_type_parse(const char *name); /* accepts ZITADEL's mfa names */

/* --- personal data (docs/pii.md) ------------------------------------------ */

/* Whether events of type t have PII fields (and are sealed when sealing is on). */
bool dom_evt_type_has_pii(dom_evt_type t);
/* The sealed record of evt's PII fields into buf (cap bytes, at least
 * DOM_PII_RECORD_MAX): each non-empty field as id, length byte, bytes, in
 * id order, then DOM_PII_F_END, then zeros to a multiple of DOM_PII_PAD.
 * ES_EINVAL when evt's type has no PII fields or a field is longer than
 * 255 bytes. */
es_result dom_evt_pii_pack(const dom_evt *evt, unsigned char *buf, size_t cap, size_t *len,
                           es_error *err) ES_WUR;
/* The fields of a sealed record (len bytes) into evt's PII fields, which
 * are emptied first; pii and pii_state are left alone. ES_EINVAL (fields
 * emptied) for a record that is not one pack could have made for evt's
 * type: an unknown or repeated id, ids out of order, an empty field, a field
 * that does not fit its place or is not UTF-8 or holds a NUL, padding that
 * is not zeros. */
es_result dom_evt_pii_unpack(dom_evt *evt, const unsigned char *buf, size_t len,
                             es_error *err) ES_WUR;
/* Empty evt's PII fields (pii and pii_state are left alone). */
void dom_evt_pii_clear(dom_evt *evt);

/* Payload JSON of evt (new reference; {} for payload-less types). */
json_t *dom_evt_payload_to_json(const dom_evt *evt);
/* Fill evt's payload fields from JSON according to evt->type. */
es_result dom_evt_payload_from_json(dom_evt *evt, const json_t *payload, es_error *err) ES_WUR;

/* The whole event as JSON (brief §3 shape: instanceId, aggregateType,
 * aggregateId, sequence and position as strings, type, revision, createdAt
 * RFC 3339 UTC with microseconds, creator, resourceOwner, commandId,
 * lastOfCommand, payload). New reference. */
json_t *dom_evt_to_json(const dom_evt *evt);
es_result dom_evt_from_json(const json_t *j, dom_evt *evt, es_error *err) ES_WUR;
/* An event from its JSON text (len bytes, no NUL needed): the same result,
 * evt and errors as jansson's json_loadb (duplicate keys refused) and
 * dom_evt_from_json, with "not JSON" for text that does not parse; plain
 * events (what factord's relay publishes) take a fast path that skips
 * jansson's tree. */
es_result dom_evt_decode(const char *text, size_t len, dom_evt *evt, es_error *err) ES_WUR;
/* The fast path alone: true when text is a plain event (ASCII strings
 * without escapes, no duplicate keys, every field as dom_evt_from_json
 * wants it) and evt holds it exactly as the full path would fill it;
 * false when undecided (evt is then unspecified). For tests. */
bool dom_evt_decode_plain(const char *text, size_t len, dom_evt *evt) ES_WUR;

/* The instants RFC 3339 can write with a four-digit year:
 * 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z, in microseconds. */
#define DOM_TIME_MIN_US (INT64_C(-62135596800) * 1000000)
#define DOM_TIME_MAX_US (INT64_C(253402300800) * 1000000 - 1)

/* RFC 3339 UTC with microseconds ("2024-03-27T10:05:48.581123Z") into buf
 * (at least 32 bytes). Pure arithmetic, no time zone database. Outside
 * [DOM_TIME_MIN_US, DOM_TIME_MAX_US] (or when buf is too small) buf gets "". */
void dom_time_format(int64_t us, char *buf, size_t len);
/* Parse RFC 3339 (Z or +hh:mm offsets, 0-9 fraction digits; digits past
 * the microsecond are truncated; second 60 and instants outside the range
 * above are refused). */
es_result dom_time_parse(const char *s, int64_t *us) ES_WUR;

#endif
