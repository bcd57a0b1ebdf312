/*
 * Clocks: milliseconds and nanoseconds of a clock, and the absolute time a
 * timed wait (pthread_cond_timedwait) ends at, and the one text of a time
 * that pybox writes (ISO-8601 UTC to the millisecond).  Durations and deadlines use
 * CLOCK_MONOTONIC, which no step of the wall clock moves; timestamps that
 * people read (logs, UTC days, rate windows) use CLOCK_REALTIME.
 */
#ifndef PBX_COMMON_CLOCK_H
#define PBX_COMMON_CLOCK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds on `clock` (CLOCK_MONOTONIC or CLOCK_REALTIME). */
uint64_t pbx_clock_ms(clockid_t clock);

/* Nanoseconds on `clock`. */
uint64_t pbx_clock_ns(clockid_t clock);

/* *out = now on `clock` + `ms`: where a timed wait on a condition of that clock ends. */
void pbx_clock_after(clockid_t clock, uint64_t ms, struct timespec *out);

/* `ms` (Unix time, milliseconds) as "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) into `out`. */
void pbx_clock_iso(uint64_t ms, char *out, size_t len);

#endif
