/* AVX-512F kernels (contracts in gemm_internal.h).
 *
 * Micro-kernel: a 14 x 32 tile of C in 28 zmm accumulators (two vectors per row). Each step of k loads
 * one 32-wide row of B and broadcasts 14 values of packed A into 28 FMAs, which leaves registers for
 * the two B vectors and the broadcast. Tiles on the bottom edge (m < 14) run a kernel compiled for
 * exactly m rows, so short matrices (inference with a handful of rows) do no wasted FMAs; tiles on the
 * right edge (n < 32) load and store C through lane masks. Each step prefetches B's row PREFETCH_STEPS
 * ahead: inside a network B often comes from memory (a 7x7 layer's 9.4 MB of packed weights, read once
 * per image), and the loads otherwise stalled the FMAs; resnet18 at batch 1 went from 23.9 to 21.8 ms
 * on 1 thread and from 16.1 to 13.9 on 2, in-cache products (bench/gemm_bench.c) unchanged.
 *
 * Transposing pack: 16 rows of 16 floats of k at a time, transposed in registers (x86/transpose_avx512.h).
 *
 * Dot kernel: up to 4 x 4 dot products, each summed in the 16 lanes of one accumulator (16 floats of k
 * per step, the last step masked) and reduced at the end. */
#include <immintrin.h>
#include <string.h>

#include "kernels/gemm_internal.h"
#include "kernels/x86/transpose_avx512.h"

#define MR KN_GEMM_AVX512_MR
#define NR KN_GEMM_AVX512_NR
#define DOT_MR KN_GEMM_AVX512_DOT_MR
#define DOT_NR KN_GEMM_AVX512_DOT_NR

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define PREFETCH_STEPS 16

/* `rows` is a constant in every caller, so loops over rows unroll fully and the accumulator arrays live
 * in registers. clang does that by itself (and does worse when told to); gcc needs the pragma, or it
 * keeps the accumulators in a stack array. */
#ifdef __clang__
#define UNROLL
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

/* acc[i] += a[i] * b over the rows of one step of k. */
ALWAYS_INLINE void tile_step(const int rows, const float *a_k, const float *b_k, __m512 *acc_lo,
                             __m512 *acc_hi) {
    __m512 b_lo = _mm512_loadu_ps(b_k), b_hi = _mm512_loadu_ps(b_k + 16);
    UNROLL
    for (int i = 0; i < rows; i++) {
        __m512 a_ik = _mm512_set1_ps(a_k[i]);
        acc_lo[i] = _mm512_fmadd_ps(a_ik, b_lo, acc_lo[i]);
        acc_hi[i] = _mm512_fmadd_ps(a_ik, b_hi, acc_hi[i]);
    }
}

ALWAYS_INLINE void tile(const int rows, int64_t kc, const float *a, const float *b, int64_t ldb,
                        float alpha, float beta, float *c, int64_t ldc, __mmask16 mask_lo,
                        __mmask16 mask_hi) {
    // Two FMA pipes of latency 4 need 8 independent sums in flight. A tile of fewer than 4 rows has
    // fewer, so it splits k into `ways` interleaved partial sums, added together at the end.
    const int ways = rows >= 4 ? 1 : rows == 1 ? 4 : 2;
    __m512 acc_lo[4][MR], acc_hi[4][MR]; // [way][row]: columns 0..15 and 16..31
    UNROLL
    for (int w = 0; w < ways; w++) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            acc_lo[w][i] = _mm512_setzero_ps();
            acc_hi[w][i] = _mm512_setzero_ps();
        }
    }
    int64_t k = 0;
    for (; k + ways <= kc; k += ways) {
        UNROLL
        for (int w = 0; w < ways; w++) {
            // B's row PREFETCH_STEPS ahead, its two cache lines (an address, not a read: it may lie
            // past the sliver, and a prefetch never faults)
            uintptr_t ahead = (uintptr_t)(b + (k + w) * ldb) + (uintptr_t)(PREFETCH_STEPS * ldb) * sizeof(float);
            _mm_prefetch((const char *)ahead, _MM_HINT_T0);
            _mm_prefetch((const char *)(ahead + 64), _MM_HINT_T0);
            tile_step(rows, a + (k + w) * MR, b + (k + w) * ldb, acc_lo[w], acc_hi[w]);
        }
    }
    for (; k < kc; k++)
        tile_step(rows, a + k * MR, b + k * ldb, acc_lo[0], acc_hi[0]);
    UNROLL
    for (int w = 1; w < ways; w++) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            acc_lo[0][i] = _mm512_add_ps(acc_lo[0][i], acc_lo[w][i]);
            acc_hi[0][i] = _mm512_add_ps(acc_hi[0][i], acc_hi[w][i]);
        }
    }
    __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
    if (beta == 0.0f) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            _mm512_mask_storeu_ps(c + i * ldc, mask_lo, _mm512_mul_ps(alpha_v, acc_lo[0][i]));
            _mm512_mask_storeu_ps(c + i * ldc + 16, mask_hi, _mm512_mul_ps(alpha_v, acc_hi[0][i]));
        }
    } else {
        UNROLL
        for (int i = 0; i < rows; i++) {
            __m512 c_lo = _mm512_maskz_loadu_ps(mask_lo, c + i * ldc);
            __m512 c_hi = _mm512_maskz_loadu_ps(mask_hi, c + i * ldc + 16);
            c_lo = _mm512_fmadd_ps(beta_v, c_lo, _mm512_mul_ps(alpha_v, acc_lo[0][i]));
            c_hi = _mm512_fmadd_ps(beta_v, c_hi, _mm512_mul_ps(alpha_v, acc_hi[0][i]));
            _mm512_mask_storeu_ps(c + i * ldc, mask_lo, c_lo);
            _mm512_mask_storeu_ps(c + i * ldc + 16, mask_hi, c_hi);
        }
    }
}

/* The first `lanes` of 16 lanes (clamped to 0..16). */
static __mmask16 lane_mask(int64_t lanes) {
    return lanes >= 16 ? (__mmask16)0xffff : lanes <= 0 ? (__mmask16)0 : (__mmask16)((1u << lanes) - 1);
}

/* One function per row count, each with `rows` fixed. */
#define TILE_ROWS(r)                                                                                    \
    static void tile_##r(int64_t kc, const float *a, const float *b, int64_t ldb, float alpha,          \
                         float beta, float *c, int64_t ldc, __mmask16 mask_lo, __mmask16 mask_hi) {     \
        tile(r, kc, a, b, ldb, alpha, beta, c, ldc, mask_lo, mask_hi);                                  \
    }
TILE_ROWS(1) TILE_ROWS(2) TILE_ROWS(3) TILE_ROWS(4) TILE_ROWS(5) TILE_ROWS(6) TILE_ROWS(7)
TILE_ROWS(8) TILE_ROWS(9) TILE_ROWS(10) TILE_ROWS(11) TILE_ROWS(12) TILE_ROWS(13) TILE_ROWS(14)
#undef TILE_ROWS

typedef void (*tile_fn)(int64_t kc, const float *a, const float *b, int64_t ldb, float alpha, float beta,
                        float *c, int64_t ldc, __mmask16 mask_lo, __mmask16 mask_hi);
static const tile_fn tile_for_rows[MR + 1] = {NULL,   tile_1, tile_2,  tile_3,  tile_4,
                                              tile_5, tile_6, tile_7,  tile_8,  tile_9,
                                              tile_10, tile_11, tile_12, tile_13, tile_14};

void kn_gemm_microkernel_avx512(int64_t kc, int m, int n, const float *a, const float *b, int64_t ldb,
                                float alpha, float beta, float *c, int64_t ldc) {
    tile_for_rows[m](kc, a, b, ldb, alpha, beta, c, ldc, lane_mask(n), lane_mask(n - 16));
}

/* The direct kernel: tile() with A read where it lies, op(A)[i][k] = a[i * a_rs + k * a_cs], and B's
 * rows loaded through the lane masks, so nothing past column n is read. Its steps, ways and final
 * scaling are tile()'s, so a tile gets the same bits either way. A tile at most 16 columns wide
 * (`wide` false) keeps only the low accumulators: half the FMAs of a 16-column head. */
ALWAYS_INLINE void direct_step(const int rows, const bool wide, const float *a_k, int64_t a_rs, const float *b_k,
                               __mmask16 mask_lo, __mmask16 mask_hi, __m512 *acc_lo, __m512 *acc_hi) {
    __m512 b_lo = _mm512_maskz_loadu_ps(mask_lo, b_k);
    __m512 b_hi = wide ? _mm512_maskz_loadu_ps(mask_hi, b_k + 16) : b_lo;
    UNROLL
    for (int i = 0; i < rows; i++) {
        __m512 a_ik = _mm512_set1_ps(a_k[i * a_rs]);
        acc_lo[i] = _mm512_fmadd_ps(a_ik, b_lo, acc_lo[i]);
        if (wide)
            acc_hi[i] = _mm512_fmadd_ps(a_ik, b_hi, acc_hi[i]);
    }
}

ALWAYS_INLINE void direct_tile(const int rows, const bool wide, int64_t kc, const float *a, int64_t a_rs,
                               int64_t a_cs, const float *b, int64_t ldb, float alpha, float beta, float *c,
                               int64_t ldc, __mmask16 mask_lo, __mmask16 mask_hi) {
    const int ways = rows >= 4 ? 1 : rows == 1 ? 4 : 2; // as in tile()
    __m512 acc_lo[4][MR], acc_hi[4][MR];
    UNROLL
    for (int w = 0; w < ways; w++) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            acc_lo[w][i] = _mm512_setzero_ps();
            acc_hi[w][i] = _mm512_setzero_ps();
        }
    }
    int64_t k = 0;
    for (; k + ways <= kc; k += ways) {
        UNROLL
        for (int w = 0; w < ways; w++)
            direct_step(rows, wide, a + (k + w) * a_cs, a_rs, b + (k + w) * ldb, mask_lo, mask_hi, acc_lo[w],
                        acc_hi[w]);
    }
    for (; k < kc; k++)
        direct_step(rows, wide, a + k * a_cs, a_rs, b + k * ldb, mask_lo, mask_hi, acc_lo[0], acc_hi[0]);
    UNROLL
    for (int w = 1; w < ways; w++) {
        UNROLL
        for (int i = 0; i < rows; i++) {
            acc_lo[0][i] = _mm512_add_ps(acc_lo[0][i], acc_lo[w][i]);
            acc_hi[0][i] = _mm512_add_ps(acc_hi[0][i], acc_hi[w][i]);
        }
    }
    __m512 alpha_v = _mm512_set1_ps(alpha), beta_v = _mm512_set1_ps(beta);
    UNROLL
    for (int i = 0; i < rows; i++) {
        __m512 lo = _mm512_mul_ps(alpha_v, acc_lo[0][i]), hi = _mm512_mul_ps(alpha_v, acc_hi[0][i]);
        if (beta != 0.0f) {
            lo = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(mask_lo, c + i * ldc), lo);
            if (wide)
                hi = _mm512_fmadd_ps(beta_v, _mm512_maskz_loadu_ps(mask_hi, c + i * ldc + 16), hi);
        }
        _mm512_mask_storeu_ps(c + i * ldc, mask_lo, lo);
        if (wide)
            _mm512_mask_storeu_ps(c + i * ldc + 16, mask_hi, hi);
    }
}

#define DIRECT_ROWS(r)                                                                                  \
    static void direct_##r(int64_t kc, const float *a, int64_t a_rs, int64_t a_cs, const float *b,      \
                           int64_t ldb, float alpha, float beta, float *c, int64_t ldc, __mmask16 mask_lo,\
                           __mmask16 mask_hi) {                                                         \
        direct_tile(r, true, kc, a, a_rs, a_cs, b, ldb, alpha, beta, c, ldc, mask_lo, mask_hi);         \
    }                                                                                                   \
    static void direct_narrow_##r(int64_t kc, const float *a, int64_t a_rs, int64_t a_cs, const float *b,\
                                  int64_t ldb, float alpha, float beta, float *c, int64_t ldc,          \
                                  __mmask16 mask_lo, __mmask16 mask_hi) {                               \
        direct_tile(r, false, kc, a, a_rs, a_cs, b, ldb, alpha, beta, c, ldc, mask_lo, mask_hi);        \
    }
DIRECT_ROWS(1) DIRECT_ROWS(2) DIRECT_ROWS(3) DIRECT_ROWS(4) DIRECT_ROWS(5) DIRECT_ROWS(6) DIRECT_ROWS(7)
DIRECT_ROWS(8) DIRECT_ROWS(9) DIRECT_ROWS(10) DIRECT_ROWS(11) DIRECT_ROWS(12) DIRECT_ROWS(13) DIRECT_ROWS(14)
#undef DIRECT_ROWS

typedef void (*direct_fn)(int64_t kc, const float *a, int64_t a_rs, int64_t a_cs, const float *b, int64_t ldb,
                          float alpha, float beta, float *c, int64_t ldc, __mmask16 mask_lo, __mmask16 mask_hi);
static const direct_fn direct_for_rows[MR + 1] = {NULL,      direct_1,  direct_2,  direct_3,  direct_4,
                                                  direct_5,  direct_6,  direct_7,  direct_8,  direct_9,
                                                  direct_10, direct_11, direct_12, direct_13, direct_14};
static const direct_fn direct_narrow_for_rows[MR + 1] = {
    NULL,               direct_narrow_1,  direct_narrow_2,  direct_narrow_3,  direct_narrow_4,
    direct_narrow_5,    direct_narrow_6,  direct_narrow_7,  direct_narrow_8,  direct_narrow_9,
    direct_narrow_10,   direct_narrow_11, direct_narrow_12, direct_narrow_13, direct_narrow_14};

void kn_gemm_directkernel_avx512(int64_t kc, int m, int n, const float *a, int64_t a_rs, int64_t a_cs,
                                 const float *b, int64_t ldb, float alpha, float beta, float *c, int64_t ldc) {
    const direct_fn *table = n <= 16 ? direct_narrow_for_rows : direct_for_rows;
    table[m](kc, a, a_rs, a_cs, b, ldb, alpha, beta, c, ldc, lane_mask(n), lane_mask(n - 16));
}

ALWAYS_INLINE void dot_tile(const int rows, int64_t K, int n, const float *a, int64_t lda, const float *b,
                            int64_t ldb, float alpha, float beta, float *c, int64_t ldc) {
    // Columns past n re-read row 0 of b, so every step does DOT_NR columns; their sums are dropped.
    const float *b_row[DOT_NR];
    UNROLL
    for (int j = 0; j < DOT_NR; j++)
        b_row[j] = b + (j < n ? j : 0) * ldb;
    __m512 acc[DOT_MR][DOT_NR];
    UNROLL
    for (int i = 0; i < rows; i++) {
        UNROLL
        for (int j = 0; j < DOT_NR; j++)
            acc[i][j] = _mm512_setzero_ps();
    }
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = lane_mask(K - k); // all lanes but on the last step
        __m512 b_k[DOT_NR];
        UNROLL
        for (int j = 0; j < DOT_NR; j++)
            b_k[j] = _mm512_maskz_loadu_ps(mask, b_row[j] + k);
        UNROLL
        for (int i = 0; i < rows; i++) {
            __m512 a_k = _mm512_maskz_loadu_ps(mask, a + i * lda + k);
            UNROLL
            for (int j = 0; j < DOT_NR; j++)
                acc[i][j] = _mm512_fmadd_ps(a_k, b_k[j], acc[i][j]);
        }
    }
    UNROLL
    for (int i = 0; i < rows; i++) {
        float sum[DOT_NR];
        UNROLL
        for (int j = 0; j < DOT_NR; j++)
            sum[j] = _mm512_reduce_add_ps(acc[i][j]);
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
DOT_ROWS(1) DOT_ROWS(2) DOT_ROWS(3) DOT_ROWS(4)
#undef DOT_ROWS

typedef void (*dot_fn)(int64_t K, int n, const float *a, int64_t lda, const float *b, int64_t ldb,
                       float alpha, float beta, float *c, int64_t ldc);
static const dot_fn dot_for_rows[DOT_MR + 1] = {NULL, dot_1, dot_2, dot_3, dot_4};

void kn_gemm_dotkernel_avx512(int64_t K, int m, int n, const float *a, int64_t lda, const float *b,
                              int64_t ldb, float alpha, float beta, float *c, int64_t ldc) {
    dot_for_rows[m](K, n, a, lda, b, ldb, alpha, beta, c, ldc);
}

void kn_gemm_pack_columns_avx512(const float *src, int64_t ld, int64_t kc, int count, int width, float *dst) {
    if (count < width)
        memset(dst, 0, (size_t)(kc * width) * sizeof(float));
    for (int x = 0; x < count; x += 16) {
        int rows = count - x < 16 ? count - x : 16;
        __mmask16 store_mask = kn_lane_mask16(width - x); // the lanes of this sliver's columns
        for (int64_t k = 0; k < kc; k += 16) {
            int steps = kc - k < 16 ? (int)(kc - k) : 16;
            __mmask16 load_mask = kn_lane_mask16(steps);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < rows ? _mm512_maskz_loadu_ps(load_mask, src + (x + i) * ld + k) : _mm512_setzero_ps();
            kn_transpose16(r); // r[kk]: column x.. of step k + kk
            for (int kk = 0; kk < steps; kk++)
                _mm512_mask_storeu_ps(dst + (k + kk) * width + x, store_mask, r[kk]);
        }
    }
}
