/* SGEMM throughput: kn_sgemm_ref against the blocked driver with each micro-kernel this CPU has, at
 * the shapes kiln trains and runs, on 1 and 2 threads. Prints GFLOP/s (best of several timed runs)
 * and the speedup over the reference. Build the library first, then from the repository root:
 *
 *   gcc -O2 -Iinclude -Isrc bench/gemm_bench.c build/libkiln.a -fopenmp -lz -lm -o build/gemm_bench
 *   ./build/gemm_bench [seconds per measurement, default 0.3]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/cpu.h"
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/gemm_internal.h"

typedef struct shape {
    const char *what;
    bool trans_a, trans_b;
    int64_t M, N, K;
} shape;

static const shape shapes[] = {
    {"dense fwd   (64x784)@(784x256)", false, false, 64, 256, 784},
    {"dense dW    (64x784)^T@(64x256)", true, false, 784, 256, 64},
    {"dense dX    (64x256)@(784x256)^T", false, true, 64, 784, 256},
    {"conv im2col M=64 N=784 K=288", false, false, 64, 784, 288},
    {"conv im2col M=64 N=196 K=288", false, false, 64, 196, 288},
    {"infer M=1   (1x784)@(784x256)", false, false, 1, 256, 784},
    {"infer M=1   (1x784)@(256x784)^T", false, true, 1, 256, 784},
    {"infer M=8   (8x784)@(784x256)", false, false, 8, 256, 784},
    {"infer M=8   (8x784)@(256x784)^T", false, true, 8, 256, 784},
    {"infer M=32  (32x784)@(784x256)", false, false, 32, 256, 784},
    {"square 512", false, false, 512, 512, 512},
};

typedef void (*gemm_fn)(const kn_gemm_kernel *kernel, const shape *s, const float *A, const float *B,
                        float *C);

static void run_ref(const kn_gemm_kernel *kernel, const shape *s, const float *A, const float *B, float *C) {
    (void)kernel;
    kn_sgemm_ref(s->trans_a, s->trans_b, s->M, s->N, s->K, 1.0f, A, s->trans_a ? s->M : s->K, B,
                 s->trans_b ? s->K : s->N, 0.0f, C, s->N);
}

static void run_kernel(const kn_gemm_kernel *kernel, const shape *s, const float *A, const float *B,
                       float *C) {
    kn_sgemm_with(kernel, NULL, 0, s->trans_a, s->trans_b, s->M, s->N, s->K, 1.0f, A, s->trans_a ? s->M : s->K, B,
                  s->trans_b ? s->K : s->N, 0.0f, C, s->N);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* GFLOP/s of the fastest of five runs of about budget/5 seconds each: the machine is shared, and the
 * best run is the one least disturbed by other work. */
static double measure(gemm_fn fn, const kn_gemm_kernel *kernel, const shape *s, const float *A,
                      const float *B, float *C, double budget) {
    double t0 = now_seconds();
    fn(kernel, s, A, B, C); // warm-up, and the cost of one call
    double one_call = now_seconds() - t0;
    int64_t calls = (int64_t)(budget / 5.0 / (one_call > 1e-7 ? one_call : 1e-7));
    if (calls < 1)
        calls = 1;
    double best = 1e30;
    for (int run = 0; run < 5; run++) {
        double start = now_seconds();
        for (int64_t c = 0; c < calls; c++)
            fn(kernel, s, A, B, C);
        double per_call = (now_seconds() - start) / (double)calls;
        if (per_call < best)
            best = per_call;
    }
    return 2.0 * (double)s->M * (double)s->N * (double)s->K / best * 1e-9;
}

static float *random_floats(int64_t count, uint64_t seed) {
    float *x = malloc((size_t)count * sizeof(float));
    if (!x)
        return NULL;
    kn_rng rng = kn_rng_seeded(seed);
    for (int64_t i = 0; i < count; i++)
        x[i] = 2.0f * kn_rng_uniform(&rng) - 1.0f;
    return x;
}

int main(int argc, char **argv) {
    double budget = argc > 1 ? atof(argv[1]) : 0.3;
    const kn_gemm_path paths[] = {KN_GEMM_PATH_GENERIC, KN_GEMM_PATH_AVX2, KN_GEMM_PATH_AVX512};
    printf("cpu: %s; GFLOP/s, best of 5 runs (shared machine: expect noise); x = speedup over ref\n",
           kn_cpu_describe());
    printf("%-34s %3s %8s", "shape", "thr", "ref");
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const kn_gemm_kernel *kernel = kn_gemm_kernel_for(paths[p]);
        if (kernel)
            printf(" %16s", kernel->name);
    }
    printf("\n");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        float *A = random_floats(s->M * s->K, 1 + i), *B = random_floats(s->K * s->N, 100 + i);
        float *C = malloc((size_t)(s->M * s->N) * sizeof(float));
        if (!A || !B || !C) {
            fprintf(stderr, "out of memory for %s\n", s->what);
            return 1;
        }
        kn_threads_set(1);
        double ref = measure(run_ref, NULL, s, A, B, C, budget); // single-threaded whatever the count
        for (int threads = 1; threads <= 2; threads++) {
            kn_threads_set(threads);
            printf("%-34s %3d %8.2f", s->what, threads, ref);
            for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
                const kn_gemm_kernel *kernel = kn_gemm_kernel_for(paths[p]);
                if (!kernel)
                    continue;
                double gflops = measure(run_kernel, kernel, s, A, B, C, budget);
                printf(" %8.2f (%4.0fx)", gflops, gflops / ref);
            }
            printf("\n");
            fflush(stdout);
        }
        free(A);
        free(B);
        free(C);
    }
    return 0;
}
