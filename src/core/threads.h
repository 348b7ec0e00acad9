/* Thread count and parallel loops for kiln. Results depend on the thread count only through float
 * summation order; for one count they are bit-identical run to run. Every parallel loop of kiln goes
 * through kn_parallel_for or kn_parallel_range: the one place that decides how work meets threads. */
#ifndef KN_THREADS_H
#define KN_THREADS_H

#include <stdint.h>

/* Sets the calling thread's count for the parallel loops it starts; n <= 0 means "all cores". The
 * caller's OpenMP settings (omp_set_num_threads) are left alone. */
void kn_threads_set(int n);
/* The count set for this thread; 1 inside a loop's body, where loops run inline. */
int kn_threads_get(void);

/* When a parallel loop is worth its threads: below these amounts of work a loop stays on the calling
 * thread, because waking the team costs more than the threads save. One set for all of kiln, by the
 * kind of loop; a file names the one it uses (KN_POOL_PARALLEL_MIN = KN_PARALLEL_MIN_COMPUTE). */
enum {
    KN_PARALLEL_MIN_COMPUTE = 1 << 14, /* elements (or multiply-adds) of a loop computing on each one:
                                          activations, softmax, vmath, pooling, convolution loops */
    KN_PARALLEL_MIN_MEMORY = 1 << 15,  /* elements of a memory-bound pass: copies, broadcasts,
                                          reductions, normalizations, dropout, optimizer updates */
    KN_PARALLEL_MIN_SPARSE = 1 << 16,  /* multiply-adds of a sparse layer, pixels of an integer one */
    KN_PARALLEL_MIN_GEMM = 1 << 18,    /* flops (or multiply-adds) of a dense GEMM */
    /* multiply-adds of an integer GEMM or convolution: the VNNI kernels do about 4 times a float
     * GEMM's per second, and below this a second thread's region cost more than it shared (the
     * Fashion-MNIST CNN int8 at batch 1: 0.080 ms on 1 thread, 0.114-0.139 on 2) */
    KN_PARALLEL_MIN_INTEGER = 1 << 22,
};

/* The threads for a loop of `work` units: kn_threads_get() when work >= min, else 1. */
int kn_threads_for(int64_t work, int64_t min);

/* Calls body(ctx, i, slot) once for every i in [0, n), on up to `threads` threads (the calling thread
 * among them), or on the calling thread alone when threads <= 1 or n <= 1, with no parallel region.
 * `slot`, in [0, threads), is unique among the calls running at one time: an index of per-thread
 * scratch, never of results (which i runs on which slot is not fixed). Returns when every call has
 * returned. A loop started from inside a body runs on its caller alone (slot 0). */
void kn_parallel_for(int64_t n, int threads, void (*body)(void *ctx, int64_t i, int slot), void *ctx);

/* The same for loops of many small steps: body(ctx, begin, end, slot) on pieces [begin, end) that
 * together cover [0, n) once. Where the pieces are cut is not fixed either: body's results must not
 * depend on it (a piece is any run of whole iterations). */
void kn_parallel_range(int64_t n, int threads, void (*body)(void *ctx, int64_t begin, int64_t end, int slot),
                       void *ctx);

#endif
