/*
 * domain/notification.h - what the notifier says and records about one code.
 *
 * The notifier (infra/components/notifier.c) sends every phone code and
 * OTP-SMS code the log holds. What it sends (the rendered text), and the
 * RecordCodeDelivery command that records the outcome, are decided here:
 * pure functions of the code event, so a restarted notifier builds the same
 * command, with the same id, for the same event, and the processor's
 * idempotency record keeps one outcome per code.
 *
 * Layer: domain; pure: includes only libc, jansson and libuuid, no I/O
 * (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_DOMAIN_NOTIFICATION_H
#define FACTORD_DOMAIN_NOTIFICATION_H

#include <stdbool.h>
#include <stddef.h>

#include "domain/command.h"
#include "domain/errors.h"
#include "domain/event.h"

#define DOM_SMS_MAX 480 /* three concatenated GSM-7 segments */

/* The kind of code a code event carries (DOM_CODE_NONE for other events). */
dom_code_kind dom_code_kind_of(dom_evt_type t);

/* Check a message template: text with the placeholders {{.Code}} (alias
 * {{.OTP}}) and {{.Expiry}}; the code must appear. ES_EINVAL with the
 * reason in err otherwise (an unknown or unclosed placeholder). */
es_result dom_sms_template_check(const char *tmpl, es_error *err) ES_WUR;

/* Render tmpl (checked above) for code with a lifetime of ttl_s seconds
 * (0: no limit) into out. ES_EINVAL when the result does not fit. */
es_result dom_sms_render(const char *tmpl, const char *code, int64_t ttl_s, char *out, size_t out_len,
                         es_error *err) ES_WUR;

/* A lifetime in words: "5 minutes", "1 hour", "90 seconds", "no time
 * limit" for 0. */
void dom_duration_words(int64_t seconds, char *out, size_t out_len);

/* The RecordCodeDelivery command for code event evt (a code event, with
 * its instance, user and sequence) and outcome d (kind and code_sequence
 * are taken from evt). Its id is a name-based UUID (version 5) of the
 * instance, user and sequence: one command per code event, however often
 * it is built. creator is who records (e.g. "factord-notify"). */
void dom_delivery_command(const dom_evt *evt, const dom_delivery *d, const char *creator, dom_cmd *out);

/* The idempotency key a provider sees for code event evt: the same
 * name-based UUID as the command id, so a resend after a crash can be
 * recognised by a provider that deduplicates. */
void dom_delivery_key(const dom_evt *evt, char out[DOM_UUID_LEN + 1]);

#endif
