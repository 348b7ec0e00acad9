/* kernels/pool2x2.h for AVX-512 (CMake sets the flags of *_avx512.c). gcc's vectorization of the
 * generic loops for AVX2 and AVX-512 ran two to four times slower than their SSE2 build (the stride-2
 * reads), so this build deinterleaves by hand: 16 windows of a row pair at a time, the columns split
 * into the windows' left and right pixels by two permutes per row, the picks as compare masks, and the
 * four gradients interleaved back the same way. A row's last windows (all of them in a 14- or 7-window
 * row) go through the same code with masked loads and stores. It compares, selects and adds to 0 or to
 * dx exactly as the generic loops do, so the bits are the same. */
#include <immintrin.h>

#include "kernels/pool2x2.h"

/* The lanes of the first `count` of 16 (count in [0, 16]). */
static __mmask16 first_lanes(int64_t count) { return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1); }

/* The left (even) and right (odd) pixels of `windows` (1 to 16) windows of a row starting at row[0]. */
static void split_pairs(const float *row, int64_t windows, __m512 *left, __m512 *right) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 lo = _mm512_maskz_loadu_ps(first_lanes(2 * windows), row);
    __m512 hi = _mm512_maskz_loadu_ps(first_lanes(2 * windows - 16 > 0 ? 2 * windows - 16 : 0), row + 16);
    *left = _mm512_permutex2var_ps(lo, even, hi);
    *right = _mm512_permutex2var_ps(lo, odd, hi);
}

/* row[2 t] = left[t], row[2 t + 1] = right[t] for the `windows` (1 to 16) windows. */
static void store_pairs(float *row, int64_t windows, __m512 left, __m512 right) {
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    _mm512_mask_storeu_ps(row, first_lanes(2 * windows), _mm512_permutex2var_ps(left, low, right));
    _mm512_mask_storeu_ps(row + 16, first_lanes(2 * windows - 16 > 0 ? 2 * windows - 16 : 0),
                          _mm512_permutex2var_ps(left, high, right));
}

/* KN_MAX_PICK(a, v) of the generic build: v where v > a or v is NaN, else a. */
static __m512 max_pick(__m512 a, __m512 v) {
    __mmask16 take = _mm512_cmp_ps_mask(v, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(take, a, v);
}

void kn_maxpool2x2_forward_avx512(const kn_pool2x2 *g, const float *x, float *y) {
    for (int64_t oh = 0; oh < g->out_h; oh++) {
        const float *r0 = x + 2 * oh * g->in_w, *r1 = r0 + g->in_w;
        float *y_row = y + oh * g->out_w;
        for (int64_t t = 0; t < g->out_w; t += 16) {
            int64_t windows = g->out_w - t < 16 ? g->out_w - t : 16;
            __m512 v0, v1, v2, v3;
            split_pairs(r0 + 2 * t, windows, &v0, &v1);
            split_pairs(r1 + 2 * t, windows, &v2, &v3);
            __m512 a = max_pick(max_pick(max_pick(v0, v1), v2), v3);
            _mm512_mask_storeu_ps(y_row + t, first_lanes(windows), a);
        }
    }
}

/* `windows` (1 to 16) windows of a row pair: the generic build's flags, as masks. */
static void backward_windows(const float *r0, const float *r1, const float *dy, float *d0, float *d1,
                             int64_t windows, bool store) {
    __m512 v0, v1, v2, v3;
    split_pairs(r0, windows, &v0, &v1);
    split_pairs(r1, windows, &v2, &v3);
    __mmask16 nan0 = _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q), nan1 = _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
    __mmask16 nan2 = _mm512_cmp_ps_mask(v2, v2, _CMP_UNORD_Q), nan3 = _mm512_cmp_ps_mask(v3, v3, _CMP_UNORD_Q);
    /* v1 > v0 ? v1 : v0, and so on: the maximum when there is no NaN */
    __m512 max01 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v1, v0, _CMP_GT_OQ), v0, v1);
    __m512 max012 = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v2, max01, _CMP_GT_OQ), max01, v2);
    __m512 max = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v3, max012, _CMP_GT_OQ), max012, v3);
    __mmask16 eq0 = _mm512_cmp_ps_mask(v0, max, _CMP_EQ_OQ), eq1 = _mm512_cmp_ps_mask(v1, max, _CMP_EQ_OQ);
    __mmask16 eq2 = _mm512_cmp_ps_mask(v2, max, _CMP_EQ_OQ);
    __mmask16 pick0 = nan0 | (~(nan1 | nan2 | nan3) & eq0);
    __mmask16 pick1 = ~pick0 & (nan1 | (~(nan2 | nan3) & eq1));
    __mmask16 pick2 = ~pick0 & ~pick1 & (nan2 | (~nan3 & eq2));
    __mmask16 pick3 = ~(pick0 | pick1 | pick2);
    __m512 grad = _mm512_maskz_loadu_ps(first_lanes(windows), dy);
    __m512 zero = _mm512_setzero_ps(), base0l = zero, base0r = zero, base1l = zero, base1r = zero;
    if (!store) {
        split_pairs(d0, windows, &base0l, &base0r);
        split_pairs(d1, windows, &base1l, &base1r);
    }
    /* (store ? 0 : dx) + (pick ? grad : 0), the generic formula: 0 + -0 gives +0 there too */
    store_pairs(d0, windows, _mm512_add_ps(base0l, _mm512_maskz_mov_ps(pick0, grad)),
                _mm512_add_ps(base0r, _mm512_maskz_mov_ps(pick1, grad)));
    store_pairs(d1, windows, _mm512_add_ps(base1l, _mm512_maskz_mov_ps(pick2, grad)),
                _mm512_add_ps(base1r, _mm512_maskz_mov_ps(pick3, grad)));
}

void kn_maxpool2x2_backward_avx512(const kn_pool2x2 *g, const float *x, const float *dy, float *dx, bool store) {
    for (int64_t oh = 0; oh < g->out_h; oh++) {
        const float *r0 = x + 2 * oh * g->in_w, *r1 = r0 + g->in_w;
        float *d0 = dx + 2 * oh * g->in_w, *d1 = d0 + g->in_w;
        const float *dy_row = dy + oh * g->out_w;
        for (int64_t t = 0; t < g->out_w; t += 16)
            backward_windows(r0 + 2 * t, r1 + 2 * t, dy_row + t, d0 + 2 * t, d1 + 2 * t,
                             g->out_w - t < 16 ? g->out_w - t : 16, store);
    }
}
