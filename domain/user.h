/*
 * domain/user.h - the user aggregate: its write-side state, apply and decide.
 *
 * dom_user is the write-side projection that commands are checked against
 * (brief §4.9): one row per (instance, user) in factord.users, updated by
 * dom_user_apply in the transaction that appends the events, and rebuildable
 * by folding the log through the same function.
 *
 * dom_user_decide is pure: the clock, the fresh phone code and its
 * ciphertext, the decrypted stored code and the user-name lookup are inputs
 * in dom_ctx. It never fails; a business rejection is a value.
 *
 * Layer: domain; pure: includes only libc, jansson and libuuid, no I/O
 * (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_DOMAIN_USER_H
#define FACTORD_DOMAIN_USER_H

#include <stdbool.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "domain/event.h"

typedef enum {
    DOM_USER_NONE = 0,    /* never added */
    DOM_USER_ACTIVE,
    DOM_USER_LOCKED,
    DOM_USER_INACTIVE,    /* deactivated */
    DOM_USER_REMOVED
} dom_user_status;

typedef struct {
    char instance_id[DOM_ID_MAX];
    char user_id[DOM_ID_MAX];
    char resource_owner[DOM_ID_MAX];
    char user_name[DOM_TEXT_MAX];
    dom_user_status status;
    int64_t sequence;                  /* of the last applied event; 0 = none */
    char phone[DOM_PHONE_MAX];         /* current number, "" = none */
    bool phone_verified;               /* the current number is verified */
    char verified_phone[DOM_PHONE_MAX];/* latest verified number: codes go here */
    bool otp_sms;                      /* the OTP-SMS factor is added */
    char code_enc[DOM_CODE_ENC_MAX];   /* pending phone code, ciphertext */
    int64_t code_expires_at_us;
    char otp_code_enc[DOM_CODE_ENC_MAX]; /* pending OTP-SMS sign-in code, ciphertext;
                                            "" = none (never sent, used or void) */
    int64_t otp_code_expires_at_us;    /* 0 = never expires */
    int32_t otp_failed;                /* OTP-SMS checks failed since the last
                                          success, unlock or creation */
    char otp_code_session[DOM_ID_MAX]; /* the session whose challenge the pending
                                          code is ("" = ChallengeOTPSMS's, or none) */
    int64_t created_at_us;
    int64_t changed_at_us;
} dom_user;

const char *dom_user_status_name(dom_user_status s); /* "active", ... */
dom_user_status dom_user_status_parse(const char *s);

/* Fold one event into st (sequence, dates and the fields the type touches).
 * st->instance_id/user_id are taken from the event when st is empty. */
void dom_user_apply(dom_user *st, const dom_evt *evt);

/* Equal strings, compared in time that depends only on their lengths (codes,
 * token hashes: what a caller must not learn byte by byte). */
bool dom_secret_equal(const char *a, const char *b);

typedef struct {
    int64_t now_us;            /* event creation time */
    const char *new_code;      /* a command that issues a code (SetMyPhone, import,
                                  ResendMyPhoneVerification, ChallengeOTPSMS):
                                  fresh plaintext */
    const char *new_code_enc;  /* ... and its ciphertext (stored in the event) */
    int64_t code_ttl_us;       /* ... and its lifetime (0 = never expires) */
    const char *stored_code;   /* VerifyMyPhone: plaintext of st->code_enc;
                                  CheckOTPSMS: of st->otp_code_enc; or NULL */
    bool user_name_taken;      /* ImportHumanUser: the name is held by another live user */
    int32_t max_otp_attempts;  /* lockout policy: the failed OTP checks that lock
                                  the user (ZITADEL's MaxOTPAttempts); 0 = never */
} dom_ctx;

#define DOM_MAX_EVENTS 4

typedef struct {
    bool accepted;             /* the caller gets a success reply */
    dom_rej rej;               /* when !accepted */
    char rej_detail[128];      /* optional detail appended to the message */
    size_t n_events;           /* events to append: a rejection may have some
                                  (phone.verification.failed) */
    dom_evt events[DOM_MAX_EVENTS]; /* only the first n_events are set */
    char code[DOM_CODE_MAX];   /* returnCode: plaintext code for the reply */
} dom_decision;

/* Decide cmd against st (the latest state of cmd's user) at ctx. Events get
 * sequences st->sequence+1..., instance/aggregate/owner/creator/command id
 * and time filled in; the last event of an accepted command is marked. */
void dom_user_decide(const dom_user *st, const dom_cmd *cmd, const dom_ctx *ctx,
                     dom_decision *dec);

/* The reply body a caller gets for an accepted decision's last event:
 * {"details":{"sequence","creationDate","changeDate","resourceOwner"}}
 * (plus "code" when dec->code is set). New reference. */
json_t *dom_success_body(const dom_evt *last, const char *code);

#endif
