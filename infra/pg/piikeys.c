/*
 * infra/pg/piikeys.c - the key store of sealed personal data (see piikeys.h).
 */
#include "infra/pg/piikeys.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/util.h"
#include "infra/crypto/chain.h"
#include "infra/pg/pgarr.h"

/* One user of a batch: its ids (borrowed from an event) and its key. */
typedef struct {
    const char *instance_id, *user_id;
    enum { SLOT_NONE, SLOT_KEY, SLOT_ERASED } state;
    es_pii_key key;
} slot;

static int slot_cmp(const void *a, const void *b)
{
    const slot *x = a, *y = b;
    int c = strcmp(x->instance_id, y->instance_id);
    return c ? c : strcmp(x->user_id, y->user_id);
}

static slot *slot_find(slot *slots, size_t n, const char *instance_id, const char *user_id)
{
    slot k = {.instance_id = instance_id, .user_id = user_id};
    return bsearch(&k, slots, n, sizeof *slots, slot_cmp);
}

/* The distinct users of the events that want(evt) into *out (malloc'd,
 * sorted); their count. */
static size_t slots_of(const dom_evt *evts, size_t n, bool (*want)(const dom_evt *), slot **out)
{
    slot *s = calloc(n ? n : 1, sizeof *s);
    if (!s)
        abort();
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (want(&evts[i])) {
            s[k].instance_id = evts[i].instance_id;
            s[k].user_id = evts[i].aggregate_id;
            k++;
        }
    qsort(s, k, sizeof *s, slot_cmp);
    size_t d = 0;
    for (size_t i = 0; i < k; i++)
        if (d == 0 || slot_cmp(&s[d - 1], &s[i]) != 0)
            s[d++] = s[i];
    *out = s;
    return d;
}

static void slots_free(slot *s, size_t n)
{
    for (size_t i = 0; s && i < n; i++)
        es_pii_key_wipe(&s[i].key);
    free(s);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A key row's wrapped key (hex, master id) unwrapped into *key. */
static es_result unwrap_row(const es_pii_master *m, const char *inst, const char *user, const char *hex,
                            const char *master_id, es_pii_key *key, es_error *err)
{
    if (strcmp(master_id, m->key_id) != 0)
        return es_error_set(err, ES_EFATAL,
                            "personal data: the key of user %.100s (instance %.100s) is wrapped "
                            "under master key %.16s, this process has %s (FACTORD_PII_KEY)",
                            user, inst, master_id, m->key_id);
    unsigned char wrapped[ES_PII_WRAPPED_LEN];
    if (strlen(hex) != 2 * ES_PII_WRAPPED_LEN)
        return es_error_set(err, ES_EFATAL, "personal data: malformed key row of user %.100s", user);
    for (size_t i = 0; i < ES_PII_WRAPPED_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return es_error_set(err, ES_EFATAL, "personal data: malformed key row of user %.100s", user);
        wrapped[i] = (unsigned char)(hi << 4 | lo);
    }
    es_error kerr = {0};
    if (es_pii_key_unwrap(m, inst, user, wrapped, sizeof wrapped, key, &kerr) != ES_OK)
        return es_error_set(err, ES_EFATAL, "personal data: user %.100s (instance %.100s): %s", user, inst,
                            kerr.text);
    return ES_OK;
}

/* Rows (instance_id, user_id, hex of wrapped or NULL, master_id) into the
 * slots: unwrapped keys, or SLOT_ERASED for tombstones. */
static es_result slots_fill(const PGresult *res, const es_pii_master *m, slot *slots, size_t n,
                            es_error *err)
{
    for (int r = 0; r < PQntuples(res); r++) {
        const char *inst = PQgetvalue(res, r, 0), *user = PQgetvalue(res, r, 1);
        slot *s = slot_find(slots, n, inst, user);
        if (!s)
            continue;
        if (PQgetisnull(res, r, 2)) {
            s->state = SLOT_ERASED;
            continue;
        }
        es_result rc = unwrap_row(m, inst, user, PQgetvalue(res, r, 2), PQgetvalue(res, r, 3), &s->key, err);
        if (rc != ES_OK)
            return rc;
        s->state = SLOT_KEY;
    }
    return ES_OK;
}

static bool wants_seal(const dom_evt *e)
{
    return dom_evt_type_has_pii(e->type) && e->pii[0] == '\0';
}

static bool is_sealed(const dom_evt *e)
{
    return e->pii[0] != '\0' && dom_evt_type_has_pii(e->type);
}

/* The key rows of a batch's users (the same statement es_piikeys_open uses). */
static const char open_sql[] =
    "SELECT k.instance_id, k.user_id, encode(k.wrapped, 'hex'), k.master_id"
    "  FROM unnest($1::text[], $2::text[]) AS w(instance_id, user_id)"
    "  JOIN factord.pii_keys k ON k.instance_id = w.instance_id AND k.user_id = w.user_id";

/* Insert the fresh keys of the users without a row; rows a concurrent
 * writer inserted first are skipped (and missing from RETURNING). */
static const char insert_sql[] =
    "INSERT INTO factord.pii_keys (instance_id, user_id, wrapped, master_id)"
    " SELECT instance_id, user_id, wrapped, $4"
    "   FROM unnest($1::text[], $2::text[], $3::bytea[]) AS w(instance_id, user_id, wrapped)"
    " ON CONFLICT (instance_id, user_id) DO NOTHING"
    " RETURNING instance_id, user_id, encode(wrapped, 'hex'), master_id";

/* One statement over the slots' users: their instance and user ids as two
 * binary text arrays ($1, $2). *res is the caller's to clear. */
static es_result exec_on_users(es_store *st, const char *what, const char *sql, const slot *slots, size_t ns,
                               PGresult **res, es_error *err)
{
    es_pga cols[2] = {0};
    es_result rc = ES_OK;
    es_pga_begin(&cols[0], ES_PG_TEXT);
    es_pga_begin(&cols[1], ES_PG_TEXT);
    for (size_t i = 0; i < ns && rc == ES_OK; i++)
        if (!es_pga_text(&cols[0], slots[i].instance_id, SIZE_MAX) ||
            !es_pga_text(&cols[1], slots[i].user_id, SIZE_MAX))
            rc = es_error_set(err, ES_EINVAL, "personal data: ids are not UTF-8");
    if (rc == ES_OK) {
        const char *values[2];
        int lengths[2], formats[2] = {1, 1};
        for (int i = 0; i < 2; i++)
            values[i] = es_pga_finish(&cols[i], &lengths[i]);
        rc = es_store_exec_bin(st, what, sql, 2, values, lengths, formats, PGRES_TUPLES_OK, res, err);
    }
    for (int i = 0; i < 2; i++)
        es_pga_free(&cols[i]);
    return rc;
}

/* The key rows of the slots' users into the slots: one statement. */
static es_result read_rows(es_store *st, const es_pii_master *m, slot *slots, size_t ns, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = exec_on_users(st, "read personal-data keys", open_sql, slots, ns, &res, err);
    if (rc == ES_OK)
        rc = slots_fill(res, m, slots, ns, err);
    PQclear(res);
    return rc;
}

/* A fresh key for every slot still without a row, inserted in one
 * statement; the rows come back unwrapped into the slots. */
static es_result insert_missing(es_store *st, const es_pii_master *m, slot *slots, size_t ns, es_error *err)
{
    es_pga cols[3] = {0};
    PGresult *res = NULL;
    es_result rc = ES_OK;
    size_t missing = 0;
    es_pga_begin(&cols[0], ES_PG_TEXT);
    es_pga_begin(&cols[1], ES_PG_TEXT);
    es_pga_begin(&cols[2], ES_PG_BYTEA);
    for (size_t i = 0; i < ns; i++) {
        if (slots[i].state != SLOT_NONE)
            continue;
        unsigned char wrapped[ES_PII_WRAPPED_LEN];
        es_pii_key fresh;
        if ((rc = es_pii_key_new(m, slots[i].instance_id, slots[i].user_id, &fresh, wrapped, err)) != ES_OK)
            goto out;
        es_pii_key_wipe(&fresh); /* the row comes back and is unwrapped like any other */
        if (!es_pga_text(&cols[0], slots[i].instance_id, SIZE_MAX) ||
            !es_pga_text(&cols[1], slots[i].user_id, SIZE_MAX)) {
            rc = es_error_set(err, ES_EINVAL, "personal data: ids are not UTF-8");
            goto out;
        }
        es_pga_bytes(&cols[2], wrapped, sizeof wrapped);
        missing++;
    }
    if (missing == 0)
        goto out;
    {
        const char *values[4];
        int lengths[4], formats[4] = {1, 1, 1, 0};
        for (int i = 0; i < 3; i++)
            values[i] = es_pga_finish(&cols[i], &lengths[i]);
        values[3] = m->key_id, lengths[3] = 0;
        rc = es_store_exec_bin(st, "create personal-data keys", insert_sql, 4, values, lengths, formats,
                               PGRES_TUPLES_OK, &res, err);
        if (rc != ES_OK)
            goto out;
    }
    rc = slots_fill(res, m, slots, ns, err);
out:
    PQclear(res);
    for (int i = 0; i < 3; i++)
        es_pga_free(&cols[i]);
    return rc;
}

es_result es_piikeys_seal(es_store *st, const es_pii_master *m, dom_evt *evts, size_t n, es_error *err)
{
    slot *slots = NULL;
    size_t ns = slots_of(evts, n, wants_seal, &slots);
    es_result rc = ES_OK;
    if (ns == 0)
        goto out;
    /* The users' rows, then keys for those without one: one statement for
     * a batch of known users, two when some are new. */
    if ((rc = read_rows(st, m, slots, ns, err)) != ES_OK || (rc = insert_missing(st, m, slots, ns, err)) != ES_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        dom_evt *e = &evts[i];
        if (!wants_seal(e))
            continue;
        slot *s = slot_find(slots, ns, e->instance_id, e->aggregate_id);
        es_pii_key throwaway;
        const es_pii_key *k = s ? &s->key : NULL;
        if (!s || s->state == SLOT_NONE) {
            /* A racing writer inserted the row between the two statements
             * (its insert conflicted on the primary key and was skipped): a
             * unique violation, decided again on fresh state. */
            rc = es_error_set(err, ES_ECONFLICT, "personal data: the key of user %.100s was created "
                              "by a concurrent writer", e->aggregate_id);
            if (err)
                snprintf(err->sqlstate, sizeof err->sqlstate, "23505");
            goto out;
        }
        if (s->state == SLOT_ERASED) {
            unsigned char w[ES_PII_WRAPPED_LEN];
            if ((rc = es_pii_key_new(m, e->instance_id, e->aggregate_id, &throwaway, w, err)) != ES_OK)
                goto out;
            k = &throwaway;
        }
        rc = es_pii_seal(k, e, err);
        if (k == &throwaway)
            es_pii_key_wipe(&throwaway);
        if (rc != ES_OK)
            goto out;
    }
out:
    slots_free(slots, ns);
    return rc;
}

es_result es_piikeys_open(es_store *st, const es_pii_master *m, dom_evt *evts, size_t n, es_error *err)
{
    slot *slots = NULL;
    size_t ns = slots_of(evts, n, is_sealed, &slots);
    es_result rc = ES_OK;
    if (ns == 0)
        goto out;
    if (!m) {
        rc = es_error_set(err, ES_EFATAL, "personal data: sealed events (user %.100s) but no master key "
                                          "(FACTORD_PII_KEY, docs/pii.md)", slots[0].user_id);
        goto out;
    }
    if ((rc = read_rows(st, m, slots, ns, err)) != ES_OK)
        goto out;
    for (size_t i = 0; i < n; i++) {
        dom_evt *e = &evts[i];
        if (!is_sealed(e))
            continue;
        slot *s = slot_find(slots, ns, e->instance_id, e->aggregate_id);
        if (!s || s->state == SLOT_NONE) {
            rc = es_error_set(err, ES_EFATAL, "personal data: event %" PRId64 " of user %.100s is sealed "
                              "but the user has no key row", e->position, e->aggregate_id);
            goto out;
        }
        if (s->state == SLOT_ERASED) {
            es_pii_mark_erased(e);
            continue;
        }
        es_error oerr = {0};
        if (es_pii_open(&s->key, e, &oerr) != ES_OK) {
            rc = es_error_set(err, ES_EFATAL, "personal data: event %" PRId64 " of user %.100s: %s",
                              e->position, e->aggregate_id, oerr.text);
            goto out;
        }
    }
out:
    slots_free(slots, ns);
    return rc;
}

es_result es_piikeys_open_row(const es_pii_master *m, dom_evt *e, bool has_row, const char *wrapped_hex,
                              const char *master_id, es_error *err)
{
    if (!is_sealed(e) || !m)
        return ES_OK;
    if (!has_row)
        return es_error_set(err, ES_EFATAL, "personal data: event %" PRId64 " of user %.100s is sealed "
                            "but the user has no key row", e->position, e->aggregate_id);
    if (!wrapped_hex) {
        es_pii_mark_erased(e);
        return ES_OK;
    }
    es_pii_key key;
    es_result rc = unwrap_row(m, e->instance_id, e->aggregate_id, wrapped_hex, master_id, &key, err);
    if (rc == ES_OK) {
        es_error oerr = {0};
        if (es_pii_open(&key, e, &oerr) != ES_OK)
            rc = es_error_set(err, ES_EFATAL, "personal data: event %" PRId64 " of user %.100s: %s",
                              e->position, e->aggregate_id, oerr.text);
    }
    es_pii_key_wipe(&key);
    return rc;
}

static bool is_removal(const dom_evt *e)
{
    return e->type == DOM_EVT_REMOVED;
}

static const char erase_sql[] =
    "WITH gone AS (SELECT * FROM unnest($1::text[], $2::text[]) AS g(instance_id, user_id)),"
    " keys AS (UPDATE factord.pii_keys k SET wrapped = NULL, erased_at = now() FROM gone g"
    "   WHERE k.instance_id = g.instance_id AND k.user_id = g.user_id AND k.wrapped IS NOT NULL RETURNING 1),"
    " deliveries AS (DELETE FROM factord.code_deliveries d USING gone g"
    "   WHERE d.instance_id = g.instance_id AND d.user_id = g.user_id RETURNING 1)"
    " SELECT (SELECT count(*) FROM keys), (SELECT count(*) FROM deliveries)";

es_result es_piikeys_erase(es_store *st, const dom_evt *evts, size_t n, size_t *erased, es_error *err)
{
    slot *slots = NULL;
    size_t ns = slots_of(evts, n, is_removal, &slots);
    PGresult *res = NULL;
    es_result rc = ES_OK;
    if (erased)
        *erased = 0;
    if (ns)
        rc = exec_on_users(st, "erase personal data", erase_sql, slots, ns, &res, err);
    if (rc == ES_OK && erased && res && PQntuples(res) == 1)
        *erased = (size_t)strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    slots_free(slots, ns);
    return rc;
}

/* --- sealing the events written before sealing ------------------------------- */

#define LEGACY_PAGE 1000

/* A text[] literal of the event types with PII fields into buf. */
static void pii_types_literal(char *buf, size_t cap)
{
    size_t n = 0;
    buf[n++] = '{';
    for (int t = DOM_EVT_UNKNOWN + 1; t < DOM_EVT__COUNT; t++) {
        if (!dom_evt_type_has_pii((dom_evt_type)t))
            continue;
        n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\"", n > 1 ? "," : "", dom_evt_type_name((dom_evt_type)t));
    }
    snprintf(buf + n, cap - n, "}");
}

/* One statement's first value as text into out (cap bytes); *null when NULL. */
static es_result legacy_value(es_store *st, const char *what, const char *sql, int np, const char *const *params,
                              char *out, size_t cap, bool *null, es_error *err)
{
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, what, sql, np, params, PGRES_TUPLES_OK, &res, err);
    if (rc == ES_OK) {
        *null = PQntuples(res) == 0 || PQgetisnull(res, 0, 0);
        snprintf(out, cap, "%s", *null ? "" : PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

static es_result legacy_exec(es_store *st, const char *what, const char *sql, int np, const char *const *params,
                             es_error *err)
{
    PGresult *res = NULL;
    es_result rc = es_store_exec(st, what, sql, np, params, PGRES_COMMAND_OK, &res, err);
    PQclear(res);
    return rc;
}

/* One page from position from on: seal, re-hash, update. *next: the position after the page (0: the end). */
static es_result legacy_page(es_store *st, es_chain_hasher *h, int64_t from, unsigned char prev[32],
                             es_pii_rewrite *rep, int64_t *next, es_error *err)
{
    char from_s[24], limit_s[24];
    snprintf(from_s, sizeof from_s, "%" PRId64, from);
    snprintf(limit_s, sizeof limit_s, "%d", LEGACY_PAGE);
    const char *params[] = {from_s, limit_s};
    PGresult *res = NULL;
    dom_evt *evts = NULL;
    bool *chained = NULL;
    es_pga cols[3] = {0};
    es_result rc = es_store_exec(st, "seal-legacy: read events",
                                 "SELECT " ES_STORE_EVENT_COLUMNS ", e.hash IS NOT NULL FROM factord.events e"
                                 " WHERE e.position >= $1::bigint ORDER BY e.position LIMIT $2::bigint",
                                 2, params, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto out;
    size_t n = (size_t)PQntuples(res);
    *next = 0;
    if (n == 0)
        goto out;
    evts = calloc(n, sizeof *evts);
    chained = calloc(n, sizeof *chained);
    if (!evts || !chained)
        abort();
    size_t sealed_before = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = es_store_row_event(res, (int)i, 0, &evts[i], err)) != ES_OK)
            goto out;
        chained[i] = PQgetvalue(res, (int)i, ES_STORE_EVENT_NCOLUMNS)[0] == 't';
        if (wants_seal(&evts[i]))
            sealed_before++;
    }
    const es_pii_master *m = es_store_pii_master(st);
    if ((rc = es_piikeys_seal(st, m, evts, n, err)) != ES_OK)
        goto out;
    rep->events_sealed += (int64_t)sealed_before;
    es_pga_begin(&cols[0], ES_PG_INT8);
    es_pga_begin(&cols[1], ES_PG_JSONB);
    es_pga_begin(&cols[2], ES_PG_BYTEA);
    for (size_t i = 0; i < n; i++) {
        json_t *p = dom_evt_payload_to_json(&evts[i]);
        char *text = json_dumps(p, JSON_COMPACT);
        json_decref(p);
        if (!text)
            abort();
        es_pga_i64(&cols[0], evts[i].position);
        es_pga_jsonb(&cols[1], text, strlen(text));
        free(text);
        if (chained[i]) {
            char *canon = es_chain_canonical(&evts[i]);
            if (!canon)
                abort();
            es_chain_hash(h, prev, canon, strlen(canon), prev);
            free(canon);
            es_pga_bytes(&cols[2], prev, 32);
            rep->events_rehashed++;
        } else {
            es_pga_null(&cols[2]);
        }
        rep->last_position = evts[i].position;
    }
    {
        const char *values[3];
        int lengths[3], formats[3] = {1, 1, 1};
        for (int i = 0; i < 3; i++)
            values[i] = es_pga_finish(&cols[i], &lengths[i]);
        PGresult *up = NULL;
        rc = es_store_exec_bin(st, "seal-legacy: rewrite events",
                               "UPDATE factord.events e SET payload = u.payload, hash = u.hash"
                               "  FROM unnest($1::bigint[], $2::jsonb[], $3::bytea[]) AS u(position, payload, hash)"
                               " WHERE e.position = u.position",
                               3, values, lengths, formats, PGRES_COMMAND_OK, &up, err);
        PQclear(up);
        if (rc != ES_OK)
            goto out;
    }
    if (n == LEGACY_PAGE)
        *next = evts[n - 1].position + 1;
out:
    PQclear(res);
    for (int i = 0; i < 3; i++)
        es_pga_free(&cols[i]);
    free(evts);
    free(chained);
    return rc;
}

es_result es_piikeys_seal_legacy(es_store *st, es_chain_hasher *h, const char *chain_key_id, const char *note,
                                 es_pii_rewrite *rep, es_error *err)
{
    char buf[128], types[512], first_s[24];
    bool null = false;
    unsigned char prev[32] = {0};
    memset(rep, 0, sizeof *rep);
    if (!es_store_pii_master(st))
        return es_error_set(err, ES_EINVAL, "seal-legacy: no personal-data master key (FACTORD_PII_KEY)");
    es_result rc = es_store_begin(st, err);
    if (rc != ES_OK)
        return rc;
    /* The counter's row: every writer waits for this transaction. */
    PGresult *res = NULL;
    rc = es_store_exec(st, "seal-legacy: lock the counter",
                       "SELECT head_position, encode(head_hash, 'hex') FROM factord.position_counter"
                       " WHERE id = 1 FOR UPDATE",
                       0, NULL, PGRES_TUPLES_OK, &res, err);
    if (rc != ES_OK)
        goto fail;
    if (PQntuples(res) != 1 || !es_parse_i64(PQgetvalue(res, 0, 0), &rep->head_position) ||
        (!PQgetisnull(res, 0, 1) && !es_chain_unhex(PQgetvalue(res, 0, 1), rep->old_head, 32))) {
        rc = es_error_set(err, ES_EFATAL, "seal-legacy: malformed factord.position_counter");
        goto fail;
    }
    PQclear(res);
    res = NULL;
    pii_types_literal(types, sizeof types);
    const char *tp[] = {types};
    if ((rc = legacy_value(st, "seal-legacy: first plain event",
                           "SELECT min(position) FROM factord.events"
                           " WHERE type = ANY ($1::text[]) AND NOT (payload ? 'pii')",
                           1, tp, first_s, sizeof first_s, &null, err)) != ES_OK)
        goto fail;
    if (null) {
        es_store_rollback(st);
        memcpy(rep->new_head, rep->old_head, sizeof rep->new_head);
        return ES_OK;
    }
    if (!es_parse_i64(first_s, &rep->first_position)) {
        rc = es_error_set(err, ES_EFATAL, "seal-legacy: malformed position");
        goto fail;
    }
    const char *fp[] = {first_s};
    if ((rc = legacy_value(st, "seal-legacy: the hash before",
                           "SELECT encode(hash, 'hex') FROM factord.events WHERE position < $1::bigint"
                           " AND hash IS NOT NULL ORDER BY position DESC LIMIT 1",
                           1, fp, buf, sizeof buf, &null, err)) != ES_OK)
        goto fail;
    if (!null && !es_chain_unhex(buf, prev, sizeof prev)) {
        rc = es_error_set(err, ES_EFATAL, "seal-legacy: malformed hash");
        goto fail;
    }
    if ((rc = legacy_exec(st, "seal-legacy: lift the append-only trigger",
                          "ALTER TABLE factord.events DISABLE TRIGGER events_no_update_delete", 0, NULL, err)) !=
        ES_OK)
        goto fail;
    for (int64_t from = rep->first_position; from;)
        if ((rc = legacy_page(st, h, from, prev, rep, &from, err)) != ES_OK)
            goto fail;
    if ((rc = legacy_exec(st, "seal-legacy: restore the append-only trigger",
                          "ALTER TABLE factord.events ENABLE ALWAYS TRIGGER events_no_update_delete", 0, NULL,
                          err)) != ES_OK)
        goto fail;
    memcpy(rep->new_head, rep->old_head, sizeof rep->new_head);
    if (rep->events_rehashed > 0 && rep->head_position > 0) {
        memcpy(rep->new_head, prev, sizeof rep->new_head);
        char hex[65];
        es_chain_hex(prev, 32, hex);
        const char *hp[] = {hex};
        if ((rc = legacy_exec(st, "seal-legacy: move the head",
                              "UPDATE factord.position_counter SET head_hash = decode($1, 'hex') WHERE id = 1", 1,
                              hp, err)) != ES_OK)
            goto fail;
    }
    {
        char last_s[24], head_s[24], sealed_s[24], rehashed_s[24], old_hex[65], new_hex[65];
        snprintf(last_s, sizeof last_s, "%" PRId64, rep->last_position);
        snprintf(head_s, sizeof head_s, "%" PRId64, rep->head_position);
        snprintf(sealed_s, sizeof sealed_s, "%" PRId64, rep->events_sealed);
        snprintf(rehashed_s, sizeof rehashed_s, "%" PRId64, rep->events_rehashed);
        es_chain_hex(rep->old_head, 32, old_hex);
        es_chain_hex(rep->new_head, 32, new_hex);
        const char *ap[] = {first_s, last_s, head_s, old_hex, new_hex, sealed_s, rehashed_s, chain_key_id,
                            note ? note : ""};
        if ((rc = legacy_exec(st, "seal-legacy: record the run",
                              "INSERT INTO factord.pii_rewrites (first_position, last_position, head_position,"
                              "  old_head_hash, new_head_hash, events_sealed, events_rehashed, chain_key_id, note)"
                              " VALUES ($1::bigint, $2::bigint, $3::bigint, decode($4, 'hex'), decode($5, 'hex'),"
                              "  $6::bigint, $7::bigint, $8, $9)",
                              9, ap, err)) != ES_OK)
            goto fail;
    }
    if ((rc = es_store_commit(st, err)) != ES_OK)
        goto fail;
    return ES_OK;
fail:
    PQclear(res);
    es_store_rollback(st);
    return rc;
}
