/*
 * bench/growth_gen.c - grow a factord log by N events as COPY text, for the
 * growth benchmark (bench/growth.sh, docs/performance.md "Cost as the log
 * grows").
 *
 * Writes the rows of factord.events (with their hash chain) to stdout and
 * the rows of factord.commands to --commands-out, both in COPY's text
 * format, for `\copy ... FROM` to load: no Kafka, no decisions, no
 * statement per row. The log it writes is one factord could have written:
 * every user has the same ten-event history from eight commands
 *
 *   ImportHumanUser        user.human.added, .phone.changed, .phone.verified
 *   AddMyAuthFactorOTPSMS  user.human.otp.sms.added
 *   RemoveMyAuthFactorOTPSMS user.human.otp.sms.removed
 *   AddMyAuthFactorOTPSMS  user.human.otp.sms.added
 *   LockUser               user.locked
 *   UnlockUser             user.unlocked
 *   RemoveMyAuthFactorOTPSMS user.human.otp.sms.removed
 *   AddMyAuthFactorOTPSMS  user.human.otp.sms.added
 *
 * and users are written in blocks of 1,000 whose histories interleave (the
 * first event of each, then the second, ...), so a page of the log touches
 * many users as a live log's does. The chain continues from --prev-hash at
 * --after-position with the configured chain key (FACTORD_CHAIN_KEY,
 * FACTORD_CHAIN_KEY_FILE, else the public key), so `factord verify` passes
 * over the result. The write-side state and the read models are not
 * written: `factord rebuild users` and `factord rebuild auth-factors` make
 * them from the log afterwards.
 *
 * Usage: factord_bench_growth_gen --events N --instance I --first-user K
 *            --after-position P --prev-hash HEX64 --commands-out PATH
 *            --head-out PATH
 * N is rounded down to whole users (10 events each). Users are named
 * g<K>, g<K+1>, ... On success --head-out gets "<position> <hash hex>" of
 * the last event and stderr a summary; the caller moves the position
 * counter and its chain head there.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uuid/uuid.h>

#include "domain/command.h"
#include "domain/event.h"
#include "infra/base/clock.h"
#include "infra/base/config.h"
#include "infra/base/log.h"
#include "infra/crypto/chain.h"

#define EVENTS_PER_USER 10
#define BLOCK_USERS 1000

typedef struct {
    dom_evt_type type;
    int command; /* index of the user's command that wrote it, 0..7 */
} step;

static const step history[EVENTS_PER_USER] = {
    {DOM_EVT_HUMAN_ADDED, 0},     {DOM_EVT_PHONE_CHANGED, 0}, {DOM_EVT_PHONE_VERIFIED, 0},
    {DOM_EVT_OTP_SMS_ADDED, 1},   {DOM_EVT_OTP_SMS_REMOVED, 2}, {DOM_EVT_OTP_SMS_ADDED, 3},
    {DOM_EVT_LOCKED, 4},          {DOM_EVT_UNLOCKED, 5},      {DOM_EVT_OTP_SMS_REMOVED, 6},
    {DOM_EVT_OTP_SMS_ADDED, 7},
};
static const dom_cmd_type commands[8] = {
    DOM_CMD_IMPORT_HUMAN, DOM_CMD_ADD_OTP_SMS, DOM_CMD_REMOVE_OTP_SMS, DOM_CMD_ADD_OTP_SMS,
    DOM_CMD_LOCK,         DOM_CMD_UNLOCK,      DOM_CMD_REMOVE_OTP_SMS, DOM_CMD_ADD_OTP_SMS,
};

static void die(const char *what)
{
    fprintf(stderr, "factord_bench_growth_gen: %s\n", what);
    exit(1);
}

/* A field in COPY's text format: backslash, tab, newline and CR escaped. */
static void copy_field(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\': fputs("\\\\", f); break;
        case '\t': fputs("\\t", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        default: fputc(*s, f);
        }
    }
}

/* The command ids of a user: deterministic per (instance, user, command), so
 * a rerun over the same users writes the same ids. */
static void command_id(const char *inst, long long user, int cmd, char out[DOM_UUID_LEN + 1])
{
    uuid_t ns = {0}, id;
    char name[DOM_ID_MAX + 48];
    snprintf(name, sizeof name, "%s/g%lld/%d", inst, user, cmd);
    uuid_generate_sha1(id, ns, name, strlen(name));
    uuid_unparse_lower(id, out);
}

static void fill(dom_evt *e, const char *inst, long long user, int k, int64_t now)
{
    memset(e, 0, sizeof *e);
    e->type = history[k].type;
    snprintf(e->instance_id, sizeof e->instance_id, "%s", inst);
    snprintf(e->aggregate_id, sizeof e->aggregate_id, "g%lld", user);
    snprintf(e->resource_owner, sizeof e->resource_owner, "org-growth");
    snprintf(e->creator, sizeof e->creator, "g%lld", user);
    e->sequence = k + 1;
    e->created_at_us = now;
    e->revision = DOM_EVT_REVISION;
    command_id(inst, user, history[k].command, e->command_id);
    e->last_of_command = k == EVENTS_PER_USER - 1 || history[k + 1].command != history[k].command;
    if (e->type == DOM_EVT_HUMAN_ADDED) {
        dom_import *h = &e->human;
        snprintf(h->user_name, sizeof h->user_name, "g%lld", user);
        snprintf(h->first_name, sizeof h->first_name, "Grace");
        snprintf(h->last_name, sizeof h->last_name, "Hopper");
        snprintf(h->display_name, sizeof h->display_name, "Grace Hopper");
        snprintf(h->preferred_language, sizeof h->preferred_language, "en");
        snprintf(h->gender, sizeof h->gender, "GENDER_UNSPECIFIED");
        snprintf(h->email, sizeof h->email, "g%lld@example.com", user);
        h->is_email_verified = true;
    } else if (e->type == DOM_EVT_PHONE_CHANGED) {
        snprintf(e->phone, sizeof e->phone, "+4178%07lld", user % 10000000);
    }
}

static void write_event(FILE *out, const dom_evt *e, const unsigned char hash[ES_CHAIN_HASH_LEN])
{
    char created[40], hex[2 * ES_CHAIN_HASH_LEN + 1];
    dom_time_format(e->created_at_us, created, sizeof created);
    es_chain_hex(hash, ES_CHAIN_HASH_LEN, hex);
    json_t *payload = dom_evt_payload_to_json(e);
    if (!payload)
        die("an event's payload could not be encoded");
    char *text = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    if (!text)
        abort();
    /* instance_id aggregate_type aggregate_id sequence position type revision
     * created_at creator resource_owner command_id last_of_command payload hash */
    copy_field(out, e->instance_id);
    fprintf(out, "\t%s\t", DOM_AGGREGATE_USER);
    copy_field(out, e->aggregate_id);
    fprintf(out, "\t%" PRId64 "\t%" PRId64 "\t%s\t%d\t%s\t", e->sequence, e->position,
            dom_evt_type_name(e->type), e->revision, created);
    copy_field(out, e->creator);
    fputc('\t', out);
    copy_field(out, e->resource_owner);
    fprintf(out, "\t%s\t%s\t", e->command_id, e->last_of_command ? "t" : "f");
    copy_field(out, text);
    fprintf(out, "\t\\\\x%s\n", hex);
    free(text);
}

/* One factord.commands row for each of the user's commands: the success
 * reply a processor stores for an accepted command. */
static void write_commands(FILE *out, const char *inst, long long user, const int64_t seq_of_cmd[8],
                           const char *created)
{
    for (int c = 0; c < 8; c++) {
        char id[DOM_UUID_LEN + 1], hash[65];
        unsigned char raw[32];
        command_id(inst, user, c, id);
        for (int i = 0; i < 32; i++)
            raw[i] = (unsigned char)(id[i] ^ (c * 31 + i));
        es_chain_hex(raw, sizeof raw, hash);
        /* id instance_id type user_id content_hash http_status body reply_to decided_at */
        fprintf(out, "%s\t", id);
        copy_field(out, inst);
        fprintf(out, "\t%s\tg%lld\t\\\\x%s\t200\t", dom_cmd_type_name(commands[c]), user, hash);
        fprintf(out,
                "{\"details\":{\"sequence\":\"%" PRId64 "\",\"changeDate\":\"%s\","
                "\"resourceOwner\":\"org-growth\"}}\tfactord.growth.replies\t%s\n",
                seq_of_cmd[c], created, created);
    }
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

int main(int argc, char **argv)
{
    long long want = -1, first_user = -1;
    int64_t after = -1;
    const char *inst = NULL, *prev_hex = NULL, *cmd_path = NULL, *head_path = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--events"))
            want = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--instance"))
            inst = v;
        else if (!strcmp(a, "--first-user"))
            first_user = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--after-position"))
            after = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--prev-hash"))
            prev_hex = v;
        else if (!strcmp(a, "--commands-out"))
            cmd_path = v;
        else if (!strcmp(a, "--head-out"))
            head_path = v;
        else
            break;
    }
    unsigned char prev[ES_CHAIN_HASH_LEN];
    if (argc % 2 != 1 || want < 0 || first_user < 0 || after < 0 || !inst || !*inst || !prev_hex ||
        !cmd_path || !head_path || !es_chain_unhex(prev_hex, prev, sizeof prev)) {
        fprintf(stderr, "usage: factord_bench_growth_gen --events N --instance I --first-user K "
                        "--after-position P --prev-hash HEX64 --commands-out PATH --head-out PATH\n");
        return 2;
    }
    es_log_init("bench-growth-gen", "warn");
    es_config cfg;
    es_chain_key key;
    es_error err = {0};
    if (es_config_load(&cfg, env_get, &err) != ES_OK || es_chain_key_load(&cfg, false, &key, &err) != ES_OK)
        die(err.text);
    es_chain_hasher *hasher = es_chain_hasher_new(&key);
    FILE *cmds = fopen(cmd_path, "w");
    if (!cmds)
        die("cannot open --commands-out");
    static char outbuf[1 << 20], cmdbuf[1 << 20];
    setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    setvbuf(cmds, cmdbuf, _IOFBF, sizeof cmdbuf);

    long long users = want / EVENTS_PER_USER;
    int64_t pos = after;
    int64_t t0 = es_clock_mono_ms(), next_report = t0 + 5000;
    int64_t now = es_clock_now_us();
    char created[40];
    dom_time_format(now, created, sizeof created);
    dom_evt e;
    for (long long b = 0; b < users; b += BLOCK_USERS) {
        long long n = users - b < BLOCK_USERS ? users - b : BLOCK_USERS;
        for (int k = 0; k < EVENTS_PER_USER; k++) {
            for (long long u = 0; u < n; u++) {
                fill(&e, inst, first_user + b + u, k, now);
                e.position = ++pos;
                char *canon = es_chain_canonical(&e);
                if (!canon)
                    die("an event could not be encoded canonically");
                unsigned char h[ES_CHAIN_HASH_LEN];
                es_chain_hash(hasher, prev, canon, strlen(canon), h);
                free(canon);
                memcpy(prev, h, sizeof prev);
                write_event(stdout, &e, h);
            }
        }
        for (long long u = 0; u < n; u++) {
            int64_t seq_of_cmd[8];
            for (int k = 0; k < EVENTS_PER_USER; k++)
                seq_of_cmd[history[k].command] = k + 1; /* the command's last event */
            write_commands(cmds, inst, first_user + b + u, seq_of_cmd, created);
        }
        int64_t t = es_clock_mono_ms();
        if (t >= next_report) {
            fprintf(stderr, "factord_bench_growth_gen: %lld of %lld users, %.0f events/s\n", b + n, users,
                    (double)(pos - after) * 1000.0 / (double)(t - t0 + 1));
            next_report = t + 5000;
        }
    }
    if (fflush(stdout) != 0 || ferror(stdout))
        die("writing the events failed");
    if (fclose(cmds) != 0)
        die("writing the commands failed");
    FILE *head = fopen(head_path, "w");
    char hex[2 * ES_CHAIN_HASH_LEN + 1];
    es_chain_hex(prev, sizeof prev, hex);
    if (!head || fprintf(head, "%" PRId64 " %s\n", pos, hex) < 0 || fclose(head) != 0)
        die("cannot write --head-out");
    fprintf(stderr, "factord_bench_growth_gen: %" PRId64 " events of %lld users in %.1f s\n", pos - after,
            users, (double)(es_clock_mono_ms() - t0) / 1000.0);
    es_chain_hasher_free(hasher);
    es_chain_key_wipe(&key);
    es_config_free(&cfg);
    return 0;
}
