/*
 * infra/components/audit.h - the auditor's tools over the event log, for
 * callers that use all three: verify that it is complete and unaltered
 * (verify.h), replay it filtered (replay.h), and its positions and lags
 * (status.h). brief §7; docs/audit.md.
 *
 * Layer: components; includes the adapters and the components, no client
 * library (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_COMPONENTS_AUDIT_H
#define FACTORD_COMPONENTS_AUDIT_H

#include "infra/components/replay.h"
#include "infra/components/status.h"
#include "infra/components/verify.h"

#endif
