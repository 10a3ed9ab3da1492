/*
 * infra/components/gateway_run.h - `factord gateway`'s run: start the
 * gateway (gateway.h), retrying with backoff while Kafka is away, and serve
 * until a stop. While Kafka is away a stand-in server on the gateway's
 * address answers /healthz with 200 and everything else with 503
 * ({"status":"unavailable","kafka":"unreachable","gateway":"starting"}),
 * so probes see "alive, not ready" rather than a refused connection; it
 * hands the address over once Kafka answers a metadata request.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_GATEWAY_RUN_H
#define FACTORD_INFRA_GATEWAY_RUN_H

#include <stdbool.h>

#include "domain/errors.h"
#include "infra/base/backoff.h"
#include "infra/base/config.h"
#include "infra/components/gateway.h"
#include "infra/crypto/jwt.h"
#include "infra/crypto/tlsfiles.h"

/* The token keys, issuer and audience for one start attempt (quiet: not
 * the first, say nothing again). *keys becomes the gateway's. ES_OK, or a
 * configuration error (logged by the function). */
typedef es_result (*es_gateway_keys_fn)(void *ctx, bool quiet, es_jwks **keys, const char **issuer,
                                        const char **audience);

/* Run the gateway for cfg (borrowed) until stop. ES_OK: stopped (at any
 * point, also while Kafka was away). ES_EINVAL: a configuration problem
 * (host map, keys, address), logged. Another result: the gateway could not
 * start, logged. */
es_result es_gateway_run(const es_config *cfg, es_gateway_keys_fn keys, void *keys_ctx, const es_stop_flag *stop,
                         es_error *err) ES_WUR;

/* The gateway's TLS from FACTORD_HTTP_TLS, _CERT_FILE and _KEY_FILE: *out
 * holds the checked PEM text for HTTPS, or stays empty for plain HTTP,
 * which auto allows only on a loopback address. ES_EINVAL names the
 * setting that is wrong. */
es_result es_gateway_tls(const es_config *cfg, es_tls_files *out, es_error *err) ES_WUR;

#endif
