/*
 * cmd/factord/relay.c - `factord relay`: publish what PostgreSQL committed.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/factord/cmd.h"
#include "infra/base/clock.h"
#include "infra/base/failpoint.h"
#include "infra/kafka/kafka.h"
#include "infra/base/log.h"
#include "infra/pg/store.h"

#define CHECKPOINT "relay"
/* Longest single wait for a notification: fd_stop is looked at in between
 * (under `factord run` the signal may interrupt another thread's poll). */
#define STOP_CHECK_MS 200

typedef struct {
    const es_config *cfg;
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
    int64_t backoff = 100;
    while (!fd_stop) {
        es_result rc = ES_OK;
        if (!r->st)
            rc = es_store_open(r->cfg->database_url, &r->st, err);
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
            if (rc == ES_OK) {
                PGresult *res = NULL;
                rc = es_store_exec(r->st, "relay session", "SET synchronous_commit = off", 0, NULL,
                                   PGRES_COMMAND_OK, &res, err);
                PQclear(res);
            }
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
            es_sleep_ms(1000);
            continue;
        }
        if (rc != ES_ETRANSIENT)
            return rc;
        es_warn("PostgreSQL is not reachable, retrying", "error", err->text, "retry_ms", es_log_i64(backoff));
        es_store_free(r->st);
        r->st = NULL;
        es_sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    return ES_ETRANSIENT;
}

/* Publish one page of rows; moves the checkpoint only when Kafka
 * acknowledged all of them. */
static es_result publish_page(relay *r, size_t *n_out, es_error *err)
{
    size_t n = 0;
    es_result rc = es_store_read_outbound(r->st, r->checkpoint, (size_t)r->cfg->relay_batch, r->rows, &n, err);
    *n_out = n;
    if (rc != ES_OK || n == 0)
        return rc;
    for (size_t i = 0; i < n && rc == ES_OK; i++) {
        const es_outbound *o = &r->rows[i];
        if (o->reply_to)
            rc = es_producer_send_header(r->prod, r->cfg->events_topic, o->key, o->key_len, o->value, o->value_len,
                                         ES_REPLY_TO_HEADER, o->reply_to, err);
        else
            rc = es_producer_send(r->prod, o->is_event ? r->cfg->events_topic : o->topic, o->key, o->key_len,
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

/* Nothing to publish: wait for a commit's notification, up to
 * FACTORD_RELAY_IDLE_MS, returning early on a notification or fd_stop. */
static es_result wait_for_commit(relay *r, es_error *err)
{
    int64_t end = es_clock_mono_ms() + r->cfg->relay_idle_ms;
    bool notified = false;
    es_result rc = ES_OK;
    while (rc == ES_OK && !notified && !fd_stop) {
        int64_t left = end - es_clock_mono_ms();
        if (left <= 0)
            break;
        rc = es_store_wait_notify(r->st, left < STOP_CHECK_MS ? (int)left : STOP_CHECK_MS, &notified, err);
    }
    return rc;
}

int fd_relay_main(int argc, char **argv)
{
    return fd_component_main(argc, argv, "relay", fd_relay_loop);
}

int fd_relay_loop(const es_config *cfgp)
{
    const es_config cfg = *cfgp; /* borrowed strings; never freed here */
    es_log_set_component("relay");
    int exit_code = 1;
    es_error err = {0};
    relay r = {.cfg = &cfg};
    const char *brokers = cfg.kafka_brokers;
    r.rows = calloc((size_t)cfg.relay_batch, sizeof *r.rows);
    if (!r.rows)
        abort();
    const char *topics[] = {cfg.events_topic, cfg.replies_topic, cfg.dlq_topic};
    while (!cfg.skip_topic_creation &&
           es_kafka_ensure_topics(brokers, topics, 3, (int)cfg.topic_partitions, 10000, &err) != ES_OK) {
        es_warn("cannot ensure topics, retrying", "error", err.text);
        es_sleep_ms(2000);
        if (fd_stop) {
            exit_code = 0;
            goto out;
        }
    }
    if (es_producer_new(brokers, "factord-relay", &r.prod, &err) != ES_OK) {
        es_err("cannot create the producer", "error", err.text);
        goto out;
    }
    es_result rc = acquire(&r, &err);
    if (rc != ES_OK) {
        if (fd_stop)
            exit_code = 0;
        else
            es_err("cannot start the relay", "error", err.text, "sqlstate", err.sqlstate);
        goto out;
    }
    es_info("relay active", "checkpoint", es_log_i64(r.checkpoint), "events_topic", cfg.events_topic);

    int64_t backoff = 100, last_report = es_clock_mono_ms();
    unsigned long long reported = 0;
    while (!fd_stop) {
        size_t n = 0;
        bool notified = false;
        /* Drain, then read: every notification drained stands for a commit
         * the read below sees (and none piles up in libpq while busy). */
        rc = es_store_wait_notify(r.st, 0, &notified, &err);
        if (rc == ES_OK)
            rc = publish_page(&r, &n, &err);
        if (rc == ES_OK && n == 0)
            rc = wait_for_commit(&r, &err);
        if (rc == ES_OK) {
            backoff = 100;
        } else if (rc == ES_EFATAL && strstr(err.text, "fatal")) {
            es_warn("producer fatal error; recreating it and publishing again from the checkpoint",
                    "error", err.text);
            if (es_producer_recreate(r.prod, &err) != ES_OK) {
                es_err("cannot recreate the producer", "error", err.text);
                goto out;
            }
        } else if (rc == ES_ETRANSIENT) {
            es_warn("publishing failed; retrying from the checkpoint", "error", err.text, "checkpoint",
                    es_log_i64(r.checkpoint), "retry_ms", es_log_i64(backoff));
            es_sleep_ms(backoff);
            backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
            if (PQstatus(es_store_conn(r.st)) != CONNECTION_OK) {
                /* The session lock went with the connection: take it again. */
                es_store_free(r.st);
                r.st = NULL;
                if (acquire(&r, &err) != ES_OK) {
                    if (fd_stop)
                        break;
                    es_err("relay stopping on an error", "error", err.text, "sqlstate", err.sqlstate);
                    goto out; /* exit 1, not a clean stop */
                }
            }
        } else {
            es_err("relay stopping on an error", "error", err.text, "sqlstate", err.sqlstate);
            goto out;
        }
        if (es_clock_mono_ms() - last_report >= 10000 && r.published != reported) {
            last_report = es_clock_mono_ms();
            reported = r.published;
            es_info("progress", "published", es_log_i64((long long)r.published), "checkpoint",
                    es_log_i64(r.checkpoint));
        }
    }
    es_info("relay stopping", "published", es_log_i64((long long)r.published), "checkpoint",
            es_log_i64(r.checkpoint));
    exit_code = 0;
out:
    es_producer_free(r.prod);
    es_store_free(r.st);
    free(r.rows);
    return exit_code;
}
