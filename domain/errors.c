/*
 * domain/errors.c - factord's result names and the catalogue of business
 * rejections, rendered as the google.rpc.Status bodies that ZITADEL's
 * gateway returns.
 *
 * The catalogue is one static table indexed by dom_rej, so a rejection's
 * id, text and gRPC code live in exactly one place; docs/errors.md lists
 * the same rows (ids and English texts from ZITADEL's
 * internal/command/user*.go and internal/static/i18n/en.yaml). A test
 * checks that every row is filled and that each row's HTTP status agrees
 * with dom_grpc_http_status.
 */
#include "domain/errors.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

es_result es_error_set(es_error *err, es_result rc, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->text, sizeof err->text, fmt, ap);
        va_end(ap);
        err->sqlstate[0] = '\0';
    }
    return rc;
}

const char *es_result_name(es_result rc)
{
    switch (rc) {
    case ES_OK: return "ok";
    case ES_EINVAL: return "invalid";
    case ES_ECONFLICT: return "conflict";
    case ES_ETRANSIENT: return "transient";
    case ES_EFATAL: return "fatal";
    }
    return "unknown";
}

int dom_grpc_http_status(int grpc_code)
{
    /* grpc-gateway's runtime.HTTPStatusFromCode. */
    switch (grpc_code) {
    case 0: return 200;  /* OK */
    case 1: return 499;  /* Canceled: grpc-gateway's "client closed request" */
    case 2: return 500;  /* Unknown */
    case 3: return 400;  /* InvalidArgument */
    case 4: return 504;  /* DeadlineExceeded */
    case 5: return 404;  /* NotFound */
    case 6: return 409;  /* AlreadyExists */
    case 7: return 403;  /* PermissionDenied */
    case 8: return 429;  /* ResourceExhausted */
    case 9: return 400;  /* FailedPrecondition */
    case 10: return 409; /* Aborted */
    case 11: return 400; /* OutOfRange */
    case 12: return 501; /* Unimplemented */
    case 13: return 500; /* Internal */
    case 14: return 503; /* Unavailable */
    case 15: return 500; /* DataLoss */
    case 16: return 401; /* Unauthenticated */
    default: return 500; /* as grpc-gateway: anything else is internal */
    }
}

/* Shorthands so that each row states its gRPC code once and the HTTP status
 * follows grpc-gateway (checked by a unit test against dom_grpc_http_status). */
#define INVALID(id, text) { DOM_GRPC_INVALID_ARGUMENT, 400, id, text }
#define PRECONDITION(id, text) { DOM_GRPC_FAILED_PRECONDITION, 400, id, text }
#define NOT_FOUND(id, text) { DOM_GRPC_NOT_FOUND, 404, id, text }
#define EXISTS(id, text) { DOM_GRPC_ALREADY_EXISTS, 409, id, text }
#define UNAUTHENTICATED(id, text) { DOM_GRPC_UNAUTHENTICATED, 401, id, text }

static const dom_rej_info catalogue[DOM_REJ__COUNT] = {
    [DOM_REJ_NONE] = { DOM_GRPC_OK, 200, "", "" },
    /* AddMyAuthFactorOTPSMS: brief §1, in check order. */
    [DOM_REJ_USER_ID_MISSING] = INVALID("COMMAND-QSF2s", "User ID missing"),
    /* Raised by ZITADEL's AuthorizationInterceptor, outside its translation
     * step: the message stays the i18n key. */
    [DOM_REJ_TOKEN_INVALID] = UNAUTHENTICATED("AUTH-7fs1e", "Errors.Token.Invalid"),
    [DOM_REJ_OTP_SMS_ALREADY_READY] =
        EXISTS("COMMAND-Ad3g2", "Multifactor OTP (OneTimePassword) is already set up"),
    [DOM_REJ_OTP_SMS_NOT_READY] =
        PRECONDITION("COMMAND-Q54j2", "Multifactor OTP (OneTimePassword) isn't ready"),

    /* RemoveMyAuthFactorOTPSMS */
    [DOM_REJ_USER_ID_MISSING_REMOVE_OTP_SMS] = INVALID("COMMAND-S3br2", "User ID missing"),
    [DOM_REJ_OTP_SMS_NOT_ADDED] =
        NOT_FOUND("COMMAND-Sr3h3", "Multifactor OTP (OneTimePassword) doesn't exist"),

    /* SetMyPhone (ChangeHumanPhone, PhoneNumber.Normalize) */
    [DOM_REJ_PHONE_EMPTY] = INVALID("PHONE-Zt0NV", "Phone is empty"),
    [DOM_REJ_PHONE_INVALID] = INVALID("PHONE-so0wa", "Phone is invalid"),
    [DOM_REJ_PHONE_NOT_CHANGED] = PRECONDITION("COMMAND-wF94r", "Phone not changed"),

    /* VerifyMyPhone (VerifyHumanPhone) */
    [DOM_REJ_USER_ID_MISSING_VERIFY_PHONE] = INVALID("COMMAND-Km9ds", "User ID missing"),
    [DOM_REJ_CODE_EMPTY] = INVALID("COMMAND-wMe9f", "Code is empty"),
    [DOM_REJ_CODE_NOT_FOUND] = NOT_FOUND("COMMAND-Rsj8c", "Code not found"),
    [DOM_REJ_CODE_INVALID] = INVALID("COMMAND-sM0cs", "Code is invalid"),
    /* Not given by the decision: VerifyHumanPhone reports an expired code as
     * COMMAND-sM0cs (docs/errors.md). The row is ZITADEL's inner error
     * (internal/crypto/code.go), kept for completeness. */
    [DOM_REJ_CODE_EXPIRED] = PRECONDITION("CODE-QvUQ4P", "Code is expired"),
    /* Not given by the decision: VerifyHumanPhone answers "Code not found"
     * for a verified phone. The row is ZITADEL's resend check
     * (CreateHumanPhoneVerificationCode), the closest counterpart. */
    [DOM_REJ_PHONE_ALREADY_VERIFIED] = PRECONDITION("COMMAND-2M9sf", "Phone already verified"),

    /* RemoveMyPhone (RemoveHumanPhone) */
    [DOM_REJ_USER_ID_MISSING_REMOVE_PHONE] = INVALID("COMMAND-6M0ds", "User ID missing"),
    [DOM_REJ_PHONE_NOT_FOUND] = NOT_FOUND("COMMAND-p6rsc", "Phone not found"),

    /* ImportHumanUser (ImportHuman, importHuman, Human.Normalize) */
    [DOM_REJ_ORG_MISSING] = INVALID("COMMAND-5N8fs", "Resource Owner Organisation missing"),
    /* Errors.User.AlreadyExisting has no en.yaml entry: the key stays. */
    [DOM_REJ_USER_ALREADY_EXISTS] = PRECONDITION("COMMAND-ziuna", "Errors.User.AlreadyExisting"),
    [DOM_REJ_USER_NAME_MISSING] = INVALID("COMMAND-00p2b", "Username is empty"),
    [DOM_REJ_HUMAN_INVALID] = INVALID("PROFILE-GPY3p", "Profile is empty"),
    [DOM_REJ_FIRST_NAME_EMPTY] = INVALID("PROFILE-RF5z2", "Given name in profile is empty"),
    [DOM_REJ_LAST_NAME_EMPTY] = INVALID("PROFILE-DSUkN", "Family name in profile is empty"),
    [DOM_REJ_EMAIL_EMPTY] = INVALID("EMAIL-spblu", "Email is empty"),
    [DOM_REJ_EMAIL_INVALID] = INVALID("EMAIL-599BI", "Email is invalid"),
    [DOM_REJ_EMAIL_DISPLAY_NAME] = INVALID("EMAIL-599GV", "Email is invalid"),
    /* The eventstore's unique-constraint error, not a command check. */
    [DOM_REJ_USER_NAME_TAKEN] = EXISTS("V3-DKcYh", "User already exists"),

    /* LockUser */
    [DOM_REJ_USER_ID_MISSING_LOCK] = INVALID("COMMAND-2M0sd", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND] = NOT_FOUND("COMMAND-5M9fs", "User could not be found"),
    /* ZITADEL has no "already locked": locking a locked or an inactive user
     * fails its "active or initial" check. */
    [DOM_REJ_USER_ALREADY_LOCKED] = PRECONDITION("COMMAND-3NN8v", "User is not active or initial"),

    /* UnlockUser */
    [DOM_REJ_USER_ID_MISSING_UNLOCK] = INVALID("COMMAND-M0dse", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND_UNLOCK] = NOT_FOUND("COMMAND-M0dos", "User could not be found"),
    [DOM_REJ_USER_NOT_LOCKED] = PRECONDITION("COMMAND-4M0ds", "User is not locked"),

    /* DeactivateUser */
    [DOM_REJ_USER_ID_MISSING_DEACTIVATE] = INVALID("COMMAND-m0gDf", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND_DEACTIVATE] = NOT_FOUND("COMMAND-3M9ds", "User could not be found"),
    [DOM_REJ_USER_ALREADY_INACTIVE] = PRECONDITION("COMMAND-5M0sf", "User already inactive"),
    /* Not given by the decision: ZITADEL deactivates a locked user. The row
     * is DeactivateUser's other state refusal (initial users; really
     * NotFound in ZITADEL's v1 command), the closest counterpart. */
    [DOM_REJ_USER_LOCKED_CANT_DEACTIVATE] =
        NOT_FOUND("COMMAND-ke0fw", "User with state initial can only be deleted not deactivated"),

    /* ReactivateUser */
    [DOM_REJ_USER_ID_MISSING_REACTIVATE] = INVALID("COMMAND-4M9ds", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND_REACTIVATE] = NOT_FOUND("COMMAND-4M0sd", "User could not be found"),
    [DOM_REJ_USER_NOT_INACTIVE] = PRECONDITION("COMMAND-6M0sf", "User is not inactive"),

    /* RemoveUser */
    [DOM_REJ_USER_ID_MISSING_REMOVE_USER] = INVALID("COMMAND-2M0ds", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND_REMOVE_USER] = NOT_FOUND("COMMAND-m9od", "User could not be found"),

    /* ResendMyPhoneVerification (CreateHumanPhoneVerificationCode) */
    [DOM_REJ_USER_ID_MISSING_RESEND_PHONE] = INVALID("COMMAND-4M0ds", "User ID missing"),
    [DOM_REJ_PHONE_NOT_FOUND_RESEND] = NOT_FOUND("COMMAND-2b7Hf", "Phone not found"),

    /* ChallengeOTPSMS (HumanSendOTPSMS). ZITADEL's login refuses locked and
     * inactive users before it asks for a code (AUTH-SF3gb, AUTH-2n8fs);
     * factord's challenge is that step, so it gives their rows. */
    [DOM_REJ_USER_ID_MISSING_OTP_CHALLENGE] = INVALID("COMMAND-S3SF1", "User ID missing"),
    [DOM_REJ_OTP_SMS_NOT_READY_CHALLENGE] =
        PRECONDITION("COMMAND-SFD52", "Multifactor OTP (OneTimePassword) isn't ready"),
    [DOM_REJ_USER_LOCKED_SIGNIN] = PRECONDITION("AUTH-SF3gb", "User is locked"),
    [DOM_REJ_USER_INACTIVE_SIGNIN] = PRECONDITION("AUTH-2n8fs", "User is inactive"),

    /* CheckOTPSMS (HumanCheckOTPSMS -> checkOTP -> crypto.VerifyCode; an
     * expired code is DOM_REJ_CODE_EXPIRED, CODE-QvUQ4P). */
    [DOM_REJ_USER_ID_MISSING_OTP_CHECK] = INVALID("COMMAND-S453v", "User ID missing"),
    [DOM_REJ_CODE_EMPTY_OTP_CHECK] = INVALID("COMMAND-SJl2g", "Code is empty"),
    [DOM_REJ_OTP_SMS_NOT_READY_CHECK] =
        PRECONDITION("COMMAND-d2r52", "Multifactor OTP (OneTimePassword) isn't ready"),
    [DOM_REJ_USER_LOCKED_OTP_CHECK] = PRECONDITION("COMMAND-S6h4R", "User is locked"),
    [DOM_REJ_CODE_NOT_FOUND_OTP_CHECK] = PRECONDITION("COMMAND-S34gh", "Code not found"),
    [DOM_REJ_OTP_CODE_INVALID] = INVALID("CODE-woT0xc", "Code is invalid"),

    /* RecordCodeDelivery: the notifier's report (HumanOTPSMSCodeSent,
     * HumanPhoneVerificationCodeSent; factord also records failures). */
    [DOM_REJ_USER_ID_MISSING_OTP_SENT] = INVALID("COMMAND-AE2h2", "User ID missing"),
    [DOM_REJ_OTP_SMS_NOT_READY_SENT] =
        PRECONDITION("COMMAND-SD3gh", "Multifactor OTP (OneTimePassword) isn't ready"),
    [DOM_REJ_USER_ID_MISSING_PHONE_SENT] = INVALID("COMMAND-3m9Fs", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND_PHONE_SENT] = PRECONDITION("COMMAND-3M9fs", "User could not be found"),
    [DOM_REJ_PHONE_NOT_FOUND_SENT] = NOT_FOUND("COMMAND-66n8J", "Phone not found"),
    [DOM_REJ_CODE_NOT_FOUND_SENT] = PRECONDITION("COMMAND-G3t31", "Code not found"),

    /* CreateSession and SetSession (ZITADEL's session service: the user
     * check of checksToCommand, createOTPSMSChallenge, CheckOTPSMS; a wrong
     * or expired code and a locked user's check are CheckOTPSMS's rows). */
    [DOM_REJ_USER_ID_MISSING_SESSION_CHALLENGE] = PRECONDITION("COMMAND-JKL3g", "User ID missing"),
    [DOM_REJ_USER_ID_MISSING_SESSION_CHECK] = PRECONDITION("COMMAND-VDrh3", "User ID missing"),
    [DOM_REJ_USER_NOT_FOUND_SESSION] = NOT_FOUND("QUERY-Dfbg2", "User could not be found"),
    [DOM_REJ_USER_NOT_ACTIVE_SESSION] = PRECONDITION("SESSION-Gj4ko", "Errors.User.NotActive"),
    [DOM_REJ_OTP_SMS_NOT_READY_SESSION] =
        PRECONDITION("COMMAND-BJ2g3", "Multifactor OTP (OneTimePassword) isn't ready"),
    [DOM_REJ_CODE_NOT_FOUND_SESSION] = PRECONDITION("COMMAND-SF3tv", "Code not found"),

    /* factord's own: idempotency and undecodable records. */
    [DOM_REJ_COMMAND_ID_REUSED] =
        INVALID("FACTORD-Idem1", "Command id already used with different content"),
    [DOM_REJ_COMMAND_MALFORMED] = INVALID("FACTORD-Dec01", "Command is malformed"),
};

/* Returned for a value outside the enum: a programming error, rendered as
 * an internal error rather than crashing the processor. */
static const dom_rej_info unknown_row = {
    DOM_GRPC_INTERNAL, 500, "FACTORD-Rej00", "Unknown rejection"
};

const dom_rej_info *dom_rej_lookup(dom_rej r)
{
    if ((int)r < 0 || r >= DOM_REJ__COUNT || catalogue[r].id == NULL)
        return &unknown_row;
    return &catalogue[r];
}

/* Copy src into dst (size n) as valid UTF-8: invalid or truncated sequences
 * become '?', so a reason cut by a fixed buffer never makes jansson refuse
 * the body. */
static void utf8_copy(char *dst, size_t n, const char *src)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)src;
    while (*p && o + 1 < n) {
        size_t len = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3
                   : (*p & 0xF8) == 0xF0 ? 4 : 0;
        bool ok = len > 0;
        for (size_t i = 1; ok && i < len; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (ok && len > 1) {
            /* overlong forms, surrogates and values above U+10FFFF */
            unsigned cp = len == 2 ? (p[0] & 0x1Fu) : len == 3 ? (p[0] & 0x0Fu) : (p[0] & 0x07u);
            for (size_t i = 1; i < len; i++)
                cp = (cp << 6) | (p[i] & 0x3Fu);
            ok = !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) &&
                 !(len == 4 && cp < 0x10000) && cp <= 0x10FFFF &&
                 !(cp >= 0xD800 && cp <= 0xDFFF);
        }
        if (!ok) {
            dst[o++] = '?';
            p++;
            continue;
        }
        if (o + len >= n)
            break; /* never split a character */
        memcpy(dst + o, p, len);
        o += len;
        p += len;
    }
    if (n > 0)
        dst[o] = '\0';
}

/* Texts are bounded here so that the error path does not allocate beyond
 * jansson's own objects; 1 KiB holds every catalogue text plus a reason. */
#define DOM_STATUS_TEXT_MAX 1024

json_t *dom_status_body(int grpc_code, const char *id, const char *message)
{
    char safe_id[128], text[DOM_STATUS_TEXT_MAX], full[DOM_STATUS_TEXT_MAX + 140];
    utf8_copy(safe_id, sizeof safe_id, id ? id : "");
    utf8_copy(text, sizeof text, message ? message : "");
    if (safe_id[0] != '\0')
        snprintf(full, sizeof full, "%s (%s)", text, safe_id);
    else
        snprintf(full, sizeof full, "%s", text);

    json_t *body = json_pack("{s:i, s:s, s:[{s:s, s:s, s:s}]}",
                             "code", grpc_code, "message", full, "details",
                             "@type", "type.googleapis.com/zitadel.v1.ErrorDetail",
                             "id", safe_id, "message", text);
    if (!body)
        abort(); /* jansson fails here only when out of memory */
    return body;
}

json_t *dom_rej_body(dom_rej r, const char *detail)
{
    const dom_rej_info *row = dom_rej_lookup(r);
    if (!detail || detail[0] == '\0')
        return dom_status_body(row->grpc_code, row->id, row->message);

    char text[DOM_STATUS_TEXT_MAX];
    snprintf(text, sizeof text, "%s: %s", row->message, detail);
    return dom_status_body(row->grpc_code, row->id, text);
}
