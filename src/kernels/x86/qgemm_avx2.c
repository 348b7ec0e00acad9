/* The int8 micro-kernel and requantizing epilogue with AVX2, for CPUs without VNNI (kernels/qgemm.h).
 *
 * vpmaddubsw (u8 x s8, pairs summed into int16) would be the fast form, but its int16 sum saturates:
 * 255 * 127 * 2 = 64770 > 32767, so it is exact only for 7-bit weights or activations. Here both
 * operands are widened to int16 first and vpmaddwd sums pairs of products into int32: |u8 * s8| <=
 * 32640, so a pair never saturates and every sum is exact, at half vpmaddubsw's rate.
 *
 * 16 bytes of a V panel (4 columns x 4 k) widen to one ymm of int16; 4 bytes of a B row widen to 4
 * int16 repeated across it; vpmaddwd then leaves each column's two half sums side by side, and the
 * final horizontal add brings the 8 columns of two such accumulators into order.
 */
#include <immintrin.h>
#include <string.h>

#include "core/quant.h"
#include "kernels/qgemm_internal.h"

static inline __m256i widen(__m128i bytes, bool is_unsigned) {
    return is_unsigned ? _mm256_cvtepu8_epi16(bytes) : _mm256_cvtepi8_epi16(bytes);
}

/* The 4 bytes of row i of B at group g, widened to int16 and repeated 4 times. */
static inline __m256i broadcast_row(const uint8_t *b, int i, bool is_unsigned) {
    int32_t word;
    memcpy(&word, b + i * 4, 4);
    __m128i bytes = _mm_cvtsi32_si128(word);
    __m128i w16 = is_unsigned ? _mm_cvtepu8_epi16(bytes) : _mm_cvtepi8_epi16(bytes);
    return _mm256_broadcastq_epi64(w16);
}

/* The 8 column sums of two accumulators of (column, half) pairs, columns 0-3 in lo and 4-7 in hi. */
static inline __m256i columns_of(__m256i lo, __m256i hi) {
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
}

/* 8 sums to acc, or added to it. */
static inline void store_sums(int32_t *acc, __m256i sums, bool accumulate) {
    if (accumulate)
        sums = _mm256_add_epi32(sums, _mm256_loadu_si256((const __m256i *)acc));
    _mm256_storeu_si256((__m256i *)acc, sums);
}

/* Rows i0 and i0 + 1 of the tile against one panel. */
static inline void rows_panel(int64_t kq, const uint8_t *b, const uint8_t *v, int i0, bool v_unsigned,
                              bool accumulate, int32_t *acc) {
    __m256i c0[4], c1[4];
    for (int q = 0; q < 4; q++)
        c0[q] = c1[q] = _mm256_setzero_si256();
    for (int64_t g = 0; g < kq; g++) {
        const uint8_t *bg = b + g * 4 * KN_QGEMM_MR;
        __m256i b0 = broadcast_row(bg, i0, !v_unsigned), b1 = broadcast_row(bg, i0 + 1, !v_unsigned);
        for (int q = 0; q < 4; q++) {
            __m256i vq = widen(_mm_loadu_si128((const __m128i *)(v + g * 64 + q * 16)), v_unsigned);
            c0[q] = _mm256_add_epi32(c0[q], _mm256_madd_epi16(vq, b0));
            c1[q] = _mm256_add_epi32(c1[q], _mm256_madd_epi16(vq, b1));
        }
    }
    int32_t *a0 = acc + i0 * KN_QGEMM_TILE_COLS, *a1 = a0 + KN_QGEMM_TILE_COLS;
    store_sums(a0, columns_of(c0[0], c0[1]), accumulate);
    store_sums(a0 + 8, columns_of(c0[2], c0[3]), accumulate);
    store_sums(a1, columns_of(c1[0], c1[1]), accumulate);
    store_sums(a1 + 8, columns_of(c1[2], c1[3]), accumulate);
}

void kn_qgemm_micro_avx2(int64_t kq, const uint8_t *b, const uint8_t *v, size_t v_panel_bytes, int panels,
                         int rows, bool v_unsigned, bool accumulate, int32_t *acc) {
    for (int p = 0; p < panels; p++)
        for (int i0 = 0; i0 < rows; i0 += 2) /* an odd last row computes its padded neighbour too */
            rows_panel(kq, b, v + (size_t)p * v_panel_bytes, i0, v_unsigned, accumulate, acc + p * 16);
}

/* Stores 8 levels (whole floats in [-128, 255]) as their low bytes. */
static inline void store_levels(uint8_t *y, __m256 q) {
    __m256i levels = _mm256_cvtps_epi32(q);
    __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(levels), _mm256_extracti128_si256(levels, 1));
    __m128i bytes = _mm_shuffle_epi8(w16, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1));
    _mm_storel_epi64((__m128i *)y, bytes);
}

/* The steps of kn_quant_layer_level, one IEEE operation each, in its order (see the AVX-512
 * epilogue); a tail of fewer than 8 goes through the reference. */
/* 8 residual elements of r (e->r_type) as the values added: (float)(level - zero) * scale for levels. */
static inline __m256 residual8(const kn_qepilogue *e, const void *r, int i) {
    if (e->r_type == KN_QRES_F32)
        return _mm256_loadu_ps((const float *)r + i);
    __m128i bytes = _mm_loadl_epi64((const __m128i *)((const uint8_t *)r + i));
    __m256i levels = e->r_type == KN_QRES_U8 ? _mm256_cvtepu8_epi32(bytes) : _mm256_cvtepi8_epi32(bytes);
    levels = _mm256_sub_epi32(levels, _mm256_set1_epi32(e->r_zero_point));
    __m256 product = _mm256_mul_ps(_mm256_cvtepi32_ps(levels), _mm256_set1_ps(e->r_scale));
    __asm__("" : "+x"(product)); /* rounded on its own, not fused into the addition (see the AVX-512 file) */
    return product;
}

static void epilogue_row(const kn_qepilogue *e, const int32_t *acc, int n, int64_t channel, bool per_lane,
                         const void *r, void *y) {
    kn_quant_range range = kn_quant_range_of(8, e->y_type == KN_QOUT_I8);
    __m256 scale = _mm256_set1_ps(e->y_scale), zp = _mm256_set1_ps((float)e->y_zero_point);
    __m256 lo = _mm256_set1_ps((float)range.qmin), hi = _mm256_set1_ps((float)range.qmax);
    __m256i corr = _mm256_set1_epi32(e->corr[channel]);
    __m256 mult = _mm256_set1_ps(e->mult[channel]), bias = _mm256_set1_ps(e->bias[channel]);
    __m256 clip_lo = _mm256_set1_ps(e->clip_lo), clip_hi = _mm256_set1_ps(e->clip_hi);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        if (per_lane) {
            corr = _mm256_loadu_si256((const __m256i *)(e->corr + channel + i));
            mult = _mm256_loadu_ps(e->mult + channel + i);
            bias = _mm256_loadu_ps(e->bias + channel + i);
        }
        __m256i a = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i *)(acc + i)), corr);
        if (e->y_type == KN_QOUT_I32) {
            _mm256_storeu_si256((__m256i *)((int32_t *)y + i), a);
            continue;
        }
        __m256 value = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a), mult, bias);
        if (e->r_type != KN_QRES_NONE)
            value = _mm256_add_ps(value, residual8(e, r, i));
        if (e->relu)
            value = _mm256_max_ps(value, _mm256_setzero_ps());
        if (e->clip) /* lo > y ? lo : y, then hi < y ? hi : y: kn_quant_clip */
            value = _mm256_min_ps(clip_hi, _mm256_max_ps(clip_lo, value));
        if (e->y_type == KN_QOUT_F32) {
            _mm256_storeu_ps((float *)y + i, value);
            continue;
        }
        __m256 q = _mm256_round_ps(_mm256_div_ps(value, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, zp), lo), hi);
        store_levels((uint8_t *)y + i, q);
    }
    if (i < n) {
        size_t y_size = kn_qout_size(e->y_type);
        const char *rest = r ? (const char *)r + (size_t)i * kn_qres_size(e->r_type) : NULL;
        kn_qgemm_epilogue_row_generic(e, acc + i, n - i, per_lane ? channel + i : channel, per_lane, rest,
                                      (char *)y + (size_t)i * y_size);
    }
}

void kn_qgemm_epilogue_avx2(const kn_qepilogue *e, const kn_qepilogue_block *b) {
    size_t y_size = kn_qout_size(e->y_type), r_size = kn_qres_size(e->r_type);
    for (int i = 0; i < b->rows; i++)
        epilogue_row(e, b->acc + i * b->acc_ld, b->n, b->channel + i * b->channel_step, b->per_lane,
                     b->r ? (const char *)b->r + (size_t)(i * b->ld) * r_size : NULL,
                     (char *)b->y + (size_t)(i * b->ld) * y_size);
}

void kn_qgemm_quantize_avx2(const float *x, int64_t n, float scale, int32_t zero_point, bool is_signed,
                            uint8_t *y) {
    kn_quant_range range = kn_quant_range_of(8, is_signed);
    __m256 s = _mm256_set1_ps(scale), zp = _mm256_set1_ps((float)zero_point);
    __m256 lo = _mm256_set1_ps((float)range.qmin), hi = _mm256_set1_ps((float)range.qmax);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), s),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        store_levels(y + i, _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, zp), lo), hi));
    }
    kn_qgemm_quantize_generic(x + i, n - i, scale, zero_point, is_signed, y + i);
}

/* Byte unpacks pair rows 0 and 1, and 2 and 3; word unpacks of those put each column's 4 bytes side by
 * side, 4 columns per 16 bytes. */
void kn_qgemm_interleave_avx2(const uint8_t *const rows[4], int64_t panels, uint8_t flip, uint8_t *dst,
                              size_t stride) {
    __m128i f = _mm_set1_epi8((char)flip);
    for (int64_t p = 0; p < panels; p++) {
        __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(rows[0] + p * 16)), f);
        __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(rows[1] + p * 16)), f);
        __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(rows[2] + p * 16)), f);
        __m128i d = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(rows[3] + p * 16)), f);
        __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
        __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
        __m128i *out = (__m128i *)(dst + (size_t)p * stride);
        _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
        _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(ab_lo, cd_lo));
        _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(ab_hi, cd_hi));
        _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(ab_hi, cd_hi));
    }
}

/* Two taps at a time: their inputs widened to int16 and interleaved, so that vpmaddwd with the pair of
 * weights adds both products into int32 lanes, exactly (|x w| <= 255 * 128). Within each 128-bit lane
 * the word unpacks give outputs 0-3 and 8-11 (lo) and 4-7 and 12-15 (hi) of 16; the last permutes
 * restore their order. An odd last tap is paired with weight 0. */
void kn_qgemm_depthwise_avx2(const uint8_t *const *src, const int32_t *w, int taps, int64_t n, int32_t *acc) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int t = 0; t < taps; t += 2) {
            int t1 = t + 1 < taps ? t + 1 : t;
            int32_t w1 = t + 1 < taps ? w[t + 1] : 0;
            __m256i pair = _mm256_set1_epi32((int32_t)(((uint32_t)w1 << 16) | ((uint32_t)w[t] & 0xffff)));
            __m256i a = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src[t] + i)));
            __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src[t1] + i)));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), pair));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), pair));
        }
        _mm256_storeu_si256((__m256i *)(acc + i), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(acc + i + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    for (; i + 8 <= n; i += 8) { /* the same on 8 outputs: lo 0-3, hi 4-7 */
        __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
        for (int t = 0; t < taps; t += 2) {
            int t1 = t + 1 < taps ? t + 1 : t;
            int32_t w1 = t + 1 < taps ? w[t + 1] : 0;
            __m128i pair = _mm_set1_epi32((int32_t)(((uint32_t)w1 << 16) | ((uint32_t)w[t] & 0xffff)));
            __m128i a = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(src[t] + i)));
            __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(src[t1] + i)));
            lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_unpacklo_epi16(a, b), pair));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_unpackhi_epi16(a, b), pair));
        }
        _mm_storeu_si128((__m128i *)(acc + i), lo);
        _mm_storeu_si128((__m128i *)(acc + i + 4), hi);
    }
    if (i < n) {
        const uint8_t *rest[KN_QGEMM_DW_MAX_TAPS];
        for (int t = 0; t < taps; t++)
            rest[t] = src[t] + i;
        kn_qgemm_depthwise_generic(rest, w, taps, n - i, acc + i);
    }
}

/* 32 bytes: vpshufb gathers each 128-bit lane's even bytes then its odd ones, and a qword permute puts
 * the evens of both lanes first. A tail of fewer than 16 pairs is dealt again from the 16 pairs that end
 * the row, over outputs already written with the same bytes. */
static inline void deal16(const uint8_t *row, uint8_t *even, uint8_t *odd) {
    const __m256i gather = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10,
                                            12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)row), gather);
    v = _mm256_permute4x64_epi64(v, 0xd8); /* qwords 0, 2, 1, 3 */
    _mm_storeu_si128((__m128i *)even, _mm256_castsi256_si128(v));
    _mm_storeu_si128((__m128i *)odd, _mm256_extracti128_si256(v, 1));
}

/* 8 pairs of 16 bytes, as deal16 does within one 128-bit lane. */
static inline void deal8(const uint8_t *row, uint8_t *even, uint8_t *odd) {
    const __m128i gather = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m128i v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)row), gather);
    _mm_storel_epi64((__m128i *)even, v);
    _mm_storel_epi64((__m128i *)odd, _mm_unpackhi_epi64(v, v));
}

void kn_qgemm_deal2_avx2(const uint8_t *row, int64_t n, uint8_t *even, uint8_t *odd) {
    if (n >= 8 && n < 16) { /* a short row (a late layer's frame): two overlapping halves */
        deal8(row, even, odd);
        deal8(row + 2 * (n - 8), even + n - 8, odd + n - 8);
        return;
    }
    if (n < 16) {
        kn_qgemm_deal2_generic(row, n, even, odd);
        return;
    }
    for (int64_t k = 0; k + 16 <= n; k += 16)
        deal16(row + 2 * k, even + k, odd + k);
    if (n % 16)
        deal16(row + 2 * (n - 16), even + n - 16, odd + n - 16);
}

/* ---- 2x2 max pooling ----
 * The maxima of a pair of rows byte by byte, then of each pair of neighbours: shifted right by a byte
 * within each 16-bit word, the odd byte meets the even one in the word's low byte, and those low bytes,
 * packed, are the outputs. A row goes in chunks of 32 input bytes (16 outputs), the last chunk ending at
 * the row's end over the one before (a maximum taken twice is the same); shorter rows in chunks of 16
 * or 8 the same way. Only bytes of the row pairs are read. */
static inline __attribute__((always_inline)) __m128i max128(__m128i a, __m128i b, bool is_signed) {
    return is_signed ? _mm_max_epi8(a, b) : _mm_max_epu8(a, b);
}

static inline __attribute__((always_inline)) __m256i max256(__m256i a, __m256i b, bool is_signed) {
    return is_signed ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b);
}

/* The outputs of the column pairs of two 16-byte pieces (8 outputs; 4 when only the low 8 bytes were
 * loaded), in the low bytes. */
static inline __attribute__((always_inline)) __m128i pool_pairs128(__m128i a, __m128i b, bool is_signed) {
    __m128i m = max128(a, b, is_signed);
    m = _mm_and_si128(max128(m, _mm_srli_epi16(m, 8), is_signed), _mm_set1_epi16(0xff));
    return _mm_packus_epi16(m, m);
}

/* 16 outputs from 32 bytes of each row. */
static inline __attribute__((always_inline)) __m128i pool32(const uint8_t *r0, const uint8_t *r1, bool is_signed) {
    __m256i m = max256(_mm256_loadu_si256((const __m256i *)r0), _mm256_loadu_si256((const __m256i *)r1), is_signed);
    m = _mm256_and_si256(max256(m, _mm256_srli_epi16(m, 8), is_signed), _mm256_set1_epi16(0xff));
    m = _mm256_packus_epi16(m, m);                           /* outputs 0-7 in qword 0, 8-15 in qword 2 */
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(m, 0x08));
}

static inline __attribute__((always_inline)) void pool16(const uint8_t *r0, const uint8_t *r1, bool is_signed,
                                                         uint8_t *y) {
    __m128i a = _mm_loadu_si128((const __m128i *)r0), b = _mm_loadu_si128((const __m128i *)r1);
    _mm_storel_epi64((__m128i *)y, pool_pairs128(a, b, is_signed));
}

static inline __attribute__((always_inline)) void pool8(const uint8_t *r0, const uint8_t *r1, bool is_signed,
                                                        uint8_t *y) {
    __m128i a = _mm_loadl_epi64((const __m128i *)r0), b = _mm_loadl_epi64((const __m128i *)r1);
    int32_t four = _mm_cvtsi128_si32(pool_pairs128(a, b, is_signed));
    memcpy(y, &four, 4);
}

static inline __attribute__((always_inline)) void maxpool2x2_rows(const uint8_t *x, int64_t rows, int64_t in_w,
                                                                  int64_t cols, bool is_signed, uint8_t *y) {
    const int64_t n = 2 * cols; /* bytes of a row the windows cover */
    for (int64_t i = 0; i < rows; i++, y += cols) {
        const uint8_t *r0 = x + 2 * i * in_w, *r1 = r0 + in_w;
        if (n >= 32) {
            for (int64_t k = 0; k < n; k += 32) {
                int64_t at = k + 32 <= n ? k : n - 32;
                _mm_storeu_si128((__m128i *)(y + at / 2), pool32(r0 + at, r1 + at, is_signed));
            }
        } else if (n >= 16) {
            pool16(r0, r1, is_signed, y);
            pool16(r0 + n - 16, r1 + n - 16, is_signed, y + (n - 16) / 2);
        } else if (n >= 8) {
            pool8(r0, r1, is_signed, y);
            pool8(r0 + n - 8, r1 + n - 8, is_signed, y + (n - 8) / 2);
        } else {
            kn_qgemm_maxpool2x2_generic(r0, 1, in_w, cols, is_signed, y);
        }
    }
}

void kn_qgemm_maxpool2x2_avx2(const uint8_t *x, int64_t rows, int64_t in_w, int64_t cols, bool is_signed,
                              uint8_t *y) {
    if (is_signed)
        maxpool2x2_rows(x, rows, in_w, cols, true, y);
    else
        maxpool2x2_rows(x, rows, in_w, cols, false, y);
}
