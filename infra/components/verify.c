/*
 * infra/components/verify.c - `factord verify`'s check (verify.h).
 *
 * Two passes over one snapshot (infra/pg/logread.h): the chain pass reads
 * the log in position order and recomputes every hash; the users pass reads
 * it in (instance, user, sequence) order and folds each user's events
 * through dom_user_apply to compare with factord.users. The users pass runs
 * in a thread of its own on a second reader that shares the snapshot (the
 * two use a core each: PostgreSQL's and ours), or after the chain pass when
 * no second reader can be had. The chain's problems are reported first:
 * they are the more fundamental ones.
 */
#include "infra/components/verify.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/util.h"
#include "infra/pg/logread.h"

/* Record the first problem: at position pos (0: none), of the user
 * (instance, user) when instance is not NULL. */
static void audit_bad(es_verify_report *rep, const char *instance, const char *user, int64_t pos,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void audit_bad(es_verify_report *rep, const char *instance, const char *user, int64_t pos,
                      const char *fmt, ...)
{
    va_list ap;
    rep->ok = false;
    rep->bad_position = pos;
    if (instance) {
        snprintf(rep->bad_instance, sizeof rep->bad_instance, "%s", instance);
        snprintf(rep->bad_user, sizeof rep->bad_user, "%s", user);
    }
    va_start(ap, fmt);
    vsnprintf(rep->problem, sizeof rep->problem, fmt, ap);
    va_end(ap);
}

/* --- the chain pass --------------------------------------------------------------- */

/* A (position, hash) that the log must hold: the expected head, a
 * checkpoint. */
typedef struct {
    int64_t position;
    unsigned char hash[ES_CHAIN_HASH_LEN];
    char what[96];           /* "the expected head", "checkpoint 3", ... */
} verify_pin;

enum { VERIFY_MAX_PINS = 3 };

typedef struct {
    es_chain_hasher *hasher;
    const es_verify_opts *o;
    es_verify_report *rep;
    unsigned char prev[ES_CHAIN_HASH_LEN];
    int64_t last_position;
    bool chained_seen;
    verify_pin pins[VERIFY_MAX_PINS]; /* above the start, by position */
    size_t n_pins, next_pin;
    es_audit_ticker ticker;
} chain_state;

/* Members of the JSON object text s (as PostgreSQL prints jsonb): commas
 * at depth 1 outside strings, plus one; (size_t)-1 when s is no object.
 * A scan instead of a parse: the decoder parsed the payload already. */
static size_t audit_members(const char *s)
{
    size_t commas = 0;
    int depth = 0;
    bool in_str = false, any = false;
    while (*s == ' ')
        s++;
    if (*s != '{')
        return (size_t)-1;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (in_str) {
            if (c == '\\' && p[1])
                p++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            if (depth == 1)
                any = true;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            commas++;
        }
    }
    return any ? commas + 1 : 0;
}

/* One row of the chain pass; false after recording a problem. */
static bool chain_row(void *arg, const es_log_row *row)
{
    chain_state *cs = arg;
    es_verify_report *rep = cs->rep;
    const dom_evt *evt = &row->evt;
    int64_t pos = row->position;
    if (!row->position_ok) {
        audit_bad(rep, NULL, NULL, 0, "an event after position %" PRId64 " has a malformed position",
                  cs->last_position);
        return false;
    }
    if (pos <= cs->last_position) {
        audit_bad(rep, row->instance_id, row->aggregate_id, pos, "position %" PRId64 " appears twice", pos);
        return false;
    }
    cs->last_position = pos;
    rep->events++;
    if (row->decoded != ES_OK) {
        audit_bad(rep, evt->instance_id, evt->aggregate_id, pos, "the event does not decode: %.300s",
                  row->decode_err.text);
        return false;
    }
    /* Columns outside the canonical bytes must hold what they imply. */
    if (strcmp(row->aggregate_type, DOM_AGGREGATE_USER) != 0 ||
        strcmp(row->type, dom_evt_type_name(evt->type)) != 0) {
        audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                  "the event's aggregate type or type name was changed");
        return false;
    }
    /* Every member the type has was decoded into evt and is hashed; one it
     * does not have would be skipped by the decoder: count them. */
    json_t *canon = dom_evt_payload_to_json(evt);
    bool same = audit_members(row->payload) == json_object_size(canon);
    json_decref(canon);
    if (!same) {
        audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                  "the payload holds members the event type does not have");
        return false;
    }

    if (!row->hash_hex) {
        if (cs->chained_seen) {
            audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                      "an event without a hash after chained events");
            return false;
        }
        if (pos > rep->chain_start) {
            audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                      "an event without a hash above the chain's start (%" PRId64
                      "): written by a binary without the chain, or its hash removed",
                      rep->chain_start);
            return false;
        }
        rep->unchained++;
    } else {
        unsigned char stored_hash[ES_CHAIN_HASH_LEN], want[ES_CHAIN_HASH_LEN];
        if (!es_chain_unhex(row->hash_hex, stored_hash, sizeof stored_hash)) {
            audit_bad(rep, evt->instance_id, evt->aggregate_id, pos, "the event's hash is not 32 bytes");
            return false;
        }
        char *text = es_chain_canonical(evt);
        if (!text) {
            audit_bad(rep, evt->instance_id, evt->aggregate_id, pos, "the event cannot be encoded");
            return false;
        }
        es_chain_hash(cs->hasher, cs->prev, text, strlen(text), want);
        free(text);
        if (memcmp(want, stored_hash, sizeof want) != 0) {
            if (!cs->chained_seen)
                audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                          "the first chained event's hash does not verify: the event was "
                          "altered, or the chain key is not the writers' key");
            else
                audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                          "hash mismatch: this event was altered, or an event before it (after "
                          "the chained event at %" PRId64 ") was removed, inserted or moved",
                          rep->head_position);
            return false;
        }
        cs->chained_seen = true;
        memcpy(cs->prev, stored_hash, sizeof cs->prev);
        rep->head_position = pos;
        memcpy(rep->head_hash, stored_hash, sizeof rep->head_hash);
    }
    while (cs->next_pin < cs->n_pins && pos >= cs->pins[cs->next_pin].position) {
        const verify_pin *pin = &cs->pins[cs->next_pin++];
        if (pos != pin->position || !row->hash_hex) {
            audit_bad(rep, evt->instance_id, evt->aggregate_id, pos, "%s position %" PRId64 " holds no chained event",
                      pin->what, pin->position);
            return false;
        }
        if (memcmp(rep->head_hash, pin->hash, ES_CHAIN_HASH_LEN) != 0) {
            audit_bad(rep, evt->instance_id, evt->aggregate_id, pos,
                      "the event at %s has another hash: the log up to it was rewritten%s", pin->what,
                      rep->pii_rewrites ? " (factord pii seal-legacy re-chained the log: its old heads are "
                                          "in factord.pii_rewrites)"
                                        : "");
            return false;
        }
    }
    return true;
}

static bool chain_page_done(void *arg, size_t rows, int64_t last)
{
    chain_state *cs = arg;
    (void)rows;
    (void)last;
    es_audit_ticker_tick(&cs->ticker, cs->rep->events, cs->last_position);
    return true;
}

/* --- the users pass ---------------------------------------------------------------- */

/* The first column where the fold and the row differ, or NULL. */
static const char *audit_user_diff(const dom_user *a, const dom_user *b)
{
    if (strcmp(a->resource_owner, b->resource_owner))
        return "resource_owner";
    if (strcmp(a->user_name, b->user_name))
        return "user_name";
    if (a->status != b->status)
        return "status";
    if (a->sequence != b->sequence)
        return "sequence";
    if (strcmp(a->phone, b->phone))
        return "phone";
    if (a->phone_verified != b->phone_verified)
        return "phone_verified";
    if (strcmp(a->verified_phone, b->verified_phone))
        return "verified_phone";
    if (a->otp_sms != b->otp_sms)
        return "otp_sms";
    if (strcmp(a->code_enc, b->code_enc))
        return "code_enc";
    if (a->code_expires_at_us != b->code_expires_at_us)
        return "code_expires_at";
    if (a->created_at_us != b->created_at_us)
        return "created_at";
    if (a->changed_at_us != b->changed_at_us)
        return "changed_at";
    if (strcmp(a->otp_code_enc, b->otp_code_enc))
        return "otp_code_enc";
    if (a->otp_code_expires_at_us != b->otp_code_expires_at_us)
        return "otp_code_expires_at";
    if (a->otp_failed != b->otp_failed)
        return "otp_failed";
    if (strcmp(a->otp_code_session, b->otp_code_session))
        return "otp_code_session";
    return NULL;
}

typedef struct {
    es_verify_report *rep;
    bool have;               /* a user is being folded */
    dom_user fold;
    dom_user row;            /* its factord.users row */
    bool row_found;
    dom_evt last;            /* its last event */
    bool sealed;             /* one of its events stayed sealed (no master key) */
    bool stopped;            /* a row's problem, or the chain pass's, stopped the scan */
    const atomic_bool *stop; /* set when the chain pass failed (NULL: not beside it) */
    int64_t rows;
    es_audit_ticker ticker;
} users_state;

/* The user being folded is complete: compare it with its row. */
static bool users_finish(users_state *us)
{
    if (!us->have)
        return true;
    us->have = false;
    us->rep->users++;
    if (!us->row_found) {
        audit_bad(us->rep, us->last.instance_id, us->last.aggregate_id, us->last.position,
                  "the user has events but no row in factord.users");
        return false;
    }
    if (us->sealed) {
        /* Without the master key the fold cannot know the personal
         * columns: take the row's (docs/pii.md, "Reading"). */
        us->rep->users_sealed++;
        memcpy(us->fold.user_name, us->row.user_name, sizeof us->fold.user_name);
        memcpy(us->fold.phone, us->row.phone, sizeof us->fold.phone);
        memcpy(us->fold.verified_phone, us->row.verified_phone, sizeof us->fold.verified_phone);
    }
    const char *col = audit_user_diff(&us->fold, &us->row);
    if (col) {
        audit_bad(us->rep, us->last.instance_id, us->last.aggregate_id, us->last.position,
                  "factord.users differs from the fold of the user's events in column %s", col);
        return false;
    }
    return true;
}

static bool users_row_check(users_state *us, const es_log_row *row)
{
    const dom_evt *evt = &row->evt;
    if (row->decoded != ES_OK) {
        audit_bad(us->rep, NULL, NULL, 0, "an event does not decode: %.300s", row->decode_err.text);
        return false;
    }
    bool same_user = us->have && strcmp(us->last.instance_id, evt->instance_id) == 0 &&
                     strcmp(us->last.aggregate_id, evt->aggregate_id) == 0;
    if (same_user) {
        if (evt->sequence == us->last.sequence) {
            audit_bad(us->rep, evt->instance_id, evt->aggregate_id, evt->position,
                      "sequence %" PRId64 " appears twice", evt->sequence);
            return false;
        }
        if (evt->sequence != us->last.sequence + 1) {
            audit_bad(us->rep, evt->instance_id, evt->aggregate_id, evt->position,
                      "sequence gap: %" PRId64 " follows %" PRId64 " (events missing)", evt->sequence,
                      us->last.sequence);
            return false;
        }
    } else {
        if (!users_finish(us))
            return false;
        if (evt->sequence != 1) {
            audit_bad(us->rep, evt->instance_id, evt->aggregate_id, evt->position,
                      "the user's first event has sequence %" PRId64 " (events missing)", evt->sequence);
            return false;
        }
        us->have = true;
        us->sealed = false;
        memset(&us->fold, 0, sizeof us->fold);
        /* The reader decodes a user's row on the user's first event. */
        us->row_found = row->has_user;
        if (us->row_found) {
            if (!row->user_decoded || row->user_rc != ES_OK) {
                audit_bad(us->rep, evt->instance_id, evt->aggregate_id, evt->position,
                          "the user's row does not decode: %.300s",
                          row->user_decoded ? row->user_err.text : "not read");
                return false;
            }
            us->row = row->user;
        }
    }
    if (evt->pii_state == DOM_PII_SEALED)
        us->sealed = true;
    dom_user_apply(&us->fold, evt);
    us->last = *evt;
    return true;
}

static bool users_row(void *arg, const es_log_row *row)
{
    users_state *us = arg;
    if (!users_row_check(us, row)) {
        us->stopped = true;
        return false;
    }
    return true;
}

static bool users_page_done(void *arg, size_t rows, int64_t last)
{
    users_state *us = arg;
    (void)last;
    if (us->stop && atomic_load(us->stop)) {
        us->stopped = true; /* the chain pass failed already: its problem is reported */
        return false;
    }
    us->rows += (int64_t)rows;
    es_audit_ticker_tick(&us->ticker, us->rows, 0);
    return true;
}

/* The users pass over every user (after = 0), or over the users with an
 * event above after (incremental), who are all read from their first
 * event; the search for rows without events only in the first case. */
static es_result verify_users(es_logread *r, es_verify_report *rep, const es_verify_opts *o, size_t page,
                              int64_t after, const atomic_bool *stop, es_error *err)
{
    es_result rc = ES_OK;
    bool found = false;
    es_log_user_key who;
    users_state *us = calloc(1, sizeof *us);
    if (!us)
        abort();
    us->rep = rep;
    us->stop = stop;
    es_audit_ticker_start(&us->ticker, o->progress, o->progress_arg, "users");

    if (after > 0)
        rc = es_logread_users_since(r, after, page, users_row, users_page_done, us, err);
    else
        rc = es_logread_users(r, page, users_row, users_page_done, us, err);
    if (rc != ES_OK || us->stopped)
        goto out;
    if (!users_finish(us) || after > 0)
        goto out;
    /* Users with a row but no event. */
    if ((rc = es_logread_user_without_events(r, &found, &who, err)) != ES_OK)
        goto out;
    if (found)
        audit_bad(rep, who.instance_id, who.user_id, 0, "factord.users has a user without events");
out:
    free(us);
    return rc;
}

/* The users pass beside the chain pass, on a reader of its own. */
typedef struct {
    es_logread *reader;
    const es_verify_opts *o;
    size_t page;
    int64_t after;
    const atomic_bool *stop;
    es_verify_report rep;
    es_result rc;
    es_error err;
} users_job;

static void *users_job_main(void *arg)
{
    users_job *j = arg;
    memset(&j->rep, 0, sizeof j->rep);
    j->rep.ok = true;
    j->rc = verify_users(j->reader, &j->rep, j->o, j->page, j->after, j->stop, &j->err);
    return NULL;
}

/* --- anchors ----------------------------------------------------------------------- */

static void pin_set(verify_pin *pin, int64_t pos, const unsigned char hash[ES_CHAIN_HASH_LEN], const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static void pin_set(verify_pin *pin, int64_t pos, const unsigned char hash[ES_CHAIN_HASH_LEN], const char *fmt, ...)
{
    va_list ap;
    pin->position = pos;
    memcpy(pin->hash, hash, ES_CHAIN_HASH_LEN);
    va_start(ap, fmt);
    vsnprintf(pin->what, sizeof pin->what, fmt, ap);
    va_end(ap);
}

/* A signed checkpoint's problem with key, as a sentence's end; NULL when
 * it is signed with key. */
static const char *anchor_signature_problem(const es_chain_key *key, const es_checkpoint *cp, char *buf,
                                            size_t len)
{
    es_checkpoint_status cs = es_checkpoint_check(key, cp);
    switch (cs) {
    case ES_CHECKPOINT_VALID:
        return NULL;
    case ES_CHECKPOINT_OTHER_KEY:
        snprintf(buf, len,
                 "is signed with another key (key id %s; this run's is %s): refused. Verify with the key it "
                 "was made with, or run --full",
                 cp->key_id[0] ? cp->key_id : "?", key->key_id);
        break;
    case ES_CHECKPOINT_BAD_SIGNATURE:
        snprintf(buf, len, "has a signature that does not verify: it was forged or edited (its position, "
                           "hash or another field changed)");
        break;
    case ES_CHECKPOINT_MALFORMED:
        snprintf(buf, len, "is malformed (forged or edited)");
        break;
    }
    return buf;
}

/* Choose where the run starts: the anchors (the expected head, the
 * checkpoint file's, in an incremental run the newest checkpoint in the
 * database) after checking the signed ones; the lowest is the start, the
 * others become the chain pass's pins, and the chain continues from the
 * start's hash. *start = 0 for a run from the first event. ES_OK with
 * rep->ok false after recording a problem (a refused checkpoint, the
 * start's event gone or changed); another result when a read failed. */
static es_result verify_anchors(es_logread *reader, const es_chain_key *key, const es_verify_opts *o,
                                es_verify_report *rep, chain_state *cs, int64_t *start, es_error *err)
{
    verify_pin anchors[VERIFY_MAX_PINS];
    size_t n = 0;
    char why[256];
    *start = 0;
    if (o->expect_head)
        pin_set(&anchors[n++], o->expect_position, o->expect_hash, "the expected head");
    if (o->has_file_checkpoint) {
        const es_checkpoint *fc = &o->file_checkpoint;
        if (anchor_signature_problem(key, fc, why, sizeof why)) {
            audit_bad(rep, NULL, NULL, fc->position, "the checkpoint file's checkpoint (position %" PRId64 ") %s",
                      fc->position, why);
            snprintf(rep->from_what, sizeof rep->from_what, "the checkpoint file's, refused");
            return ES_OK;
        }
        pin_set(&anchors[n++], fc->position, fc->hash, "the checkpoint file's head");
    }
    if (o->incremental) {
        bool found = false;
        int64_t id = 0;
        es_checkpoint cp;
        es_result rc = es_logread_checkpoint_latest(reader, &found, &id, &cp, err);
        if (rc != ES_OK)
            return rc;
        if (found) {
            if (anchor_signature_problem(key, &cp, why, sizeof why)) {
                audit_bad(rep, NULL, NULL, cp.position,
                          "checkpoint %" PRId64 " (position %" PRId64
                          ", the newest in factord.verify_checkpoints) %s",
                          id, cp.position, why);
                snprintf(rep->from_what, sizeof rep->from_what, "checkpoint %" PRId64 ", refused", id);
                return ES_OK;
            }
            pin_set(&anchors[n++], cp.position, cp.hash, "checkpoint %" PRId64, id);
            rep->checkpoint_id = id;
            char at[40];
            dom_time_format(cp.verified_at_us, at, sizeof at);
            snprintf(rep->from_what, sizeof rep->from_what, "checkpoint %" PRId64 " (%s verify of %s)", id,
                     cp.full ? "a full" : "an incremental", at);
        }
    }
    if (!o->incremental || n == 0) {
        /* From the first event: every anchor is a pin on the way. */
        memcpy(cs->pins, anchors, n * sizeof anchors[0]);
        cs->n_pins = n;
    } else {
        size_t lo = 0;
        for (size_t i = 1; i < n; i++)
            if (anchors[i].position <= anchors[lo].position) /* ties: the database's, the last */
                lo = i;
        const verify_pin *first = &anchors[lo];
        *start = first->position;
        if (!rep->checkpoint_id || lo != n - 1) { /* the database's checkpoint is the last anchor */
            rep->checkpoint_id = 0;
            snprintf(rep->from_what, sizeof rep->from_what, "%s", first->what);
        }
        /* The event at the start must still be there with the anchor's hash. */
        bool found = false, chained = false;
        unsigned char hash[ES_CHAIN_HASH_LEN];
        es_result rc = es_logread_event_hash(reader, first->position, &found, &chained, hash, err);
        if (rc != ES_OK)
            return rc;
        if (!found || !chained) {
            audit_bad(rep, NULL, NULL, first->position,
                      "%s position %" PRId64 " holds no chained event%s", first->what, first->position,
                      found ? "" : ": events were removed");
            return ES_OK;
        }
        for (size_t i = 0; i < n; i++) {
            if (anchors[i].position == first->position) {
                if (memcmp(anchors[i].hash, hash, ES_CHAIN_HASH_LEN) != 0) {
                    audit_bad(rep, NULL, NULL, first->position,
                              "the event at %s has another hash: the log up to it was rewritten",
                              anchors[i].what);
                    return ES_OK;
                }
            } else {
                cs->pins[cs->n_pins++] = anchors[i];
            }
        }
        /* Continue the chain from there. */
        rep->incremental = true;
        rep->from_position = first->position;
        memcpy(cs->prev, hash, sizeof cs->prev);
        cs->chained_seen = true;
        cs->last_position = first->position;
        rep->head_position = first->position;
        memcpy(rep->head_hash, hash, sizeof rep->head_hash);
    }
    /* The pins in position order (at most three). */
    for (size_t i = 1; i < cs->n_pins; i++)
        for (size_t j = i; j > 0 && cs->pins[j].position < cs->pins[j - 1].position; j--) {
            verify_pin t = cs->pins[j];
            cs->pins[j] = cs->pins[j - 1];
            cs->pins[j - 1] = t;
        }
    return ES_OK;
}

/* --- verify ------------------------------------------------------------------------ */

es_result es_audit_verify(es_store *st, const es_chain_key *key, const es_verify_opts *opts,
                          es_verify_report *rep, es_error *err)
{
    static const es_verify_opts no_opts = {0};
    const es_verify_opts *o = opts ? opts : &no_opts;
    es_logread *reader = NULL;
    size_t page = o->page ? o->page : ES_AUDIT_PAGE;
    double started = es_audit_now();
    chain_state cs;
    es_log_counter counter;
    atomic_bool stop = false;
    users_job job = {.o = o, .page = page, .stop = &stop};
    pthread_t users_thread;
    bool threaded = false;

    memset(rep, 0, sizeof *rep);
    memset(&cs, 0, sizeof cs);
    rep->ok = true;
    es_result rc = es_logread_begin(st, &reader, err);
    if (rc != ES_OK)
        return rc;
    /* The snapshot is exported first, so that it is the one every read of
     * this run sees; when the server refuses, the passes run one after the
     * other on a fresh transaction. */
    if ((rc = es_logread_share(reader, &job.reader, err)) != ES_OK) {
        es_logread_end(reader);
        return rc;
    }
    if ((rc = es_logread_counter(reader, &counter, err)) != ES_OK)
        goto out;
    rep->chain_start = counter.chain_start;
    rep->pii_rewrites = counter.pii_rewrites;
    if (!counter.valid) {
        audit_bad(rep, NULL, NULL, 0, "factord.position_counter has no valid row 1");
        goto out;
    }
    cs.o = o;
    cs.rep = rep;
    if ((rc = verify_anchors(reader, key, o, rep, &cs, &job.after, err)) != ES_OK || !rep->ok)
        goto out;

    if (job.reader && pthread_create(&users_thread, NULL, users_job_main, &job) == 0)
        threaded = true;

    cs.hasher = es_chain_hasher_new(key);
    es_audit_ticker_start(&cs.ticker, o->progress, o->progress_arg, "chain");
    rc = es_logread_chain(reader, job.after, page, chain_row, chain_page_done, &cs, err);
    if (rc != ES_OK || !rep->ok)
        goto out;
    if (cs.next_pin < cs.n_pins) {
        const verify_pin *pin = &cs.pins[cs.next_pin];
        audit_bad(rep, NULL, NULL, pin->position,
                  "the log ends at position %" PRId64 ", before %s %" PRId64 ": events were removed from its end",
                  cs.last_position, pin->what, pin->position);
        goto out;
    }
    if (counter.head_position != rep->head_position ||
        memcmp(counter.head_hash, rep->head_hash, sizeof counter.head_hash) != 0) {
        if (counter.head_position > rep->head_position)
            audit_bad(rep, NULL, NULL, counter.head_position,
                      "the chain head (position %" PRId64 ") is not in the log, whose last chained "
                      "event is at %" PRId64 ": events were removed from its end",
                      counter.head_position, rep->head_position);
        else
            audit_bad(rep, NULL, NULL, rep->head_position,
                      "the log's last chained event (position %" PRId64 ") is not the chain head "
                      "the counter holds (position %" PRId64 ")",
                      rep->head_position, counter.head_position);
        goto out;
    }
    if (counter.value < cs.last_position) {
        audit_bad(rep, NULL, NULL, cs.last_position,
                  "an event's position is above the position counter (%" PRId64 ")", counter.value);
        goto out;
    }
    if (!threaded) {
        es_verify_report *users = &job.rep;
        memset(users, 0, sizeof *users);
        users->ok = true;
        job.rc = verify_users(reader, users, o, page, job.after, NULL, &job.err);
    }
out:
    if (rc != ES_OK || !rep->ok)
        atomic_store(&stop, true);
    if (threaded)
        pthread_join(users_thread, NULL);
    es_logread_end(job.reader);
    /* The chain's problems first: they are the more fundamental ones. */
    if (rc == ES_OK && rep->ok) { /* then the users pass ran, here or in its thread */
        rep->users = job.rep.users;
        rep->users_sealed = job.rep.users_sealed;
        if (job.rc != ES_OK) {
            rc = job.rc;
            if (err)
                *err = job.err;
        } else if (!job.rep.ok) {
            rep->ok = false;
            rep->bad_position = job.rep.bad_position;
            memcpy(rep->bad_instance, job.rep.bad_instance, sizeof rep->bad_instance);
            memcpy(rep->bad_user, job.rep.bad_user, sizeof rep->bad_user);
            memcpy(rep->problem, job.rep.problem, sizeof rep->problem);
        }
    }
    es_chain_hasher_free(cs.hasher);
    es_logread_end(reader);
    rep->seconds = es_audit_now() - started;
    return rc;
}

bool es_audit_parse_head(const char *s, int64_t *pos, unsigned char hash[ES_CHAIN_HASH_LEN])
{
    const char *colon = strchr(s, ':');
    char num[24];
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof num)
        return false;
    memcpy(num, s, (size_t)(colon - s));
    num[colon - s] = '\0';
    for (const char *c = num; *c; c++)
        if (!isdigit((unsigned char)*c))
            return false;
    return es_parse_i64(num, pos) && *pos > 0 && es_chain_unhex(colon + 1, hash, ES_CHAIN_HASH_LEN);
}

es_result es_audit_record_checkpoint(es_store *st, const es_chain_key *key, const es_verify_report *rep,
                                     int64_t now_us, es_checkpoint *cp, int64_t *id, es_error *err)
{
    *id = 0;
    memset(cp, 0, sizeof *cp);
    if (!rep->ok || rep->head_position < 1)
        return ES_OK;
    cp->position = rep->head_position;
    memcpy(cp->hash, rep->head_hash, sizeof cp->hash);
    cp->verified_at_us = now_us;
    cp->full = !rep->incremental;
    cp->from_position = rep->incremental ? rep->from_position : 0;
    cp->events = rep->events;
    if (!es_checkpoint_sign(key, cp))
        return es_error_set(err, ES_EINVAL, "verify: the checkpoint cannot be encoded");
    return es_logread_record_checkpoint(st, cp, id, err);
}
