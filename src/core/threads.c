#include "core/threads.h"

#include <omp.h>

/* Per OS thread, so that sessions run from different threads with different counts do not disturb each
 * other. It is kiln's own: every parallel region passes it as num_threads, and OpenMP's setting of the
 * calling thread (omp_set_num_threads, OMP_NUM_THREADS) is never touched, so a program that uses OpenMP
 * itself keeps its settings across kiln calls. */
static _Thread_local int thread_count;

void kn_threads_set(int n) { thread_count = n > 0 ? n : omp_get_num_procs(); }

int kn_threads_get(void) {
    if (thread_count <= 0)
        kn_threads_set(0);
    return thread_count;
}

int kn_threads_for(int64_t work, int64_t min) { return work >= min ? kn_threads_get() : 1; }

void kn_parallel_for(int64_t n, int threads, void (*body)(void *ctx, int64_t i, int slot), void *ctx) {
    if (threads <= 1 || n <= 1) {
        for (int64_t i = 0; i < n; i++)
            body(ctx, i, 0);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++)
        body(ctx, i, omp_get_thread_num());
}

void kn_parallel_range(int64_t n, int threads, void (*body)(void *ctx, int64_t begin, int64_t end, int slot),
                       void *ctx) {
    if (threads <= 1 || n <= 1) {
        if (n > 0)
            body(ctx, 0, n, 0);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
        int64_t share = n / team, extra = n % team; /* the first `extra` pieces one longer */
        int64_t begin = t * share + (t < extra ? t : extra), end = begin + share + (t < extra);
        if (begin < end)
            body(ctx, begin, end, (int)t);
    }
}
