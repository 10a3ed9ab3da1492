/*
 * projections/auth_factors.c - the auth-factor reducer (auth_factors.h).
 *
 * Which events touch the model follows ZITADEL's HumanOTPSMSWriteModel and
 * its auth-factor listing: the factor is READY as soon as it is added
 * (there is nothing to verify for OTP SMS), and it is gone when it is
 * removed, when the phone it sends to is removed, and when the user is.
 */
#include "projections/auth_factors.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[PROJ_AF__TYPES] = {
    [PROJ_AF_OTP_SMS] = "otpSms",
};

static const char *const state_names[] = {
    [PROJ_AF_STATE_NOT_READY] = "AUTH_FACTOR_STATE_NOT_READY",
    [PROJ_AF_STATE_READY] = "AUTH_FACTOR_STATE_READY",
};

const char *proj_af_type_name(proj_af_type t)
{
    if ((int)t < 0 || t >= PROJ_AF__TYPES)
        return "";
    return type_names[t];
}

const char *proj_af_state_name(proj_af_state s)
{
    if (s != PROJ_AF_STATE_NOT_READY && s != PROJ_AF_STATE_READY)
        return "";
    return state_names[s];
}

int proj_af_type_parse(const char *name)
{
    for (int t = 0; name && t < PROJ_AF__TYPES; t++)
        if (strcmp(type_names[t], name) == 0)
            return t;
    return -1;
}

int proj_af_state_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcmp(name, state_names[PROJ_AF_STATE_NOT_READY]) == 0)
        return PROJ_AF_STATE_NOT_READY;
    if (strcmp(name, state_names[PROJ_AF_STATE_READY]) == 0)
        return PROJ_AF_STATE_READY;
    return -1;
}

/* Bounded copy that zero-fills, so equal rows are equal byte for byte. */
static void copy(char *dst, size_t size, const char *src)
{
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    memset(dst + n, 0, size - n);
}

static void key_of(proj_af_change *c, const dom_evt *evt, proj_af_op op, proj_af_type type)
{
    memset(c, 0, sizeof *c);
    c->op = op;
    copy(c->row.instance_id, sizeof c->row.instance_id, evt->instance_id);
    copy(c->row.user_id, sizeof c->row.user_id, evt->aggregate_id);
    c->row.type = type;
    c->row.sequence = evt->sequence;
}

size_t proj_auth_factors_reduce(const dom_evt *evt, proj_af_change out[PROJ_AF_MAX_CHANGES])
{
    switch (evt->type) {
    case DOM_EVT_OTP_SMS_ADDED: {
        proj_af_change *c = &out[0];
        key_of(c, evt, PROJ_AF_PUT, PROJ_AF_OTP_SMS);
        c->row.state = PROJ_AF_STATE_READY;
        c->row.created_at_us = evt->created_at_us;
        c->row.changed_at_us = evt->created_at_us;
        copy(c->row.resource_owner, sizeof c->row.resource_owner, evt->resource_owner);
        return 1;
    }
    case DOM_EVT_OTP_SMS_REMOVED:
    case DOM_EVT_PHONE_REMOVED:
        key_of(&out[0], evt, PROJ_AF_DELETE, PROJ_AF_OTP_SMS);
        return 1;
    case DOM_EVT_REMOVED:
    case DOM_EVT_HUMAN_ADDED:
        /* Every factor of the user: removed with the user, and none
         * survives into a new life of the same id. */
        for (int t = 0; t < PROJ_AF__TYPES; t++)
            key_of(&out[t], evt, PROJ_AF_DELETE, (proj_af_type)t);
        return PROJ_AF_MAX_CHANGES;
    default:
        return 0;
    }
}

bool proj_af_same_key(const proj_auth_factor *a, const proj_auth_factor *b)
{
    return a->type == b->type && strcmp(a->instance_id, b->instance_id) == 0 &&
           strcmp(a->user_id, b->user_id) == 0;
}

size_t proj_af_fold(const proj_af_change *changes, size_t n, proj_af_net *out)
{
    size_t n_out = 0;
    for (size_t i = 0; i < n; i++) {
        const proj_af_change *c = &changes[i];
        proj_af_net *net = NULL;
        /* Changes come grouped by key, but a user's changes to different
         * types interleave: look back over this user's nets only. */
        for (size_t j = n_out; j-- > 0;) {
            if (strcmp(out[j].row.instance_id, c->row.instance_id) != 0 ||
                strcmp(out[j].row.user_id, c->row.user_id) != 0)
                break;
            if (out[j].row.type == c->row.type) {
                net = &out[j];
                break;
            }
        }
        if (!net) {
            net = &out[n_out++];
            memset(net, 0, sizeof *net);
            net->row = c->row;
        }
        if (c->op == PROJ_AF_DELETE) {
            /* Keep the key and the sequence; the row content is gone. */
            net->del = true;
            net->put = false;
            net->row.sequence = c->row.sequence;
            continue;
        }
        if (net->put) {
            /* Changed again in this batch: still the same factor. */
            int64_t created = net->row.created_at_us;
            net->row = c->row;
            net->row.created_at_us = created;
        } else {
            net->row = c->row;
            net->put = true;
        }
    }
    return n_out;
}

json_t *proj_auth_factor_to_json(const proj_auth_factor *f)
{
    json_t *j = json_pack("{s:s, s:{}}", "state", proj_af_state_name(f->state), proj_af_type_name(f->type));
    if (!j)
        abort(); /* out of memory: the names are constants */
    return j;
}

json_t *proj_auth_factor_details_json(const proj_auth_factor *f)
{
    char seq[24], created[40], changed[40];
    snprintf(seq, sizeof seq, "%" PRId64, f->sequence);
    dom_time_format(f->created_at_us, created, sizeof created);
    dom_time_format(f->changed_at_us, changed, sizeof changed);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "sequence", seq, "creationDate", created, "changeDate",
                          changed, "resourceOwner", f->resource_owner);
    if (!j)
        abort(); /* out of memory, or invalid UTF-8 in a caller-built row */
    return j;
}
