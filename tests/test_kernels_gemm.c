/* The SGEMM driver with each ISA's kernels (generic, AVX2, AVX-512; the ones this build or CPU lacks
 * are skipped, and said so) against kn_sgemm_ref: all transpose combinations, odd sizes, padded leading
 * dimensions, alpha/beta variants, beta = 0 over NaN-filled C, K = 0, shapes reaching every branch of
 * the driver, bit-identical results on 1 and 2 threads, calls from inside a parallel region, and the
 * direct kernel's small products bit-identical to the blocked path's.
 *
 * Tolerance: the fast paths sum K products in float, adding each depth block's partial sum into C
 * (two roundings per block), so |fast - exact| <= (K + 2 * blocks + 1) u * scale, with u = 2^-24 and
 * scale = |alpha| sum_k |a_ik b_kj| + |beta c_ij|; the reference (double sum, then three float
 * roundings) adds at most 3 u * scale. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/gemm_internal.h"

/* Written into the padding of A and B (a kernel reading it would poison C) and of C (must survive). */
#define PAD_A_B NAN
#define PAD_C 12345.0f

typedef struct gemm_case {
    bool trans_a, trans_b;
    int64_t M, N, K;
    float alpha, beta;
    int64_t pad; /* leading dimensions exceed the row length by this much */
    bool nan_c;  /* C starts as NaN (only meaningful with beta == 0) */
} gemm_case;

/* One case's matrices, rows padded to their leading dimension:
 *   A (rows_a, lda), B (rows_b, ldb), C_init / C_ref / C_fast (M, ldc); scale (M, ldc) as above. */
typedef struct gemm_data {
    int64_t rows_a, lda, rows_b, ldb, ldc;
    float *A, *B, *C_init, *C_ref, *C_fast, *scale;
} gemm_data;

/* Worst error of a kernel over many cases, as a fraction of the bound above (must be <= 1). */
typedef struct error_stats {
    double worst_fraction_of_bound, worst_abs_diff;
    int64_t bad_elements;
} error_stats;

/* The kernels under test. */
static const kn_gemm_kernel *kernels[3];
static error_stats kernel_errors[3];
static int kernel_count;

static float *padded_random(int64_t rows, int64_t cols, int64_t ld, float pad, kn_rng *rng) {
    float *x = malloc((size_t)(rows * ld + 1) * sizeof(float));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < ld; j++)
            x[i * ld + j] = j < cols ? 2.0f * kn_rng_uniform(rng) - 1.0f : pad;
    return x;
}

static float *abs_copy(const float *x, int64_t count) {
    float *y = malloc((size_t)(count + 1) * sizeof(float));
    for (int64_t i = 0; i < count; i++)
        y[i] = fabsf(x[i]);
    return y;
}

/* Random operands, C_ref from the reference, and the error scale (also from the reference, on |A|
 * and |B|). C_fast is left to the caller. */
static gemm_data gemm_data_make(const gemm_case *c, uint64_t seed) {
    gemm_data d;
    kn_rng rng = kn_rng_seeded(seed);
    d.rows_a = c->trans_a ? c->K : c->M; // A is (M, K), or (K, M) when transposed
    int64_t cols_a = c->trans_a ? c->M : c->K;
    d.rows_b = c->trans_b ? c->N : c->K; // B is (K, N), or (N, K) when transposed
    int64_t cols_b = c->trans_b ? c->K : c->N;
    d.lda = cols_a + c->pad;
    d.ldb = cols_b + c->pad;
    d.ldc = c->N + c->pad;
    d.A = padded_random(d.rows_a, cols_a, d.lda, PAD_A_B, &rng);
    d.B = padded_random(d.rows_b, cols_b, d.ldb, PAD_A_B, &rng);
    d.C_init = padded_random(c->M, c->N, d.ldc, PAD_C, &rng);
    if (c->nan_c)
        for (int64_t i = 0; i < c->M; i++)
            for (int64_t j = 0; j < c->N; j++)
                d.C_init[i * d.ldc + j] = NAN;
    size_t c_bytes = (size_t)(c->M * d.ldc + 1) * sizeof(float);
    d.C_ref = malloc(c_bytes);
    d.C_fast = malloc(c_bytes);
    memcpy(d.C_ref, d.C_init, c_bytes);
    kn_sgemm_ref(c->trans_a, c->trans_b, c->M, c->N, c->K, c->alpha, d.A, d.lda, d.B, d.ldb, c->beta, d.C_ref,
                 d.ldc);
    float *abs_A = abs_copy(d.A, d.rows_a * d.lda), *abs_B = abs_copy(d.B, d.rows_b * d.ldb);
    d.scale = malloc(c_bytes);
    kn_sgemm_ref(c->trans_a, c->trans_b, c->M, c->N, c->K, fabsf(c->alpha), abs_A, d.lda, abs_B, d.ldb, 0.0f,
                 d.scale, d.ldc);
    if (c->beta != 0.0f)
        for (int64_t i = 0; i < c->M; i++)
            for (int64_t j = 0; j < c->N; j++)
                d.scale[i * d.ldc + j] += fabsf(c->beta * d.C_init[i * d.ldc + j]);
    free(abs_A);
    free(abs_B);
    return d;
}

static void gemm_data_free(gemm_data *d) {
    free(d->A);
    free(d->B);
    free(d->C_init);
    free(d->C_ref);
    free(d->C_fast);
    free(d->scale);
}

/* C_fast = C_init updated by `kernel`. */
static void run_fast(const kn_gemm_kernel *kernel, const gemm_case *c, gemm_data *d) {
    memcpy(d->C_fast, d->C_init, (size_t)(c->M * d->ldc + 1) * sizeof(float));
    kn_sgemm_with(kernel, NULL, 0, c->trans_a, c->trans_b, c->M, c->N, c->K, c->alpha, d->A, d->lda, d->B,
                  d->ldb, c->beta, d->C_fast, d->ldc);
}

static error_stats compare_with_ref(const kn_gemm_kernel *kernel, const gemm_case *c, const gemm_data *d) {
    error_stats e = {0.0, 0.0, 0};
    int64_t blocks = (c->K + kernel->kc - 1) / kernel->kc;
    double u = ldexp(1.0, -24);
    for (int64_t i = 0; i < c->M; i++) {
        for (int64_t j = 0; j < d->ldc; j++) {
            float fast = d->C_fast[i * d->ldc + j], ref = d->C_ref[i * d->ldc + j];
            if (j >= c->N) { // padding of C: untouched
                if (fast != PAD_C)
                    e.bad_elements++;
                continue;
            }
            double bound = (double)(c->K + 2 * blocks + 4) * u * d->scale[i * d->ldc + j];
            double diff = fabs((double)fast - ref);
            if (!(diff <= bound)) // also catches NaN
                e.bad_elements++;
            if (diff > e.worst_abs_diff)
                e.worst_abs_diff = diff;
            if (bound > 0.0 && diff / bound > e.worst_fraction_of_bound)
                e.worst_fraction_of_bound = diff / bound;
        }
    }
    return e;
}

/* Runs one case through every kernel under test and folds the errors into kernel_errors. */
static void check_case(const gemm_case *c, uint64_t seed) {
    gemm_data d = gemm_data_make(c, seed);
    for (int p = 0; p < kernel_count; p++) {
        run_fast(kernels[p], c, &d);
        error_stats e = compare_with_ref(kernels[p], c, &d);
        CHECK_MSG(e.bad_elements == 0,
                  "%s: ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g pad=%lld nan_c=%d: %lld elements "
                  "off (worst %.3g of bound, |diff| %.3g)",
                  kernels[p]->name, c->trans_a, c->trans_b, (long long)c->M, (long long)c->N, (long long)c->K,
                  (double)c->alpha, (double)c->beta, (long long)c->pad, c->nan_c, (long long)e.bad_elements,
                  e.worst_fraction_of_bound, e.worst_abs_diff);
        error_stats *total = &kernel_errors[p];
        total->worst_fraction_of_bound = fmax(total->worst_fraction_of_bound, e.worst_fraction_of_bound);
        total->worst_abs_diff = fmax(total->worst_abs_diff, e.worst_abs_diff);
        total->bad_elements += e.bad_elements;
    }
    gemm_data_free(&d);
}

/* Odd sizes in every dimension, all transposes; alpha, beta and padding cycle through variants so each
 * combination meets several of them. Products above ~2M multiply-adds are skipped to keep the
 * reference (and ASan) fast; test_model_shapes has the big ones. */
static void test_sizes(void) {
    static const int64_t sizes[] = {1, 7, 13, 31, 97, 255};
    static const struct {
        float alpha, beta;
        int64_t pad;
        bool nan_c;
    } variants[] = {{1.0f, 0.0f, 0, true}, {1.0f, 1.0f, 3, false}, {-0.5f, 0.25f, 0, false},
                    {2.0f, 0.0f, 17, true}, {0.75f, -1.0f, 1, false}};
    const int n_sizes = sizeof sizes / sizeof sizes[0], n_variants = sizeof variants / sizeof variants[0];
    int64_t index = 0;
    for (int t = 0; t < 4; t++)
        for (int mi = 0; mi < n_sizes; mi++)
            for (int ni = 0; ni < n_sizes; ni++)
                for (int ki = 0; ki < n_sizes; ki++) {
                    int64_t M = sizes[mi], N = sizes[ni], K = sizes[ki];
                    if (M * N * K > 2000000)
                        continue;
                    int v = (int)(index++ % n_variants);
                    gemm_case c = {t & 1, (t >> 1) & 1, M, N, K, variants[v].alpha, variants[v].beta,
                                   variants[v].pad, variants[v].nan_c};
                    check_case(&c, (uint64_t)index);
                }
}

/* Training and inference shapes, and shapes that reach every branch of the driver: B read in place or
 * packed, several row blocks, depth blocks and column panels, the dot kernel with either A layout. */
static void test_model_shapes(void) {
    static const gemm_case cases[] = {
        {false, false, 64, 256, 784, 1.0f, 0.0f, 0, true},  // dense forward (B read in place)
        {true, false, 784, 256, 64, 1.0f, 1.0f, 0, false},  // weight gradient, accumulated
        {false, true, 64, 784, 256, 1.0f, 0.0f, 0, false},  // input gradient
        {false, false, 64, 196, 288, 1.0f, 0.0f, 5, false}, // conv im2col
        {false, false, 64, 784, 400, 1.0f, 0.0f, 0, false}, // B too big to read in place
        {true, true, 200, 70, 600, 0.5f, 2.0f, 9, false},   // several row and depth blocks
        {false, false, 1, 256, 784, 1.0f, 0.0f, 0, true},   // inference, one row
        {false, true, 1, 256, 784, 1.0f, 0.0f, 0, true},    // the same with weights (N, K): dot kernel
        {true, true, 5, 100, 300, 1.0f, -1.0f, 3, false},   // dot kernel with A (K, M)
        {false, true, 3, 4500, 5, 1.0f, 0.5f, 2, false},    // dot kernel, many columns
        {false, true, 32, 9, 784, 1.0f, 1.0f, 0, false},    // dot kernel, C narrower than a tile (conv1 dW)
        {true, true, 40, 5, 70, 1.0f, 0.0f, 4, false},      // the same with A (K, M)
        {false, true, 20, 4500, 8, 1.0f, 0.5f, 2, false},   // packed B in two column panels
        {true, false, 13, 4500, 40, 1.0f, 0.0f, 3, false},  // B in place in two column panels
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], 1000 + i);
}

/* K == 0 leaves beta * C (zeros over NaN when beta == 0); M == 0 or N == 0 touch nothing. */
static void test_empty(const kn_gemm_kernel *kernel) {
    float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    float C[4] = {1, -2, 3, -4};
    kn_sgemm_with(kernel, NULL, 0, false, false, 2, 2, 0, 1.0f, A, 2, B, 2, 0.5f, C, 2);
    CHECK(C[0] == 0.5f && C[1] == -1.0f && C[2] == 1.5f && C[3] == -2.0f);
    float C_nan[4] = {NAN, NAN, NAN, NAN};
    kn_sgemm_with(kernel, NULL, 0, true, true, 2, 2, 0, 1.0f, A, 2, B, 2, 0.0f, C_nan, 2);
    CHECK(C_nan[0] == 0.0f && C_nan[1] == 0.0f && C_nan[2] == 0.0f && C_nan[3] == 0.0f);
    float C_keep[4] = {NAN, 1, 2, 3};
    kn_sgemm_with(kernel, NULL, 0, false, false, 0, 2, 2, 1.0f, A, 2, B, 2, 0.0f, C_keep, 2);
    kn_sgemm_with(kernel, NULL, 0, false, false, 2, 0, 2, 1.0f, A, 2, B, 2, 0.0f, C_keep, 2);
    CHECK(isnan(C_keep[0]) && C_keep[1] == 1 && C_keep[2] == 2 && C_keep[3] == 3);
}

/* Threads split only rows and columns of C, never K: 1 and 2 threads must agree bit for bit. The
 * shapes are far above the size that goes parallel. */
static void test_threads_bit_identical(const kn_gemm_kernel *kernel) {
    static const gemm_case cases[] = {
        {false, false, 97, 255, 300, 1.0f, 0.0f, 0, false},
        {true, true, 200, 70, 600, 0.5f, 2.0f, 9, false},
        {false, true, 64, 784, 256, 1.0f, 1.0f, 0, false},
        {true, false, 13, 4500, 40, 1.0f, 0.0f, 3, false},
        {false, true, 8, 300, 500, 1.0f, 0.0f, 0, false}, // dot kernel
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gemm_case *c = &cases[i];
        gemm_data d = gemm_data_make(c, 2000 + i);
        size_t c_bytes = (size_t)(c->M * d.ldc) * sizeof(float);
        kn_threads_set(1);
        run_fast(kernel, c, &d);
        float *one_thread = malloc(c_bytes);
        memcpy(one_thread, d.C_fast, c_bytes);
        kn_threads_set(2);
        run_fast(kernel, c, &d);
        CHECK_MSG(memcmp(one_thread, d.C_fast, c_bytes) == 0, "%s: M=%lld N=%lld K=%lld differs on 2 threads",
                  kernel->name, (long long)c->M, (long long)c->N, (long long)c->K);
        free(one_thread);
        gemm_data_free(&d);
    }
    kn_threads_set(1);
}

typedef struct {
    const kn_gemm_kernel *kernel;
    const gemm_case *c;
    gemm_data *d; /* (2) */
} products_inside;

static void product_inside_of(void *ctx, int64_t i, int slot) {
    (void)slot;
    const products_inside *p = ctx;
    run_fast(p->kernel, p->c, &p->d[i]);
}

/* Called from inside a parallel loop (an op splitting a batch across threads), each call must still
 * do its whole product and get what a lone call gets. */
static void test_inside_parallel_region(const kn_gemm_kernel *kernel) {
    gemm_case c = {false, false, 70, 90, 110, 1.0f, 0.0f, 0, false};
    gemm_data d[2] = {gemm_data_make(&c, 4000), gemm_data_make(&c, 4001)};
    size_t c_bytes = (size_t)(c.M * d[0].ldc) * sizeof(float);
    kn_threads_set(2);
    float *alone[2];
    for (int i = 0; i < 2; i++) {
        run_fast(kernel, &c, &d[i]);
        alone[i] = malloc(c_bytes);
        memcpy(alone[i], d[i].C_fast, c_bytes);
    }
    kn_parallel_for(2, 2, product_inside_of, &(products_inside){kernel, &c, d});
    for (int i = 0; i < 2; i++) {
        CHECK_MSG(memcmp(alone[i], d[i].C_fast, c_bytes) == 0,
                  "%s: product %d differs inside a parallel region", kernel->name, i);
        free(alone[i]);
        gemm_data_free(&d[i]);
    }
    kn_threads_set(1);
}

/* kn_sgemm is the driver with the best kernels. */
static void test_public_entry(void) {
    gemm_case c = {false, true, 33, 47, 129, 1.5f, -0.5f, 4, false};
    gemm_data d = gemm_data_make(&c, 3000);
    size_t c_bytes = (size_t)(c.M * d.ldc) * sizeof(float);
    float *C_public = malloc(c_bytes);
    memcpy(C_public, d.C_init, c_bytes);
    kn_sgemm(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, d.A, d.lda, d.B, d.ldb, c.beta, C_public, d.ldc);
    run_fast(kn_gemm_kernel_best(), &c, &d);
    CHECK(memcmp(C_public, d.C_fast, c_bytes) == 0);
    free(C_public);
    gemm_data_free(&d);
}

/* A caller's workspace of exactly kn_sgemm_workspace bytes gives the same bits as kn_sgemm's own. */
static void test_caller_workspace(void) {
    const int64_t shapes[][3] = {{64, 256, 784}, {1, 256, 784}, {5, 33, 17}, {100, 7, 300}};
    int identical = 0, cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            float *A = calloc((size_t)(M * K), sizeof(float)), *B = calloc((size_t)(K * N), sizeof(float));
            float *C1 = calloc((size_t)(M * N), sizeof(float)), *C2 = calloc((size_t)(M * N), sizeof(float));
            for (int64_t i = 0; i < M * K; i++)
                A[i] = (float)((i * 7) % 13) - 6.0f;
            for (int64_t i = 0; i < K * N; i++)
                B[i] = (float)((i * 5) % 11) * 0.25f;
            size_t bytes = kn_sgemm_workspace(ta, tb, M, N, K);
            void *ws = bytes ? aligned_alloc(64, (bytes + 63) & ~(size_t)63) : NULL;
            kn_sgemm(ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C1, N);
            kn_sgemm_ws(ws, bytes, ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, 0.0f, C2, N);
            identical += memcmp(C1, C2, sizeof(float) * (size_t)(M * N)) == 0;
            cases++;
            free(ws);
            free(A);
            free(B);
            free(C1);
            free(C2);
        }
    }
    printf("caller workspace: %d of %d products bit-identical to kn_sgemm\n", identical, cases);
    CHECK(identical == cases);
}

/* Products the direct kernel takes (A read in place, nothing packed) give the blocked path's bits: the
 * same products with op(B) packed first go through the blocked path whatever their size. Attention's
 * per-head shapes, tails of fewer than 4 rows, 16-wide and wider tiles, every transpose, beta 0 and
 * not. Products the dot kernel takes are not the blocked path's. */
static void test_direct_bit_identical(void) {
    const int64_t shapes[][3] = {{49, 49, 16}, {49, 16, 49}, {16, 49, 49}, {49, 49, 49}, {3, 5, 7},
                                 {15, 16, 9},  {29, 33, 64}, {2, 17, 40}, {64, 64, 64}};
    int direct = 0, identical = 0, cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int t = 0; t < 8; t++) {
            bool ta = t & 1, tb = t & 2;
            float beta = t & 4 ? 0.5f : 0.0f;
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            bool takes_direct = kn_sgemm_takes_direct(ta, tb, M, N, K);
            if (!takes_direct && !kn_sgemm_packs_b(tb, M, N))
                continue; // the dot kernel's product
            gemm_case c = {ta, tb, M, N, K, 1.25f, beta, 3, false};
            gemm_data d = gemm_data_make(&c, 7000 + (uint64_t)(s * 8 + (size_t)t));
            size_t c_bytes = (size_t)(M * d.ldc) * sizeof(float);
            float *blocked = malloc(c_bytes), *packed_b = malloc(sizeof(float) * kn_sgemm_packed_b_floats(K, N));
            memcpy(blocked, d.C_init, c_bytes);
            kn_sgemm_pack_b(tb, K, N, d.B, d.ldb, packed_b);
            kn_sgemm_ws_packed_b(NULL, 0, ta, M, N, K, c.alpha, d.A, d.lda, packed_b, beta, blocked, d.ldc);
            memcpy(d.C_fast, d.C_init, c_bytes);
            kn_sgemm(ta, tb, M, N, K, c.alpha, d.A, d.lda, d.B, d.ldb, beta, d.C_fast, d.ldc);
            direct += takes_direct;
            identical += memcmp(blocked, d.C_fast, c_bytes) == 0;
            cases++;
            free(blocked);
            free(packed_b);
            gemm_data_free(&d);
        }
    }
    printf("direct kernel: %d of %d small products taken by it, %d bit-identical to the blocked path\n", direct,
           cases, identical);
    CHECK(identical == cases);
    if (kn_gemm_kernel_best()->direct)
        CHECK(direct > cases / 2);
}

int main(void) {
    test_caller_workspace();
    test_direct_bit_identical();
    const struct {
        kn_gemm_path path;
        const char *name;
    } paths[] = {
        {KN_GEMM_PATH_GENERIC, "generic"}, {KN_GEMM_PATH_AVX2, "avx2"}, {KN_GEMM_PATH_AVX512, "avx512"}};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        const kn_gemm_kernel *kernel = kn_gemm_kernel_for(paths[p].path);
        if (kernel)
            kernels[kernel_count++] = kernel;
        else
            printf("%-8s skipped: not built for or not supported by this CPU\n", paths[p].name);
    }
    kn_threads_set(1);
    test_sizes();
    test_model_shapes();
    for (int p = 0; p < kernel_count; p++) {
        test_empty(kernels[p]);
        test_threads_bit_identical(kernels[p]);
        test_inside_parallel_region(kernels[p]);
        const error_stats *e = &kernel_errors[p];
        printf("%-8s (%dx%d tile, %dx%d dot): max |fast - ref| %.3g, max error / bound %.3g, "
               "elements off %lld\n",
               kernels[p]->name, kernels[p]->mr, kernels[p]->nr, kernels[p]->dot_mr, kernels[p]->dot_nr,
               e->worst_abs_diff, e->worst_fraction_of_bound, (long long)e->bad_elements);
    }
    printf("kn_sgemm uses %s\n", kn_gemm_kernel_best()->name);
    test_public_entry();
    return check_finish();
}
