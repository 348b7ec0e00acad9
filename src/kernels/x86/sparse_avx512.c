/* The sparse kernels with AVX-512: a group of 16 weight rows is one vector, its slab of `a` two
 * registers permuted by the lane columns; a block of input rows is one vector, a broadcast weight times
 * a row of at. */
#include <immintrin.h>
#include <stdint.h>

#include "kernels/sparse.h"

/* One step of a group: its 16 rows' (column, value) pairs of this slab, the columns picked from lo:hi. */
static inline __attribute__((always_inline)) __m512 lanes_step(__m512 acc, __m512 lo, __m512 hi, const uint8_t *lane_col,
                                                               const float *lane_val, int64_t t) {
    __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(lane_col + t * 16)));
    return _mm512_fmadd_ps(_mm512_loadu_ps(lane_val + t * 16), _mm512_permutex2var_ps(lo, idx, hi), acc);
}

/* Groups g0 .. g0 + G - 1 at once, each in its own accumulator and in its own order (the steps of a slab
 * one after another, slab after slab), so the sums are those of one group at a time: a group's steps are
 * a chain of dependent multiply-adds, 4 cycles each, and G chains side by side keep the unit busy. In each
 * slab the steps every group has run interleaved, the rest group by group. */
static inline __attribute__((always_inline)) void lanes_groups(int G, const float *a, int64_t K, int64_t slabs,
                                                               int64_t g0, const int64_t *offsets,
                                                               const uint8_t *lane_col, const float *lane_val,
                                                               const float *bias, float *y, int64_t N) {
    __m512 acc[4];
    for (int j = 0; j < G; j++)
        acc[j] = _mm512_setzero_ps();
    for (int64_t s = 0; s < slabs; s++) {
        int64_t left = K - s * 32; // columns of this slab that exist
        __mmask16 m_lo = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
        __mmask16 m_hi = left >= 32 ? (__mmask16)0xFFFF : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
        __m512 lo = _mm512_maskz_loadu_ps(m_lo, a + s * 32), hi = _mm512_maskz_loadu_ps(m_hi, a + s * 32 + 16);
        int64_t first[4], count[4], common = INT64_MAX;
        for (int j = 0; j < G; j++) {
            first[j] = offsets[(g0 + j) * slabs + s];
            count[j] = offsets[(g0 + j) * slabs + s + 1] - first[j];
            common = count[j] < common ? count[j] : common;
        }
        for (int64_t k = 0; k < common; k++)
            for (int j = 0; j < G; j++)
                acc[j] = lanes_step(acc[j], lo, hi, lane_col, lane_val, first[j] + k);
        for (int j = 0; j < G; j++)
            for (int64_t k = common; k < count[j]; k++)
                acc[j] = lanes_step(acc[j], lo, hi, lane_col, lane_val, first[j] + k);
    }
    for (int j = 0; j < G; j++) {
        int64_t row0 = (g0 + j) * 16, rows = N - row0 < 16 ? N - row0 : 16;
        __mmask16 m = rows == 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rows) - 1);
        __m512 b = bias ? _mm512_maskz_loadu_ps(m, bias + row0) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(y + row0, m, _mm512_add_ps(b, acc[j]));
    }
}

static void sparse_lanes_avx512(const float *a, int64_t K, const int64_t *offsets, const uint8_t *lane_col,
                                const float *lane_val, const float *bias, float *y, int64_t N) {
    _Static_assert(KN_SPARSE_LANES == 16 && KN_SPARSE_SLAB == 32, "a group is one vector, a slab two");
    int64_t slabs = (K + 31) / 32, groups = (N + 15) / 16, g = 0;
    for (; g + 4 <= groups; g += 4)
        lanes_groups(4, a, K, slabs, g, offsets, lane_col, lane_val, bias, y, N);
    for (; g < groups; g++)
        lanes_groups(1, a, K, slabs, g, offsets, lane_col, lane_val, bias, y, N);
}

static void sparse_rows_avx512(const float *at, int64_t rows, const float *values, const int32_t *col,
                               const int64_t *start, const float *bias, float *y, int64_t N) {
    _Static_assert(KN_SPARSE_ROW_BLOCK == 16, "one block of rows is one vector");
    for (int64_t j = 0; j < N; j++) {
        __m512 acc = _mm512_setzero_ps();
        for (int64_t p = start[j]; p < start[j + 1]; p++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(values[p]), _mm512_loadu_ps(at + (int64_t)col[p] * 16), acc);
        float out[16]; // (block): one output per row of the block
        _mm512_storeu_ps(out, _mm512_add_ps(_mm512_set1_ps(bias ? bias[j] : 0.0f), acc));
        for (int64_t r = 0; r < rows; r++)
            y[r * N + j] = out[r];
    }
}

const kn_sparse_kernels kn_sparse_avx512 = {.name = "avx512", .lanes = sparse_lanes_avx512, .rows = sparse_rows_avx512};
