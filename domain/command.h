/*
 * domain/command.h - commands as they travel on the commands topic.
 *
 * A command is JSON keyed by user id (docs/contracts.md). Decoding is strict:
 * unknown types, missing fields and wrong types are reported with a reason,
 * and whatever could still be read (the id, replyTo) is left in the struct so
 * that the processor can answer the caller. The canonical encoding (sorted
 * keys, compact, without replyTo) is what the idempotency hash covers.
 *
 * Layer: domain; pure: includes only libc, jansson and libuuid, no I/O
 * (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_DOMAIN_COMMAND_H
#define FACTORD_DOMAIN_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"

#define DOM_UUID_LEN 36
#define DOM_ID_MAX 128       /* instance, user and organisation ids, incl. NUL */
#define DOM_TOPIC_MAX 250    /* Kafka's topic name limit is 249 */
#define DOM_TEXT_MAX 256     /* names, user names, e-mail addresses */
#define DOM_PHONE_MAX 32
#define DOM_CODE_MAX 16
#define DOM_TOKEN_HASH_LEN 64  /* a session token's SHA-256, lowercase hex */
#define DOM_CMD_MAX_BYTES (64 * 1024) /* larger records are dead-lettered */

typedef enum {
    DOM_CMD_UNKNOWN = 0,
    DOM_CMD_ADD_OTP_SMS,     /* AddMyAuthFactorOTPSMS */
    DOM_CMD_REMOVE_OTP_SMS,  /* RemoveMyAuthFactorOTPSMS */
    DOM_CMD_SET_PHONE,       /* SetMyPhone {phone, returnCode?} */
    DOM_CMD_VERIFY_PHONE,    /* VerifyMyPhone {code} */
    DOM_CMD_REMOVE_PHONE,    /* RemoveMyPhone */
    DOM_CMD_IMPORT_HUMAN,    /* ImportHumanUser {...} */
    DOM_CMD_LOCK,            /* LockUser */
    DOM_CMD_UNLOCK,          /* UnlockUser */
    DOM_CMD_DEACTIVATE,      /* DeactivateUser */
    DOM_CMD_REACTIVATE,      /* ReactivateUser */
    DOM_CMD_REMOVE_USER,     /* RemoveUser */
    DOM_CMD_RESEND_PHONE_CODE, /* ResendMyPhoneVerification {returnCode?} */
    DOM_CMD_CHALLENGE_OTP_SMS, /* ChallengeOTPSMS {returnCode?}: send a sign-in code */
    DOM_CMD_CHECK_OTP_SMS,     /* CheckOTPSMS {code} */
    DOM_CMD_RECORD_CODE_DELIVERY, /* RecordCodeDelivery {...}: the notifier's outcome */
    DOM_CMD_CREATE_SESSION,  /* CreateSession {sessionId, tokenHash, otpSmsChallenge?, returnCode?} */
    DOM_CMD_SET_SESSION,     /* SetSession {sessionId, tokenHash, code?, otpSmsChallenge?, returnCode?} */
    DOM_CMD__COUNT
} dom_cmd_type;

typedef struct {
    char user_name[DOM_TEXT_MAX];
    char first_name[DOM_TEXT_MAX];
    char last_name[DOM_TEXT_MAX];
    char nick_name[DOM_TEXT_MAX];
    char display_name[DOM_TEXT_MAX];
    char preferred_language[16];
    char gender[32];          /* "GENDER_UNSPECIFIED", "GENDER_FEMALE", ... */
    char email[DOM_TEXT_MAX];
    bool is_email_verified;
    char phone[DOM_TEXT_MAX]; /* as given; normalised by the decision */
    bool is_phone_verified;
} dom_import;

/* Which code a delivery is about. */
typedef enum {
    DOM_CODE_NONE = 0,
    DOM_CODE_PHONE,   /* "phone": a phone verification code */
    DOM_CODE_OTP_SMS  /* "otpSms": a sign-in code of the OTP-SMS factor */
} dom_code_kind;

#define DOM_PROVIDER_MAX 32
#define DOM_REASON_MAX 200

/* The outcome of sending one code (RecordCodeDelivery's payload and the
 * ...code.sent / ...code.send.failed events'). */
typedef struct {
    dom_code_kind kind;
    int64_t code_sequence;             /* sequence of the code event, >= 1 */
    bool sent;                         /* "outcome": "sent" or "failed" */
    char provider[DOM_PROVIDER_MAX];   /* "twilio", "webhook" */
    char message_id[DOM_ID_MAX];       /* the provider's id of the message */
    char reason[DOM_REASON_MAX];       /* why a send failed; no secrets */
} dom_delivery;

const char *dom_code_kind_name(dom_code_kind k); /* "phone", "otpSms", "" */

typedef struct {
    char id[DOM_UUID_LEN + 1];        /* lowercase canonical UUID */
    dom_cmd_type type;
    char instance_id[DOM_ID_MAX];
    char user_id[DOM_ID_MAX];          /* may be "": the decision rejects it */
    char resource_owner[DOM_ID_MAX];
    char reply_to[DOM_TOPIC_MAX];      /* "" = the configured default */
    char creator[DOM_ID_MAX];          /* who acts; "" = the user itself */
    /* payload, by type */
    char phone[DOM_TEXT_MAX];          /* SetMyPhone, as given */
    char code[DOM_CODE_MAX * 2];       /* VerifyMyPhone, CheckOTPSMS; SetSession:
                                          the OTP-SMS check ("" = none) */
    bool return_code;                  /* SetMyPhone, ResendMyPhoneVerification,
                                          ChallengeOTPSMS, the sessions' challenge */
    char session_id[DOM_ID_MAX];       /* CreateSession, SetSession */
    char token_hash[DOM_TOKEN_HASH_LEN + 1]; /* ... the new session token's hash */
    bool otp_challenge;                /* ... send an OTP-SMS sign-in code */
    dom_delivery delivery;             /* RecordCodeDelivery */
    dom_import import;                 /* ImportHumanUser */
} dom_cmd;

/* Name on the wire ("AddMyAuthFactorOTPSMS"), "" for DOM_CMD_UNKNOWN. */
const char *dom_cmd_type_name(dom_cmd_type t);
dom_cmd_type dom_cmd_type_parse(const char *name);

/* Decode one record. On ES_EINVAL err->text says why, and cmd->id /
 * cmd->reply_to hold what could be read ("" otherwise). */
es_result dom_cmd_decode(const char *buf, size_t len, dom_cmd *cmd, es_error *err) ES_WUR;

/* Encode as wire JSON (with replyTo when include_reply_to). New reference. */
json_t *dom_cmd_to_json(const dom_cmd *cmd, bool include_reply_to);

/* The canonical text the idempotency hash covers: sorted keys, compact,
 * without replyTo. Caller frees with free(). */
char *dom_cmd_canonical(const dom_cmd *cmd);

#endif
