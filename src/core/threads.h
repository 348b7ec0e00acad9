/* Thread count for kiln's parallel loops (OpenMP). Results depend on the thread count only through
 * float summation order; for one count they are bit-identical run to run. */
#ifndef KN_THREADS_H
#define KN_THREADS_H

/* Sets the calling thread's count for the parallel loops it starts; n <= 0 means "all cores". Every
 * parallel region of kiln passes kn_threads_get() as its num_threads: the caller's OpenMP settings
 * (omp_set_num_threads) are left alone. */
void kn_threads_set(int n);
int kn_threads_get(void);

#endif
