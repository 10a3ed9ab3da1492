/*
 * projections/sessions.c - the fold of a session's events and its JSON
 * (see sessions.h).
 */
#include "projections/sessions.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy(char *dst, size_t size, const char *src)
{
    snprintf(dst, size, "%s", src ? src : "");
}

#define COPY(dst, src) copy((dst), sizeof(dst), (src))

void proj_session_apply(proj_session *s, const dom_evt *evt)
{
    if (strcmp(evt->session_id, s->session_id) != 0)
        return;
    if (evt->type == DOM_EVT_SESSION_ADDED && !s->found) {
        s->found = true;
        COPY(s->instance_id, evt->instance_id);
        COPY(s->user_id, evt->aggregate_id);
        COPY(s->resource_owner, evt->resource_owner);
        COPY(s->creator, evt->creator);
        COPY(s->token_hash, evt->token_hash);
        s->created_at_us = evt->created_at_us;
    } else if (!s->found || strcmp(evt->aggregate_id, s->user_id) != 0 ||
               strcmp(evt->instance_id, s->instance_id) != 0 || evt->sequence <= s->sequence) {
        return;
    } else if (evt->type == DOM_EVT_SESSION_TOKEN_SET) {
        COPY(s->token_hash, evt->token_hash);
    } else if (evt->type == DOM_EVT_OTP_SMS_CHECK_SUCCEEDED) {
        s->otp_sms_checked_at_us = evt->created_at_us;
    } else if (evt->type != DOM_EVT_OTP_SMS_CODE_ADDED) {
        return; /* no other event names a session */
    }
    s->sequence = evt->sequence;
    s->changed_at_us = evt->created_at_us;
}

static json_t *time_json(int64_t us)
{
    char buf[40];
    dom_time_format(us, buf, sizeof buf);
    return json_string(buf);
}

json_t *proj_session_to_json(const proj_session *s, const char *login_name)
{
    char seq[24];
    snprintf(seq, sizeof seq, "%" PRId64, s->sequence);
    /* As ZITADEL's gateway (protojson without EmitUnpopulated): empty
     * fields and factors that were not verified are left out. */
    json_t *user = json_pack("{s:o, s:s}", "verifiedAt", time_json(s->created_at_us), "id", s->user_id);
    if (login_name && login_name[0])
        json_object_set_new(user, "loginName", json_string(login_name));
    if (s->resource_owner[0])
        json_object_set_new(user, "organizationId", json_string(s->resource_owner));
    json_t *factors = json_pack("{s:o}", "user", user);
    if (s->otp_sms_checked_at_us)
        json_object_set_new(factors, "otpSms",
                            json_pack("{s:o}", "verifiedAt", time_json(s->otp_sms_checked_at_us)));
    json_t *j = json_pack("{s:s, s:o, s:o, s:s, s:o}", "id", s->session_id, "creationDate",
                          time_json(s->created_at_us), "changeDate", time_json(s->changed_at_us), "sequence",
                          seq, "factors", factors);
    if (!j)
        abort(); /* out of memory, or invalid UTF-8 in a caller-built session */
    return j;
}
