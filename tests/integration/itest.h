/*
 * tests/integration/itest.h - shared helpers of the integration tests.
 *
 * The tests run against a real PostgreSQL named by FACTORD_TEST_DATABASE_URL
 * (scripts/pg.sh env prints it); without it a test fails with a message
 * saying so. The database is never assumed empty: every test works under its
 * own random instance id ("t-<16 hex>"), so tests, reruns and concurrent
 * suites never see each other's users.
 *
 * Helpers that assert (itest_open, itest_exec, ...) must be called from the
 * test's own thread: Criterion's asserts cannot unwind another thread.
 * Worker threads return es_result values for the test thread to check.
 */
#ifndef FACTORD_TESTS_ITEST_H
#define FACTORD_TESTS_ITEST_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "domain/command.h"
#include "domain/event.h"
#include "domain/user.h"
#include "infra/pg/store.h"

/* The personal-data master key of the tests' stores and spawned components
 * (docs/pii.md): every store itest_open and h_store return seals and opens
 * personal data with it. */
#define ITEST_PII_KEY "5e1a2b3c4d5e6f708192a3b4c5d6e7f8112233445566778899aabbccddeeff00"
void itest_set_pii_key(es_store *st);

/* FACTORD_TEST_DATABASE_URL; fails the test when unset or empty. */
const char *itest_database_url(void);

/* A connected store with every migration applied (asserts). */
es_store *itest_open(void);
/* Same on another database url/conninfo, without migrating. */
es_store *itest_open_url(const char *url);

/* prefix + "-" + 16 random hex digits, e.g. itest_id(buf, sizeof buf, "t"). */
void itest_id(char *buf, size_t len, const char *prefix);
/* A fresh instance id for one test: "t-<16 hex>". */
void itest_instance(char buf[DOM_ID_MAX]);
/* A random lowercase canonical UUID. */
void itest_uuid(char out[DOM_UUID_LEN + 1]);
/* The wall clock in microseconds (whole milliseconds are not assumed). */
int64_t itest_now_us(void);

/* An active user (user name = user_id, sequence seq, times now). */
void itest_user(dom_user *u, const char *instance_id, const char *user_id, int64_t seq);
/* An event of user_id at seq; PHONE_CHANGED gets a phone, PHONE_CODE_ADDED a
 * code and expiry, HUMAN_ADDED a user name. */
void itest_event(dom_evt *e, const char *instance_id, const char *user_id, int64_t seq,
                 dom_evt_type type);
/* A command with a fresh id. */
void itest_cmd(dom_cmd *c, const char *instance_id, const char *user_id, dom_cmd_type type);

/* begin + es_store_write + commit; rolls back on failure. Does not assert:
 * safe from any thread. */
es_result itest_write(es_store *st, es_write *w, es_error *err);
/* A write of just these events (and no users, commands or outbox rows). */
es_result itest_write_events(es_store *st, dom_evt *evts, size_t n, es_error *err);

/* Run raw SQL with text parameters; asserts success unless the caller
 * wants the result (itest_sql returns it, caller PQclears). */
PGresult *itest_sql(es_store *st, const char *sql, int nparams, const char *const *params);
void itest_exec(es_store *st, const char *sql, int nparams, const char *const *params);

/* A scratch database (CREATE DATABASE, needs CREATEDB): its connection
 * string goes to conninfo. Skips the test when the role may not create
 * databases. itest_drop_database removes it. */
void itest_create_database(char *name, size_t name_len, char *conninfo, size_t conninfo_len);
void itest_drop_database(const char *name);

#endif
