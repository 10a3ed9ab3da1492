/*
 * infra/base/clock.h - the clocks, in one place so the domain never reads one.
 *
 * Layer: base; includes only the domain and base (docs/architecture.md, "Layers").
 */
#ifndef FACTORD_INFRA_CLOCK_H
#define FACTORD_INFRA_CLOCK_H

#include <stdint.h>

int64_t es_clock_now_us(void);   /* wall clock, microseconds since the epoch */
int64_t es_clock_mono_ms(void);  /* monotonic milliseconds, for timeouts */
int64_t es_clock_mono_us(void);  /* monotonic microseconds, for durations */
void es_sleep_ms(int64_t ms);

#endif
