/* Elementwise math throughput on one thread: the libm loops kiln's ops ran before kernels/vmath
 * (expf, the two-branch sigmoid, tanhf, erff, the erf and tanh GELUs, x sigmoid(x)) against each
 * kernels/vmath build this CPU has, on 4096 floats in [-8, 8) (in L1). Prints millions of elements per
 * second (best of 5 timed runs) and the speedup over libm. Build the library first, then from the
 * repository root:
 *
 *   gcc -O2 -Iinclude -Isrc bench/vmath_bench.c build/libkiln.a -pthread -lz -lm -o build/vmath_bench
 *   ./build/vmath_bench [seconds per measurement, default 0.2]
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/vmath.h"

enum { N = 4096 };

static float libm_sigmoid_one(float x) {
    if (x >= 0.0f)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

static void libm_exp(float *y, const float *x, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]); }
static void libm_sigmoid(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = libm_sigmoid_one(x[i]);
}
static void libm_tanh(float *y, const float *x, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]); }
static void libm_erf(float *y, const float *x, int64_t n) { for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]); }
static void libm_gelu(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678f));
}
static void libm_gelu_tanh(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] = 0.5f * x[i] * (1.0f + tanhf(0.79788456f * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}
static void libm_silu(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * libm_sigmoid_one(x[i]);
}

static const kn_vmath libm_build = {"libm", libm_exp, libm_sigmoid, libm_tanh, libm_erf, libm_gelu,
                                    libm_gelu_tanh, libm_silu};

static const struct { const char *name; size_t offset; } funcs[] = {
    {"exp", offsetof(kn_vmath, exp)},   {"sigmoid", offsetof(kn_vmath, sigmoid)},
    {"tanh", offsetof(kn_vmath, tanh)}, {"erf", offsetof(kn_vmath, erf)},
    {"gelu", offsetof(kn_vmath, gelu)}, {"gelu_tanh", offsetof(kn_vmath, gelu_tanh)},
    {"silu", offsetof(kn_vmath, silu)},
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Millions of elements per second, best of 5 runs of `seconds` / 5 each. */
static double measure(kn_vmath_fn fn, float *y, const float *x, double seconds) {
    double best = 0.0;
    for (int run = 0; run < 5; run++) {
        long calls = 0;
        double start = now(), elapsed;
        do {
            fn(y, x, N);
            calls++;
        } while ((elapsed = now() - start) < seconds / 5);
        double rate = (double)calls * N / elapsed / 1e6;
        best = rate > best ? rate : best;
    }
    return best;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 0.2;
    static float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = -8.0f + 16.0f * (float)((i * 2654435761u) % N) / N;
    const kn_vmath *builds[] = {&libm_build, kn_vmath_for(KN_VMATH_GENERIC), kn_vmath_for(KN_VMATH_AVX2),
                                kn_vmath_for(KN_VMATH_AVX512)};
    printf("%-10s", "Melem/s");
    for (size_t b = 0; b < 4; b++)
        if (builds[b])
            printf(" %16s", builds[b]->name);
    printf("\n");
    for (size_t f = 0; f < sizeof funcs / sizeof funcs[0]; f++) {
        printf("%-10s", funcs[f].name);
        double base = 0.0;
        for (size_t b = 0; b < 4; b++) {
            if (!builds[b])
                continue;
            kn_vmath_fn fn;
            memcpy(&fn, (const char *)builds[b] + funcs[f].offset, sizeof fn);
            double rate = measure(fn, y, x, seconds);
            if (b == 0)
                base = rate;
            printf(" %8.0f (%5.1fx)", rate, rate / base);
        }
        printf("\n");
    }
    return 0;
}
