/* kiln's one clock: monotonic seconds, for progress rates, timings and latency. */
#ifndef KN_CLOCK_H
#define KN_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline double kn_seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The same clock in whole nanoseconds, for per-node profiles that add up many short spans. */
static inline int64_t kn_nanoseconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPU seconds this process has used, all threads together: what a run costs on a shared machine, where
 * waiting for a core adds to the wall time but not to this. */
static inline double kn_process_cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
