/* SGEMM throughput: kn_sgemm_ref against the blocked driver with each micro-kernel this CPU has, at
 * the shapes kiln trains and runs, on 1 and 2 threads. Prints GFLOP/s (best of several timed runs)
 * and the speedup over the reference; and first the FMA peak of one core, measured by a loop of
 * independent vector FMAs for each vector width the CPU has, and for each one-thread row the best
 * kernel's fraction of the higher peak. One-thread figures are timed in CPU time, two-thread ones in
 * wall time. Build the library first, then from the repository root:
 *
 *   gcc -O2 -Iinclude -Isrc bench/gemm_bench.c build/libkiln.a -pthread -lz -lm -o build/gemm_bench
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
    {"resnet18 layer4 M=512 N=49 K=4608", false, false, 512, 49, 4608},
    {"1x1 conv M=96 N=3136 K=24", false, false, 96, 3136, 24},
    {"square 512", false, false, 512, 512, 512},
    {"square 1024", false, false, 1024, 1024, 1024},
    {"square 2048", false, false, 2048, 2048, 2048},
};

/* Above this many multiply-adds the unblocked reference would take seconds per call: not measured. */
#define REF_MAX_MADDS (512.0 * 512.0 * 512.0)

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

/* With one thread the clock is the process's CPU time, so that time the core spent on other work on a
 * shared machine does not count; with more, wall time (CPU time would add the threads up). */
static double now_seconds(void) {
    struct timespec t;
    clock_gettime(kn_threads_get() == 1 ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
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

/* ---- FMA peak ---- */

/* `steps` rounds of `ACCUMULATORS` independent FMAs: enough chains to cover every FMA pipe's latency
 * (2 pipes x 4 cycles on the CPUs kiln targets), so that throughput, not latency, bounds the loop. */
#define ACCUMULATORS 12

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* The chains as twelve named variables: an array indexed in the loop may be kept in memory, which puts
 * a store and a load in every chain. */
#define FMA_LOOP(vec, set1, fmadd)                                                                        \
    vec a = set1(0.999f), b = set1(0.001f);                                                               \
    vec c0 = set1(0), c1 = set1(1), c2 = set1(2), c3 = set1(3), c4 = set1(4), c5 = set1(5);              \
    vec c6 = set1(6), c7 = set1(7), c8 = set1(8), c9 = set1(9), c10 = set1(10), c11 = set1(11);          \
    for (int64_t s = 0; s < steps; s++) {                                                                \
        c0 = fmadd(c0, a, b), c1 = fmadd(c1, a, b), c2 = fmadd(c2, a, b), c3 = fmadd(c3, a, b);          \
        c4 = fmadd(c4, a, b), c5 = fmadd(c5, a, b), c6 = fmadd(c6, a, b), c7 = fmadd(c7, a, b);          \
        c8 = fmadd(c8, a, b), c9 = fmadd(c9, a, b), c10 = fmadd(c10, a, b), c11 = fmadd(c11, a, b);      \
    }                                                                                                    \
    vec sum = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;

__attribute__((target("avx512f"))) static float fma_loop_avx512(int64_t steps) {
    FMA_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps)
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float fma_loop_avx2(int64_t steps) {
    FMA_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps)
    float out[8];
    _mm256_storeu_ps(out, sum);
    return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}

/* GFLOP/s of one core's FMA loop `lanes` floats wide (16: AVX-512, 8: AVX2), best of five runs of
 * about budget/5 seconds; 0 when the CPU lacks the width. */
static double fma_peak(int lanes, double budget) {
    const kn_cpu_features *cpu = kn_cpu();
    if ((lanes == 16 && !cpu->avx512f) || (lanes == 8 && !cpu->avx2))
        return 0;
    int64_t steps = 1 << 20;
    volatile float sink = 0;
    double best = 0;
    for (int run = 0; run < 6; run++) {
        double start = now_seconds();
        sink += lanes == 16 ? fma_loop_avx512(steps) : fma_loop_avx2(steps);
        double seconds = now_seconds() - start;
        double gflops = 2.0 * lanes * ACCUMULATORS * (double)steps / seconds * 1e-9;
        if (run == 0) // a first, untimed run: sizes the loop to budget / 5
            steps = (int64_t)((double)steps * budget / 5.0 / (seconds > 1e-6 ? seconds : 1e-6)) + 1;
        else if (gflops > best)
            best = gflops;
    }
    (void)sink;
    return best;
}
#else
static double fma_peak(int lanes, double budget) {
    (void)lanes;
    (void)budget;
    return 0;
}
#endif

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
    kn_threads_set(1);
    double peak512 = fma_peak(16, budget), peak256 = fma_peak(8, budget);
    double peak = peak512 > peak256 ? peak512 : peak256;
    printf("FMA peak of one core (measured): %.1f GFLOP/s AVX-512, %.1f GFLOP/s AVX2 (0: not on this CPU)\n",
           peak512, peak256);
    printf("%% peak = the fastest kernel at 1 thread over the higher FMA peak\n");
    printf("%-34s %3s %8s", "shape", "thr", "ref");
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const kn_gemm_kernel *kernel = kn_gemm_kernel_for(paths[p]);
        if (kernel)
            printf(" %16s", kernel->name);
    }
    printf(" %7s\n", "% peak");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const shape *s = &shapes[i];
        float *A = random_floats(s->M * s->K, 1 + i), *B = random_floats(s->K * s->N, 100 + i);
        float *C = malloc((size_t)(s->M * s->N) * sizeof(float));
        if (!A || !B || !C) {
            fprintf(stderr, "out of memory for %s\n", s->what);
            return 1;
        }
        kn_threads_set(1);
        bool small = (double)s->M * (double)s->N * (double)s->K <= REF_MAX_MADDS;
        double ref = small ? measure(run_ref, NULL, s, A, B, C, budget) : 0; // single-threaded whatever the count
        for (int threads = 1; threads <= 2; threads++) {
            kn_threads_set(threads);
            if (small)
                printf("%-34s %3d %8.2f", s->what, threads, ref);
            else
                printf("%-34s %3d %8s", s->what, threads, "-");
            double fastest = 0;
            for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
                const kn_gemm_kernel *kernel = kn_gemm_kernel_for(paths[p]);
                if (!kernel || (!small && paths[p] == KN_GEMM_PATH_GENERIC)) {
                    if (kernel)
                        printf(" %16s", "-");
                    continue;
                }
                double gflops = measure(run_kernel, kernel, s, A, B, C, budget);
                if (small)
                    printf(" %8.2f (%4.0fx)", gflops, gflops / ref);
                else
                    printf(" %8.2f        ", gflops);
                fastest = gflops > fastest ? gflops : fastest;
            }
            if (threads == 1 && peak > 0)
                printf(" %6.1f%%", 100.0 * fastest / peak);
            printf("\n");
            fflush(stdout);
        }
        free(A);
        free(B);
        free(C);
    }
    return 0;
}
