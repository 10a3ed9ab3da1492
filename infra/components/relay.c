/*
 * infra/components/relay.c - the outbox relay (see relay.h): publish what
 * PostgreSQL committed.
 *
 * Reads events and outbox rows (rejection replies, repeated replies, dead
 * letters) in global position order after its durable checkpoint, produces
 * them with the idempotent producer (events keyed by user id, so per-user
 * order holds), waits until Kafka has acknowledged every one, then moves the
 * checkpoint. A crash publishes the rows after the checkpoint again, with
 * identical content; consumers deduplicate events by (instance, user,
 * sequence). One relay is active at a time (an advisory lock); others wait
 * as standbys.
 *
 * With nothing to publish it sleeps until a writer commits: es_store_write
 * notifies ES_STORE_OUTBOUND_CHANNEL in its transaction and the active relay
 * LISTENs on its connection, so it wakes within a round trip of the COMMIT
 * instead of polling. FACTORD_RELAY_IDLE_MS bounds the sleep, a safety net
 * only: every wake-up, notified or not, reads a page.
 */
#include "infra/components/relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/base/log.h"
#include "infra/base/metrics.h"
#include "infra/pg/store.h"

#define CHECKPOINT "relay"
/* Longest single wait for a notification: the stop flag is looked at in
 * between (under `factord run` the signal may interrupt another thread's
 * poll). */
#define STOP_CHECK_MS 200

typedef struct {
    const es_relay_opts *o;
    const es_stop_flag *stop;
    es_store *st;
    es_producer *prod;
    es_outbound *rows;
    int64_t checkpoint;
    unsigned long long published;
} relay;

/* Open PostgreSQL and take the relay lock, waiting as a standby while
 * another relay holds it. The active relay listens for commits before it
 * reads anything, so no commit falls between its first read and the
 * LISTEN (a new connection listens on nothing: this runs after every
 * reconnect). */
static es_result acquire(relay *r, es_error *err)
{
    bool standby_logged = false;
    es_backoff backoff = ES_BACKOFF_DEFAULT;
    while (!es_stopping(r->stop)) {
        es_result rc = ES_OK;
        if (!r->st)
            rc = es_store_open(r->o->database_url, &r->st, err);
        bool got = false;
        if (rc == ES_OK)
            rc = es_store_try_lock(r->st, "factord.relay", &got, err);
        if (rc == ES_OK && got) {
            rc = es_store_listen(r->st, ES_STORE_OUTBOUND_CHANNEL, err);
            /* The checkpoint is only a resume point: a checkpoint lost in a
             * PostgreSQL crash re-publishes rows that consumers already
             * deduplicate (events by sequence, replies by command id), so
             * its commits need not wait for the WAL flush. This session
             * writes nothing else. */
            if (rc == ES_OK)
                rc = es_store_session_async_commit(r->st, err);
            if (rc == ES_OK)
                rc = es_store_checkpoint_get(r->st, CHECKPOINT, &r->checkpoint, err);
            /* PostgreSQL gone between the lock and the read: start over
             * (the lock went with the connection) instead of stopping. */
            if (rc != ES_ETRANSIENT)
                return rc;
        }
        if (rc == ES_OK) {
            if (!standby_logged)
                es_info("another relay is active; waiting as a standby");
            standby_logged = true;
            es_sleep_unless_stopped(1000, r->stop);
            continue;
        }
        if (rc != ES_ETRANSIENT)
            return rc;
        es_warn("PostgreSQL is not reachable, retrying", "error", err->text, "retry_ms",
                es_log_i64(backoff.next_ms));
        es_store_free(r->st);
        r->st = NULL;
        es_backoff_sleep(&backoff, r->stop);
    }
    return ES_ETRANSIENT;
}

/* Publish one page of rows; moves the checkpoint only when Kafka
 * acknowledged all of them. */
static es_result publish_page(relay *r, size_t *n_out, es_error *err)
{
    size_t n = 0;
    es_result rc = es_store_read_outbound(r->st, r->checkpoint, r->o->batch, r->rows, &n, err);
    *n_out = n;
    if (rc != ES_OK || n == 0)
        return rc;
    for (size_t i = 0; i < n && rc == ES_OK; i++) {
        const es_outbound *o = &r->rows[i];
        if (o->reply_to)
            rc = es_producer_send_header(r->prod, r->o->events_topic, o->key, o->key_len, o->value, o->value_len,
                                         ES_REPLY_TO_HEADER, o->reply_to, err);
        else
            rc = es_producer_send(r->prod, o->is_event ? r->o->events_topic : o->topic, o->key, o->key_len,
                                  o->value, o->value_len, o->headers_json, err);
    }
    es_failpoint("relay.after_produce");
    if (rc == ES_OK) {
        size_t failed = 0;
        rc = es_producer_flush(r->prod, 30000, &failed, err);
    }
    if (rc == ES_OK) {
        int64_t last = r->rows[n - 1].position;
        rc = es_store_checkpoint_set(r->st, CHECKPOINT, last, err);
        if (rc == ES_OK) {
            r->checkpoint = last;
            r->published += n;
        }
    }
    es_outbound_clear(r->rows, n);
    return rc;
}

/* The relay's figures for the metrics (docs/metrics.md); the lag query
 * runs at most once a second. A failed query leaves the gauges as they
 * were: the retry loop reports the failure. */
static void relay_metrics(relay *r, size_t n, int64_t *next_lag_ms)
{
    if (n)
        es_metric_add(es_metrics_counter("factord_relay_published_total",
                                         "Rows (events, replies, dead letters) the relay published to Kafka", ""),
                      n);
    es_metric_set(es_metrics_gauge("factord_relay_checkpoint_position",
                                   "Log position up to which everything is published", ""),
                  (double)r->checkpoint);
    int64_t now = es_clock_mono_ms();
    if (now < *next_lag_ms)
        return;
    *next_lag_ms = now + 1000;
    int64_t rows = 0;
    double age = 0;
    es_error err = {0};
    if (es_store_outbound_lag(r->st, r->checkpoint, &rows, &age, &err) != ES_OK)
        return;
    es_metric_set(es_metrics_gauge("factord_relay_lag_rows", "Committed rows not yet published (outbox lag)", ""),
                  (double)rows);
    es_metric_set(es_metrics_gauge("factord_relay_oldest_unpublished_age_seconds",
                                   "Age of the oldest committed row not yet published; 0 when none", ""),
                  age);
}

/* Nothing to publish: wait for a commit's notification, up to
 * FACTORD_RELAY_IDLE_MS, returning early on a notification or a stop. */
static es_result wait_for_commit(relay *r, es_error *err)
{
    int64_t end = es_clock_mono_ms() + r->o->idle_ms;
    bool notified = false;
    es_result rc = ES_OK;
    while (rc == ES_OK && !notified && !es_stopping(r->stop)) {
        int64_t left = end - es_clock_mono_ms();
        if (left <= 0)
            break;
        rc = es_store_wait_notify(r->st, left < STOP_CHECK_MS ? (int)left : STOP_CHECK_MS, &notified, err);
    }
    return rc;
}

es_result es_relay_run(const es_relay_opts *o, es_producer *prod, const es_stop_flag *stop, es_relay_stats *stats,
                       es_error *err)
{
    relay r = {.o = o, .stop = stop, .prod = prod};
    es_result out = ES_OK;
    r.rows = calloc(o->batch, sizeof *r.rows);
    if (!r.rows)
        abort();
    es_result rc = acquire(&r, err);
    if (rc != ES_OK) {
        if (!es_stopping(stop)) {
            es_err("cannot start the relay", "error", err->text, "sqlstate", err->sqlstate);
            out = rc;
        }
        goto out;
    }
    es_info("relay active", "checkpoint", es_log_i64(r.checkpoint), "events_topic", o->events_topic);

    es_backoff backoff = ES_BACKOFF_DEFAULT;
    int64_t last_report = es_clock_mono_ms(), next_lag_ms = 0;
    unsigned long long reported = 0;
    while (!es_stopping(stop)) {
        size_t n = 0;
        bool notified = false;
        /* Drain, then read: every notification drained stands for a commit
         * the read below sees (and none piles up in libpq while busy). */
        rc = es_store_wait_notify(r.st, 0, &notified, err);
        if (rc == ES_OK)
            rc = publish_page(&r, &n, err);
        if (rc == ES_OK)
            relay_metrics(&r, n, &next_lag_ms);
        if (rc == ES_OK && n == 0)
            rc = wait_for_commit(&r, err);
        if (rc == ES_OK) {
            es_backoff_reset(&backoff);
        } else if (rc == ES_EFATAL && strstr(err->text, "fatal")) {
            es_warn("producer fatal error; recreating it and publishing again from the checkpoint",
                    "error", err->text);
            if (es_producer_recreate(r.prod, err) != ES_OK) {
                es_err("cannot recreate the producer", "error", err->text);
                out = ES_EFATAL;
                goto out;
            }
        } else if (rc == ES_ETRANSIENT) {
            es_warn("publishing failed; retrying from the checkpoint", "error", err->text, "checkpoint",
                    es_log_i64(r.checkpoint), "retry_ms", es_log_i64(backoff.next_ms));
            es_backoff_sleep(&backoff, stop);
            if (!es_store_connected(r.st)) {
                /* The session lock went with the connection: take it again. */
                es_store_free(r.st);
                r.st = NULL;
                rc = acquire(&r, err);
                if (rc != ES_OK) {
                    if (es_stopping(stop))
                        break;
                    es_err("relay stopping on an error", "error", err->text, "sqlstate", err->sqlstate);
                    out = rc; /* not a clean stop */
                    goto out;
                }
            }
        } else {
            es_err("relay stopping on an error", "error", err->text, "sqlstate", err->sqlstate);
            out = rc;
            goto out;
        }
        if (es_clock_mono_ms() - last_report >= 10000 && r.published != reported) {
            last_report = es_clock_mono_ms();
            reported = r.published;
            es_info("progress", "published", es_log_i64((long long)r.published), "checkpoint",
                    es_log_i64(r.checkpoint));
        }
    }
out:
    stats->published = r.published;
    stats->checkpoint = r.checkpoint;
    es_store_free(r.st);
    free(r.rows);
    return out;
}
