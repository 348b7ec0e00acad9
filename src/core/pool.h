/* kiln's own thread pool, for loops of independent chunks: the calling thread and the pool's workers
 * claim chunks one at a time, and a run returns as soon as every chunk has run. A worker that has not
 * started (its core is busy with another process) is not waited for: the threads that are running take
 * its chunks, so a lost core costs its share and no more (OpenMP's end-of-region barrier waits for every
 * thread of the team to arrive). Which thread runs a chunk never changes what the chunk computes, so
 * results do not depend on the thread count or the timing. docs/runtime.md, "Threads". */
#ifndef KN_POOL_H
#define KN_POOL_H

#include <stdint.h>

/* One chunk of a run. `slot` (0 <= slot < the run's thread count) names the thread running it, for
 * per-thread scratch: no two chunks run at the same time with the same slot. */
typedef void (*kn_pool_chunk_fn)(void *ctx, int64_t chunk, int slot);

/* The most threads a run uses, the caller included; larger counts are clamped. */
#define KN_POOL_MAX_THREADS 64

/* Runs fn(ctx, c, slot) once for every c in [0, chunks), on up to `threads` threads including the
 * caller (slot 0), and returns when all have run. Runs on the caller alone when threads or chunks is
 * 1, inside an OpenMP parallel region or another pool run, when another thread's run holds the pool,
 * or when no worker thread can be started. Workers are started on first use and sleep after a short
 * spin between runs. */
void kn_pool_run(int threads, int64_t chunks, kn_pool_chunk_fn fn, void *ctx);

/* A loop over [0, n) of iterations that are independent of each other (how the range is split changes
 * no result): fn(ctx, begin, end) over consecutive ranges, each a chunk of kn_pool_run. The ranges are
 * a few per thread, so that the threads that run take over from one that does not, and start on
 * multiples of 16 iterations (whole cache lines of floats). */
typedef void (*kn_pool_range_fn)(void *ctx, int64_t begin, int64_t end);
void kn_pool_for(int threads, int64_t n, kn_pool_range_fn fn, void *ctx);

#endif
