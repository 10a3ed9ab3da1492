/*
 * infra/base/failpoint.h - named crash points for fault-injection tests.
 *
 * FACTORD_FAILPOINT="<name>[:<n>]" makes the n-th (default first) pass
 * through es_failpoint("<name>") kill the process with SIGKILL, so a test
 * can crash a component exactly between two steps (for example between the
 * PostgreSQL commit and the Kafka offset store). Unset in production: one
 * getenv at the first call, then a string compare.
 *
 * Layer: base; includes only the domain and base (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_FAILPOINT_H
#define FACTORD_INFRA_FAILPOINT_H

void es_failpoint(const char *name);

#endif
