/*
 * infra/components/processor.c - decide a batch of records in one transaction (see
 * processor.h).
 *
 * Per record, in order:
 *   undecodable   -> dead letter (always) + a FACTORD-Dec01 reply when the
 *                    command id and reply topic could be read;
 *   known id      -> same content: the stored outcome is replied again;
 *                    other content: FACTORD-Idem1, nothing appended;
 *   new command   -> decided against the user's state as left by the
 *                    records before it; events appended, state updated,
 *                    outcome stored; rejections replied through the outbox
 *                    (successes are replied by the read-model projector).
 */
#include "infra/base/util.h"
#include "infra/components/processor.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/command.h"
#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"

typedef struct {
    bool decoded;
    es_error derr;
    dom_cmd cmd;
    unsigned char hash[32];
    bool name_taken;   /* an import's user name is held in factord.users */
} item;

/* A command decided earlier in this batch, for repeated ids. */
typedef struct {
    const char *id;
    const char *instance_id;
    const unsigned char *hash;
    int http_status;
    const char *body;
} decided;

struct es_processor {
    es_store *st;
    es_processor_opts o;
    /* buffers grown on demand and kept between batches */
    item *items; size_t items_cap;
    dom_user *users; size_t users_cap;
    bool *found; size_t found_cap;
    dom_evt *events; size_t events_cap;
    es_cmd_outcome *outcomes; size_t outcomes_cap;
    es_outbox_msg *outbox; size_t outbox_cap;
    decided *done; size_t done_cap;
    es_known_cmd *known; size_t known_cap;
    const char **ids; size_t ids_cap;
    es_name_probe *probes; size_t probes_cap;
    bool *taken; size_t taken_cap;
    size_t *probe_item; size_t probe_item_cap;
    char **owned; size_t n_owned, owned_cap; /* strings freed after each attempt */
    dom_decision dec;
};

#define GROW ES_GROW

static char *own(es_processor *p, char *s)
{
    if (!s)
        abort();
    GROW(p, owned, p->n_owned + 1);
    p->owned[p->n_owned++] = s;
    return s;
}

static void free_owned(es_processor *p)
{
    for (size_t i = 0; i < p->n_owned; i++)
        free(p->owned[i]);
    p->n_owned = 0;
}

es_processor *es_processor_new(es_store *st, const es_processor_opts *opts)
{
    es_processor *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->st = st;
    p->o = *opts;
    if (!p->o.now_us)
        p->o.now_us = es_clock_now_us;
    if (p->o.max_conflict_retries <= 0)
        p->o.max_conflict_retries = 20;
    return p;
}

void es_processor_free(es_processor *p)
{
    if (!p)
        return;
    free_owned(p);
    free(p->owned);
    free(p->items);
    free(p->users);
    free(p->found);
    free(p->events);
    free(p->outcomes);
    free(p->outbox);
    free(p->done);
    for (size_t i = 0; i < p->known_cap; i++)
        es_known_cmd_clear(&p->known[i]);
    free(p->known);
    free(p->ids);
    free(p->probes);
    free(p->taken);
    free(p->probe_item);
    free(p);
}

static int user_cmp(const void *a, const void *b)
{
    const dom_user *x = a, *y = b;
    int c = strcmp(x->instance_id, y->instance_id);
    return c ? c : strcmp(x->user_id, y->user_id);
}

static dom_user *find_user(es_processor *p, size_t n_users, const char *instance_id, const char *user_id)
{
    dom_user key;
    snprintf(key.instance_id, sizeof key.instance_id, "%s", instance_id);
    snprintf(key.user_id, sizeof key.user_id, "%s", user_id);
    return bsearch(&key, p->users, n_users, sizeof *p->users, user_cmp);
}

static bool topic_name_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 249)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)t[i]) && t[i] != '.' && t[i] != '_' && t[i] != '-')
            return false;
    return true;
}

/* Queue a reply {"commandId","httpStatus","body"} on the command's topic. */
static void queue_reply(es_processor *p, size_t *n_outbox, const char *instance_id, const char *cmd_id,
                        const char *reply_to, int http_status, const char *body_json)
{
    json_t *body = json_loads(body_json, 0, NULL);
    json_t *r = json_pack("{s:s, s:i, s:o}", "commandId", cmd_id, "httpStatus", http_status, "body",
                          body ? body : json_object());
    char *value = own(p, json_dumps(r, JSON_COMPACT));
    json_decref(r);
    GROW(p, outbox, *n_outbox + 1);
    es_outbox_msg *m = &p->outbox[(*n_outbox)++];
    m->instance_id = instance_id;
    m->topic = (reply_to && *reply_to) ? reply_to : p->o.replies_topic;
    m->key = cmd_id;
    m->key_len = strlen(cmd_id);
    m->value = value;
    m->value_len = strlen(value);
    m->headers_json = NULL;
}

/* The decoder's reason, or a fixed text when it is not valid UTF-8: it goes
 * into JSON (headers, replies), and one odd reason must not abort the
 * processor on every redelivery of the record (a poison pill). */
static const char *reason_text(const item *it)
{
    json_t *probe = json_string(it->derr.text);
    if (!probe)
        return "undecodable record (the reason is not printable)";
    json_decref(probe);
    return it->derr.text;
}

static void queue_dead_letter(es_processor *p, size_t *n_outbox, const es_record *r, const item *it)
{
    size_t len = r->value_len;
    json_t *h = json_pack("{s:s, s:s, s:s, s:s}", "factord-reason", reason_text(it), "factord-source-topic",
                          r->topic ? r->topic : "", "factord-source-partition", es_log_i64(r->partition),
                          "factord-source-offset", es_log_i64(r->offset));
    if (!h) /* the reason text is ours and UTF-8; a pack failure means no memory */
        abort();
    if ((int64_t)len > p->o.dlq_max_bytes) {
        json_object_set_new(h, "factord-truncated-from", json_string(es_log_i64((long long)len)));
        len = (size_t)p->o.dlq_max_bytes;
    }
    char *headers = own(p, json_dumps(h, JSON_COMPACT));
    json_decref(h);
    GROW(p, outbox, *n_outbox + 1);
    es_outbox_msg *m = &p->outbox[(*n_outbox)++];
    m->instance_id = it->cmd.instance_id;
    m->topic = p->o.dlq_topic;
    m->key = r->key ? r->key : "";
    m->key_len = r->key ? r->key_len : 0;
    m->value = r->value ? r->value : "";
    m->value_len = r->value ? len : 0;
    m->headers_json = headers;
}

static const decided *find_done(es_processor *p, size_t n_done, const char *id)
{
    for (size_t i = n_done; i-- > 0;)
        if (strcmp(p->done[i].id, id) == 0)
            return &p->done[i];
    return NULL;
}

/* One attempt: everything inside one transaction. */
static es_result attempt(es_processor *p, const es_record *recs, size_t n, es_batch_stats *stats,
                         es_error *err)
{
    es_result rc;
    size_t n_users = 0, n_events = 0, n_outcomes = 0, n_outbox = 0, n_done = 0, n_ids = 0;
    memset(stats, 0, sizeof *stats);

    rc = es_store_begin(p->st, err);
    if (rc != ES_OK)
        return rc;

    /* 1. Known command ids. */
    GROW(p, ids, n);
    for (size_t i = 0; i < n; i++)
        if (p->items[i].decoded)
            p->ids[n_ids++] = p->items[i].cmd.id;
    if (p->known_cap < n_ids) {
        size_t old = p->known_cap;
        GROW(p, known, n_ids);
        memset(p->known + old, 0, (p->known_cap - old) * sizeof *p->known);
    }
    if (n_ids) {
        rc = es_store_find_commands(p->st, p->ids, n_ids, p->known, err);
        if (rc != ES_OK)
            goto fail;
    }

    /* 2. The users touched, sorted and unique, loaded FOR UPDATE. */
    GROW(p, users, n);
    GROW(p, found, n);
    for (size_t i = 0; i < n; i++) {
        const item *it = &p->items[i];
        if (!it->decoded || !it->cmd.user_id[0])
            continue;
        dom_user *u = &p->users[n_users++];
        memset(u, 0, sizeof *u);
        snprintf(u->instance_id, sizeof u->instance_id, "%s", it->cmd.instance_id);
        snprintf(u->user_id, sizeof u->user_id, "%s", it->cmd.user_id);
    }
    qsort(p->users, n_users, sizeof *p->users, user_cmp);
    size_t uniq = 0;
    for (size_t i = 0; i < n_users; i++)
        if (uniq == 0 || user_cmp(&p->users[uniq - 1], &p->users[i]) != 0)
            p->users[uniq++] = p->users[i];
    n_users = uniq;
    if (n_users) {
        rc = es_store_load_users(p->st, p->users, p->found, n_users, err);
        if (rc != ES_OK)
            goto fail;
    }

    /* 3. The user names the batch's imports claim, looked up in one query
     * (the table does not change before this batch writes). */
    size_t n_probes = 0;
    GROW(p, probes, n);
    GROW(p, taken, n);
    GROW(p, probe_item, n);
    for (size_t i = 0; i < n; i++) {
        item *it = &p->items[i];
        it->name_taken = false;
        if (it->decoded && it->cmd.type == DOM_CMD_IMPORT_HUMAN && it->cmd.import.user_name[0]) {
            p->probes[n_probes] = (es_name_probe){it->cmd.instance_id, it->cmd.import.user_name, it->cmd.user_id};
            p->probe_item[n_probes++] = i;
        }
    }
    if (n_probes) {
        rc = es_store_names_taken(p->st, p->probes, n_probes, p->taken, err);
        if (rc != ES_OK)
            goto fail;
        for (size_t j = 0; j < n_probes; j++)
            p->items[p->probe_item[j]].name_taken = p->taken[j];
    }

    /* 4. Decide in record order. */
    size_t k = 0; /* index into known[] */
    GROW(p, outcomes, n);
    GROW(p, done, n);
    for (size_t i = 0; i < n; i++) {
        item *it = &p->items[i];
        const es_record *r = &recs[i];
        if (!it->decoded) {
            stats->dead++;
            queue_dead_letter(p, &n_outbox, r, it);
            if (it->cmd.id[0] && (!it->cmd.reply_to[0] || topic_name_ok(it->cmd.reply_to))) {
                json_t *b = dom_rej_body(DOM_REJ_COMMAND_MALFORMED, reason_text(it));
                char *body = own(p, json_dumps(b, JSON_COMPACT));
                json_decref(b);
                queue_reply(p, &n_outbox, it->cmd.instance_id, it->cmd.id, it->cmd.reply_to,
                            dom_rej_lookup(DOM_REJ_COMMAND_MALFORMED)->http_status, body);
            }
            continue;
        }
        const es_known_cmd *kc = &p->known[k++];
        const decided *prev = find_done(p, n_done, it->cmd.id);
        const unsigned char *old_hash = prev ? prev->hash : kc->found ? kc->hash : NULL;
        if (old_hash) {
            const char *old_inst = prev ? prev->instance_id : kc->instance_id;
            if (memcmp(old_hash, it->hash, 32) == 0 && strcmp(old_inst, it->cmd.instance_id) == 0) {
                stats->replayed++;
                stats->by_type[it->cmd.type][ES_OUTCOME_REPLAYED]++;
                queue_reply(p, &n_outbox, it->cmd.instance_id, it->cmd.id, it->cmd.reply_to,
                            prev ? prev->http_status : kc->http_status, prev ? prev->body : kc->body);
            } else {
                stats->rejected++;
                stats->by_type[it->cmd.type][ES_OUTCOME_REJECTED]++;
                json_t *b = dom_rej_body(DOM_REJ_COMMAND_ID_REUSED, NULL);
                char *body = own(p, json_dumps(b, JSON_COMPACT));
                json_decref(b);
                queue_reply(p, &n_outbox, it->cmd.instance_id, it->cmd.id, it->cmd.reply_to,
                            dom_rej_lookup(DOM_REJ_COMMAND_ID_REUSED)->http_status, body);
            }
            continue;
        }

        dom_user none;
        memset(&none, 0, sizeof none);
        dom_user *u = it->cmd.user_id[0] ? find_user(p, n_users, it->cmd.instance_id, it->cmd.user_id) : &none;
        if (!u)
            abort(); /* every decoded command's user was loaded above */

        dom_ctx ctx = {.now_us = p->o.now_us(), .code_ttl_us = p->o.code_ttl_s * 1000000,
                       .max_otp_attempts = p->o.max_otp_attempts};
        char code[DOM_CODE_MAX] = "", code_enc[DOM_CODE_ENC_MAX] = "", stored[DOM_CODE_MAX * 2] = "";
        int code_length = p->o.code_length;
        bool session = it->cmd.type == DOM_CMD_CREATE_SESSION || it->cmd.type == DOM_CMD_SET_SESSION;
        bool otp = it->cmd.type == DOM_CMD_CHALLENGE_OTP_SMS || (session && it->cmd.otp_challenge);
        if (otp) {
            code_length = p->o.otp_sms_code_length > 0 ? p->o.otp_sms_code_length : 8;
            ctx.code_ttl_us = (p->o.otp_sms_code_ttl_s > 0 ? p->o.otp_sms_code_ttl_s : 300) * 1000000;
        }
        /* A new number needs a code: SetMyPhone, a resend, and an import
         * whose phone is not verified yet (else that user could never verify
         * it); a sign-in challenge needs one too. */
        if (it->cmd.type == DOM_CMD_SET_PHONE || it->cmd.type == DOM_CMD_RESEND_PHONE_CODE || otp ||
            (it->cmd.type == DOM_CMD_IMPORT_HUMAN && it->cmd.import.phone[0] &&
             !it->cmd.import.is_phone_verified)) {
            rc = es_code_generate(code, sizeof code, code_length, err);
            if (rc == ES_OK)
                rc = es_code_encrypt(p->o.code_key, it->cmd.instance_id, it->cmd.user_id, code, code_enc,
                                     sizeof code_enc, err);
            if (rc != ES_OK)
                goto fail;
            ctx.new_code = code;
            ctx.new_code_enc = code_enc;
        }
        const char *held = it->cmd.type == DOM_CMD_VERIFY_PHONE  ? u->code_enc
                           : it->cmd.type == DOM_CMD_CHECK_OTP_SMS ||
                                     (it->cmd.type == DOM_CMD_SET_SESSION && it->cmd.code[0])
                               ? u->otp_code_enc
                               : "";
        if (held[0]) {
            es_error derr = {0};
            if (es_code_decrypt(p->o.code_key, u->instance_id, u->user_id, held, stored, sizeof stored,
                                &derr) == ES_OK)
                ctx.stored_code = stored;
            else
                es_warn("stored code does not decrypt", "instance", u->instance_id, "user", u->user_id,
                        "reason", derr.text);
        } else if (it->cmd.type == DOM_CMD_IMPORT_HUMAN && it->cmd.import.user_name[0]) {
            bool taken = false;
            /* names claimed earlier in this batch are not in the table yet */
            for (size_t j = 0; j < n_users && !taken; j++)
                taken = &p->users[j] != u && p->users[j].status != DOM_USER_NONE &&
                        p->users[j].status != DOM_USER_REMOVED &&
                        strcmp(p->users[j].instance_id, it->cmd.instance_id) == 0 &&
                        strcasecmp(p->users[j].user_name, it->cmd.import.user_name) == 0;
            ctx.user_name_taken = taken || it->name_taken;
        }

        dom_decision *dec = &p->dec;
        dom_user_decide(u, &it->cmd, &ctx, dec);
        explicit_bzero(code, sizeof code);
        explicit_bzero(stored, sizeof stored);

        GROW(p, events, n_events + dec->n_events);
        for (size_t e = 0; e < dec->n_events; e++) {
            dom_user_apply(u, &dec->events[e]);
            p->events[n_events++] = dec->events[e];
        }
        stats->events += dec->n_events;

        json_t *b = dec->accepted ? dom_success_body(&dec->events[dec->n_events - 1], NULL)
                                  : dom_rej_body(dec->rej, dec->rej_detail[0] ? dec->rej_detail : NULL);
        char *body = own(p, json_dumps(b, JSON_COMPACT));
        json_decref(b);
        int status = dec->accepted ? 200 : dom_rej_lookup(dec->rej)->http_status;
        es_cmd_outcome *oc = &p->outcomes[n_outcomes++];
        oc->cmd = &it->cmd;
        oc->hash = it->hash;
        oc->http_status = status;
        oc->body = body;
        oc->reply_to = it->cmd.reply_to[0] ? it->cmd.reply_to : p->o.replies_topic;
        p->done[n_done++] = (decided){it->cmd.id, it->cmd.instance_id, it->hash, status, body};
        stats->by_type[it->cmd.type][dec->accepted ? ES_OUTCOME_ACCEPTED : ES_OUTCOME_REJECTED]++;
        if (dec->accepted) {
            stats->accepted++;
        } else {
            stats->rejected++;
            queue_reply(p, &n_outbox, it->cmd.instance_id, it->cmd.id, it->cmd.reply_to, status, body);
        }
    }

    /* 5. Write and commit. Only users whose state changed need an upsert,
     * but an unchanged row costs little and keeps this simple. */
    es_write w = {.events = p->events, .n_events = n_events, .users = p->users, .n_users = n_users,
                  .outcomes = p->outcomes, .n_outcomes = n_outcomes, .outbox = p->outbox,
                  .n_outbox = n_outbox};
    rc = es_store_write(p->st, &w, err);
    if (rc != ES_OK)
        goto fail;
    rc = es_store_commit(p->st, err);
    if (rc != ES_OK)
        goto fail_committed;
    for (size_t i = 0; i < n_ids; i++)
        es_known_cmd_clear(&p->known[i]);
    free_owned(p);
    return ES_OK;
fail:
    es_store_rollback(p->st);
fail_committed:
    for (size_t i = 0; i < n_ids; i++)
        es_known_cmd_clear(&p->known[i]);
    free_owned(p);
    return rc;
}

es_result es_processor_run_batch(es_processor *p, const es_record *recs, size_t n, es_batch_stats *stats,
                                 es_error *err)
{
    GROW(p, items, n);
    for (size_t i = 0; i < n; i++) {
        item *it = &p->items[i];
        memset(&it->derr, 0, sizeof it->derr);
        const char *v = recs[i].value ? recs[i].value : "";
        it->decoded = dom_cmd_decode(v, recs[i].value_len, &it->cmd, &it->derr) == ES_OK;
        if (it->decoded) {
            char *canon = dom_cmd_canonical(&it->cmd);
            if (!canon)
                abort();
            es_sha256(canon, strlen(canon), it->hash);
            free(canon);
        }
    }
    for (int tries = 1;; tries++) {
        es_result rc = attempt(p, recs, n, stats, err);
        stats->attempts = (size_t)tries;
        if (rc != ES_ECONFLICT)
            return rc;
        if (tries >= p->o.max_conflict_retries)
            return es_error_set(err, ES_ETRANSIENT, "batch still conflicting after %d attempts: %s", tries,
                                err ? err->text : "");
        es_debug("concurrency conflict, deciding the batch again", "attempt", es_log_i64(tries),
                 "sqlstate", err ? err->sqlstate : "");
        es_sleep_ms(tries < 5 ? tries : 5 * tries);
    }
}

/* --- the loop ---------------------------------------------------------------- */

typedef struct {
    es_processor *p;
    es_store *st;
    const es_record *recs;
    size_t n;
    es_batch_stats *bs;
} batch_try;

static es_result batch_attempt(void *ctx, es_error *err)
{
    batch_try *t = ctx;
    return es_processor_run_batch(t->p, t->recs, t->n, t->bs, err);
}

static es_result batch_reconnect(void *ctx, es_error *err)
{
    batch_try *t = ctx;
    return es_store_reset(t->st, err);
}

/* A committed batch into the metrics (docs/metrics.md). */
static void count_batch(const es_batch_stats *bs, const es_record *recs, size_t n, double seconds)
{
    /* From each record's creation (its producer's clock) to this commit. */
    es_metric *lat = es_metrics_histogram("factord_command_decision_latency_seconds",
                                          "From a command record's creation to the commit of its decision",
                                          "", es_metrics_seconds_buckets, es_metrics_seconds_buckets_n);
    int64_t now_ms = es_clock_now_us() / 1000;
    for (size_t i = 0; i < n; i++)
        if (recs[i].timestamp_ms > 0 && now_ms >= recs[i].timestamp_ms)
            es_metric_observe(lat, (double)(now_ms - recs[i].timestamp_ms) / 1e3);
    static const char *const outcome_names[ES_OUTCOME__N] = {"accepted", "rejected", "replayed"};
    static const double size_buckets[] = {1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000};
    for (int t = 0; t < DOM_CMD__COUNT; t++)
        for (int o = 0; o < ES_OUTCOME__N; o++) {
            if (!bs->by_type[t][o])
                continue;
            char labels[160];
            const char *name = dom_cmd_type_name((dom_cmd_type)t);
            es_metrics_labels(labels, sizeof labels, "type", name[0] ? name : "unknown", "outcome", outcome_names[o],
                              NULL);
            es_metric_add(es_metrics_counter("factord_commands_total",
                                             "Commands decided, by type and outcome (replayed: a redelivered command "
                                             "answered from its stored outcome)",
                                             labels),
                          bs->by_type[t][o]);
        }
    es_metric_add(es_metrics_counter("factord_dead_letters_total",
                                     "Command records that could not be decoded, copied to the dead-letter topic", ""),
                  bs->dead);
    es_metric_add(es_metrics_counter("factord_events_appended_total", "Events appended to the log", ""), bs->events);
    es_metric_observe(es_metrics_histogram("factord_processor_batch_commands",
                                           "Commands per decided batch (one transaction)", "", size_buckets,
                                           sizeof size_buckets / sizeof size_buckets[0]),
                      (double)n);
    es_metric_observe(es_metrics_histogram("factord_processor_batch_duration_seconds",
                                           "Time to decide, append and commit one batch, retries included", "",
                                           es_metrics_seconds_buckets, es_metrics_seconds_buckets_n),
                      seconds);
}

static void log_progress(const char *msg, const es_batch_stats *t)
{
    es_info(msg, "accepted", es_log_i64((long long)t->accepted), "rejected", es_log_i64((long long)t->rejected),
            "replayed", es_log_i64((long long)t->replayed), "dead_letters", es_log_i64((long long)t->dead),
            "events", es_log_i64((long long)t->events));
}

es_result es_processor_loop(es_processor *p, es_store *st, es_consumer *c, size_t batch_max, int64_t linger_ms,
                            const es_stop_flag *stop, es_batch_stats *total, es_error *err)
{
    es_kafka_msg **msgs = calloc(batch_max, sizeof *msgs);
    es_record *recs = calloc(batch_max, sizeof *recs);
    if (!msgs || !recs)
        abort();
    es_result out = ES_OK;
    int64_t last_report = es_clock_mono_ms();
    while (!es_stopping(stop)) {
        size_t n = 0;
        while (n < batch_max && !es_stopping(stop)) {
            es_kafka_msg *m = es_consumer_next(c, n, linger_ms, &recs[n]);
            if (!m) {
                if (n)
                    break;
                continue;
            }
            msgs[n++] = m;
        }
        if (!n)
            continue;
        es_batch_stats bs = {0};
        int64_t started_us = es_clock_mono_us();
        batch_try t = {.p = p, .st = st, .recs = recs, .n = n, .bs = &bs};
        es_retry r = {.what = "PostgreSQL unavailable, retrying the batch",
                      .attempt = batch_attempt,
                      .before_retry = batch_reconnect,
                      .ctx = &t};
        es_result rc = es_retry_run(&r, stop, err);
        if (rc == ES_OK) {
            es_failpoint("process.after_commit");
            es_consumer_store_records(c, recs, n);
            count_batch(&bs, recs, n, (double)(es_clock_mono_us() - started_us) / 1e6);
            total->accepted += bs.accepted;
            total->rejected += bs.rejected;
            total->replayed += bs.replayed;
            total->dead += bs.dead;
            total->events += bs.events;
        } else if (rc == ES_ETRANSIENT) {
            es_warn("stopping with an undecided batch; it will be redelivered", "records",
                    es_log_i64((long long)n));
        } else {
            es_err("cannot decide a batch; stopping", "error", err->text, "sqlstate", err->sqlstate);
            out = rc;
        }
        for (size_t i = 0; i < n; i++)
            es_kafka_msg_free(msgs[i]);
        if (out != ES_OK)
            break;
        if (es_clock_mono_ms() - last_report >= 10000) {
            last_report = es_clock_mono_ms();
            log_progress("progress", total);
        }
    }
    free(msgs);
    free(recs);
    return out;
}
