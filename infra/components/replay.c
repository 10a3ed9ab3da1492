/*
 * infra/components/replay.c - `factord replay` (replay.h): the events a
 * filter matches, read by infra/pg/logread.h, written as their canonical
 * text (the events topic's members, sorted: infra/crypto/chain.h) with
 * "hash" added before the closing brace.
 */
#include "infra/components/replay.h"

#include <errno.h>
#include <jansson.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "infra/crypto/chain.h"
#include "infra/pg/logread.h"

typedef struct {
    FILE *out;
    int64_t *written;
    int64_t rows;          /* rows read */
    es_audit_ticker ticker;
    es_result rc;          /* a row's failure, which stopped the scan */
    es_error *err;
    bool open;             /* f->open */
} replay_state;

static bool replay_row(void *arg, const es_log_row *row)
{
    replay_state *rs = arg;
    if (row->decoded != ES_OK) {
        if (rs->err)
            *rs->err = row->decode_err;
        rs->rc = row->decoded;
        return false;
    }
    char *text = NULL;
    if (rs->open && (row->evt.pii_state == DOM_PII_OPEN || row->evt.pii_state == DOM_PII_ERASED)) {
        /* In clear: the fields, or the mark of their erasure (docs/pii.md). */
        dom_evt *e = malloc(sizeof *e);
        if (!e)
            abort();
        *e = row->evt;
        e->pii[0] = '\0';
        json_t *j = dom_evt_to_json(e);
        if (row->evt.pii_state == DOM_PII_ERASED)
            json_object_set_new(json_object_get(j, "payload"), "pii", json_string("erased"));
        text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        free(e);
    } else {
        text = es_chain_canonical(&row->evt);
    }
    if (!text) {
        rs->rc = es_error_set(rs->err, ES_EFATAL, "replay: the event at %" PRId64 " cannot be encoded",
                              row->evt.position);
        return false;
    }
    size_t n = strlen(text);
    bool chained = row->hash_hex != NULL;
    int w = fprintf(rs->out, "%.*s,\"hash\":%s%s%s}\n", (int)(n - 1), text, chained ? "\"" : "",
                    chained ? row->hash_hex : "null", chained ? "\"" : "");
    free(text);
    if (w < 0) {
        rs->rc = es_error_set(rs->err, ES_EFATAL, "replay: cannot write the output: %s", strerror(errno));
        return false;
    }
    (*rs->written)++;
    return true;
}

static bool replay_page_done(void *arg, size_t rows, int64_t last)
{
    replay_state *rs = arg;
    rs->rows += (int64_t)rows;
    es_audit_ticker_tick(&rs->ticker, rs->rows, last);
    return true;
}

es_result es_audit_replay(es_store *st, const es_replay_filter *f, FILE *out, int64_t *written,
                          es_error *err)
{
    replay_state rs = {.out = out, .written = written, .rc = ES_OK, .err = err, .open = f->open};
    es_audit_ticker_start(&rs.ticker, f->progress, f->progress_arg, "replay");
    *written = 0;

    if (f->n_types > ES_REPLAY_MAX_TYPES)
        return es_error_set(err, ES_EINVAL, "replay: too many types");
    es_log_filter lf = {.instance_id = f->instance_id,
                        .user_id = f->user_id,
                        .resource_owner = f->resource_owner,
                        .types = f->types,
                        .n_types = f->n_types,
                        .has_since = f->has_since,
                        .has_until = f->has_until,
                        .since_us = f->since_us,
                        .until_us = f->until_us,
                        .from_position = f->from_position,
                        .to_position = f->to_position};
    es_result rc = es_logread_replay(st, &lf, f->page ? f->page : ES_AUDIT_PAGE, replay_row,
                                     replay_page_done, &rs, err);
    if (rc == ES_OK)
        rc = rs.rc;
    if (rc == ES_OK && fflush(out) != 0)
        rc = es_error_set(err, ES_EFATAL, "replay: cannot write the output: %s", strerror(errno));
    return rc;
}
