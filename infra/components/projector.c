/*
 * infra/components/projector.c - apply a batch of events to the read models in one
 * transaction (see projector.h).
 *
 * One attempt:
 *   1. order the batch by (instance, user), keeping offset order within a
 *      user (the topic keeps each user's events in sequence order);
 *   2. lock the users' applied sequences (FOR UPDATE, in key order);
 *   3. walk each user's events: an event at or below the applied sequence
 *      is skipped, one above it is applied (a gap is applied and warned
 *      about: the log lost nothing, so a gap means this projector missed
 *      events, e.g. a group that started after the topic's retention);
 *   4. write: first rows of new users (plain INSERT: a racing projector on
 *      the same new user fails one of the two with 23505, decided again),
 *      then the sequences of known users, the deleted factor rows (of known
 *      users only: a new user has none), the put ones;
 *   5. the reply topics of the commands whose last event is in the batch
 *      (applied or skipped): given by the relay beside the event, else
 *      looked up in one query; then COMMIT.
 * The statements are infra/pg/projection_sql.c: every one names the
 * instance of each row it touches, and carries its rows as one binary array
 * per column, one round trip per table.
 */
#include "infra/base/util.h"
#include "infra/components/projector.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "domain/user.h"
#include "infra/base/clock.h"
#include "infra/base/jsonw.h"
#include "infra/base/log.h"
#include "infra/pg/projection_sql.h"
#include "projections/user_views.h"

typedef struct {
    const char *instance_id, *user_id; /* borrowed from the batch's events */
    int64_t applied;                   /* sequence applied before the batch */
    bool found;                        /* has a projected_sequences row */
    int64_t last;                      /* after the batch */
    size_t k0, k1;                     /* its events: order[k0..k1) */
} user_seq;


typedef struct {
    char id[DOM_UUID_LEN + 1];
    char *topic;
    int http_status;
    bool replied;      /* a reply of this batch is already queued */
} reply_topic;

struct es_projector {
    es_store *st;
    es_projector_opts o;
    /* buffers grown on demand and kept between batches */
    size_t *order; size_t order_cap;
    user_seq *users; size_t users_cap;
    proj_af_change *changes; size_t changes_cap;
    proj_af_net *nets; size_t nets_cap;
    es_view_user *vusers; size_t vusers_cap;
    es_view_writer *views;
    reply_topic *topics; size_t topics_cap;
    size_t n_topics;
    es_reply *replies; size_t replies_cap;
    size_t n_replies;
    es_projsql *q;         /* the statements' rows (projection_sql.h), kept between batches */
};

#define GROW ES_GROW

static void clear_replies(es_projector *p)
{
    for (size_t i = 0; i < p->n_replies; i++) {
        /* a returnCode reply holds a phone code */
        explicit_bzero((char *)p->replies[i].value, p->replies[i].value_len);
        free((char *)p->replies[i].value);
    }
    p->n_replies = 0;
    for (size_t i = 0; i < p->n_topics; i++)
        free(p->topics[i].topic);
    p->n_topics = 0;
}

es_projector *es_projector_new(es_store *st, const es_projector_opts *opts)
{
    es_projector *p = calloc(1, sizeof *p);
    if (!p)
        abort();
    p->st = st;
    p->o = *opts;
    p->q = es_projsql_new(PROJ_AUTH_FACTORS);
    p->views = es_view_writer_new();
    if (p->o.max_conflict_retries <= 0)
        p->o.max_conflict_retries = 20;
    return p;
}

void es_projector_free(es_projector *p)
{
    if (!p)
        return;
    clear_replies(p);
    free(p->order);
    free(p->users);
    free(p->changes);
    free(p->nets);
    free(p->vusers);
    es_view_writer_free(p->views);
    free(p->topics);
    free(p->replies);
    es_projsql_free(p->q);
    free(p);
}

/* --- helpers --------------------------------------------------------------- */

/* qsort has no context argument; the projector is used by one thread. */
static _Thread_local const dom_evt *sort_evts;

static int order_cmp(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    const dom_evt *ex = &sort_evts[x], *ey = &sort_evts[y];
    int c = strcmp(ex->instance_id, ey->instance_id);
    if (!c)
        c = strcmp(ex->aggregate_id, ey->aggregate_id);
    return c ? c : (x > y) - (x < y);
}

static int user_cmp(const void *a, const void *b)
{
    const user_seq *x = a, *y = b;
    int c = strcmp(x->instance_id, y->instance_id);
    return c ? c : strcmp(x->user_id, y->user_id);
}

static int topic_cmp(const void *a, const void *b)
{
    return strcmp(((const reply_topic *)a)->id, ((const reply_topic *)b)->id);
}

static bool is_uuid(const char *s)
{
    for (int i = 0; i < DOM_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false; /* the store writes ids lowercase */
        }
    }
    return s[DOM_UUID_LEN] == '\0';
}

static char *dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        abort();
    return s;
}

/* --- replies ----------------------------------------------------------------- */

char *es_success_reply(const dom_evt *last, const char *code)
{
    /* {"commandId":...,"httpStatus":200,"body":<the body's text>}: the
     * body is the text the processor stored as the outcome (jansson,
     * compact), so the reply is the stored outcome byte for byte, as the
     * processor's own replies are. */
    es_jw w = {0};
    es_jw_raw(&w, "{\"commandId\":", 13);
    if (!es_jw_str(&w, last->command_id, sizeof last->command_id))
        es_jw_raw(&w, "\"\"", 2); /* not UTF-8: never from a decoded event */
    es_jw_raw(&w, ",\"httpStatus\":200,\"body\":", 25);
    if (!code) {
        /* The common reply, written straight: dom_success_body's members in
         * its order, as jansson prints them compact (test_jsonw compares the
         * two), without a jansson tree per reply. */
        char seq[24], date[40];
        size_t mark = w.len;
        snprintf(seq, sizeof seq, "%" PRId64, last->sequence);
        dom_time_format(last->created_at_us, date, sizeof date);
#define LIT(text) (text), sizeof(text) - 1
        es_jw_raw(&w, LIT("{\"details\":{\"sequence\":"));
        es_jw_str(&w, seq, sizeof seq);
        es_jw_raw(&w, LIT(",\"creationDate\":"));
        es_jw_str(&w, date, sizeof date);
        es_jw_raw(&w, LIT(",\"changeDate\":"));
        es_jw_str(&w, date, sizeof date);
        es_jw_raw(&w, LIT(",\"resourceOwner\":"));
        if (es_jw_str(&w, last->resource_owner, sizeof last->resource_owner)) {
            es_jw_raw(&w, LIT("}}}"));
            return w.p;
        }
#undef LIT
        w.len = mark; /* not UTF-8: jansson decides (as the processor did) */
        w.p[w.len] = '\0';
    }
    json_t *b = dom_success_body(last, code);
    char *body_text = dump(b);
    json_decref(b);
    es_jw_raw(&w, body_text, strlen(body_text));
    es_jw_c(&w, '}');
    if (code)
        explicit_bzero(body_text, strlen(body_text));
    free(body_text);
    return w.p;
}

static reply_topic *find_topic(es_projector *p, const char *id)
{
    if (!p->n_topics)
        return NULL; /* p->topics may be NULL: no bsearch on it */
    reply_topic key;
    snprintf(key.id, sizeof key.id, "%s", id);
    return bsearch(&key, p->topics, p->n_topics, sizeof *p->topics, topic_cmp);
}

/* The reply topic the relay put beside event i, or NULL. */
static const char *given_topic(const char *const *reply_to, size_t i)
{
    return reply_to && reply_to[i] && reply_to[i][0] ? reply_to[i] : NULL;
}

static void add_topic(es_projector *p, const char *id, const char *topic, int http_status)
{
    GROW(p, topics, p->n_topics + 1);
    reply_topic *t = &p->topics[p->n_topics++];
    snprintf(t->id, sizeof t->id, "%s", id);
    t->topic = strdup(topic);
    if (!t->topic)
        abort();
    t->http_status = http_status;
    t->replied = false;
}

static void found_topic(void *arg, const char *command_id, const char *reply_to, int http_status)
{
    add_topic(arg, command_id, reply_to, http_status);
}

/* The reply topics of the batch's completed commands: the one the relay
 * published beside the event (it read it from the accepted command's row),
 * else looked up in factord.commands, in one query for the whole batch.
 * Then build their replies in event order. */
static es_result prepare_replies(es_projector *p, const dom_evt *evts, const char *const *reply_to,
                                 const size_t *idx, size_t n, es_error *err)
{
    es_projsql_begin(p->q, ES_PROJSQL_REPLY_TOPICS);
    for (size_t k = 0; k < n; k++) {
        size_t i = idx ? idx[k] : k;
        const dom_evt *e = &evts[i];
        if (!e->last_of_command)
            continue;
        if (!is_uuid(e->command_id)) {
            es_warn("last event of a command without a usable command id; no reply", "instance",
                    e->instance_id, "user", e->aggregate_id, "sequence", es_log_i64(e->sequence));
            continue;
        }
        if (given_topic(reply_to, i)) {
            add_topic(p, e->command_id, reply_to[i], 200);
            continue;
        }
        (void)es_projsql_add_command(p->q, e->command_id, e->instance_id); /* is_uuid above */
    }
    es_result rc = es_projsql_reply_topics(p->q, p->st, found_topic, p, err);
    if (rc != ES_OK)
        return rc;
    if (p->n_topics > 1)
        qsort(p->topics, p->n_topics, sizeof *p->topics, topic_cmp);

    GROW(p, replies, n);
    for (size_t k = 0; k < n; k++) {
        size_t i = idx ? idx[k] : k;
        const dom_evt *e = &evts[i];
        if (!e->last_of_command || !is_uuid(e->command_id))
            continue;
        reply_topic *t = find_topic(p, e->command_id);
        if (!t || t->http_status != 200) {
            es_warn("no accepted command for the last event of a command; no reply", "command_id",
                    e->command_id, "instance", e->instance_id, "user", e->aggregate_id);
            continue;
        }
        /* One reply per command and batch, even when the event came twice. */
        if (t->replied)
            continue;
        t->replied = true;
        char code[DOM_CODE_MAX * 2] = "";
        if (dom_evt_is_code(e->type) && e->code_returned) {
            es_error derr = {0};
            if (!p->o.code_key || es_code_decrypt(p->o.code_key, e->instance_id, e->aggregate_id, e->code_enc,
                                                  code, sizeof code, &derr) != ES_OK) {
                /* The caller can ask for a new code; the projector must not
                 * stall every read model over one. */
                es_err("cannot decrypt the code of a returnCode reply; replying without it", "command_id",
                       e->command_id, "instance", e->instance_id, "user", e->aggregate_id, "reason",
                       p->o.code_key ? derr.text : "no code key");
                code[0] = '\0';
            }
        }
        char *value = es_success_reply(e, code[0] ? code : NULL);
        explicit_bzero(code, sizeof code);
        es_reply *rp = &p->replies[p->n_replies++];
        rp->topic = t->topic;
        rp->key = e->command_id; /* borrowed from the caller's batch */
        rp->key_len = strlen(e->command_id);
        rp->value = value;
        rp->value_len = strlen(value);
    }
    return ES_OK;
}

/* --- one attempt ------------------------------------------------------------- */

es_projsql_factor es_projector_factor_row(const proj_auth_factor *f)
{
    return (es_projsql_factor){.instance_id = f->instance_id,
                               .user_id = f->user_id,
                               .type = proj_af_type_name(f->type),
                               .state = proj_af_state_name(f->state),
                               .resource_owner = f->resource_owner,
                               .sequence = f->sequence,
                               .created_at_us = f->created_at_us,
                               .changed_at_us = f->changed_at_us};
}

typedef struct {
    user_seq *users;
    size_t n_users;
} loaded_seqs;

/* A locked applied sequence: onto its user of the batch. */
static es_result found_seq(void *arg, const char *instance_id, const char *user_id, int64_t sequence,
                           es_error *err)
{
    loaded_seqs *l = arg;
    user_seq key = {.instance_id = instance_id, .user_id = user_id};
    user_seq *u = bsearch(&key, l->users, l->n_users, sizeof *l->users, user_cmp);
    if (!u)
        return es_error_set(err, ES_EFATAL, "load sequences: a row the batch did not ask for");
    u->found = true;
    u->applied = sequence;
    return ES_OK;
}

/* --- the user read model ------------------------------------------------------ */

/* A user whose events touch the user read model, in user order. */
typedef struct {
    size_t user;                       /* index into the caller's users */
    bool exists;                       /* the row, before and after the fold */
    bool changed;
    proj_user_view v;
} view_slot;

struct es_view_writer {
    view_slot *slots; size_t slots_cap;
};

es_view_writer *es_view_writer_new(void)
{
    es_view_writer *w = calloc(1, sizeof *w);
    if (!w)
        abort();
    return w;
}

void es_view_writer_free(es_view_writer *w)
{
    if (!w)
        return;
    free(w->slots);
    free(w);
}

typedef struct {
    view_slot *slots;
    size_t n;
} loaded_views;

static int view_slot_cmp(const void *a, const void *b)
{
    const view_slot *x = a, *y = b;
    int c = strcmp(x->v.instance_id, y->v.instance_id);
    return c ? c : strcmp(x->v.user_id, y->v.user_id);
}

/* A stored user view: into its slot. */
static es_result found_view(void *arg, const es_projsql_view *row, es_error *err)
{
    loaded_views *l = arg;
    view_slot key;
    snprintf(key.v.instance_id, sizeof key.v.instance_id, "%s", row->instance_id);
    snprintf(key.v.user_id, sizeof key.v.user_id, "%s", row->user_id);
    view_slot *s = bsearch(&key, l->slots, l->n, sizeof *l->slots, view_slot_cmp);
    if (!s)
        return es_error_set(err, ES_EFATAL, "load user views: a row the batch did not ask for");
    proj_user_view *v = &s->v;
    snprintf(v->resource_owner, sizeof v->resource_owner, "%s", row->resource_owner);
    snprintf(v->state, sizeof v->state, "%s", row->state);
    v->human = *row->human;
    v->sequence = row->sequence;
    v->created_at_us = row->created_at_us;
    v->changed_at_us = row->changed_at_us;
    s->exists = true;
    return ES_OK;
}

/* Users whose events do not touch the view (the factor and code events)
 * cost nothing here. */
es_result es_view_writer_write(es_view_writer *w, es_projsql *q, es_store *st, const dom_evt *evts,
                               const size_t *order, const es_view_user *users, size_t n_users, es_error *err)
{
    size_t n_slots = 0, n_load = 0;
    for (size_t u = 0; u < n_users; u++) {
        const es_view_user *vu = &users[u];
        for (size_t k = vu->k0; k < vu->k1; k++) {
            const dom_evt *e = &evts[order[k]];
            if (e->sequence <= vu->applied || !proj_user_view_touches(e->type))
                continue;
            GROW(w, slots, n_slots + 1);
            view_slot *s = &w->slots[n_slots++];
            memset(s, 0, sizeof *s);
            s->user = u;
            snprintf(s->v.instance_id, sizeof s->v.instance_id, "%s", vu->instance_id);
            snprintf(s->v.user_id, sizeof s->v.user_id, "%s", vu->user_id);
            if (proj_user_view_needs_row(e->type)) {
                if (!n_load++)
                    es_projsql_begin(q, ES_PROJSQL_LOAD_VIEWS);
                es_projsql_add_key(q, vu->instance_id, vu->user_id);
            }
            break;
        }
    }
    if (n_load) {
        loaded_views l = {.slots = w->slots, .n = n_slots};
        es_result rc = es_projsql_load_views(q, st, found_view, &l, err);
        if (rc != ES_OK)
            return rc;
    }
    for (size_t i = 0; i < n_slots; i++) {
        view_slot *s = &w->slots[i];
        const es_view_user *vu = &users[s->user];
        for (size_t k = vu->k0; k < vu->k1; k++) {
            const dom_evt *e = &evts[order[k]];
            if (e->sequence > vu->applied)
                s->changed |= proj_user_view_apply(&s->v, &s->exists, e);
        }
    }
    for (int put = 0; put <= 1; put++) {
        es_projsql_begin(q, put ? ES_PROJSQL_PUT_VIEWS : ES_PROJSQL_DELETE_VIEWS);
        for (size_t i = 0; i < n_slots; i++) {
            const view_slot *s = &w->slots[i];
            if (!s->changed || s->exists != (bool)put)
                continue;
            if (put) {
                es_projsql_view row = {.instance_id = s->v.instance_id,
                                       .user_id = s->v.user_id,
                                       .resource_owner = s->v.resource_owner,
                                       .state = s->v.state,
                                       .human = &s->v.human,
                                       .sequence = s->v.sequence,
                                       .created_at_us = s->v.created_at_us,
                                       .changed_at_us = s->v.changed_at_us};
                es_projsql_add_view(q, &row);
            } else
                es_projsql_add_key(q, s->v.instance_id, s->v.user_id);
        }
        es_result rc = es_projsql_write(q, st, err);
        if (rc != ES_OK)
            return rc;
    }
    return ES_OK;
}

/* --- one attempt, continued --------------------------------------------------- */

static es_result attempt(es_projector *p, const dom_evt *evts, const char *const *reply_to, const size_t *idx,
                         size_t n, es_project_stats *stats, es_error *err)
{
    es_result rc;
    size_t n_users = 0, n_changes = 0;
    memset(stats, 0, sizeof *stats);
    clear_replies(p);

    /* 1. Users in key order, each user's events in offset order. */
    GROW(p, order, n);
    for (size_t i = 0; i < n; i++)
        p->order[i] = idx ? idx[i] : i;
    sort_evts = evts;
    qsort(p->order, n, sizeof *p->order, order_cmp);
    GROW(p, users, n);
    for (size_t k = 0; k < n; k++) {
        const dom_evt *e = &evts[p->order[k]];
        if (n_users && strcmp(p->users[n_users - 1].instance_id, e->instance_id) == 0 &&
            strcmp(p->users[n_users - 1].user_id, e->aggregate_id) == 0)
            continue;
        p->users[n_users++] = (user_seq){.instance_id = e->instance_id, .user_id = e->aggregate_id};
    }

    rc = es_store_begin(p->st, err);
    if (rc != ES_OK)
        return rc;

    /* 2. The applied sequences, locked. */
    es_projsql_begin(p->q, ES_PROJSQL_LOAD_SEQUENCES);
    for (size_t u = 0; u < n_users; u++)
        es_projsql_add_key(p->q, p->users[u].instance_id, p->users[u].user_id);
    loaded_seqs loaded = {.users = p->users, .n_users = n_users};
    rc = es_projsql_load_sequences(p->q, p->st, found_seq, &loaded, err);
    if (rc != ES_OK)
        goto fail;

    /* 3. Apply or skip, user by user. */
    GROW(p, changes, n * PROJ_AF_MAX_CHANGES);
    size_t k = 0;
    for (size_t u = 0; u < n_users; u++) {
        user_seq *us = &p->users[u];
        us->last = us->applied;
        us->k0 = k;
        for (; k < n; k++) {
            const dom_evt *e = &evts[p->order[k]];
            if (strcmp(e->instance_id, us->instance_id) != 0 || strcmp(e->aggregate_id, us->user_id) != 0)
                break;
            if (e->sequence <= us->last) {
                stats->skipped++;
                continue;
            }
            if (e->sequence != us->last + 1) {
                stats->gaps++;
                es_warn("gap in a user's events: applying after missing sequences", "instance", e->instance_id,
                        "user", e->aggregate_id, "applied", es_log_i64(us->last), "sequence",
                        es_log_i64(e->sequence));
            }
            n_changes += proj_auth_factors_reduce(e, &p->changes[n_changes]);
            us->last = e->sequence;
            stats->applied++;
        }
        us->k1 = k;
    }

    /* 4. Write: new users' sequences first (a racing projector fails here),
     * then the others, then the read-model rows. */
    for (int found = 0; found <= 1 && rc == ES_OK; found++) {
        es_projsql_begin(p->q, found ? ES_PROJSQL_UPDATE_SEQUENCES : ES_PROJSQL_INSERT_SEQUENCES);
        for (size_t u = 0; u < n_users; u++) {
            const user_seq *us = &p->users[u];
            if (us->last == us->applied || us->found != (bool)found)
                continue;
            es_projsql_add_seq(p->q, us->instance_id, us->user_id, us->last);
        }
        rc = es_projsql_write(p->q, p->st, err);
    }
    if (rc != ES_OK)
        goto fail;

    GROW(p, nets, n_changes);
    size_t n_nets = proj_af_fold(p->changes, n_changes, p->nets);
    es_projsql_begin(p->q, ES_PROJSQL_DELETE_FACTORS);
    for (size_t i = 0; i < n_nets; i++) {
        const proj_af_net *net = &p->nets[i];
        const proj_auth_factor *f = &net->row;
        /* A user without an applied-sequence row has no read-model rows
         * either (both are written in the same transactions): nothing to
         * delete. Saves a statement's work per new user in a catch-up. */
        user_seq key = {.instance_id = f->instance_id, .user_id = f->user_id};
        const user_seq *owner = bsearch(&key, p->users, n_users, sizeof *p->users, user_cmp);
        if (net->del && (!owner || owner->found))
            es_projsql_add_factor_key(p->q, f->instance_id, f->user_id, proj_af_type_name(f->type));
    }
    rc = es_projsql_write(p->q, p->st, err);
    if (rc != ES_OK)
        goto fail;
    es_projsql_begin(p->q, ES_PROJSQL_PUT_FACTORS);
    for (size_t i = 0; i < n_nets; i++) {
        const proj_af_net *net = &p->nets[i];
        const proj_auth_factor *f = &net->row;
        if (!net->put)
            continue;
        es_projsql_factor row = es_projector_factor_row(f);
        es_projsql_add_factor(p->q, &row);
    }
    rc = es_projsql_write(p->q, p->st, err);
    if (rc != ES_OK)
        goto fail;

    GROW(p, vusers, n_users);
    for (size_t u = 0; u < n_users; u++) {
        const user_seq *us = &p->users[u];
        p->vusers[u] = (es_view_user){.instance_id = us->instance_id, .user_id = us->user_id,
                                      .applied = us->applied, .k0 = us->k0, .k1 = us->k1};
    }
    rc = es_view_writer_write(p->views, p->q, p->st, evts, p->order, p->vusers, n_users, err);
    if (rc != ES_OK)
        goto fail;

    /* 5. Replies due (applied or skipped), then COMMIT. */
    rc = prepare_replies(p, evts, reply_to, idx, n, err);
    if (rc != ES_OK)
        goto fail;
    rc = es_store_commit(p->st, err);
    if (rc != ES_OK) {
        clear_replies(p);
        return rc;
    }
    stats->replies = p->n_replies;
    return ES_OK;
fail:
    es_store_rollback(p->st);
    clear_replies(p);
    return rc;
}

es_result es_projector_run_batch(es_projector *p, const dom_evt *evts, const char *const *reply_to, size_t n,
                                 const es_reply **replies, size_t *n_replies, es_project_stats *stats,
                                 es_error *err)
{
    return es_projector_run_subset(p, evts, reply_to, NULL, n, replies, n_replies, stats, err);
}

es_result es_projector_run_subset(es_projector *p, const dom_evt *evts, const char *const *reply_to,
                                  const size_t *idx, size_t n, const es_reply **replies, size_t *n_replies,
                                  es_project_stats *stats, es_error *err)
{
    *replies = NULL;
    *n_replies = 0;
    if (n == 0) {
        memset(stats, 0, sizeof *stats);
        clear_replies(p);
        return ES_OK;
    }
    for (int tries = 1;; tries++) {
        es_result rc = attempt(p, evts, reply_to, idx, n, stats, err);
        stats->attempts = (size_t)tries;
        if (rc == ES_OK) {
            *replies = p->replies;
            *n_replies = p->n_replies;
            return ES_OK;
        }
        if (rc != ES_ECONFLICT)
            return rc;
        if (tries >= p->o.max_conflict_retries)
            return es_error_set(err, ES_ETRANSIENT, "batch still conflicting after %d attempts: %s", tries,
                                err ? err->text : "");
        es_debug("concurrency conflict, applying the batch again", "attempt", es_log_i64(tries), "sqlstate",
                 err ? err->sqlstate : "");
        es_sleep_ms(tries < 5 ? tries : 5 * tries);
    }
}

/* --- reading ------------------------------------------------------------------ */

static bool copy_col(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return false;
    memcpy(dst, src, n + 1);
    return true;
}

typedef struct {
    proj_auth_factor *out;
    size_t *n;
} listed_factors;

/* A listed row into the caller's next proj_auth_factor. */
static es_result listed_factor(void *arg, const es_projsql_factor *row, es_error *err)
{
    listed_factors *l = arg;
    proj_auth_factor *f = &l->out[*l->n];
    memset(f, 0, sizeof *f);
    int type = proj_af_type_parse(row->type);
    int state = proj_af_state_parse(row->state);
    if (type < 0 || state < 0 || !copy_col(f->instance_id, sizeof f->instance_id, row->instance_id) ||
        !copy_col(f->user_id, sizeof f->user_id, row->user_id) ||
        !copy_col(f->resource_owner, sizeof f->resource_owner, row->resource_owner))
        return es_error_set(err, ES_EFATAL, "list auth factors: malformed row");
    f->type = (proj_af_type)type;
    f->state = (proj_af_state)state;
    f->sequence = row->sequence;
    f->created_at_us = row->created_at_us;
    f->changed_at_us = row->changed_at_us;
    (*l->n)++;
    return ES_OK;
}

es_result es_auth_factors_list(es_store *st, const char *instance_id, const char *user_id, proj_auth_factor *out,
                               size_t max, size_t *n, es_error *err)
{
    *n = 0;
    listed_factors l = {.out = out, .n = n};
    return es_projsql_list_factors(st, instance_id, user_id, max, listed_factor, &l, err);
}
