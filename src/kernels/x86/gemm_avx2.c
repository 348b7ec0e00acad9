/* AVX2 + FMA kernels (contracts in gemm_internal.h).
 *
 * Micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators (two vectors per row). Each step of k loads
 * one 16-wide row of B and broadcasts 6 values of packed A into 12 FMAs. Tiles on the bottom edge
 * (m < 6) run a kernel compiled for exactly m rows; tiles on the right edge (n < 16) load and store C
 * through lane masks.
 *
 * Column packing: 8 rows x 8 floats of k at a time through an in-register 8 x 8 transpose. It is the
 * AVX-512 kernels' packing too (every CPU with AVX-512F that kiln uses has AVX2).
 *
 * Dot kernel: up to 2 x 4 dot products, each summed in the 8 lanes of one accumulator (8 floats of k
 * per step, the last step masked) and reduced at the end. */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemm_internal.h"

#define MR KN_GEMM_AVX2_MR
#define NR KN_GEMM_AVX2_NR
#define DOT_MR KN_GEMM_AVX2_DOT_MR
#define DOT_NR KN_GEMM_AVX2_DOT_NR

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* `rows` is a constant in every caller, so loops over rows unroll fully and the accumulator arrays live
 * in registers. clang does that by itself (and does worse when told to); gcc needs the pragma, or it
 * keeps the accumulators in a stack array. */
#ifdef __clang__
#define UNROLL
#else
#define UNROLL _Pragma("GCC unroll 8")
#endif

/* acc[i] += a[i] * b over the rows of one step of k. */
ALWAYS_INLINE void tile_step(const int rows, const float *a_k, const float *b_k, __m256 *acc_lo,
                             __m256 *acc_hi) {
    __m256 b_lo = _mm256_loadu_ps(b_k), b_hi = _mm256_loadu_ps(b_k + 8);
    UNROLL
    for (int i = 0; i < rows; i++) {
        __m256 a_ik = _mm256_broadcast_ss(a_k + i);
        acc_lo[i] = _mm256_fmadd_ps(a_ik, b_lo, acc_lo[i]);
        acc_hi[i] = _mm256_fmadd_ps(a_ik, b_hi, acc_hi[i]);
    }
}

ALWAYS_INLINE void tile(const int rows, int64_t kc, const float *a, const float *b, int64_t ldb,
                        float alpha, float beta, float *c, int64_t ldc, __m256i mask_lo, __m256i mask_hi) {
    // Two FMA pipes of latency 4 need 8 independent sums in flight. A tile of fewer than 4 rows has
    // fewer, so it splits k into `ways` interleaved partial sums, added together at the end.
    const int ways = rows >= 4 ? 1 : rows == 1 ? 4 : 2;
    __m256 acc_lo[4][MR], acc_hi[4][MR]; // [way][row]: columns 0..7 and 8..15
    UNROLL
    for (int w = 0; w < ways; w++) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            acc_lo[w][i] = _mm256_setzero_ps();
            acc_hi[w][i] = _mm256_setzero_ps();
        }
    }
    int64_t k = 0;
    for (; k + ways <= kc; k += ways) {
        UNROLL
        for (int w = 0; w < ways; w++)
            tile_step(rows, a + (k + w) * MR, b + (k + w) * ldb, acc_lo[w], acc_hi[w]);
    }
    for (; k < kc; k++)
        tile_step(rows, a + k * MR, b + k * ldb, acc_lo[0], acc_hi[0]);
    UNROLL
    for (int w = 1; w < ways; w++) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            acc_lo[0][i] = _mm256_add_ps(acc_lo[0][i], acc_lo[w][i]);
            acc_hi[0][i] = _mm256_add_ps(acc_hi[0][i], acc_hi[w][i]);
        }
    }
    __m256 alpha_v = _mm256_set1_ps(alpha), beta_v = _mm256_set1_ps(beta);
    if (beta == 0.0f) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            _mm256_maskstore_ps(c + i * ldc, mask_lo, _mm256_mul_ps(alpha_v, acc_lo[0][i]));
            _mm256_maskstore_ps(c + i * ldc + 8, mask_hi, _mm256_mul_ps(alpha_v, acc_hi[0][i]));
        }
    } else {
        UNROLL
        for (int i = 0; i < rows; i++) {
            __m256 c_lo = _mm256_maskload_ps(c + i * ldc, mask_lo);
            __m256 c_hi = _mm256_maskload_ps(c + i * ldc + 8, mask_hi);
            c_lo = _mm256_fmadd_ps(beta_v, c_lo, _mm256_mul_ps(alpha_v, acc_lo[0][i]));
            c_hi = _mm256_fmadd_ps(beta_v, c_hi, _mm256_mul_ps(alpha_v, acc_hi[0][i]));
            _mm256_maskstore_ps(c + i * ldc, mask_lo, c_lo);
            _mm256_maskstore_ps(c + i * ldc + 8, mask_hi, c_hi);
        }
    }
}

/* All-ones in the first `lanes` of 8 lanes (clamped to 0..8), as maskload/maskstore want. */
static __m256i lane_mask(int64_t lanes) {
    int clamped = lanes < 0 ? 0 : lanes > 8 ? 8 : (int)lanes;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(clamped), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One function per row count, each with `rows` fixed. */
#define TILE_ROWS(r)                                                                                    \
    static void tile_##r(int64_t kc, const float *a, const float *b, int64_t ldb, float alpha,          \
                         float beta, float *c, int64_t ldc, __m256i mask_lo, __m256i mask_hi) {         \
        tile(r, kc, a, b, ldb, alpha, beta, c, ldc, mask_lo, mask_hi);                                  \
    }
TILE_ROWS(1) TILE_ROWS(2) TILE_ROWS(3) TILE_ROWS(4) TILE_ROWS(5) TILE_ROWS(6)
#undef TILE_ROWS

typedef void (*tile_fn)(int64_t kc, const float *a, const float *b, int64_t ldb, float alpha, float beta,
                        float *c, int64_t ldc, __m256i mask_lo, __m256i mask_hi);
static const tile_fn tile_for_rows[MR + 1] = {NULL, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

void kn_gemm_microkernel_avx2(int64_t kc, int m, int n, const float *a, const float *b, int64_t ldb,
                              float alpha, float beta, float *c, int64_t ldc) {
    tile_for_rows[m](kc, a, b, ldb, alpha, beta, c, ldc, lane_mask(n), lane_mask(n - 8));
}

/* r[i] becomes column i of the 8 x 8 matrix whose rows were r[0..7]. */
static void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) { // interleave row pairs
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) { // then pairs of pairs
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) { // then the 128-bit halves of rows 0-3 with rows 4-7
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

void kn_gemm_pack_columns_avx2(const float *src, int64_t ld, int64_t kc, int count, int width,
                               float *dst) {
    if (count < width)
        memset(dst, 0, (size_t)(kc * width) * sizeof(float));
    for (int x = 0; x < count; x += 8) {
        int rows = count - x < 8 ? count - x : 8;
        const float *s = src + x * ld;
        float *d = dst + x;
        __m256i store_mask = lane_mask(rows);
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < rows ? _mm256_loadu_ps(s + i * ld + k) : _mm256_setzero_ps();
            transpose8(r);
            for (int kk = 0; kk < 8; kk++) {
                if (rows == 8)
                    _mm256_storeu_ps(d + (k + kk) * width, r[kk]);
                else
                    _mm256_maskstore_ps(d + (k + kk) * width, store_mask, r[kk]);
            }
        }
        for (; k < kc; k++)
            for (int i = 0; i < rows; i++)
                d[k * width + i] = s[i * ld + k];
    }
}

/* (v0 + v4) + (v2 + v6) + ((v1 + v5) + (v3 + v7)) */
static float sum_lanes(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Plain loads for whole steps; the masked load (slower) only for the last, partial one. */
ALWAYS_INLINE __m256 load_k(const float *p, bool partial, __m256i mask) {
    return partial ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}

ALWAYS_INLINE void dot_step(const int rows, bool partial, __m256i mask, const float *a, int64_t lda,
                            const float *const *b_row, int64_t k, __m256 acc[DOT_MR][DOT_NR]) {
    __m256 b_k[DOT_NR];
    UNROLL
    for (int j = 0; j < DOT_NR; j++)
        b_k[j] = load_k(b_row[j] + k, partial, mask);
    UNROLL
    for (int i = 0; i < rows; i++) {
        __m256 a_k = load_k(a + i * lda + k, partial, mask);
        UNROLL
        for (int j = 0; j < DOT_NR; j++)
            acc[i][j] = _mm256_fmadd_ps(a_k, b_k[j], acc[i][j]);
    }
}

ALWAYS_INLINE void dot_tile(const int rows, int64_t K, int n, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float alpha, float beta, float *c, int64_t ldc) {
    // Columns past n re-read row 0 of b, so every step does DOT_NR columns; their sums are dropped.
    const float *b_row[DOT_NR];
    UNROLL
    for (int j = 0; j < DOT_NR; j++)
        b_row[j] = b + (j < n ? j : 0) * ldb;
    __m256 acc[DOT_MR][DOT_NR];
    UNROLL
    for (int i = 0; i < rows; i++) {
        UNROLL
        for (int j = 0; j < DOT_NR; j++)
            acc[i][j] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
        dot_step(rows, false, _mm256_setzero_si256(), a, lda, b_row, k, acc);
    if (k < K)
        dot_step(rows, true, lane_mask(K - k), a, lda, b_row, k, acc);
    UNROLL
    for (int i = 0; i < rows; i++) {
        float sum[DOT_NR];
        UNROLL
        for (int j = 0; j < DOT_NR; j++)
            sum[j] = sum_lanes(acc[i][j]);
        for (int j = 0; j < n; j++) {
            float *c_ij = c + i * ldc + j;
            *c_ij = beta == 0.0f ? alpha * sum[j] : alpha * sum[j] + beta * *c_ij;
        }
    }
}

#define DOT_ROWS(r)                                                                                     \
    static void dot_##r(int64_t K, int n, const float *a, int64_t lda, const float *b, int64_t ldb,     \
                        float alpha, float beta, float *c, int64_t ldc) {                               \
        dot_tile(r, K, n, a, lda, b, ldb, alpha, beta, c, ldc);                                         \
    }
DOT_ROWS(1) DOT_ROWS(2)
#undef DOT_ROWS

typedef void (*dot_fn)(int64_t K, int n, const float *a, int64_t lda, const float *b, int64_t ldb,
                       float alpha, float beta, float *c, int64_t ldc);
static const dot_fn dot_for_rows[DOT_MR + 1] = {NULL, dot_1, dot_2};

void kn_gemm_dotkernel_avx2(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float alpha, float beta, float *c, int64_t ldc) {
    dot_for_rows[m](K, n, a, lda, b, ldb, alpha, beta, c, ldc);
}
