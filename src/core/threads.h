/* Thread count for kiln's parallel loops (OpenMP). Results depend on the thread count only through
 * float summation order; for one count they are bit-identical run to run. */
#ifndef KN_THREADS_H
#define KN_THREADS_H

#include <stdint.h>

/* Sets the calling thread's count for the parallel loops it starts; n <= 0 means "all cores". Every
 * parallel region of kiln passes kn_threads_get() as its num_threads: the caller's OpenMP settings
 * (omp_set_num_threads) are left alone. */
void kn_threads_set(int n);
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

/* Calls body(ctx, i, thread) for every i in [0, n): on `threads` threads with a static schedule (thread
 * is the OpenMP thread number, for per-thread scratch), or on the calling thread alone (thread 0) when
 * threads <= 1, with no parallel region at all: libgomp starts a team even for a region whose `if` is
 * false, about a microsecond a call, which a layer of a few microseconds feels. */
void kn_parallel_for(int64_t n, int threads, void (*body)(void *ctx, int64_t i, int thread), void *ctx);

#endif
