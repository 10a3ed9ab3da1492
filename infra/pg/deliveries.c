/*
 * infra/pg/deliveries.c - factord.code_deliveries and the write-side lookup
 * of the notifier (infra/pg/deliveries.h).
 */
#include "infra/pg/deliveries.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const state_names[] = {
    [ES_DELIVERY_NONE] = "",          [ES_DELIVERY_SENDING] = "sending", [ES_DELIVERY_SENT] = "sent",
    [ES_DELIVERY_FAILED] = "failed", [ES_DELIVERY_SKIPPED] = "skipped",
};

const char *es_delivery_state_name(es_delivery_state s)
{
    if ((int)s < 0 || (size_t)s >= sizeof state_names / sizeof state_names[0])
        return "";
    return state_names[s];
}

static es_delivery_state state_parse(const char *s)
{
    for (size_t i = 1; i < sizeof state_names / sizeof state_names[0]; i++)
        if (strcmp(s, state_names[i]) == 0)
            return (es_delivery_state)i;
    return ES_DELIVERY_NONE;
}

static void copy_col(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

static const char SQL_GET[] =
    "SELECT state, attempts, recorded, provider, message_id, reason FROM factord.code_deliveries"
    " WHERE instance_id = $1 AND user_id = $2 AND code_sequence = $3::bigint";

es_result es_delivery_get(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                          es_delivery *out, es_error *err)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%" PRId64, code_sequence);
    const char *params[] = {instance_id, user_id, seq};
    PGresult *res = NULL;
    memset(out, 0, sizeof *out);
    es_result rc = es_store_exec(st, "notify: read delivery", SQL_GET, 3, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && PQntuples(res) == 1) {
        out->state = state_parse(PQgetvalue(res, 0, 0));
        out->attempts = atoi(PQgetvalue(res, 0, 1));
        out->recorded = PQgetvalue(res, 0, 2)[0] == 't';
        copy_col(out->provider, sizeof out->provider, PQgetvalue(res, 0, 3));
        copy_col(out->message_id, sizeof out->message_id, PQgetvalue(res, 0, 4));
        copy_col(out->reason, sizeof out->reason, PQgetvalue(res, 0, 5));
    }
    PQclear(res);
    return rc;
}

static const char SQL_BEGIN[] =
    "INSERT INTO factord.code_deliveries AS d (instance_id, user_id, code_sequence, kind, state, attempts,"
    "    provider)"
    " VALUES ($1, $2, $3::bigint, $4, 'sending', 1, $5)"
    " ON CONFLICT (instance_id, user_id, code_sequence) DO UPDATE SET state = 'sending',"
    "    attempts = d.attempts + 1, provider = EXCLUDED.provider, updated_at = now()"
    " RETURNING attempts";

es_result es_delivery_begin(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                            dom_code_kind kind, const char *provider, int *attempts, es_error *err)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%" PRId64, code_sequence);
    const char *params[] = {instance_id, user_id, seq, dom_code_kind_name(kind), provider ? provider : ""};
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, "notify: begin delivery", SQL_BEGIN, 5, params, PGRES_TUPLES_OK, &res, err);
    *attempts = rc == ES_OK && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return rc;
}

static const char SQL_FINISH[] =
    "INSERT INTO factord.code_deliveries AS d (instance_id, user_id, code_sequence, kind, state, provider,"
    "    message_id, reason)"
    " VALUES ($1, $2, $3::bigint, $4, $5, $6, $7, $8)"
    " ON CONFLICT (instance_id, user_id, code_sequence) DO UPDATE SET state = EXCLUDED.state,"
    "    provider = EXCLUDED.provider, message_id = EXCLUDED.message_id, reason = EXCLUDED.reason,"
    "    updated_at = now()";

es_result es_delivery_finish(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                             dom_code_kind kind, es_delivery_state state, const char *provider,
                             const char *message_id, const char *reason, es_error *err)
{
    if (state != ES_DELIVERY_SENT && state != ES_DELIVERY_FAILED && state != ES_DELIVERY_SKIPPED)
        return es_error_set(err, ES_EINVAL, "notify: %d is not a final delivery state", (int)state);
    char seq[24];
    snprintf(seq, sizeof seq, "%" PRId64, code_sequence);
    const char *params[] = {instance_id, user_id, seq, dom_code_kind_name(kind), es_delivery_state_name(state),
                            provider ? provider : "", message_id ? message_id : "", reason ? reason : ""};
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, "notify: finish delivery", SQL_FINISH, 8, params, PGRES_COMMAND_OK, &res, err);
    PQclear(res);
    return rc;
}

static const char SQL_RECORDED[] =
    "UPDATE factord.code_deliveries SET recorded = true, updated_at = now()"
    " WHERE instance_id = $1 AND user_id = $2 AND code_sequence = $3::bigint";

es_result es_delivery_mark_recorded(es_store *st, const char *instance_id, const char *user_id,
                                    int64_t code_sequence, es_error *err)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%" PRId64, code_sequence);
    const char *params[] = {instance_id, user_id, seq};
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, "notify: mark recorded", SQL_RECORDED, 3, params, PGRES_COMMAND_OK, &res, err);
    PQclear(res);
    return rc;
}

static const char SQL_RECENT[] =
    "SELECT count(*) FROM factord.code_deliveries"
    " WHERE instance_id = $1 AND user_id = $2 AND code_sequence <> $3::bigint AND state <> 'skipped'"
    "   AND created_at > now() - make_interval(secs => $4::double precision)";

es_result es_delivery_recent(es_store *st, const char *instance_id, const char *user_id, int64_t code_sequence,
                             int64_t window_s, long *count, es_error *err)
{
    char seq[24], win[24];
    snprintf(seq, sizeof seq, "%" PRId64, code_sequence);
    snprintf(win, sizeof win, "%" PRId64, window_s);
    const char *params[] = {instance_id, user_id, seq, win};
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, "notify: count recent sends", SQL_RECENT, 4, params, PGRES_TUPLES_OK, &res,
                                 err);
    *count = rc == ES_OK && PQntuples(res) == 1 ? atol(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return rc;
}

/* The pending code and its number, by kind; no row: the user is gone. */
static const char SQL_TARGET[] =
    "SELECT CASE WHEN $3 = 'otpSms' THEN otp_code_enc ELSE code_enc END,"
    "       CASE WHEN $3 = 'otpSms' THEN verified_phone ELSE phone END,"
    "       status, otp_sms"
    "  FROM factord.users WHERE instance_id = $1 AND user_id = $2";

es_result es_delivery_target(es_store *st, const char *instance_id, const char *user_id, dom_code_kind kind,
                             const char *code_enc, bool *current, char *phone, size_t phone_len, es_error *err)
{
    const char *params[] = {instance_id, user_id, dom_code_kind_name(kind)};
    PGresult *res = NULL;
    *current = false;
    if (phone_len)
        phone[0] = '\0';
    es_result rc = es_store_exec(st, "notify: read the user's pending code", SQL_TARGET, 3, params,
                                 PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK && PQntuples(res) == 1) {
        const char *pending = PQgetvalue(res, 0, 0), *number = PQgetvalue(res, 0, 1);
        const char *status = PQgetvalue(res, 0, 2);
        bool factor = PQgetvalue(res, 0, 3)[0] == 't';
        /* A removed user's row keeps no code to send; an OTP code needs
         * the factor still added. */
        *current = code_enc[0] != '\0' && strcmp(pending, code_enc) == 0 && number[0] != '\0' &&
                   strcmp(status, "removed") != 0 && (kind != DOM_CODE_OTP_SMS || factor);
        if (*current)
            snprintf(phone, phone_len, "%s", number);
    }
    PQclear(res);
    return rc;
}
