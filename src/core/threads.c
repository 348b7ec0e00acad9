#include "core/threads.h"

#include <omp.h>

/* Per OS thread, like OpenMP's own thread-count setting (omp_set_num_threads sets it for the calling
 * thread only): sessions run from different threads with different counts do not disturb each other. */
static _Thread_local int thread_count;

void kn_threads_set(int n) {
    thread_count = n > 0 ? n : omp_get_num_procs();
    omp_set_num_threads(thread_count);
}

int kn_threads_get(void) {
    if (thread_count <= 0)
        kn_threads_set(0);
    return thread_count;
}
