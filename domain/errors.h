/*
 * domain/errors.h - the catalogue of business rejections and factord's
 * result type.
 *
 * A rejection is a value, not an error: the decision carries one, the store
 * keeps it as the command's outcome and the caller gets it as the JSON body
 * of a google.rpc.Status, exactly as ZITADEL's gateway renders it
 * ({"code":9,"message":"<text> (<id>)","details":[{"@type":...,"id":...,
 * "message":...}]}). Every row here is listed in docs/errors.md.
 *
 * Layer: domain; pure: includes only libc, jansson and libuuid, no I/O
 * (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_DOMAIN_ERRORS_H
#define FACTORD_DOMAIN_ERRORS_H

#include <jansson.h>
#include <stddef.h>

#define ES_WUR __attribute__((warn_unused_result))

/* The result of every fallible factord function. */
typedef enum {
    ES_OK = 0,
    ES_EINVAL,   /* bad input: the caller's fault, details in es_error */
    ES_ECONFLICT,/* a concurrency conflict: decide again on fresh state */
    ES_ETRANSIENT, /* a server is away or timed out: retry later */
    ES_EFATAL    /* anything else: log and stop */
} es_result;

/* Caller-owned error details; fixed buffers so the error path never allocates. */
typedef struct {
    char text[512];  /* human readable, no secrets */
    char sqlstate[6];/* PostgreSQL SQLSTATE when one applies, else "" */
} es_error;

/* printf-style fill of err (NULL-safe); returns rc so callers can
 * `return es_error_set(err, ES_EINVAL, "...")`. */
es_result es_error_set(es_error *err, es_result rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *es_result_name(es_result rc);

/* gRPC status codes used by factord (google.rpc.Code). */
enum {
    DOM_GRPC_OK = 0,
    DOM_GRPC_INVALID_ARGUMENT = 3,
    DOM_GRPC_DEADLINE_EXCEEDED = 4,
    DOM_GRPC_NOT_FOUND = 5,
    DOM_GRPC_ALREADY_EXISTS = 6,
    DOM_GRPC_PERMISSION_DENIED = 7,
    DOM_GRPC_FAILED_PRECONDITION = 9,
    DOM_GRPC_INTERNAL = 13,
    DOM_GRPC_UNAVAILABLE = 14,
    DOM_GRPC_UNAUTHENTICATED = 16
};

/* Every rejection factord can give. Order is irrelevant; ids are stable. */
typedef enum {
    DOM_REJ_NONE = 0,
    DOM_REJ_USER_ID_MISSING,        /* COMMAND-QSF2s (AddMyAuthFactorOTPSMS) */
    DOM_REJ_TOKEN_INVALID,          /* AUTH-7fs1e, unusable authenticated user */
    DOM_REJ_OTP_SMS_ALREADY_READY,  /* COMMAND-Ad3g2 */
    DOM_REJ_OTP_SMS_NOT_READY,      /* COMMAND-Q54j2 */
    DOM_REJ_OTP_SMS_NOT_ADDED,      /* removing a factor that is not there */
    DOM_REJ_PHONE_EMPTY,
    DOM_REJ_PHONE_INVALID,
    DOM_REJ_PHONE_NOT_CHANGED,
    DOM_REJ_PHONE_NOT_FOUND,
    DOM_REJ_PHONE_ALREADY_VERIFIED,
    DOM_REJ_CODE_EMPTY,
    DOM_REJ_CODE_NOT_FOUND,
    DOM_REJ_CODE_EXPIRED,
    DOM_REJ_CODE_INVALID,
    DOM_REJ_ORG_MISSING,
    DOM_REJ_HUMAN_INVALID,          /* PROFILE-GPY3p: no profile given */
    DOM_REJ_EMAIL_INVALID,
    DOM_REJ_USER_NAME_MISSING,
    DOM_REJ_USER_NAME_TAKEN,
    DOM_REJ_USER_NOT_FOUND,         /* COMMAND-5M9fs: LockUser's; others below */
    DOM_REJ_USER_ALREADY_LOCKED,    /* COMMAND-3NN8v: locked or inactive */
    DOM_REJ_USER_NOT_LOCKED,
    DOM_REJ_USER_ALREADY_INACTIVE,
    DOM_REJ_USER_NOT_INACTIVE,
    DOM_REJ_USER_LOCKED_CANT_DEACTIVATE, /* unused: ZITADEL deactivates locked users */
    DOM_REJ_COMMAND_ID_REUSED,      /* same id, different content */
    DOM_REJ_COMMAND_MALFORMED,      /* undecodable record with a readable id */
    /* Added with docs/errors.md: ZITADEL gives each command its own id for
     * "user id missing" and "user not found", and splits the import's
     * profile and email checks. The values above keep their numbers. */
    DOM_REJ_USER_ID_MISSING_REMOVE_OTP_SMS, /* COMMAND-S3br2 */
    DOM_REJ_USER_ID_MISSING_VERIFY_PHONE,   /* COMMAND-Km9ds */
    DOM_REJ_USER_ID_MISSING_REMOVE_PHONE,   /* COMMAND-6M0ds */
    DOM_REJ_USER_ID_MISSING_LOCK,           /* COMMAND-2M0sd */
    DOM_REJ_USER_ID_MISSING_UNLOCK,         /* COMMAND-M0dse */
    DOM_REJ_USER_ID_MISSING_DEACTIVATE,     /* COMMAND-m0gDf */
    DOM_REJ_USER_ID_MISSING_REACTIVATE,     /* COMMAND-4M9ds */
    DOM_REJ_USER_ID_MISSING_REMOVE_USER,    /* COMMAND-2M0ds */
    DOM_REJ_USER_NOT_FOUND_UNLOCK,          /* COMMAND-M0dos */
    DOM_REJ_USER_NOT_FOUND_DEACTIVATE,      /* COMMAND-3M9ds */
    DOM_REJ_USER_NOT_FOUND_REACTIVATE,      /* COMMAND-4M0sd */
    DOM_REJ_USER_NOT_FOUND_REMOVE_USER,     /* COMMAND-m9od */
    DOM_REJ_USER_ALREADY_EXISTS,            /* COMMAND-ziuna: import of a used user id */
    DOM_REJ_FIRST_NAME_EMPTY,               /* PROFILE-RF5z2 */
    DOM_REJ_LAST_NAME_EMPTY,                /* PROFILE-DSUkN */
    DOM_REJ_EMAIL_EMPTY,                    /* EMAIL-spblu */
    DOM_REJ_EMAIL_DISPLAY_NAME,             /* EMAIL-599GV: "Name <a@b.c>" */
    /* ResendMyPhoneVerification (CreateHumanPhoneVerificationCode) */
    DOM_REJ_USER_ID_MISSING_RESEND_PHONE,   /* COMMAND-4M0ds */
    DOM_REJ_PHONE_NOT_FOUND_RESEND,         /* COMMAND-2b7Hf */
    /* ChallengeOTPSMS (HumanSendOTPSMS; the sign-in's state checks) */
    DOM_REJ_USER_ID_MISSING_OTP_CHALLENGE,  /* COMMAND-S3SF1 */
    DOM_REJ_OTP_SMS_NOT_READY_CHALLENGE,    /* COMMAND-SFD52 */
    DOM_REJ_USER_LOCKED_SIGNIN,             /* AUTH-SF3gb */
    DOM_REJ_USER_INACTIVE_SIGNIN,           /* AUTH-2n8fs */
    /* CheckOTPSMS (HumanCheckOTPSMS, checkOTP, crypto.VerifyCode) */
    DOM_REJ_USER_ID_MISSING_OTP_CHECK,      /* COMMAND-S453v */
    DOM_REJ_CODE_EMPTY_OTP_CHECK,           /* COMMAND-SJl2g */
    DOM_REJ_OTP_SMS_NOT_READY_CHECK,        /* COMMAND-d2r52 */
    DOM_REJ_USER_LOCKED_OTP_CHECK,          /* COMMAND-S6h4R */
    DOM_REJ_CODE_NOT_FOUND_OTP_CHECK,       /* COMMAND-S34gh: none pending, or used */
    DOM_REJ_OTP_CODE_INVALID,               /* CODE-woT0xc */
    /* RecordCodeDelivery (HumanOTPSMSCodeSent, HumanPhoneVerificationCodeSent) */
    DOM_REJ_USER_ID_MISSING_OTP_SENT,       /* COMMAND-AE2h2 */
    DOM_REJ_OTP_SMS_NOT_READY_SENT,         /* COMMAND-SD3gh */
    DOM_REJ_USER_ID_MISSING_PHONE_SENT,     /* COMMAND-3m9Fs */
    DOM_REJ_USER_NOT_FOUND_PHONE_SENT,      /* COMMAND-3M9fs */
    DOM_REJ_PHONE_NOT_FOUND_SENT,           /* COMMAND-66n8J */
    DOM_REJ_CODE_NOT_FOUND_SENT,            /* COMMAND-G3t31: no such code event */
    /* CreateSession and SetSession (ZITADEL's session service: the user
     * check, CreateOTPSMSChallenge, CheckOTPSMS) */
    DOM_REJ_USER_ID_MISSING_SESSION_CHALLENGE, /* COMMAND-JKL3g */
    DOM_REJ_USER_ID_MISSING_SESSION_CHECK,  /* COMMAND-VDrh3 */
    DOM_REJ_USER_NOT_FOUND_SESSION,         /* QUERY-Dfbg2: the session's user is gone */
    DOM_REJ_USER_NOT_ACTIVE_SESSION,        /* SESSION-Gj4ko: locked or deactivated */
    DOM_REJ_OTP_SMS_NOT_READY_SESSION,      /* COMMAND-BJ2g3 */
    DOM_REJ_CODE_NOT_FOUND_SESSION,         /* COMMAND-SF3tv: no challenge pending */
    DOM_REJ__COUNT
} dom_rej;

typedef struct {
    int grpc_code;
    int http_status;
    const char *id;       /* e.g. "COMMAND-Q54j2" */
    const char *message;  /* English text, or the i18n key where ZITADEL keeps it */
} dom_rej_info;

/* The catalogue row of r; never NULL (DOM_REJ_NONE gives code 0). */
const dom_rej_info *dom_rej_lookup(dom_rej r);

/* HTTP status for a gRPC code, as grpc-gateway maps it. */
int dom_grpc_http_status(int grpc_code);

/* The google.rpc.Status body for r. detail, when non-NULL and non-empty, is
 * appended to the message (used for decode reasons). New reference. */
json_t *dom_rej_body(dom_rej r, const char *detail);

/* Same shape for an arbitrary code/id/message (gateway-level errors). */
json_t *dom_status_body(int grpc_code, const char *id, const char *message);

#endif
