/*
 * infra/components/gateway.h - the HTTP face of the Auth API (docs/gateway.md): the
 * self-service calls of ZITADEL's Auth API v1 for the OTP-SMS factor and the
 * phone, each turned into one command on the commands topic and answered
 * with the command's reply, plus ListMyAuthFactors from the read model in
 * PostgreSQL, and the /healthz and /readyz probes; and the OTP-SMS sign-in
 * of ZITADEL's session service v2 (/v2/sessions, docs/gateway.md
 * "Sessions") for the callers FACTORD_SESSION_CALLERS lists, whose
 * commands are keyed by the session's user.
 *
 * The gateway is the one component that faces the network (brief §8): every
 * call is authenticated with a bearer JWT (infra/crypto/jwt.h); the user id comes
 * from the token's sub, the organisation from its resource-owner claim, the
 * instance from the request's Host (FACTORD_HOST_MAP) or
 * FACTORD_INSTANCE_ID; nothing in a body names a user, an organisation or
 * an instance, except the user a session is opened for. A request that fails authentication sends no command.
 *
 * Every request gets an answer: the reply's status and body verbatim, 504
 * when no reply comes within FACTORD_GATEWAY_TIMEOUT_MS, 503 when Kafka did
 * not take the command, and google.rpc.Status bodies for the gateway's own
 * refusals.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_GATEWAY_H
#define FACTORD_INFRA_GATEWAY_H

#include "domain/errors.h"
#include "infra/base/config.h"
#include "infra/crypto/jwt.h"

typedef struct {
    const es_config *cfg;   /* borrowed for the gateway's life; kafka_brokers set */
    es_jwks *keys;          /* taken, even when starting fails */
    const char *issuer;     /* copied */
    const char *audience;   /* copied */
    const char *tls_cert_pem, *tls_key_pem; /* HTTPS (es_http_opts); NULL: plain HTTP */
} es_gateway_opts;

typedef struct es_gateway es_gateway;

/* Start listening on cfg->http_addr. ES_EINVAL: a configuration problem
 * (FACTORD_HOST_MAP, the address); ES_ETRANSIENT: Kafka cannot be reached
 * or the reply topic is missing, or the address is taken (retry). */
es_result es_gateway_start(const es_gateway_opts *o, es_gateway **out, es_error *err) ES_WUR;
int es_gateway_port(const es_gateway *gw);
/* Stop accepting, answer what is pending (503), close. NULL-safe. */
void es_gateway_stop(es_gateway *gw);

/* Parse FACTORD_HOST_MAP ("host=instance,host:port=instance,..."); for the
 * configuration check and tests. ES_EINVAL says what is wrong. */
es_result es_gateway_check_host_map(const char *text, es_error *err) ES_WUR;

/* --- offline (fuzzing and tests) -------------------------------------------
 * A gateway without sockets, Kafka or PostgreSQL: the same routing, Host,
 * token, Idempotency-Key, content-type, body-size and body checks as a live
 * one, in the same order. A request that passes them all is answered 202
 * with the command it would have sent (wire JSON); ListMyAuthFactors,
 * the other read calls (GetSession, a SetSession's session, a login name)
 * and /readyz answer 503, as a live gateway does with PostgreSQL away. Stop it
 * with es_gateway_stop. */
es_result es_gateway_offline_new(const es_gateway_opts *o, es_gateway **out, es_error *err) ES_WUR;
/* Handle one request; headers are n name/value pairs. Returns the HTTP
 * status; *resp (malloc'd, the caller's) gets the body. Not thread-safe. */
unsigned es_gateway_offline_handle(es_gateway *gw, const char *method, const char *path,
                                   const char *const *headers, size_t n, const char *body, size_t len,
                                   char **resp, size_t *resp_len);

#endif
