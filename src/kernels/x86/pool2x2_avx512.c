/* kernels/pool2x2.h for AVX-512 (CMake sets the flags of *_avx512.c). gcc's vectorization of the
 * generic loops for AVX2 and AVX-512 ran two to four times slower than their SSE2 build (the stride-2
 * reads), so this build deinterleaves by hand: up to 16 windows at a time, the pixels split into the
 * windows' left and right ones by two permutes per row, the picks as compare masks, and the four
 * gradients interleaved back the same way. The 16 lanes hold 16 windows of one row pair, or, when the
 * rows are at most 8 windows long and the windows tile them (a 14x14 plane's 7), the windows of two
 * row pairs, so that short rows do not leave most lanes idle; a row's last windows go through masked
 * loads and stores. It compares, selects and adds to 0 or to dx exactly as the generic loops do, so the
 * bits are the same. */
#include <immintrin.h>

#include "kernels/pool2x2.h"

/* The lanes of the first `count` of 16 (count in [0, 16]). */
static __mmask16 first_lanes(int64_t count) { return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1); }

/* Where a step's windows lie, from a pointer to the first pixel of their top row: pixels [lo, lo + 16)
 * and [hi, hi + 16) (the lanes in lo_mask and hi_mask), the windows' left pixels taken from those two
 * vectors by the permute `even`, their right ones by `odd`; `low` and `high` put left and right back. */
typedef struct lanes {
    int64_t lo, hi;
    __mmask16 lo_mask, hi_mask;
    __m512i even, odd, low, high;
} lanes;

/* `windows` (1 to 16) windows of one row, from its pixel 0. */
static lanes lanes_of_row(int64_t windows) {
    return (lanes){0, 16, first_lanes(2 * windows), first_lanes(2 * windows - 16 > 0 ? 2 * windows - 16 : 0),
                   _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
                   _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
                   _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
                   _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31)};
}

/* All `width` (1 to 8) windows of a row and of the row `row_pair` pixels below: lanes [0, width) and
 * [width, 2 width). */
static lanes lanes_of_two_rows(int64_t width, int64_t row_pair) {
    int even[16] = {0}, odd[16] = {0}, low[16] = {0}, high[16] = {0};
    for (int t = 0; t < (int)width; t++) {
        even[t] = 2 * t;
        even[width + t] = 16 + 2 * t;
        odd[t] = 2 * t + 1;
        odd[width + t] = 16 + 2 * t + 1;
        low[2 * t] = t;
        low[2 * t + 1] = 16 + t;
        high[2 * t] = (int)width + t;
        high[2 * t + 1] = 16 + (int)width + t;
    }
    return (lanes){0, row_pair, first_lanes(2 * width), first_lanes(2 * width),
                   _mm512_loadu_si512(even), _mm512_loadu_si512(odd), _mm512_loadu_si512(low), _mm512_loadu_si512(high)};
}

/* The windows' left and right pixels of the row at `row`. */
static void split_pairs(const float *row, const lanes *l, __m512 *left, __m512 *right) {
    __m512 lo = _mm512_maskz_loadu_ps(l->lo_mask, row + l->lo), hi = _mm512_maskz_loadu_ps(l->hi_mask, row + l->hi);
    *left = _mm512_permutex2var_ps(lo, l->even, hi);
    *right = _mm512_permutex2var_ps(lo, l->odd, hi);
}

/* The windows' left and right pixels into the row at `row`. */
static void store_pairs(float *row, const lanes *l, __m512 left, __m512 right) {
    _mm512_mask_storeu_ps(row + l->lo, l->lo_mask, _mm512_permutex2var_ps(left, l->low, right));
    _mm512_mask_storeu_ps(row + l->hi, l->hi_mask, _mm512_permutex2var_ps(left, l->high, right));
}

/* KN_MAX_PICK(a, v) of the generic build: v where v > a or v is NaN, else a. */
static __m512 max_pick(__m512 a, __m512 v) {
    __mmask16 take = _mm512_cmp_ps_mask(v, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(take, a, v);
}

/* The windows of l below top row r0 (rows in_w apart) into y (count outputs). */
static void forward_windows(const float *r0, int64_t in_w, const lanes *l, float *y, int64_t count) {
    __m512 v0, v1, v2, v3;
    split_pairs(r0, l, &v0, &v1);
    split_pairs(r0 + in_w, l, &v2, &v3);
    _mm512_mask_storeu_ps(y, first_lanes(count), max_pick(max_pick(max_pick(v0, v1), v2), v3));
}

/* Two rows of windows at a time when they tile rows of at most 8 (lanes_of_two_rows), the last row alone. */
static bool pairs_rows(const kn_pool2x2 *g) { return g->out_w <= 8 && g->in_w == 2 * g->out_w && g->out_h >= 2; }

void kn_maxpool2x2_forward_avx512(const kn_pool2x2 *g, const float *x, float *y) {
    int64_t oh = 0;
    if (pairs_rows(g)) {
        lanes two = lanes_of_two_rows(g->out_w, 2 * g->in_w);
        for (; oh + 2 <= g->out_h; oh += 2)
            forward_windows(x + 2 * oh * g->in_w, g->in_w, &two, y + oh * g->out_w, 2 * g->out_w);
    }
    for (; oh < g->out_h; oh++)
        for (int64_t t = 0; t < g->out_w; t += 16) {
            int64_t windows = g->out_w - t < 16 ? g->out_w - t : 16;
            lanes one = lanes_of_row(windows);
            forward_windows(x + 2 * oh * g->in_w + 2 * t, g->in_w, &one, y + oh * g->out_w + t, windows);
        }
}

/* The windows of l below top row r0 (rows in_w apart, dx's rows d0 likewise), their gradients the
 * `count` at dy: the generic build's flags, as masks. */
static void backward_windows(const float *r0, int64_t in_w, const lanes *l, const float *dy, int64_t count, float *d0,
                             bool store) {
    __m512 v0, v1, v2, v3;
    split_pairs(r0, l, &v0, &v1);
    split_pairs(r0 + in_w, l, &v2, &v3);
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
    __m512 grad = _mm512_maskz_loadu_ps(first_lanes(count), dy);
    __m512 zero = _mm512_setzero_ps(), base0l = zero, base0r = zero, base1l = zero, base1r = zero;
    if (!store) {
        split_pairs(d0, l, &base0l, &base0r);
        split_pairs(d0 + in_w, l, &base1l, &base1r);
    }
    /* (store ? 0 : dx) + (pick ? grad : 0), the generic formula: 0 + -0 gives +0 there too */
    store_pairs(d0, l, _mm512_add_ps(base0l, _mm512_maskz_mov_ps(pick0, grad)),
                _mm512_add_ps(base0r, _mm512_maskz_mov_ps(pick1, grad)));
    store_pairs(d0 + in_w, l, _mm512_add_ps(base1l, _mm512_maskz_mov_ps(pick2, grad)),
                _mm512_add_ps(base1r, _mm512_maskz_mov_ps(pick3, grad)));
}

void kn_maxpool2x2_backward_avx512(const kn_pool2x2 *g, const float *x, const float *dy, float *dx, bool store) {
    int64_t oh = 0;
    if (pairs_rows(g)) {
        lanes two = lanes_of_two_rows(g->out_w, 2 * g->in_w);
        for (; oh + 2 <= g->out_h; oh += 2)
            backward_windows(x + 2 * oh * g->in_w, g->in_w, &two, dy + oh * g->out_w, 2 * g->out_w,
                             dx + 2 * oh * g->in_w, store);
    }
    for (; oh < g->out_h; oh++)
        for (int64_t t = 0; t < g->out_w; t += 16) {
            int64_t windows = g->out_w - t < 16 ? g->out_w - t : 16;
            lanes one = lanes_of_row(windows);
            backward_windows(x + 2 * oh * g->in_w + 2 * t, g->in_w, &one, dy + oh * g->out_w + t, windows,
                             dx + 2 * oh * g->in_w + 2 * t, store);
        }
}
