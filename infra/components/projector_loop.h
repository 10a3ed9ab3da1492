/*
 * infra/components/projector_loop.h - `factord project`'s loop: the events
 * topic in batches, applied to the read models (projector.h), the success
 * replies sent after each COMMIT, the offsets stored after Kafka
 * acknowledged every reply (docs/architecture.md, "The projector").
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_PROJECTOR_LOOP_H
#define FACTORD_INFRA_PROJECTOR_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "domain/errors.h"
#include "infra/base/backoff.h"
#include "infra/components/projector.h"
#include "infra/kafka/consumer.h"
#include "infra/kafka/kafka.h"
#include "infra/pg/store.h"

/* What the loop runs on; all borrowed for the whole run. */
typedef struct {
    es_store *st;            /* the main connection (reset while PostgreSQL is away) */
    es_projector *proj;      /* on st */
    es_store *st2;           /* a second connection for split batches; NULL: none */
    es_projector *proj2;     /* on st2 */
    es_consumer *consumer;   /* subscribed to the events topic */
    es_producer *producer;   /* the success replies */
    size_t batch_max;        /* records per batch */
    int64_t linger_ms;       /* a batch's wait after its first record */
    size_t split_min;        /* batches this long or longer are applied in two halves (st2); 0: never */
} es_projector_loop_opts;

typedef struct {
    unsigned long long applied, skipped, gaps, replies, undecodable;
} es_project_totals;

/* Run until stop is set: a reader thread fills one batch while this thread
 * applies the other (split over st and st2 when long enough), retrying a
 * batch with backoff while PostgreSQL is away; replies after the COMMIT,
 * offsets after the replies (one batch in flight). A progress line every
 * 10 s; *totals counts what was settled. ES_OK: stopped (what was not
 * settled is read again on restart). Otherwise the error that stopped it
 * (logged), with nothing half-done. */
es_result es_projector_loop(const es_projector_loop_opts *o, const es_stop_flag *stop, es_project_totals *totals,
                            es_error *err) ES_WUR;

#endif
