/*
 * domain/command.c - the command codec: strict decoding of records from the
 * commands topic, their wire encoding and the canonical text that the
 * idempotency hash covers.
 *
 * Decoding is strict because a command is an instruction with a user's
 * authority: anything we do not understand (an unknown field, a wrong
 * type, a string that does not fit, an embedded NUL) is refused with a
 * reason rather than guessed at. The reason names the field, so the dead
 * letter explains itself. Encoding omits empty optional fields, so that
 * decode(encode(cmd)) == cmd and two records that mean the same thing have
 * the same canonical text.
 */
#include "domain/command.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

static const char *const type_names[DOM_CMD__COUNT] = {
    [DOM_CMD_UNKNOWN] = "",
    [DOM_CMD_ADD_OTP_SMS] = "AddMyAuthFactorOTPSMS",
    [DOM_CMD_REMOVE_OTP_SMS] = "RemoveMyAuthFactorOTPSMS",
    [DOM_CMD_SET_PHONE] = "SetMyPhone",
    [DOM_CMD_VERIFY_PHONE] = "VerifyMyPhone",
    [DOM_CMD_REMOVE_PHONE] = "RemoveMyPhone",
    [DOM_CMD_IMPORT_HUMAN] = "ImportHumanUser",
    [DOM_CMD_LOCK] = "LockUser",
    [DOM_CMD_UNLOCK] = "UnlockUser",
    [DOM_CMD_DEACTIVATE] = "DeactivateUser",
    [DOM_CMD_REACTIVATE] = "ReactivateUser",
    [DOM_CMD_REMOVE_USER] = "RemoveUser",
    [DOM_CMD_RESEND_PHONE_CODE] = "ResendMyPhoneVerification",
    [DOM_CMD_CHALLENGE_OTP_SMS] = "ChallengeOTPSMS",
    [DOM_CMD_CHECK_OTP_SMS] = "CheckOTPSMS",
    [DOM_CMD_RECORD_CODE_DELIVERY] = "RecordCodeDelivery",
    [DOM_CMD_CREATE_SESSION] = "CreateSession",
    [DOM_CMD_SET_SESSION] = "SetSession",
};

const char *dom_code_kind_name(dom_code_kind k)
{
    switch (k) {
    case DOM_CODE_PHONE: return "phone";
    case DOM_CODE_OTP_SMS: return "otpSms";
    default: return "";
    }
}

const char *dom_cmd_type_name(dom_cmd_type t)
{
    if ((int)t <= DOM_CMD_UNKNOWN || t >= DOM_CMD__COUNT)
        return "";
    return type_names[t];
}

dom_cmd_type dom_cmd_type_parse(const char *name)
{
    if (!name || name[0] == '\0')
        return DOM_CMD_UNKNOWN;
    for (int t = DOM_CMD_UNKNOWN + 1; t < DOM_CMD__COUNT; t++)
        if (strcmp(type_names[t], name) == 0)
            return (dom_cmd_type)t;
    return DOM_CMD_UNKNOWN;
}

/* ZITADEL's user.v1.Gender names (protobuf JSON form). */
static const char *const genders[] = {
    "GENDER_UNSPECIFIED", "GENDER_FEMALE", "GENDER_MALE", "GENDER_DIVERSE",
};

/* --- field readers --------------------------------------------------------
 * Each reader looks at one member of an object and reports problems with the
 * member's dotted path ("payload.profile.firstName"). "Absent" is fine for
 * optional members; JSON null is a wrong type, not an absence: a sender that
 * writes null means something we cannot tell apart from a bug. */

static es_result field_string(const json_t *obj, const char *path, const char *key,
                              bool required, char *dst, size_t dst_size, es_error *err)
{
    const json_t *v = json_object_get(obj, key);
    dst[0] = '\0';
    if (!v) {
        if (required)
            return es_error_set(err, ES_EINVAL, "field \"%s\": missing", path);
        return ES_OK;
    }
    if (!json_is_string(v))
        return es_error_set(err, ES_EINVAL, "field \"%s\": expected a string", path);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    /* jansson refuses \u0000 unless JSON_ALLOW_NUL, but a C string cut at an
     * embedded NUL would silently change meaning: check anyway. */
    if (strlen(s) != len)
        return es_error_set(err, ES_EINVAL, "field \"%s\": contains a NUL character", path);
    if (len >= dst_size)
        return es_error_set(err, ES_EINVAL, "field \"%s\": too long (%zu bytes, limit %zu)",
                            path, len, dst_size - 1);
    memcpy(dst, s, len + 1);
    return ES_OK;
}

static es_result field_bool(const json_t *obj, const char *path, const char *key, bool *dst,
                            es_error *err)
{
    const json_t *v = json_object_get(obj, key);
    *dst = false;
    if (!v)
        return ES_OK;
    if (!json_is_boolean(v))
        return es_error_set(err, ES_EINVAL, "field \"%s\": expected a boolean", path);
    *dst = json_is_true(v);
    return ES_OK;
}

/* An optional nested object: *out is NULL when absent. */
static es_result field_object(const json_t *obj, const char *path, const char *key,
                              bool required, const json_t **out, es_error *err)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v) {
        if (required)
            return es_error_set(err, ES_EINVAL, "field \"%s\": missing", path);
        return ES_OK;
    }
    if (!json_is_object(v))
        return es_error_set(err, ES_EINVAL, "field \"%s\": expected an object", path);
    *out = v;
    return ES_OK;
}

/* Refuse members of obj that are not in allowed (NULL-terminated). prefix is
 * the path of obj ("" for the top level). */
static es_result only_known(const json_t *obj, const char *prefix, const char *const *allowed,
                            es_error *err)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v) {
        bool ok = false;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(key, allowed[i]) == 0;
        if (!ok) {
            (void)v;
            /* Keys are valid UTF-8 (jansson checks) but may hold a NUL; %s
             * then prints up to it, which is still a fair reason. At most
             * 64 bytes, never cut inside a character: the reason travels
             * in JSON (the dead letter's header, the reply), and a cut
             * character would make it invalid UTF-8 (caught by fuzz_command,
             * corpus/fuzz_command/regress-unknown-field-utf8-cut). */
            char name[65];
            size_t n = strlen(key);
            if (n > 64) {
                n = 64;
                while (n && ((unsigned char)key[n] & 0xC0) == 0x80)
                    n--;
            }
            memcpy(name, key, n);
            name[n] = '\0';
            if (prefix[0])
                return es_error_set(err, ES_EINVAL, "unknown field \"%s.%s\"", prefix, name);
            return es_error_set(err, ES_EINVAL, "unknown field \"%s\"", name);
        }
    }
    return ES_OK;
}

/* Kafka's legal topic names: [a-zA-Z0-9._-]{1,249}, and not "." or "..". */
static bool topic_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* Parse any-case UUID text into its lowercase canonical form. */
static bool uuid_canonical(const char *in, char out[DOM_UUID_LEN + 1])
{
    uuid_t u;
    if (strlen(in) != DOM_UUID_LEN || uuid_parse(in, u) != 0)
        return false;
    uuid_unparse_lower(u, out);
    return true;
}

/* --- payloads ------------------------------------------------------------ */

static es_result decode_import(const json_t *p, dom_import *imp, es_error *err)
{
    static const char *const top[] = { "userName", "profile", "email", "phone", NULL };
    static const char *const profile_keys[] = { "firstName", "lastName", "nickName",
                                                "displayName", "preferredLanguage",
                                                "gender", NULL };
    static const char *const email_keys[] = { "email", "isEmailVerified", NULL };
    static const char *const phone_keys[] = { "phone", "isPhoneVerified", NULL };
    const json_t *profile, *email, *phone;
    es_result rc;

    if ((rc = only_known(p, "payload", top, err)) != ES_OK ||
        (rc = field_string(p, "payload.userName", "userName", false, imp->user_name,
                           sizeof imp->user_name, err)) != ES_OK ||
        (rc = field_object(p, "payload.profile", "profile", false, &profile, err)) != ES_OK ||
        (rc = field_object(p, "payload.email", "email", false, &email, err)) != ES_OK ||
        (rc = field_object(p, "payload.phone", "phone", false, &phone, err)) != ES_OK)
        return rc;

    if (profile) {
        if ((rc = only_known(profile, "payload.profile", profile_keys, err)) != ES_OK ||
            (rc = field_string(profile, "payload.profile.firstName", "firstName", false,
                               imp->first_name, sizeof imp->first_name, err)) != ES_OK ||
            (rc = field_string(profile, "payload.profile.lastName", "lastName", false,
                               imp->last_name, sizeof imp->last_name, err)) != ES_OK ||
            (rc = field_string(profile, "payload.profile.nickName", "nickName", false,
                               imp->nick_name, sizeof imp->nick_name, err)) != ES_OK ||
            (rc = field_string(profile, "payload.profile.displayName", "displayName", false,
                               imp->display_name, sizeof imp->display_name, err)) != ES_OK ||
            (rc = field_string(profile, "payload.profile.preferredLanguage",
                               "preferredLanguage", false, imp->preferred_language,
                               sizeof imp->preferred_language, err)) != ES_OK ||
            (rc = field_string(profile, "payload.profile.gender", "gender", false, imp->gender,
                               sizeof imp->gender, err)) != ES_OK)
            return rc;
        if (imp->gender[0]) {
            bool known = false;
            for (size_t i = 0; i < sizeof genders / sizeof genders[0] && !known; i++)
                known = strcmp(imp->gender, genders[i]) == 0;
            if (!known)
                return es_error_set(err, ES_EINVAL,
                                    "field \"payload.profile.gender\": unknown gender \"%s\"",
                                    imp->gender);
        }
    }
    if (email) {
        if ((rc = only_known(email, "payload.email", email_keys, err)) != ES_OK ||
            (rc = field_string(email, "payload.email.email", "email", false, imp->email,
                               sizeof imp->email, err)) != ES_OK ||
            (rc = field_bool(email, "payload.email.isEmailVerified", "isEmailVerified",
                             &imp->is_email_verified, err)) != ES_OK)
            return rc;
    }
    if (phone) {
        if ((rc = only_known(phone, "payload.phone", phone_keys, err)) != ES_OK ||
            (rc = field_string(phone, "payload.phone.phone", "phone", false, imp->phone,
                               sizeof imp->phone, err)) != ES_OK ||
            (rc = field_bool(phone, "payload.phone.isPhoneVerified", "isPhoneVerified",
                             &imp->is_phone_verified, err)) != ES_OK)
            return rc;
    }
    return ES_OK;
}

/* A positive int64 as a JSON string of decimal digits, the way sequences
 * travel ("sequence":"7"): no sign, no leading zero. */
static es_result field_sequence(const json_t *obj, const char *path, const char *key,
                                int64_t *dst, es_error *err)
{
    char buf[24];
    es_result rc = field_string(obj, path, key, true, buf, sizeof buf, err);
    *dst = 0;
    if (rc != ES_OK)
        return rc == ES_EINVAL && json_is_string(json_object_get(obj, key))
                   ? es_error_set(err, ES_EINVAL, "field \"%s\": not a sequence (1 to 19 digits)", path)
                   : rc;
    size_t n = strlen(buf);
    bool ok = n > 0 && n <= 19 && buf[0] != '0';
    uint64_t acc = 0;
    for (size_t i = 0; ok && i < n; i++) {
        ok = buf[i] >= '0' && buf[i] <= '9';
        acc = acc * 10 + (uint64_t)(buf[i] - '0');
    }
    if (!ok || acc > (uint64_t)INT64_MAX)
        return es_error_set(err, ES_EINVAL, "field \"%s\": not a sequence (1 to 19 digits)", path);
    *dst = (int64_t)acc;
    return ES_OK;
}

/* RecordCodeDelivery: {"code":"phone"|"otpSms", "codeSequence":"N",
 * "outcome":"sent"|"failed", "provider"?, "messageId"?, "reason"?}. */
static es_result decode_delivery(const json_t *p, dom_delivery *d, es_error *err)
{
    static const char *const keys[] = { "code", "codeSequence", "outcome", "provider",
                                        "messageId", "reason", NULL };
    char kind[16], outcome[16];
    es_result rc;
    if ((rc = only_known(p, "payload", keys, err)) != ES_OK ||
        (rc = field_string(p, "payload.code", "code", true, kind, sizeof kind, err)) != ES_OK)
        return rc;
    if (strcmp(kind, "phone") == 0)
        d->kind = DOM_CODE_PHONE;
    else if (strcmp(kind, "otpSms") == 0)
        d->kind = DOM_CODE_OTP_SMS;
    else
        return es_error_set(err, ES_EINVAL, "field \"payload.code\": expected \"phone\" or \"otpSms\"");
    if ((rc = field_sequence(p, "payload.codeSequence", "codeSequence", &d->code_sequence, err)) !=
            ES_OK ||
        (rc = field_string(p, "payload.outcome", "outcome", true, outcome, sizeof outcome, err)) !=
            ES_OK)
        return rc;
    if (strcmp(outcome, "sent") != 0 && strcmp(outcome, "failed") != 0)
        return es_error_set(err, ES_EINVAL, "field \"payload.outcome\": expected \"sent\" or \"failed\"");
    d->sent = outcome[0] == 's';
    if ((rc = field_string(p, "payload.provider", "provider", false, d->provider,
                           sizeof d->provider, err)) != ES_OK ||
        (rc = field_string(p, "payload.messageId", "messageId", false, d->message_id,
                           sizeof d->message_id, err)) != ES_OK)
        return rc;
    return field_string(p, "payload.reason", "reason", false, d->reason, sizeof d->reason, err);
}

/* CreateSession and SetSession: {"sessionId", "tokenHash" (64 lowercase
 * hex digits), "otpSmsChallenge"?, "returnCode"?, and for SetSession
 * "code"?}. */
static es_result decode_session(const json_t *p, dom_cmd *cmd, es_error *err)
{
    static const char *const create[] = { "sessionId", "tokenHash", "otpSmsChallenge", "returnCode",
                                          NULL };
    static const char *const set[] = { "sessionId", "tokenHash", "otpSmsChallenge", "returnCode",
                                       "code", NULL };
    es_result rc;
    bool is_set = cmd->type == DOM_CMD_SET_SESSION;
    if ((rc = only_known(p, "payload", is_set ? set : create, err)) != ES_OK ||
        (rc = field_string(p, "payload.sessionId", "sessionId", true, cmd->session_id,
                           sizeof cmd->session_id, err)) != ES_OK ||
        (rc = field_string(p, "payload.tokenHash", "tokenHash", true, cmd->token_hash,
                           sizeof cmd->token_hash, err)) != ES_OK ||
        (rc = field_bool(p, "payload.otpSmsChallenge", "otpSmsChallenge", &cmd->otp_challenge,
                         err)) != ES_OK ||
        (rc = field_bool(p, "payload.returnCode", "returnCode", &cmd->return_code, err)) != ES_OK)
        return rc;
    if (cmd->session_id[0] == '\0')
        return es_error_set(err, ES_EINVAL, "field \"payload.sessionId\": empty");
    bool hex = strlen(cmd->token_hash) == DOM_TOKEN_HASH_LEN;
    for (size_t i = 0; hex && i < DOM_TOKEN_HASH_LEN; i++)
        hex = (cmd->token_hash[i] >= '0' && cmd->token_hash[i] <= '9') ||
              (cmd->token_hash[i] >= 'a' && cmd->token_hash[i] <= 'f');
    if (!hex)
        return es_error_set(err, ES_EINVAL,
                            "field \"payload.tokenHash\": expected 64 lowercase hex digits");
    if (!is_set)
        return ES_OK;
    return field_string(p, "payload.code", "code", false, cmd->code, sizeof cmd->code, err);
}

static es_result decode_payload(const json_t *p, dom_cmd *cmd, es_error *err)
{
    static const char *const none[] = { NULL };
    static const char *const set_phone[] = { "phone", "returnCode", NULL };
    static const char *const verify_phone[] = { "code", NULL };
    static const char *const return_code[] = { "returnCode", NULL };
    es_result rc;

    switch (cmd->type) {
    case DOM_CMD_RESEND_PHONE_CODE:
    case DOM_CMD_CHALLENGE_OTP_SMS:
        if ((rc = only_known(p, "payload", return_code, err)) != ES_OK)
            return rc;
        return field_bool(p, "payload.returnCode", "returnCode", &cmd->return_code, err);
    case DOM_CMD_CHECK_OTP_SMS:
        if ((rc = only_known(p, "payload", verify_phone, err)) != ES_OK)
            return rc;
        return field_string(p, "payload.code", "code", true, cmd->code, sizeof cmd->code, err);
    case DOM_CMD_RECORD_CODE_DELIVERY:
        return decode_delivery(p, &cmd->delivery, err);
    case DOM_CMD_SET_PHONE:
        if ((rc = only_known(p, "payload", set_phone, err)) != ES_OK ||
            (rc = field_string(p, "payload.phone", "phone", true, cmd->phone,
                               sizeof cmd->phone, err)) != ES_OK)
            return rc;
        return field_bool(p, "payload.returnCode", "returnCode", &cmd->return_code, err);
    case DOM_CMD_VERIFY_PHONE:
        if ((rc = only_known(p, "payload", verify_phone, err)) != ES_OK)
            return rc;
        return field_string(p, "payload.code", "code", true, cmd->code, sizeof cmd->code, err);
    case DOM_CMD_IMPORT_HUMAN:
        return decode_import(p, &cmd->import, err);
    case DOM_CMD_CREATE_SESSION:
    case DOM_CMD_SET_SESSION:
        return decode_session(p, cmd, err);
    default:
        return only_known(p, "payload", none, err);
    }
}

/* --- decode -------------------------------------------------------------- */

static es_result decode_object(const json_t *root, dom_cmd *cmd, es_error *err)
{
    static const char *const top[] = { "id", "type", "instanceId", "userId", "resourceOwner",
                                       "payload", "replyTo", "creator", NULL };
    char raw_id[DOM_UUID_LEN + 8] = "";
    char type[64] = "";
    const json_t *payload;
    es_result rc;

    /* The id and replyTo first, each whatever the other's fate: whatever
     * fails, the caller can answer with what was readable. */
    es_result id_rc = field_string(root, "id", "id", true, raw_id, sizeof raw_id, err);
    if (id_rc == ES_OK && !uuid_canonical(raw_id, cmd->id))
        id_rc = es_error_set(err, ES_EINVAL, "field \"id\": not a UUID");
    es_error reply_err;
    rc = field_string(root, "replyTo", "replyTo", false, cmd->reply_to, sizeof cmd->reply_to,
                      &reply_err);
    if (rc == ES_OK && cmd->reply_to[0] && !topic_name_valid(cmd->reply_to)) {
        cmd->reply_to[0] = '\0';
        rc = es_error_set(&reply_err, ES_EINVAL,
                          "field \"replyTo\": not a Kafka topic name ([a-zA-Z0-9._-]{1,249})");
    }
    if (id_rc != ES_OK)
        return id_rc; /* err already says why */
    if (rc != ES_OK) {
        if (err)
            *err = reply_err;
        return rc;
    }

    if ((rc = only_known(root, "", top, err)) != ES_OK)
        return rc;

    rc = field_string(root, "type", "type", true, type, sizeof type, err);
    if (rc == ES_OK && (cmd->type = dom_cmd_type_parse(type)) == DOM_CMD_UNKNOWN)
        rc = es_error_set(err, ES_EINVAL, "field \"type\": unknown command type \"%s\"", type);
    if (rc != ES_OK)
        return rc;

    if ((rc = field_string(root, "instanceId", "instanceId", true, cmd->instance_id,
                           sizeof cmd->instance_id, err)) != ES_OK)
        return rc;
    if (cmd->instance_id[0] == '\0')
        return es_error_set(err, ES_EINVAL, "field \"instanceId\": empty");
    if ((rc = field_string(root, "userId", "userId", false, cmd->user_id,
                           sizeof cmd->user_id, err)) != ES_OK ||
        (rc = field_string(root, "resourceOwner", "resourceOwner", false, cmd->resource_owner,
                           sizeof cmd->resource_owner, err)) != ES_OK ||
        (rc = field_string(root, "creator", "creator", false, cmd->creator,
                           sizeof cmd->creator, err)) != ES_OK ||
        (rc = field_object(root, "payload", "payload", true, &payload, err)) != ES_OK)
        return rc;
    return decode_payload(payload, cmd, err);
}

/* After a strict parse failed on something a lenient parse forgives (a
 * duplicate key, an escaped NUL), read the id and replyTo anyway, so that
 * the sender still gets an answer. Not when the id or replyTo key is the
 * duplicate itself: which one would we believe? */
static void salvage_reply_address(const char *buf, size_t len, const json_error_t *jerr,
                                  dom_cmd *cmd)
{
    if (strstr(jerr->text, "'\"id\"'") || strstr(jerr->text, "'\"replyTo\"'"))
        return;
    json_t *root = json_loadb(buf, len, JSON_ALLOW_NUL, NULL);
    if (json_is_object(root)) {
        char raw_id[DOM_UUID_LEN + 8];
        if (field_string(root, "id", "id", true, raw_id, sizeof raw_id, NULL) == ES_OK &&
            !uuid_canonical(raw_id, cmd->id))
            cmd->id[0] = '\0';
        if (field_string(root, "replyTo", "replyTo", false, cmd->reply_to, sizeof cmd->reply_to,
                         NULL) != ES_OK ||
            !topic_name_valid(cmd->reply_to))
            cmd->reply_to[0] = '\0';
    }
    json_decref(root);
}

es_result dom_cmd_decode(const char *buf, size_t len, dom_cmd *cmd, es_error *err)
{
    json_error_t jerr;
    json_t *root = NULL;
    es_result rc;

    memset(cmd, 0, sizeof *cmd);
    if (len > DOM_CMD_MAX_BYTES)
        return es_error_set(err, ES_EINVAL, "record too large (%zu bytes, limit %d)", len,
                            DOM_CMD_MAX_BYTES);
    if (!buf)
        return es_error_set(err, ES_EINVAL, "not JSON: empty record");

    root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        salvage_reply_address(buf, len, &jerr, cmd);
        /* jansson quotes the offending token ("... near '<token>'"); the
         * token may be a secret (a phone code), and reasons reach replies,
         * the dead-letter topic and logs: keep only the position. */
        char *near = strstr(jerr.text, " near ");
        if (near)
            *near = '\0';
        rc = es_error_set(err, ES_EINVAL, "not JSON: %s (line %d, column %d)", jerr.text,
                          jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        rc = es_error_set(err, ES_EINVAL, "not a JSON object");
        goto out;
    }
    rc = decode_object(root, cmd, err);

out:
    json_decref(root);
    if (rc != ES_OK) {
        /* Keep only what the processor may use to answer. */
        char id[sizeof cmd->id], reply_to[sizeof cmd->reply_to];
        memcpy(id, cmd->id, sizeof id);
        memcpy(reply_to, cmd->reply_to, sizeof reply_to);
        memset(cmd, 0, sizeof *cmd);
        memcpy(cmd->id, id, sizeof id);
        memcpy(cmd->reply_to, reply_to, sizeof reply_to);
    }
    return rc;
}

/* --- encode -------------------------------------------------------------- */

static void set_string(json_t *obj, const char *key, const char *value)
{
    if (json_object_set_new(obj, key, json_string(value)) != 0)
        abort(); /* out of memory, or a caller-built struct with invalid UTF-8 */
}

/* Empty optional strings and false flags are omitted: absent and empty decode
 * the same, so omitting keeps one encoding per meaning. */
static void set_opt_string(json_t *obj, const char *key, const char *value)
{
    if (value[0] != '\0')
        set_string(obj, key, value);
}

static void set_opt_true(json_t *obj, const char *key, bool value)
{
    if (value && json_object_set_new(obj, key, json_true()) != 0)
        abort();
}

static void set_opt_object(json_t *obj, const char *key, json_t *value)
{
    if (json_object_size(value) == 0) {
        json_decref(value);
        return;
    }
    if (json_object_set_new(obj, key, value) != 0)
        abort();
}

static json_t *new_object(void)
{
    json_t *o = json_object();
    if (!o)
        abort();
    return o;
}

static json_t *import_to_json(const dom_import *imp)
{
    json_t *p = new_object(), *profile = new_object(), *email = new_object(),
           *phone = new_object();
    set_opt_string(p, "userName", imp->user_name);
    set_opt_string(profile, "firstName", imp->first_name);
    set_opt_string(profile, "lastName", imp->last_name);
    set_opt_string(profile, "nickName", imp->nick_name);
    set_opt_string(profile, "displayName", imp->display_name);
    set_opt_string(profile, "preferredLanguage", imp->preferred_language);
    set_opt_string(profile, "gender", imp->gender);
    set_opt_string(email, "email", imp->email);
    set_opt_true(email, "isEmailVerified", imp->is_email_verified);
    set_opt_string(phone, "phone", imp->phone);
    set_opt_true(phone, "isPhoneVerified", imp->is_phone_verified);
    set_opt_object(p, "profile", profile);
    set_opt_object(p, "email", email);
    set_opt_object(p, "phone", phone);
    return p;
}

json_t *dom_cmd_to_json(const dom_cmd *cmd, bool include_reply_to)
{
    json_t *j = new_object(), *payload;
    set_string(j, "id", cmd->id);
    set_string(j, "type", dom_cmd_type_name(cmd->type));
    set_string(j, "instanceId", cmd->instance_id);
    set_string(j, "userId", cmd->user_id);
    set_opt_string(j, "resourceOwner", cmd->resource_owner);
    set_opt_string(j, "creator", cmd->creator);

    switch (cmd->type) {
    case DOM_CMD_SET_PHONE:
        payload = new_object();
        set_string(payload, "phone", cmd->phone); /* required, even when empty */
        set_opt_true(payload, "returnCode", cmd->return_code);
        break;
    case DOM_CMD_VERIFY_PHONE:
    case DOM_CMD_CHECK_OTP_SMS:
        payload = new_object();
        set_string(payload, "code", cmd->code); /* required, even when empty */
        break;
    case DOM_CMD_RESEND_PHONE_CODE:
    case DOM_CMD_CHALLENGE_OTP_SMS:
        payload = new_object();
        set_opt_true(payload, "returnCode", cmd->return_code);
        break;
    case DOM_CMD_RECORD_CODE_DELIVERY: {
        const dom_delivery *d = &cmd->delivery;
        char seq[24];
        snprintf(seq, sizeof seq, "%" PRId64, d->code_sequence);
        payload = new_object();
        set_string(payload, "code", dom_code_kind_name(d->kind));
        set_string(payload, "codeSequence", seq);
        set_string(payload, "outcome", d->sent ? "sent" : "failed");
        set_opt_string(payload, "provider", d->provider);
        set_opt_string(payload, "messageId", d->message_id);
        set_opt_string(payload, "reason", d->reason);
        break;
    }
    case DOM_CMD_IMPORT_HUMAN:
        payload = import_to_json(&cmd->import);
        break;
    case DOM_CMD_CREATE_SESSION:
    case DOM_CMD_SET_SESSION:
        payload = new_object();
        set_string(payload, "sessionId", cmd->session_id);
        set_string(payload, "tokenHash", cmd->token_hash);
        set_opt_true(payload, "otpSmsChallenge", cmd->otp_challenge);
        set_opt_true(payload, "returnCode", cmd->return_code);
        if (cmd->type == DOM_CMD_SET_SESSION)
            set_opt_string(payload, "code", cmd->code);
        break;
    default:
        payload = new_object();
        break;
    }
    if (json_object_set_new(j, "payload", payload) != 0)
        abort();
    if (include_reply_to)
        set_opt_string(j, "replyTo", cmd->reply_to);
    return j;
}

char *dom_cmd_canonical(const dom_cmd *cmd)
{
    json_t *j = dom_cmd_to_json(cmd, false);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    if (!s)
        abort();
    return s;
}
