/*
 * tests/integration/sms_fake.h - a stand-in SMS provider for tests: an HTTP
 * server on 127.0.0.1 (an ephemeral port, over infra/http) that records
 * every request and answers from a script.
 *
 * The script is a queue of answers (status, body, optional Retry-After),
 * each given for a number of requests; when it is empty the default answer
 * applies: 201 with a Twilio-shaped message {"sid":"SM<n>",...} (n counts
 * requests from 1), or what sms_fake_set_default says. Everything is
 * guarded by one mutex, so tests may read the record while the server's
 * thread serves.
 */
#ifndef FACTORD_TESTS_SMS_FAKE_H
#define FACTORD_TESTS_SMS_FAKE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sms_fake sms_fake;

/* One recorded request; headers that were not sent are "". */
typedef struct {
    char method[16];
    char path[512];
    char authorization[512];
    char idempotency_key[512];
    char content_type[128];
    char *body;          /* NUL-terminated copy */
    size_t body_len;
} sms_fake_req;

/* NULL when the server cannot start. */
sms_fake *sms_fake_start(void);
/* NULL-safe. */
void sms_fake_stop(sms_fake *f);
/* "http://127.0.0.1:<port>" plus path, malloc'd. */
char *sms_fake_url(const sms_fake *f, const char *path);

/* Answer the next `times` requests with status, body (copied; NULL: "{}")
 * and, when retry_after is not NULL, a Retry-After header. */
void sms_fake_push(sms_fake *f, unsigned status, const char *body, const char *retry_after, unsigned times);
/* The answer once the script is used up (body NULL: the Twilio-shaped 201 body). */
void sms_fake_set_default(sms_fake *f, unsigned status, const char *body);

size_t sms_fake_count(sms_fake *f);
/* Wait until at least n requests were recorded, at most timeout_ms; true if they were. */
bool sms_fake_wait(sms_fake *f, size_t n, int timeout_ms);
/* A copy of request i (0-based) into *out (free its body with free()); false if there is none. */
bool sms_fake_get(sms_fake *f, size_t i, sms_fake_req *out);

#endif
