#include "core/threads.h"

#include <omp.h>

static int thread_count;

void kn_threads_set(int n) {
    thread_count = n > 0 ? n : omp_get_num_procs();
    omp_set_num_threads(thread_count);
}

int kn_threads_get(void) {
    if (thread_count <= 0)
        kn_threads_set(0);
    return thread_count;
}
